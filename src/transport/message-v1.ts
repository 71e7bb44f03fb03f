import { z } from 'zod';
import type { Decoded } from './message.js';

/**
 * Format 1 of the Kafka message, read but no longer written (relays before format 2 wrote it; an
 * upgrade may find such messages in the topic). One row per message, JSON:
 *   {"v":1,"d":7,"f":"1x3k9","k":["42"],"x":"1234","t":"(0,5)","q":1795785190036,"i":[5.1,3.5,1.4,0.2]}
 * v format version; d deployment id; f the deployment's claim-layout fingerprint; k primary key
 * values as text; x and t the row version (xmin) and place (ctid) the values were read at; q when
 * the row was queued (epoch ms); i the input values in plan order, non-finite numbers as
 * {"$f":"NaN"}. The message key was "<deployment id>:<key values as JSON>".
 */
const VERSION = 1;

const messageSchema = z.object({
  v: z.literal(VERSION),
  d: z.number().int().positive(),
  f: z.string(),
  k: z.array(z.string()).min(1),
  x: z.string().regex(/^\d+$/),
  t: z.string().regex(/^\(\d+,\d+\)$/),
  q: z.number(),
  i: z.array(z.unknown()),
});

export type RowMessageV1 = z.infer<typeof messageSchema>;

function decodeValue(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(decodeValue);
  if (value !== null && typeof value === 'object' && '$f' in value) return Number((value as { $f: unknown }).$f);
  return value;
}

/** A format-1 (JSON) message as a message of one row. */
export function decodeJsonMessage(value: Buffer): Decoded {
  let json: unknown;
  try {
    json = JSON.parse(value.toString('utf8'));
  } catch (error) {
    return { ok: false, reason: `message is not JSON: ${(error as Error).message}` };
  }
  const parsed = messageSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    return { ok: false, reason: `message is not a pgscore row message v${VERSION}: ${issue.path.join('.') || 'value'}: ${issue.message}` };
  }
  const m = parsed.data;
  return {
    ok: true,
    message: {
      version: VERSION,
      deployment: m.d,
      fingerprint: m.f,
      keyCount: m.k.length,
      rows: [{ keys: m.k, xmin: m.x, tid: m.t, queuedAt: m.q, attempts: 0, values: m.i.map(decodeValue) }],
    },
  };
}
