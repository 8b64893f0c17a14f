/**
 * Vitest's ways of running a suite other than one `vitest run`, on fixtures/vitest-watch (four
 * files whose tests pass only on a clean sandbox: each inserts a row and expects id 1 and to be
 * the only row):
 *  - watch mode: the first run, then re-runs of a changed file, each on clean databases; when
 *    Vitest is stopped with ^C (SIGINT: Vitest exits without running global teardowns, so the
 *    reaper ends the run), nothing is left;
 *  - `--shard`: two shards started at once against one server, as CI machines do: each runs its
 *    share, together all files once, and neither leaves anything.
 */
import fs from 'node:fs';
import path from 'node:path';
import { leftovers, ROOT, settle } from '../helpers/jest-run';
import { waitFor, useExternalServer } from '../helpers/e2e';
import { exceptVitestTemp, runVitest, startVitest } from '../helpers/vitest-run';

const ext = useExternalServer();
const FIXTURE = path.join(ROOT, 'fixtures', 'vitest-watch');

/** How many runs Vitest's watch mode has finished (it says so after each). */
const runsDone = (output: string) => output.split('Waiting for file changes').length - 1;

/** The "Tests" summary line of the last run in `output`. */
const lastSummary = (output: string) => [...output.matchAll(/^\s*Tests\s+(.*)$/gm)].pop()?.[1]?.trim();

test('watch mode: re-runs of a changed file start from clean databases; ^C leaves nothing', async () => {
  const vitest = startVitest('vitest-watch', { watch: true, env: { JEST_PG_URL: ext.server.url }, timeoutMs: 120_000 });
  ext.keep(vitest.sandboxDir);
  try {
    await waitFor('the first run to finish', () => runsDone(vitest.output()) >= 1, 90_000);
    expect(lastSummary(vitest.output())).toBe('12 passed (12)');
    // The same file changes twice (its mtime, as an editor's save): each re-run sees only its own rows.
    for (const n of [2, 3]) {
      const now = new Date(Date.now() + n * 1000);
      fs.utimesSync(path.join(FIXTURE, 'a.test.js'), now, now);
      await waitFor(`re-run ${n - 1} to finish`, () => runsDone(vitest.output()) >= n, 60_000);
      expect(lastSummary(vitest.output())).toBe('3 passed (3)');
    }
  } finally {
    vitest.child.kill('SIGINT');
  }
  const r = await vitest.done;
  expect(r.output).not.toMatch(/FAIL|JESTPG_|Error/);
  expect(r.output.match(/RERUN\s+a\.test\.js/g)).toHaveLength(2);
  // The reaper ends the run once Vitest is gone.
  const ours = () => exceptVitestTemp(leftovers(r.sandboxDir));
  await waitFor('the reaper to end the run', async () => ours().files.length + ours().processes.length + (await ext.server.runDatabases()).length === 0, 15_000).catch(() => undefined);
  expect(ours()).toEqual({ files: [], processes: [] });
  expect(await ext.server.runDatabases()).toEqual([]);
  expect(await ext.server.runBackends()).toEqual([]);
}, 180_000);

test('--shard: two shards at once on one server each run their share, all files once, and leave nothing', async () => {
  const shards = await Promise.all(['1/2', '2/2'].map((s) => runVitest('vitest-watch', { args: [`--shard=${s}`], env: { JEST_PG_URL: ext.server.url } })));
  for (const r of shards) ext.keep(r.sandboxDir);
  const files = shards.map((r) => [...r.files.keys()].sort());
  for (const [i, r] of shards.entries()) {
    expect([i, r.code, r.output]).toEqual([i, 0, expect.stringMatching(/jest-environment-pg: dropped \d+ databases?, terminated 0 backends/)]);
    expect(files[i].length).toBeGreaterThan(0);
    for (const tests of r.files.values()) expect(tests.map((t) => t.status)).toEqual(['passed', 'passed', 'passed']);
  }
  expect([...files[0], ...files[1]].sort()).toEqual(['a.test.js', 'b.test.js', 'c.test.js', 'd.test.js']);
  for (const r of shards) expect(await settle(r.sandboxDir, 10_000)).toEqual({ files: [], processes: [] });
  expect(await ext.server.runDatabases()).toEqual([]);
  expect(await ext.server.runBackends()).toEqual([]);
}, 180_000);
