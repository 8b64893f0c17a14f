/**
 * The embedded cluster's cache: a cleanly shut-down data directory packed into one file, so a
 * warm start unpacks it (one sequential read, files created on tmpfs) instead of running initdb
 * and the migrations.
 *
 * Entries, in `cacheDir` (default `<rootDir>/node_modules/.cache/jest-environment-pg`):
 *   `<clusterKey>-base.pgdata`            initdb's output, before the server ever ran
 *   `<clusterKey>-<template name>.pgdata` a cluster holding that template and nothing else (saved
 *                                         when a run that built it stops its server)
 * `clusterKey` = server version + a hash of (binaries, this package's version, the initdb flags,
 * the pack format); the template name already hashes the migrations, seed and major version.
 *
 * One file per entry, written to a temp name and renamed into place: a reader sees a complete
 * entry or none, and two runs saving the same entry at once both succeed (the last rename wins).
 * Every entry carries its length, a trailer and a checksum; a damaged one is deleted and rebuilt.
 */
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { sha256 } from '../util/names';
import { isAlive } from '../util/proc';
import { packageVersion } from '../util/version';

const MAGIC = Buffer.from('JPGDATA\x01', 'latin1');
const TRAILER = Buffer.from('JPGEND\x00\x01', 'latin1');
const FORMAT = 1;
export const ENTRY_EXT = '.pgdata';
/** Entries kept per cache dir (≈ 25 MB each); the least recently used go first. */
export const MAX_ENTRIES = 4;
const PAGE = 8192;
const ZERO_PAGE = Buffer.alloc(PAGE);
/** Temp files of a save that died are removed after this long even if their pid looks alive. */
const STALE_TMP_MS = 60 * 60_000;

export class CorruptCacheError extends Error {}

// ---------------------------------------------------------------------------------------------
// Where the cache lives

export interface CacheLocation {
  /** Absolute, existing, writable directory; undefined when the cache is off. */
  dir?: string;
  /** Why it is off. */
  reason?: string;
}

/**
 * The cache dir for this run. `cacheDir: false` turns the cache off. The default
 * `<rootDir>/node_modules/.cache/jest-environment-pg` is used only when `<rootDir>/node_modules`
 * exists (we never create node_modules in a project that has none). A dir that cannot be created
 * or written turns the cache off: a cache never fails a run.
 */
export function resolveCacheDir(option: string | false | undefined, rootDir: string): CacheLocation {
  if (option === false) return { reason: 'cacheDir is false' };
  let dir: string;
  if (typeof option === 'string') {
    dir = path.resolve(rootDir, option);
  } else {
    const nm = path.join(rootDir, 'node_modules');
    try {
      if (!fs.statSync(nm).isDirectory()) return { reason: `${nm} is not a directory` };
    } catch {
      return { reason: `${nm} does not exist` };
    }
    dir = path.join(nm, '.cache', 'jest-environment-pg');
  }
  try {
    fs.mkdirSync(dir, { recursive: true });
    fs.accessSync(dir, fs.constants.W_OK | fs.constants.X_OK);
    return { dir };
  } catch (e) {
    return { reason: `${dir} cannot be used (${(e as Error).message})` };
  }
}

/** The part of an entry's name that says which binaries and cluster layout it was made with. */
export function clusterKey(bins: { binDir: string; version: string }, layout: string): string {
  let bin = bins.binDir;
  try {
    bin = fs.realpathSync(bins.binDir);
  } catch {
    // keep as given
  }
  const h = sha256(`format ${FORMAT}`, packageVersion(), bins.version, bin, process.platform, process.arch, layout);
  return `pg${bins.version.replace(/[^0-9A-Za-z.]/g, '')}-${h.slice(0, 12)}`;
}

export function entryPath(dir: string, key: string, name: string): string {
  return path.join(dir, `${key}-${name}${ENTRY_EXT}`);
}

// ---------------------------------------------------------------------------------------------
// The pack format
//
//   MAGIC (8) | u32 LE header length | header JSON | data | TRAILER (8)
//   header: { format, meta, sum: { algo, value }, dataBytes, entries: [rel, kind, mode, size, stored][] }
// A file's `stored` bytes are its content up to the last non-zero 8 kB page (WAL segments are
// mostly preallocated zeros); the rest is restored as a hole by truncating to `size`.

