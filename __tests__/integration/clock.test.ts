/**
 * Time moves as on a real server: each autocommit statement and each client transaction gets
 * its own transaction time (constant inside the transaction), in client SQL (now(),
 * CURRENT_TIMESTAMP), column defaults and trigger bodies from the migrations. Through a real
 * sandbox (startSandbox) on a real server whose template was built from __tests__/fixtures/clock.
 */
import * as path from 'node:path';
import pg from 'pg';
import postgres from 'postgres';
import { stopOnExit } from '../helpers/watchdog';
import { findBinaries } from '../../src/server/binaries';
import { startCluster, stopCluster, type ClusterInfo } from '../../src/server/cluster';
import { startSandbox, type SandboxHandle } from '../../src/sandbox/api';

let cluster: ClusterInfo;
let sb: SandboxHandle;
let pool: pg.Pool;

beforeAll(async () => {
  const b = await findBinaries({});
  cluster = await startCluster({ binDir: b.binDir, version: b.version, nativeDir: b.nativeDir });
  stopOnExit(cluster);
  sb = await startSandbox({ server: cluster.url, migrations: path.join(__dirname, '..', 'fixtures', 'clock') });
  pool = new pg.Pool({ connectionString: sb.url, max: 3 });
}, 60_000);

afterAll(async () => {
  await pool?.end();
  await sb?.close();
  if (cluster) await stopCluster(cluster);
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const inTest = async (name: string, fn: () => Promise<void>) => {
  sb.beginTest(name);
  try {
    await fn();
  } finally {
    await sb.endTest({ throwOnError: true });
  }
};

test('two inserts 10 ms apart get distinct, ordered created_at (now() and CURRENT_TIMESTAMP defaults)', () =>
  inTest('ordered', async () => {
    await pool.query("INSERT INTO posts (title) VALUES ('first')");
    await sleep(10);
    await pool.query("INSERT INTO posts (title) VALUES ('second')");
    const { rows } = await pool.query('SELECT title FROM posts ORDER BY created_at DESC, id');
    expect(rows.map((r) => r.title)).toEqual(['second', 'first']);
    const t = (await pool.query("SELECT (SELECT created_at FROM posts WHERE title = 'second') - (SELECT created_at FROM posts WHERE title = 'first') AS d, (SELECT updated_at FROM posts WHERE title = 'second') > (SELECT updated_at FROM posts WHERE title = 'first') AS later")).rows[0];
    expect(t.later).toBe(true);
    expect(t.d.milliseconds ?? 0).toBeGreaterThanOrEqual(10);
  }));

test('an updated_at trigger (CURRENT_TIMESTAMP in PL/pgSQL) is later than the insert', () =>
  inTest('trigger', async () => {
    await pool.query("INSERT INTO posts (title) VALUES ('x')");
    await sleep(5);
    await pool.query("UPDATE posts SET title = 'y'");
    const { rows } = await pool.query('SELECT updated_at > created_at AS later FROM posts');
    expect(rows[0].later).toBe(true);
  }));

test('inside one client transaction the time is constant, and the next transaction gets a new one', () =>
  inTest('transaction', async () => {
    const c = await pool.connect();
    try {
      await c.query('BEGIN');
      const a = (await c.query('SELECT now() AS t, CURRENT_TIMESTAMP AS u, transaction_timestamp() AS v')).rows[0];
      await sleep(10);
      const b = (await c.query('SELECT now() AS t')).rows[0];
      await c.query("INSERT INTO posts (title) VALUES ('in tx')");
      await c.query('COMMIT');
      expect(b.t).toEqual(a.t);
      expect(a.u).toEqual(a.t);
      expect(a.v).toEqual(a.t);
      expect((await c.query("SELECT created_at AS t FROM posts WHERE title = 'in tx'")).rows[0].t).toEqual(a.t);
      await sleep(5);
      const after = (await c.query('SELECT now() AS t')).rows[0].t as Date;
      expect(after.getTime()).toBeGreaterThan((a.t as Date).getTime());
      // statement_timestamp() and clock_timestamp() are Postgres' own.
      expect((await c.query('SELECT clock_timestamp() >= statement_timestamp() AS ok')).rows[0].ok).toBe(true);
    } finally {
      c.release();
    }
  }));

test('postgres.js (extended protocol): defaults and CURRENT_TIMESTAMP move too', async () => {
  const sql = postgres(sb.url, { max: 1, onnotice: () => undefined });
  try {
    await inTest('postgres.js', async () => {
      const [a] = await sql`SELECT CURRENT_TIMESTAMP AS t`;
      await sleep(10);
      const [b] = await sql`SELECT CURRENT_TIMESTAMP AS t`;
      expect((b.t as Date).getTime()).toBeGreaterThan((a.t as Date).getTime());
      const tx = await sql.begin(async (s) => {
        const [x] = await s`SELECT now() AS t`;
        await sleep(5);
        const [y] = await s`SELECT now() AS t`;
        return [x.t, y.t];
      });
      expect(tx[1]).toEqual(tx[0]);
    });
  } finally {
    await sql.end();
  }
});

test('the migrations\' column defaults were moved onto now() in the template', async () => {
  const { rows } = await pool.query(
    "SELECT column_name, column_default FROM information_schema.columns WHERE table_name = 'posts' AND column_default IS NOT NULL AND column_name <> 'id' ORDER BY column_name",
  );
  for (const r of rows) expect(r.column_default).toMatch(/now\(\)/);
});
