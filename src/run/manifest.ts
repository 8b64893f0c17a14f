/** The run's manifest: what every process of a run (main, workers, reaper) reads to find it. */
import { readFileSync } from 'node:fs';
import type { ClusterInfo } from '../server/cluster';
import type { PgOptions } from '../util/options';
import { writeJsonAtomic } from './files';

export interface RunManifest {
  version: 1;
  runId: string;
  /** The Jest main process the run belongs to (the reaper watches it). */
  mainPid: number;
  /** Its start token (Linux), against pid reuse. */
  mainStart?: string;
  /** os.hostname() of the machine that started the run (pids mean nothing elsewhere). */
  host?: string;
  prefix: string;
  adminUrl: string;
  templateDb: string;
  versionNum: number;
  runDir: string;
  manifestPath: string;
  cluster?: ClusterInfo;
  reaperPid?: number;
  options: PgOptions;
  /** Random per-run password for the sandbox proxy. */
  proxySecret: string;
  /** Jest's rootDir (relative migration paths are resolved against it). */
  rootDir: string;
  /** Environment-only mode: the lock files the workers coordinated with (removed at teardown). */
  lockFiles?: string[];
  /** ms spent in startRun, by step. */
  timings?: Record<string, number>;
  /** How the embedded cluster was made, with respect to the cache (undefined for an external server). */
  cache?: RunCacheInfo;
  /**
   * "setup": the embedded cluster runs but the run is not ready (its template is being built and
   * cached). The reaper takes no lease yet but cleans up if the main process dies.
   * "template": the lease is taken and the template (`templateDb`) is being looked for or built;
   * a teardown now (the main process died) also drops that template if it was left half-built.
   */
  phase?: 'setup' | 'template';
  /** What the start-of-run sweep removed: databases of runs that died without a teardown. */
  swept?: { dropped: string[]; deadRuns: string[]; terminated: number; templates?: string[] };
}

export interface RunCacheInfo {
  /**
   * warm: the cluster was restored with its template built (no initdb, no migrations);
   * base: initdb's output was restored, the template built, the result saved at the teardown;
   * cold: initdb ran, the template was built, the result saved at the teardown; off: no cache.
   */
  status: 'warm' | 'base' | 'cold' | 'off';
  dir?: string;
  /** The entry restored (warm) or written (base, cold). */
  entry?: string;
  /**
   * base, cold: the cluster is saved as `entry` by the run's teardown (not by a reaper's), once
   * the run's own databases are dropped; this is what the pack's header records.
   */
  saveAtEnd?: { key: string; version: string };
  /** This run wrote `entry` (set by its teardown, on the manifest it was given). */
  saved?: boolean;
  /** Why the cache is off, an entry was ignored or not saved. */
  note?: string;
  /** Entries found damaged or unusable and deleted (the run went on without them), as sentences: printed at start. */
  discarded?: string[];
}

export interface TeardownSummary {
  dropped: string[];
  terminated: number;
  ms: number;
  /** Human-readable list of what was still connected (empty when nothing was). */
  report: string;
  /** "jest-environment-pg: dropped 2 databases, terminated 0 backends in 41 ms" */
  summaryLine: string;
  /** keepDatabases: what was kept. */
  kept?: string[];
  /** ms of `ms` spent saving the cluster as a cache entry (cache.saveAtEnd). */
  cacheSaveMs?: number;
  /** The run's reaper, started in the background, never took the lease (JESTPG_REAPER_FAILED): the run fails. */
  reaperError?: Error;
}

export interface RunContext {
  /** Jest's rootDir; default process.cwd(). */
  rootDir?: string;
  /** Internal: lock files to remove at teardown. */
  lockFiles?: string[];
  /**
   * Return once the run is ready without waiting for the reaper's node process to boot: this
   * process holds the lease until the reaper does, and teardownRun waits for the reaper's outcome
   * (a reaper that never took the lease fails the run there, JESTPG_REAPER_FAILED). For a caller
   * whose process outlives the tests and calls teardownRun (Jest's global setup); the default waits.
   */
  reaperInBackground?: boolean;
}

export const MANIFEST_ENV = 'JEST_PG_MANIFEST';

export function writeManifest(m: RunManifest): void {
  writeJsonAtomic(m.manifestPath, m, true);
}

export function readManifest(file: string): RunManifest {
  const m = JSON.parse(readFileSync(file, 'utf8')) as RunManifest;
  if (m.version !== 1 || !m.runId) throw new Error(`not a jest-environment-pg manifest: ${file}`);
  return m;
}
