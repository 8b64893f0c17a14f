/** The embedded cluster through the cache dir (warm, base, cold), see server/cache.ts. */
import { readdirSync } from 'node:fs';
import * as path from 'node:path';
import { withClient } from '../util/admin';
import { type Binaries } from '../server/binaries';
import { clusterKey, collectDataDir, CorruptCacheError, discard, entryPath, prune, readPack, touch, unpackDataDir, writePack, type Pack } from '../server/cache';
import { initdbFlags, snapshotCluster, startCluster, versionNumOf, type ClusterInfo } from '../server/cluster';
import { messageOf } from '../util/errors';
import { type PgOptions } from '../util/options';
import { step } from '../util/settle';
import { ensureTemplateDetailed, templateNameFor } from '../schema/template';
import { packageVersion } from '../util/version';
import type { RunCacheInfo } from './manifest';

/**
 * The embedded cluster through the cache (see cache.ts):
 * - warm: the entry for this template exists → restore it and start; no initdb, no migrations;
 * - else restore initdb's output (the base entry) or run initdb (and save its output as the base
 *   entry before the server first starts), build the template, and — when the cluster holds
 *   nothing but the system databases and that template — stop the server cleanly, save the data
 *   dir as this template's entry, start the server again.
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

  const warmPack = start.load(start.entry);
  if (warmPack) {
    const c = await start.restore(start.entry, warmPack);
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
  await start.buildTemplate(c);

  const info: RunCacheInfo = { status, dir, entry: start.entry, discarded: start.discarded.length ? start.discarded : undefined };
  const { saved } = await start.saveEntry(c, (snapped) => {
    c = snapped;
    setCluster(c);
  });
  info.note = start.note();
  writes.push(start.finishWrites(info, saved));
  return { cluster: c, info };
}

type TemplateOptions = Parameters<typeof templateNameFor>[0] & { versionNum: number };

/** One start through the cache: its entries, the notes and discarded entries it reports, the steps. */
class CachedStart {
  readonly entry: string;
  readonly baseEntry: string;
  private readonly key: string;
  private readonly clusterOpts: { binDir: string; version: string; nativeDir?: string };
  private readonly notes: string[] = [];
  /** Entries deleted because they were damaged or would not start: said at the start of the run. */
  readonly discarded: string[] = [];

  constructor(
    private readonly bins: Binaries,
    private readonly dir: string,
    private readonly tplOpts: TemplateOptions,
    private readonly tplName: string,
    private readonly timings: Record<string, number>,
    private readonly writes: Promise<unknown>[],
  ) {
    this.key = clusterKey(bins, initdbFlags(Math.floor(tplOpts.versionNum / 10000)).join(' '));
    this.entry = entryPath(dir, this.key, tplName);
    this.baseEntry = entryPath(dir, this.key, 'base');
    this.clusterOpts = { binDir: bins.binDir, version: bins.version, nativeDir: bins.nativeDir };
  }

  note(): string | undefined {
    return this.notes.length ? this.notes.join('; ') : undefined;
  }

  /** An entry's pack, or undefined (a damaged one is deleted and said). */
  load(file: string): Pack | undefined {
    try {
      return readPack(file);
    } catch (e) {
      this.notes.push(`ignored ${messageOf(e)}`);
      if (e instanceof CorruptCacheError) {
        discard(file);
        this.discarded.push(`the cache entry ${messageOf(e)}; it was deleted and this run started without it (a fresh entry is saved)`);
      }
      return undefined;
    }
  }

  /** A server started from an entry, or undefined (an entry the server does not start from is deleted and said). */
  async restore(file: string, pack: Pack): Promise<ClusterInfo | undefined> {
    try {
      const c = await startCluster({ ...this.clusterOpts, populate: (d, owner) => void unpackDataDir(pack, d, owner) });
      this.timings.restore = c.timings?.initdb ?? 0;
      this.timings.boot = c.timings?.start ?? 0;
      touch(file);
      return c;
    } catch (e) {
      // startCluster removed its dir. Bad data, or an environment problem the cold path will report.
      // A step that timed out is not the entry's fault: keep it, and let the error end the run.
      if ((e as { code?: string }).code === 'JESTPG_SETUP_TIMEOUT') throw e;
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

  async buildTemplate(c: ClusterInfo): Promise<void> {
    const tt = performance.now();
    const url = c.url;
    const tpl = await step('building the template (migrations)', (signal) => ensureTemplateDetailed(url, { ...this.tplOpts, signal }));
    this.timings[tpl.built ? 'template(built)' : 'template(reused)'] = Math.round(performance.now() - tt);
  }

  /**
   * Save the cluster as this template's entry when it holds nothing else: the server is stopped
   * cleanly, its data dir collected, and started again (`restarted` gets the new server).
   * `saved`: whether the entry was saved, once its background write ends (undefined: not attempted).
   */
  async saveEntry(c: ClusterInfo, restarted: (c: ClusterInfo) => void): Promise<{ saved: Promise<boolean> | undefined }> {
    const ts = performance.now();
    const dbs = await withClient(
      c.url,
      async (x) => {
        const names = (await x.query<{ datname: string }>('SELECT datname FROM pg_database ORDER BY datname')).rows.map((r) => r.datname);
        // Start a new WAL segment: the shutdown checkpoint then lands in it and the old one (initdb's
        // and the migrations' WAL, ≈ 9 MB) is removed, not packed.
        if (this.tplOpts.versionNum >= 120000) await x.query('SELECT pg_switch_wal()');
        return names;
      },
      { applicationName: 'jest-environment-pg cache' },
    );
    const extra = dbs.filter((d) => !['template0', 'template1', 'postgres', this.tplName].includes(d));
    if (extra.length) {
      this.notes.push(`not saved: the cluster holds more than its template (${extra.join(', ')})`);
      return { saved: undefined };
    }
    let saved: Promise<boolean> | undefined;
    const snap = await snapshotCluster(c, async (d) => {
      saved = this.save(this.entry, d, this.tplName, 'entry');
    });
    restarted(snap.cluster);
    this.timings.snapshot = Math.round(performance.now() - ts);
    if (snap.saveError) this.notes.push(`entry not saved: ${messageOf(snap.saveError)}`);
    return { saved };
  }

  /** Once the background writes end: the entry's outcome and notes into `info`, old entries pruned. */
  async finishWrites(info: RunCacheInfo, saved: Promise<boolean> | undefined): Promise<void> {
    const pending = [...this.writes];
    const tw = performance.now();
    await Promise.all(pending);
    info.saved = saved ? await saved : false;
    info.note = this.note();
    if (pending.length) this.timings['cache(write)'] = Math.round(performance.now() - tw);
    prune(this.dir, [this.entry, this.baseEntry]);
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
