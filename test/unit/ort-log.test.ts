import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

// onnxruntime writes to file descriptor 2 from C++, out of reach of any JS hook: the only
// faithful check is the stderr of a separate process.

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

// Two models that make onnxruntime 1.30 print at its default level, written as ONNX protobuf
// by hand (there is no ONNX writer among the dependencies): `declared` promises outputs of
// shape [1,4] but echoes [N,4] (the VerifyOutputSizes warning of onnxmltools' LightGBM
// exports), `reshape` fails at run time unless 4N is a multiple of 3 (an error per run).
const utf8 = new TextEncoder();
function varint(value: number): number[] {
  const out: number[] = [];
  for (; value > 127; value = Math.floor(value / 128)) out.push((value % 128) | 128);
  return [...out, value];
}
const int = (field: number, value: number): number[] => [...varint(field << 3), ...varint(value)];
const bytes = (field: number, payload: ArrayLike<number>): number[] => [
  ...varint((field << 3) | 2),
  ...varint(payload.length),
  ...Array.from(payload),
];
const str = (field: number, text: string): number[] => bytes(field, utf8.encode(text));
const FLOAT = 1;
const INT64 = 7;

function valueInfo(name: string, shape: (number | string)[]): number[] {
  const dims = shape.flatMap((d) => bytes(1, typeof d === 'number' ? int(1, d) : str(2, d)));
  return [...str(1, name), ...bytes(2, bytes(1, [...int(1, FLOAT), ...bytes(2, dims)]))];
}

function onnxModel(op: string, output: (number | string)[], initializer?: number[]): Uint8Array {
  const inputs = initializer ? ['X', 'shape'] : ['X'];
  const node = [...inputs.flatMap((name) => str(1, name)), ...str(2, 'Y'), ...str(4, op)];
  const graph = [
    ...bytes(1, node),
    ...str(2, 'g'),
    ...(initializer ? bytes(5, initializer) : []),
    ...bytes(11, valueInfo('X', ['N', 4])),
    ...bytes(12, valueInfo('Y', output)),
  ];
  return Uint8Array.from([...int(1, 8), ...bytes(8, int(2, 17)), ...bytes(7, graph)]);
}

const reshapeTo = [...int(1, 2), ...int(2, INT64), ...str(8, 'shape'), ...bytes(9, new Uint8Array(new BigInt64Array([-1n, 3n]).buffer))];

// The child scores like the worker: loadModel, then session.run with runOptions().
const CHILD = `
import { readFile } from 'node:fs/promises';
import ort from 'onnxruntime-node';
const { loadModel, runOptions } = await import(${JSON.stringify(`${ROOT}src/models/sessions.ts`)});
const { configureOrtLogging } = await import(${JSON.stringify(`${ROOT}src/models/ort-log.ts`)});
const level = process.env.ORT_LEVEL;
if (level === 'default') configureOrtLogging();
else if (level) configureOrtLogging(level);

const load = async (path) => loadModel(path, new Uint8Array(await readFile(path)), { threads: 1 });
const floats = (rows, width) => new ort.Tensor('float32', new Float32Array(rows * width).fill(1), [rows, width]);
const failure = async (promise) => promise.then(() => 'no error', (error) => error.message);
const out = {};

const gbm = await load('examples/models/breast_cancer_gbm.onnx');
out.gbm = (await gbm.session.run({ [gbm.session.inputNames[0]]: floats(5, 30) }, runOptions())).label.dims;
const iris = await load('examples/models/iris.onnx');
out.iris = await failure(iris.session.run({ X: floats(2, 3) }, runOptions()));

const declared = await load(process.env.DECLARED);
out.declared = [];
for (let batch = 0; batch < 3; batch += 1) out.declared.push((await declared.session.run({ X: floats(5, 4) }, runOptions())).Y.dims);
const reshape = await load(process.env.RESHAPE);
out.reshape = [];
for (let batch = 0; batch < 3; batch += 1) out.reshape.push(await failure(reshape.session.run({ X: floats(2, 4) }, runOptions())));

console.log(JSON.stringify(out));
`;

interface ChildResult {
  readonly out: { gbm: number[]; iris: string; declared: number[][]; reshape: string[] };
  readonly stderr: string;
}

let dir: string;
const run = promisify(execFile);

async function score(level: string | undefined): Promise<ChildResult> {
  const env: NodeJS.ProcessEnv = { ...process.env, DECLARED: join(dir, 'declared.onnx'), RESHAPE: join(dir, 'reshape.onnx') };
  if (level === undefined) delete env.ORT_LEVEL;
  else env.ORT_LEVEL = level;
  const { stdout, stderr } = await run(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', CHILD], {
    cwd: ROOT,
    env,
  });
  return { out: JSON.parse(stdout) as ChildResult['out'], stderr };
}

function expectErrorsThrown(out: ChildResult['out']): void {
  expect(out.gbm).toEqual([5]);
  expect(out.iris).toMatch(/invalid dimensions for input: X/);
  expect(out.declared).toEqual([[5, 4], [5, 4], [5, 4]]);
  expect(out.reshape).toHaveLength(3);
  for (const message of out.reshape) expect(message).toMatch(/Non-zero status code returned while running Reshape node/);
}

describe('onnxruntime native logging', { timeout: 60_000 }, () => {
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'pgscore-ort-log-'));
    await writeFile(join(dir, 'declared.onnx'), onnxModel('Identity', [1, 4]));
    await writeFile(join(dir, 'reshape.onnx'), onnxModel('Reshape', ['M', 3], reshapeTo));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('writes nothing to stderr at the default level, and errors are still thrown', async () => {
    const { out, stderr } = await score('default');
    expectErrorsThrown(out);
    expect(stderr).toBe('');
  });

  it('is silent by default even when configureOrtLogging was never called', async () => {
    const { out, stderr } = await score(undefined);
    expectErrorsThrown(out);
    expect(stderr).toBe('');
  });

  // Shows that the two models do provoke native lines, so the silence above is the setting's.
  it("lets onnxruntime's lines through when asked for 'warning'", async () => {
    const { out, stderr } = await score('warning');
    expectErrorsThrown(out);
    expect(stderr.match(/\[W:onnxruntime:.*VerifyOutputSizes\]/g)).toHaveLength(3);
    expect(stderr.match(/\[E:onnxruntime:.*Non-zero status code/g)).toHaveLength(3);
  });
});
