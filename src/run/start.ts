/**
 * A run's start, as a pipeline: options → server (embedded through the cache, or external) →
 * connect → lease → manifest → template, sweep and reaper → the final manifest. startRun (global
 * setup, the CLI, or the first worker in environment-only mode). Each step is one function below;
 * the laps are collected by the pipeline (Laps), what a failure must undo by one object (Started).
 */
import { randomBytes } from 'node:crypto';
import { existsSync, promises as fsp, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { databaseOf, loadDriver } from '../util/admin';
// The run's own connections: the proxy's driver-free client (no pg load, no JS SCRAM on the start's path).
import { AdminClient } from '../proxy/admin-client';
import { findBinaries } from '../server/binaries';
import { discard, resolveCacheDir } from '../server/cache';
import { isPostmasterOf, startCluster, stopCluster, type ClusterInfo } from '../server/cluster';
import { socketUrl } from '../server/socket-url';
import { leaseAndLook, sweepOn, sweepTemplates } from './lease';
import { newRunId } from '../util/names';
import { errors } from '../util/errors';
import { validate, type PgOptions } from '../util/options';
import { isAlive, startToken } from '../util/proc';
import { startReaper, stopReaper } from './reaper';
import { processRuns } from './registry';
import { sweepStaleLocal } from './stale';
import { atMost, guardSetup, raceAbort, step, stepTimeoutMs, type SetupGuard } from '../util/settle';
import { ensureTemplateDetailed, stampUsed, templateNameFor, type TemplateOptions } from '../schema/template';
import { MANIFEST_ENV, writeManifest, type RunCacheInfo, type RunContext, type RunManifest } from './manifest';
import { startCachedCluster } from './cached-cluster';
import { teardownRun } from './teardown';

/**
 * Set up a run: server, sweep, template, run dir + manifest, reaper. Sets process.env.JEST_PG_MANIFEST.
 * Always settles (see settle.ts): every step is bounded, the event loop is held open until it is
 * done, and on any failure nothing of the run is left (cluster stopped, its dir and the run dir
 * removed, no reaper) before the error — with its JESTPG_ code — is thrown.
 */
export function startRun(projectOptions: unknown, mainPid: number, ctx: RunContext = {}): Promise<RunManifest> {
  return guardSetup('setting up the PostgreSQL run', (guard) => startRunGuarded(projectOptions, mainPid, ctx, guard));
}

/** The laps of a start, by step (RunManifest.timings). */
class Laps {
  readonly timings: Record<string, number> = {};
  private readonly t0 = performance.now();
  /** Time `f` under `name` (or the name its result gives). */
  async time<T>(name: string | ((r: T) => string), f: () => Promise<T>): Promise<T> {
    const t = performance.now();
    const r = await f();
    this.timings[typeof name === 'string' ? name : name(r)] = Math.round(performance.now() - t);
    return r;
  }
  total(): void {
    this.timings.total = Math.round(performance.now() - this.t0);
  }
}

/** What does not change during a start. */
interface Plan {
  options: PgOptions;
  mainPid: number;
  ctx: RunContext;
  rootDir: string;
  runId: string;
  runDir: string;
  manifestPath: string;
  proxySecret: string;
}

/** What the start has made so far: what a failure (or an exit in the middle) must undo. */
interface Started {
  cluster?: ClusterInfo;
  /** Cache entries being written: awaited if the start fails, else finished while the tests run (teardownRun waits). */
  cacheWrites: Promise<unknown>[];
  reaperPid?: number;
  /** The lease, held by this process until the reaper holds it. */
  lease?: AdminClient;
}

async function startRunGuarded(projectOptions: unknown, mainPid: number, ctx: RunContext, guard: SetupGuard): Promise<RunManifest> {
  const laps = new Laps();
  const plan = await planRun(projectOptions, mainPid, ctx);
  const s: Started = { cacheWrites: [] };
  const dropExitCleanup = guard.onExit(() => cleanUpAtExit(plan, s));
  const reaper = spawnReaper(plan, s, laps);
  try {
    const { adminUrl, cacheInfo } = await startServer(plan, s, laps);
    // Our own embedded cluster: its version is known, its superuser may create databases.
    const own = s.cluster;
    // On a server: one connection checks the role and reads the version, then holds the lease.
    const server = own ? undefined : await laps.time('connect', () => connectToServer(adminUrl, s));
    const versionNum = own ? own.versionNum : server!.versionNum;
    const tplOpts = { prefix: plan.options.prefix, migrations: plan.options.migrations, seed: plan.options.seed, versionNum, rootDir: plan.rootDir, time: plan.options.time };
    const tplName = await templateNameFor(tplOpts);
    // Our own cluster is reached over its unix socket (see socketUrl).
    const leased = await laps.time('lease', () => takeLease(own ? socketUrl(own, databaseOf(adminUrl)) : adminUrl, plan.runId, tplName, s));
    // A cluster started by this run holds no other run's databases and no old templates: nothing
    // to sweep. On a server the sweep runs next on the lease's connection (no second connection
    // to open), beside the template's build if there is one (it never touches this run's
    // template, nor this run, whose databases do not exist yet).
    const swept = own ? Promise.resolve<Swept>({ dropped: [], deadRuns: [], terminated: 0 }) : laps.time('sweep', () => sweepDeadRuns(s.lease!, plan, tplName));
    swept.catch(() => undefined);
    // phase "template": if this process dies before the end, the teardown drops the template it was building.
    const m: RunManifest = { ...manifestOf(plan, adminUrl, versionNum, s.cluster), templateDb: tplName, cache: cacheInfo, phase: 'template' };
    writeManifest(m);
    reaper.arm();
    // Local leftovers of runs that died with their reaper (best effort, not awaited by the run).
    void sweepStaleLocal((dead) => teardownRun(dead, { fromReaper: true })).catch(() => undefined);
    const template = leased.reused
      ? Promise.resolve({ name: tplName, built: false })
      : laps.time((r) => (r.built ? 'template(built)' : 'template(reused)'), () => buildTemplate(adminUrl, { ...tplOpts, name: tplName }, cacheInfo));
    if (leased.reused) laps.timings['template(reused)'] = leased.lookMs;
    const ready = reaper.ready();
    await settleStart(m, { template, swept, ready }, plan.ctx.reaperInBackground === true);
    finishStart(m, plan, s, ready, laps);
    dropExitCleanup();
    return m;
  } catch (e) {
    reaper.arm();
    await undoStart(plan, s);
    dropExitCleanup();
    throw e;
  }
}

async function planRun(projectOptions: unknown, mainPid: number, ctx: RunContext): Promise<Plan> {
  const options = validate(projectOptions);
  const runId = newRunId();
  const runDir = path.join(os.tmpdir(), `jest-pg-run-${runId}`);
  await fsp.mkdir(runDir, { mode: 0o700 });
  return {
    options,
    mainPid,
    ctx,
    rootDir: ctx.rootDir ?? process.cwd(),
    runId,
    runDir,
    manifestPath: path.join(runDir, 'manifest.json'),
    proxySecret: randomBytes(18).toString('base64url'),
  };
}

function manifestOf(plan: Plan, adminUrl: string, versionNum: number, cluster: ClusterInfo | undefined): RunManifest {
  return {
    version: 1,
    runId: plan.runId,
    mainPid: plan.mainPid,
    mainStart: startToken(plan.mainPid),
    host: os.hostname(),
    prefix: plan.options.prefix,
    adminUrl,
    templateDb: '',
    versionNum,
    runDir: plan.runDir,
    manifestPath: plan.manifestPath,
    cluster,
    options: plan.options,
    proxySecret: plan.proxySecret,
    rootDir: plan.rootDir,
    lockFiles: plan.ctx.lockFiles,
  };
}

/**
 * If the process exits in the middle (a migration module calling process.exit()): a reaper that
 * has the manifest tears the run down once this process is gone (it drops what the run left on
 * the server too); without one, stop what we can now, synchronously.
 */
function cleanUpAtExit(plan: Plan, s: Started): void {
  if (s.reaperPid && isAlive(s.reaperPid) && existsSync(plan.manifestPath)) return;
  stopReaper(s.reaperPid);
  if (s.cluster && isPostmasterOf(s.cluster.pid, s.cluster.dataDir)) process.kill(s.cluster.pid, 'SIGQUIT');
  if (s.cluster) rmSync(s.cluster.baseDir, { recursive: true, force: true });
  rmSync(plan.runDir, { recursive: true, force: true });
}

/**
 * The reaper starts now (node boots while initdb runs) and takes the lease once the manifest
 * exists; its timeout starts once that manifest is written (`arm`: setup may be long before it).
 */
function spawnReaper(plan: Plan, s: Started, laps: Laps): { arm: () => void; ready: () => Promise<number> } {
  let arm!: () => void;
  const armed = new Promise<void>((r) => (arm = r));
  const started = laps.time('reaper', () => startReaper(plan.manifestPath, stepTimeoutMs('starting the reaper'), armed, (pid) => (s.reaperPid = pid)));
  started.catch(() => undefined);
  return { arm, ready: () => step('starting the reaper', (signal) => raceAbort(started, signal)) };
}

/** The server: JEST_PG_URL (or the server option), else an embedded cluster, through the cache when there is one. */
async function startServer(plan: Plan, s: Started, laps: Laps): Promise<{ adminUrl: string; cacheInfo?: RunCacheInfo }> {
  const { options, rootDir } = plan;
  const server = options.server ?? process.env.JEST_PG_URL;
  if (server) return { adminUrl: server };
  const bins = await laps.time('binaries', () => step('finding the PostgreSQL binaries', (signal) => raceAbort(findBinaries({ binDir: options.binDir, resolveFrom: [rootDir] }), signal)));
  const loc = resolveCacheDir(options.cacheDir, rootDir);
  if (!loc.dir) {
    const c = (s.cluster = await startCluster({ binDir: bins.binDir, version: bins.version, nativeDir: bins.nativeDir, meanwhile: loadDriver }));
    laps.timings.initdb = c.timings?.initdb ?? 0;
    laps.timings.boot = c.timings?.start ?? 0;
    return { adminUrl: c.url, cacheInfo: { status: 'off', note: loc.reason } };
  }
  // Every cluster we start is recorded (and, in phase "setup", handed to the reaper) at once.
  const setCluster = (c: ClusterInfo | undefined) => {
    s.cluster = c;
    if (c) writeManifest({ ...manifestOf(plan, c.url, c.versionNum, c), phase: 'setup' });
  };
  const r = await startCachedCluster(bins, loc.dir, options, rootDir, laps.timings, setCluster, s.cacheWrites);
  s.cluster = r.cluster;
  return { adminUrl: r.cluster.url, cacheInfo: r.info };
}

/**
 * May this role create databases? The server's version. In one round trip, on the connection
 * that then holds the run's lease (kept in `s.lease`, ended by undoStart if the start fails).
 */
function connectToServer(adminUrl: string, s: Started): Promise<{ versionNum: number }> {
  return step('connecting to the server', async (signal) => {
    const c = (s.lease = await openLease(adminUrl, signal));
    const r = await c.query<{ rolname: string; ok: boolean; v: string }>(
      "SELECT rolname, (rolsuper OR rolcreatedb) AS ok, pg_catalog.current_setting('server_version_num') AS v FROM pg_catalog.pg_roles WHERE rolname = current_user",
    );
    const row = r.rows[0];
    if (!row?.ok) throw errors.noCreateDb(adminUrl, row?.rolname ?? '(unknown)');
    return { versionNum: Number(row.v) };
  });
}

/**
 * The lease, held from here by this process until the reaper holds it too; both hold it shared, a
 * sweep takes it exclusive. The template is "in use" by this run (the sweep of old templates leaves
 * it alone) from before it is looked for; the reaper takes that over with the lease. The same
 * round trip looks for the template: `reused` when it is there and complete (the usual case,
 * and no connection of the template's own is needed). On the connection connectToServer opened,
 * if there is one.
 */
async function takeLease(adminUrl: string, runId: string, tplName: string, s: Started): Promise<{ reused: boolean; lookMs: number }> {
  const r = await step('taking the run lease', async (signal) => {
    const b = (s.lease ??= await openLease(adminUrl, signal));
    const giveUp = () => void b.end().catch(() => undefined);
    signal.addEventListener('abort', giveUp, { once: true });
    try {
      const t = performance.now();
      const look = await leaseAndLook(b, runId, tplName);
      if (look.complete) await stampUsed(b, tplName, look.comment);
      return { reused: look.complete, lookMs: Math.round(performance.now() - t) };
    } catch (e) {
      throw signal.aborted ? signal.reason : e;
    } finally {
      signal.removeEventListener('abort', giveUp);
    }
  });
  // Not keeping Jest's main process alive while it is only held.
  s.lease!.unref();
  return r;
}

/** The connection that holds the run's lease. */
function openLease(url: string, signal: AbortSignal): Promise<AdminClient> {
  return AdminClient.connect(url, { applicationName: 'jest-environment-pg lease', signal });
}

type Swept = NonNullable<RunManifest['swept']>;

/** Databases of runs that died without a teardown; old templates (best effort: never fails the run). On the lease's connection. */
function sweepDeadRuns(c: AdminClient, plan: Plan, tplName: string): Promise<Swept> {
  const { prefix, keepTemplates } = plan.options;
  return step('sweeping databases of dead runs', async (signal) => {
    try {
      const r = await sweepOn(c, prefix);
      const old = await sweepTemplates(c, prefix, keepTemplates, tplName, plan.runId).catch(() => undefined);
      return { ...r, templates: old?.dropped ?? [] };
    } catch (e) {
      throw signal.aborted ? signal.reason : e;
    }
  });
}

/** The template, reused or built; a warm cache entry that lacked it is discarded (the next run saves a fresh one). */
function buildTemplate(adminUrl: string, opts: TemplateOptions & { name: string }, cacheInfo: RunCacheInfo | undefined): Promise<{ name: string; built: boolean }> {
  return step('building the template (migrations)', async (signal) => {
    const r = await ensureTemplateDetailed(adminUrl, { ...opts, signal });
    if (r.built && cacheInfo?.status === 'warm' && cacheInfo.entry) {
      discard(cacheInfo.entry);
      cacheInfo.note = `${path.basename(cacheInfo.entry)} had no complete template; discarded`;
      cacheInfo.discarded = [...(cacheInfo.discarded ?? []), `the cache entry ${cacheInfo.note} (the next run saves a fresh one)`];
    }
    return r;
  });
}

/**
 * Wait for the template and the sweep, and for the reaper unless it may finish in the background:
 * the run does not start without a reaper (if Jest were killed, nothing else would clean up), but
 * a caller that runs the teardown itself lets it boot while the tests start (see finishStart).
 */
async function settleStart(
  m: RunManifest,
  steps: { template: Promise<{ name: string }>; swept: Promise<Swept>; ready: Promise<number> },
  reaperInBackground: boolean,
): Promise<void> {
  const reaperFailed = steps.ready.then(
    () => undefined,
    (e: unknown) => e,
  );
  let failed: unknown;
  void reaperFailed.then((e) => (failed = e));
  const [tpl, sw] = await Promise.allSettled([steps.template, steps.swept, ...(reaperInBackground ? [] : [reaperFailed])]);
  if (tpl.status === 'rejected') throw tpl.reason;
  if (failed !== undefined) throw failed;
  if (sw.status === 'rejected') throw sw.reason;
  if (sw.value.dropped.length || sw.value.templates?.length) m.swept = sw.value;
  m.templateDb = tpl.value.name;
}

/** The run is ready: the final manifest, the lease handed over (now or once the reaper holds it), background work tracked. */
function finishStart(m: RunManifest, plan: Plan, s: Started, ready: Promise<number>, laps: Laps): void {
  m.reaperPid = s.reaperPid;
  delete m.phase;
  const lease = s.lease;
  s.lease = undefined;
  processRuns.trackReaper(plan.runId, handOverLease(ready, lease));
  // A cache entry still being written finishes while the tests run (teardownRun waits for it).
  for (const w of s.cacheWrites) processRuns.trackBackground(w);
  laps.total();
  m.timings = laps.timings;
  writeManifest(m);
  process.env[MANIFEST_ENV] = plan.manifestPath;
}

/**
 * Once the reaper holds the lease and the template, this process lets go of them. A reaper that
 * fails after the run began is said at once; teardownRun fails the run with its error.
 */
async function handOverLease(ready: Promise<number>, lease: AdminClient | undefined): Promise<Error | undefined> {
  try {
    await ready;
    if (lease) {
      // Ending it is awaited (by a teardown too): its socket holds the process until it is closed.
      lease.ref();
      await lease.end();
    }
    return undefined;
  } catch (e) {
    const err = e instanceof Error ? e : new Error(String(e));
    const code = (e as { code?: string }).code;
    process.stderr.write(`\njest-environment-pg: ${code ? `${code}: ` : ''}${err.message}\nThe run fails at its end (its teardown runs from this process).\n`);
    // The lease is kept until the teardown: the run's databases are still this process's.
    return Object.assign(err, { lease });
  }
}

/**
 * Leave nothing behind: the reaper (if it started), the cluster, the run dir. Each step is
 * bounded, so a server that stopped answering cannot hold the error back.
 */
async function undoStart(plan: Plan, s: Started): Promise<void> {
  await atMost(Promise.allSettled(s.cacheWrites), 30_000); // no temp file of a save left behind
  // Removing the run dir makes a reaper that is still waiting for the manifest exit by itself.
  await fsp.rm(plan.runDir, { recursive: true, force: true }).catch(() => undefined);
  stopReaper(s.reaperPid);
  if (s.lease) await atMost(s.lease.end(), 2000);
  if (s.cluster) await stopCluster(s.cluster).catch(() => undefined);
  await fsp.rm(plan.runDir, { recursive: true, force: true }).catch(() => undefined);
}
