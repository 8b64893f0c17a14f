/**
 * loadDriver loads pg without Node's fetch implementation (pg's Cloudflare probe creates a
 * `Response` where there is no `navigator`) and leaves no `navigator` behind. In a fresh process:
 * Jest's own module registry would hide what Node loaded.
 */
import { execFileSync } from 'node:child_process';
import path from 'node:path';

const ADMIN = path.join(__dirname, '..', '..', 'dist', 'util', 'admin.js');

function probe(script: string): { fetchLoaded: boolean; navigator: string; client: string } {
  const out = execFileSync(process.execPath, ['-e', script], { encoding: 'utf8', cwd: path.join(__dirname, '..', '..') });
  return JSON.parse(out) as { fetchLoaded: boolean; navigator: string; client: string };
}

const report = `console.log(JSON.stringify({ fetchLoaded: process.moduleLoadList.some((m) => m.includes('undici')), navigator: typeof globalThis.navigator, client: typeof pg.Client }))`;

test('pg is loaded without fetch, and no navigator is left on the global', () => {
  const r = probe(`const pg = require(${JSON.stringify(ADMIN)}).loadDriver(); ${report}`);
  expect(r.client).toBe('function');
  expect(r.fetchLoaded).toBe(false);
  // Node 20 has no navigator of its own; Node ≥ 21 keeps its own.
  expect(r.navigator).toBe(Number(process.versions.node.split('.')[0]) >= 21 ? 'object' : 'undefined');
});

test('a navigator the process already has is left as it was', () => {
  const r = probe(`globalThis.navigator = { userAgent: 'mine' }; const pg = require(${JSON.stringify(ADMIN)}).loadDriver(); ${report.replace('typeof globalThis.navigator', 'globalThis.navigator.userAgent')}`);
  expect(r.client).toBe('function');
  expect(r.navigator).toBe('mine');
});
