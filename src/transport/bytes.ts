/**
 * The byte-level pieces of the binary Kafka message (message.ts): little-endian fixed-width
 * numbers, unsigned LEB128 varints and length-prefixed UTF-8 strings. The writer grows its buffer
 * as needed; the reader throws a MessageFormatError naming the byte where a message stops making
 * sense, so a damaged message becomes a dead letter with a reason instead of a crash.
 */

export class MessageFormatError extends Error {}

export class ByteWriter {
  #buffer: Buffer;
  #view: DataView;
  #at = 0;

  constructor(size = 16 * 1024) {
    this.#buffer = Buffer.allocUnsafe(size);
    this.#view = new DataView(this.#buffer.buffer, this.#buffer.byteOffset, this.#buffer.byteLength);
  }

  /** Bytes written so far. */
  get length(): number {
    return this.#at;
  }

  #reserve(bytes: number): void {
    if (this.#at + bytes <= this.#buffer.length) return;
    const grown = Buffer.allocUnsafe(Math.max(this.#buffer.length * 2, this.#at + bytes));
    this.#buffer.copy(grown, 0, 0, this.#at);
    this.#buffer = grown;
    this.#view = new DataView(grown.buffer, grown.byteOffset, grown.byteLength);
  }

  u8(value: number): void {
    this.#reserve(1);
    this.#buffer[this.#at++] = value;
  }

  u32(value: number): void {
    this.#reserve(4);
    this.#view.setUint32(this.#at, value, true);
    this.#at += 4;
  }

  /** Overwrites 4 bytes written earlier (a count known only at the end). */
  u32At(at: number, value: number): void {
    this.#view.setUint32(at, value, true);
  }

  f32(value: number): void {
    this.#reserve(4);
    this.#view.setFloat32(this.#at, value, true);
    this.#at += 4;
  }

  f64(value: number): void {
    this.#reserve(8);
    this.#view.setFloat64(this.#at, value, true);
    this.#at += 8;
  }

  varint(value: number): void {
    this.#reserve(5);
    let rest = value >>> 0;
    while (rest >= 0x80) {
      this.#buffer[this.#at++] = (rest & 0x7f) | 0x80;
      rest >>>= 7;
    }
    this.#buffer[this.#at++] = rest;
  }

  bytes(value: Uint8Array): void {
    this.#reserve(value.length);
    this.#buffer.set(value, this.#at);
    this.#at += value.length;
  }

  /** A varint byte length, then the UTF-8 bytes. Short ASCII text (keys, xmin, numbers as text) is copied by hand. */
  str(value: string): void {
    const n = value.length;
    if (n < 0x80) {
      this.#reserve(1 + n);
      const start = this.#at + 1;
      let i = 0;
      for (; i < n; i++) {
        const c = value.charCodeAt(i);
        if (c >= 0x80) break;
        this.#buffer[start + i] = c;
      }
      if (i === n) {
        this.#buffer[this.#at] = n;
        this.#at = start + n;
        return;
      }
    }
    const length = Buffer.byteLength(value, 'utf8');
    this.varint(length);
    this.#reserve(length);
    this.#at += this.#buffer.write(value, this.#at, length, 'utf8');
  }

  /** Forgets what was written (a reused writer after a failed encoding). */
  reset(): void {
    this.#at = 0;
  }

  /** The bytes written, as a copy (the writer may be reused). */
  take(): Buffer {
    const out = Buffer.from(this.#buffer.subarray(0, this.#at));
    this.#at = 0;
    return out;
  }
}

export class ByteReader {
  readonly #buffer: Buffer;
  readonly #view: DataView;
  #at: number;

  constructor(buffer: Buffer, at = 0) {
    this.#buffer = buffer;
    this.#view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
    this.#at = at;
  }

  get offset(): number {
    return this.#at;
  }

  get remaining(): number {
    return this.#buffer.length - this.#at;
  }

  #need(bytes: number, what: string): void {
    if (this.#at + bytes > this.#buffer.length) {
      throw new MessageFormatError(`truncated: ${what} at byte ${this.#at} needs ${bytes} byte(s), the message has ${this.#buffer.length}`);
    }
  }

  u8(what: string): number {
    this.#need(1, what);
    return this.#buffer[this.#at++]!;
  }

  u32(what: string): number {
    this.#need(4, what);
    const value = this.#view.getUint32(this.#at, true);
    this.#at += 4;
    return value;
  }

  f32(what: string): number {
    this.#need(4, what);
    const value = this.#view.getFloat32(this.#at, true);
    this.#at += 4;
    return value;
  }

  f64(what: string): number {
    this.#need(8, what);
    const value = this.#view.getFloat64(this.#at, true);
    this.#at += 8;
    return value;
  }

  varint(what: string): number {
    let value = 0;
    for (let shift = 0; shift < 35; shift += 7) {
      const byte = this.u8(what);
      value += (byte & 0x7f) * 2 ** shift;
      if (byte < 0x80) return value;
    }
    throw new MessageFormatError(`${what} at byte ${this.#at} is not a varint`);
  }

  str(what: string): string {
    const length = this.varint(what);
    this.#need(length, what);
    const start = this.#at;
    this.#at += length;
    if (length <= 16) {
      // Short ASCII (keys, xmin, ctid) without a call into the runtime.
      let text = '';
      for (let i = start; i < start + length; i++) {
        const c = this.#buffer[i]!;
        if (c >= 0x80) return this.#buffer.toString('utf8', start, start + length);
        text += String.fromCharCode(c);
      }
      return text;
    }
    return this.#buffer.toString('utf8', start, start + length);
  }
}
