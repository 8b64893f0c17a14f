/**
 * "Backends around the sandbox" are client backends only. Postgres' own processes on a worker
 * database (here a real autovacuum worker, kept busy by a cost-limited vacuum) are neither
 * reported nor terminated, at the end of a file (Sandbox.endFile) and at global teardown
 * (teardownRun); a client that did go around the sandbox still is.
 */
import { Client } from 'pg';
import { withDatabase } from '../../src/util/admin';
import { ensureWorkerDatabase, startRun, teardownRun, type RunManifest } from '../../src/run/run';
import { ensureBuilt } from '../helpers/build';
import { bootServer, type TestServer } from '../helpers/server';

let srv: TestServer;
let admin: Client;
const clients: Client[] = [];
const runs: RunManifest[] = [];

beforeAll(async () => {
  ensureBuilt(); // startRun spawns the reaper from dist/
  // Autovacuum is off on our clusters; on here, visiting every database each second.
  srv = await bootServer('', { autovacuum: 'on', autovacuum_naptime: '1' });
  admin = new Client({ connectionString: srv.cluster.url, application_name: 'foreign-backends-test' });
  await admin.connect();
}, 60_000);

afterAll(async () => {
  for (const c of clients) await c.end().catch(() => undefined);
  for (const m of runs) await teardownRun(m).catch(() => undefined);
  await admin?.end().catch(() => undefined);
  await srv?.stop();
}, 60_000);

/**
 * A table whose vacuum takes minutes (cost limit 1, 100 ms delay per page), with all its rows
 * dead: autovacuum starts a worker on `url`'s database and that worker stays. Returns its pid.
 */
async function busyAutovacuum(url: string, database: string): Promise<number> {
  const c = new Client({ connectionString: url });
  await c.connect();
  try {
    await c.query(`CREATE TABLE churn (id int, pad text) WITH (autovacuum_vacuum_threshold = 0, autovacuum_vacuum_scale_factor = 0,
                     autovacuum_vacuum_cost_delay = 100, autovacuum_vacuum_cost_limit = 1)`);
    await c.query(`INSERT INTO churn SELECT g, repeat('x', 100) FROM generate_series(1, 100000) g`);
    await c.query('DELETE FROM churn');
  } finally {
    await c.end(); // a backend flushes its statistics (the dead rows) when it exits
  }
  const pid = await waitFor(async () => {
    const r = await admin.query<{ pid: number }>(
      `SELECT pid FROM pg_stat_activity WHERE backend_type = 'autovacuum worker' AND datname = $1 AND query LIKE 'autovacuum: VACUUM%churn%'`,
      [database],
    );
    return r.rows[0]?.pid;
  }, 60_000);
  if (!pid) throw new Error(`no autovacuum worker started on ${database} within 60 s`);
  return pid;
}

async function waitFor<T>(probe: () => Promise<T | undefined | false>, ms: number): Promise<T | undefined> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v || Date.now() > deadline) return v || undefined;
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function alive(pid: number): Promise<{ backend_type: string } | undefined> {
  return (await admin.query<{ backend_type: string }>('SELECT backend_type FROM pg_stat_activity WHERE pid = $1', [pid])).rows[0];
}

async function around(url: string, applicationName: string): Promise<Client> {
  const c = new Client({ connectionString: url, application_name: applicationName });
  c.on('error', () => undefined); // it is terminated on purpose
  await c.connect();
  clients.push(c);
  return c;
}

test('end of file: an autovacuum worker on the worker database is not a foreign backend; a client around the sandbox is', async () => {
  const avPid = await busyAutovacuum(srv.dbUrl, 'sbx');
  const sb = await srv.sandbox();
  await sb.beginFile();
  const direct = await around(srv.dbUrl, 'around-the-sandbox');
  const directPid = (await direct.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0].pid;

  const report = await sb.endFile();

  expect(report.foreign.map((f) => [f.pid, f.applicationName])).toEqual([[directPid, 'around-the-sandbox']]);
  // Not terminated: the autovacuum worker is still at work; the client around the sandbox is gone.
  expect(await alive(avPid)).toEqual({ backend_type: 'autovacuum worker' });
  expect(await waitFor(async () => (await alive(directPid)) === undefined, 10_000)).toBe(true);
}, 120_000);

test('global teardown: an autovacuum worker on a run database is not reported as left open', async () => {
  const m = await startRun({ server: srv.cluster.url, prefix: 'fbtd', cacheDir: false }, process.pid);
  runs.push(m);
  const db = await ensureWorkerDatabase(m, '1');
  await busyAutovacuum(withDatabase(srv.cluster.url, db.name), db.name);
  await around(db.url, 'left-open');

  const summary = await teardownRun(m);

  expect(summary.dropped).toEqual([db.name]);
  expect(summary.terminated).toBe(1);
  expect(summary.report).toMatch(/1 connection was still open/);
  expect(summary.report).toMatch(/app "left-open"/);
  expect(summary.report).not.toMatch(/autovacuum/);
  const left = await admin.query('SELECT datname FROM pg_database WHERE datname = $1', [db.name]);
  expect(left.rows).toEqual([]);
}, 120_000);
