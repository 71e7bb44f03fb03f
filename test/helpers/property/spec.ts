import fc from 'fast-check';

/**
 * What the generated suite (test/integration/generated.test.ts) generates: a table, a
 * deployment of the "sums" model on it, a sequence of application statements with good and bad
 * values, and at most one fault. Everything is plain data, so a failing case prints as JSON and
 * replays from its seed.
 *
 * The model is examples/models/typed.onnx (v1) and its variant (v2): total = a + b + f64 + i32 +
 * e + ok (v2: a + b + f64 + 2e + ok), which TypeScript recomputes (oracle.ts). Each input can
 * come from a plain column or from an SQL expression that can fail at run time.
 */

export type KeyKind = 'int' | 'text' | 'composite';
/** 'inherited': a parent with a child table (INHERITS); statements write both. */
export type Layout = 'plain' | 'range' | 'list' | 'multi' | 'inherited';
/** Model input f64: column c; `ctxt::float8` (fails on 'abc'); `c / z` (fails on z = 0); a stored generated column. */
export type F64Source = 'column' | 'cast' | 'division' | 'generated';
/** Model input i32: column d; a domain column; `num / den` (fails on den = 0). */
export type I32Source = 'column' | 'domain' | 'division';
/**
 * Owner triggers: 'noop' returns NEW; 'audit' logs every insert and update into a table of the
 * owner's; 'raising' raises when a row with tag 'boom' gets a prediction; 'hostile' tries, on
 * every update, to reach the other tenant's table and queue; 'guarded' is 'audit' kept off the
 * write-back by WHEN (current_setting('pgscore.writeback', true) IS DISTINCT FROM 'on'), which
 * pgscore must accept.
 */
export type TriggerKind = 'none' | 'noop' | 'audit' | 'raising' | 'hostile' | 'guarded';
/** 'nothing': in a publication with REPLICA IDENTITY NOTHING, so no UPDATE can succeed. */
export type PublicationKind = 'none' | 'default' | 'nothing';

export interface TableSpec {
  readonly key: KeyKind;
  readonly layout: Layout;
  /** Table and columns with spaces, quotes, upper case and non-ASCII letters. */
  readonly odd: boolean;
  /** In a schema of its own instead of public. */
  readonly ownSchema: boolean;
  /** CHECK (e > -1000000) on an application column: statements may fail, on both tables alike. */
  readonly appCheck: boolean;
  /** The prediction column exists before deploy with CHECK (total < 1000000). */
  readonly predictionCheck: boolean;
  readonly f64: F64Source;
  readonly i32: I32Source;
  readonly trigger: TriggerKind;
  readonly publication: PublicationKind;
  readonly rls: boolean;
  /** The deployment's capture option; absent in cases recorded before it (the triggers). */
  readonly capture?: CaptureKind;
}

/** How written rows are found: statement triggers, or the worker reading the WAL. */
export type CaptureKind = 'trigger' | 'wal';

/** A value for each application column; undefined = not set by the statement. */
export interface Values {
  readonly a?: Val;
  readonly b?: Val;
  readonly c?: Val;
  readonly ctxt?: Val;
  readonly z?: Val;
  readonly d?: Val;
  readonly num?: Val;
  readonly den?: Val;
  readonly e?: Val;
  readonly ok?: Val;
  readonly tag?: Val;
  readonly note?: Val;
}
/** SQL literal text (or null for NULL). Numbers travel as text so 'NaN' and 1e39 stay exact. */
export type Val = string | null;

/** Rows are named by an index 1..8, mapped to the key kind's values (render.ts keyOf). */
export type RowIndex = number;