type Entry = [rel: string, kind: 'd' | 'f', mode: number, size: number, stored: number];

interface Header {
  format: number;
  meta: Record<string, unknown>;
  sum: { algo: string; value: string };
  dataBytes: number;
  entries: Entry[];
}

export interface Pack {
  file: string;
  /** The inode read, so only that very file is discarded when it turns out bad. */
  ino: number;
  header: Header;
  buf: Buffer;
  dataStart: number;
}

function checksum(data: Buffer): { algo: string; value: string } {
  const crc32 = (zlib as unknown as { crc32?: (b: Buffer) => number }).crc32;
  if (crc32) return { algo: 'crc32', value: crc32(data).toString(16) };
  return { algo: 'sha1', value: createHash('sha1').update(data).digest('hex') };
}

function checksumWith(algo: string, data: Buffer): string | undefined {
  const crc32 = (zlib as unknown as { crc32?: (b: Buffer) => number }).crc32;
  if (algo === 'crc32') return crc32 ? crc32(data).toString(16) : undefined;
  if (algo === 'sha1') return createHash('sha1').update(data).digest('hex');
  return undefined;
}

/** Files of a data directory that are not part of a snapshot. */
const SKIP = new Set(['postmaster.opts']);

export interface Collected {
  entries: Entry[];
  body: Buffer;
}

/**
 * Pack a stopped data directory into `file` (atomically: temp name, then rename).
 * Refuses a directory whose server is running or did not shut down cleanly (postmaster.pid).
 */
export async function packDataDir(dataDir: string, file: string, meta: Record<string, unknown> = {}): Promise<{ bytes: number; files: number }> {
  return writePack(file, collectDataDir(dataDir), meta);
}

/**
 * Read a stopped data directory into memory (synchronously: the caller may start a server on it
 * as soon as this returns, and write the pack meanwhile with writePack).
 */
export function collectDataDir(dataDir: string): Collected {
  if (fs.existsSync(path.join(dataDir, 'postmaster.pid'))) throw new Error(`refusing to pack ${dataDir}: postmaster.pid exists (server running or not shut down cleanly)`);
  // First the tree and the sizes, then every file read straight into one buffer (no copies).
  const entries: Entry[] = [];
  let total = 0;
  const walk = (rel: string) => {
    const abs = rel ? path.join(dataDir, rel) : dataDir;
    const st = fs.lstatSync(abs);
    if (st.isDirectory()) {
      entries.push([rel, 'd', st.mode & 0o7777, 0, 0]);
      for (const name of fs.readdirSync(abs).sort()) {
        if (!rel && SKIP.has(name)) continue;
        walk(rel ? `${rel}/${name}` : name);
      }
    } else if (st.isFile()) {
      entries.push([rel, 'f', st.mode & 0o7777, st.size, st.size]);
      total += st.size;
    } else {
      // Tablespace symlinks, sockets: not a layout we made; do not cache it.
      throw new Error(`refusing to pack ${dataDir}: ${rel} is not a regular file or directory`);
    }
  };
  walk('');
  const data = Buffer.allocUnsafe(total);
  let off = 0;
  for (const e of entries) {
    const size = e[3];
    if (e[1] !== 'f' || size === 0) continue;
    const fd = fs.openSync(path.join(dataDir, e[0]), 'r');
    try {
      let got = 0;
      while (got < size) {
        const n = fs.readSync(fd, data, off + got, size - got, got);
        if (n === 0) throw new Error(`refusing to pack ${dataDir}: ${e[0]} shrank while being read`);
        got += n;
      }
    } finally {
      fs.closeSync(fd);
    }
    // Trailing zero pages (preallocated WAL) are not stored: unpacking truncates to the size.
    let stored = size;
    if (size >= 8 * PAGE && size % PAGE === 0) {
      while (stored > 0 && data.subarray(off + stored - PAGE, off + stored).equals(ZERO_PAGE)) stored -= PAGE;
    }
    e[4] = stored;
    off += stored;
  }
  return { entries, body: data.subarray(0, off) };
}

