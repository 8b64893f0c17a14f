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
