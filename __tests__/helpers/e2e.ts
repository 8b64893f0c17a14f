/**
 * Helpers for the end-to-end failure cases (__tests__/e2e/*): an external Postgres server shared by
 * a test file (what JEST_PG_URL points at), Jest started in its own process group (so a signal can
 * reach it the way Ctrl-C in a terminal does), and what a run left on the server and in processes.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Client } from 'pg';
import { findBinaries } from '../../src/server/binaries';
import { startCluster, stopCluster, type ClusterInfo } from '../../src/server/cluster';
import { JEST_BIN, ROOT, cleanup, privateDir, type JestRun } from './jest-run';

export interface ExternalServer {
  cluster: ClusterInfo;
  url: string;
  query<T = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<T[]>;
  /** Databases whose name starts with `jestpg_`, templates (`jestpg_tpl_*`) excluded. */
  runDatabases(): Promise<string[]>;
  /** Backends connected to run databases (not templates). */
  runBackends(): Promise<{ pid: number; datname: string; application_name: string }[]>;
  stop(): Promise<void>;
}

/** A test file's external server (JEST_PG_URL) and the scratch dirs its tests made. */
export interface ExternalServerFile {
  /** Up once the file's beforeAll ran. */
  readonly server: ExternalServer;
  /** Remove `dir` after the file; returns it. */
  keep(dir: string): string;
}

/** Registers the file's beforeAll (boots the server) and afterAll (removes the kept dirs, stops it). */
export function useExternalServer(): ExternalServerFile {
  let server: ExternalServer | undefined;
  const dirs: string[] = [];
  beforeAll(async () => {
    server = await externalServer();
  }, 60_000);
  afterAll(async () => {
    dirs.forEach(cleanup);
    await server?.stop();
  });
  return {
    get server(): ExternalServer {
      if (!server) throw new Error('the external server is not up (its beforeAll failed)');
      return server;
    },
    keep(dir: string): string {
      dirs.push(dir);
      return dir;
    },
  };
}

/** Boot a throwaway cluster to play the part of the user's own server (JEST_PG_URL). */
export async function externalServer(): Promise<ExternalServer> {
  const b = await findBinaries({});
  // In a private parent dir (RAM-backed when possible): other runs' sweeps of stale
  // /dev/shm/jest-pg-* dirs never look inside it.
  const parent = fs.existsSync('/dev/shm') ? fs.mkdtempSync('/dev/shm/e2e-server-') : privateDir();
  fs.chmodSync(parent, 0o755); // the unprivileged postgres user must reach its data dir inside
  const cluster = await startCluster({ binDir: b.binDir, version: b.version, nativeDir: b.nativeDir, baseDir: parent });
  const client = new Client({ connectionString: cluster.url, application_name: 'e2e-observer' });
  client.on('error', () => undefined);
  await client.connect();
  const query = async <T>(sql: string, params?: unknown[]) => (await client.query(sql, params)).rows as T[];
  return {
    cluster,
    url: cluster.url,
    query,
    async runDatabases() {
      const rows = await query<{ datname: string }>(
        `SELECT datname FROM pg_database WHERE datname LIKE 'jestpg\\_%' AND datname NOT LIKE 'jestpg\\_tpl\\_%' ORDER BY datname`,
      );
      return rows.map((r) => r.datname);
    },
    runBackends() {
      return query(
        `SELECT pid, datname, application_name FROM pg_stat_activity WHERE datname LIKE 'jestpg\\_%' AND datname NOT LIKE 'jestpg\\_tpl\\_%'`,
      );
    },
    async stop() {
      await client.end().catch(() => undefined);
      await stopCluster(cluster);
      fs.rmSync(parent, { recursive: true, force: true });
    },
  };
}

export interface StartedJest {
  child: ChildProcess;
  sandboxDir: string;
  /** Resolves when Jest exits. */
  done: Promise<JestRun>;
  /** Output so far. */
  output(): string;
}

/**
 * Like runJest, but Jest leads its own process group (a signal to -pid reaches the main process
 * and its workers, as Ctrl-C in a terminal does), and the caller gets the child right away.
 */
export function startJest(
  fixture: string,
  opts: { args?: string[]; env?: Record<string, string | undefined>; sandboxDir?: string; timeoutMs?: number } = {},
): StartedJest {
  const cwd = path.join(ROOT, 'fixtures', fixture);
  const sandboxDir = opts.sandboxDir ?? privateDir();
  const env: NodeJS.ProcessEnv = { ...process.env, TMPDIR: sandboxDir, JEST_PG_DATA_ROOT: sandboxDir, FORCE_COLOR: '0', CI: 'true' };
  for (const k of ['JEST_WORKER_ID', 'JEST_PG_MANIFEST', 'DATABASE_URL', 'PGHOST', 'PGPORT', 'PGUSER', 'PGPASSWORD', 'PGDATABASE']) delete env[k];
  for (const [k, v] of Object.entries(opts.env ?? {})) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  const args = [JEST_BIN, '--ci', '--cacheDirectory', path.join(sandboxDir, 'jest-cache'), ...(opts.args ?? [])];
  const child = spawn(process.execPath, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  const timer = setTimeout(() => killGroup(child, 'SIGKILL'), opts.timeoutMs ?? 90_000);
  const done = new Promise<JestRun>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, output: stdout + stderr, sandboxDir });
    });
  });
  return { child, sandboxDir, done, output: () => stdout + stderr };
}

export function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  try {
    process.kill(-child.pid!, signal);
  } catch {
    // already gone
  }
}

/** Pids of the direct children of `pid` (Jest's workers, the reaper, an embedded postmaster). */
export function childrenOf(pid: number): number[] {
  const out = execFileSync('ps', ['-eo', 'pid=,ppid='], { encoding: 'utf8' });
  return out
    .split('\n')
    .map((l) => l.trim().split(/\s+/).map(Number))
    .filter(([p, pp]) => pp === pid && p !== undefined && !Number.isNaN(p))
    .map(([p]) => p);
}

export function alive(pids: number[]): number[] {
  return pids.filter((p) => {
    try {
      process.kill(p, 0);
      return true;
    } catch {
      return false;
    }
  });
}

export async function waitFor<T>(what: string, fn: () => T | Promise<T>, ms = 30_000, every = 25): Promise<NonNullable<T>> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, every));
  }
}

/** A scratch dir for what fixtures write (E2E_OUT): outside the run's private dir, so settle() does not count it. */
export function outDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'e2e-out-'));
}

/** The lines of Jest's output that jest-environment-pg wrote (reports, warnings, summary), for docs. */
export function toolLines(output: string): string {
  return output
    .split('\n')
    .filter((l) => /jest-environment-pg|JESTPG_/.test(l) || /^\s{2,}(- |pid |Fix:|They )/.test(l))
    .join('\n');
}

/** With JESTPG_E2E_CAPTURE=<dir>, keep a run's whole output as <dir>/<name>.txt (real output for the docs). */
export function capture(name: string, run: { output: string; code: number | null; signal?: NodeJS.Signals | null }): void {
  const dir = process.env.JESTPG_E2E_CAPTURE;
  if (!dir) return;
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, `${name}.txt`), `${run.output}\n[exit code ${run.code}${run.signal ? `, signal ${run.signal}` : ''}]\n`);
}
