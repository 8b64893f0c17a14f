/**
 * The same fixtures under Jest 29 (the devDependency alias `jest29`) and Jest 30, with and without
 * the preset, and in Node's ESM mode (--experimental-vm-modules). What differs between versions
 * is the environment API: Circus events (a leak and a late query fail *their* test), docblock
 * pragmas, the shallow merge of @jest-environment-options, the options global.
 * TypeScript through ts-jest and @swc/jest is covered by orms.test.ts (kysely, typeorm: ts-jest;
 * drizzle, prisma: @swc/jest).
 */
import fs from 'node:fs';
import path from 'node:path';
import { SUMMARY, expectRun } from '../helpers/expect-run';
import { JEST29_BIN, JEST_BIN, ROOT, cleanup, runJest, settle } from '../helpers/jest-run';

const dirs: string[] = [];
afterAll(() => dirs.forEach(cleanup));

const versions = [
  ['Jest 30', JEST_BIN],
  ['Jest 29', JEST29_BIN],
] as const;

test('node_modules/.bin/jest is Jest 30: the jest29 alias (same bin name) must not take it', () => {
  // npm links the first package's bin it meets; an incremental `npm i` once left .bin/jest -> jest29.
  const bin = fs.realpathSync(path.join(ROOT, 'node_modules', '.bin', 'jest'));
  expect(bin).toBe(fs.realpathSync(JEST_BIN));
});

describe.each(versions)('%s', (_name, jestBin) => {
  test('preset: CRUD, pragmas, per-file options; a leak and a late query fail their own tests', async () => {
    const run = await runJest('jest-versions', { jestBin, args: ['--runInBand'] });
    dirs.push(run.sandboxDir);
    expect(run.output).toMatch(/● leaks a transaction\s+JESTPG_LEAKED_CONNECTION: test "leaks a transaction" ended while/);
    // Either still running at the test's end (cancelled) or, on a loaded machine, sent just after it (rejected).
    expect(run.output).toMatch(/● forgets to await a query\s+JESTPG_LATE_QUERY: (test "forgets to await a query" ended while|Late query: "SELECT pg_sleep\(5\)" arrived after test "forgets to await a query" had ended)/);
    for (const f of ['crud', 'pragma', 'options-json']) expect(run.output).toMatch(new RegExp(`PASS \\./${f}\\.test\\.js`));
    await expectRun(run, { passed: 10, failed: 2, skipped: 2, reports: true }); // skipped: leak-aborted.test.js, BLOCKED on the proxy
  });

  test('testEnvironment alone (no preset, no globalSetup), two workers', async () => {
    const run = await runJest('jest-versions', { jestBin, args: ['-c', 'jest.env-only.config.js', '--maxWorkers=2', 'crud', 'pragma'] });
    dirs.push(run.sandboxDir);
    await expectRun(run, { passed: 5, summary: false }); // no globalTeardown: the reaper tears down, silently
  });

  // BLOCKED on environment (src/environment.ts, not the proxy): without globalSetup, a file with
  // `@jest-environment-options {"pg": …}` gets Jest's shallowly merged options (the project's
  // `migrations` gone); the environment passes `undefined` project options to attachWorker, and
  // if that file's worker is the one that starts the run, the run is created without migrations:
  // every file of the run fails with `relation "users" does not exist`.
  test.skip('testEnvironment alone, a file with @jest-environment-options {"pg": …} keeps the project migrations', async () => {
    const run = await runJest('jest-versions', { jestBin, args: ['-c', 'jest.env-only.config.js', '--runInBand', 'options-json'] });
    dirs.push(run.sandboxDir);
    await expectRun(run, { passed: 3, summary: false });
  });

  test('native ESM (--experimental-vm-modules): ESM tests and an ESM migration module', async () => {
    const run = await runJest('esm', { jestBin, nodeArgs: ['--experimental-vm-modules', '--no-warnings'], args: ['--runInBand'] });
    dirs.push(run.sandboxDir);
    await expectRun(run, { passed: 6 });
  });
});

// BLOCKED on src (src/worker.ts closeWorkerInProcess / src/global-teardown.ts): in band, the
// worker's sandbox runs in Jest's main process with unref'd servers and sockets (worker.ts
// `unref: true`). globalTeardown awaits closeWorkerInProcess() → Sandbox.close() →
// Upstream.close(), which sends Terminate and waits for the socket's 'close' — on an unref'd
// socket, with an unref'd fallback timer. If nothing else holds the event loop, Node emits
// 'beforeExit' and exits while globalTeardown is pending: no summary line, no leftover report;
// the reaper then drops the databases — and since Jest sets the exit code only after
// globalTeardown returns (jest-cli readResultsAndExit), the run exits 0 even with failed tests.
// Seen in about 1 of 3 grouped e2e runs (knex, ESM, jest-versions fixtures; once exit 0 with
// "2 failed"); a debugging globalTeardown wrapper printed "beforeExit(code 0) while globalTeardown
// is still pending". Fix: hold a ref'd handle (or ref() the sockets) while closing.
test.skip('in band, globalTeardown always runs to its end and prints the summary', async () => {
  for (let i = 0; i < 5; i++) {
    const run = await runJest('drivers', { args: ['--runInBand', 'pg.test.js'] });
    dirs.push(run.sandboxDir);
    expect(run.output).toMatch(SUMMARY);
    expect(await settle(run.sandboxDir)).toEqual({ files: [], processes: [] });
  }
});
