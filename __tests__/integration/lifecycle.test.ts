/**
 * The database lifecycle against a real (embedded) Postgres: template, clones, sweep, teardown,
 * reaper, environment-only attach. Asserts on the server's own state (pg_database,
 * pg_stat_activity), on processes and on the file system. Needs the build (the reaper runs from dist/).
 */
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Client } from 'pg';
import { withDatabase } from '../../src/util/admin';
import { findBinaries } from '../../src/server/binaries';
import { startCluster, stopCluster, type ClusterInfo } from '../../src/server/cluster';
import { acquireLease, sweep } from '../../src/run/lease';
import { ident, leaseKey, literal, marker } from '../../src/util/names';
import { isAlive } from '../../src/util/proc';
import { ensureWorkerDatabase, rebuildWorkerDatabase, startRun, teardownRun, type RunManifest } from '../../src/run/run';
import { ensureTemplateDetailed, templateNameFor } from '../../src/schema/template';
import { ensureBuilt } from '../helpers/build';

const ROOT = path.join(__dirname, '..', '..');
const SCHEMA = path.join(__dirname, '..', 'fixtures', 'schema50');
const FAILING = path.join(__dirname, '..', 'fixtures', 'failing');

let cluster: ClusterInfo;
const runs: RunManifest[] = [];
const children: ChildProcess[] = [];
const clients: Client[] = [];

beforeAll(async () => {
  ensureBuilt();
  const b = await findBinaries({});
  cluster = await startCluster({ binDir: b.binDir, version: b.version, nativeDir: b.nativeDir });
}, 60_000);

afterAll(async () => {
  for (const c of clients) await c.end().catch(() => undefined);
  for (const m of runs) await teardownRun(m).catch(() => undefined);
  for (const ch of children) if (ch.pid && isAlive(ch.pid)) ch.kill('SIGKILL');
  if (cluster) await stopCluster(cluster);
}, 60_000);

async function admin(): Promise<Client> {
  const c = new Client({ connectionString: cluster.url, application_name: 'lifecycle-test' });
  await c.connect();
  clients.push(c);
  return c;
}

async function databases(c: Client, prefix: string): Promise<{ datname: string; datistemplate: boolean; comment: string | null }[]> {
  const r = await c.query(
    `SELECT datname, datistemplate, shobj_description(oid, 'pg_database') AS comment FROM pg_database WHERE datname LIKE $1 ORDER BY datname`,
    [`${prefix}\\_%`],
  );
  return r.rows;
}

async function waitFor(cond: () => boolean | Promise<boolean>, ms = 8000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await cond()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return cond();
}

const track = (m: RunManifest) => (runs.push(m), m);

test('the template is built once and reused', async () => {
  const c = await admin();
  const opts = { prefix: 'lctpl', migrations: SCHEMA, versionNum: cluster.versionNum };
  const first = await ensureTemplateDetailed(cluster.url, opts);
  const second = await ensureTemplateDetailed(cluster.url, opts);
  expect(first.built).toBe(true);
  expect(second).toMatchObject({ name: first.name, built: false });
  const dbs = await databases(c, 'lctpl');
  // Marked ours, and stamped with when a run last used it (the sweep of old templates keeps the recent ones).
  expect(dbs).toEqual([{ datname: first.name, datistemplate: true, comment: expect.stringMatching(/^jest-environment-pg template used=\d+$/) }]);
  // Nobody stays connected to it (CREATE DATABASE … TEMPLATE needs that).
  const conns = await c.query('SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1', [first.name]);
  expect(conns.rows[0].n).toBe(0);
  // A half-built template (not marked IS_TEMPLATE) is dropped and rebuilt, never reused.
  await c.query(`ALTER DATABASE ${ident(first.name)} WITH IS_TEMPLATE false ALLOW_CONNECTIONS true`);
  await withDb(withDatabase(cluster.url, first.name), (t) => t.query('DROP TABLE t50'));
  const rebuilt = await ensureTemplateDetailed(cluster.url, opts);
  expect(rebuilt.built).toBe(true);
  expect(await databases(c, 'lctpl')).toEqual([{ datname: first.name, datistemplate: true, comment: expect.stringMatching(/^jest-environment-pg template used=\d+$/) }]);
  const clone = `lctpl_check`;
  await c.query(`CREATE DATABASE ${clone} TEMPLATE ${ident(first.name)}`);
  expect(await withDb(withDatabase(cluster.url, clone), async (t) => (await t.query("SELECT to_regclass('t50') IS NOT NULL AS ok")).rows[0].ok)).toBe(true);
  await c.query(`DROP DATABASE ${clone}`);
});

