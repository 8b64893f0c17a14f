/** The embedded cluster through the cache dir (warm, base, cold), see server/cache.ts. */
import { readdirSync } from 'node:fs';
import * as path from 'node:path';
import { loadDriver, type Queryable } from '../util/admin';
import { type Binaries } from '../server/binaries';
import { clusterKey, collectDataDir, CorruptCacheError, discard, entryPath, prune, readPack, shutDownCleanly, touch, unpackDataDir, verifyPack, writePack, type Collected, type Pack } from '../server/cache';
import { initdbFlags, startCluster, stopCleanly, stopCluster, versionNumOf, type ClusterInfo } from '../server/cluster';
import { messageOf } from '../util/errors';
import { type PgOptions } from '../util/options';
import { templateNameFor } from '../schema/template';
import { packageVersion } from '../util/version';
import type { RunCacheInfo, RunManifest } from './manifest';

/**
 * The embedded cluster through the cache (see cache.ts):
 * - warm: the entry for this template exists → restore it and start; no initdb, no migrations;
 * - else restore initdb's output (the base entry) or run initdb (and save its output as the base
 *   entry before the server first starts); the run builds the template, and its teardown saves
 *   the cluster as this template's entry (saveClusterAtTeardown): the server is stopped then
 *   anyway, so saving costs no stop and restart before the tests.
 * A damaged or unusable entry is deleted and the run goes on without it; saving never fails a run.
 */
export async function startCachedCluster(
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
  const tplOpts = { prefix: options.prefix, migrations: options.migrations, seed: options.seed, versionNum, rootDir, time: options.time };
  const start = new CachedStart(bins, dir, tplOpts, await templateNameFor(tplOpts), timings, writes);

  // Its checksum is verified while the server boots from it (the usual case needs no driver).
  const warmPack = start.load(start.entry, { checksum: false });
  if (warmPack) {
    const c = await start.restore(start.entry, warmPack, { verifying: true });
    if (c) {
      setCluster(c);
      return { cluster: c, info: { status: 'warm', dir, entry: start.entry, note: start.note(), discarded: start.discarded } };
    }
  }

  // Entries are written in the background: the server starts (again) meanwhile.
  const basePack = start.load(start.baseEntry);
  let c = basePack ? await start.restore(start.baseEntry, basePack) : undefined;
  const status: RunCacheInfo['status'] = c ? 'base' : 'cold';
  c ??= await start.initdb();
  setCluster(c);
  // The template is built by the run's start like on any server (the cluster is saved with it at the teardown).

  const info: RunCacheInfo = {
    status,
    dir,
    entry: start.entry,
    discarded: start.discarded.length ? start.discarded : undefined,
    saveAtEnd: { key: start.key, version: bins.version },
    note: start.note(),
  };
  if (writes.length) writes.push(start.finishWrites(info));
  return { cluster: c, info };
}

type TemplateOptions = Parameters<typeof templateNameFor>[0] & { versionNum: number };

/** One start through the cache: its entries, the notes and discarded entries it reports, the steps. */
class CachedStart {
  readonly entry: string;
  readonly baseEntry: string;
  readonly key: string;
  private readonly clusterOpts: { binDir: string; version: string; nativeDir?: string; meanwhile: () => void };
  private readonly notes: string[] = [];
  /** Entries deleted because they were damaged or would not start: said at the start of the run. */
  readonly discarded: string[] = [];

  constructor(
    private readonly bins: Binaries,
    private readonly dir: string,
    tplOpts: TemplateOptions,
    tplName: string,
    private readonly timings: Record<string, number>,
    private readonly writes: Promise<unknown>[],
  ) {
    this.key = clusterKey(bins, initdbFlags(Math.floor(tplOpts.versionNum / 10000)).join(' '));
    this.entry = entryPath(dir, this.key, tplName);
    this.baseEntry = entryPath(dir, this.key, 'base');
    // The driver loads while initdb or the server boots (it is needed only once the server is up).
    this.clusterOpts = { binDir: bins.binDir, version: bins.version, nativeDir: bins.nativeDir, meanwhile: loadDriver };
  }

  note(): string | undefined {
    return this.notes.length ? this.notes.join('; ') : undefined;
  }

  /** An entry's pack, or undefined (a damaged one is deleted and said). */
  load(file: string, opts?: { checksum?: boolean }): Pack | undefined {
    try {
      return readPack(file, opts);
    } catch (e) {
      this.ignore(file, e);
      return undefined;
    }
  }

  /** Say why an entry is not used; a damaged one is deleted. */
  private ignore(file: string, e: unknown, ino?: number): void {
    this.notes.push(`ignored ${messageOf(e)}`);
    if (e instanceof CorruptCacheError) {
      discard(file, ino);
      this.discarded.push(`the cache entry ${messageOf(e)}; it was deleted and this run started without it (a fresh entry is saved)`);
    }
  }

