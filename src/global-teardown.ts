/** Jest globalTeardown: report leftovers, terminate, drop the run's databases, stop the embedded server. */
import { MANIFEST_ENV, readManifest, teardownRun } from './run';
import { existsSync } from 'node:fs';
import { closeWorkerInProcess } from './worker';

export default async function globalTeardown(): Promise<void> {
  const file = process.env[MANIFEST_ENV];
  if (!file || !existsSync(file)) return; // setup failed or teardown already ran
  // With --runInBand the sandbox lives in this process and is unref'd: while it closes, nothing
  // else may hold the event loop, and Node would exit (code 0) in the middle of this teardown,
  // leaving the databases to the reaper and printing nothing. Hold the loop until we are done.
  const keepAlive = setInterval(() => undefined, 1000);
  try {
    await closeWorkerInProcess();
    const summary = await teardownRun(readManifest(file));
    if (summary.report) process.stderr.write(summary.report + '\n');
    process.stderr.write(summary.summaryLine + '\n');
  } finally {
    clearInterval(keepAlive);
  }
}