async function withDb<T>(url: string, fn: (c: Client) => Promise<T>): Promise<T> {
  const c = new Client({ connectionString: url });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

test('a failing migration: JESTPG_MIGRATION_FAILED with file:line:col, no complete template left', async () => {
  const c = await admin();
  const opts = { prefix: 'lcfail', migrations: FAILING, versionNum: cluster.versionNum, rootDir: ROOT };
  const err = await ensureTemplateDetailed(cluster.url, opts).catch((e) => e);
  expect(err.code).toBe('JESTPG_MIGRATION_FAILED');
  expect(err.message).toContain(path.join('__tests__', 'fixtures', 'failing', '002_broken.sql') + ':5:3');
  expect(err.message).toContain('relation "no_such_table" does not exist');
  expect(await databases(c, 'lcfail')).toEqual([]);
  // and startRun reports it the same way, leaving no run dir or server behind
  // (only run dirs of this process count: other test files and runs share the temp dir)
  const ours = () =>
    readdirSync(os.tmpdir())
      .filter((f) => f.startsWith('jest-pg-run-'))
      .filter((f) => {
        try {
          return JSON.parse(readFileSync(path.join(os.tmpdir(), f, 'manifest.json'), 'utf8')).mainPid === process.pid;
        } catch {
          return false;
        }
      });
  const before = ours();
  await expect(startRun({ server: cluster.url, prefix: 'lcfail', migrations: FAILING }, process.pid)).rejects.toMatchObject({ code: 'JESTPG_MIGRATION_FAILED' });
  expect(ours()).toEqual(before);
  expect(await templateNameFor(opts)).toMatch(/^lcfail_tpl_/);
});

test('worker databases are cloned from the template, marked, and reused by name', async () => {
  const c = await admin();
  const m = track(await startRun({ server: cluster.url, prefix: 'lcclone', migrations: SCHEMA }, process.pid));
  expect(m.templateDb).toMatch(/^lcclone_tpl_/);
  const w1 = await ensureWorkerDatabase(m, '1');
  expect(w1).toMatchObject({ name: `lcclone_${m.runId}_w1`, created: true });
  const again = await ensureWorkerDatabase(m, '1');
  expect(again).toMatchObject({ name: w1.name, created: false });
  const dbs = await databases(c, `lcclone_${m.runId}`);
  expect(dbs).toEqual([{ datname: w1.name, datistemplate: false, comment: marker(m.runId) }]);
  const rows = await withDb(w1.url, async (w) => {
    const t = await w.query(`SELECT count(*)::int AS n FROM information_schema.tables WHERE table_schema = 'public'`);
    const s = await w.query('SELECT name FROM t01 ORDER BY id');
    await w.query("INSERT INTO t50 (name) VALUES ('dirty')");
    return { tables: t.rows[0].n, seed: s.rows.map((r) => r.name) };
  });
  expect(rows).toEqual({ tables: 50, seed: ['alice', 'bob'] });
  await rebuildWorkerDatabase(m, w1.name);
  expect(await withDb(w1.url, async (w) => (await w.query('SELECT count(*)::int AS n FROM t50')).rows[0].n)).toBe(0);
});

test('sweep drops a dead run’s databases and nothing else', async () => {
  const c = await admin();
  const mk = async (name: string, comment?: string) => {
    await c.query(`CREATE DATABASE ${ident(name)}`);
    if (comment !== undefined) await c.query(`COMMENT ON DATABASE ${ident(name)} IS ${literal(comment)}`);
  };
  await mk('lcsweep_deadbeef_w1', marker('deadbeef'));
  await mk('lcsweep_deadbeef_w2', marker('deadbeef'));
  await mk('lcsweep_cafebabe_w1', marker('cafebabe')); // live: its lease is held below
  await mk('lcsweep_userdb'); // the user's own: no marker
  await mk('lcsweep_0badf00d_w1', 'someone else’s comment');
  await mk('lcsweep_feedface_w1', marker('deadbeef')); // marker/name mismatch: not provably ours
  const holder = await admin();
  await acquireLease(holder, 'cafebabe');
  const r = await sweep(cluster.url, 'lcsweep');
  expect(r.dropped.sort()).toEqual(['lcsweep_deadbeef_w1', 'lcsweep_deadbeef_w2']);
  expect((await databases(c, 'lcsweep')).map((d) => d.datname)).toEqual([
    'lcsweep_0badf00d_w1',
    'lcsweep_cafebabe_w1',
    'lcsweep_feedface_w1',
    'lcsweep_userdb',
  ]);
  // Once the live run's lease is gone, its databases go too.
  await holder.end();
  clients.splice(clients.indexOf(holder), 1);
  expect((await sweep(cluster.url, 'lcsweep')).dropped).toEqual(['lcsweep_cafebabe_w1']);
  for (const d of ['lcsweep_0badf00d_w1', 'lcsweep_feedface_w1', 'lcsweep_userdb']) await c.query(`DROP DATABASE ${ident(d)}`);
});

test('teardown reports and terminates leftover backends, drops the run’s databases, ends the reaper; idempotent', async () => {
  const c = await admin();
  const m = track(await startRun({ server: cluster.url, prefix: 'lcdown', migrations: SCHEMA }, process.pid));
  expect(m.reaperPid && isAlive(m.reaperPid)).toBeTruthy();
  // The lease is held from the start (by this process until the reaper holds it, then by the reaper).
  const [k1, k2] = leaseKey(m.runId);
  const leaseHolders = async () =>
    (
      await c.query(
        `SELECT a.application_name AS app FROM pg_locks l JOIN pg_stat_activity a USING (pid)
          WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1::oid AND l.objid = $2::oid AND l.objsubid = 2`,
        [String(k1 >>> 0), String(k2 >>> 0)],
      )
    ).rows.map((r) => r.app as string);
  expect((await leaseHolders()).length).toBeGreaterThanOrEqual(1);
  for (let i = 0; i < 100 && !(await leaseHolders()).includes('jest-environment-pg reaper'); i++) await new Promise((r) => setTimeout(r, 50));
  expect(await leaseHolders()).toContain('jest-environment-pg reaper');
  const w1 = await ensureWorkerDatabase(m, '1');
  const w2 = await ensureWorkerDatabase(m, '2');
  const leaky = new Client({ connectionString: w1.url, application_name: 'leaky-pool' });
  leaky.on('error', () => undefined);
  await leaky.connect();
  await leaky.query('SELECT 42 AS forgotten');
  const s = await teardownRun(m);
  expect(s.dropped.sort()).toEqual([w1.name, w2.name].sort());
  expect(s.terminated).toBe(1);
  expect(s.report).toContain('leaky-pool');
  expect(s.report).toContain('SELECT 42 AS forgotten');
  expect(s.report).toContain(w1.name);
  expect(s.summaryLine).toMatch(/^jest-environment-pg: dropped 2 databases, terminated 1 backend in \d+ ms$/);
  expect(await databases(c, `lcdown_${m.runId}`)).toEqual([]);
  const left = await c.query('SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname LIKE $1', [`lcdown\\_${m.runId}%`]);
  expect(left.rows[0].n).toBe(0);
  expect(existsSync(m.runDir)).toBe(false);
  expect(await waitFor(() => !isAlive(m.reaperPid!), 3000)).toBe(true);
  const again = await teardownRun(m);
  expect(again).toMatchObject({ dropped: [], terminated: 0 });
  await leaky.end().catch(() => undefined);
});

test('embedded run: teardown leaves no database, backend, postgres process or temp dir', async () => {
  const m = track(await startRun({ prefix: 'lcemb', migrations: SCHEMA }, process.pid));
  expect(m.cluster).toBeDefined();
  const { pid, baseDir, dataDir } = m.cluster!;
  expect(path.basename(baseDir)).toMatch(/^jest-pg-/);
  // Its dynamic shared memory lives in its data dir (not /dev/shm/PostgreSQL.*): removed with it,
  // even after a server that was killed.
  expect(readdirSync(path.join(dataDir, 'pg_dynshmem')).length).toBeGreaterThan(0);
  await ensureWorkerDatabase(m, '1');
  const s = await teardownRun(m);
  expect(s.dropped).toHaveLength(1);
  expect(isAlive(pid)).toBe(false);
  expect(existsSync(baseDir)).toBe(false);
  expect(existsSync(m.runDir)).toBe(false);
  expect(await waitFor(() => !isAlive(m.reaperPid!), 3000)).toBe(true);
});

test('a teardown right after the start, in a process with nothing else to keep it alive, finishes (server and embedded)', async () => {
  // Global setup lets the reaper take the lease in the background; a teardown that comes before
  // the hand-over (a programmatic start and stop) waits for it, and must not be left pending when
  // nothing else holds the event loop (the process would exit 0 with the run still up).
  const script = `
    const { startRun, teardownRun } = require(${JSON.stringify(path.join(ROOT, 'dist', 'run', 'run.js'))});
    (async () => {
      const m = await startRun({ prefix: process.argv[1], migrations: ${JSON.stringify(SCHEMA)}, cacheDir: process.argv[2] || false }, process.pid, { reaperInBackground: true });
      console.log(JSON.stringify({ baseDir: m.cluster ? m.cluster.baseDir : null, runDir: m.runDir }));
      const s = await teardownRun(m);
      console.log('torn down: ' + s.summaryLine);
    })();
  `;
  const cacheDir = mkdtempSync(path.join(os.tmpdir(), 'jestpg-quick-cache-'));
  // On a server; embedded without a cache; embedded filling a cache (same prefix: same entry),
  // then from it, three times (where the hand-over was found left pending, in one run of two).
  const cases = [
    ['lcquickext', { JEST_PG_URL: cluster.url }, ''],
    ['lcquickemb', {}, ''],
    ...[1, 2, 3, 4].map(() => ['lcquickc', {}, cacheDir] as const),
  ] as const;
  try {
    for (const [prefix, env, cache] of cases) {
      const childEnv: NodeJS.ProcessEnv = { ...process.env, ...env };
      if (!('JEST_PG_URL' in env)) delete childEnv.JEST_PG_URL;
      const out = await new Promise<{ code: number | null; text: string }>((resolve) => {
        const ch = spawn(process.execPath, ['-e', script, prefix, cache], { env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
        children.push(ch);
        let text = '';
        ch.stdout.on('data', (d) => (text += d));
        ch.stderr.on('data', (d) => (text += d));
        ch.on('close', (code) => resolve({ code, text }));
      });
      expect(out.text).toContain('torn down: jest-environment-pg: dropped');
      expect(out.code).toBe(0);
      const dirs = JSON.parse(out.text.split('\n')[0]) as { baseDir: string | null; runDir: string };
      expect(existsSync(dirs.runDir)).toBe(false);
      if (dirs.baseDir) expect(existsSync(dirs.baseDir)).toBe(false);
      // The run's databases are gone (its template stays on a server for the next run to reuse).
      const c = await admin();
      expect((await databases(c, prefix)).filter((d) => !d.datistemplate)).toEqual([]);
    }
  } finally {
    rmSync(cacheDir, { recursive: true, force: true });
  }
}, 60_000);

test('the reaper tears the run down when the Jest main process dies', async () => {
  const fakeMain = spawn('sleep', ['120'], { stdio: 'ignore' });
  children.push(fakeMain);
  const m = track(await startRun({ prefix: 'lcreap', migrations: SCHEMA }, fakeMain.pid!));
  const { pid, baseDir } = m.cluster!;
  await ensureWorkerDatabase(m, '1');
  // Our own copy of the manifest says it is not torn down yet.
  expect(existsSync(m.manifestPath)).toBe(true);
  const killedAt = Date.now();
  fakeMain.kill('SIGKILL');
  expect(await waitFor(() => !isAlive(pid) && !existsSync(baseDir) && !existsSync(m.runDir) && !isAlive(m.reaperPid!), 8000)).toBe(true);
  const took = Date.now() - killedAt;
  expect(took).toBeLessThan(5000);
  // eslint-disable-next-line no-console
  console.log(`reaper cleaned up ${took} ms after the main process was killed`);
});

test('the reaper drops a dead run’s databases on an external server', async () => {
  const c = await admin();
  const fakeMain = spawn('sleep', ['120'], { stdio: 'ignore' });
  children.push(fakeMain);
  const m = track(await startRun({ server: cluster.url, prefix: 'lcreapx' }, fakeMain.pid!));
  await ensureWorkerDatabase(m, '1');
  await ensureWorkerDatabase(m, '2');
  expect(await databases(c, `lcreapx_${m.runId}`)).toHaveLength(2);
  fakeMain.kill('SIGKILL');
  expect(await waitFor(async () => (await databases(c, `lcreapx_${m.runId}`)).length === 0, 8000)).toBe(true);
  expect(await waitFor(() => !isAlive(m.reaperPid!) && !existsSync(m.runDir), 3000)).toBe(true);
});

test('environment-only mode: the first worker starts the run, the others wait and share it', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'jestpg-envonly-'));
  const script = path.join(dir, 'worker.js');
  writeFileSync(
    script,
    `const { attachRun, ensureWorkerDatabase } = require(${JSON.stringify(path.join(ROOT, 'dist', 'run', 'run.js'))});
     attachRun({ server: ${JSON.stringify(cluster.url)}, prefix: 'lcenv', migrations: ${JSON.stringify(SCHEMA)} })
       .then(async (m) => { const w = await ensureWorkerDatabase(m, process.env.JEST_WORKER_ID); process.send({ m, w }); })
       .catch((e) => process.send({ error: e.message }));`,
  );
  const env = { ...process.env };
  delete env.JEST_PG_MANIFEST;
  try {
    const results = await Promise.all(
      ['1', '2', '3'].map(
        (id) =>
          new Promise<{ m: RunManifest; w: { name: string }; error?: string }>((resolve, reject) => {
            // fork: like a jest-worker child, so the "Jest main process" is us (the parent).
            const ch = fork(script, [], { env: { ...env, JEST_WORKER_ID: id }, stdio: 'ignore' });
            children.push(ch);
            ch.once('message', (msg) => resolve(msg as { m: RunManifest; w: { name: string }; error?: string }));
            ch.once('error', reject);
          }),
      ),
    );
    for (const r of results) expect(r.error).toBeUndefined();
    const ids = new Set(results.map((r) => r.m.runId));
    expect(ids.size).toBe(1);
    const m = track(results[0].m);
    expect(m.mainPid).toBe(process.pid);
    expect(m.lockFiles?.every((f) => existsSync(f))).toBe(true);
    expect(results.map((r) => r.w.name).sort()).toEqual(['1', '2', '3'].map((id) => `lcenv_${m.runId}_w${id}`));
    const s = await teardownRun(m);
    expect(s.dropped).toHaveLength(3);
    expect(m.lockFiles?.some((f) => existsSync(f))).toBe(false);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('Jest with the package’s globalSetup/globalTeardown: workers inherit the run, teardown leaves nothing', () => {
  const project = path.join(__dirname, '..', 'fixtures', 'globalsetup-project');
  const env = { ...process.env };
  delete env.JEST_PG_MANIFEST;
  delete env.JEST_WORKER_ID;
  const r = require('node:child_process').spawnSync(process.execPath, [require.resolve('jest/bin/jest'), '--config', path.join(project, 'jest.config.js'), '--ci'], {
    cwd: project,
    env,
    encoding: 'utf8',
    timeout: 60_000,
  });
  const out = `${r.stdout}\n${r.stderr}`;
  expect(out).toContain('Tests:       3 passed, 3 total');
  expect(out).toMatch(/jest-environment-pg: dropped [12] databases?, terminated 0 backends in \d+ ms/);
  const lines = [...out.matchAll(/RUN ([0-9a-f]{8}) (\S+) (\d+) (\S+)/g)];
  expect(lines.length).toBe(3);
  expect(new Set(lines.map((l) => l[1])).size).toBe(1);
  const [, runId, , pid, baseDir] = lines[0];
  expect(isAlive(Number(pid))).toBe(false);
  expect(existsSync(baseDir)).toBe(false);
  expect(existsSync(path.join(os.tmpdir(), `jest-pg-run-${runId}`))).toBe(false);
}, 90_000);

test('binaries the server user cannot reach (checkout in a 0700 dir, as root) are copied into the cluster dir', async () => {
  if (process.getuid?.() !== 0) return;
  const b = await findBinaries({});
  if (!b.nativeDir) return;
  const hidden = mkdtempSync(path.join(os.tmpdir(), 'jestpg-0700-')); // mkdtemp: mode 0700, owned by root
  try {
    const native = path.join(hidden, 'pkg', 'native');
    require('node:fs').cpSync(b.nativeDir, native, { recursive: true, verbatimSymlinks: true });
    // and as if npm skipped the postinstall: one library symlink missing
    rmSync(path.join(native, 'lib', 'libpq.so.5'), { force: true });
    const c = await startCluster({ binDir: path.join(native, 'bin'), version: b.version, nativeDir: native });
    try {
      expect(c.binDir.startsWith(c.baseDir)).toBe(true);
      expect(await withDb(c.url, async (x) => (await x.query('SELECT 1 AS one')).rows[0].one)).toBe(1);
    } finally {
      await stopCluster(c);
    }
    expect(existsSync(c.baseDir)).toBe(false);
  } finally {
    rmSync(hidden, { recursive: true, force: true });
  }
}, 60_000);

test('leftovers of a run whose main process and reaper both died are removed by the next run’s local sweep', async () => {
  const { sweepStaleLocal } = await import('../../src/run/stale');
  const fakeMain = spawn('sleep', ['120'], { stdio: 'ignore' });
  children.push(fakeMain);
  const m = track(await startRun({ prefix: 'lcstale' }, fakeMain.pid!));
  await ensureWorkerDatabase(m, '1');
  process.kill(m.reaperPid!, 'SIGKILL');
  fakeMain.kill('SIGKILL');
  await waitFor(() => !isAlive(m.reaperPid!) && !isAlive(fakeMain.pid!), 3000);
  const { pid, baseDir } = m.cluster!;
  expect(isAlive(pid)).toBe(true); // nobody left to clean up…
  const removed = await sweepStaleLocal((dead) => teardownRun(dead, { fromReaper: true }));
  expect(removed).toContain(m.runDir); // …until the next run starts
  expect(isAlive(pid)).toBe(false);
  expect(existsSync(baseDir)).toBe(false);
  expect(existsSync(m.runDir)).toBe(false);
});

test('migrations as a JS module, a TS module and a shell command', async () => {
  const { runMigrations } = await import('../../src/schema/migrations');
  const c = await admin();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'jestpg-mig-'));
  const pgPath = JSON.stringify(require.resolve('pg'));
  try {
    await c.query('CREATE DATABASE lcmig');
    const url = withDatabase(cluster.url, 'lcmig');
    writeFileSync(
      path.join(dir, 'm.js'),
      `const { Client } = require(${pgPath});
       module.exports = async (url) => { const c = new Client(url); await c.connect(); await c.query('CREATE TABLE from_js (id int)'); await c.end(); };`,
    );
    writeFileSync(path.join(dir, 'helper.ts'), `export const table: string = 'from_ts';\n`);
    writeFileSync(
      path.join(dir, 'm.ts'),
      `import { Client } from ${pgPath};
       import { table } from './helper';
       export default async function migrate(url: string): Promise<void> { const c = new Client(url); await c.connect(); await c.query(\`CREATE TABLE \${table} (id int)\`); await c.end(); }`,
    );
    await runMigrations(path.join(dir, 'm.js'), url);
    await runMigrations('m.ts', url, { rootDir: dir });
    const cmd = `"${process.execPath}" -e "const {Client}=require(${pgPath.replace(/"/g, '\\"')});(async()=>{const c=new Client(process.env.DATABASE_URL);await c.connect();await c.query('CREATE TABLE from_cmd (db text)');await c.query('INSERT INTO from_cmd VALUES (\\$1)',[process.env.PGDATABASE]);await c.end()})()"`;
    await runMigrations({ command: cmd }, url);
    const r = await withDb(url, async (x) => (await x.query(`SELECT string_agg(tablename, ',' ORDER BY tablename) AS t FROM pg_tables WHERE schemaname = 'public'`)).rows[0].t);
    expect(r).toBe('from_cmd,from_js,from_ts');
    expect(await withDb(url, async (x) => (await x.query('SELECT db FROM from_cmd')).rows[0].db)).toBe('lcmig');
    const failing = await runMigrations({ command: 'echo boom >&2; exit 3' }, url).catch((e) => e);
    expect(failing).toMatchObject({ code: 'JESTPG_MIGRATION_FAILED' });
    expect(failing.message).toContain('code 3');
    expect(failing.message).toContain('boom');
    writeFileSync(path.join(dir, 'bad.js'), 'module.exports = { notAFunction: 1 }');
    await expect(runMigrations(path.join(dir, 'bad.js'), url)).rejects.toMatchObject({ code: 'JESTPG_MIGRATION_FAILED', message: expect.stringContaining('does not export a function') });
  } finally {
    await c.query('DROP DATABASE IF EXISTS lcmig WITH (FORCE)');
    rmSync(dir, { recursive: true, force: true });
  }
});
