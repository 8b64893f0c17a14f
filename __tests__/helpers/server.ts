/** Boots a throwaway cluster for integration tests, with one database to sandbox. */
import { findBinaries } from '../../src/server/binaries';
import { startCluster, stopCluster, type ClusterInfo } from '../../src/server/cluster';
import { withClient, withDatabase } from '../../src/util/admin';
import { Sandbox, type SandboxOptions } from '../../src/proxy/sandbox';
import os from 'node:os';
import path from 'node:path';
import fs from 'node:fs';
import pg from 'pg';
import { stopOnExit } from './watchdog';

export interface TestServer {
  cluster: ClusterInfo;
  dbUrl: string;
  socketDir: string;
  sandbox(opts?: Partial<SandboxOptions>): Promise<Sandbox>;
  /** SQL on a direct connection (outside the sandbox). */
  direct<T = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<T[]>;
  stop(): Promise<void>;
}

/** `settings`: extra `-c` settings for the cluster (e.g. autovacuum on). */
export async function bootServer(schema = '', settings?: Record<string, string>): Promise<TestServer> {
  const bins = await findBinaries();
  const cluster = await startCluster({ binDir: bins.binDir, version: bins.version, nativeDir: bins.nativeDir, settings });
  const socketDir = fs.mkdtempSync(path.join(os.tmpdir(), 'jest-pg-test-'));
  const dismissWatchdog = stopOnExit(cluster, socketDir);
  await withClient(cluster.url, (c) => c.query('CREATE DATABASE sbx'));
  const dbUrl = withDatabase(cluster.url, 'sbx');
  if (schema) await withClient(dbUrl, (c) => c.query(schema));
  const sandboxes: Sandbox[] = [];
  return {
    cluster,
    dbUrl,
    socketDir,
    async sandbox(opts = {}) {
      const sb = await Sandbox.start({
        upstreamUrl: dbUrl,
        socketDir: path.join(socketDir, String(sandboxes.length)),
        secret: 'secret-' + sandboxes.length,
        isolation: 'test',
        graceMs: 100,
        lockWaitMs: 1000,
        label: 'jest-environment-pg test',
        ...opts,
      });
      sandboxes.push(sb);
      return sb;
    },
    direct: (sql, params) => withClient(dbUrl, async (c) => (await c.query(sql, params as unknown[])).rows),
    async stop() {
      await Promise.allSettled(sandboxes.map((s) => s.close()));
      await stopCluster(cluster);
      dismissWatchdog();
      fs.rmSync(socketDir, { recursive: true, force: true });
    },
  };
}

/** Run `fn` as one test of the sandbox (beginTest … endTest, always ended); resolves with the test's problems. */
export async function runTest(sb: Sandbox, name: string, fn: () => Promise<unknown>): Promise<string[]> {
  sb.beginTest(name);
  let problems: string[] = [];
  try {
    await fn();
  } finally {
    problems = (await sb.endTest()).problems.map((p) => p.message);
  }
  return problems;
}

/** A server with `schema` and one sandbox on it (`opts` over the defaults), its file open: a test file's beforeAll. */
export async function openFile(schema: string, opts: Partial<SandboxOptions> = {}): Promise<{ server: TestServer; sb: Sandbox }> {
  const server = await bootServer(schema);
  const sb = await server.sandbox(opts);
  await sb.beginFile();
  return { server, sb };
}

/** End the file and stop the server, either of them missing after a failed beforeAll: a test file's afterAll. */
export async function closeFile(server: TestServer | undefined, sb: Sandbox | undefined): Promise<void> {
  await sb?.endFile();
  await server?.stop();
}

/** A client of the sandbox whose connection-level errors are collected instead of crashing the test process. */
export async function connectClient(url: string, config: pg.ClientConfig = {}): Promise<pg.Client & { errors: Error[] }> {
  const c = new pg.Client({ connectionString: url, ...config }) as pg.Client & { errors: Error[] };
  c.errors = [];
  c.on('error', (e) => c.errors.push(e));
  await c.connect();
  return c;
}

/** Until the sandbox's upstream runs a statement LIKE `pattern` (seen from a direct connection). */
export async function untilUpstreamRuns(server: TestServer, sb: Sandbox, pattern: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    const rows = await server.direct<{ n: number }>(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = $1 AND state = 'active' AND query LIKE $2`, [sb.upstream!.backendPid, pattern]);
    if (rows[0].n > 0) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`the upstream never ran ${pattern}`);
}
