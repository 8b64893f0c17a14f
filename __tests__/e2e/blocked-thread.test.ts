/**
 * The sandbox runs on its own thread: a test that blocks its thread — execFileSync of a child
 * that queries, Atomics.wait while a child queries, two seconds of CPU while another connection
 * queries — is served, its writes belong to it and are rolled back, and the run ends cleanly.
 * On an embedded server (no JEST_PG_URL) and in band as well as with workers.
 */
import { cleanup, runJest, type JestRun } from '../helpers/jest-run';
import { capture } from '../helpers/e2e';
import { expectRun } from '../helpers/expect-run';

const runs: JestRun[] = [];
afterAll(() => runs.forEach((r) => cleanup(r.sandboxDir)));

test.each([['--maxWorkers=2'], ['--runInBand']])('blocked test thread (%s): every test passes, nothing left behind', async (flag) => {
  const run = await runJest('blocked-thread', { args: [flag], timeoutMs: 90_000 });
  runs.push(run);
  capture(`blocked-thread${flag}`, run);
  await expectRun(run, { passed: 5 });
}, 120_000);
