/**
 * A run's start: options → server (embedded through the cache, or external) → lease → template,
 * sweep and reaper → manifest. startRun (globalSetup, or the first worker in environment-only mode).
 */
import { randomBytes } from 'node:crypto';
import { existsSync, promises as fsp, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { checkCreateDb, connect, serverVersionNum, withClient } from '../util/admin';
import { findBinaries } from '../server/binaries';
import { discard, resolveCacheDir } from '../server/cache';
import { isPostmasterOf, startCluster, stopCluster, type ClusterInfo } from '../server/cluster';
import { acquireLease, holdTemplate, sweep, sweepTemplates } from './lease';
import { newRunId } from '../util/names';
import { validate } from '../util/options';
import { isAlive, startToken } from '../util/proc';
import { startReaper, stopReaper } from './reaper';
import { processRuns } from './registry';
import { sweepStaleLocal } from './stale';
import { atMost, guardSetup, raceAbort, step, stepTimeoutMs, type SetupGuard } from '../util/settle';
import { ensureTemplateDetailed, templateNameFor } from '../schema/template';
import { MANIFEST_ENV, writeManifest, type RunCacheInfo, type RunContext, type RunManifest } from './manifest';
import { startCachedCluster } from './cached-cluster';
import { teardownRun } from './teardown';
import { ensureWorkerDatabase } from './worker-db';

/**
 * Set up a run: server, sweep, template, run dir + manifest, reaper. Sets process.env.JEST_PG_MANIFEST.
 * Always settles (see settle.ts): every step is bounded, the event loop is held open until it is
 * done, and on any failure nothing of the run is left (cluster stopped, its dir and the run dir
 * removed, no reaper) before the error — with its JESTPG_ code — is thrown.
 */
export function startRun(projectOptions: unknown, mainPid: number, ctx: RunContext = {}): Promise<RunManifest> {
  return guardSetup('setting up the PostgreSQL run', (guard) => startRunGuarded(projectOptions, mainPid, ctx, guard));
}

async function startRunGuarded(projectOptions: unknown, mainPid: number, ctx: RunContext, guard: SetupGuard): Promise<RunManifest> {
  const t0 = performance.now();
  const timings: Record<string, number> = {};
  const lap = (k: string, since: number) => (timings[k] = Math.round(performance.now() - since));
  const options = validate(projectOptions);
  const rootDir = ctx.rootDir ?? process.cwd();
  const runId = newRunId();
  const runDir = path.join(os.tmpdir(), `jest-pg-run-${runId}`);
  await fsp.mkdir(runDir, { mode: 0o700 });
  const manifestPath = path.join(runDir, 'manifest.json');
  const proxySecret = randomBytes(18).toString('base64url');
  let cluster: ClusterInfo | undefined;
  let cacheInfo: RunCacheInfo | undefined;
  /** Cache entries being written: awaited if startRun fails, else finished in the background (teardownRun waits). */
  const cacheWrites: Promise<unknown>[] = [];
  let reaperPid: number | undefined;
  const manifest = (adminUrl: string, versionNum: number): RunManifest => ({
    version: 1,
    runId,
    mainPid,
    mainStart: startToken(mainPid),
    host: os.hostname(),
    prefix: options.prefix,
    adminUrl,
    templateDb: '',
    versionNum,
    runDir,
    manifestPath,
    cluster,
    options,
    proxySecret,
    rootDir,
    lockFiles: ctx.lockFiles,
  });
  // If the process exits in the middle (a migration module calling process.exit()): a reaper that
  // has the manifest tears the run down once this process is gone (it drops what the run left on
  // the server too); without one, stop what we can now, synchronously.
  const dropExitCleanup = guard.onExit(() => {
    if (reaperPid && isAlive(reaperPid) && existsSync(manifestPath)) return;
    stopReaper(reaperPid);
    if (cluster && isPostmasterOf(cluster.pid, cluster.dataDir)) process.kill(cluster.pid, 'SIGQUIT');
    if (cluster) rmSync(cluster.baseDir, { recursive: true, force: true });
    rmSync(runDir, { recursive: true, force: true });
  });
  // The reaper's timeout starts once the final manifest is written (setup may be long before it).
  let arm!: () => void;
  const armed = new Promise<void>((r) => (arm = r));
  // The reaper starts now (node boots while initdb runs) and takes the lease once the manifest exists.
  const tReaper = performance.now();
  const reaper = startReaper(manifestPath, stepTimeoutMs('starting the reaper'), armed, (pid) => (reaperPid = pid)).then((pid) => {
    lap('reaper', tReaper);
    return pid;
  });
  reaper.catch(() => undefined);
  let bridge: import('pg').Client | undefined;
  try {
    const server = options.server ?? process.env.JEST_PG_URL;
    let adminUrl: string;
    if (server) {
      adminUrl = server;
    } else {
      const t = performance.now();
      const bins = await step('finding the PostgreSQL binaries', (signal) => raceAbort(findBinaries({ binDir: options.binDir, resolveFrom: [rootDir] }), signal));
      lap('binaries', t);
      const loc = resolveCacheDir(options.cacheDir, rootDir);
      if (loc.dir) {
        // Every cluster we start is recorded (and, in phase "setup", handed to the reaper) at once.
        const setCluster = (c: ClusterInfo | undefined) => {
          cluster = c;
          if (c) writeManifest({ ...manifest(c.url, c.versionNum), phase: 'setup' });
        };
        const r = await startCachedCluster(bins, loc.dir, options, rootDir, timings, setCluster, cacheWrites);
        cluster = r.cluster;
        cacheInfo = r.info;
      } else {
        cluster = await startCluster({ binDir: bins.binDir, version: bins.version, nativeDir: bins.nativeDir });
        timings.initdb = cluster.timings?.initdb ?? 0;
        timings.boot = cluster.timings?.start ?? 0;
        cacheInfo = { status: 'off', note: loc.reason };
      }
      adminUrl = cluster.url;
    }
    let t = performance.now();
    const versionNum = await step('connecting to the server', (signal) =>
      withClient(
        adminUrl,
        async (c) => {
          await checkCreateDb(c, adminUrl);
          return serverVersionNum(c);
        },
        { signal },
      ),
    );
    lap('connect', t);
    // The lease, held from here by this process until the reaper (booted meanwhile) holds it too;
    // both hold it shared, a sweep takes it exclusive. The template is "in use" by this run (the
    // sweep of old templates leaves it alone) from before it is looked for; the reaper takes that
    // over with the lease. startRun returns only once it has: no run database exists without it.
    t = performance.now();
    const tplOpts = { prefix: options.prefix, migrations: options.migrations, seed: options.seed, versionNum, rootDir, time: options.time };
    const tplName = await templateNameFor(tplOpts);
    bridge = await step('taking the run lease', async (signal) => {
      const b = await connect(adminUrl, { applicationName: 'jest-environment-pg lease', signal });
      b.on('error', () => undefined); // a server going away must not crash Jest's main process
      try {
        await acquireLease(b, runId);
        await holdTemplate(b, tplName);
      } catch (e) {
        await atMost(b.end(), 2000);
        throw signal.aborted ? signal.reason : e;
      }
      return b;
    });
    // Not keeping Jest's main process alive (a pg internal: absent in some pg 8.x, then skipped).
    (bridge as unknown as { connection?: { stream?: { unref?: () => void } } }).connection?.stream?.unref?.();
    lap('lease', t);
    // phase "template": if this process dies before the end, the teardown drops the template it was building.
    const m: RunManifest = { ...manifest(adminUrl, versionNum), templateDb: tplName, cache: cacheInfo, phase: 'template' };
    writeManifest(m);
    arm();
    const swept = step('sweeping databases of dead runs', async (signal) => {
      const ts = performance.now();
      const r = await raceAbort(sweep(adminUrl, options.prefix), signal);
      // Old templates (best effort: never fails the run).
      const old = await withClient(adminUrl, (c) => sweepTemplates(c, options.prefix, options.keepTemplates, tplName, runId), {
        applicationName: 'jest-environment-pg sweep',
        signal,
      }).catch(() => undefined);
      lap('sweep', ts);
      return { ...r, templates: old?.dropped ?? [] };
    });
    // Local leftovers of runs that died with their reaper (best effort, not awaited by the run).
    void sweepStaleLocal((dead) => teardownRun(dead, { fromReaper: true })).catch(() => undefined);
    const template = step('building the template (migrations)', async (signal) => {
      const tt = performance.now();
      const r = await ensureTemplateDetailed(adminUrl, { ...tplOpts, name: tplName, signal });
      lap(r.built ? 'template(built)' : 'template(reused)', tt);
      if (r.built && cacheInfo?.status === 'warm' && cacheInfo.entry) {
        // The restored cluster lacked its template: that entry is bad; the next run rebuilds it.
        discard(cacheInfo.entry);
        cacheInfo.note = `${path.basename(cacheInfo.entry)} had no complete template; discarded`;
        cacheInfo.discarded = [...(cacheInfo.discarded ?? []), `the cache entry ${cacheInfo.note} (the next run saves a fresh one)`];
      }
      return r.name;
    });
    // The run does not start without its reaper: if Jest were killed, nothing else would clean up.
    // In the background (reaperInBackground), this process holds the lease until the reaper does.
    const ready = step('starting the reaper', (signal) => raceAbort(reaper, signal));
    let reaperSettled: PromiseSettledResult<number> | undefined;
    ready.then(
      (value) => (reaperSettled = { status: 'fulfilled', value }),
      (reason: unknown) => (reaperSettled = { status: 'rejected', reason }),
    );
    const [tpl, sw] = await Promise.allSettled([template, swept, ...(ctx.reaperInBackground ? [] : [ready.catch(() => undefined)])]);
    if (tpl.status === 'rejected') throw tpl.reason;
    if ((reaperSettled as PromiseSettledResult<number> | undefined)?.status === 'rejected') throw (reaperSettled as PromiseRejectedResult).reason;
    if (sw.status === 'rejected') throw sw.reason;
    if (sw.value.dropped.length || sw.value.templates.length) m.swept = sw.value;
    m.reaperPid = reaperPid;
    m.templateDb = tpl.value;
    delete m.phase;
    // Once the reaper holds the lease and the template, this process lets go of them.
    const held = bridge;
    bridge = undefined;
    if (reaperSettled) void held?.end().catch(() => undefined);
    else processRuns.trackReaper(runId, handOverLease(ready, held));
    // A cache entry still being written finishes while the tests run (teardownRun waits for it).
    for (const w of cacheWrites) processRuns.trackBackground(w);
    // Jest's first worker (in band too) is always worker 1: its database is cloned while Jest
    // starts its workers. It takes the clone's lock, so the worker waits for it, never clones twice.
    if (ctx.reaperInBackground) processRuns.trackBackground(ensureWorkerDatabase(m, '1').catch(() => undefined));
    lap('total', t0);
    m.timings = timings;
    writeManifest(m);
    dropExitCleanup();
    process.env[MANIFEST_ENV] = manifestPath;
    return m;
  } catch (e) {
    arm();
    // Leave nothing behind: the reaper (if it started), the cluster, the run dir. Each step is
    // bounded, so a server that stopped answering cannot hold the error back.
    await atMost(Promise.allSettled(cacheWrites), 30_000); // no temp file of a save left behind
    // Removing the run dir makes a reaper that is still waiting for the manifest exit by itself.
    await fsp.rm(runDir, { recursive: true, force: true }).catch(() => undefined);
    stopReaper(reaperPid);
    if (bridge) await atMost(bridge.end(), 2000);
    if (cluster) await stopCluster(cluster).catch(() => undefined);
    await fsp.rm(runDir, { recursive: true, force: true }).catch(() => undefined);
    dropExitCleanup();
    throw e;
  }
}

/**
 * The reaper is still starting and the run has begun: the lease stays with this process until the
 * reaper holds it. A reaper that fails is said at once; teardownRun fails the run with its error.
 */
async function handOverLease(ready: Promise<number>, lease: import('pg').Client | undefined): Promise<Error | undefined> {
  try {
    await ready;
    await lease?.end().catch(() => undefined);
    return undefined;
  } catch (e) {
    const err = e instanceof Error ? e : new Error(String(e));
    const code = (e as { code?: string }).code;
    process.stderr.write(`\njest-environment-pg: ${code ? `${code}: ` : ''}${err.message}\nThe run fails at its end (its teardown runs from this process).\n`);
    // The lease is kept until the teardown: the run's databases are still this process's.
    return Object.assign(err, { lease });
  }
}
