/** The run a test worker belongs to, when its main process started it (the manifest it points to), and the worker's database in it. */
import { existsSync } from 'node:fs';
import { MANIFEST_ENV, readManifest, type RunManifest } from '../run/manifest';
import { workerDbName } from '../util/names';

/** The run this process belongs to, if it is already known (global setup ran, or an earlier file attached). */
export function knownManifest(): RunManifest | undefined {
  const file = process.env[MANIFEST_ENV];
  if (!file || !existsSync(file)) return undefined;
  try {
    const m = readManifest(file);
    // Only if it belongs to our runner: a variable inherited from an outer run must not be used.
    return m.mainPid === process.pid || m.mainPid === process.ppid ? m : undefined;
  } catch {
    return undefined;
  }
}

/** The worker database's name, when the run is known (it is cloned later, by setup). */
export function knownDatabase(workerId: string): string | undefined {
  const m = knownManifest();
  return m ? workerDbName(m.prefix, m.runId, workerId) : undefined;
}
