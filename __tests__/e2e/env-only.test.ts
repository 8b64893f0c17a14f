/**
 * Environment-only mode: no globalSetup/globalTeardown. The first worker that needs a database
 * starts the run (embedded server, template, reaper); the reaper tears it down after Jest exits.
 * Project-wide (`testEnvironment: <path>`) and per file (`@jest-environment` docblock).
 */
import { cleanup, runJest, settle, type JestRun } from '../helpers/jest-run';
import { capture } from '../helpers/e2e';

const dirs: string[] = [];
afterAll(() => dirs.forEach(cleanup));

/** The reaper notices Jest's exit within its poll interval, then drops, stops Postgres, removes files. */
const REAPER_MS = 10_000;

test('testEnvironment set to the package, no global setup: works, and the reaper leaves nothing behind', async () => {
  const r = await runJest('env-only', { args: ['--maxWorkers=2'], timeoutMs: 90_000 });
  dirs.push(r.sandboxDir);
  capture('env-only', r);
  expect(r.output).toMatch(/Tests:\s+6 passed, 6 total/);
  expect(r.code).toBe(0);
  expect(r.output).not.toMatch(/does not exist|JESTPG_/);
  expect(await settle(r.sandboxDir, REAPER_MS)).toEqual({ files: [], processes: [] });
}, 120_000);

describe('per-file @jest-environment docblock', () => {
  let r: JestRun;
  beforeAll(async () => {
    // In band and in name order (the fixture's sequencer): a-db starts the run.
    r = await runJest('env-docblock', { args: ['--runInBand'], timeoutMs: 90_000 });
    dirs.push(r.sandboxDir);
    capture('env-docblock', r);
  }, 120_000);

  test('files that opt in get a sandboxed database; per-file options keep the project options', () => {
    expect(r.output).toMatch(/PASS \.\/a-db\.test\.js/);
    // {"pg": {"isolation": "file"}} in a docblock: the migrations of the project still apply.
    expect(r.output).toMatch(/PASS \.\/b-file-isolation\.test\.js/);
    expect(r.output).not.toMatch(/does not exist/);
  });

  test('nothing is left once the reaper has run', async () => {
    expect(await settle(r.sandboxDir, REAPER_MS)).toEqual({ files: [], processes: [] });
  }, 30_000);

  // BLOCKED on proxy bug: src/environment.ts setup() writes DATABASE_URL/PG* (and exposeAs names)
  // into the worker's real process.env (for child processes) and teardown() only deletes them from
  // the test's copy, so the next file on the same worker, in plain `node`, inherits a URL of a
  // sandbox whose file has ended.
  test.skip('a file without the docblock, after one with it on the same worker, sees no sandbox variables', () => {
    expect(r.output).toMatch(/PASS \.\/c-plain\.test\.js/);
    expect(r.code).toBe(0);
  });
});

// BLOCKED on proxy bug: when the first file to start the run in environment-only mode has an
// `@jest-environment-options {"pg": …}` docblock, src/environment.ts (constructor: `rawProject =
// docblockHasPg ? undefined : envOpts.pg`) passes undefined to attachWorker → attachRun →
// startRun, so the template is built without the project's migrations: `relation "items" does
// not exist` in every file of the run.
test.skip('environment-only, first file with a {"pg": …} docblock: the project migrations still apply', async () => {
  const r = await runJest('env-docblock', { args: ['--runInBand', 'b-file-isolation'], timeoutMs: 90_000 });
  dirs.push(r.sandboxDir);
  expect(r.output).toMatch(/Tests:\s+2 passed, 2 total/);
  expect(r.code).toBe(0);
  expect(await settle(r.sandboxDir, REAPER_MS)).toEqual({ files: [], processes: [] });
}, 120_000);
