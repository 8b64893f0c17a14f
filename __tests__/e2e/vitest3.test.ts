/**
 * Vitest 3 (the `vitest3` devDependency, npm:vitest@3) on fixtures/vitest-sandbox through the plugin of
 * jest-environment-pg/vitest: the same guarantees as under Jest, on the `forks` pool (Vitest's
 * default, a process per file) and the `threads` pool,
 * each with two workers (a database each, keyed by VITEST_POOL_ID); nothing left on the server.
 */
import { settle } from '../helpers/jest-run';
import { capture, outDir, useExternalServer } from '../helpers/e2e';
import { runVitest, VITEST3_BIN } from '../helpers/vitest-run';
import { expectSandboxRun } from '../helpers/vitest-sandbox';

const ext = useExternalServer();

test.each([
  ['forks', ['--pool=forks']],
  ['threads', ['--pool=threads']],
])('Vitest 3, %s: per-test savepoints, retries, test.each, hooks, concurrency, late work, leaks; nothing left', async (name, args) => {
  const out = outDir();
  ext.keep(out);
  const run = await runVitest('vitest-sandbox', { bin: VITEST3_BIN, args, env: { JEST_PG_URL: ext.server.url, E2E_OUT: out } });
  ext.keep(run.sandboxDir);
  capture(`vitest3-${name.replace(/\W+/g, '-')}`, run);
  expectSandboxRun(run, out);
  expect(await settle(run.sandboxDir)).toEqual({ files: [], processes: [] });
  expect(await ext.server.runDatabases()).toEqual([]);
  expect(await ext.server.runBackends()).toEqual([]);
}, 150_000);
