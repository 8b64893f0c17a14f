/**
 * Problem 3: workers and databases counted apart. Whatever the worker count, the file count,
 * sharding or a crashed worker, every worker gets the database named after its own
 * JEST_WORKER_ID, created by itself, and "database … does not exist" never appears. All runs
 * share one external server (JEST_PG_URL), which must hold no run database afterwards.
 */
import fs from 'node:fs';
import path from 'node:path';
import { runJest, settle, type JestRun } from '../helpers/jest-run';
import { capture, killGroup, outDir, startJest, waitFor, useExternalServer } from '../helpers/e2e';

const ext = useExternalServer();

interface Seen {
  file: string;
  worker: string;
  pid: number;
  db: string;
}

/** What each file of the many-files fixture wrote: which worker ran it, in which database. */
function seen(out: string, label: string): Seen[] {
  const file = path.join(out, `${label}.log`);
  if (!fs.existsSync(file)) return [];
  return fs
    .readFileSync(file, 'utf8')
    .trim()
    .split('\n')
    .map((l) => {
      const m = /^(\S+) worker=(\S+) pid=(\d+) db=(\S+)$/.exec(l)!;
      return { file: m[1], worker: m[2], pid: Number(m[3]), db: m[4] };
    });
}

async function run(fixture: string, args: string[], env: Record<string, string> = {}): Promise<JestRun> {
  const r = await runJest(fixture, { args, env: { JEST_PG_URL: ext.server.url, ...env }, timeoutMs: 60_000 });
  ext.keep(r.sandboxDir);
  return r;
}

function runIdOf(s: Seen[]): string {
  const ids = new Set(s.map((x) => /^jestpg_([0-9a-f]{8})_w/.exec(x.db)![1]));
  expect(ids.size).toBe(1);
  return [...ids][0];
}

/** Every worker used the database named after its JEST_WORKER_ID; one database per worker id. */
function expectOwnDatabases(s: Seen[], runId: string): void {
  for (const x of s) expect(x.db).toBe(`jestpg_${runId}_w${x.worker}`);
  const byWorker = new Map<string, Set<string>>();
  for (const x of s) byWorker.set(x.worker, (byWorker.get(x.worker) ?? new Set()).add(x.db));
  for (const dbs of byWorker.values()) expect(dbs.size).toBe(1);
}

async function expectNothingLeft(r: JestRun): Promise<void> {
  expect(r.output).not.toMatch(/does not exist/);
  expect(await settle(r.sandboxDir)).toEqual({ files: [], processes: [] });
  expect(await ext.server.runDatabases()).toEqual([]);
  expect(await ext.server.runBackends()).toEqual([]);
}

test.each([
  ['--maxWorkers=8 with 3 files', ['--maxWorkers=8', 'file-0[123]'], 3],
  ['--maxWorkers=1 with 10 files', ['--maxWorkers=1'], 10],
  ['--runInBand with 3 files', ['--runInBand', 'file-0[123]'], 3],
])('%s: each worker in its own database', async (name, args, files) => {
  const out = outDir();
  ext.keep(out);
  const r = await run('many-files', args, { E2E_OUT: out, E2E_LABEL: 'run' });
  capture(`workers ${name}`, r);
  expect(r.output).toMatch(new RegExp(`Tests:\\s+${files * 2} passed, ${files * 2} total`));
  expect(r.code).toBe(0);
  const s = seen(out, 'run');
  expect(s).toHaveLength(files);
  const runId = runIdOf(s);
  expectOwnDatabases(s, runId);
  const workers = new Set(s.map((x) => x.worker));
  if (!args.includes('--maxWorkers=8')) expect([...workers]).toEqual(['1']); // one worker (in band): one database
  else expect(new Set(s.map((x) => x.pid)).size).toBe(workers.size); // a process per worker id
  expect(r.output).toContain(`jest-environment-pg: dropped ${workers.size} database${workers.size === 1 ? '' : 's'}, terminated 0 backends`);
  await expectNothingLeft(r);
});