export type Op =
  | { readonly kind: 'insert'; readonly rows: readonly (readonly [RowIndex, Values])[] }
  /** Into the child table when the layout is 'inherited', else a plain insert. */
  | { readonly kind: 'insertChild'; readonly rows: readonly (readonly [RowIndex, Values])[] }
  | { readonly kind: 'upsert'; readonly rows: readonly (readonly [RowIndex, Values])[]; readonly action: 'nothing' | 'update' }
  | { readonly kind: 'copy'; readonly rows: readonly (readonly [RowIndex, Values])[] }
  | { readonly kind: 'merge'; readonly rows: readonly (readonly [RowIndex, Values])[] }
  /**
   * One INSERT … SELECT of `count` rows (keys from `first` on, every `step`-th value, far from
   * rows 1..8), all with the same values: a bulk statement, which queues key ranges when the key
   * is one integer column and dense (step 1), key slices otherwise.
   */
  | { readonly kind: 'bulk'; readonly first: number; readonly count: number; readonly step: 1 | 3; readonly values: Values }
  | { readonly kind: 'update'; readonly where: readonly RowIndex[] | 'all'; readonly set: Values }
  | { readonly kind: 'delete'; readonly where: readonly RowIndex[] }
  | { readonly kind: 'move'; readonly from: RowIndex; readonly to: RowIndex }
  | { readonly kind: 'truncate' }
  | { readonly kind: 'addColumn' }
  | { readonly kind: 'renameNote' };

export type Fault =
  | { readonly kind: 'none' }
  | { readonly kind: 'restart'; readonly at: number }
  | { readonly kind: 'terminate'; readonly at: number }
  /** Another session locks every row (FOR UPDATE) for 300 ms while the statement and the worker run. */
  | { readonly kind: 'lock'; readonly at: number }
  | { readonly kind: 'undeploy'; readonly at: number }
  | { readonly kind: 'promote'; readonly at: number }
  | TransportFault;

/**
 * Faults of the Kafka transport (generated only by generated-kafka.test.ts), beside the statement
 * at `at`: 'relay-kill' kill -9 of the `pgscore relay` process `afterMs` after the statement
 * started, then a new relay; 'broker-restart' a clean stop and start of the broker;
 * 'broker-kill' kill -9 of the broker's JVM, then a start on the same data dir and port;
 * 'drop-ack' the proxy drops the next Produce response after the broker appended the batch and
 * refuses connections until the relay gave the send up.
 */
export type TransportFault =
  | { readonly kind: 'relay-kill'; readonly at: number; readonly afterMs: number }
  | { readonly kind: 'broker-restart'; readonly at: number; readonly afterMs: number }
  | { readonly kind: 'broker-kill'; readonly at: number; readonly afterMs: number }
  | { readonly kind: 'drop-ack'; readonly at: number };

export const KAFKA_FAULTS = ['relay-kill', 'broker-restart', 'broker-kill', 'drop-ack'] as const;

export function isTransportFault(fault: Fault): fault is TransportFault {
  return (KAFKA_FAULTS as readonly string[]).includes(fault.kind);
}

export interface CaseSpec {
  readonly table: TableSpec;
  /** Statements before the deploy (then backfilled) and after it. */
  readonly before: readonly Op[];
  readonly ops: readonly Op[];
  readonly fault: Fault;
}

/**
 * Generator switches: classes of failure not fixed yet are left out unless named in
 * PGSCORE_PROPERTY_KNOWN (a comma list of GATED names, or 1 for all; see suite-findings).
 */
export const GATED = [
  // Lifted as main fixed them (they run by default): f64-cast, f64-division, i32-division,
  // prediction-check, trigger-raising, publication-nothing (b909db2); trigger-audit (8742bd4);
  // fault-undeploy (c0d3bcb); rls, trigger-hostile, inheritance (refused at deploy since 2dc726d);
  // the check stale-dead-letter (F10: dead letters follow newest-wins since 2026-12-07);
  // kafka-consumer-crash (K1: the worker restarts a consumer kafkajs stops for good, retries
  // failed offset commits and disconnects a consumer restarted after stop()) and kafka-row-loss
  // (K2: a message for a deployment missing from the worker's list asks the database), both
  // 2026-12-07: the broker faults are generated by default since.
  // bulk-prediction-check (F14: a claim whose keys' rows were all gone counted as an empty queue,
  // and the worker slept until its next poll; fixed 2026-12-07, bulk statements run everywhere).
  // wal-capture (F18: the drain's barrier passed before a new slot's backfill committed; the
  // barrier is now a WAL record written once the slot exists; lifted 2026-12-07).
] as const;
export type GatedClass = (typeof GATED)[number];
export interface Gates {
  readonly known: ReadonlySet<GatedClass>;
  readonly fault?: Fault['kind'];
  /** 'kafka' adds the Kafka transport's faults (KAFKA_FAULTS). */
  readonly transport: 'notify' | 'kafka';
}

