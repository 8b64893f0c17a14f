/**
 * Losing the upstream in Jest (issue 12): the sandbox's connection is terminated from outside
 * during a test. Said once (that test fails with JESTPG_UPSTREAM_LOST), served again at once: the
 * file's later test and the next file on the same sandbox pass; nothing is left behind.
 */
import { cleanup, runJest, settle, type JestRun } from '../helpers/jest-run';
import { capture, externalServer, type ExternalServer } from '../helpers/e2e';

let server: ExternalServer;
let run: JestRun;

beforeAll(async () => {
  server = await externalServer();
  run = await runJest('upstream-lost', { args: ['--runInBand'], env: { JEST_PG_URL: server.url }, timeoutMs: 60_000 });
  capture('upstream-lost', run);
}, 90_000);

afterAll(async () => {
  cleanup(run?.sandboxDir);
  await server?.stop();
});

test('the test during which it was lost fails with JESTPG_UPSTREAM_LOST; the later test of that file and the next file pass', async () => {
  expect(run.output).toMatch(/Tests:\s+1 failed, 2 passed, 3 total/);
  expect(run.output).toMatch(/Test Suites:\s+1 failed, 1 passed, 2 total/);
  expect(run.output).toMatch(/● loses the upstream and goes on\s+JESTPG_UPSTREAM_LOST: .*\(terminating connection due to administrator command .*during test "loses the upstream and goes on"/s);
  expect(run.output).toMatch(/PASS .*b-next\.test\.js/);
  // Said once: as the test's failure, not also as a warning.
  expect(run.output.match(/JESTPG_UPSTREAM_LOST/g)).toHaveLength(1);
  expect(await settle(run.sandboxDir, 10_000)).toEqual({ files: [], processes: [] });
  expect(await server.runDatabases()).toEqual([]);
});
