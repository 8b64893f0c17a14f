/**
 * Runs and leases. A run holds a session-level advisory lock (names.leaseKey(runId)) for as long
 * as it lives (the reaper holds it). A database is swept only when all of these hold: its name
 * starts with `<prefix>_<runId>_`, its COMMENT is our run marker for that runId, and nobody holds
 * that run's lease. Templates, the user's databases and live runs' databases are never touched.
 */
import { dropDatabase, serverVersionNum, terminateBackends, withClient, type Queryable } from '../util/admin';
import { ident, LOCK_NAMESPACE, leaseKey, parseMarker } from '../util/names';
import { lockKeyFor, TEMPLATE_LOOK_COLUMNS, templateLookOf, useLockKey, type TemplateLook } from '../schema/template';

/**
 * A run's start, in one round trip on one connection: its lease and the use of its template
 * (both shared, as acquireLease and holdTemplate take them), then a look for that template
 * (TEMPLATE_LOOK_COLUMNS). The session is named as the lease's holder.
 */
export async function leaseAndLook(c: Queryable, runId: string, template: string): Promise<TemplateLook> {
  const [a, b] = leaseKey(runId);
  const r = await c.query<{ tpl_complete: boolean | null; tpl_comment: string | null }>(
    `SELECT pg_catalog.set_config('application_name', 'jest-environment-pg lease', false), pg_catalog.pg_advisory_lock_shared($2::int, $3::int), ` +
      `pg_catalog.pg_advisory_lock_shared($4::bigint), ${TEMPLATE_LOOK_COLUMNS}`,
    [template, a, b, useLockKey(template)],
  );
  return templateLookOf(r.rows[0]);
}

export async function acquireLease(c: Queryable, runId: string): Promise<void> {
  const [a, b] = leaseKey(runId);
  // Shared: the process that starts the run holds it too until its reaper has taken it over.
  await c.query('SELECT pg_advisory_lock_shared($1::int, $2::int)', [a, b]);
}