const FAULTS: readonly Fault['kind'][] = ['none', 'restart', 'terminate', 'lock', 'undeploy', 'promote'];

export function gatesFrom(env: string | undefined, fault?: string, transport: Gates['transport'] = 'notify'): Gates {
  const kinds: readonly string[] = transport === 'kafka' ? [...FAULTS, ...KAFKA_FAULTS] : FAULTS;
  if (fault !== undefined && !kinds.includes(fault)) throw new Error(`PGSCORE_PROPERTY_FAULT is one of ${kinds.join(', ')}`);
  const forced = fault as Fault['kind'] | undefined;
  if (env === '1') return { known: new Set(GATED), fault: forced, transport };
  const names = (env ?? '').split(',').map((s) => s.trim()).filter(Boolean);
  const unknown = names.filter((n) => !(GATED as readonly string[]).includes(n));
  if (unknown.length) throw new Error(`PGSCORE_PROPERTY_KNOWN names no gated class ${unknown.join(', ')} (gated: ${GATED.join(', ')})`);
  return { known: new Set(names as GatedClass[]), fault: forced, transport };
}

/** Each value is bad one time in twelve, so about half the rows can score and a wrong prediction shows. */
const num = (good: readonly Val[], bad: readonly Val[]) =>
  fc.oneof({ weight: 11, arbitrary: fc.constantFrom(...good) }, { weight: 1, arbitrary: fc.constantFrom(...bad) });

// Good values are small integers or exact binary fractions, so sums are exact; bad ones are the
// issue's: NULL, NaN, Infinity, numbers a column or a tensor cannot hold, text that does not cast.
const REAL = [['0', '1', '2.5', '-3', '1000', '3.4e38'], [null, 'NaN', '1e39']] as const;
const FLOAT = [['0', '1.25', '-7', '100', '1e308'], [null, 'NaN', 'Infinity']] as const;
const TEXT_FLOAT = [['1.5', '-2', ' 7 ', '1e3'], ['abc', '', 'NaN', '1e400', null]] as const;
const DIVISOR = [['1', '2', '-4', '0.5'], ['0', null]] as const;
const INT = [['0', '1', '-5', '42', '2147483647'], [null, '2147483648', '-500']] as const;
const DEN = [['1', '2', '-3'], ['0', null]] as const;
const BIG = [['0', '7', '-9', '123456789', '9007199254740993', '9223372036854775807'], ['-2000000', null]] as const;
const BOOL = [['true', 'false'], [null]] as const;
const TAG = [['x', 'ü', "it's", '', 'tab\there'], ['boom', null]] as const;
const NOTE = [['n', 'changed', "o'q", '\\N'], [null]] as const;

export function valuesArb(full: boolean): fc.Arbitrary<Values> {
  const record = {
    a: num(...REAL),
    b: num(...REAL),
    c: num(...FLOAT),
    ctxt: num(...TEXT_FLOAT),
    z: num(...DIVISOR),
    d: num(...INT),
    num: num(INT[0].slice(0, 4), [null]),
    den: num(...DEN),
    e: num(...BIG),
    ok: num(...BOOL),
    tag: num(...TAG),
    note: num(...NOTE),
  };
  return full ? fc.record(record) : fc.record(record, { requiredKeys: [] });
}

