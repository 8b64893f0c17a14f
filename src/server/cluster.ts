import { randomBytes } from 'node:crypto';
/**
 * A throwaway PostgreSQL cluster: initdb into a temp dir (RAM-backed when possible), start
 * `postgres` directly, detached so it outlives the process that started it, stop it and
 * remove every file of it. Runs Postgres as an unprivileged user when we are root.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync, promises as fsp, readFileSync, rmSync, constants as fsc } from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { hydrateSymlinks, missingSymlinks, reachableBy } from './binaries';
import { errors } from '../util/errors';
import { isAlive } from '../util/proc';
import { step } from '../util/settle';
import { sleep } from '../util/text';

export interface ClusterInfo {
  /** The postmaster's pid. */
  pid: number;
  port: number;
  /** Directory of the unix socket (`.s.PGSQL.<port>`). */
  socketDir: string;
  dataDir: string;
  /** Everything of the cluster lives under this dir (`jest-pg-*`); removed by stopCluster. */
  baseDir: string;
  binDir: string;
  /** The superuser role. */
  user: string;
  /** postgres://postgres@127.0.0.1:<port>/postgres */
  url: string;
  /** e.g. 180004 */
  versionNum: number;
  /** The OS user Postgres runs as, when we dropped privileges. */
  osUser?: { uid: number; gid: number; name: string };
  /** ms spent: initdb (or restoring the data dir from the cache, see `restored`), start. */
  timings?: { initdb: number; start: number; total: number; afterInitdb?: number };
  /** The data dir was populated from a cache entry instead of initdb. */
  restored?: boolean;
  /** Extra `-c` settings it was started with (a restart uses them again). */
  settings?: Record<string, string>;
}

export interface StartClusterOptions {
  binDir: string;
  /** "18.4" */
  version: string;
  /** The embedded package's native dir (bin/lib/share side by side), copied when the server user cannot read it. */
  nativeDir?: string;
  /** Parent dir for the cluster's base dir; default /dev/shm when writable with room, else os.tmpdir(). */
  baseDir?: string;
  /** Extra `-c` settings. */
  settings?: Record<string, string>;
  /**
   * Fill the (not yet existing) data dir instead of running initdb — a warm start from the cache.
   * `owner` is the user Postgres runs as, when we are root.
   */
  populate?: (dataDir: string, owner?: { uid: number; gid: number }) => void | Promise<void>;
  /** Called with initdb's output before the server first starts (to snapshot a pristine cluster). */
  afterInitdb?: (dataDir: string) => void | Promise<void>;
  /**
   * Synchronous work that needs no server, done once initdb or the server is spawned, while it
   * runs in its own process (the caller loads its database driver then). What it throws is
   * ignored here: the caller meets it again when it uses what it loaded.
   */
  meanwhile?: () => void;
}

/** initdb's flags; part of the cache key (a cached cluster must have been made the same way). */
export function initdbFlags(major: number): string[] {
  // Trust only on the unix socket (its directory is private to the run); loopback TCP needs
  // the cluster's random password, so other local users cannot reach the throwaway server.
  const f = ['--auth-local=trust', '--auth-host=scram-sha-256', '-U', 'postgres', '-E', 'UTF8', '--locale=C', '--no-sync'];
  if (major >= 14) f.push('--no-instructions');
  if (major >= 18) f.push('--no-data-checksums');
  return f;
}

const PREFIX = 'jest-pg-';
const PASSWORD_FILE = 'jestpg.password';

/** The superuser URL over loopback TCP, with the cluster's password (kept in its data dir). */
export function clusterUrl(dataDir: string, port: number): string {
  let password = '';
  try {
    password = readFileSync(path.join(dataDir, PASSWORD_FILE), 'utf8').trim();
  } catch {
    // a cluster made before passwords (trust): no password
  }
  return `postgres://postgres${password ? ':' + encodeURIComponent(password) : ''}@127.0.0.1:${port}/postgres`;
}
const MIN_SHM_FREE = 512 * 1024 * 1024;

export function versionNumOf(version: string): number {
  const [a, b] = version.split('.').map((x) => Number(x) || 0);
  return a >= 10 ? a * 10000 + b : a * 10000 + b * 100;
}