/** Is the run's lease held by some session? (Call from a session that does not hold it.) */
export async function isLeaseHeld(c: Queryable, runId: string): Promise<boolean> {
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

/**
 * Databases on the server that carry our prefix and a run marker naming their run. With `runId`,
 * that run's only, and also those with no comment yet (a crash between CREATE and COMMENT).
 */
export async function listRunDatabases(c: Queryable, prefix: string, runId?: string): Promise<RunDatabase[]> {
  const r = await c.query<{ datname: string; comment: string | null }>(
    `SELECT datname, shobj_description(oid, 'pg_database') AS comment
       FROM pg_database
      WHERE NOT datistemplate AND left(datname, length($1)) = $1
      ORDER BY datname`,
    [runId ? `${prefix}_${runId}_` : `${prefix}_`],
  );
  const out: RunDatabase[] = [];
  for (const row of r.rows) {
    const m = parseMarker(row.comment);
    if (runId && row.comment === null) out.push({ name: row.datname, runId });
    else if (m && 'runId' in m && (!runId || m.runId === runId) && row.datname.startsWith(`${prefix}_${m.runId}_`)) out.push({ name: row.datname, runId: m.runId });
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
  return withClient(adminUrl, (c) => sweepOn(c, prefix), { applicationName: 'jest-environment-pg sweep' });
}

/** The same, on an open admin connection. */
export async function sweepOn(c: Queryable, prefix: string): Promise<SweepResult> {
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
}

/** Hold a template "in use" (shared) on a run's lease connection: the template sweep leaves it alone. */
export async function holdTemplate(c: Queryable, template: string): Promise<void> {
  await c.query('SELECT pg_advisory_lock_shared($1::bigint)', [useLockKey(template)]);
}

export interface TemplateSweepResult {
  /** Templates dropped (old, or half-built by a crashed run). */
  dropped: string[];
  /** Old templates kept because a live run uses them. */
  inUse: string[];
}

/**
 * Old templates of this prefix: keep `current` and the `keep` most recently used other complete ones;
 * drop the others unless a live run holds them (their "in use" lock) or one is being built (its
 * build lock). Only `<prefix>_tpl_<16 hex>` databases with our template marker are considered.
 * A template stamped by no run (made by a version without stamps) has no "in use" holder either:
 * it is dropped only when no other run's lease is held on the server.
 */
export async function sweepTemplates(c: Queryable, prefix: string, keep: number, current: string, ownRunId?: string): Promise<TemplateSweepResult> {
  const result: TemplateSweepResult = { dropped: [], inUse: [] };
  const pattern = new RegExp(`^${prefix}_tpl_[0-9a-f]{16}$`);
  const r = await c.query<{ datname: string; complete: boolean; comment: string | null; oid: string }>(
    `SELECT datname, datistemplate AS complete, shobj_description(oid, 'pg_database') AS comment, oid::int8::text AS oid
       FROM pg_database WHERE left(datname, length($1)) = $1`,
    [`${prefix}_tpl_`],
  );
  const ours = r.rows
    .map((row) => ({ ...row, marker: parseMarker(row.comment) }))
    .filter((row) => pattern.test(row.datname) && row.marker !== undefined && 'template' in row.marker)
    .map((row) => ({ name: row.datname, complete: row.complete, usedAt: (row.marker as { usedAt?: number }).usedAt, oid: Number(row.oid) }));
  const ranked = ours.filter((t) => t.complete && t.name !== current).sort((a, b) => (b.usedAt ?? 0) - (a.usedAt ?? 0) || b.oid - a.oid);
  const kept = new Set([current, ...ranked.slice(0, Math.max(0, keep)).map((t) => t.name)]);
  const candidates = ours.filter((t) => !kept.has(t.name));
  if (candidates.length === 0) return result;
  let otherLeases: number | undefined;
  const versionNum = await serverVersionNum(c);
  for (const t of candidates) {
    if (t.usedAt === undefined && t.complete) {
      otherLeases ??= await countOtherLeases(c, ownRunId);
      if (otherLeases > 0) {
        result.inUse.push(t.name);
        continue;
      }
    }
    const use = useLockKey(t.name);
    const build = lockKeyFor(t.name);
    if (!(await tryLock(c, use))) {
      result.inUse.push(t.name);
      continue;
    }
    try {
      if (!(await tryLock(c, build))) continue; // being built right now
      try {
        if (t.complete) await c.query(`ALTER DATABASE ${ident(t.name)} WITH IS_TEMPLATE false`);
        await dropDatabase(c, t.name, versionNum);
        result.dropped.push(t.name);
      } catch {
        // not ours to drop after all (another role owns it): leave it
      } finally {
        await c.query('SELECT pg_advisory_unlock($1::bigint)', [build]).catch(() => undefined);
      }
    } finally {
      await c.query('SELECT pg_advisory_unlock($1::bigint)', [use]).catch(() => undefined);
    }
  }
  return result;
}

async function tryLock(c: Queryable, key: string): Promise<boolean> {
  return (await c.query<{ got: boolean }>('SELECT pg_try_advisory_lock($1::bigint) AS got', [key])).rows[0].got;
}

/** Leases held on the server by runs other than `ownRunId`. */
async function countOtherLeases(c: Queryable, ownRunId: string | undefined): Promise<number> {
  const own = ownRunId ? leaseKey(ownRunId)[1] >>> 0 : -1;
  const r = await c.query<{ n: number }>(
    `SELECT count(DISTINCT objid)::int AS n FROM pg_locks
      WHERE locktype = 'advisory' AND classid::int8 = $1::int8 AND objsubid = 2 AND objid::int8 <> $2::int8 AND granted`,
    [LOCK_NAMESPACE, own],
  );
  return r.rows[0].n;
}

/** How long dropAbandonedTemplate waits for a template's build lock. */
const ABANDONED_LOCK_WAIT_MS = 2000;

/**
 * The template a run was building when its process exited in the middle (a migration module
 * calling process.exit()): dropped at that run's teardown when it is still incomplete, carries our
 * marker, and nobody is building it (its build lock, waited for briefly: the dead builder's session
 * may not have ended yet; a live build keeps it longer and is left alone). The template sweep of a
 * later run would drop it too; on a server that outlives the run, this does it now.
 */
export async function dropAbandonedTemplate(c: Queryable, name: string, versionNum: number): Promise<boolean> {
  const incomplete = async () => {
    const r = await c.query<{ comment: string | null }>(
      `SELECT shobj_description(oid, 'pg_database') AS comment FROM pg_database WHERE datname = $1 AND NOT datistemplate`,
      [name],
    );
    const m = r.rows[0] ? parseMarker(r.rows[0].comment) : undefined;
    return m !== undefined && 'template' in m;
  };
  if (!(await incomplete())) return false;
  const key = lockKeyFor(name);
  try {
    await c.query(`SET lock_timeout = '${ABANDONED_LOCK_WAIT_MS}ms'`);
    await c.query('SELECT pg_advisory_lock($1::bigint)', [key]);
  } catch (e) {
    if ((e as { code?: string }).code === '55P03') return false; // lock_not_available: being built right now
    throw e;
  } finally {
    await c.query('RESET lock_timeout');
  }
  try {
    if (!(await incomplete())) return false;
    await dropDatabase(c, name, versionNum);
    return true;
  } finally {
    await c.query('SELECT pg_advisory_unlock($1::bigint)', [key]).catch(() => undefined);
  }
}
