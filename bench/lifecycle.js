#!/usr/bin/env node
/**
 * Lifecycle timings (printed, not asserted). Needs `npm run build`.
 *   node bench/lifecycle.js [iterations=5]
 * - cold start = boot an embedded cluster (initdb) + migrate a 50-table schema + first worker
 *   clone, with the cache off (cacheDir: false);
 * - cold start saving the cache = the same into an empty cache dir (the built cluster is saved,
 *   by the teardown since it stops the server anyway: the cost the first run pays);
 * - warm start = the same with that cache filled: the cluster is restored with its template,
 *   no initdb, no migrations;
 * - further clones; global teardown.
 */
const fs = require('fs');
const os = require('os');
const path = require('path');
const { startRun, ensureWorkerDatabase, teardownRun } = require('../dist/run/run');

const SCHEMA = path.join(__dirname, '..', '__tests__', 'fixtures', 'schema50');
const N = Number(process.argv[2]) || 5;
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const ms = (t) => Math.round(performance.now() - t);

async function once(cacheDir) {
  const t0 = performance.now();
  const m = await startRun({ migrations: SCHEMA, prefix: 'bench', cacheDir }, process.pid, { reaperInBackground: true }); // as global setup does
  const tRun = ms(t0);
  let t = performance.now();
  await ensureWorkerDatabase(m, '1');
  const clone1 = ms(t);
  const start = ms(t0);
  t = performance.now();
  await ensureWorkerDatabase(m, '2');
  const clone2 = ms(t);
  t = performance.now();
  const s = await teardownRun(m);
  const down = ms(t);
  return { row: { cache: m.cache?.status, start, startRun: tRun, ...m.timings, clone1, clone2, teardown: down }, summary: s.summaryLine };
}

function report(title, rows) {
  console.log(`\n${title}`);
  console.table(rows);
  const keys = [...new Set(rows.flatMap((r) => Object.keys(r)))].filter((k) => k !== 'cache');
  console.log('median:', Object.fromEntries(keys.map((k) => [k, median(rows.map((r) => r[k] ?? 0))])));
}

(async () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'jestpg-bench-cache-'));
  try {
    const cold = [];
    for (let i = 0; i < N; i++) {
      const r = await once(false);
      cold.push(r.row);
      if (i === 0) console.log(r.summary);
    }
    const saving = [];
    let cacheDir;
    for (let i = 0; i < N; i++) {
      cacheDir = path.join(tmp, `c${i}`); // empty each time
      saving.push((await once(cacheDir)).row);
    }
    const warm = [];
    for (let i = 0; i < N; i++) warm.push((await once(cacheDir)).row);

    report('cold start, cache off', cold);
    report('cold start into an empty cache dir (saves the cache)', saving);
    report('warm start from the cache', warm);
    const entries = fs.readdirSync(cacheDir).map((f) => `${f} ${(fs.statSync(path.join(cacheDir, f)).size / 1e6).toFixed(1)} MB`);
    console.log(`\ncache entries: ${entries.join(', ')}`);
    console.log(`\ncold start (boot + migrate 50 tables + first clone): median ${median(cold.map((r) => r.start))} ms (target ≤ 800 ms)`);
    console.log(`cold start saving the cache: median ${median(saving.map((r) => r.start))} ms; its teardown: median ${median(saving.map((r) => r.teardown))} ms; start + teardown: median ${median(saving.map((r) => r.start + r.teardown))} ms`);
    console.log(`warm start (restore + boot + first clone): median ${median(warm.map((r) => r.start))} ms (target ≤ 300 ms)`);
    console.log(`global teardown (2 databases, stop cluster, remove dirs): median ${median(cold.concat(warm).map((r) => r.teardown))} ms (target ≤ 200 ms)`);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
