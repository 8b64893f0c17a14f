/**
 * fixtures/drivers: pg (Client, Pool, pg-cursor, pg-copy-streams) and postgres.js (default
 * prepared statements, pipelining, sql.begin, savepoints, cursors, cancel) through the sandbox,
 * with a directory of .sql migrations.
 */
import { expectRun } from '../helpers/expect-run';
import { cleanup, runJest } from '../helpers/jest-run';

const dirs: string[] = [];
afterAll(() => dirs.forEach(cleanup));

test('pg and postgres.js: every test passes, nothing is left behind', async () => {
  const run = await runJest('drivers', { args: ['--runInBand'] });
  dirs.push(run.sandboxDir);
  await expectRun(run, { passed: 21 });
});
