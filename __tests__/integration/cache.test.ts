/**
 * The embedded cluster's cache (cacheDir): a warm start restores the cluster with its template
 * instead of running initdb and the migrations. Asserts on what the run reports (`m.cache`,
 * `m.timings` keys — never on durations), on the server, on processes and on the file system.
 * Needs the build (the reaper runs from dist/).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Client } from 'pg';
import { packDataDir, readPack, resolveCacheDir, ENTRY_EXT } from '../../src/server/cache';
import { isAlive } from '../../src/util/proc';
import { ensureWorkerDatabase, startRun, teardownRun, type RunManifest } from '../../src/run/run';
import { ensureBuilt } from '../helpers/build';

const SCHEMA = path.join(__dirname, '..', 'fixtures', 'schema50');

const runs: RunManifest[] = [];
const children: ChildProcess[] = [];
const dirs: string[] = [];

beforeAll(() => ensureBuilt(), 60_000);

afterAll(async () => {
  for (const m of runs) await teardownRun(m).catch(() => undefined);
  for (const ch of children) if (ch.pid && isAlive(ch.pid)) ch.kill('SIGKILL');
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
}, 60_000);

/** A private dir (not named jest-pg-*: that is what leftover detectors look for). */
function tmpDir(tag: string): string {
  const d = mkdtempSync(path.join(os.tmpdir(), `jestpg-cachetest-${tag}-`));
  dirs.push(d);
  return d;
}

const track = (m: RunManifest) => (runs.push(m), m);

async function run(opts: Record<string, unknown>, mainPid = process.pid): Promise<RunManifest> {
  return track(await startRun({ migrations: SCHEMA, ...opts }, mainPid));
}

async function query<T = Record<string, unknown>>(url: string, sql: string): Promise<T[]> {
  const c = new Client({ connectionString: url });
  await c.connect();
  try {
    return (await c.query(sql)).rows as T[];
  } finally {
    await c.end();
  }
}

async function waitFor(cond: () => boolean | Promise<boolean>, ms = 8000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await cond()) return true;
    await new Promise((r) => setTimeout(r, 25));
  }
  return cond();
}

/** Tear down and check that nothing of the run remains but the cache entries. */
async function teardownClean(m: RunManifest): Promise<void> {
  const { pid, baseDir } = m.cluster!;
  await teardownRun(m);
  expect(isAlive(pid)).toBe(false);
  expect(existsSync(baseDir)).toBe(false);
  expect(existsSync(m.runDir)).toBe(false);
  expect(await waitFor(() => !isAlive(m.reaperPid!), 3000)).toBe(true);
  const ps = execFileSync('ps', ['-eo', 'pid,args'], { encoding: 'utf8' }).split('\n');
  expect(ps.filter((l) => l.includes(baseDir) || l.includes(m.manifestPath))).toEqual([]);
}

/** Only complete entries in the cache dir: no temp files of a save. */
function cacheFiles(dir: string): string[] {
  return readdirSync(dir).sort();
}

async function workerTables(m: RunManifest): Promise<{ tables: number; seed: string[] }> {
  const w = await ensureWorkerDatabase(m, '1');
  expect(w.created).toBe(true);
  const t = await query<{ n: number }>(w.url, `SELECT count(*)::int AS n FROM information_schema.tables WHERE table_schema = 'public'`);
  const s = await query<{ name: string }>(w.url, 'SELECT name FROM t01 ORDER BY id');
  return { tables: t[0].n, seed: s.map((r) => r.name) };
}