const rowIndex = fc.integer({ min: 1, max: 8 });
const rows = (max: number) => fc.array(fc.tuple(rowIndex, valuesArb(true)), { minLength: 1, maxLength: max });

export const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 5, arbitrary: rows(4).map((r) => ({ kind: 'insert' as const, rows: r })) },
  { weight: 1, arbitrary: rows(2).map((r) => ({ kind: 'insertChild' as const, rows: r })) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('upsert' as const), rows: rows(3), action: fc.constantFrom('nothing' as const, 'update' as const) }) },
  { weight: 2, arbitrary: rows(4).map((r) => ({ kind: 'copy' as const, rows: r })) },
  { weight: 2, arbitrary: rows(3).map((r) => ({ kind: 'merge' as const, rows: r })) },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('bulk' as const),
      first: fc.integer({ min: 1_000, max: 1_600 }),
      count: fc.integer({ min: 101, max: 1_200 }),
      step: fc.constantFrom(1 as const, 1 as const, 3 as const),
      values: valuesArb(true),
    }),
  },
  {
    weight: 5,
    arbitrary: fc.record({
      kind: fc.constant('update' as const),
      where: fc.oneof(fc.constant('all' as const), fc.uniqueArray(rowIndex, { minLength: 1, maxLength: 3 })),
      set: valuesArb(false).filter((v) => Object.keys(v).length > 0),
    }),
  },
  { weight: 2, arbitrary: fc.uniqueArray(rowIndex, { minLength: 1, maxLength: 3 }).map((w) => ({ kind: 'delete' as const, where: w })) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('move' as const), from: rowIndex, to: rowIndex }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'truncate' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'addColumn' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'renameNote' as const }) },
);

export function tableArb(gates: Gates): fc.Arbitrary<TableSpec> {
  // No generator is gated now (see GATED); a new failure class gets a `gates.known.has(...)` switch here.
  if (gates.transport === 'kafka') return kafkaTableArb(gates);
  return fc.record({
    key: fc.constantFrom<KeyKind>('int', 'text', 'composite'),
    // Kinds pgscore refuses at deploy (inherited, RLS, owner code on the write-back) are rarer: a
    // refused case checks only the refusal.
    layout: fc.constantFrom<Layout>('plain', 'plain', 'range', 'range', 'list', 'list', 'multi', 'multi', 'inherited'),
    odd: fc.boolean(),
    ownSchema: fc.boolean(),
    appCheck: fc.boolean(),
    // The stoppable kinds of table one time in four: the others show more rows scored.
    predictionCheck: fc.constantFrom(false, false, false, true),
    f64: fc.constantFrom<F64Source>('column', 'generated', 'cast', 'division'),
    i32: fc.constantFrom<I32Source>('column', 'domain', 'division'),
    trigger: fc.constantFrom<TriggerKind>('none', 'none', 'none', 'none', 'none', 'none', 'guarded', 'guarded', 'noop', 'raising', 'audit', 'hostile'),
    publication: fc.constantFrom<PublicationKind>('none', 'none', 'none', 'none', 'default', 'nothing'),
    rls: fc.constantFrom(false, false, false, false, false, false, false, true),
    capture: captureArb(gates),
  });
}

/** One case in three captures from the WAL. */
function captureArb(_gates: Gates): fc.Arbitrary<CaptureKind> {
  return fc.constantFrom<CaptureKind>('trigger', 'trigger', 'wal');
}

/**
 * The Kafka suite's tables: the same kinds, but those refused at deploy (owner triggers,
 * publications, RLS, inheritance) rarer still, since a refused case never reaches the transport
 * (about two cases in three deploy, against one in three above).
 */
