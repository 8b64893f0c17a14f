#!/usr/bin/env node
/**
 * What the moving clock costs, per statement, on the server (no proxy): now() (inlined
 * replacement vs Postgres' own), an INSERT whose default calls it, and the statements the
 * sandbox sends for a client's BEGIN and COMMIT (a procedure call vs a SET LOCAL). Client SQL
 * is also scanned for CURRENT_TIMESTAMP & co. (JS, measured in the same process).
 * Usage: npm run build && node bench/clock.js [iterations]
 */
const { performance } = require('node:perf_hooks');
const pg = require('pg');
const { findBinaries } = require('../dist/server/binaries');
const { startCluster, stopCluster } = require('../dist/server/cluster');
const { installMovingClock } = require('../dist/schema/clock');
const { clockRewrite } = require('../dist/util/sql-clock');

const N = Number(process.argv[2]) || 3000;

async function timed(c, sql, n = N) {
  for (let i = 0; i < 200; i++) await c.query(sql);
  const t = performance.now();
  for (let i = 0; i < n; i++) await c.query(sql);
  return ((performance.now() - t) * 1000) / n;
}

(async () => {
  const b = await findBinaries({});
  const cluster = await startCluster({ binDir: b.binDir, version: b.version, nativeDir: b.nativeDir });
  try {
    const admin = new pg.Client(cluster.url);
    await admin.connect();
    await admin.query('CREATE DATABASE plain');
    await admin.query('CREATE DATABASE moving');
    await admin.end();
    const url = (db) => cluster.url.replace(/\/[^/?]*(\?|$)/, `/${db}$1`);
    const out = {};
    for (const db of ['plain', 'moving']) {
      const c = new pg.Client(url(db));
      await c.connect();
      await c.query('CREATE TABLE t (id serial PRIMARY KEY, at timestamptz DEFAULT now())');
      if (db === 'moving') await installMovingClock(c);
      await c.query('BEGIN');
      out[db] = {
        selectNow: await timed(c, 'SELECT now()'),
        insertDefault: await timed(c, 'INSERT INTO t DEFAULT VALUES'),
        begin: await timed(c, db === 'moving' ? 'CALL pg_catalog.jestpg_begin()' : "SET LOCAL jestpg.noop = ''"),
        commit: await timed(c, db === 'moving' ? 'CALL pg_catalog.jestpg_end()' : "SET LOCAL jestpg.noop = ''"),
      };
      await c.query('ROLLBACK');
      await c.end();
    }
    const sql = 'SELECT id, title, body, created_at FROM posts WHERE author_id = $1 ORDER BY created_at DESC LIMIT 20';
    let t = performance.now();
    for (let i = 0; i < 1e6; i++) clockRewrite(sql);
    const scanUs = (performance.now() - t) / 1000;
    const f = (x) => x.toFixed(1);
    console.log('µs per statement, round trip on this machine (plain → moving clock):');
    for (const k of Object.keys(out.plain)) console.log(`  ${k.padEnd(14)} ${f(out.plain[k])} → ${f(out.moving[k])}  (+${f(out.moving[k] - out.plain[k])})`);
    console.log(`  client SQL scan (JS, a typical query without the keywords): ${(scanUs * 1000).toFixed(0)} ns`);
    console.log(JSON.stringify({ clockCostUs: Object.fromEntries(Object.keys(out.plain).map((k) => [k, +f(out.moving[k] - out.plain[k])])), scanNs: Math.round(scanUs * 1000) }));
  } finally {
    await stopCluster(cluster);
  }
})();