/** Where the base dir goes: /dev/shm (RAM) when it is writable and has room, else the temp dir. */
export async function pickRoot(): Promise<string> {
  // Explicit override (tests use it to keep every artifact of a run in one private dir).
  if (process.env.JEST_PG_DATA_ROOT) return process.env.JEST_PG_DATA_ROOT;
  const shm = '/dev/shm';
  try {
    await fsp.access(shm, fsc.W_OK | fsc.X_OK);
    const st = await fsp.statfs(shm);
    if (st.bavail * st.bsize >= MIN_SHM_FREE) return shm;
  } catch {
    // no /dev/shm (macOS) or not writable
  }
  return os.tmpdir();
}

/** When root, the user Postgres runs as: `nobody` (or $JEST_PG_OS_USER). */
export function serverOsUser(): { uid: number; gid: number; name: string } | undefined {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return undefined;
  const wanted = process.env.JEST_PG_OS_USER || 'nobody';
  let passwd = '';
  try {
    passwd = readFileSync('/etc/passwd', 'utf8');
  } catch {
    // fall through
  }
  for (const line of passwd.split('\n')) {
    const f = line.split(':');
    if (f[0] === wanted && f.length >= 4) {
      const uid = Number(f[2]);
      const gid = Number(f[3]);
      if (uid > 0 && Number.isInteger(gid)) return { uid, gid, name: wanted };
    }
  }
  if (wanted === 'nobody' && process.platform === 'linux') return { uid: 65534, gid: 65534, name: 'nobody' };
  throw errors.noUnprivilegedUser();
}

export async function startCluster(opts: StartClusterOptions): Promise<ClusterInfo> {
  const t0 = performance.now();
  const osUser = serverOsUser();
  const root = opts.baseDir ?? (await pickRoot());
  const baseDir = await fsp.mkdtemp(path.join(root, PREFIX));
  try {
    await fsp.chmod(baseDir, 0o700);
    if (osUser) await fsp.chown(baseDir, osUser.uid, osUser.gid);
    const binDir = await usableBinDir(opts, baseDir, osUser);
    const dataDir = path.join(baseDir, 'data');
    const major = Math.floor(versionNumOf(opts.version) / 10000);
    const env = childEnv(baseDir);

    let afterInitdb: number | undefined;
    if (opts.populate) {
      const populate = opts.populate;
      await step('restoring the cluster from the cache', async () => populate(dataDir, osUser));
    } else {
      const password = randomBytes(18).toString('base64url');
      const pwfile = path.join(baseDir, 'pwfile');
      await fsp.writeFile(pwfile, password + '\n', { mode: 0o600 });
      if (osUser) await fsp.chown(pwfile, osUser.uid, osUser.gid);
      const initArgs = ['-D', dataDir, ...initdbFlags(major), `--pwfile=${pwfile}`];
      // Bounded: a hung initdb is killed and reported (JESTPG_SETUP_TIMEOUT), its dir removed below.
      const init = await step('initdb', (signal) => runToEnd(path.join(binDir, 'initdb'), initArgs, { env, cwd: baseDir, osUser, signal, meanwhile: opts.meanwhile }));
      await fsp.rm(pwfile, { force: true });
      if (init.code !== 0) throw errors.initdbFailed(`initdb ${initArgs.join(' ')} exited with ${init.code}:\n${init.output}`);
      // Kept inside the data dir (private, and part of a cached snapshot) for the admin URL.
      const kept = path.join(dataDir, PASSWORD_FILE);
      await fsp.writeFile(kept, password, { mode: 0o600 });
      if (osUser) await fsp.chown(kept, osUser.uid, osUser.gid);
      if (opts.afterInitdb) {
        const ta = performance.now();
        await opts.afterInitdb(dataDir);
        afterInitdb = Math.round(performance.now() - ta);
      }
    }
    const tInit = performance.now();

    const { pid, port } = await startOnFreePort({ binDir, dataDir, baseDir, env, osUser, major, settings: opts.settings, meanwhile: opts.meanwhile }, { bounded: true });
    const tEnd = performance.now();
    return {
      pid,
      port,
      socketDir: baseDir,
      dataDir,
      baseDir,
      binDir,
      user: 'postgres',
      url: clusterUrl(dataDir, port),
      versionNum: versionNumOf(opts.version),
      osUser,
      timings: { initdb: Math.round(tInit - t0) - (afterInitdb ?? 0), start: Math.round(tEnd - tInit), total: Math.round(tEnd - t0), afterInitdb },
      restored: opts.populate ? true : undefined,
      settings: opts.settings,
    };
  } catch (e) {
    await fsp.rm(baseDir, { recursive: true, force: true }).catch(() => undefined);
    throw e;
  }
}

