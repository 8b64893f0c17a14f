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

  // setup() writes DATABASE_URL/PG* into the worker's real process.env (for child processes);
  // teardown() puts the previous values back.
  test('a file without the docblock, after one with it on the same worker, sees no sandbox variables', () => {
    expect(r.output).toMatch(/PASS \.\/c-plain\.test\.js/);
    expect(r.code).toBe(0);
  });
});

// Without global setup, a file whose docblock carries {"pg": …} cannot see the project's "pg"
// options (Jest substitutes the file's object for them): rather than build a template without
// the project's migrations, the environment stops with an error saying what to use instead.
test('environment-only, a file with a {"pg": …} docblock: a clear error, not a run without migrations', async () => {
  const r = await runJest('env-docblock', { args: ['--runInBand', 'b-file-isolation'], timeoutMs: 90_000 });
  dirs.push(r.sandboxDir);
  expect(r.output).toMatch(/JESTPG_OPTION_TYPE|Jest substitutes for the project's whole "pg" options/);
  expect(r.output).toMatch(/Use the preset .* or per-key pragmas such as @pg-isolation file/s);
  expect(r.output).not.toMatch(/relation "items" does not exist/);
  expect(r.code).not.toBe(0);
  expect(await settle(r.sandboxDir, REAPER_MS)).toEqual({ files: [], processes: [] });
}, 120_000);