test('a second run with the same cacheDir skips initdb and the template build', async () => {
  const cacheDir = tmpDir('warm');
  const cold = await run({ prefix: 'cwarm', cacheDir });
  expect(cold.cache).toMatchObject({ status: 'cold', dir: cacheDir });
  expect(cold.timings).toHaveProperty('initdb');
  expect(cold.timings).toHaveProperty(['template(built)']);
  expect(await workerTables(cold)).toEqual({ tables: 50, seed: ['alice', 'bob'] });
  // Nothing is saved before the tests: the teardown saves the stopped cluster.
  expect(cold.timings).not.toHaveProperty('snapshot');
  expect(existsSync(cold.cache!.entry!)).toBe(false);
  await teardownClean(cold);
  expect(cold.cache!.saved).toBe(true);
  expect(existsSync(cold.cache!.entry!)).toBe(true);

  const warm = await run({ prefix: 'cwarm', cacheDir });
  expect(warm.cache).toMatchObject({ status: 'warm', entry: cold.cache!.entry });
  expect(warm.cache!.saved).toBeFalsy();
  expect(warm.cluster!.restored).toBe(true);
  expect(warm.timings).not.toHaveProperty('initdb');
  expect(warm.timings).not.toHaveProperty(['template(built)']);
  expect(warm.timings).toHaveProperty(['template(reused)']);
  expect(warm.timings).toHaveProperty('restore');
  expect(warm.templateDb).toBe(cold.templateDb);
  // A fresh cluster (its own dir, port, server) with the same template, and clones of it work.
  expect(warm.cluster!.baseDir).not.toBe(cold.cluster!.baseDir);
  const dbs = await query<{ datname: string; datistemplate: boolean }>(warm.adminUrl, 'SELECT datname, datistemplate FROM pg_database ORDER BY datname');
  expect(dbs).toEqual([
    { datname: warm.templateDb, datistemplate: true },
    { datname: 'postgres', datistemplate: false },
    { datname: 'template0', datistemplate: true },
    { datname: 'template1', datistemplate: true },
  ]);
  expect(await workerTables(warm)).toEqual({ tables: 50, seed: ['alice', 'bob'] });
  await teardownClean(warm);
  // The cache persists, with complete entries only: the cluster with this template (initdb's
  // output alone is saved only once the template changes: see the next test).
  expect(cacheFiles(cacheDir)).toEqual([path.basename(cold.cache!.entry!)]);
});

test('a run torn down by its reaper (Jest was killed) saves no entry; nor does a cluster holding more than its template', async () => {
  const cacheDir = tmpDir('nosave');
  const killed = await run({ prefix: 'cnosave', cacheDir });
  expect(killed.cache).toMatchObject({ status: 'cold', saveAtEnd: expect.any(Object) });
  await teardownRun(killed, { fromReaper: true });
  expect(isAlive(killed.cluster!.pid)).toBe(false);
  expect(existsSync(killed.cluster!.baseDir)).toBe(false);
  expect(killed.cache!.saved).toBeFalsy();
  expect(cacheFiles(cacheDir)).toEqual([]);

  const extra = await run({ prefix: 'cnosave', cacheDir });
  expect(extra.cache?.status).toBe('cold');
  await query(extra.adminUrl, 'CREATE DATABASE cnosave_users_own');
  await teardownClean(extra);
  expect(extra.cache!.saved).toBeFalsy();
  expect(extra.cache!.note).toMatch(/not saved: the cluster holds more than its template \(cnosave_users_own\)/);
  expect(cacheFiles(cacheDir)).toEqual([]);

  // The next run starts cold again, and saves.
  const next = await run({ prefix: 'cnosave', cacheDir });
  expect(next.cache?.status).toBe('cold');
  await teardownClean(next);
  expect(next.cache!.saved).toBe(true);
  expect(cacheFiles(cacheDir)).toEqual([path.basename(next.cache!.entry!)]);
});

test('environment-only mode: the reaper’s teardown is the run’s normal end, and it saves the entry', async () => {
  const cacheDir = tmpDir('envonly');
  const m = track(await startRun({ migrations: SCHEMA, prefix: 'cenvonly', cacheDir }, process.pid, { lockFiles: [] }));
  expect(m.cache?.status).toBe('cold');
  await teardownRun(m, { fromReaper: true });
  expect(isAlive(m.cluster!.pid)).toBe(false);
  expect(existsSync(m.cluster!.baseDir)).toBe(false);
  expect(m.cache!.saved).toBe(true);
  expect(cacheFiles(cacheDir)).toEqual([path.basename(m.cache!.entry!)]);
});