/**
 * Did the server of this data dir shut down cleanly (global/pg_control says "shut down")? Only
 * such a dir is saved: a server started from it needs no crash recovery. The state is the
 * fourth field of ControlFileData (after the system identifier and two version numbers), in the
 * machine's byte order; 1 is DB_SHUTDOWNED.
 */
export function shutDownCleanly(dataDir: string): boolean {
  try {
    const fd = fs.openSync(path.join(dataDir, 'global', 'pg_control'), 'r');
    try {
      const b = Buffer.alloc(20);
      if (fs.readSync(fd, b, 0, 20, 0) < 20) return false;
      return (os.endianness() === 'LE' ? b.readInt32LE(16) : b.readInt32BE(16)) === 1;
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return false;
  }
}

/** Write collected data as the entry `file`, atomically. */
export async function writePack(file: string, c: Collected, meta: Record<string, unknown> = {}): Promise<{ bytes: number; files: number }> {
  await new Promise((r) => setImmediate(r)); // let the caller go on (start its server) before the checksum takes the CPU
  const header: Header = { format: FORMAT, meta, sum: checksum(c.body), dataBytes: c.body.length, entries: c.entries };
  const hbuf = Buffer.from(JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(4);
  len.writeUInt32LE(hbuf.length);
  await writeAtomic(file, [MAGIC, len, hbuf, c.body, TRAILER]);
  return { bytes: MAGIC.length + 4 + hbuf.length + c.body.length + TRAILER.length, files: c.entries.length };
}

async function writeAtomic(file: string, parts: Buffer[]): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    const fh = await fs.promises.open(tmp, 'wx', 0o644);
    try {
      for (const part of parts) {
        let done = 0;
        while (done < part.length) done += (await fh.write(part, done, part.length - done)).bytesWritten;
      }
    } finally {
      await fh.close();
    }
    await fs.promises.rename(tmp, file);
  } catch (e) {
    await fs.promises.rm(tmp, { force: true }).catch(() => undefined);
    throw e;
  }
}

/**
 * Read and verify an entry. undefined when there is none; throws CorruptCacheError when it is
 * damaged (truncated, wrong magic, bad checksum, unsafe paths). `checksum: false` leaves the
 * checksum to verifyPack (the caller runs it while the server boots from the unpacked data); the
 * structure, paths included, is always checked here.
 */
