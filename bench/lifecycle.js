#!/usr/bin/env node
/**
 * Lifecycle timings (printed, not asserted): cold start = boot an embedded cluster + migrate a
 * 50-table schema + first worker clone; further clones; global teardown. Needs `npm run build`.
 *   node bench/lifecycle.js [iterations=5]
 */
const path = require('path');
const { startRun, ensureWorkerDatabase, teardownRun } = require('../dist/run');

const SCHEMA = path.join(__dirname, '..', '__tests__', 'fixtures', 'schema50');
const N = Number(process.argv[2]) || 5;
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const ms = (t) => Math.round(performance.now() - t);

(async () => {
  const rows = [];
  for (let i = 0; i < N; i++) {
    const t0 = performance.now();
    const m = await startRun({ migrations: SCHEMA, prefix: 'bench' }, process.pid);
    const tRun = ms(t0);
    let t = performance.now();
    await ensureWorkerDatabase(m, '1');
    const clone1 = ms(t);
    const cold = ms(t0);
    t = performance.now();
    await ensureWorkerDatabase(m, '2');
    const clone2 = ms(t);
    t = performance.now();
    const s = await teardownRun(m);
    const down = ms(t);
    rows.push({ cold, startRun: tRun, ...m.timings, clone1, clone2, teardown: down });
    if (i === 0) console.log(s.summaryLine);
  }
  console.table(rows);
  const keys = Object.keys(rows[0]);
  console.log('median:', Object.fromEntries(keys.map((k) => [k, median(rows.map((r) => r[k] ?? 0))])));
  console.log(`cold start (boot + migrate 50 tables + first clone): median ${median(rows.map((r) => r.cold))} ms (target ≤ 800 ms)`);
  console.log(`global teardown (2 databases, stop cluster, remove dirs): median ${median(rows.map((r) => r.teardown))} ms (target ≤ 200 ms)`);
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
