import { cleanup, runJest, settle } from '../helpers/jest-run';

const dirs: string[] = [];
afterAll(() => dirs.forEach(cleanup));

test.each([
  ['two workers', ['--maxWorkers=2'], 9],
  ['more workers than files', ['--maxWorkers=8'], 9],
  ['one worker', ['--maxWorkers=1'], 9],
  ['in band', ['--runInBand'], 9],
  // Jest runs a single named file in band: its global setup begins the sandbox thread for it.
  ['one file named, two workers', ['--maxWorkers=2', 'a.test.js'], 3],
  // Named beside a pattern: Jest runs the two files in workers.
  ['a file named and a pattern, two workers', ['--maxWorkers=2', 'a.test.js', '--testPathPatterns=b.test.js'], 6],
])('preset with migrations, %s: tests isolated, summary printed, nothing left behind', async (_name, args, tests) => {
  const run = await runJest('basic', { args });
  dirs.push(run.sandboxDir);
  expect(run.output).toMatch(new RegExp(`Tests:\\s+${tests} passed, ${tests} total`));
  expect(run.code).toBe(0);
  expect(run.output).toMatch(/jest-environment-pg: dropped \d+ databases?, terminated 0 backends in \d+ ms/);
  expect(run.output).not.toMatch(/failed to exit gracefully|did not exit one second/);
  expect(await settle(run.sandboxDir)).toEqual({ files: [], processes: [] });
});
