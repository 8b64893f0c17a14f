/**
 * The programmatic API (`jest-environment-pg/sandbox`) against a real server: in this process,
 * and driving a real node:test file (fixtures/sandbox-api) in a child process. Asserts on the
 * server's own state afterwards. Needs the build (the reaper and the package export use dist/).
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { Client } from 'pg';
import { withClient } from '../../src/util/admin';
import { stopOnExit } from '../helpers/watchdog';
import { findBinaries } from '../../src/server/binaries';
import { startCluster, stopCluster, type ClusterInfo } from '../../src/server/cluster';
import { startSandbox, type SandboxProblem } from '../../src/sandbox/api';
import { cleanup, privateDir, settle } from '../helpers/jest-run';
import { workerDbName } from '../../src/util/names';

const ROOT = path.join(__dirname, '..', '..');
const FIXTURE = path.join(ROOT, 'fixtures', 'sandbox-api');
let cluster: ClusterInfo;
const dirs: string[] = [];

beforeAll(async () => {
  if (!existsSync(path.join(ROOT, 'dist', 'sandbox', 'api.js'))) throw new Error('run `npm run build` first: these tests use dist/');
  const b = await findBinaries({});
  cluster = await startCluster({ binDir: b.binDir, version: b.version, nativeDir: b.nativeDir });
  stopOnExit(cluster); // if this test process is killed before afterAll
}, 60_000);

afterAll(async () => {
  if (cluster) await stopCluster(cluster);
  dirs.forEach(cleanup);
});

/** Databases of runs (not templates) and backends of this tool still on the server. */
async function serverLeftovers(): Promise<{ databases: string[]; backends: string[] }> {
  return withClient(cluster.url, async (c) => ({
    databases: (await c.query("SELECT datname FROM pg_database WHERE datname LIKE 'jestpg\\_%' AND NOT datistemplate")).rows.map((r) => r.datname),
    backends: (
      await c.query("SELECT application_name FROM pg_stat_activity WHERE (datname LIKE 'jestpg\\_%' OR application_name LIKE 'jest-environment-pg%') AND pid <> pg_backend_pid()")
    ).rows.map((r) => r.application_name),
  }));
}

async function eventually<T>(fn: () => Promise<T>, ok: (v: T) => boolean, ms = 8000): Promise<T> {
  const deadline = Date.now() + ms;
  let v = await fn();
  while (!ok(v) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    v = await fn();
  }
  return v;
}

const clean = (l: { databases: string[]; backends: string[] }) => l.databases.length === 0 && l.backends.length === 0;

