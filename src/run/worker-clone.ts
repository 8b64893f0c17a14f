/**
 * Making sure a worker database exists: cloned from the template the first time a worker needs
 * it, under a lock (one clone of a name at a time). Over any TextQuery: the owner's side runs it
 * through the PostgreSQL driver (worker-db.ts), the sandbox's own thread through the proxy's own
 * client (sandbox/thread-main.ts), so a worker clones off its test's thread without loading the
 * driver. Kept light: the sandbox's thread loads it.
 */
import { cloneDatabase, type TextQuery } from '../schema/clone';
import { literal, lockKeyFor, workerDbName } from '../util/names';
import type { RunManifest } from './manifest';

/** What a clone of a worker database needs to know of its run. */
export interface CloneSpec {
  name: string;
  template: string;
  runId: string;
  versionNum: number;
}

export function cloneSpec(m: RunManifest, workerId: string): CloneSpec {
  return { name: workerDbName(m.prefix, m.runId, workerId), template: m.templateDb, runId: m.runId, versionNum: m.versionNum };
}

/**
 * Make sure `spec.name` exists; true if this call cloned it. Holds the clone's lock for the rest
 * of the session (the caller's connection ends right after).
 */
export async function ensureCloned(q: TextQuery, spec: CloneSpec): Promise<boolean> {
  const [[, exists]] = await q(
    `SELECT pg_catalog.pg_advisory_lock(${lockKeyFor(`${spec.name} clone`)}::bigint), EXISTS (SELECT 1 FROM pg_catalog.pg_database WHERE datname = ${literal(spec.name)})`,
  );
  if (exists === 't') return false;
  try {
    await createClone(q, spec);
  } catch (e) {
    if ((e as { code?: string }).code === '42P04') return false; // created concurrently by a replaced worker
    throw e;
  }
  return true;
}

/** A true copy of the template: contents, owner, settings, privileges, comment (see schema/clone.ts). */
export function createClone(q: TextQuery, spec: CloneSpec): Promise<void> {
  return cloneDatabase(q, spec.template, spec.name, spec.runId, strategyClause(spec.versionNum));
}

/**
 * FILE_COPY on Postgres 15+: with fsync off and the data dir on tmpfs it copies files without
 * WAL-logging every page (measured faster than WAL_LOG for a 50-table template; see bench/).
 * Override with JEST_PG_CLONE_STRATEGY=wal_log|file_copy.
 */
function strategyClause(versionNum: number): string {
  if (versionNum < 150000) return '';
  const s = (process.env.JEST_PG_CLONE_STRATEGY ?? 'file_copy').toUpperCase();
  return s === 'WAL_LOG' ? ' STRATEGY WAL_LOG' : ' STRATEGY FILE_COPY';
}
