/**
 * Jest runs a project's setupFiles before the environment's setup(): they must already see
 * DATABASE_URL/PG* (a project mapping them onto its own names there is common), and a setup file
 * that awaits a query must not wait forever. With the preset and with the environment alone,
 * on Jest 30 and 29, with several workers.
 */
import { cleanup, JEST29_BIN, JEST_BIN, runJest, type JestRun } from '../helpers/jest-run';
import { capture } from '../helpers/e2e';
import { expectRun } from '../helpers/expect-run';

const runs: JestRun[] = [];
afterAll(() => runs.forEach((r) => cleanup(r.sandboxDir)));

test.each([
  ['Jest 30, preset', JEST_BIN, ''],
  ['Jest 30, environment only', JEST_BIN, '1'],
  ['Jest 29, preset', JEST29_BIN, ''],
  ['Jest 29, environment only', JEST29_BIN, '1'],
])('%s: setupFiles see the sandbox', async (label, jestBin, noPreset) => {
  const run = await runJest('setup-files', { args: ['--maxWorkers=2'], jestBin, env: { E2E_NO_PRESET: noPreset || undefined }, timeoutMs: 90_000 });
  runs.push(run);
  capture(`setup-files ${label}`, run);
  await expectRun(run, { passed: 6, summary: !noPreset });
}, 120_000);
