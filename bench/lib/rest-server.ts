/**
 * The pattern users would otherwise build: the same ONNX model behind a small REST API.
 * POST /predict {"rows": [[30 numbers], ...]} → {"label": [...], "p1": [...]}.
 * Run as its own process: node --import tsx bench/lib/rest-server.ts <model.onnx>; prints "listening <port>".
 */
import http from 'node:http';
import ort from 'onnxruntime-node';

const modelPath = process.argv[2];
if (!modelPath) throw new Error('usage: rest-server.ts <model.onnx>');
const session = await ort.InferenceSession.create(modelPath, {
  intraOpNumThreads: 1,
  interOpNumThreads: 1,
  executionMode: 'sequential',
  graphOptimizationLevel: 'all',
});
const input = session.inputNames[0]!;

const server = http.createServer((req, res) => {
  if (req.method !== 'POST' || req.url !== '/predict') {
    res.writeHead(404).end();
    return;
  }
  const chunks: Buffer[] = [];
  req.on('data', (chunk: Buffer) => chunks.push(chunk));
  req.on('end', () => {
    void (async () => {
      try {
        const { rows } = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { rows: number[][] };
        const width = rows[0]?.length ?? 0;
        const data = new Float32Array(rows.length * width);
        rows.forEach((row, r) => data.set(row, r * width));
        const out = await session.run({ [input]: new ort.Tensor('float32', data, [rows.length, width]) }, ['label', 'probabilities']);
        const labels = Array.from(out.label!.data as BigInt64Array, Number);
        const probs = out.probabilities!.data as Float32Array;
        const p1 = rows.map((_, r) => probs[r * 2 + 1]!);
        const body = JSON.stringify({ label: labels, p1 });
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body);
      } catch (error) {
        res.writeHead(400, { 'content-type': 'text/plain' }).end(String(error));
      }
    })();
  });
});
server.keepAliveTimeout = 60_000;
server.listen(0, '127.0.0.1', () => {
  const address = server.address();
  process.stdout.write(`listening ${typeof address === 'object' && address ? address.port : 0}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