/** The bin dir, or a copy of the embedded native dir inside baseDir when the server user cannot use it as is. */
async function usableBinDir(
  opts: StartClusterOptions,
  baseDir: string,
  osUser: ClusterInfo['osUser'],
): Promise<string> {
  // Their real location: it is what the server user must reach, so it is what gets spawned (a
  // symlinked node_modules under a private directory is reachable only through its target).
  const real = (p: string) => fsp.realpath(p).catch(() => p);
  const binDir = await real(opts.binDir);
  const postgres = path.join(binDir, 'postgres');
  const native = opts.nativeDir && (await real(opts.nativeDir));
  const symlinksOk = !native || missingSymlinks(native).length === 0 || hydrateSymlinks(native);
  const reachable =
    !osUser ||
    ((await reachableBy(postgres, osUser.uid, osUser.gid)) &&
      (!native || (await reachableBy(path.join(native, 'share'), osUser.uid, osUser.gid))));
  if (symlinksOk && reachable) return binDir;
  if (!native) {
    throw errors.startFailed(
      `The PostgreSQL binaries in ${opts.binDir} cannot be read by the user "${osUser?.name}" that Postgres must run as (it refuses to run as root).`,
    );
  }
  // Copy bin/lib/share (≈ 60 MB) next to the cluster; removed with it.
  const copy = path.join(baseDir, 'native');
  await fsp.cp(native, copy, { recursive: true, verbatimSymlinks: true });
  hydrateSymlinks(copy);
  if (osUser) await chownTree(copy, osUser.uid, osUser.gid);
  return path.join(copy, 'bin');
}

async function chownTree(dir: string, uid: number, gid: number): Promise<void> {
  await fsp.lchown(dir, uid, gid);
  for (const e of await fsp.readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) await chownTree(p, uid, gid);
    else await fsp.lchown(p, uid, gid);
  }
}

function childEnv(baseDir: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? '/usr/bin:/bin', LC_ALL: 'C', LANG: 'C', HOME: baseDir };
  if (process.env.TZ) env.TZ = process.env.TZ;
  if (process.env.SYSTEMROOT) env.SYSTEMROOT = process.env.SYSTEMROOT;
  return env;
}

function runToEnd(
  file: string,
  args: string[],
  o: { env: NodeJS.ProcessEnv; cwd: string; osUser?: ClusterInfo['osUser']; signal?: AbortSignal; meanwhile?: () => void },
): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    let output = '';
    let child: ChildProcess;
    try {
      // An abort (the step's bound) kills it: nothing of a hung initdb outlives the setup.
      child = spawn(file, args, { env: o.env, cwd: o.cwd, uid: o.osUser?.uid, gid: o.osUser?.gid, stdio: ['ignore', 'pipe', 'pipe'], signal: o.signal, killSignal: 'SIGKILL' });
    } catch (e) {
      resolve({ code: -1, output: String(e) });
      return;
    }
    child.stdout!.on('data', (d) => (output += d));
    child.stderr!.on('data', (d) => (output += d));
    child.on('error', (e) => {
      // Aborted: it is being killed; resolve on 'close', once it is gone (its dir is removed next).
      if (e.name === 'AbortError' && child.pid !== undefined && child.exitCode === null && child.signalCode === null) return;
      resolve({ code: -1, output: output + String(e) });
    });
    child.on('close', (code, signal) => resolve({ code: code ?? (signal ? 128 : -1), output }));
    meanwhile(o.meanwhile);
  });
}

