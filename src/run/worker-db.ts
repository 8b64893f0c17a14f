/** Worker databases: cloned from the template the first time a worker needs one, by itself, under a lock. */
import { cloneDatabase } from '../schema/clone';
import { dropDatabase, withClient, withDatabase } from '../util/admin';
import { workerDbName } from '../util/names';
import { lockKeyFor } from '../schema/template';
import type { RunManifest } from './manifest';

export async function ensureWorkerDatabase(m: RunManifest, workerId: string): Promise<{ name: string; url: string; created: boolean }> {
  const name = workerDbName(m.prefix, m.runId, workerId);
  const url = withDatabase(m.adminUrl, name);
  const created = await withClient(
    m.adminUrl,
    async (c) => {
      // One clone of a name at a time (the run's start clones worker 1's ahead of it); released with the session.
      await c.query('SELECT pg_advisory_lock($1::bigint)', [lockKeyFor(`${name} clone`)]);
      const exists = await c.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
      if (exists.rowCount) return false;
      try {
        await createClone(c, m, name);
      } catch (e) {
        if ((e as { code?: string }).code === '42P04') return false; // created concurrently by a replaced worker
        throw e;
      }
      return true;
    },
    { applicationName: 'jest-environment-pg clone' },
  );
  return { name, url, created };
}

/** Terminate everything on a worker database, drop it and clone it again (a backend around the sandbox touched it). */
export async function rebuildWorkerDatabase(m: RunManifest, name: string): Promise<void> {
  if (!name.startsWith(`${m.prefix}_${m.runId}_`)) throw new Error(`refusing to rebuild ${name}: not a database of run ${m.runId}`);
  await withClient(
    m.adminUrl,
    async (c) => {
      await dropDatabase(c, name, m.versionNum);
      await createClone(c, m, name);
    },
    { applicationName: 'jest-environment-pg clone' },
  );
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

/** A true copy of the template: contents, owner, settings, privileges, comment (see clone.ts). */
async function createClone(c: import('pg').Client, m: RunManifest, name: string): Promise<void> {
  await cloneDatabase(c, m.templateDb, name, m.runId, strategyClause(m.versionNum));
}
