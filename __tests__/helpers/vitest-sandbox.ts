/**
 * What every run of fixtures/vitest-sandbox must show, whatever the Vitest version and pool:
 * isolation per test and per file, retries and test.each cases each on a clean savepoint,
 * describe hooks in the file's scope, concurrent tests sharing a scope, late work and leaks
 * failing the test that caused them (with the report text of the Jest environment), a hanging
 * child process's connection closed and listed at the end of its file, and the summary line.
 */
import fs from 'node:fs';
import path from 'node:path';
import { alive } from './e2e';
import { testResult, type VitestRun } from './vitest-run';

export function expectSandboxRun(run: VitestRun, out: string): void {
  const t = (file: string, title: string) => testResult(run, file, title);
  const passed = (file: string, title: string) => expect([title, t(file, title).status]).toEqual([title, 'passed']);

  // The child of hanging.test.js never exits by itself: killed here, after its connection was closed.
  const pidFile = path.join(out, 'child.pid');
  if (fs.existsSync(pidFile)) {
    const pid = Number(fs.readFileSync(pidFile, 'utf8'));
    if (alive([pid]).length) process.kill(pid, 'SIGKILL');
  }

  expect(run.code).toBe(1); // the three tests of late-work.test.js that leave work behind
  expect(run.output).toMatch(/Tests\s+3 failed \| 23 passed \(26\)/);
  expect(run.output).not.toMatch(/being accessed by other users|does not exist|JESTPG_UPSTREAM_LOST|JESTPG_FOREIGN_BACKENDS|JESTPG_LOCK_WAIT|deadlock|Unhandled/);
  expect(run.output).toMatch(/jest-environment-pg: dropped 2 databases, terminated 0 backends in \d+ ms/);

  for (const f of ['isolation-a.test.js', 'isolation-b.test.js']) {
    for (const title of ['inserts a row that no other test or file sees', 'starts from the file state again, and ids do not depend on other tests', 'a transaction through a checked-out client']) passed(f, title);
  }

  // Retries: each attempt on a fresh savepoint; a leak fails its attempt (and only it).
  const retried = t('features.test.js', 'a retried test starts each attempt from the file state');
  expect(retried.status).toBe('passed');
  expect(retried.failureMessages.join('\n')).toMatch(/attempt 1 fails on purpose[\s\S]*attempt 2 fails on purpose/);
  passed('features.test.js', 'a leak fails its attempt, and the retry passes');
  for (const c of ['first', 'second', 'third']) passed('features.test.js', `each case starts from the file state (${c})`);
  passed('features.test.js', 'sees its beforeAll row and its own beforeEach row');
  passed('features.test.js', 'the previous test and its beforeEach row are gone');
  for (const c of ['one', 'two', 'three']) passed('features.test.js', `concurrent ${c}`);
  passed('features.test.js', 'after the concurrent group, its rows are gone; the file scope keeps the describe beforeAll row');

  // Late work and leaks fail the test that caused them, with the Jest environment's text.
  const fired = t('late-work.test.js', 'fires a request and does not wait for it');
  expect(fired.status).toBe('failed');
  expect(fired.failureMessages.join('\n')).toMatch(
    /JESTPG_LATE_QUERY: test "fires a request and does not wait for it" ended while connection api-server .*last statement "INSERT INTO items \(name\) SELECT \$1 FROM pg_sleep\(\$2\)".*(was still running its query; it was cancelled after 100 ms \(graceMs\)|had ended; it ran in a savepoint of its own that was rolled back)/s,
  );
  passed('late-work.test.js', 'the next test passes and never sees the late write');
  passed('late-work.test.js', 'a test that awaits its request passes without warning');
  const unawaited = t('late-work.test.js', 'an un-awaited pool.query');
  expect(unawaited.status).toBe('failed');
  expect(unawaited.failureMessages.join('\n')).toMatch(/JESTPG_LATE_QUERY: .*test "an un-awaited pool\.query"/);
  passed('late-work.test.js', 'the test after it does not see that write either');
  const leaked = t('late-work.test.js', 'checks out a client, begins a transaction and never releases it');
  expect(leaked.status).toBe('failed');
  expect(leaked.failureMessages.join('\n')).toMatch(
    /JESTPG_LEAKED_CONNECTION: test "checks out a client, begins a transaction and never releases it" ended while connection checkout-service \(#\d+, .*inside a transaction, last statement "INSERT INTO items \(name\) VALUES \('half-done order'\)"\) was still inside a transaction; it was rolled back/,
  );
  passed('late-work.test.js', 'the next test is not blocked and does not see the half-done work');
  expect(run.output).toMatch(/connections? (was|were) still open when \S*late-work\.test\.js ended; closed them:\n\s+- connection checkout-service/);

  // A child process that never lets go: closed and listed when its file ends; its insert rolled back.
  passed('hanging.test.js', 'starts a process that connects and never exits');
  passed('hanging.test.js', "the next test does not see the child's insert");
  expect(run.output).toMatch(
    /1 connection was still open when \S*hanging\.test\.js ended; closed them:\n\s+- connection report-worker \(#\d+, opened in test "starts a process that connects and never exits" at [\d:.]+, last statement "INSERT INTO items \(name\) VALUES \('from child'\) RETURNING id"\)/,
  );
}
