/**
 * A run: one Jest invocation's server, template, worker databases, lease and reaper.
 * startRun (globalSetup, or the first worker in environment-only mode) → attachRun (each worker)
 * → ensureWorkerDatabase (per worker, lazily) → teardownRun (globalTeardown, or the reaper).
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFileSync, existsSync, promises as fsp, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { cloneDatabase } from '../schema/clone';
import { checkCreateDb, connect, dropDatabase, serverVersionNum, withClient, withDatabase } from '../util/admin';
import { findBinaries, type Binaries } from '../server/binaries';
import { clusterKey, collectDataDir, CorruptCacheError, discard, entryPath, prune, readPack, resolveCacheDir, touch, unpackDataDir, writePack, type Pack } from '../server/cache';
import { initdbFlags, isPostmasterOf, snapshotCluster, startCluster, stopCluster, versionNumOf, type ClusterInfo } from '../server/cluster';
import { errors, JestPgError, messageOf, redactUrl, type ErrorCode } from '../util/errors';
import { acquireLease, dropAbandonedTemplate, holdTemplate, sweep, sweepTemplates } from './lease';
import { newRunId, parseMarker, workerDbName } from '../util/names';
import { validate, type PgOptions } from '../util/options';
import { isAlive, startToken } from '../util/proc';
import { startReaper, stopReaper } from './reaper';
import { processRuns } from './registry';
import { sweepStaleLocal } from './stale';
import { atMost, guardSetup, raceAbort, setupBudgetMs, step, stepTimeoutMs, type SetupGuard } from '../util/settle';
import { ensureTemplateDetailed, lockKeyFor, templateNameFor } from '../schema/template';
import { packageVersion } from '../util/version';

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
   * base: initdb's output was restored, the template built, the result saved;
   * cold: initdb ran, the template was built, the result saved; off: no cache.
   */
  status: 'warm' | 'base' | 'cold' | 'off';
  dir?: string;
  /** The entry restored (warm) or written (base, cold). */
  entry?: string;
  /**
   * This run wrote `entry`. Set once the write is done: startRun does not wait for it (the
   * tests run meanwhile), teardownRun does.
   */
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