  /**
   * A server started from an entry, or undefined (an entry the server does not start from is
   * deleted and said). `verifying`: the pack's checksum is checked while the server boots (instead
   * of before it is unpacked); a mismatch stops that server and the entry is treated as damaged.
   */
  async restore(file: string, pack: Pack, opts: { verifying?: boolean } = {}): Promise<ClusterInfo | undefined> {
    let damaged: unknown;
    let checked = !opts.verifying;
    const check = () => {
      if (checked) return;
      checked = true;
      try {
        verifyPack(pack);
      } catch (e) {
        damaged = e;
      }
    };
    try {
      const c = await startCluster({ ...this.clusterOpts, meanwhile: opts.verifying ? check : this.clusterOpts.meanwhile, populate: (d, owner) => void unpackDataDir(pack, d, owner) });
      check();
      if (damaged !== undefined) {
        await stopCluster(c, { immediate: true }).catch(() => undefined);
        this.ignore(file, damaged, pack.ino);
        return undefined;
      }
      this.timings.restore = c.timings?.initdb ?? 0;
      this.timings.boot = c.timings?.start ?? 0;
      touch(file);
      return c;
    } catch (e) {
      // startCluster removed its dir. Bad data, or an environment problem the cold path will report.
      // A step that timed out is not the entry's fault: keep it, and let the error end the run.
      if ((e as { code?: string }).code === 'JESTPG_SETUP_TIMEOUT') throw e;
      check();
      if (damaged !== undefined) {
        this.ignore(file, damaged, pack.ino);
        return undefined;
      }
      this.notes.push(`ignored ${path.basename(file)}: ${messageOf(e).split('\n')[0]}`);
      discard(file, pack.ino);
      const lines = messageOf(e).split('\n');
      // The server's own words: its FATAL/PANIC line, else the first line of its output.
      const why = (lines.find((l) => /\b(PANIC|FATAL|ERROR):/.test(l)) ?? lines.slice(1).find((l) => l.trim()) ?? lines[0]).trim();
      this.discarded.push(`the server did not start from the cache entry ${path.basename(file)} (${why}); it was deleted and this run started without it (a fresh entry is saved)`);
      return undefined;
    }
  }

  /** Write a data dir as an entry, in the background (collected in `writes`); whether it was saved. */
  private save(file: string, d: string, template: string | null, what: string): Promise<boolean> {
    const w = writePack(file, collectDataDir(d), { key: this.key, template, version: this.bins.version, package: packageVersion() }).then(
      () => true,
      (e) => (this.notes.push(`${what} not saved: ${messageOf(e)}`), false),
    );
    this.writes.push(w);
    return w;
  }

  /** A server on a fresh initdb. */
  async initdb(): Promise<ClusterInfo> {
    // initdb's output is saved only once this project's template has changed (an entry of the
    // same binaries with another template exists): a first or CI run does not pay for it.
    const templateChanged = listEntries(this.dir, this.key).some((f) => f !== this.entry && f !== this.baseEntry);
    const c = await startCluster({
      ...this.clusterOpts,
      afterInitdb: templateChanged
        ? (d) => {
            try {
              void this.save(this.baseEntry, d, null, 'base');
            } catch (e) {
              this.notes.push(`base not saved: ${messageOf(e)}`);
            }
          }
        : undefined,
    });
    this.timings.initdb = c.timings?.initdb ?? 0;
    if (c.timings?.afterInitdb !== undefined) this.timings['cache(base)'] = c.timings.afterInitdb;
    this.timings.boot = c.timings?.start ?? 0;
    return c;
  }

  /** Once the background writes (the base entry) end: their notes into `info`. */
  async finishWrites(info: RunCacheInfo): Promise<void> {
    const tw = performance.now();
    await Promise.all([...this.writes]);
    info.note = this.note();
    this.timings['cache(write)'] = Math.round(performance.now() - tw);
  }
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

// ---------------------------------------------------------------------------------------------
// Saving at the teardown

/**
 * Called by the teardown on its connection, once the run's own databases are dropped: may the
 * cluster be saved as this template's entry? Only when it holds nothing but the system databases
 * and the complete template. Then a new WAL segment is started, so the shutdown checkpoint lands
 * in it and the older segments (initdb's, the migrations', the run's) are removed, not packed.
 */
export async function readyToSave(c: Queryable, m: RunManifest): Promise<boolean> {
  const info = m.cache;
  if (!info?.saveAtEnd || !m.cluster) return false;
  const dbs = (await c.query<{ datname: string; datistemplate: boolean }>('SELECT datname, datistemplate FROM pg_database ORDER BY datname')).rows;
  const extra = dbs.filter((d) => !['template0', 'template1', 'postgres', m.templateDb].includes(d.datname)).map((d) => d.datname);
  if (extra.length || !dbs.some((d) => d.datname === m.templateDb && d.datistemplate)) {
    info.note = [info.note, `not saved: the cluster holds ${extra.length ? `more than its template (${extra.join(', ')})` : 'no complete template'}`].filter(Boolean).join('; ');
    return false;
  }
  if (m.versionNum >= 120000) await c.query('SELECT pg_switch_wal()');
  return true;
}

/**
 * Stop the cluster cleanly, read its data dir, remove it, and write the data as the template's
 * entry (atomically: a run killed meanwhile leaves a temp file, removed by a later prune, never a
 * partial entry). Sets `m.cache.saved`; a failure is a note, never an error: the caller stops the
 * cluster whatever happened (stopCluster is idempotent).
 */
export async function saveClusterAtTeardown(m: RunManifest): Promise<void> {
  const info = m.cache;
  const c = m.cluster;
  if (!info?.saveAtEnd || !info.dir || !info.entry || !c) return;
  const note = (why: string) => (info.note = [info.note, `entry not saved: ${why}`].filter(Boolean).join('; '));
  let data: Collected;
  try {
    if (!(await stopCleanly(c))) return void note('the server did not shut down cleanly');
    if (!shutDownCleanly(c.dataDir)) return void note('the server did not record a clean shutdown');
    data = collectDataDir(c.dataDir);
  } catch (e) {
    return void note(messageOf(e));
  }
  // The data is in memory: the cluster's files go now (tmpfs), the entry is written next.
  await stopCluster(c).catch(() => undefined);
  const { key, version } = info.saveAtEnd;
  try {
    await writePack(info.entry, data, { key, template: m.templateDb, version, package: packageVersion() });
    info.saved = true;
  } catch (e) {
    note(messageOf(e));
  }
  prune(info.dir, [info.entry, entryPath(info.dir, key, 'base')]);
}
