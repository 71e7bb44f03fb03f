import { KafkaJSConnectionError, KafkaJSNonRetriableError, KafkaJSNumberOfRetriesExceeded, KafkaJSProtocolError } from 'kafkajs';
import { describe, expect, it } from 'vitest';
import { classifyFailure } from '../../src/pipeline/policy.js';
import { kafkaFailure } from '../../src/transport/kafka-client.js';

/** kafkajs's "Closed connection" (KafkaJSConnectionClosedError, which its types do not export). */
function closedConnection(): Error {
  return Object.defineProperty(new KafkaJSConnectionError('Closed connection'), 'name', { value: 'KafkaJSConnectionClosedError' });
}

/** What kafkajs's retrier throws when an operation bails out (src/retry/index.js). */
function bailedOut(error: Error): Error {
  const NonRetriable = KafkaJSNonRetriableError as unknown as new (e: Error, metadata: { cause: Error }) => Error;
  return new NonRetriable(error, { cause: error });
}

function protocolError(type: string, message: string, retriable: boolean): Error {
  return new KafkaJSProtocolError(Object.assign(new Error(message), { type, retriable }));
}

describe('Kafka failures and the failure policy', () => {
  it('takes a closed connection, and kafkajs giving up its retries of one, for Kafka out of reach: back off, never re-check', () => {
    const gaveUp = new KafkaJSNumberOfRetriesExceeded(closedConnection(), { retryCount: 5, retryTime: 9000 });
    const bailed = bailedOut(closedConnection());
    for (const error of [closedConnection(), gaveUp, bailed]) {
      const failure = kafkaFailure(error, 'produce failed');
      expect(failure.retriable).toBe(true);
      expect(failure.message).toMatch(/^produce failed: Closed connection/);
      expect(classifyFailure(failure)).toEqual({ kind: 'reconnect', reason: expect.stringContaining('Closed connection') });
    }
  });

  it('takes a retriable protocol error for retriable and a refusal for what it is', () => {
    const notLeader = protocolError('NOT_LEADER_OR_FOLLOWER', 'This server is not the leader for that topic-partition', true);
    expect(kafkaFailure(notLeader, 'produce failed').retriable).toBe(true);
    const tooLarge = protocolError('MESSAGE_TOO_LARGE', 'The request included a message larger than the max message size the server will accept', false);
    const failure = kafkaFailure(tooLarge, 'produce failed');
    expect(failure.retriable).toBe(false);
    expect(classifyFailure(failure).kind).toBe('recheck');
  });
});
