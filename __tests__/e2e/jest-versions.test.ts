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
    expect(run.output).toMatch(/● a leaked transaction in the failed state › leaks a failed transaction[^\n]*\n+\s+JESTPG_LEAKED_CONNECTION/);
    await expectRun(run, { passed: 11, failed: 3, reports: true });
  });

  test('testEnvironment alone (no preset, no globalSetup), two workers', async () => {
    const run = await runJest('jest-versions', { jestBin, args: ['-c', 'jest.env-only.config.js', '--maxWorkers=2', 'crud', 'pragma'] });
    dirs.push(run.sandboxDir);
    await expectRun(run, { passed: 5, summary: false }); // no globalTeardown: the reaper tears down, silently
  });

  // Without globalSetup, a file with `@jest-environment-options {"pg": …}` cannot see the project's
  // "pg" options (Jest substitutes the file's object): the environment says so instead of
  // building a template without the project's migrations.
  test('testEnvironment alone, a file with @jest-environment-options {"pg": …}: a clear error', async () => {
    const run = await runJest('jest-versions', { jestBin, args: ['-c', 'jest.env-only.config.js', '--runInBand', 'options-json'] });
    dirs.push(run.sandboxDir);
    expect(run.output).toMatch(/Jest substitutes for the project's whole "pg" options/);
    expect(run.output).not.toMatch(/relation "users" does not exist/);
    expect(await settle(run.sandboxDir, 10_000)).toEqual({ files: [], processes: [] });
  });

  test('native ESM (--experimental-vm-modules): ESM tests and an ESM migration module', async () => {
    const run = await runJest('esm', { jestBin, nodeArgs: ['--experimental-vm-modules', '--no-warnings'], args: ['--runInBand'] });
    dirs.push(run.sandboxDir);
    await expectRun(run, { passed: 6 });
  });
});

// In band the sandbox runs in Jest's main process with unref'd sockets: global teardown and
// Sandbox.close() hold the event loop while they close, so teardown always runs to its end (and
// Jest's exit code, set after it, is right).
test('in band, globalTeardown always runs to its end and prints the summary', async () => {
  for (let i = 0; i < 3; i++) {
    const run = await runJest('drivers', { args: ['--runInBand', 'pg.test.js'] });
    dirs.push(run.sandboxDir);
    expect(run.output).toMatch(SUMMARY);
    expect(await settle(run.sandboxDir)).toEqual({ files: [], processes: [] });
  }
});