test('--shard=1/2 and --shard=2/2 at the same time against one server: separate runs that never touch each other', async () => {
  const out = outDir();
  ext.keep(out);
  const [a, b] = await Promise.all([
    run('many-files', ['--shard=1/2', '--maxWorkers=2'], { E2E_OUT: out, E2E_LABEL: 'shard1' }),
    run('many-files', ['--shard=2/2', '--maxWorkers=2'], { E2E_OUT: out, E2E_LABEL: 'shard2' }),
  ]);
  capture('workers shard 1 of 2', a);
  capture('workers shard 2 of 2', b);
  for (const r of [a, b]) {
    expect(r.output).toMatch(/Tests:\s+\d+ passed, \d+ total/);
    expect(r.output).not.toMatch(/failed/);
    expect(r.code).toBe(0);
  }
  const s1 = seen(out, 'shard1');
  const s2 = seen(out, 'shard2');
  // The shards split the files between them, each file ran once.
  expect([...s1, ...s2].map((x) => x.file).sort()).toEqual(Array.from({ length: 10 }, (_, i) => `file-${String(i + 1).padStart(2, '0')}.test.js`));
  const [id1, id2] = [runIdOf(s1), runIdOf(s2)];
  expect(id1).not.toBe(id2);
  expectOwnDatabases(s1, id1);
  expectOwnDatabases(s2, id2);
  await expectNothingLeft(a);
  await expectNothingLeft(b);
});

test('a worker that crashes (process.exit in a test) is replaced by Jest and gets its database back', async () => {
  const out = outDir();
  ext.keep(out);
  const r = await run('worker-crash', ['--maxWorkers=2'], { E2E_OUT: out });
  capture('worker-crash', r);
  // It really crashed once...
  expect(fs.readFileSync(path.join(out, 'crashed-once'), 'utf8')).toMatch(/^\d+ w\d+\n$/);
  expect(r.output).toMatch(/process\.exit called with "1"/);
  // ...and the file passed on the replacement (its pre-crash write rolled back), as did the others.
  expect(r.output).toMatch(/PASS \.\/crash\.test\.js/);
  expect(r.output).toMatch(/Tests:\s+4 passed, 4 total/);
  expect(r.code).toBe(0);
  expect(r.output).toMatch(/jest-environment-pg: dropped [12] databases?, terminated 0 backends/);
  await expectNothingLeft(r);
});

test('a --watchAll re-run (driven by a file change) starts a new run whose workers create their own databases', async () => {
  const out = outDir();
  ext.keep(out);
  const jest = startJest('many-files', {
    args: ['--maxWorkers=2', '--watchAll', 'file-0[12]'],
    env: { JEST_PG_URL: ext.server.url, E2E_OUT: out, E2E_LABEL: 'watch' },
    timeoutMs: 60_000,
  });
  ext.keep(jest.sandboxDir);
  const summaries = () => (jest.output().match(/jest-environment-pg: dropped \d+ databases?, terminated 0 backends/g) ?? []).length;
  await waitFor('the first run', () => summaries() >= 1, 45_000);
  const file = path.join(__dirname, '..', '..', 'fixtures', 'many-files', 'file-01.test.js');
  // A change event, content untouched. On a busy machine Jest may still be settling after the
  // first run and miss it: while nothing at all has followed a change, it is made again (a later
  // mtime each time), so the test waits for the re-run, not for the watcher to be ready.
  let changes = 0;
  let changedAt = 0;
  let outputAt = -1;
  const change = () => {
    const t = new Date(Date.now() + ++changes * 1000);
    fs.utimesSync(file, t, t);
    changedAt = Date.now();
    outputAt = jest.output().length;
  };
  change();
  await waitFor(
    'the re-run',
    () => {
      if (summaries() >= 2) return true;
      if (jest.output().length === outputAt && Date.now() - changedAt > 3000) change();
      return false;
    },
    45_000,
  );
  killGroup(jest.child, 'SIGINT');
  const r = await jest.done;
  capture('workers watch re-run', r);
  expect(r.output.match(/Tests:\s+4 passed, 4 total/g)).toHaveLength(2);
  expect(r.output).not.toMatch(/failed|does not exist|JESTPG_/);
  const s = seen(out, 'watch');
  expect(s).toHaveLength(4);
  // Two runs, each with its own databases, named after the worker that created them.
  const runs = new Set(s.map((x) => /^jestpg_([0-9a-f]{8})_w/.exec(x.db)![1]));
  expect(runs.size).toBe(2);
  for (const id of runs) expectOwnDatabases(s.filter((x) => x.db.includes(id)), id);
  await expectNothingLeft(r);
}, 120_000);