test('changed migrations: once the template has changed, initdb’s output is cached and only the template is built', async () => {
  const cacheDir = tmpDir('base');
  const migrations = path.join(tmpDir('mig'), 'm');
  cpSync(SCHEMA, migrations, { recursive: true });
  const baseFiles = () => cacheFiles(cacheDir).filter((f) => f.endsWith('-base.pgdata'));
  const first = await run({ prefix: 'cbase', cacheDir, migrations });
  expect(first.cache?.status).toBe('cold');
  expect(baseFiles()).toEqual([]); // a first run does not pay for saving initdb's output
  await teardownClean(first);

  // The template changes: initdb runs once more, and its output is saved this time.
  writeFileSync(path.join(migrations, '003_more.sql'), 'CREATE TABLE t51 (id int);\n');
  const second = await run({ prefix: 'cbase', cacheDir, migrations });
  expect(second.cache).toMatchObject({ status: 'cold' });
  expect(second.templateDb).not.toBe(first.templateDb);
  expect(second.timings).toHaveProperty('initdb');
  await teardownClean(second);
  expect(second.cache!.saved).toBe(true);
  expect(baseFiles()).toHaveLength(1);

  // It changes again: initdb's output is restored, only the template is built.
  writeFileSync(path.join(migrations, '004_more.sql'), 'CREATE TABLE t52 (id int);\n');
  const third = await run({ prefix: 'cbase', cacheDir, migrations });
  expect(third.cache).toMatchObject({ status: 'base' });
  expect(third.timings).not.toHaveProperty('initdb');
  expect(third.timings).toHaveProperty('restore');
  expect(third.timings).toHaveProperty(['template(built)']);
  expect((await workerTables(third)).tables).toBe(52);
  await teardownClean(third);
  expect(third.cache!.saved).toBe(true);

  const fourth = await run({ prefix: 'cbase', cacheDir, migrations });
  expect(fourth.cache?.status).toBe('warm');
  expect(fourth.templateDb).toBe(third.templateDb);
  expect((await workerTables(fourth)).tables).toBe(52);
  await teardownClean(fourth);
  // Each template its own entry, plus the base; no temp files.
  expect(cacheFiles(cacheDir)).toHaveLength(4);
  expect(cacheFiles(cacheDir).every((f) => f.endsWith(ENTRY_EXT))).toBe(true);
});

test('a damaged entry is ignored, deleted and rebuilt', async () => {
  const cacheDir = tmpDir('corrupt');
  const first = await run({ prefix: 'ccorrupt', cacheDir });
  await teardownClean(first);
  const entry = first.cache!.entry!;
  const base = entry.replace(/-ccorrupt_tpl_[0-9a-f]+\.pgdata$/, '-base.pgdata');

  // 1. Truncated (a save cut short): rejected by its length check; the run starts cold and saves it again.
  truncateSync(entry, statSync(entry).size - 1000);
  expect(() => readPack(entry)).toThrow(/truncated|length/);
  const a = await run({ prefix: 'ccorrupt', cacheDir });
  expect(a.cache).toMatchObject({ status: 'cold', note: expect.stringContaining('ignored') });
  expect(a.timings).toHaveProperty('initdb');
  expect(a.timings).toHaveProperty(['template(built)']);
  expect(await workerTables(a)).toEqual({ tables: 50, seed: ['alice', 'bob'] });
  await teardownClean(a);
  expect(() => readPack(entry)).not.toThrow(); // rebuilt

  // 2. Flipped bytes in the middle: the checksum catches it.
  const buf = readFileSync(entry);
  buf[Math.floor(buf.length / 2)] ^= 0xff;
  writeFileSync(entry, buf);
  expect(() => readPack(entry)).toThrow(/checksum/);

  // 3. Both entries unusable in a way only the server notices: a well-formed pack of a data
  //    directory Postgres cannot start from. Ignored, deleted, and the run falls back to initdb.
  const junk = tmpDir('junk');
  mkdirSync(path.join(junk, 'data'), { mode: 0o700 });
  writeFileSync(path.join(junk, 'data', 'PG_VERSION'), '18\n');
  await packDataDir(path.join(junk, 'data'), base);
  await packDataDir(path.join(junk, 'data'), entry);
  const b = await run({ prefix: 'ccorrupt', cacheDir });
  expect(b.cache).toMatchObject({ status: 'cold' });
  expect(b.cache!.note).toMatch(/ignored .*ccorrupt_tpl_/);
  expect(b.cache!.note).toMatch(/ignored .*-base\.pgdata/);
  expect(b.timings).toHaveProperty('initdb');
  await teardownClean(b);
  expect(b.cache!.saved).toBe(true);
  // Rebuilt: the next run is warm again, and no temp file or foreign dir is left in the cache.
  const c = await run({ prefix: 'ccorrupt', cacheDir });
  expect(c.cache?.status).toBe('warm');
  await teardownClean(c);
  expect(cacheFiles(cacheDir).every((f) => f.endsWith(ENTRY_EXT))).toBe(true);
  expect(readdirSync(os.tmpdir()).filter((f) => f.startsWith('jest-pg-') && f.includes(path.basename(cacheDir)))).toEqual([]);
});

