import { z } from 'zod';
import type { ClaimedRow } from '../queue/claimed-row.js';
import type { ActiveDeployment } from '../worker/deployments.js';

/**
 * The Kafka message for one queued row (version 1), JSON:
 *   {"v":1,"d":7,"f":"1x3k9","k":["42"],"x":"1234","t":"(0,5)","q":1795785190036,"i":[5.1,3.5,1.4,0.2]}
 * v format version; d deployment id; f the deployment's claim-layout fingerprint; k primary key
 * values as text; x and t the row version (xmin) and place (ctid) the values were read at, which
 * the write-back must still find; q when the row was queued
 * (epoch ms); i the input values in plan order. Short keys because there is one message per
 * row; JSON because inputs mix numbers, exact int8 text, booleans, strings and arrays, and a
 * person can read it with kafka-console-consumer. Non-finite numbers travel as {"$f":"NaN"}.
 * The message key is "<deployment id>:<key values>", so one row's changes stay in order.
 */
export const MESSAGE_VERSION = 1;

const messageSchema = z.object({
  v: z.literal(MESSAGE_VERSION),
  d: z.number().int().positive(),
  f: z.string(),
  k: z.array(z.string()).min(1),
  x: z.string().regex(/^\d+$/),
  t: z.string().regex(/^\(\d+,\d+\)$/),
  q: z.number(),
  i: z.array(z.unknown()),
});

export type RowMessage = z.infer<typeof messageSchema>;

function encodeValue(value: unknown): unknown {
  if (typeof value === 'number' && !Number.isFinite(value)) return { $f: String(value) };
  if (Array.isArray(value)) return value.map(encodeValue);
  return value;
}

function decodeValue(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(decodeValue);
  if (value !== null && typeof value === 'object' && '$f' in value) return Number((value as { $f: unknown }).$f);
  return value;
}

/** A claimed row as a Kafka message. */
export function encodeRow(deployment: ActiveDeployment, row: ClaimedRow, now: number): { key: string; value: string } {
  const message: RowMessage = {
    v: MESSAGE_VERSION,
    d: deployment.id,
    f: deployment.sql.fingerprint,
    k: [...row.keys],
    x: row.xmin,
    t: row.tid,
    q: Math.round(now - row.ageMs),
    i: row.values.map(encodeValue),
  };
  return { key: `${deployment.id}:${JSON.stringify(row.keys)}`, value: JSON.stringify(message) };
}

export type Decoded = { ok: true; message: RowMessage } | { ok: false; reason: string };

export function decodeMessage(value: Buffer | null): Decoded {
  if (!value) return { ok: false, reason: 'message has no value' };
  let json: unknown;
  try {
    json = JSON.parse(value.toString('utf8'));
  } catch (error) {
    return { ok: false, reason: `message is not JSON: ${(error as Error).message}` };
  }
  const parsed = messageSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    return { ok: false, reason: `message is not a pgscore row message v${MESSAGE_VERSION}: ${issue.path.join('.') || 'value'}: ${issue.message}` };
  }
  return { ok: true, message: { ...parsed.data, i: parsed.data.i.map(decodeValue) } };
}

/** The message as the row the batch pipeline scores, with its age now. */
export function toClaimedRow(message: RowMessage, now: number): ClaimedRow {
  return { keys: message.k, ageMs: Math.max(0, now - message.q), xmin: message.x, tid: message.t, attempts: 0, values: message.i };
}
