/** The end of a run (globalTeardown, an interrupt, or the reaper): report, terminate, drop, stop. */
import { appendFileSync, existsSync, promises as fsp, readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { databaseOf, dropDatabase, type Queryable } from '../util/admin';
import { AdminClient } from '../proxy/admin-client';
import { isPostmasterOf, stopCluster } from '../server/cluster';
import { socketUrl } from '../server/socket-url';
import { messageOf, redactUrl } from '../util/errors';
import { dropAbandonedTemplate, listRunDatabases } from './lease';
import { stopReaper } from './reaper';
import { processRuns } from './registry';
import { atMost } from '../util/settle';
import { MANIFEST_ENV, type RunManifest, type TeardownSummary } from './manifest';
import { formatReport, keptReport, summaryLine, type Backend } from './report';
import { readyToSave, saveClusterAtTeardown } from './cached-cluster';


/** Where the workers count the idle connections they closed at the ends of files (one line per file). */
export const idleLog = (m: RunManifest): string => path.join(m.runDir, 'idle-connections');

/** Record idle connections a file left open (closed quietly; summed in the teardown's summary line). */
export function noteIdleClosed(m: RunManifest, n: number): void {
  if (n <= 0) return;
  try {
    appendFileSync(idleLog(m), `${n}\n`);
  } catch {
    // the run dir is gone (torn down): nothing to count
  }
}

function idleClosed(m: RunManifest): number {
  try {
    return readFileSync(idleLog(m), 'utf8')
      .split('\n')
      .reduce((sum, l) => sum + (Number(l) || 0), 0);
  } catch {
    return 0;
  }
}

/**
 * Report what is still connected to the run's databases, terminate it, drop the databases
 * (unless keepDatabases), stop the embedded cluster (saving it as a cache entry first when the
 * run asked for it, see cached-cluster.ts; not from the reaper of a run that had a global
 * teardown: that run was killed), remove the run dir and lock files, end the reaper. Idempotent.
 */
export async function teardownRun(m: RunManifest, opts: { fromReaper?: boolean } = {}): Promise<TeardownSummary> {
  const t0 = performance.now();
  const idle = idleClosed(m);
  let cacheSaveMs: number | undefined;
  const summary = (r: Cleared, reaperError: Error | undefined): TeardownSummary => {
    const ms = Math.round(performance.now() - t0);
    const { save: _save, ...rest } = r;
    return { ...rest, ms, cacheSaveMs, reaperError, summaryLine: summaryLine({ ...rest, ms, idle }) };
  };
  // Cache entries this process is still writing: never leave half of one behind.
  await processRuns.backgroundDone();
  // A reaper started in the background: it holds the lease by now, or it never will (the run fails).
  const reaperError = await processRuns.reaperOutcome(m.runId);
  const lease = (reaperError as { lease?: { end(): Promise<void> } } | undefined)?.lease;
  if (lease) await atMost(lease.end(), 2000);
  if (processRuns.torn.has(m.runId) || !existsSync(m.manifestPath)) {
    processRuns.torn.add(m.runId);
    return summary({ dropped: [], terminated: 0, report: '' }, reaperError);
  }
  const serverUp = !m.cluster || isPostmasterOf(m.cluster.pid, m.cluster.dataDir);
  // The reaper saves only in environment-only mode, where its teardown is the run's normal end.
  const maySave = m.cache?.saveAtEnd !== undefined && (!opts.fromReaper || m.lockFiles !== undefined);
  const cleared: Cleared = serverUp ? await clearServer(m, maySave) : { dropped: [], terminated: 0, report: '' };
  if (cleared.kept) cleared.report += (cleared.report ? '\n' : '') + keptReport(m, cleared.kept);
  else if (m.cluster) {
    if (cleared.save) {
      const ts = performance.now();
      await saveClusterAtTeardown(m).catch(() => undefined);
      cacheSaveMs = Math.round(performance.now() - ts);
    }
    // Its data goes next: no shutdown checkpoint (a saved cluster was stopped cleanly just above).
    await stopCluster(m.cluster, { immediate: true }).catch(() => undefined);
  }
  processRuns.torn.add(m.runId);
  await removeRunFiles(m, opts);
  return summary(cleared, reaperError);
}

/** What a teardown did on the server. */
interface Cleared {
  dropped: string[];
  terminated: number;
  report: string;
  kept?: string[];
  /** The cluster may be saved as a cache entry (readyToSave). */
  save?: boolean;
}

/**
 * Connect and clear the run's databases; a server that cannot be reached is reported (a later run
 * sweeps them). `maySave`: then ask whether the cluster may be saved as a cache entry.
 */
async function clearServer(m: RunManifest, maySave: boolean): Promise<Cleared> {
  let c: AdminClient;
  try {
    c = await AdminClient.connect(m.cluster ? socketUrl(m.cluster, databaseOf(m.adminUrl)) : m.adminUrl, { applicationName: 'jest-environment-pg teardown', timeoutMs: 5000 });
  } catch (e) {
    const report = `jest-environment-pg: could not connect to ${redactUrl(m.adminUrl)} to drop this run's databases (${messageOf(e)}); a later run will sweep them.`;
    return { dropped: [], terminated: 0, report };
  }
  try {
    // An embedded cluster is stopped and removed next: its databases and backends go with it,
    // unless it is to be saved (then it must hold nothing of the run).
    const cleared = await clearDatabases(c, m, !m.cluster || maySave);
    if (maySave && !cleared.kept) cleared.save = await readyToSave(c, m).catch(() => false);
    return cleared;
  } finally {
    await c.end();
  }
}

/**
 * Report the backends still connected to the run's databases, terminate them, drop the databases
 * (or keep them). `drop` false: the server is stopped next, which ends the backends and removes
 * the databases (reported as terminated and dropped).
 */
async function clearDatabases(c: Queryable, m: RunManifest, drop: boolean): Promise<Cleared> {
  const dbs = (await listRunDatabases(c, m.prefix, m.runId)).map((d) => d.name);
  const backends = dbs.length
    ? (
        await c.query<Backend>(
          `SELECT pid, datname, usename, application_name, client_addr::text AS client_addr, state, query, backend_start
             FROM pg_stat_activity WHERE datname = ANY($1) AND pid <> pg_backend_pid() AND backend_type = 'client backend'
            ORDER BY datname, pid`,
          [dbs],
        )
      ).rows
    : [];
  // Client backends only: Postgres' own processes (autovacuum workers…) are not connections
  // anyone left open, and DROP … WITH (FORCE) ends them. The sandboxes' own upstream
  // connections carry their current client's application_name: they are known by the pids
  // they recorded in the run dir.
  const own = new Set<number>();
  try {
    for (const f of readdirSync(path.join(m.runDir, 'upstreams'))) own.add(Number(f));
  } catch {
    // none recorded
  }
  const report = formatReport(backends.filter((b) => !own.has(b.pid) && !(b.application_name ?? '').startsWith('jest-environment-pg')));
  if (m.options.keepDatabases) return { dropped: [], terminated: 0, report, kept: dbs };
  if (!drop) return { dropped: dbs, terminated: backends.length, report };
  let terminated = 0;
  if (backends.length) {
    const r = await c.query<{ ok: boolean }>('SELECT pg_terminate_backend(pid) AS ok FROM unnest($1::int[]) AS pid', [backends.map((b) => b.pid)]);
    terminated = r.rows.filter((x) => x.ok).length;
  }
  const dropped: string[] = [];
  for (const name of dbs) {
    await dropDatabase(c, name, m.versionNum);
    dropped.push(name);
  }
  // The template this run's process was building when it died (it exited mid-migration):
  // on a server that outlives the run, dropped now rather than by a later run's sweep.
  if (!m.cluster && m.phase === 'template' && m.templateDb && (await dropAbandonedTemplate(c, m.templateDb, m.versionNum))) dropped.push(m.templateDb);
  return { dropped, terminated, report };
}

/** Removing the manifest (with the run dir) is what tells the reaper the run ended normally; then the lock files, the reaper. */
async function removeRunFiles(m: RunManifest, opts: { fromReaper?: boolean }): Promise<void> {
  await fsp.rm(m.runDir, { recursive: true, force: true }).catch(() => undefined);
  for (const f of m.lockFiles ?? []) await fsp.rm(f, { recursive: true, force: true }).catch(() => undefined);
  if (!opts.fromReaper) stopReaper(m.reaperPid);
  if (process.env[MANIFEST_ENV] === m.manifestPath) delete process.env[MANIFEST_ENV];
  processRuns.attached = undefined;
}
