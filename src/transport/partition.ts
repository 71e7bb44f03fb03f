/**
 * Which partition a row's messages go to. A message carries many rows, all of one partition; each
 * row goes where a one-row message keyed "<deployment id>:<JSON key values>" went with format 1
 * (the murmur2 partitioner of Kafka's Java client and of kafkajs's DefaultPartitioner), so one
 * row's changes stay in order within a partition, also across an upgrade that leaves format-1
 * messages in the topic.
 */

/** The key a format-1 message of this row had. */
export function rowKey(deploymentId: number, keys: readonly string[]): string {
  return `${deploymentId}:${JSON.stringify(keys)}`;
}

/** toPositive(murmur2(utf8(key))) % partitions, as Kafka's default partitioner computes it. */
export function partitionOf(key: string, partitions: number): number {
  return (murmur2(key) & 0x7fffffff) % partitions;
}

const SEED = 0x9747b28c;
const M = 0x5bd1e995;
const ascii = new Uint8Array(256);

/** Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2) of the key's UTF-8 bytes, in 32-bit arithmetic. */
export function murmur2(key: string): number {
  let data: Uint8Array = ascii.subarray(0, key.length);
  for (let i = 0; i < key.length; i++) {
    const c = key.charCodeAt(i);
    if (c >= 0x80 || i >= ascii.length) {
      data = Buffer.from(key, 'utf8');
      break;
    }
    ascii[i] = c;
  }
  const length = data.length;
  let h = SEED ^ length;
  const length4 = length >>> 2;
  for (let i = 0; i < length4; i++) {
    const i4 = i * 4;
    let k = data[i4]! | (data[i4 + 1]! << 8) | (data[i4 + 2]! << 16) | (data[i4 + 3]! << 24);
    k = Math.imul(k, M);
    k ^= k >>> 24;
    k = Math.imul(k, M);
    h = Math.imul(h, M);
    h ^= k;
  }
  const tail = length & ~3;
  switch (length % 4) {
    case 3:
      h ^= data[tail + 2]! << 16;
    // falls through
    case 2:
      h ^= data[tail + 1]! << 8;
    // falls through
    case 1:
      h ^= data[tail]!;
      h = Math.imul(h, M);
  }
  h ^= h >>> 13;
  h = Math.imul(h, M);
  h ^= h >>> 15;
  return h | 0;
}
