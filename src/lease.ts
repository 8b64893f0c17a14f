/**
 * Runs and leases. A run holds a session-level advisory lock (names.leaseKey(runId)) for as long
 * as it lives (the reaper holds it). A database is swept only when all of these hold: its name
 * starts with `<prefix>_<runId>_`, its COMMENT is our run marker for that runId, and nobody holds
 * that run's lease. Templates, the user's databases and live runs' databases are never touched.
 */
import type { Client } from 'pg';
import { dropDatabase, serverVersionNum, terminateBackends, withClient } from './admin';
import { leaseKey, parseMarker } from './names';

export async function acquireLease(c: Client, runId: string): Promise<void> {
  const [a, b] = leaseKey(runId);
  // Shared: the process that starts the run holds it too until its reaper has taken it over.
  await c.query('SELECT pg_advisory_lock_shared($1::int, $2::int)', [a, b]);
}

/** Is the run's lease held by some session? (Call from a session that does not hold it.) */
export async function isLeaseHeld(c: Client, runId: string): Promise<boolean> {
  const [a, b] = leaseKey(runId);
  const r = await c.query<{ got: boolean }>('SELECT pg_try_advisory_lock($1::int, $2::int) AS got', [a, b]);
  if (!r.rows[0].got) return true;
  await c.query('SELECT pg_advisory_unlock($1::int, $2::int)', [a, b]);
  return false;
}

export interface RunDatabase {
  name: string;
  runId: string;
}

/** Databases on the server that carry our prefix and a run marker naming their run. */
export async function listRunDatabases(c: Client, prefix: string): Promise<RunDatabase[]> {
  const r = await c.query<{ datname: string; comment: string | null }>(
    `SELECT datname, shobj_description(oid, 'pg_database') AS comment
       FROM pg_database
      WHERE NOT datistemplate AND left(datname, length($1)) = $1`,
    [`${prefix}_`],
  );
  const out: RunDatabase[] = [];
  for (const row of r.rows) {
    const m = parseMarker(row.comment);
    if (m && 'runId' in m && row.datname.startsWith(`${prefix}_${m.runId}_`)) out.push({ name: row.datname, runId: m.runId });
  }
  return out;
}

export interface SweepResult {
  /** Databases dropped. */
  dropped: string[];
  /** Run ids found dead. */
  deadRuns: string[];
  /** Backends terminated on those databases. */
  terminated: number;
}

/** Drop the databases of runs whose lease is gone (crashed, SIGKILLed, timed-out runs). */
export async function sweep(adminUrl: string, prefix: string): Promise<SweepResult> {
  return withClient(
    adminUrl,
    async (c) => {
      const result: SweepResult = { dropped: [], deadRuns: [], terminated: 0 };
      const dbs = await listRunDatabases(c, prefix);
      if (dbs.length === 0) return result;
      const versionNum = await serverVersionNum(c);
      const byRun = new Map<string, string[]>();
      for (const d of dbs) byRun.set(d.runId, [...(byRun.get(d.runId) ?? []), d.name]);
      for (const [runId, names] of byRun) {
        const [a, b] = leaseKey(runId);
        const got = (await c.query<{ got: boolean }>('SELECT pg_try_advisory_lock($1::int, $2::int) AS got', [a, b])).rows[0].got;
        if (!got) continue; // live run: not ours to touch
        try {
          // Holding its lease now, so the run cannot come back while we drop.
          result.terminated += await terminateBackends(c, names);
          for (const name of names) {
            await dropDatabase(c, name, versionNum);
            result.dropped.push(name);
          }
          result.deadRuns.push(runId);
        } finally {
          await c.query('SELECT pg_advisory_unlock($1::int, $2::int)', [a, b]).catch(() => undefined);
        }
      }
      return result;
    },
    { applicationName: 'jest-environment-pg sweep' },
  );
}
