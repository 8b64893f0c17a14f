/** The end of a run (globalTeardown, an interrupt, or the reaper): report, terminate, drop, stop. */
import { appendFileSync, existsSync, promises as fsp, readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { connect, dropDatabase, withDatabase } from '../util/admin';
import { isPostmasterOf, stopCluster } from '../server/cluster';
import { messageOf, redactUrl } from '../util/errors';
import { dropAbandonedTemplate } from './lease';
import { parseMarker } from '../util/names';
import { stopReaper } from './reaper';
import { processRuns } from './registry';
import { atMost } from '../util/settle';
import { MANIFEST_ENV, type RunManifest, type TeardownSummary } from './manifest';
import { formatReport, type Backend } from './report';


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
 * (unless keepDatabases), stop the embedded cluster, remove the run dir and lock files, end the
 * reaper. Idempotent.
 */
export async function teardownRun(m: RunManifest, opts: { fromReaper?: boolean } = {}): Promise<TeardownSummary> {
  const t0 = performance.now();
  const idle = idleClosed(m);
  const summary = (dropped: string[], terminated: number, report: string, kept?: string[]): TeardownSummary => {
    const ms = Math.round(performance.now() - t0);
    const keptText = kept?.length ? `, kept ${kept.length} (keepDatabases)` : '';
    const idleText = idle ? `; closed ${idle} idle connection${idle === 1 ? '' : 's'} left open at the end of test files` : '';
    return {
      dropped,
      terminated,
      ms,
      report,
      kept,
      summaryLine: `jest-environment-pg: dropped ${dropped.length} database${dropped.length === 1 ? '' : 's'}${keptText}, terminated ${terminated} backend${terminated === 1 ? '' : 's'} in ${ms} ms${idleText}`,
    };
  };
  // Cache entries this process is still writing: never leave a temp file behind.
  await processRuns.backgroundDone();
  // A reaper started in the background: it holds the lease by now, or it never will (the run fails).
  const reaperError = await processRuns.reaperOutcome(m.runId);
  const lease = (reaperError as { lease?: import('pg').Client } | undefined)?.lease;
  if (lease) await atMost(lease.end(), 2000);
  if (processRuns.torn.has(m.runId) || !existsSync(m.manifestPath)) {
    processRuns.torn.add(m.runId);
    return { ...summary([], 0, ''), reaperError };
  }
  const dropped: string[] = [];
  let terminated = 0;
  let report = '';
  let kept: string[] | undefined;
  const serverUp = !m.cluster || isPostmasterOf(m.cluster.pid, m.cluster.dataDir);
  if (serverUp) {
    let c: import('pg').Client | undefined;
    try {
      c = await connect(m.adminUrl, { applicationName: 'jest-environment-pg teardown', timeoutMs: 5000 });
    } catch (e) {
      report = `jest-environment-pg: could not connect to ${redactUrl(m.adminUrl)} to drop this run's databases (${messageOf(e)}); a later run will sweep them.`;
    }
    if (c) {
      try {
        const dbs = await runDatabases(c, m);
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
        const foreign = backends.filter((b) => !own.has(b.pid) && !(b.application_name ?? '').startsWith('jest-environment-pg'));
        report = formatReport(foreign);
        if (m.options.keepDatabases) {
          kept = dbs;
        } else {
          if (backends.length) {
            const r = await c.query<{ ok: boolean }>('SELECT pg_terminate_backend(pid) AS ok FROM unnest($1::int[]) AS pid', [backends.map((b) => b.pid)]);
            terminated = r.rows.filter((x) => x.ok).length;
          }
          for (const name of dbs) {
            await dropDatabase(c, name, m.versionNum);
            dropped.push(name);
          }
          // The template this run's process was building when it died (it exited mid-migration):
          // on a server that outlives the run, dropped now rather than by a later run's sweep.
          if (!m.cluster && m.phase === 'template' && m.templateDb && (await dropAbandonedTemplate(c, m.templateDb, m.versionNum))) dropped.push(m.templateDb);
        }
      } finally {
        await c.end().catch(() => undefined);
      }
    }
  }
  if (kept) {
    const where = m.cluster
      ? `The embedded server keeps running at ${m.cluster.url} (pid ${m.cluster.pid}); stop it with: kill ${m.cluster.pid} && rm -rf ${m.cluster.baseDir}`
      : `on ${redactUrl(m.adminUrl)}`;
    report +=
      (report ? '\n' : '') +
      `jest-environment-pg: keepDatabases is on, so these databases were kept:\n` +
      kept.map((d) => `  ${d}  ${redactUrl(withDatabase(m.adminUrl, d))}`).join('\n') +
      `\n${where}`;
  } else if (m.cluster) {
    await stopCluster(m.cluster).catch(() => undefined);
  }
  processRuns.torn.add(m.runId);
  // Removing the manifest is what tells the reaper the run ended normally.
  await fsp.rm(m.runDir, { recursive: true, force: true }).catch(() => undefined);
  for (const f of m.lockFiles ?? []) await fsp.rm(f, { recursive: true, force: true }).catch(() => undefined);
  if (!opts.fromReaper) stopReaper(m.reaperPid);
  if (process.env[MANIFEST_ENV] === m.manifestPath) delete process.env[MANIFEST_ENV];
  processRuns.attached = undefined;
  return { ...summary(dropped, terminated, report, kept), reaperError };
}

/** This run's databases: `<prefix>_<runId>_*` with our marker (or no comment yet: a crash between CREATE and COMMENT). */
async function runDatabases(c: import('pg').Client, m: RunManifest): Promise<string[]> {
  const pfx = `${m.prefix}_${m.runId}_`;
  const r = await c.query<{ datname: string; comment: string | null }>(
    `SELECT datname, shobj_description(oid, 'pg_database') AS comment FROM pg_database
      WHERE NOT datistemplate AND left(datname, length($1)) = $1 ORDER BY datname`,
    [pfx],
  );
  return r.rows
    .filter((row) => {
      const mk = parseMarker(row.comment);
      return row.comment === null || (mk !== undefined && 'runId' in mk && mk.runId === m.runId);
    })
    .map((row) => row.datname);
}
