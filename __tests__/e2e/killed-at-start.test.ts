/**
 * The run's start does not wait for the reaper's node process to boot: the Jest main process holds
 * the lease until the reaper does. Killed (SIGKILL) the moment global setup returns — the reaper
 * may still be starting — the run must leave nothing behind all the same: no database or backend
 * on a running server, no postgres or reaper process, no run or cluster dir.
 */
import { cleanup, runJest, settle } from '../helpers/jest-run';
import { capture, externalServer, waitFor, type ExternalServer } from '../helpers/e2e';

const dirs: string[] = [];
let server: ExternalServer | undefined;

afterAll(async () => {
  dirs.forEach(cleanup);
  await server?.stop();
}, 30_000);

test('embedded cluster: killed right after global setup, the reaper cleans up', async () => {
  const r = await runJest('slow-run', { args: ['--config', 'jest.killed-at-start.config.js'], env: { E2E_SLOW_SECONDS: '0' } });
  dirs.push(r.sandboxDir);
  capture('killed at start (embedded)', r);
  expect(r.signal).toBe('SIGKILL');
  expect(await settle(r.sandboxDir, 15_000)).toEqual({ files: [], processes: [] });
}, 90_000);

test('running server (JEST_PG_URL): killed right after global setup, no database or backend is left', async () => {
  server = await externalServer();
  const s = server;
  const r = await runJest('slow-run', { args: ['--config', 'jest.killed-at-start.config.js'], env: { E2E_SLOW_SECONDS: '0', JEST_PG_URL: s.url } });
  dirs.push(r.sandboxDir);
  capture('killed at start (JEST_PG_URL)', r);
  expect(r.signal).toBe('SIGKILL');
  expect(await settle(r.sandboxDir, 15_000)).toEqual({ files: [], processes: [] });
  await waitFor('the run’s databases and backends to be gone', async () => ((await s.runDatabases()).length === 0 && (await s.runBackends()).length === 0 ? true : undefined), 15_000);
  expect(await s.runDatabases()).toEqual([]);
  expect(await s.runBackends()).toEqual([]);
}, 90_000);
