import type { CaseSpec, GatedClass, TableSpec, Values } from './spec.js';

/**
 * Counterexamples the generated suite found (shrunk), replayed as regular tests. A finding whose
 * class is not fixed yet is `gated`: it runs only when PGSCORE_PROPERTY_KNOWN names its class
 * (listed, with its seed, in /work/notes/suite-findings.md). Once fixed, `gated` becomes false.
 */
export interface Found {
  readonly title: string;
  readonly gated: GatedClass | false;
  /** Found by generated-kafka.test.ts, which replays it (generated.test.ts replays the others). */
  readonly transport?: 'kafka';
  readonly spec: CaseSpec;
}

const PLAIN: TableSpec = {
  key: 'int',
  layout: 'plain',
  odd: false,
  ownSchema: false,
  appCheck: false,
  predictionCheck: false,
  f64: 'column',
  i32: 'column',
  trigger: 'none',
  publication: 'none',
  rls: false,
};
const ROW: Values = { a: '0', b: '0', c: '0', ctxt: '1.5', z: '1', d: '0', num: '0', den: '1', e: '0', ok: 'true', tag: 'x', note: 'n' };

export const FOUND: readonly Found[] = [
  {
    title: 'F1: ml.undeploy while the application updates the table (seed -649276190)',
    gated: false,
    spec: {
      table: PLAIN,
      before: [],
      ops: [{ kind: 'update', where: [1], set: { c: '0', ctxt: '1.5', z: '2', d: '42', e: '9007199254740993', tag: "it's", note: '\\N' } }],
      fault: { kind: 'undeploy', at: 0 },
    },
  },
  {
    title: "F2: an input expression that fails ('abc'::float8) makes a dead letter (seed 278290413)",
    gated: false,
    spec: { table: { ...PLAIN, f64: 'cast' }, before: [], ops: [{ kind: 'insert', rows: [[1, { ...ROW, ctxt: 'abc' }]] }], fault: { kind: 'none' } },
  },
  {
    title: 'F2: an input expression that divides by zero makes a dead letter',
    gated: false,
    spec: { table: { ...PLAIN, f64: 'division' }, before: [], ops: [{ kind: 'insert', rows: [[1, { ...ROW, z: '0' }], [2, ROW]] }], fault: { kind: 'none' } },
  },
  {
    title: 'F2: UPDATE of a row whose input expression fails (the issue: every later UPDATE failed)',
    gated: false,
    spec: {
      table: { ...PLAIN, i32: 'division' },
      before: [],
      ops: [
        { kind: 'insert', rows: [[1, { ...ROW, den: '0' }], [2, ROW]] },
        { kind: 'update', where: 'all', set: { note: 'changed' } },
        { kind: 'update', where: [1], set: { den: '2' } },
      ],
      fault: { kind: 'none' },
    },
  },
  {
    title: 'F3: a CHECK on the prediction column the write-back violates (seed -414523402)',
    gated: false,
    spec: {
      table: { ...PLAIN, predictionCheck: true },
      before: [],
      ops: [{ kind: 'merge', rows: [[1, { ...ROW, e: '123456789' }], [2, ROW]] }],
      fault: { kind: 'none' },
    },
  },
  {
    title: "F4: an owner's AFTER trigger the worker has no rights for (seed 399290967)",
    gated: false,
    spec: { table: { ...PLAIN, trigger: 'audit' }, before: [], ops: [{ kind: 'insert', rows: [[1, ROW]] }], fault: { kind: 'none' } },
  },
  {
    title: 'F6: RLS with no policy for the worker (seed -927364620)',
    gated: false,
    spec: { table: { ...PLAIN, rls: true }, before: [], ops: [{ kind: 'insert', rows: [[1, ROW], [2, ROW]] }], fault: { kind: 'none' } },
  },
  {
    title: "F7: an owner's trigger that reaches for another tenant's table and queue during the write-back (seed -969434419)",
    gated: false,
    spec: {
      table: { ...PLAIN, trigger: 'hostile' },
      before: [],
      ops: [{ kind: 'insert', rows: [[1, ROW]] }],
      fault: { kind: 'none' },
    },
  },
  {
    title: 'F8: a row inserted into a child table of the deployed table (seed 590741888)',
    gated: false,
    spec: { table: { ...PLAIN, layout: 'inherited' }, before: [], ops: [{ kind: 'insertChild', rows: [[1, ROW]] }], fault: { kind: 'none' } },
  },
  {
    // A race: this case failed 1 run in 2 when found.
    title: 'F10: a row fixed after a dead letter scores, and its old dead letter stays (seed 1577493652)',
    gated: false,
    spec: {"table": {"key": "int", "layout": "plain", "odd": false, "ownSchema": false, "appCheck": true, "predictionCheck": false, "f64": "column", "i32": "column", "trigger": "none", "publication": "none", "rls": false}, "before": [{"kind": "upsert", "rows": [[4, {"a": "0", "b": "1000", "c": "1e308", "ctxt": " 7 ", "z": "-4", "d": "0", "num": null, "den": "1", "e": "0", "ok": "true", "tag": "\u00fc", "note": "n"}]], "action": "update"}], "ops": [{"kind": "insert", "rows": [[1, {"a": "2.5", "b": "-3", "c": "0", "ctxt": " 7 ", "z": "1", "d": "2147483647", "num": "42", "den": "-3", "e": "9223372036854775807", "ok": "false", "tag": "x", "note": "changed"}]]}, {"kind": "update", "where": "all", "set": {"b": "1", "c": "NaN", "ctxt": "1e3", "num": "42", "ok": "true", "tag": "tab\there", "note": "changed"}}, {"kind": "update", "where": "all", "set": {"a": "1000", "b": "0", "c": "1e308", "ctxt": "-2", "z": "1", "d": "1", "num": "42", "den": "1", "ok": "true", "tag": "", "note": "n"}}, {"kind": "addColumn"}, {"kind": "merge", "rows": [[3, {"a": "1", "b": "NaN", "c": "-7", "ctxt": "1e400", "z": "2", "d": "2147483647", "num": "1", "den": "2", "e": "-9", "ok": "true", "tag": "it's", "note": "o'q"}]]}], "fault": {"kind": "none"}},
  },
  {
    // PostgreSQL gives the UPDATE's new-row transition table of a MERGE on a partitioned table
    // the inserted row instead of the updated one; failed 1 run in 3 (when the row was scored
    // before the MERGE). Also F9 (seed 367181693), the same MERGE shape.
    title: 'F12: a MERGE inserting row 5 then updating row 8 of a list-partitioned table leaves row 8 stale (seed 16312420)',
    gated: false,
    spec: {"table": {"key": "int", "layout": "list", "odd": false, "ownSchema": false, "appCheck": true, "predictionCheck": false, "f64": "column", "i32": "column", "trigger": "guarded", "publication": "none", "rls": false}, "before": [{"kind": "merge", "rows": [[3, {"a": "0", "b": "3.4e38", "c": "0", "ctxt": "-2", "z": "1", "d": "1", "num": "-5", "den": "-3", "e": "9223372036854775807", "ok": "true", "tag": "\u00fc", "note": "o'q"}], [2, {"a": "-3", "b": "1", "c": null, "ctxt": " 7 ", "z": "1", "d": "-5", "num": "-5", "den": "0", "e": "0", "ok": "false", "tag": "", "note": null}], [4, {"a": "-3", "b": "3.4e38", "c": "0", "ctxt": "1.5", "z": "-4", "d": "1", "num": "42", "den": "-3", "e": "123456789", "ok": "false", "tag": "\u00fc", "note": "o'q"}]]}], "ops": [{"kind": "upsert", "rows": [[2, {"a": "1", "b": "2.5", "c": "100", "ctxt": "-2", "z": null, "d": "42", "num": "-5", "den": "1", "e": "0", "ok": "true", "tag": "tab\there", "note": "o'q"}], [8, {"a": "1000", "b": "-3", "c": "1.25", "ctxt": "1.5", "z": "-4", "d": "1", "num": "42", "den": "1", "e": "-9", "ok": "false", "tag": "\u00fc", "note": "o'q"}], [3, {"a": "2.5", "b": null, "c": "100", "ctxt": "1.5", "z": "2", "d": "-500", "num": "42", "den": "2", "e": "9007199254740993", "ok": "false", "tag": "", "note": null}]], "action": "update"}, {"kind": "upsert", "rows": [[2, {"a": "3.4e38", "b": "0", "c": "-7", "ctxt": " 7 ", "z": "1", "d": "-5", "num": "-5", "den": "1", "e": "123456789", "ok": "true", "tag": "tab\there", "note": "n"}]], "action": "nothing"}, {"kind": "upsert", "rows": [[7, {"a": "-3", "b": "2.5", "c": "1e308", "ctxt": " 7 ", "z": "-4", "d": "2147483647", "num": "1", "den": "-3", "e": "9007199254740993", "ok": "false", "tag": "", "note": "n"}]], "action": "update"}, {"kind": "insert", "rows": [[3, {"a": "1", "b": "0", "c": "0", "ctxt": "1.5", "z": "2", "d": null, "num": "42", "den": null, "e": "7", "ok": "false", "tag": "x", "note": null}], [5, {"a": "NaN", "b": "1000", "c": "1e308", "ctxt": "1.5", "z": "0.5", "d": "2147483647", "num": "0", "den": "2", "e": "9007199254740993", "ok": "true", "tag": "x", "note": "\\N"}], [3, {"a": "1", "b": "1", "c": "0", "ctxt": "1.5", "z": "-4", "d": "2147483647", "num": "42", "den": "-3", "e": "9007199254740993", "ok": "true", "tag": "", "note": "o'q"}]]}, {"kind": "copy", "rows": [[1, {"a": "3.4e38", "b": null, "c": "1.25", "ctxt": "1.5", "z": "1", "d": "2147483647", "num": "0", "den": "2", "e": "9007199254740993", "ok": "false", "tag": "tab\there", "note": "o'q"}], [7, {"a": "1", "b": "0", "c": "0", "ctxt": "1.5", "z": "1", "d": "2147483647", "num": "0", "den": "-3", "e": null, "ok": "true", "tag": "it's", "note": "changed"}], [5, {"a": "NaN", "b": null, "c": "1.25", "ctxt": null, "z": "2", "d": "1", "num": "0", "den": "2", "e": "9223372036854775807", "ok": "true", "tag": "\u00fc", "note": "\\N"}], [6, {"a": "0", "b": "1", "c": "1.25", "ctxt": " 7 ", "z": "0.5", "d": "42", "num": "42", "den": "-3", "e": "9223372036854775807", "ok": "false", "tag": "x", "note": "changed"}]]}, {"kind": "merge", "rows": [[5, {"a": "-3", "b": "1", "c": "-7", "ctxt": "1.5", "z": "-4", "d": "2147483647", "num": "0", "den": "-3", "e": "-9", "ok": "false", "tag": "", "note": "o'q"}], [8, {"a": "-3", "b": "NaN", "c": "1e308", "ctxt": "1e3", "z": "-4", "d": "1", "num": null, "den": "1", "e": "9223372036854775807", "ok": "false", "tag": "x", "note": "o'q"}]]}], "fault": {"kind": "none"}},
  },
  {
    // ml.undeploy listed the partitions with pg_partition_tree (locking each to the end of its
    // transaction); the application's ALTER TABLE, holding the parent, waited for one of them.
    title: 'F11: ml.undeploy during an ALTER TABLE of a range-partitioned table: a deadlock (seed 561619030)',
    gated: false,
    spec: {"table": {"key": "int", "layout": "range", "odd": false, "ownSchema": true, "appCheck": false, "predictionCheck": false, "f64": "division", "i32": "domain", "trigger": "none", "publication": "default", "rls": false}, "before": [{"kind": "move", "from": 5, "to": 7}], "ops": [{"kind": "update", "where": [8, 1], "set": {"a": "2.5", "b": "3.4e38", "c": "0", "ctxt": null, "z": "2", "num": "-5", "den": "2", "e": "-9", "ok": "true", "tag": "", "note": "\\N"}}, {"kind": "insert", "rows": [[1, {"a": "1000", "b": "1", "c": "1e308", "ctxt": "1.5", "z": "0.5", "d": "0", "num": "42", "den": "2", "e": "9223372036854775807", "ok": null, "tag": null, "note": "changed"}]]}, {"kind": "insert", "rows": [[7, {"a": "0", "b": "3.4e38", "c": "100", "ctxt": "-2", "z": "-4", "d": "0", "num": "42", "den": null, "e": null, "ok": "false", "tag": "it's", "note": "changed"}], [1, {"a": "2.5", "b": "1000", "c": "-7", "ctxt": "-2", "z": "0.5", "d": "-5", "num": "-5", "den": "2", "e": "123456789", "ok": "true", "tag": "", "note": "changed"}], [3, {"a": "3.4e38", "b": "3.4e38", "c": "0", "ctxt": "-2", "z": "1", "d": "0", "num": "42", "den": "1", "e": "0", "ok": "true", "tag": "it's", "note": "n"}]]}, {"kind": "addColumn"}, {"kind": "insertChild", "rows": [[5, {"a": "2.5", "b": "0", "c": "1.25", "ctxt": "-2", "z": "0.5", "d": "0", "num": "-5", "den": "1", "e": "123456789", "ok": "true", "tag": "it's", "note": "\\N"}]]}, {"kind": "copy", "rows": [[4, {"a": null, "b": "1", "c": "1e308", "ctxt": " 7 ", "z": "-4", "d": "42", "num": "-5", "den": "0", "e": "123456789", "ok": "false", "tag": "tab\there", "note": null}], [8, {"a": "1", "b": "0", "c": "1e308", "ctxt": "1e3", "z": "1", "d": "-5", "num": "-5", "den": "2", "e": "-9", "ok": "false", "tag": "", "note": "o'q"}]]}], "fault": {"kind": "undeploy", "at": 3}},
  },
  {
    // ml.promote locked the deployment row, then read the table's triggers; the ALTER TABLE
    // held the table and its event trigger waited for the row.
    title: 'F13: ml.promote during an ALTER TABLE: a deadlock (seed -1933745186)',
    gated: false,
    spec: {"table": {"key": "int", "layout": "range", "odd": false, "ownSchema": false, "appCheck": false, "predictionCheck": false, "f64": "column", "i32": "domain", "trigger": "none", "publication": "nothing", "rls": false}, "before": [{"kind": "merge", "rows": [[6, {"a": "1", "b": "0", "c": "-7", "ctxt": " 7 ", "z": "1", "d": "-5", "num": "0", "den": "2", "e": "-2000000", "ok": "true", "tag": "it's", "note": "n"}], [1, {"a": "-3", "b": "-3", "c": "0", "ctxt": "-2", "z": "-4", "d": "0", "num": "42", "den": "-3", "e": "0", "ok": "false", "tag": null, "note": "\\N"}]]}], "ops": [{"kind": "update", "where": [3, 4, 8], "set": {"a": "0", "b": "-3", "ctxt": "1e3", "d": "-5", "num": "-5", "den": "-3", "e": "-9", "note": "\\N"}}, {"kind": "copy", "rows": [[7, {"a": "1", "b": null, "c": "100", "ctxt": "NaN", "z": null, "d": "-5", "num": "1", "den": "0", "e": "9223372036854775807", "ok": "true", "tag": "tab\there", "note": "o'q"}], [3, {"a": "3.4e38", "b": "0", "c": "0", "ctxt": "1e3", "z": "1", "d": "42", "num": "-5", "den": "1", "e": "0", "ok": "false", "tag": "tab\there", "note": "\\N"}]]}, {"kind": "upsert", "rows": [[3, {"a": "0", "b": "3.4e38", "c": "0", "ctxt": "1.5", "z": "0.5", "d": "42", "num": null, "den": "2", "e": "7", "ok": "true", "tag": "tab\there", "note": "\\N"}]], "action": "update"}, {"kind": "insert", "rows": [[4, {"a": "0", "b": "2.5", "c": "1.25", "ctxt": "abc", "z": "1", "d": "1", "num": "-5", "den": "-3", "e": "0", "ok": "true", "tag": "\u00fc", "note": "changed"}]]}, {"kind": "addColumn"}, {"kind": "truncate"}, {"kind": "upsert", "rows": [[7, {"a": "1", "b": "1000", "c": "0", "ctxt": "1e3", "z": "1", "d": "1", "num": "1", "den": "1", "e": "9223372036854775807", "ok": "true", "tag": "\u00fc", "note": "o'q"}]], "action": "nothing"}, {"kind": "upsert", "rows": [[4, {"a": null, "b": "1", "c": "-7", "ctxt": "-2", "z": "1", "d": "-5", "num": "1", "den": "2", "e": "9223372036854775807", "ok": "false", "tag": "", "note": "n"}], [5, {"a": "2.5", "b": "1000", "c": "1e308", "ctxt": "1e3", "z": "2", "d": "1", "num": "1", "den": "-3", "e": null, "ok": "false", "tag": "\u00fc", "note": "o'q"}], [7, {"a": "3.4e38", "b": "2.5", "c": "1e308", "ctxt": "-2", "z": "2", "d": "-5", "num": "0", "den": "1", "e": "9223372036854775807", "ok": "true", "tag": "\u00fc", "note": "changed"}]], "action": "update"}], "fault": {"kind": "promote", "at": 4}},
  },
  {
    // A race that depends on the group's state after earlier broker faults: found as case 8 of seed
    // 1293292820 (PGSCORE_PROPERTY_KAFKA_RUNS=100), twice in a row; this case alone passed 3 times of 3.
    title: "K1: after a broker restart the Kafka worker's consumer crashes (KafkaJSGroupCoordinatorNotFound) and never restarts: 2 rows wait in Kafka for good (seed 1293292820)",
    gated: false,
    transport: 'kafka',
    spec: {"table": {"key": "composite", "layout": "range", "odd": false, "ownSchema": false, "appCheck": false, "predictionCheck": false, "f64": "generated", "i32": "domain", "trigger": "guarded", "publication": "none", "rls": false}, "before": [{"kind": "upsert", "rows": [[2, {"a": "1", "b": "-3", "c": "100", "ctxt": "-2", "z": null, "d": "2147483647", "num": "0", "den": "1", "e": "-2000000", "ok": "false", "tag": "", "note": "\\N"}]], "action": "nothing"}, {"kind": "update", "where": [3, 8], "set": {"a": "2.5", "b": "NaN", "c": "-7", "ctxt": "-2", "z": "2", "d": "-5", "num": "-5", "den": "2", "e": "-9", "ok": "true", "note": "changed"}}], "ops": [{"kind": "copy", "rows": [[4, {"a": "1", "b": "-3", "c": "0", "ctxt": "-2", "z": "-4", "d": "2147483647", "num": "42", "den": "1", "e": "7", "ok": "true", "tag": "tab\there", "note": "changed"}], [3, {"a": "-3", "b": "-3", "c": "0", "ctxt": "-2", "z": "-4", "d": "-500", "num": "1", "den": "1", "e": "123456789", "ok": "false", "tag": "", "note": "n"}]]}, {"kind": "delete", "where": [7, 5]}, {"kind": "insert", "rows": [[3, {"a": "2.5", "b": "-3", "c": "100", "ctxt": "1.5", "z": "-4", "d": "-5", "num": "0", "den": "2", "e": "0", "ok": "false", "tag": "it's", "note": "changed"}]]}, {"kind": "truncate"}], "fault": {"kind": "broker-restart", "at": 2, "afterMs": 5}},
  },
  {
    // A race: case 5 of seed 1293292820 (PGSCORE_PROPERTY_KAFKA_RUNS=10), 1 run in 2.
    title: 'K2: after a kill -9 of the broker, 2 rows end with no prediction, no dead letter, nothing pending and nothing in Kafka (seed 1293292820)',
    gated: false,
    transport: 'kafka',
    spec: {"table": {"key": "composite", "layout": "list", "odd": false, "ownSchema": true, "appCheck": false, "predictionCheck": false, "f64": "generated", "i32": "division", "trigger": "none", "publication": "none", "rls": false}, "before": [{"kind": "upsert", "rows": [[8, {"a": "0", "b": "3.4e38", "c": "-7", "ctxt": "-2", "z": "2", "d": "-5", "num": "-5", "den": "-3", "e": "123456789", "ok": "true", "tag": "ü", "note": null}], [1, {"a": "1000", "b": "3.4e38", "c": "0", "ctxt": " 7 ", "z": "-4", "d": "-5", "num": "-5", "den": "-3", "e": "0", "ok": "true", "tag": "x", "note": "changed"}], [8, {"a": "0", "b": "2.5", "c": "1.25", "ctxt": "1.5", "z": "-4", "d": "-5", "num": "42", "den": "-3", "e": "-9", "ok": "true", "tag": "ü", "note": "changed"}]], "action": "nothing"}, {"kind": "insert", "rows": [[7, {"a": "1", "b": "0", "c": "-7", "ctxt": "", "z": "-4", "d": "42", "num": "-5", "den": "-3", "e": "9007199254740993", "ok": "true", "tag": "it's", "note": "\\N"}], [5, {"a": "3.4e38", "b": "3.4e38", "c": "1.25", "ctxt": "1.5", "z": "0.5", "d": "1", "num": "42", "den": "-3", "e": "9223372036854775807", "ok": "false", "tag": "tab\there", "note": "o'q"}], [7, {"a": "1000", "b": "1", "c": "0", "ctxt": " 7 ", "z": "2", "d": "0", "num": "0", "den": "-3", "e": "9007199254740993", "ok": "true", "tag": "", "note": "o'q"}], [6, {"a": "2.5", "b": "-3", "c": "-7", "ctxt": "-2", "z": "0.5", "d": "-5", "num": "1", "den": null, "e": "9223372036854775807", "ok": "true", "tag": "", "note": "\\N"}]]}], "ops": [{"kind": "move", "from": 1, "to": 8}, {"kind": "update", "where": "all", "set": {"a": "1000", "b": "3.4e38", "c": "0", "ctxt": "1e3", "d": "0", "num": "42", "den": null, "ok": "false", "tag": ""}}, {"kind": "upsert", "rows": [[5, {"a": "2.5", "b": "1000", "c": "0", "ctxt": "abc", "z": "2", "d": "2147483647", "num": "0", "den": "2", "e": "7", "ok": "true", "tag": "ü", "note": "o'q"}]], "action": "nothing"}, {"kind": "move", "from": 8, "to": 1}, {"kind": "merge", "rows": [[3, {"a": "1", "b": "0", "c": "0", "ctxt": "1e3", "z": "0.5", "d": "42", "num": null, "den": "1", "e": "7", "ok": "false", "tag": "x", "note": "o'q"}], [8, {"a": "-3", "b": "1", "c": "-7", "ctxt": "-2", "z": "1", "d": "2147483647", "num": null, "den": "-3", "e": "9007199254740993", "ok": "false", "tag": "tab\there", "note": "o'q"}]]}], "fault": {"kind": "broker-kill", "at": 1, "afterMs": 222}},
  },
  {
    // A race: case 5 of seed 2131107803 (PGSCORE_PROPERTY_KAFKA_RUNS=19), 1 run in 2; alone it passed.
    title: 'K2: after a kill -9 of the relay, 2 rows inserted before it end in no visible state (seed 2131107803)',
    gated: false,
    transport: 'kafka',
    spec: {"table": {"key": "text", "layout": "multi", "odd": true, "ownSchema": false, "appCheck": false, "predictionCheck": false, "f64": "generated", "i32": "column", "trigger": "guarded", "publication": "none", "rls": false}, "before": [], "ops": [{"kind": "upsert", "rows": [[5, {"a": "-3", "b": "1", "c": "100", "ctxt": null, "z": "1", "d": "1", "num": null, "den": null, "e": "-9", "ok": "true", "tag": "ü", "note": "changed"}]], "action": "nothing"}, {"kind": "upsert", "rows": [[1, {"a": "NaN", "b": "-3", "c": "100", "ctxt": "1.5", "z": "2", "d": "42", "num": null, "den": "0", "e": "9223372036854775807", "ok": null, "tag": "tab\there", "note": "n"}], [6, {"a": "3.4e38", "b": "2.5", "c": "100", "ctxt": "NaN", "z": "0", "d": "0", "num": "1", "den": "2", "e": "123456789", "ok": "false", "tag": null, "note": "\\N"}]], "action": "nothing"}, {"kind": "upsert", "rows": [[8, {"a": "3.4e38", "b": "2.5", "c": "NaN", "ctxt": "-2", "z": "-4", "d": "0", "num": "0", "den": "-3", "e": "-9", "ok": "false", "tag": "x", "note": "o'q"}]], "action": "update"}, {"kind": "insert", "rows": [[4, {"a": "-3", "b": "1", "c": "1e308", "ctxt": "1.5", "z": "-4", "d": "2147483647", "num": "-5", "den": "1", "e": "7", "ok": "false", "tag": "", "note": "changed"}], [4, {"a": "1000", "b": "0", "c": "NaN", "ctxt": " 7 ", "z": "-4", "d": "42", "num": null, "den": "-3", "e": "7", "ok": "true", "tag": "x", "note": "n"}], [1, {"a": "1000", "b": "3.4e38", "c": "1.25", "ctxt": "-2", "z": "0", "d": "42", "num": "1", "den": "2", "e": "9223372036854775807", "ok": "false", "tag": "boom", "note": "\\N"}], [1, {"a": "3.4e38", "b": "1", "c": "1e308", "ctxt": "1.5", "z": "1", "d": "-5", "num": "-5", "den": "-3", "e": "9007199254740993", "ok": "false", "tag": "tab\there", "note": "o'q"}]]}], "fault": {"kind": "relay-kill", "at": 3, "afterMs": 4}},
  },
  {
    title: 'F14: a bulk INSERT then TRUNCATE after a failing batch: claims of vanished rows counted as an empty queue (seed 909101)',
    gated: false,
    spec: {
      "table": {
        "key": "composite",
        "layout": "multi",
        "odd": false,
        "ownSchema": true,
        "appCheck": true,
        "predictionCheck": true,
        "f64": "column",
        "i32": "division",
        "trigger": "guarded",
        "publication": "default",
        "rls": false
      },
      "before": [],
      "ops": [
        {
          "kind": "insert",
          "rows": [
            [
              5,
              {
                "a": "1000",
                "b": "1",
                "c": "100",
                "ctxt": "1.5",
                "z": "1",
                "d": "-5",
                "num": "1",
                "den": "1",
                "e": "9007199254740993",
                "ok": "true",
                "tag": "it's",
                "note": "changed"
              }
            ]
          ]
        },
        {
          "kind": "bulk",
          "first": 1421,
          "count": 924,
          "step": 1,
          "values": {
            "a": "0",
            "b": "2.5",
            "c": "0",
            "ctxt": "-2",
            "z": "-4",
            "d": "-5",
            "num": "0",
            "den": "1",
            "e": "7",
            "ok": "false",
            "tag": "boom",
            "note": "n"
          }
        },
        {
          "kind": "move",
          "from": 8,
          "to": 5
        },
        {
          "kind": "insert",
          "rows": [
            [
              3,
              {
                "a": null,
                "b": "3.4e38",
                "c": "0",
                "ctxt": "-2",
                "z": "0.5",
                "d": "42",
                "num": "42",
                "den": "2",
                "e": "0",
                "ok": null,
                "tag": "ü",
                "note": null
              }
            ],
            [
              6,
              {
                "a": "3.4e38",
                "b": "1",
                "c": "NaN",
                "ctxt": "1e3",
                "z": "-4",
                "d": "1",
                "num": "0",
                "den": "-3",
                "e": "0",
                "ok": "false",
                "tag": "x",
                "note": "o'q"
              }
            ],
            [
              5,
              {
                "a": "0",
                "b": "1000",
                "c": "100",
                "ctxt": "1.5",
                "z": "-4",
                "d": "2147483647",
                "num": "42",
                "den": "2",
                "e": "9007199254740993",
                "ok": "true",
                "tag": "it's",
                "note": "changed"
              }
            ]
          ]
        },
        {
          "kind": "truncate"
        },
        {
          "kind": "copy",
          "rows": [
            [
              5,
              {
                "a": "-3",
                "b": "1000",
                "c": "1.25",
                "ctxt": " 7 ",
                "z": "-4",
                "d": null,
                "num": "42",
                "den": "1",
                "e": "7",
                "ok": "false",
                "tag": "it's",
                "note": "\\N"
              }
            ],
            [
              2,
              {
                "a": "3.4e38",
                "b": "2.5",
                "c": "1.25",
                "ctxt": "1.5",
                "z": "-4",
                "d": "1",
                "num": "1",
                "den": "1",
                "e": "7",
                "ok": "true",
                "tag": "tab\there",
                "note": "o'q"
              }
            ],
            [
              1,
              {
                "a": "0",
                "b": "NaN",
                "c": "0",
                "ctxt": "1e3",
                "z": "1",
                "d": "42",
                "num": "1",
                "den": "1",
                "e": "7",
                "ok": "false",
                "tag": "ü",
                "note": "\\N"
              }
            ]
          ]
        },
        {
          "kind": "merge",
          "rows": [
            [
              3,
              {
                "a": "3.4e38",
                "b": "1",
                "c": "0",
                "ctxt": " 7 ",
                "z": "0.5",
                "d": "42",
                "num": "0",
                "den": "2",
                "e": "9007199254740993",
                "ok": "true",
                "tag": "tab\there",
                "note": "n"
              }
            ]
          ]
        }
      ],
      "fault": {
        "kind": "none"
      }
    },
  },
  {
    title: 'F15: a 601-row bulk INSERT whose every prediction violates a CHECK: dead-lettering one write per try and per row took 8 s (seed 909202)',
    gated: false,
    spec: {
      "table": {
        "key": "int",
        "layout": "list",
        "odd": true,
        "ownSchema": true,
        "appCheck": true,
        "predictionCheck": true,
        "f64": "column",
        "i32": "column",
        "trigger": "none",
        "publication": "none",
        "rls": false
      },
      "before": [
        {
          "kind": "addColumn"
        },
        {
          "kind": "upsert",
          "rows": [
            [
              4,
              {
                "a": "2.5",
                "b": "1e39",
                "c": "-7",
                "ctxt": "1.5",
                "z": "2",
                "d": "0",
                "num": "1",
                "den": "-3",
                "e": "9223372036854775807",
                "ok": "true",
                "tag": "it's",
                "note": "changed"
              }
            ],
            [
              3,
              {
                "a": "3.4e38",
                "b": "-3",
                "c": "100",
                "ctxt": " 7 ",
                "z": "-4",
                "d": "-5",
                "num": "0",
                "den": "-3",
                "e": "9223372036854775807",
                "ok": "true",
                "tag": "x",
                "note": "o'q"
              }
            ],
            [
              3,
              {
                "a": "-3",
                "b": "1e39",
                "c": "100",
                "ctxt": "-2",
                "z": "2",
                "d": "1",
                "num": "0",
                "den": "1",
                "e": "9223372036854775807",
                "ok": null,
                "tag": "it's",
                "note": "changed"
              }
            ]
          ],
          "action": "nothing"
        },
        {
          "kind": "bulk",
          "first": 1002,
          "count": 601,
          "step": 1,
          "values": {
            "a": "3.4e38",
            "b": "2.5",
            "c": "0",
            "ctxt": "-2",
            "z": "-4",
            "d": "1",
            "num": "0",
            "den": "-3",
            "e": "-9",
            "ok": "true",
            "tag": "tab\there",
            "note": null
          }
        }
      ],
      "ops": [
        {
          "kind": "merge",
          "rows": [
            [
              6,
              {
                "a": "1000",
                "b": "1000",
                "c": "1.25",
                "ctxt": "1.5",
                "z": "2",
                "d": "0",
                "num": "-5",
                "den": "2",
                "e": null,
                "ok": "false",
                "tag": "ü",
                "note": "changed"
              }
            ]
          ]
        },
        {
          "kind": "renameNote"
        },
        {
          "kind": "update",
          "where": "all",
          "set": {
            "a": "3.4e38",
            "b": "1",
            "ctxt": " 7 ",
            "z": "2",
            "d": "-5",
            "num": "42",
            "den": "2",
            "e": "-9",
            "ok": "false",
            "tag": "tab\there"
          }
        },
        {
          "kind": "update",
          "where": "all",
          "set": {
            "b": "3.4e38",
            "c": "1.25",
            "z": "-4",
            "d": "-5",
            "num": "42",
            "den": "-3",
            "e": "9007199254740993",
            "ok": "false",
            "tag": "it's",
            "note": "\\N"
          }
        }
      ],
      "fault": {
        "kind": "restart",
        "at": 1
      }
    },
  },
  {
    title: 'F16: capture from the WAL, the first such deployment of a database: rows written before the slot and its backfill counted as drained (seed 912001)',
    gated: false,
    spec: {
      "table": {
        "key": "composite",
        "layout": "list",
        "odd": true,
        "ownSchema": true,
        "appCheck": true,
        "predictionCheck": true,
        "f64": "cast",
        "i32": "column",
        "trigger": "none",
        "publication": "none",
        "rls": false,
        "capture": "wal"
      },
      "before": [],
      "ops": [
        {
          "kind": "insert",
          "rows": [
            [
              2,
              {
                "a": "0",
                "b": "3.4e38",
                "c": "1e308",
                "ctxt": "-2",
                "z": "0",
                "d": "-5",
                "num": "1",
                "den": "2",
                "e": "-9",
                "ok": "true",
                "tag": "x",
                "note": "changed"
              }
            ],
            [
              8,
              {
                "a": "1",
                "b": "1",
                "c": "-7",
                "ctxt": "1e3",
                "z": "1",
                "d": "42",
                "num": "0",
                "den": null,
                "e": "0",
                "ok": "true",
                "tag": "",
                "note": "changed"
              }
            ],
            [
              2,
              {
                "a": "3.4e38",
                "b": "3.4e38",
                "c": "1.25",
                "ctxt": "1e3",
                "z": "2",
                "d": "42",
                "num": "0",
                "den": "1",
                "e": "-9",
                "ok": "false",
                "tag": "x",
                "note": "\\N"
              }
            ]
          ]
        },
        {
          "kind": "insert",
          "rows": [
            [
              2,
              {
                "a": "1",
                "b": "1",
                "c": "-7",
                "ctxt": "-2",
                "z": "-4",
                "d": "0",
                "num": "42",
                "den": "1",
                "e": "7",
                "ok": "false",
                "tag": "",
                "note": "o'q"
              }
            ],
            [
              8,
              {
                "a": "3.4e38",
                "b": "NaN",
                "c": "0",
                "ctxt": " 7 ",
                "z": "1",
                "d": "42",
                "num": "1",
                "den": "1",
                "e": "0",
                "ok": "false",
                "tag": "it's",
                "note": "changed"
              }
            ]
          ]
        }
      ],
      "fault": {
        "kind": "none"
      }
    },
  },
  {
    title: 'F17: capture from the WAL, worker sessions terminated: a failed queueing of captured keys, then a heartbeat confirmed the WAL past them (seed 912001)',
    gated: false,
    spec: {
      "table": {
        "key": "int",
        "layout": "multi",
        "odd": true,
        "ownSchema": false,
        "appCheck": true,
        "predictionCheck": false,
        "f64": "division",
        "i32": "column",
        "trigger": "guarded",
        "publication": "none",
        "rls": false,
        "capture": "wal"
      },
      "before": [
        {
          "kind": "insert",
          "rows": [
            [
              6,
              {
                "a": "1000",
                "b": "1000",
                "c": "100",
                "ctxt": "1e3",
                "z": "0.5",
                "d": "2147483647",
                "num": "1",
                "den": "-3",
                "e": "-9",
                "ok": null,
                "tag": "",
                "note": "n"
              }
            ],
            [
              6,
              {
                "a": "0",
                "b": "1000",
                "c": "1.25",
                "ctxt": " 7 ",
                "z": "-4",
                "d": "0",
                "num": "1",
                "den": "2",
                "e": "0",
                "ok": "false",
                "tag": "it's",
                "note": "\\N"
              }
            ],
            [
              7,
              {
                "a": "1",
                "b": "0",
                "c": "-7",
                "ctxt": "1.5",
                "z": "2",
                "d": "2147483647",
                "num": "-5",
                "den": "-3",
                "e": "0",
                "ok": "true",
                "tag": "it's",
                "note": "o'q"
              }
            ]
          ]
        }
      ],
      "ops": [
        {
          "kind": "move",
          "from": 8,
          "to": 6
        },
        {
          "kind": "merge",
          "rows": [
            [
              6,
              {
                "a": "3.4e38",
                "b": "3.4e38",
                "c": "0",
                "ctxt": "1e3",
                "z": "2",
                "d": "42",
                "num": "1",
                "den": "2",
                "e": "-9",
                "ok": "false",
                "tag": "it's",
                "note": "\\N"
              }
            ]
          ]
        },
        {
          "kind": "insert",
          "rows": [
            [
              1,
              {
                "a": "0",
                "b": "3.4e38",
                "c": "-7",
                "ctxt": "1.5",
                "z": "0.5",
                "d": "-5",
                "num": "0",
                "den": "1",
                "e": "0",
                "ok": "true",
                "tag": "it's",
                "note": "\\N"
              }
            ],
            [
              1,
              {
                "a": "3.4e38",
                "b": "2.5",
                "c": "-7",
                "ctxt": " 7 ",
                "z": "2",
                "d": "42",
                "num": "0",
                "den": "2",
                "e": "7",
                "ok": "true",
                "tag": "it's",
                "note": null
              }
            ],
            [
              3,
              {
                "a": "1",
                "b": "0",
                "c": "1.25",
                "ctxt": "NaN",
                "z": "0.5",
                "d": null,
                "num": "-5",
                "den": "-3",
                "e": "9223372036854775807",
                "ok": "true",
                "tag": "ü",
                "note": "o'q"
              }
            ],
            [
              8,
              {
                "a": "0",
                "b": "1",
                "c": "-7",
                "ctxt": "1e3",
                "z": "-4",
                "d": "2147483647",
                "num": "-5",
                "den": "2",
                "e": "123456789",
                "ok": "true",
                "tag": "",
                "note": null
              }
            ]
          ]
        }
      ],
      "fault": {
        "kind": "terminate",
        "at": 2
      }
    },
  },
  {
    title: 'F18: capture from the WAL, a 3-row INSERT right after ml.deploy: the drain read nothing pending before the new slot\'s backfill had committed (seed 912005)',
    gated: false,
    spec: {
      "table": {
        "key": "int",
        "layout": "range",
        "odd": true,
        "ownSchema": false,
        "appCheck": false,
        "predictionCheck": false,
        "f64": "generated",
        "i32": "division",
        "trigger": "none",
        "publication": "none",
        "rls": false,
        "capture": "wal"
      },
      "before": [
        {
          "kind": "update",
          "where": "all",
          "set": {
            "a": null,
            "b": "1e39",
            "c": "100",
            "ctxt": "1e3",
            "d": "42",
            "num": "1",
            "e": "9223372036854775807",
            "ok": "true",
            "tag": null,
            "note": null
          }
        }
      ],
      "ops": [
        {
          "kind": "delete",
          "where": [
            5,
            4
          ]
        },
        {
          "kind": "insert",
          "rows": [
            [
              3,
              {
                "a": "-3",
                "b": "-3",
                "c": "0",
                "ctxt": "abc",
                "z": "1",
                "d": "0",
                "num": "0",
                "den": "1",
                "e": "9007199254740993",
                "ok": null,
                "tag": "boom",
                "note": "changed"
              }
            ],
            [
              6,
              {
                "a": "-3",
                "b": "-3",
                "c": "-7",
                "ctxt": "1.5",
                "z": "-4",
                "d": "1",
                "num": "1",
                "den": "2",
                "e": "7",
                "ok": "false",
                "tag": null,
                "note": "n"
              }
            ],
            [
              1,
              {
                "a": "2.5",
                "b": "1000",
                "c": "100",
                "ctxt": "1.5",
                "z": "0.5",
                "d": "-5",
                "num": "0",
                "den": "2",
                "e": "9223372036854775807",
                "ok": "false",
                "tag": "x",
                "note": null
              }
            ]
          ]
        },
        {
          "kind": "copy",
          "rows": [
            [
              2,
              {
                "a": "1000",
                "b": "1",
                "c": "1e308",
                "ctxt": "-2",
                "z": "1",
                "d": "0",
                "num": "-5",
                "den": "2",
                "e": "7",
                "ok": "false",
                "tag": "",
                "note": null
              }
            ],
            [
              8,
              {
                "a": "1",
                "b": "NaN",
                "c": "1e308",
                "ctxt": "1e3",
                "z": "0.5",
                "d": "-5",
                "num": "-5",
                "den": "2",
                "e": "9007199254740993",
                "ok": "false",
                "tag": "",
                "note": "n"
              }
            ]
          ]
        },
        {
          "kind": "upsert",
          "rows": [
            [
              7,
              {
                "a": "1000",
                "b": "0",
                "c": "-7",
                "ctxt": "1.5",
                "z": "1",
                "d": "2147483647",
                "num": "1",
                "den": "2",
                "e": "9223372036854775807",
                "ok": "false",
                "tag": "",
                "note": "n"
              }
            ],
            [
              7,
              {
                "a": "3.4e38",
                "b": "3.4e38",
                "c": null,
                "ctxt": " 7 ",
                "z": "0.5",
                "d": "-5",
                "num": "1",
                "den": "1",
                "e": "123456789",
                "ok": "false",
                "tag": null,
                "note": "o'q"
              }
            ]
          ],
          "action": "update"
        }
      ],
      "fault": {
        "kind": "none"
      }
    },
  },
];