function writeManifest(m: RunManifest): void {
  const tmp = `${m.manifestPath}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(m, null, 2), { mode: 0o600 });
  renameSync(tmp, m.manifestPath);
}

export function readManifest(file: string): RunManifest {
  const m = JSON.parse(readFileSync(file, 'utf8')) as RunManifest;
  if (m.version !== 1 || !m.runId) throw new Error(`not a jest-environment-pg manifest: ${file}`);
  return m;
}

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

/**
 * The embedded cluster through the cache (see cache.ts):
 * - warm: the entry for this template exists → restore it and start; no initdb, no migrations;
 * - else restore initdb's output (the base entry) or run initdb (and save its output as the base
 *   entry before the server first starts), build the template, and — when the cluster holds
 *   nothing but the system databases and that template — stop the server cleanly, save the data
 *   dir as this template's entry, start the server again.
 * A damaged or unusable entry is deleted and the run goes on without it; saving never fails a run.
 */
async function startCachedCluster(
  bins: Binaries,
  dir: string,
  options: PgOptions,
  rootDir: string,
  timings: Record<string, number>,
  setCluster: (c: ClusterInfo | undefined) => void,
  /** Receives every background write (the caller awaits them if the run fails, else lets them finish while tests run). */
  writes: Promise<unknown>[],
): Promise<{ cluster: ClusterInfo; info: RunCacheInfo }> {
  const versionNum = versionNumOf(bins.version);
  const key = clusterKey(bins, initdbFlags(Math.floor(versionNum / 10000)).join(' '));
  const tplOpts = { prefix: options.prefix, migrations: options.migrations, seed: options.seed, versionNum, rootDir, time: options.time };
  const tplName = await templateNameFor(tplOpts);
  const entry = entryPath(dir, key, tplName);
  const baseEntry = entryPath(dir, key, 'base');
  const clusterOpts = { binDir: bins.binDir, version: bins.version, nativeDir: bins.nativeDir };
  const notes: string[] = [];
  const note = () => (notes.length ? notes.join('; ') : undefined);
  /** Entries deleted because they were damaged or would not start: said at the start of the run. */
  const discarded: string[] = [];
  const load = (file: string): Pack | undefined => {
    try {
      return readPack(file);
    } catch (e) {
      notes.push(`ignored ${messageOf(e)}`);
      if (e instanceof CorruptCacheError) {
        discard(file);
        discarded.push(`the cache entry ${messageOf(e)}; it was deleted and this run started without it (a fresh entry is saved)`);
      }
      return undefined;
    }
  };
  const restore = async (file: string, pack: Pack): Promise<ClusterInfo | undefined> => {
    try {
      const c = await startCluster({ ...clusterOpts, populate: (d, owner) => void unpackDataDir(pack, d, owner) });
      timings.restore = c.timings?.initdb ?? 0;
      timings.boot = c.timings?.start ?? 0;
      touch(file);
      return c;
    } catch (e) {
      // startCluster removed its dir. Bad data, or an environment problem the cold path will report.
      // A step that timed out is not the entry's fault: keep it, and let the error end the run.
      if ((e as { code?: string }).code === 'JESTPG_SETUP_TIMEOUT') throw e;
      notes.push(`ignored ${path.basename(file)}: ${messageOf(e).split('\n')[0]}`);
      discard(file, pack.ino);
      const lines = messageOf(e).split('\n');
      // The server's own words: its FATAL/PANIC line, else the first line of its output.
      const why = (lines.find((l) => /\b(PANIC|FATAL|ERROR):/.test(l)) ?? lines.slice(1).find((l) => l.trim()) ?? lines[0]).trim();
      discarded.push(`the server did not start from the cache entry ${path.basename(file)} (${why}); it was deleted and this run started without it (a fresh entry is saved)`);
      return undefined;
    }
  };

  const warmPack = load(entry);
  if (warmPack) {
    const c = await restore(entry, warmPack);
    if (c) {
      setCluster(c);
      return { cluster: c, info: { status: 'warm', dir, entry, note: note(), discarded } };
    }
  }

  // Entries are written in the background: the server starts (again) meanwhile.
  const save = (file: string, d: string, template: string | null, what: string) => {
    const w = writePack(file, collectDataDir(d), { key, template, version: bins.version, package: packageVersion() }).then(
      () => true,
      (e) => (notes.push(`${what} not saved: ${messageOf(e)}`), false),
    );
    writes.push(w);
    return w;
  };
  const basePack = load(baseEntry);
  let c = basePack ? await restore(baseEntry, basePack) : undefined;
  const status: RunCacheInfo['status'] = c ? 'base' : 'cold';
  if (!c) {
    // initdb's output is saved only once this project's template has changed (an entry of the
    // same binaries with another template exists): a first or CI run does not pay for it.
    const templateChanged = listEntries(dir, key).some((f) => f !== entry && f !== baseEntry);
    c = await startCluster({
      ...clusterOpts,
      afterInitdb: templateChanged
        ? (d) => {
            try {
              void save(baseEntry, d, null, 'base');
            } catch (e) {
              notes.push(`base not saved: ${messageOf(e)}`);
            }
          }
        : undefined,
    });
    timings.initdb = c.timings?.initdb ?? 0;
    if (c.timings?.afterInitdb !== undefined) timings['cache(base)'] = c.timings.afterInitdb;
    timings.boot = c.timings?.start ?? 0;
  }
  setCluster(c);

  const tt = performance.now();
  const url = c.url;
  const tpl = await step('building the template (migrations)', (signal) => ensureTemplateDetailed(url, { ...tplOpts, signal }));
  timings[tpl.built ? 'template(built)' : 'template(reused)'] = Math.round(performance.now() - tt);

  const ts = performance.now();
  const dbs = await withClient(
    c.url,
    async (x) => {
      const names = (await x.query<{ datname: string }>('SELECT datname FROM pg_database ORDER BY datname')).rows.map((r) => r.datname);
      // Start a new WAL segment: the shutdown checkpoint then lands in it and the old one (initdb's
      // and the migrations' WAL, ≈ 9 MB) is removed, not packed.
      if (versionNum >= 120000) await x.query('SELECT pg_switch_wal()');
      return names;
    },
    { applicationName: 'jest-environment-pg cache' },
  );
  const extra = dbs.filter((d) => !['template0', 'template1', 'postgres', tplName].includes(d));
  const info: RunCacheInfo = { status, dir, entry, discarded: discarded.length ? discarded : undefined };
  let saved: Promise<boolean> | undefined;
  if (extra.length) {
    notes.push(`not saved: the cluster holds more than its template (${extra.join(', ')})`);
  } else {
    const snap = await snapshotCluster(c, async (d) => {
      saved = save(entry, d, tplName, 'entry');
    });
    c = snap.cluster;
    setCluster(c);
    timings.snapshot = Math.round(performance.now() - ts);
    if (snap.saveError) notes.push(`entry not saved: ${messageOf(snap.saveError)}`);
  }
  info.note = note();
  const pending = [...writes];
  const saving = (async () => {
    const tw = performance.now();
    await Promise.all(pending);
    info.saved = saved ? await saved : false;
    info.note = note();
    if (pending.length) timings['cache(write)'] = Math.round(performance.now() - tw);
    prune(dir, [entry, baseEntry]);
  })();
  writes.push(saving);
  return { cluster: c, info };
}

/** The entries of this cluster key in the cache dir. */
function listEntries(dir: string, key: string): string[] {
  try {
    return readdirSync(dir)
      .filter((f) => f.startsWith(`${key}-`) && f.endsWith('.pgdata'))
      .map((f) => path.join(dir, f));
  } catch {
    return [];
  }
}

let attached: { key: string; promise: Promise<RunManifest> } | undefined;

/**
 * In a Jest worker: the run this process belongs to. With globalSetup, from JEST_PG_MANIFEST;
 * without it (environment-only mode), the first worker of the Jest main process starts the run
 * under a lock file and the others wait for it. Cached per process.
 */
export function attachRun(projectOptions: unknown, ctx: RunContext = {}): Promise<RunManifest> {
  const fromEnv = process.env[MANIFEST_ENV];
  const key = fromEnv ?? 'env-only';
  if (attached?.key === key) return attached.promise;
  const promise = attachUncached(projectOptions, ctx, fromEnv);
  attached = { key, promise };
  promise.catch(() => {
    if (attached?.promise === promise) attached = undefined;
  });
  return promise;
}

/** The Jest main process of this process: the parent of a jest-worker child, else ourselves (--runInBand, worker threads). */
export function jestMainPid(): number {
  return typeof process.send === 'function' ? process.ppid : process.pid;
}

async function attachUncached(projectOptions: unknown, ctx: RunContext, fromEnv: string | undefined): Promise<RunManifest> {
  if (fromEnv) {
    if (!existsSync(fromEnv)) throw errors.runNotFound(`its manifest ${fromEnv} (from ${MANIFEST_ENV}) no longer exists`);
    const m = readManifest(fromEnv);
    // Only if it belongs to our Jest: a variable inherited from an outer Jest run must not be used.
    if (m.mainPid === process.pid || m.mainPid === process.ppid) return m;
  }
  return attachEnvironmentOnly(projectOptions, ctx);
}

function attachEnvironmentOnly(projectOptions: unknown, ctx: RunContext): Promise<RunManifest> {
  return guardSetup('setting up the PostgreSQL run (environment-only mode)', (guard) => attachEnvironmentOnlyGuarded(projectOptions, ctx, guard));
}

async function attachEnvironmentOnlyGuarded(projectOptions: unknown, ctx: RunContext, guard: SetupGuard): Promise<RunManifest> {
  rejectHooksWithoutGlobalSetup(validate(projectOptions));
  const mainPid = jestMainPid();
  const mainStart = startToken(mainPid);
  const key = `${mainPid}-${mainStart ?? 'x'}`;
  const lockDir = path.join(os.tmpdir(), `jest-pg-main-${key}.lock`);
  const infoFile = path.join(os.tmpdir(), `jest-pg-main-${key}.json`);
  // Every step of the first worker's setup is bounded; this only bounds a first worker stuck outside them.
  const budget = setupBudgetMs();
  const deadline = Date.now() + budget;
  while (Date.now() < deadline) {
    const info = readJson(infoFile) as { manifestPath?: string; error?: { code?: string; message: string } } | undefined;
    if (info?.error) {
      throw info.error.code ? new JestPgError(info.error.code as ErrorCode, info.error.message) : new Error(info.error.message);
    }
    if (info?.manifestPath) {
      if (existsSync(info.manifestPath)) {
        const m = readManifest(info.manifestPath);
        process.env[MANIFEST_ENV] = info.manifestPath;
        return m;
      }
      // A torn-down run of this same Jest process (watch mode re-run after the reaper ran?): start over.
      await fsp.rm(infoFile, { force: true });
      await fsp.rm(lockDir, { recursive: true, force: true });
      continue;
    }
    let owner = false;
    try {
      await fsp.mkdir(lockDir, { mode: 0o700 });
      owner = true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    if (owner) {
      writeFileSync(path.join(lockDir, 'owner'), String(process.pid));
      // This worker exiting in the middle (process.exit() in a migration): the others must not try again.
      guard.onExit(() => {
        writeJsonAtomic(infoFile, { error: { code: 'JESTPG_SETUP_INTERRUPTED', message: `the Jest worker that was setting up the run (pid ${process.pid}) exited in the middle; see its output` } });
        removeWhenGone(mainPid, mainStart, [lockDir, infoFile]);
      });
      try {
        const m = await startRun(projectOptions, mainPid, { ...ctx, lockFiles: [lockDir, infoFile] });
        writeJsonAtomic(infoFile, { manifestPath: m.manifestPath });
        return m;
      } catch (e) {
        // The other workers read the error from here (and fail the same way, without trying again).
        writeJsonAtomic(infoFile, { error: { code: (e as { code?: string }).code, message: messageOf(e) } });
        removeWhenGone(mainPid, mainStart, [lockDir, infoFile]);
        throw e;
      }
    }
    // Someone else is setting up. If it died without a result, take over.
    const ownerPid = Number(readText(path.join(lockDir, 'owner')));
    if (ownerPid && !isAlive(ownerPid) && !existsSync(infoFile)) {
      await fsp.rm(lockDir, { recursive: true, force: true });
      continue;
    }
    await sleep(15);
  }
  throw errors.setupTimeout(budget, 'the first Jest worker to set up the PostgreSQL run (environment-only mode)');
}

/**
 * Environment-only mode, after a failed setup: the lock and the error file must outlive this
 * worker (the others read the error from it) but not the Jest run. No reaper is left to remove
 * them, so a tiny detached node process does once the Jest main process is gone.
 */
function removeWhenGone(pid: number, start: string | undefined, files: string[]): void {
  const script =
    "const [proc, pid, start, ...files] = process.argv.slice(1); const { isSameProcess } = require(proc); const fs = require('fs');" +
    "setInterval(() => { if (isSameProcess(Number(pid), start || undefined)) return; for (const f of files) fs.rmSync(f, { recursive: true, force: true }); process.exit(0); }, 250);";
  try {
    const procJs = [path.join(__dirname, '..', 'util', 'proc.js'), path.join(__dirname, '..', '..', 'dist', 'util', 'proc.js')].find((f) => existsSync(f));
    if (!procJs) return;
    const child = spawn(process.execPath, ['-e', script, procJs, String(pid), start ?? '', ...files], {
      detached: true,
      stdio: 'ignore',
      windowsHide: true,
    });
    child.on('error', () => undefined); // the next run's local sweep removes them instead
    child.unref();
  } catch {
    // same
  }
}

/** pg.globalSetup/globalTeardown are run by our globalSetup/globalTeardown: without them they would be silently skipped. */
function rejectHooksWithoutGlobalSetup(o: PgOptions): void {
  const keys = (['globalSetup', 'globalTeardown'] as const).filter((k) => o[k] !== undefined);
  if (keys.length === 0) return;
  const rule =
    "is run by jest-environment-pg's own globalSetup/globalTeardown, which this project does not use: add preset: 'jest-environment-pg' " +
    "(or globalSetup: 'jest-environment-pg/global-setup' and globalTeardown: 'jest-environment-pg/global-teardown')";
  throw errors.options(keys.map((key) => ({ kind: 'misplaced', key, rule })), []);
}

/** Create (or reuse) this worker's database, cloned from the template. */
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

interface Backend {
  pid: number;
  datname: string;
  usename: string | null;
  application_name: string | null;
  client_addr: string | null;
  state: string | null;
  query: string | null;
  backend_start: Date | null;
}

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
  if (attached) attached = undefined;
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

export function formatReport(backends: Backend[]): string {
  if (backends.length === 0) return '';
  const lines = backends.map((b) => {
    const q = (b.query ?? '').replace(/\s+/g, ' ').trim();
    const query = q.length > 100 ? q.slice(0, 97) + '...' : q;
    return (
      `  pid ${b.pid}  db ${b.datname}  app ${JSON.stringify(b.application_name ?? '')}  ` +
      `client ${b.client_addr ?? 'unix socket'}  state ${b.state ?? '?'}${query ? `  last query: ${query}` : ''}`
    );
  });
  const n = backends.length;
  return (
    `jest-environment-pg: ${n} connection${n === 1 ? ' was' : 's were'} still open to this run's databases at teardown (terminated):\n` +
    lines.join('\n') +
    `\nThey did not go through the sandbox or were never closed: close pools and stop servers/child processes in afterAll.`
  );
}

function readText(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

function readJson(file: string): unknown {
  const t = readText(file);
  if (!t) return undefined;
  try {
    return JSON.parse(t);
  } catch {
    return undefined;
  }
}

function writeJsonAtomic(file: string, value: unknown): void {
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(value), { mode: 0o600 });
  renameSync(tmp, file);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
