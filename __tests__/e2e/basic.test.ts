import { cleanup, runJest, settle } from '../helpers/jest-run';

const dirs: string[] = [];
afterAll(() => dirs.forEach(cleanup));

test.each([
  ['two workers', ['--maxWorkers=2']],
  ['more workers than files', ['--maxWorkers=8']],
  ['one worker', ['--maxWorkers=1']],
  ['in band', ['--runInBand']],
])('preset with migrations, %s: tests isolated, summary printed, nothing left behind', async (_name, args) => {
  const run = await runJest('basic', { args });
  dirs.push(run.sandboxDir);
  expect(run.output).toMatch(/Tests:\s+9 passed, 9 total/);
  expect(run.code).toBe(0);
  expect(run.output).toMatch(/jest-environment-pg: dropped \d+ databases?, terminated 0 backends in \d+ ms/);
  expect(run.output).not.toMatch(/failed to exit gracefully|did not exit one second/);
  expect(await settle(run.sandboxDir)).toEqual({ files: [], processes: [] });
});
