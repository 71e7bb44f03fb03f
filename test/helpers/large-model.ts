import { randomFillSync } from 'node:crypto';

/**
 * A large, valid ONNX model: an example model whose graph gets one more initializer of `padBytes`
 * float32 bytes that no node reads (onnxruntime parses it, then drops it). Written with a few
 * lines of protobuf, so the test needs no Python. The bytes are random, so that Postgres cannot
 * compress them away: what is stored, read and parsed is the full size.
 */
export function padModel(model: Uint8Array, padBytes: number): Buffer {
  const floats = Math.ceil(padBytes / 4);
  const raw = Buffer.allocUnsafe(floats * 4);
  // randomFillSync fills at most 2^31-1 bytes per call.
  for (let at = 0; at < raw.length; at += 1 << 30) randomFillSync(raw, at, Math.min(1 << 30, raw.length - at));
  const tensor = Buffer.concat([
    field(1, 0, varint(floats)), // dims
    field(2, 0, varint(1)), // data_type FLOAT
    lengthDelimited(8, Buffer.from('pgscore_test_padding')), // name
    lengthDelimited(9, raw), // raw_data
  ]);
  const parts: Buffer[] = [];
  let found = false;
  for (const f of fields(model)) {
    if (f.number === 7 && f.wire === 2) {
      // GraphProto.initializer = 5
      parts.push(lengthDelimited(7, Buffer.concat([f.value, lengthDelimited(5, tensor)])));
      found = true;
    } else {
      parts.push(f.raw);
    }
  }
  if (!found) throw new Error('not an ONNX model: no graph');
  return Buffer.concat(parts);
}

function varint(n: number): Buffer {
  const bytes: number[] = [];
  let v = BigInt(n);
  do {
    let byte = Number(v & 0x7fn);
    v >>= 7n;
    if (v > 0n) byte |= 0x80;
    bytes.push(byte);
  } while (v > 0n);
  return Buffer.from(bytes);
}

function field(number: number, wire: number, payload: Buffer): Buffer {
  return Buffer.concat([varint((number << 3) | wire), payload]);
}

function lengthDelimited(number: number, payload: Buffer): Buffer {
  return Buffer.concat([varint((number << 3) | 2), varint(payload.length), payload]);
}

function readVarint(bytes: Uint8Array, at: number): [number, number] {
  let value = 0;
  let scale = 1;
  for (;;) {
    const byte = bytes[at++]!;
    value += (byte & 0x7f) * scale;
    scale *= 128;
    if ((byte & 0x80) === 0) return [value, at];
  }
}

function* fields(bytes: Uint8Array): Generator<{ number: number; wire: number; value: Buffer; raw: Buffer }> {
  const all = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 0;
  while (at < all.length) {
    const start = at;
    const [key, next] = readVarint(all, at);
    at = next;
    const wire = key & 7;
    let value: Buffer;
    if (wire === 0) {
      const [, end] = readVarint(all, at);
      value = all.subarray(at, end);
      at = end;
    } else if (wire === 1 || wire === 5) {
      const size = wire === 1 ? 8 : 4;
      value = all.subarray(at, at + size);
      at += size;
    } else if (wire === 2) {
      const [length, from] = readVarint(all, at);
      value = all.subarray(from, from + length);
      at = from + length;
    } else {
      throw new Error(`unexpected protobuf wire type ${wire}`);
    }
    yield { number: Math.floor(key / 8), wire, value, raw: all.subarray(start, at) };
  }
}