test('drives a node:test file: per-test rollback, a leak fails its test, close() tears the run down', async () => {
  const dir = privateDir();
  dirs.push(dir);
  const env: NodeJS.ProcessEnv = { ...process.env, JEST_PG_URL: cluster.url, TMPDIR: dir, JEST_PG_DATA_ROOT: dir };
  for (const k of ['JEST_WORKER_ID', 'JEST_PG_MANIFEST', 'DATABASE_URL', 'PGHOST', 'PGPORT', 'PGUSER', 'PGPASSWORD', 'PGDATABASE', 'NODE_OPTIONS']) delete env[k];
  const { code, output } = await new Promise<{ code: number | null; output: string }>((resolve) =>
    execFile(process.execPath, ['--test', '--test-reporter=tap', 'notes.test.js', 'leak.test.js'], { cwd: FIXTURE, env, timeout: 60_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, output: stdout + stderr }),
    ),
  );
  expect(output).toMatch(/^ok \d+ - writes a note$/m);
  expect(output).toMatch(/^ok \d+ - starts empty again, ids start over$/m);
  expect(output).toMatch(/^ok \d+ - a transaction committed by the code under test is still rolled back/m);
  expect(output).toMatch(/^ok \d+ - a child process reaches the same sandbox through the environment$/m);
  expect(output).toMatch(/^not ok \d+ - leaks a transaction$/m);
  expect(output).toMatch(/code: 'JESTPG_LEAKED_CONNECTION'/);
  expect(output).toMatch(/^ok \d+ - the next test starts clean$/m);
  expect(output).toMatch(/^# pass 5$/m);
  expect(output).toMatch(/^# fail 1$/m);
  expect(code).toBe(1);
  const report = JSON.parse(/REPORT (\{.*\})/.exec(output)![1]) as { database: string; text: string; summary: string };
  expect(report.text).toBe('');
  expect(report.summary).toMatch(/^jest-environment-pg: dropped 1 database, terminated 0 backends in \d+ ms$/);
  expect(await eventually(serverLeftovers, clean)).toEqual({ databases: [], backends: [] });
  expect(await settle(dir)).toEqual({ files: [], processes: [] });
}, 90_000);

test('in process: savepoints per test, problems with severities, env, idempotent close', async () => {
  const warnings: SandboxProblem[] = [];
  const before = process.env.DATABASE_URL;
  const sb = await startSandbox({
    server: cluster.url,
    migrations: './migrations',
    rootDir: FIXTURE,
    exposeAs: ['REPLICA_URL'],
    lateQueries: 'warn',
    graceMs: 50,
    setEnv: true,
    onWarning: (p) => warnings.push(p),
  });
  const clients: Client[] = [];
  const client = async () => {
    const c = new Client({ connectionString: sb.url });
    c.on('error', () => undefined);
    await c.connect();
    clients.push(c);
    return c;
  };
  try {
    expect(sb.env).toEqual({
      DATABASE_URL: sb.url,
      PGHOST: '127.0.0.1',
      PGPORT: String(sb.info.port),
      PGUSER: 'postgres',
      PGPASSWORD: sb.info.password,
      PGDATABASE: sb.database,
      REPLICA_URL: sb.url,
    });
    expect(process.env.DATABASE_URL).toBe(sb.url);
    expect(sb.database).toMatch(/^jestpg_[0-9a-f]+_w1$/);

    // A connection opened before any test belongs to the whole sandbox ("file" scope).
    const fileConn = await client();
    await fileConn.query("INSERT INTO notes (body) VALUES ('setup')");

    sb.beginTest('one');
    expect(() => sb.beginTest('two')).toThrow(/while test "one" is open/);
    const a = await client();
    await a.query("INSERT INTO notes (body) VALUES ('one')");
    expect((await a.query('SELECT count(*)::int AS n FROM notes')).rows[0].n).toBe(2);
    expect(await sb.endTest()).toEqual([]);

    sb.beginTest('two');
    expect((await a.query('SELECT body FROM notes ORDER BY id')).rows).toEqual([{ body: 'setup' }]);
    // A leak: severity from `leaks` (default error).
    const b = await client();
    await b.query('BEGIN');
    await b.query("INSERT INTO notes (body) VALUES ('leaked')");
    const leaks = await sb.endTest();
    expect(leaks.map((p) => [p.code, p.severity])).toEqual([['JESTPG_LEAKED_CONNECTION', 'error']]);
    expect(leaks[0].message).toMatch(/test "two" ended while .* was still inside a transaction; it was rolled back/);

    // A query still running when its test ends: cancelled after graceMs; severity from lateQueries (warn here).
    sb.beginTest('two and a half');
    const slow = (await client()).query('SELECT pg_sleep(5)').catch((e: Error) => e);
    await new Promise((r) => setTimeout(r, 20));
    const late = await sb.endTest();
    expect(late.map((p) => [p.code, p.severity])).toEqual([['JESTPG_LATE_QUERY', 'warn']]);
    expect(late[0].message).toMatch(/still running its query; it was cancelled after 50 ms/);
    expect(warnings).toEqual(late);
    expect(String(await slow)).toMatch(/cancel/i);

    sb.beginTest('three');
    const leakAgain = await client();
    await leakAgain.query('BEGIN');
    await expect(sb.endTest({ throwOnError: true })).rejects.toMatchObject({ code: 'JESTPG_LEAKED_CONNECTION', message: expect.stringContaining('test "three"') });
    expect(await sb.endTest()).toEqual([]); // no test open: nothing to do

    // Between tests, a query is late: it runs (in a savepoint of its own, rolled back) and is listed in the report.
    expect((await a.query('SELECT 1 AS one')).rows[0].one).toBe(1);
  } finally {
    // `a` and the others are left open on purpose: close() closes them and lists them.
    const closing = sb.close();
    expect(sb.close()).toBe(closing);
    const report = await closing;
    expect(report.open.length).toBeGreaterThan(0);
    expect(report.late.length).toBe(1);
    expect(report.text).toMatch(/JESTPG_FILE_ENDED: \d+ connections were still open when the sandbox ended/);
    expect(report.text).toMatch(/JESTPG_LATE_QUERY: 1 query arrived between tests.*rolled back/s);
    expect(report.teardown.dropped).toEqual([sb.database]);
    expect(await sb.close()).toBe(report);
    for (const c of clients) await c.end().catch(() => undefined);
  }
  expect(process.env.DATABASE_URL).toBe(before);
  expect(process.env.REPLICA_URL).toBeUndefined();
  expect(await eventually(serverLeftovers, clean)).toEqual({ databases: [], backends: [] });
}, 60_000);

test('a bad option is reported before anything is started', async () => {
  await expect(startSandbox({ isolation: 'suite' as never, server: cluster.url })).rejects.toMatchObject({ code: 'JESTPG_OPTION_TYPE' });
  await expect(startSandbox({ migrationz: './m' } as never)).rejects.toMatchObject({ code: 'JESTPG_OPTION_UNKNOWN' });
  expect(await serverLeftovers()).toEqual({ databases: [], backends: [] });
});

test('a client that connects the moment the sandbox thread listens is served, inside the test posted before it', async () => {
  // The thread says where it listens before it has loaded the proxy: a client arriving then
  // waits in its socket and is taken after the boundaries posted before it.
  const { SandboxThread } = await import('../../src/sandbox/thread');
  const { withDatabase } = await import('../../src/util/admin');
  await withClient(cluster.url, (c) => c.query('CREATE DATABASE jestpg_early_client'));
  const th = SandboxThread.startSync({
    upstreamUrl: withDatabase(cluster.url, 'jestpg_early_client'),
    secret: 'early-secret',
    isolation: 'test',
    graceMs: 200,
    lockWaitMs: 5000,
    label: 'jest-environment-pg early client',
    unref: true,
  });
  try {
    const opened = th.beginFile();
    th.beginTest('early');
    const client = new Client({ connectionString: th.info.url });
    client.on('error', () => undefined);
    const connected = client.connect();
    await opened;
    await connected;
    await client.query('CREATE TABLE made_in_test (id int)');
    expect((await client.query("SELECT to_regclass('made_in_test') AS t")).rows[0].t).toBe('made_in_test');
    await client.end();
    await th.endTest();
    const report = await th.endFile();
    expect(report.foreign).toEqual([]);
  } finally {
    await th.close();
  }
  // Rolled back with the test: the database is as it was.
  const left = await withClient(withDatabase(cluster.url, 'jestpg_early_client'), async (c) => (await c.query("SELECT to_regclass('made_in_test') AS t")).rows[0].t);
  expect(left).toBeNull();
  await withClient(cluster.url, (c) => c.query('DROP DATABASE jestpg_early_client'));
});

test('the sandbox thread makes sure of its worker database: two threads on one name clone it once; a missing template fails the file clearly', async () => {
  const { SandboxThread } = await import('../../src/sandbox/thread');
  const { withDatabase } = await import('../../src/util/admin');
  const { knownWorkerDatabase } = await import('../../src/run/known-databases');
  const { mkdtempSync, rmSync } = await import('node:fs');
  const os = await import('node:os');
  const runDir = mkdtempSync(path.join(os.tmpdir(), 'jest-pg-clone-order-'));
  await withClient(cluster.url, async (c) => {
    await c.query('CREATE DATABASE jestpg_order_tpl');
    await c.query('ALTER DATABASE jestpg_order_tpl IS_TEMPLATE true');
  });
  const order = (name: string, template: string) => ({
    adminUrl: cluster.url,
    spec: { name, template, runId: 'orderrun', versionNum: cluster.versionNum },
    runDir,
    url: withDatabase(cluster.url, name),
  });
  const start = (name: string, template: string) =>
    SandboxThread.startSync({
      upstreamUrl: withDatabase(cluster.url, name),
      clone: order(name, template),
      secret: 'order-secret',
      isolation: 'test',
      graceMs: 200,
      lockWaitMs: 5000,
      label: 'jest-environment-pg clone order',
      unref: true,
    });
  const threads = [start('jestpg_order_w1', 'jestpg_order_tpl'), start('jestpg_order_w1', 'jestpg_order_tpl')];
  const bad = start('jestpg_order_w2', 'jestpg_order_missing');
  try {
    await Promise.all(threads.map((t) => t.beginFile()));
    const names = await withClient(cluster.url, async (c) => (await c.query("SELECT datname FROM pg_database WHERE datname LIKE 'jestpg\\_order\\_w%'")).rows.map((r) => r.datname));
    expect(names).toEqual(['jestpg_order_w1']);
    // A clone carries the run's marker, and is noted for later processes of the worker.
    const comment = await withClient(cluster.url, async (c) => (await c.query("SELECT shobj_description(oid, 'pg_database') AS c FROM pg_database WHERE datname = 'jestpg_order_w1'")).rows[0].c);
    expect(comment).toContain('orderrun');
    expect(knownWorkerDatabase({ runDir } as never, 'jestpg_order_w1')?.name).toBe('jestpg_order_w1');
    await expect(bad.beginFile()).rejects.toThrow(/making the worker database jestpg_order_w2 \(a clone of jestpg_order_missing\) failed: database jestpg_order_missing does not exist/);
    expect(knownWorkerDatabase({ runDir } as never, 'jestpg_order_w2')).toBeUndefined();
    // The next file tries again: with the template there now, it opens.
    await withClient(cluster.url, (c) => c.query('CREATE DATABASE jestpg_order_missing IS_TEMPLATE true'));
    await bad.beginFile();
    expect(knownWorkerDatabase({ runDir } as never, 'jestpg_order_w2')?.name).toBe('jestpg_order_w2');
  } finally {
    for (const t of [...threads, bad]) await t.close();
    rmSync(runDir, { recursive: true, force: true });
  }
  await withClient(cluster.url, async (c) => {
    for (const d of ['jestpg_order_w1', 'jestpg_order_w2']) await c.query(`DROP DATABASE IF EXISTS ${d}`);
    for (const d of ['jestpg_order_tpl', 'jestpg_order_missing']) {
      await c.query(`ALTER DATABASE ${d} IS_TEMPLATE false`);
      await c.query(`DROP DATABASE ${d}`);
    }
  });
});

test("a sandbox thread begun by Jest's global setup for an in-band run: the first file finds it on worker 1's database; left unused, closing it leaves nothing", async () => {
  const { startRun, teardownRun, MANIFEST_ENV } = await import('../../src/run/run');
  const { WorkerRegistry } = await import('../../src/sandbox/worker');
  const dir = privateDir();
  dirs.push(dir);
  const raw = { server: cluster.url };
  const saved = process.env[MANIFEST_ENV];
  const m = await startRun(raw, process.pid, { rootDir: dir });
  try {
    const w1 = workerDbName(m.prefix, m.runId, '1');
    // The process that runs the tests (in band): prestart, then the run is ready, then its first file.
    const inBand = new WorkerRegistry();
    inBand.prestart(m.options, '1', m);
    await inBand.prepare(raw, dir, m.options, '1');
    const thread = inBand.thread(m.options, '1');
    const worker = await inBand.attach(raw, dir, m.options, '1');
    expect(worker.sandbox).toBe(thread);
    expect(worker.database).toBe(w1);
    await worker.sandbox.beginFile();
    const c = new Client({ connectionString: worker.info.url });
    await c.connect();
    expect((await c.query('SELECT current_database() AS db')).rows[0].db).toBe(w1);
    await c.end();
    await worker.endFile();
    await inBand.close();
    // The tests ran in worker processes instead: the prestarted thread stays idle until the teardown closes it.
    const unused = new WorkerRegistry();
    unused.prestart(m.options, '1', m);
    await unused.prepare(raw, dir, m.options, '1');
    await unused.close();
    // Nothing on worker 1's database (the run's own lease and reaper stay until its teardown).
    const onW1 = () => withClient(cluster.url, async (c) => (await c.query('SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1', [w1])).rows[0].n as number);
    expect(await eventually(onW1, (n) => n === 0)).toBe(0);
    expect((await serverLeftovers()).databases).toEqual([w1]);
  } finally {
    await teardownRun(m);
    if (saved === undefined) delete process.env[MANIFEST_ENV];
    else process.env[MANIFEST_ENV] = saved;
  }
  expect(await eventually(serverLeftovers, clean)).toEqual({ databases: [], backends: [] });
});
