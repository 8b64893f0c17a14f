/** Jest globalTeardown: report leftovers, terminate, drop the run's databases, stop the embedded server. */
import { MANIFEST_ENV, printTeardown, readManifest, teardownRun } from '../run/run';
import { existsSync } from 'node:fs';
import { runProjectTeardown, type ProjectConfigLike } from './user-hooks';
import { closeWorkerInProcess } from '../sandbox/worker';

export default async function globalTeardown(globalConfig?: unknown, projectConfig?: ProjectConfigLike): Promise<void> {
  const file = process.env[MANIFEST_ENV];
  if (!file || !existsSync(file)) return; // setup failed or teardown already ran
  // The project's own (pg.globalTeardown) first, while the databases exist; ours runs whatever it does.
  const theirs = await runProjectTeardown(readManifest(file), globalConfig, projectConfig);
  // With --runInBand the sandbox lives in this process and is unref'd: while it closes, nothing
  // else may hold the event loop, and Node would exit (code 0) in the middle of this teardown,
  // leaving the databases to the reaper and printing nothing. Hold the loop until we are done.
  const keepAlive = setInterval(() => undefined, 1000);
  try {
    await closeWorkerInProcess();
    const summary = await teardownRun(readManifest(file));
    printTeardown(summary);
    // The reaper never took the lease: nothing would have cleaned up had Jest been killed.
    if (summary.reaperError) throw summary.reaperError;
  } finally {
    clearInterval(keepAlive);
  }
  if (theirs) throw theirs;
}
