/**
 * Vitest 4 (the `vitest` devDependency) on fixtures/vitest-sandbox through the plugin of
 * jest-environment-pg/vitest: the same guarantees as under Jest, on the `forks` pool (Vitest's
 * default, a process per file) and the `threads` pool without isolation (files share a thread),
 * each with two workers (a database each, keyed by VITEST_POOL_ID); nothing left on the server.
 * And SIGKILL of Vitest's main process: the reaper tears the run down (embedded server included).
 */
import fs from 'node:fs';
import path from 'node:path';
import { settle } from '../helpers/jest-run';
import { alive, capture, childrenOf, outDir, waitFor, useExternalServer } from '../helpers/e2e';
import { exceptVitestTemp, runVitest, startVitest, VITEST_BIN } from '../helpers/vitest-run';
import { expectSandboxRun } from '../helpers/vitest-sandbox';

const ext = useExternalServer();

test.each([
  ['forks', ['--pool=forks']],
  ['threads, no isolation', ['--pool=threads', '--no-isolate']],
])('Vitest 4, %s: per-test savepoints, retries, test.each, hooks, concurrency, late work, leaks; nothing left', async (name, args) => {
  const out = outDir();
  ext.keep(out);
  const run = await runVitest('vitest-sandbox', { bin: VITEST_BIN, args, env: { JEST_PG_URL: ext.server.url, E2E_OUT: out } });
  ext.keep(run.sandboxDir);
  capture(`vitest4-${name.replace(/\W+/g, '-')}`, run);
  expectSandboxRun(run, out);
  expect(await settle(run.sandboxDir)).toEqual({ files: [], processes: [] });
  expect(await ext.server.runDatabases()).toEqual([]);
  expect(await ext.server.runBackends()).toEqual([]);
}, 150_000);

test('SIGKILL of the Vitest main process: the reaper cleans up, embedded server included', async () => {
  const out = outDir();
  ext.keep(out);
  const vitest = startVitest('vitest-killed', { env: { E2E_OUT: out, E2E_SLOW_SECONDS: '30' } });
  ext.keep(vitest.sandboxDir);
  await waitFor('a slow test to start', () => fs.existsSync(path.join(out, 'started')), 60_000);
  // Vitest's workers, the reaper and the embedded postmaster are children of the main process.
  const children = childrenOf(vitest.child.pid!);
  expect(children.length).toBeGreaterThanOrEqual(3);
  process.kill(vitest.child.pid!, 'SIGKILL');
  const r = await vitest.done;
  expect(r.signal).toBe('SIGKILL');
  expect(exceptVitestTemp(await settle(r.sandboxDir, 10_000))).toEqual({ files: [], processes: [] });
  await waitFor('the workers to exit', () => alive(children).length === 0, 10_000);
}, 120_000);
