/**
 * Problem 1: connections that do not let go. A child process, a worker thread and a module-scope
 * pool keep connections open past the end of their file; a "replica" URL either goes through the
 * sandbox (exposeAs) or around it. Every run must end with a report naming each connection's
 * origin, a clean teardown (no hang, no "being accessed by other users") and an empty server.
 */
import fs from 'node:fs';
import path from 'node:path';
import { cleanup, runJest, settle, type JestRun } from '../helpers/jest-run';
import { alive, capture, externalServer, outDir, type ExternalServer } from '../helpers/e2e';

let server: ExternalServer;
const dirs: string[] = [];
const pids: number[] = [];

beforeAll(async () => {
  server = await externalServer();
}, 60_000);

afterAll(async () => {
  for (const p of alive(pids)) process.kill(p, 'SIGKILL');
  dirs.forEach(cleanup);
  await server?.stop();
});

async function run(fixture: string, args: string[], env: Record<string, string> = {}): Promise<JestRun> {
  const r = await runJest(fixture, { args, env: { JEST_PG_URL: server.url, ...env }, timeoutMs: 60_000 });
  dirs.push(r.sandboxDir);
  return r;
}

async function expectNothingLeft(r: JestRun): Promise<void> {
  expect(await settle(r.sandboxDir)).toEqual({ files: [], processes: [] });
  expect(await server.runDatabases()).toEqual([]);
  expect(await server.runBackends()).toEqual([]);
}

function expectCleanTeardown(r: JestRun): void {
  expect(r.output).not.toMatch(/being accessed by other users|does not exist|JESTPG_UPSTREAM_LOST/);
  expect(r.output).toMatch(/jest-environment-pg: dropped \d+ databases?, terminated 0 backends in \d+ ms/);
}

test('a child process, a worker thread and a module-scope pool that never let go: closed and listed per file', async () => {
  const out = outDir();
  dirs.push(out);
  const r = await run('hanging-connections', ['--maxWorkers=2'], { E2E_OUT: out });
  capture('hanging-connections', r);
  // Teardown never waits for them: the run ends by itself (the harness kills a hung one; the
  // fixture's own worker thread is the test's leak, which Jest force-exits as it always does).
  expect(r.signal).toBeNull();
  expect(r.output).toMatch(/Tests:\s+6 passed, 6 total/);
  expect(r.code).toBe(0);
  expectCleanTeardown(r);

  // One warning per file, naming application_name, the test the connection was opened in, its last statement.
  expect(r.output).toMatch(
    /1 connection was still open when \S*fixtures\/hanging-connections\/child\.test\.js ended; closed them:\n\s+- connection report-worker \(#\d+, opened in test "starts a process that connects and never exits" at [\d:.]+, last statement "INSERT INTO items \(name\) VALUES \('from child'\) RETURNING id"\)/,
  );
  expect(r.output).toMatch(
    /1 connection was still open when \S*thread\.test\.js ended; closed them:\n\s+- connection thread-pool \(#\d+, opened in test "starts a worker thread that keeps its pool open" at [\d:.]+, last statement "INSERT INTO items \(name\) VALUES \('from thread'\) RETURNING id"\)/,
  );
  // A module-scope pool that served several tests and sits idle at the end is an ORM-style pool
  // that lives as long as the file: closed quietly and counted in the summary line, not listed.
  expect(r.output).not.toMatch(/still open when \S*module-pool\.test\.js ended/);
  expect(r.output).toMatch(/terminated 0 backends in \d+ ms; closed 1 idle connection left open at the end of test files/);
  expect(r.output).toMatch(/Fix: end pools and clients in afterAll/);
  // Idle pool connections at the end of a test are normal: no per-test report for them.
  expect(r.output).not.toMatch(/JESTPG_LEAKED_CONNECTION|JESTPG_LATE_QUERY|jest-environment-pg warning/);

  // The child never exits by itself, but its connection was closed with a clear error.
  const childPid = Number(fs.readFileSync(path.join(out, 'child.pid'), 'utf8'));
  pids.push(childPid);
  const log = fs.readFileSync(path.join(out, 'child.log'), 'utf8');
  expect(log).toMatch(/^error: JESTPG_FILE_ENDED: The test file \S+child\.test\.js ended, so jest-environment-pg closed this connection/m);
  expect(alive([childPid])).toEqual([childPid]);
  process.kill(childPid, 'SIGKILL');

  await expectNothingLeft(r);
});

describe('a replica URL', () => {
  test('listed in exposeAs it goes through the sandbox; around it, the backend is reported, terminated and the database rebuilt', async () => {
    const r = await run('replica-url', ['--runInBand'], { E2E_REPLICA_ERROR_LISTENER: '1' });
    capture('replica-url', r);
    expect(r.output).toMatch(/PASS \.\/1-exposed\.test\.js/);
    expect(r.output).toMatch(/PASS \.\/2-direct\.test\.js/);
    // The next file on the same worker does not see the write made around the sandbox.
    expect(r.output).toMatch(/PASS \.\/3-after\.test\.js/);
    expect(r.output).toMatch(/Tests:\s+5 passed, 5 total/);
    expect(r.code).toBe(0);
    expectCleanTeardown(r);
    expect(r.output).toMatch(
      /JESTPG_FOREIGN_BACKENDS: 1 backend on the worker database did not come through the sandbox \(their writes are not rolled back\); terminated them and rebuilt the database:\n\s+- pid \d+, application_name "app-replica", client 127\.0\.0\.1, state idle, last query "SELECT count\(\*\)::int AS n FROM items WHERE name = 'around the sandbox'"/,
    );
    expect(r.output).toMatch(/list it in the "exposeAs" option/);
    // Only the direct file has a foreign backend: the exposed replica went through the sandbox.
    expect(r.output.match(/JESTPG_FOREIGN_BACKENDS/g)).toHaveLength(1);
    await expectNothingLeft(r);
  });

  // Terminating the foreign backend makes the replica pool (no 'error' listener, as in most
  // apps) emit 57P01: the end-of-file guard swallows exactly that while it closes and rebuilds.
  test('a replica pool without an error listener does not crash Jest when its backend is terminated', async () => {
    const r = await run('replica-url', ['--runInBand']);
    expect(r.output).not.toMatch(/Unhandled error|terminating connection due to administrator command/);
    expect(r.output).toMatch(/Tests:\s+5 passed, 5 total/);
    expect(r.code).toBe(0);
    expectCleanTeardown(r);
    await expectNothingLeft(r);
  });
});
