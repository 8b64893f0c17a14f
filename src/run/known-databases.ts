/**
 * The worker databases of a run known to exist, noted in the run's directory by the process that
 * cloned or found one: a later process of the same worker (with Vitest's isolation, one process
 * per test file) opens its sandbox without an admin connection to check. A database being rebuilt
 * is forgotten first and noted again once it is back; the teardown removes the directory.
 */
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { RunManifest } from './manifest';

export interface KnownDatabase {
  name: string;
  /** Its URL on the run's server (what the sandbox's upstream connects to). */
  url: string;
}

const dirIn = (runDir: string): string => path.join(runDir, 'databases');
const dirOf = (m: RunManifest): string => dirIn(m.runDir);

/** The database if a process of this run noted it (it exists), else undefined. */
export function knownWorkerDatabase(m: RunManifest, name: string): KnownDatabase | undefined {
  try {
    return { name, url: readFileSync(path.join(dirOf(m), name), 'utf8') };
  } catch {
    return undefined;
  }
}

/** Note that `db` exists (atomically: a reader sees the whole URL or nothing). Best effort. */
export function noteWorkerDatabase(m: RunManifest, db: KnownDatabase): void {
  noteWorkerDatabaseIn(m.runDir, db);
}

/** The same, given the run's directory. */
export function noteWorkerDatabaseIn(runDir: string, db: KnownDatabase): void {
  const dir = dirIn(runDir);
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const tmp = path.join(dir, `.${db.name}.${process.pid}.${Math.random().toString(36).slice(2)}`);
    writeFileSync(tmp, db.url, { mode: 0o600 });
    renameSync(tmp, path.join(dir, db.name));
  } catch {
    // the run dir is gone (torn down): nothing to note
  }
}

/** Forget `name` (it is about to be dropped and cloned again). */
export function forgetWorkerDatabase(m: RunManifest, name: string): void {
  rmSync(path.join(dirOf(m), name), { force: true });
}