/** Run a `meanwhile` hook (StartClusterOptions): its errors are the caller's to meet later. */
function meanwhile(f: (() => void) | undefined): void {
  try {
    f?.();
  } catch {
    // met again by the caller
  }
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

type PostmasterOptions = Parameters<typeof startPostmaster>[0];

/**
 * Start the postmaster on a free port (`firstPort` first, if given), on another while the port
 * turns out to be taken (8 tries); JESTPG_START_FAILED with the server's log if it never starts.
 * `bounded`: each try is the setup step "starting the server" (JEST_PG_SETUP_TIMEOUT_MS).
 */
async function startOnFreePort(o: Omit<PostmasterOptions, 'port' | 'signal'>, opts: { firstPort?: number; bounded?: boolean } = {}): Promise<{ pid: number; port: number }> {
  let lastLog = '';
  for (let attempt = 0; attempt < 8; attempt++) {
    const port = attempt === 0 && opts.firstPort ? opts.firstPort : await freePort();
    const r = opts.bounded ? await step('starting the server', (signal) => startPostmaster({ ...o, port, signal })) : await startPostmaster({ ...o, port });
    if ('pid' in r) return { pid: r.pid, port };
    lastLog = r.log;
    if (!r.portInUse) break;
  }
  throw errors.startFailed(lastLog || '(no server log)');
}

/** Connections the embedded server allows: Postgres' default, more on a machine that runs many workers. */
export function maxConnections(cores = typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length): number {
  return Math.max(100, 4 * cores + 20);
}

/** Settings that make a disposable cluster fast and quiet. Durability is irrelevant: it is deleted at the end. */
export function serverSettings(major: number, port: number, socketDir: string): Record<string, string> {
  const s: Record<string, string> = {
    listen_addresses: '127.0.0.1',
    port: String(port),
    unix_socket_directories: socketDir,
    unix_socket_permissions: '0777',
    fsync: 'off',
    full_page_writes: 'off',
    synchronous_commit: 'off',
    wal_level: 'minimal',
    max_wal_senders: '0',
    archive_mode: 'off',
    checkpoint_timeout: '1d',
    max_wal_size: '256MB',
    min_wal_size: '32MB',
    autovacuum: 'off',
    // Sized for the run, not more: the server's boot sets up its shared memory (the lock table is
    // max_connections × max_locks_per_transaction), ≈ 6 ms more at 200 connections and 64MB.
    // A sandbox needs one connection per worker, the run a few of its own.
    max_connections: String(maxConnections()),
    // A file's whole run is one transaction: it can hold many locks.
    max_locks_per_transaction: '256',
    shared_buffers: '32MB',
    // Dynamic shared memory as files in the data dir (pg_dynshmem/), not /dev/shm/PostgreSQL.*:
    // a server that is killed (SIGKILL, the machine) leaves nothing behind once its dir is removed.
    dynamic_shared_memory_type: 'mmap',
    jit: 'off',
    huge_pages: 'off',
    logging_collector: 'off',
    log_destination: 'stderr',
    log_min_messages: 'warning',
    log_checkpoints: 'off',
    lc_messages: 'C',
  };
  if (major >= 18) s.io_method = 'sync';
  // Old WAL segments are removed, not kept under future names with their old contents: a cached
  // snapshot then holds one mostly empty segment (see run/cached-cluster.ts: pg_switch_wal before the server stops to be saved).
  if (major >= 12) s.wal_recycle = 'off';
  return s;
}

async function startPostmaster(o: {
  binDir: string;
  dataDir: string;
  baseDir: string;
  port: number;
  env: NodeJS.ProcessEnv;
  osUser?: ClusterInfo['osUser'];
  major: number;
  settings?: Record<string, string>;
  /** Stop waiting (and stop the server) when it aborts. */
  signal?: AbortSignal;
  /** Synchronous work done once the server is spawned, while it boots. */
  meanwhile?: () => void;
}): Promise<{ pid: number } | { log: string; portInUse: boolean }> {
  const logPath = path.join(o.baseDir, 'server.log');
  const fd = openSync(logPath, 'a', 0o644);
  const settings = { ...serverSettings(o.major, o.port, o.baseDir), ...o.settings };
  const args = ['-D', o.dataDir];
  for (const [k, v] of Object.entries(settings)) args.push('-c', `${k}=${v}`);
  let child: ChildProcess;
  try {
    child = spawn(path.join(o.binDir, 'postgres'), args, {
      env: o.env,
      cwd: o.baseDir,
      uid: o.osUser?.uid,
      gid: o.osUser?.gid,
      detached: true,
      stdio: ['ignore', fd, fd],
    });
  } finally {
    closeSync(fd);
  }
  child.unref();
  let exited = false;
  child.on('exit', () => (exited = true));
  child.on('error', () => (exited = true));
  meanwhile(o.meanwhile);
  const pidFile = path.join(o.dataDir, 'postmaster.pid');
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (exited || child.pid === undefined || o.signal?.aborted) break;
    try {
      const lines = readFileSync(pidFile, 'utf8').split('\n');
      // Line 8 is the postmaster status (PG 10+): "ready" once it accepts connections.
      if (Number(lines[0]) === child.pid && (lines[7] ?? '').trim() === 'ready') return { pid: child.pid };
    } catch {
      // not written yet
    }
    await sleep(3);
  }
  const log = readLog(logPath);
  if (!exited && child.pid) await stopPid(child.pid, o.dataDir);
  return { log: exited ? log : `${log}\n(timed out after 30 s waiting for the server to accept connections)`, portInUse: /already in use|could not create any TCP\/IP sockets|could not bind/i.test(log) };
}

