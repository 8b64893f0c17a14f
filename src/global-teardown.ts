/** Jest globalTeardown: report leftovers, terminate, drop the run's databases, stop the embedded server. */
import { MANIFEST_ENV, readManifest, teardownRun } from './run';
import { existsSync } from 'node:fs';
import { closeWorkerInProcess } from './worker';

export default async function globalTeardown(): Promise<void> {
  const file = process.env[MANIFEST_ENV];
  if (!file || !existsSync(file)) return; // setup failed or teardown already ran
  await closeWorkerInProcess();
  const summary = await teardownRun(readManifest(file));
  if (summary.report) process.stderr.write(summary.report + '\n');
  process.stderr.write(summary.summaryLine + '\n');
}