test('concurrent runs on one cache dir: two cold starts, then two warm starts, all succeed', async () => {
  const cacheDir = tmpDir('concurrent');
  const cold = await Promise.all([run({ prefix: 'cconc', cacheDir }), run({ prefix: 'cconc', cacheDir })]);
  for (const m of cold) expect(['cold', 'base', 'warm']).toContain(m.cache?.status);
  expect(cold[0].cluster!.baseDir).not.toBe(cold[1].cluster!.baseDir);
  for (const m of cold) expect(await workerTables(m)).toEqual({ tables: 50, seed: ['alice', 'bob'] });
  await Promise.all(cold.map((m) => teardownClean(m)));
  expect(cacheFiles(cacheDir).every((f) => f.endsWith(ENTRY_EXT))).toBe(true);

  const warm = await Promise.all([run({ prefix: 'cconc', cacheDir }), run({ prefix: 'cconc', cacheDir })]);
  for (const m of warm) expect(m.cache?.status).toBe('warm');
  for (const m of warm) expect(await workerTables(m)).toEqual({ tables: 50, seed: ['alice', 'bob'] });
  await Promise.all(warm.map((m) => teardownClean(m)));
  expect(cacheFiles(cacheDir).every((f) => f.endsWith(ENTRY_EXT))).toBe(true);
});

test('the Jest main process dies while the template is being built: the reaper cleans up, nothing is cached', async () => {
  const cacheDir = tmpDir('crash');
  const work = tmpDir('crashmig');
  const started = path.join(work, 'started');
  const release = path.join(work, 'release');
  const migration = path.join(work, 'slow.js');
  writeFileSync(
    migration,
    `const fs = require('fs');
     module.exports = async () => {
       fs.writeFileSync(${JSON.stringify(started)}, '');
       while (!fs.existsSync(${JSON.stringify(release)})) await new Promise((r) => setTimeout(r, 20));
     };`,
  );
  const fakeMain = spawn('sleep', ['120'], { stdio: 'ignore' });
  children.push(fakeMain);
  const pending = startRun({ prefix: 'ccrash', cacheDir, migrations: migration }, fakeMain.pid!);
  pending.catch(() => undefined);
  expect(await waitFor(() => existsSync(started), 20_000)).toBe(true);
  // The run is building its template: the cluster runs, the lease is taken.
  const runDir = readdirSync(os.tmpdir())
    .filter((f) => f.startsWith('jest-pg-run-'))
    .map((f) => path.join(os.tmpdir(), f))
    .find((d) => {
      try {
        return JSON.parse(readFileSync(path.join(d, 'manifest.json'), 'utf8')).mainPid === fakeMain.pid;
      } catch {
        return false;
      }
    });
  expect(runDir).toBeDefined();
  const pre = JSON.parse(readFileSync(path.join(runDir!, 'manifest.json'), 'utf8')) as RunManifest;
  expect(pre.phase).toBe('template');
  const { pid, baseDir } = pre.cluster!;
  expect(isAlive(pid)).toBe(true);
  fakeMain.kill('SIGKILL');
  expect(await waitFor(() => !isAlive(pid) && !existsSync(baseDir) && !existsSync(runDir!), 8000)).toBe(true);
  // Our setup then finds its cluster gone, fails, and leaves nothing either.
  writeFileSync(release, '');
  await expect(pending).rejects.toBeDefined();
  expect(cacheFiles(cacheDir).filter((f) => !f.endsWith(ENTRY_EXT))).toEqual([]);
  expect(cacheFiles(cacheDir).some((f) => f.includes('ccrash_tpl_'))).toBe(false);
}, 60_000);

test('cacheDir: false turns the cache off; the default lives in <rootDir>/node_modules/.cache only when node_modules exists', async () => {
  const project = tmpDir('project');
  expect(resolveCacheDir(undefined, project)).toEqual({ reason: expect.stringContaining('does not exist') });
  expect(existsSync(path.join(project, 'node_modules'))).toBe(false); // never created
  mkdirSync(path.join(project, 'node_modules'));
  expect(resolveCacheDir(undefined, project)).toEqual({ dir: path.join(project, 'node_modules', '.cache', 'jest-environment-pg') });
  expect(resolveCacheDir(false, project)).toEqual({ reason: 'cacheDir is false' });
  expect(resolveCacheDir('c', project)).toEqual({ dir: path.join(project, 'c') });
  writeFileSync(path.join(project, 'file'), '');
  expect(resolveCacheDir('file/sub', project).dir).toBeUndefined(); // cannot be created: off, no error

  const m = await run({ prefix: 'coff', cacheDir: false });
  expect(m.cache).toMatchObject({ status: 'off' });
  expect(m.timings).toHaveProperty('initdb');
  await teardownClean(m);
});