function readLog(file: string): string {
  try {
    const text = readFileSync(file, 'utf8');
    return text.length > 4000 ? '…' + text.slice(-4000) : text;
  } catch {
    return '';
  }
}

/** Is `pid` the postmaster of `dataDir`? Guards against signalling a recycled pid. */
export function isPostmasterOf(pid: number, dataDir: string): boolean {
  if (!isAlive(pid)) return false;
  try {
    return Number(readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]) === pid;
  } catch {
    // postmaster.pid gone (e.g. the dir was removed under a running server): check the command line.
  }
  try {
    const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return cmd.includes('postgres') && cmd.includes(dataDir);
  } catch {
    return false;
  }
}

async function waitGone(pid: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (!isAlive(pid)) return true;
    await sleep(3);
  }
  return !isAlive(pid);
}

async function stopPid(pid: number, dataDir: string, immediate = false): Promise<void> {
  if (!isPostmasterOf(pid, dataDir)) return;
  const steps: [NodeJS.Signals, number][] = [
    ['SIGINT', 3000], // fast shutdown: disconnect clients, shutdown checkpoint (cheap: fsync off)
    ['SIGQUIT', 2000], // immediate shutdown
    ['SIGKILL', 2000],
  ];
  for (const [sig, wait] of immediate ? steps.slice(1) : steps) {
    try {
      process.kill(pid, sig);
    } catch {
      return;
    }
    if (await waitGone(pid, wait)) return;
  }
}

/**
 * Stop the cluster and remove its base dir. Usable from any process given only pid and baseDir
 * (the reaper). Idempotent; never signals a pid that is not this cluster's postmaster.
 * `immediate`: no shutdown checkpoint (its data is removed next anyway; its shared memory is
 * released all the same).
 */
export async function stopCluster(info: Pick<ClusterInfo, 'pid' | 'baseDir'> & { dataDir?: string }, opts: { immediate?: boolean } = {}): Promise<void> {
  const baseDir = path.resolve(info.baseDir);
  if (!path.basename(baseDir).startsWith(PREFIX)) throw new Error(`refusing to remove ${baseDir}: not a jest-environment-pg cluster dir`);
  const dataDir = info.dataDir ?? path.join(baseDir, 'data');
  await stopPid(info.pid, dataDir, opts.immediate);
  // A postmaster started on this dir after `info` was recorded (a restart we did not get to record).
  const current = pidFileOwner(dataDir);
  if (current && current !== info.pid) await stopPid(current, dataDir, opts.immediate);
  // Synchronously: thousands of small files on tmpfs go faster in one call than through the thread pool.
  if (existsSync(baseDir)) rmSync(baseDir, { recursive: true, force: true, maxRetries: 3 });
}

function pidFileOwner(dataDir: string): number | undefined {
  try {
    const pid = Number(readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
    return pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Stop the server cleanly: a fast shutdown (clients disconnected, a shutdown checkpoint), so its
 * data dir needs no crash recovery on the next start. true once it is gone within `ms`; false when
 * it is not running or did not stop in time (stopCluster then escalates).
 */
export async function stopCleanly(info: Pick<ClusterInfo, 'pid' | 'dataDir'>, ms = 10_000): Promise<boolean> {
  if (!isPostmasterOf(info.pid, info.dataDir)) return false;
  try {
    process.kill(info.pid, 'SIGINT');
  } catch {
    return false;
  }
  return waitGone(info.pid, ms);
}
