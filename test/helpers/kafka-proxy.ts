/**
 * A TCP proxy in front of a Kafka broker, for faults a real network has: a Produce response lost
 * after the broker appended the batch, then a broker nobody can reach. Start the broker with
 * `advertisedPort: proxy.port` so that clients, which connect to the address the broker's metadata
 * names, stay behind the proxy.
 *
 *   const proxy = await startKafkaProxy(brokerPort);
 *   const dropped = proxy.dropNextProduceResponse(); // then refuses connections
 *   await dropped; … proxy.accept();
 *
 * Kafka frames are a 4-byte big-endian size and the payload; a request starts with api key (int16),
 * api version (int16) and correlation id (int32), a response with the correlation id.
 */
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { freePorts } from './kafka-broker.js';

const PRODUCE = 0;
const OFFSET_COMMIT = 8;

export interface KafkaProxy {
  readonly port: number;
  /**
   * Forwards the next Produce request to the broker but drops its response; then closes every
   * connection and refuses new ones until accept(). Resolves once the response was dropped.
   */
  dropNextProduceResponse(): Promise<void>;
  /** Takes back a dropNextProduceResponse() that has not dropped anything yet (its promise never resolves). */
  cancelDrop(): void;
  /**
   * While on, OffsetCommit requests never reach the broker and get no answer: a consumer group's
   * offsets stay where they were, as when a worker dies before it commits.
   */
  swallowOffsetCommits(on: boolean): void;
  /** Produce responses dropped so far. */
  readonly dropped: number;
  /** Accepts connections again (after a drop). */
  accept(): Promise<void>;
  close(): Promise<void>;
}

/** Splits a byte stream into whole Kafka frames. */
class Frames {
  #buffer: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): Buffer[] {
    this.#buffer = this.#buffer.length === 0 ? chunk : Buffer.concat([this.#buffer, chunk]);
    const frames: Buffer[] = [];
    while (this.#buffer.length >= 4) {
      const end = 4 + this.#buffer.readInt32BE(0);
      if (this.#buffer.length < end) break;
      frames.push(this.#buffer.subarray(0, end));
      this.#buffer = this.#buffer.subarray(end);
    }
    return frames;
  }
}

export async function startKafkaProxy(targetPort: number): Promise<KafkaProxy> {
  const [port] = (await freePorts(1)) as [number];
  const sockets = new Set<Socket>();
  let armed: (() => void) | undefined;
  let dropped = 0;
  let swallowCommits = false;
  let server: Server | undefined;

  const closeAll = () => {
    for (const socket of sockets) socket.destroy();
    sockets.clear();
  };

  const onClient = (client: Socket) => {
    const broker = createConnection({ host: '127.0.0.1', port: targetPort });
    sockets.add(client);
    sockets.add(broker);
    const produceRequests = new Set<number>();
    const requests = new Frames();
    const responses = new Frames();
    client.on('data', (chunk) => {
      for (const frame of requests.push(chunk)) {
        const apiKey = frame.length >= 12 ? frame.readInt16BE(4) : -1;
        if (apiKey === OFFSET_COMMIT && swallowCommits) continue;
        if (apiKey === PRODUCE) produceRequests.add(frame.readInt32BE(8));
        broker.write(frame);
      }
    });
    broker.on('data', (chunk) => {
      for (const frame of responses.push(chunk)) {
        const correlation = frame.length >= 8 ? frame.readInt32BE(4) : -1;
        const isProduce = produceRequests.delete(correlation);
        if (isProduce && armed) {
          const done = armed;
          armed = undefined;
          dropped += 1;
          // The broker appended the batch; the client never learns it. Then the broker is gone.
          void refuse().then(done);
          return;
        }
        client.write(frame);
      }
    });
    const end = () => {
      client.destroy();
      broker.destroy();
      sockets.delete(client);
      sockets.delete(broker);
    };
    client.on('close', end).on('error', end);
    broker.on('close', end).on('error', end);
  };

  const listen = () =>
    new Promise<void>((resolve, reject) => {
      const next = createServer(onClient);
      next.once('error', reject);
      next.listen(port, '127.0.0.1', () => {
        server = next;
        resolve();
      });
    });

  const refuse = async () => {
    const current = server;
    server = undefined;
    closeAll();
    if (current) await new Promise<void>((resolve) => current.close(() => resolve()));
  };

  await listen();
  return {
    port,
    get dropped() {
      return dropped;
    },
    swallowOffsetCommits(on) {
      swallowCommits = on;
    },
    dropNextProduceResponse: () => new Promise<void>((resolve) => (armed = resolve)),
    cancelDrop() {
      armed = undefined;
    },
    async accept() {
      if (!server) await listen();
    },
    async close() {
      armed = undefined;
      await refuse();
    },
  };
}
