import type { Kafka, Message, Producer, ProducerConfig, RecordMetadata } from 'kafkajs';
import { CompressionTypes } from 'kafkajs';
import type { Logger } from '../log.js';
import { kafkaFailure } from './kafka-client.js';

/**
 * The relay's idempotent producer (acks=all), retired after any failed send.
 *
 * Why: when a send fails, kafkajs rolls back the sequence numbers of its records, yet the broker
 * may have appended them (only the acknowledgement was lost). The relay's rows stay queued and a
 * later claim sends other records (more rows, other rows, other partitions); with the same
 * producer their sequence numbers would be those of the batch the broker has, and the broker would
 * acknowledge them as duplicates without appending them: rows deleted from their queue and in no
 * message. A new producer has a new producer id and fresh sequences, so whatever it sends is
 * appended; the rows the broker did append arrive twice, which the workers handle.
 * (kafkajs's own retries within one send resend the same records with the same sequence, as the
 * broker's deduplication expects.)
 */
export class RelayProducer {
  readonly #kafka: Kafka;
  readonly #config: ProducerConfig;
  readonly #topic: string;
  readonly #log: Logger;
  #producer: Producer | undefined;
  #retired: Producer[] = [];

  constructor(kafka: Kafka, topic: string, config: ProducerConfig, log: Logger) {
    this.#kafka = kafka;
    this.#topic = topic;
    this.#config = { ...config, idempotent: true, maxInFlightRequests: 1 };
    this.#log = log;
  }

  async connect(): Promise<void> {
    await this.#current();
  }

  /** Sends one request (the caller sends one at a time); a failure is a kafkaFailure. */
  async send(messages: Message[]): Promise<RecordMetadata[]> {
    const producer = await this.#current();
    try {
      return await producer.send({ topic: this.#topic, acks: -1, compression: CompressionTypes.None, messages });
    } catch (error) {
      this.#producer = undefined;
      this.#retired.push(producer);
      const failure = kafkaFailure(error, 'produce failed');
      this.#log.info({ reason: failure.message }, 'producer retired after a failed send; the next send starts a new one');
      await this.#closeRetired();
      throw failure;
    }
  }

  async disconnect(): Promise<void> {
    const producer = this.#producer;
    this.#producer = undefined;
    if (producer) this.#retired.push(producer);
    await this.#closeRetired();
  }

  async #current(): Promise<Producer> {
    if (this.#producer) return this.#producer;
    const producer = this.#kafka.producer(this.#config);
    try {
      await producer.connect();
    } catch (error) {
      this.#retired.push(producer);
      await this.#closeRetired();
      throw kafkaFailure(error, 'cannot connect the Kafka producer');
    }
    this.#producer = producer;
    return producer;
  }

  async #closeRetired(): Promise<void> {
    const retired = this.#retired;
    this.#retired = [];
    await Promise.all(retired.map((producer) => producer.disconnect().catch(() => undefined)));
  }
}