const kafkaTableArb = (gates: Gates): fc.Arbitrary<TableSpec> => fc.record({
  key: fc.constantFrom<KeyKind>('int', 'text', 'composite'),
  layout: fc.constantFrom<Layout>(...(['plain', 'range', 'list', 'multi'] as const).flatMap((l) => [l, l, l, l]), 'inherited'),
  odd: fc.boolean(),
  ownSchema: fc.boolean(),
  appCheck: fc.boolean(),
  predictionCheck: fc.constantFrom(false, false, false, true),
  f64: fc.constantFrom<F64Source>('column', 'generated', 'cast', 'division'),
  i32: fc.constantFrom<I32Source>('column', 'domain', 'division'),
  trigger: fc.constantFrom<TriggerKind>(...Array<TriggerKind>(16).fill('none'), 'guarded', 'guarded', 'guarded', 'guarded', 'noop', 'raising', 'audit', 'hostile'),
  publication: fc.constantFrom<PublicationKind>(...Array<PublicationKind>(16).fill('none'), 'default', 'nothing'),
  rls: fc.constantFrom(...Array<boolean>(19).fill(false), true),
  capture: captureArb(gates),
});

export function faultArb(opCount: number, gates: Gates): fc.Arbitrary<Fault> {
  const at = fc.integer({ min: 0, max: Math.max(0, opCount - 1) });
  // PGSCORE_PROPERTY_FAULT=<kind> gives every case that fault (to hunt one fault's races).
  const only = gates.fault;
  // The delay before a kill or a broker stop: within the statement's commit, the relay's claim, its send.
  const afterMs = fc.integer({ min: 0, max: 300 });
  const kafka = {
    'relay-kill': fc.record({ kind: fc.constant('relay-kill' as const), at, afterMs }),
    'broker-restart': fc.record({ kind: fc.constant('broker-restart' as const), at, afterMs }),
    'broker-kill': fc.record({ kind: fc.constant('broker-kill' as const), at, afterMs }),
    'drop-ack': at.map((i) => ({ kind: 'drop-ack' as const, at: i })),
  };
  if (only && only !== 'none') return (KAFKA_FAULTS as readonly string[]).includes(only) ? kafka[only as TransportFault['kind']] : at.map((i) => ({ kind: only, at: i }) as Fault);
  if (gates.transport === 'kafka') {
    // Half the cases get one of the transport's own faults; the others as in the notify suite.
    return fc.oneof(
      { weight: 2, arbitrary: fc.constant({ kind: 'none' as const }) },
      { weight: 1, arbitrary: at.map((i) => ({ kind: 'restart' as const, at: i })) },
      { weight: 1, arbitrary: at.map((i) => ({ kind: 'terminate' as const, at: i })) },
      { weight: 1, arbitrary: at.map((i) => ({ kind: 'lock' as const, at: i })) },
      { weight: 1, arbitrary: at.map((i) => ({ kind: 'undeploy' as const, at: i })) },
      { weight: 1, arbitrary: at.map((i) => ({ kind: 'promote' as const, at: i })) },
      ...Object.values(kafka).map((arbitrary) => ({ weight: 2, arbitrary: arbitrary as fc.Arbitrary<Fault> })),
    );
  }
  return fc.oneof(
    { weight: 4, arbitrary: fc.constant({ kind: 'none' as const }) },
    { weight: 1, arbitrary: at.map((i) => ({ kind: 'restart' as const, at: i })) },
    { weight: 1, arbitrary: at.map((i) => ({ kind: 'terminate' as const, at: i })) },
    { weight: 1, arbitrary: at.map((i) => ({ kind: 'lock' as const, at: i })) },
    { weight: 1, arbitrary: at.map((i) => ({ kind: 'undeploy' as const, at: i })) },
    { weight: 1, arbitrary: at.map((i) => ({ kind: 'promote' as const, at: i })) },
  );
}

export function caseArb(gates: Gates): fc.Arbitrary<CaseSpec> {
  return fc
    .record({
      table: tableArb(gates),
      before: fc.array(opArb, { maxLength: 3 }),
      ops: fc.array(opArb, { minLength: 1, maxLength: 10 }),
    })
    .chain((c) => faultArb(c.ops.length, gates).map((fault) => ({ ...c, fault })));
}
