/**
 * The reaper's stdout is closed once the run has begun: what its teardown could not do is logged
 * in the temp dir and said by the next run's global setup (takeReaperLogs), once.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { takeReaperLogs, tearDownLogged } from '../../src/run/reaper';
import type { RunManifest } from '../../src/run/manifest';

let dir: string;

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'reaper-log-'));
});

afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

const manifest = { runId: 'r1' } as RunManifest;

test('a teardown that fails is logged, said once by the next run, and its file removed', async () => {
  await tearDownLogged('r1', async () => async () => {
    throw new Error('the server went away');
  }, manifest, dir);
  expect(fs.readdirSync(dir)).toEqual(['jest-pg-reaper-r1.log']);
  expect(takeReaperLogs(dir)).toEqual(["run r1 (Jest's main process died; its reaper cleaned up): its teardown failed: the server went away"]);
  expect(fs.readdirSync(dir)).toEqual([]);
  expect(takeReaperLogs(dir)).toEqual([]);
});

test('a teardown that could not reach the server is logged with its report', async () => {
  const report = "jest-environment-pg: could not connect to postgres://x:***@127.0.0.1:1/postgres to drop this run's databases (ECONNREFUSED); a later run will sweep them.";
  await tearDownLogged('r2', async () => async () => ({ report }), manifest, dir);
  expect(takeReaperLogs(dir)).toEqual([
    "run r2 (Jest's main process died; its reaper cleaned up): could not connect to postgres://x:***@127.0.0.1:1/postgres to drop this run's databases (ECONNREFUSED); a later run will sweep them.",
  ]);
});

test('a teardown that did its work leaves no log', async () => {
  await tearDownLogged('r3', async () => async () => ({ report: '' }), manifest, dir);
  expect(fs.readdirSync(dir)).toEqual([]);
  expect(takeReaperLogs(dir)).toEqual([]);
});