export function readPack(file: string, opts: { checksum?: boolean } = {}): Pack | undefined {
  let buf: Buffer;
  let ino: number;
  try {
    const fd = fs.openSync(file, 'r');
    try {
      ino = fs.fstatSync(fd).ino;
      buf = fs.readFileSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new CorruptCacheError(`cannot read ${file}: ${(e as Error).message}`);
  }
  const bad = (why: string) => new CorruptCacheError(`${path.basename(file)}: ${why}`);
  if (buf.length < MAGIC.length + 4 + TRAILER.length || !buf.subarray(0, MAGIC.length).equals(MAGIC)) throw bad('not a jest-environment-pg cache entry');
  if (!buf.subarray(buf.length - TRAILER.length).equals(TRAILER)) throw bad('truncated (no trailer)');
  const hlen = buf.readUInt32LE(MAGIC.length);
  const dataStart = MAGIC.length + 4 + hlen;
  if (dataStart > buf.length - TRAILER.length) throw bad('truncated header');
  let header: Header;
  try {
    header = JSON.parse(buf.toString('utf8', MAGIC.length + 4, dataStart)) as Header;
  } catch {
    throw bad('unreadable header');
  }
  if (header.format !== FORMAT || !Array.isArray(header.entries) || !header.sum) throw bad('unknown format');
  if (dataStart + header.dataBytes + TRAILER.length !== buf.length) throw bad('length mismatch');
  let sum = 0;
  for (const e of header.entries) {
    const [rel, kind, mode, size, stored] = e;
    if (typeof rel !== 'string' || (kind !== 'd' && kind !== 'f') || !Number.isInteger(mode) || !Number.isInteger(size) || !Number.isInteger(stored) || stored < 0 || stored > size) {
      throw bad('bad entry');
    }
    if (rel !== '' && (path.isAbsolute(rel) || rel.split('/').some((p) => p === '' || p === '.' || p === '..'))) throw bad(`unsafe path ${rel}`);
    sum += stored;
  }
  if (sum !== header.dataBytes || header.entries[0]?.[0] !== '' || header.entries[0]?.[1] !== 'd') throw bad('entries do not match the data');
  const pack = { file, ino, header, buf, dataStart };
  if (opts.checksum !== false) verifyPack(pack);
  return pack;
}

/** Throws CorruptCacheError when the entry's data does not match its checksum. */
export function verifyPack(pack: Pack): void {
  const { header, buf, dataStart } = pack;
  const actual = checksumWith(header.sum.algo, buf.subarray(dataStart, dataStart + header.dataBytes));
  if (actual !== undefined && actual !== header.sum.value) throw new CorruptCacheError(`${path.basename(pack.file)}: checksum mismatch`);
}

/**
 * Recreate the data directory `dataDir` (must not exist) from a pack, owned by `owner` when given
 * (we are root and the server runs as an unprivileged user).
 */
export function unpackDataDir(pack: Pack, dataDir: string, owner?: { uid: number; gid: number }): { files: number; bytes: number } {
  let off = pack.dataStart;
  let bytes = 0;
  for (const [rel, kind, mode, size, stored] of pack.header.entries) {
    const abs = rel ? path.join(dataDir, rel) : dataDir;
    if (kind === 'd') {
      fs.mkdirSync(abs, { mode });
      if (mode & 0o077) fs.chmodSync(abs, mode); // mkdir's mode is filtered by the umask
      if (owner) fs.chownSync(abs, owner.uid, owner.gid);
      continue;
    }
    const fd = fs.openSync(abs, 'wx', mode);
    try {
      if (owner) fs.fchownSync(fd, owner.uid, owner.gid);
      // Data files are 0600: only group/other bits can have been taken by the umask.
      if (mode & 0o077) fs.fchmodSync(fd, mode);
      let done = 0;
      while (done < stored) done += fs.writeSync(fd, pack.buf, off + done, stored - done, done);
      if (size > stored) fs.ftruncateSync(fd, size);
    } finally {
      fs.closeSync(fd);
    }
    off += stored;
    bytes += size;
  }
  return { files: pack.header.entries.length, bytes };
}

// ---------------------------------------------------------------------------------------------
// Housekeeping

/** Remove a bad entry, but only the very file that was read (another run may have replaced it since). */
export function discard(file: string, ino?: number): void {
  try {
    if (ino !== undefined && fs.statSync(file).ino !== ino) return;
    fs.rmSync(file, { force: true });
  } catch {
    // gone already
  }
}

/** Mark an entry as recently used (pruning keeps the most recently used). */
export function touch(file: string): void {
  const now = new Date();
  try {
    fs.utimesSync(file, now, now);
  } catch {
    // read-only cache: fine
  }
}

/**
 * Keep the MAX_ENTRIES most recently used entries (never those in `keep`), and remove temp files
 * of saves that died. Best effort: concurrent runs may prune at the same time.
 */
export function prune(dir: string, keep: string[] = [], max = MAX_ENTRIES): string[] {
  const removed: string[] = [];
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return removed;
  }
  const entries: { file: string; mtime: number }[] = [];
  for (const name of names) {
    const file = path.join(dir, name);
    const tmp = /\.pgdata\.tmp-(\d+)-[0-9a-f]+$/.exec(name);
    try {
      if (tmp) {
        const age = Date.now() - fs.statSync(file).mtimeMs;
        if (!isAlive(Number(tmp[1])) || age > STALE_TMP_MS) {
          fs.rmSync(file, { force: true });
          removed.push(file);
        }
      } else if (name.endsWith(ENTRY_EXT)) {
        entries.push({ file, mtime: fs.statSync(file).mtimeMs });
      }
    } catch {
      // raced with another run
    }
  }
  const keepSet = new Set(keep.map((k) => path.resolve(k)));
  const sorted = entries.sort((a, b) => b.mtime - a.mtime);
  let kept = sorted.filter((e) => keepSet.has(path.resolve(e.file))).length;
  for (const e of sorted) {
    if (keepSet.has(path.resolve(e.file))) continue;
    if (kept < max) {
      kept++;
      continue;
    }
    try {
      fs.rmSync(e.file, { force: true });
      removed.push(e.file);
    } catch {
      // raced
    }
  }
  return removed;
}
