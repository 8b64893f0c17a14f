/**
 * Problem 2: work that outlives its test. An HTTP server started in beforeAll answers a request a
 * test did not wait for; an un-awaited pool.query; a checked-out client left inside a transaction.
 * The test that started the work fails (or warns, with lateQueries: 'warn') with an error naming
 * it; the next test passes and never sees the late write; a test that awaits its work is quiet.
 */
import fs from 'node:fs';
import path from 'node:path';
import { cleanup, runJest, settle, type JestRun } from '../helpers/jest-run';
import { capture, externalServer, outDir, type ExternalServer } from '../helpers/e2e';

interface AssertionResult {
  title: string;
  status: 'passed' | 'failed' | 'pending';
  failureMessages: string[];
}
interface Results {
  testResults: { name: string; assertionResults: AssertionResult[] }[];
}

let server: ExternalServer;
let run: JestRun;
let results: Results;
const dirs: string[] = [];

beforeAll(async () => {
  server = await externalServer();
  const out = outDir();
  dirs.push(out);
  const json = path.join(out, 'results.json');
  run = await runJest('late-work', { args: ['--maxWorkers=2', '--json', `--outputFile=${json}`], env: { JEST_PG_URL: server.url }, timeoutMs: 60_000 });
  dirs.push(run.sandboxDir);
  capture('late-work', run);
  results = JSON.parse(fs.readFileSync(json, 'utf8')) as Results;
}, 90_000);

afterAll(async () => {
  dirs.forEach(cleanup);
  await server?.stop();
});

function test_(file: string, title: string): AssertionResult {
  const f = results.testResults.find((t) => t.name.endsWith(`/late-work/${file}`));
  if (!f) throw new Error(`no results for ${file}`);
  const a = f.assertionResults.find((x) => x.title === title);
  if (!a) throw new Error(`no test "${title}" in ${file}`);
  return a;
}

test('the run fails only because of the tests that left work behind, and tears down cleanly', () => {
  expect(run.code).toBe(1);
  expect(run.output).toMatch(/Tests:\s+3 failed, 6 passed, 9 total/);
  expect(run.output).toMatch(/jest-environment-pg: dropped \d+ databases?, terminated 0 backends in \d+ ms/);
  expect(run.output).not.toMatch(/being accessed by other users|does not exist|JESTPG_UPSTREAM_LOST|JESTPG_LOCK_WAIT|deadlock/);
});

describe('an HTTP server started in beforeAll (lateQueries: "error", the default)', () => {
  test('a test that fires a request and does not wait fails with JESTPG_LATE_QUERY naming it', () => {
    const t = test_('server.test.js', 'fires a request and does not wait for it');
    expect(t.status).toBe('failed');
    expect(t.failureMessages.join('\n')).toMatch(
      /JESTPG_LATE_QUERY: .*test "fires a request and does not wait for it".*(was still running its query; it was cancelled after 100 ms \(graceMs\)|had ended; it ran in a savepoint of its own that was rolled back)/,
    );
    expect(t.failureMessages.join('\n')).toMatch(/api-server .*INSERT INTO items \(name\) SELECT \$1 FROM pg_sleep\(0\.3\)|"INSERT INTO items \(name\) SELECT \$1 FROM pg_sleep\(0\.3\)".*api-server/s);
  });

  test('the next test passes and never sees the late write', () => {
    expect(test_('server.test.js', 'the next test passes and never sees the late write').status).toBe('passed');
  });

  test('a test that awaits its request passes without any warning', () => {
    expect(test_('server.test.js', 'a test that awaits its request passes without warning').status).toBe('passed');
    expect(run.output.split('\n').filter((l) => /JESTPG_|jest-environment-pg warning/.test(l) && l.includes('awaits its request'))).toEqual([]);
  });

  test('an un-awaited pool.query fails its test, and the test after it does not see the write', () => {
    const t = test_('server.test.js', 'an un-awaited pool.query');
    expect(t.status).toBe('failed');
    expect(t.failureMessages.join('\n')).toMatch(/JESTPG_LATE_QUERY: .*test "an un-awaited pool\.query"/);
    expect(test_('server.test.js', 'the test after it does not see that write either').status).toBe('passed');
  });
});

test('with lateQueries: "warn" the test passes, the warning names it, and the next test is still clean', () => {
  expect(test_('server-warn.test.js', 'fires a request and does not wait for it (lateQueries: warn)').status).toBe('passed');
  expect(test_('server-warn.test.js', 'the next test still never sees the late write').status).toBe('passed');
  expect(run.output).toMatch(
    /jest-environment-pg warning: JESTPG_LATE_QUERY: .*test "fires a request and does not wait for it \(lateQueries: warn\)"/,
  );
});

test('a checked-out client left inside a transaction fails that test only with JESTPG_LEAKED_CONNECTION', () => {
  const t = test_('leaked-client.test.js', 'checks out a client, begins a transaction and never releases it');
  expect(t.status).toBe('failed');
  expect(t.failureMessages.join('\n')).toMatch(
    /JESTPG_LEAKED_CONNECTION: test "checks out a client, begins a transaction and never releases it" ended while connection checkout-service \(#\d+, .*inside a transaction, last statement "INSERT INTO items \(name\) VALUES \('half-done order'\)"\) was still inside a transaction; it was rolled back/,
  );
  expect(test_('leaked-client.test.js', 'the next test is not blocked and does not see the half-done work').status).toBe('passed');
  // The pool is never ended: its connections are closed and listed when the file ends.
  expect(run.output).toMatch(/connections? (was|were) still open when \S*leaked-client\.test\.js ended; closed them:\n\s+- connection checkout-service/);
});

test('nothing is left: no files, no processes, no databases, no backends', async () => {
  expect(await settle(run.sandboxDir)).toEqual({ files: [], processes: [] });
  expect(await server.runDatabases()).toEqual([]);
  expect(await server.runBackends()).toEqual([]);
});
