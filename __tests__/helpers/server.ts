/** Boots a throwaway cluster for integration tests, with one database to sandbox. */
import { findBinaries } from '../../src/server/binaries';
import { startCluster, stopCluster, type ClusterInfo } from '../../src/server/cluster';
import { withClient, withDatabase } from '../../src/util/admin';
import { Sandbox, type SandboxOptions } from '../../src/proxy/sandbox';
import os from 'node:os';
import path from 'node:path';
import fs from 'node:fs';
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
