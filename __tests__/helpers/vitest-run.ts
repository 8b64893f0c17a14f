/**
 * Runs Vitest in a child process on a fixture project, like jest-run.ts does for Jest: every
 * artifact of the run in one private directory, Vitest's JSON report (Jest's format) read back.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT, privateDir, type JestRun } from './jest-run';

/** Vitest 4 (the devDependency `vitest`) and Vitest 3 (the alias `vitest3`, npm:vitest@3). */
export const VITEST_BIN = path.join(ROOT, 'node_modules', 'vitest', 'vitest.mjs');
export const VITEST3_BIN = path.join(ROOT, 'node_modules', 'vitest3', 'vitest.mjs');

export interface VitestResult {
  title: string;
  fullName: string;
  status: 'passed' | 'failed' | 'pending' | 'skipped';
  failureMessages: string[];
}
export interface VitestRun extends JestRun {
  /** Per file (path relative to the fixture) its tests, from the JSON reporter. */
  files: Map<string, VitestResult[]>;
}

export interface VitestRunOptions {
  bin?: string;
  args?: string[];
  env?: Record<string, string | undefined>;
  timeoutMs?: number;
  cwd?: string;
  /** `vitest run` (the default) or `vitest --watch` (re-runs on file changes until signalled). */
  watch?: boolean;
}

export function runVitest(fixture: string, opts: VitestRunOptions = {}): Promise<VitestRun> {
  return startVitest(fixture, opts).done;
}

/** Start Vitest; `child` to signal it, `output()` what it printed so far, `done` when it has exited. */
export function startVitest(fixture: string, opts: VitestRunOptions = {}): { child: ChildProcess; sandboxDir: string; output: () => string; done: Promise<VitestRun> } {
  const cwd = opts.cwd ?? path.join(ROOT, 'fixtures', fixture);
  const sandboxDir = privateDir();
  const json = path.join(sandboxDir, 'vitest-cache', 'results.json');
  const env: NodeJS.ProcessEnv = { ...process.env, TMPDIR: sandboxDir, JEST_PG_DATA_ROOT: sandboxDir, FORCE_COLOR: '0', NO_COLOR: '1', CI: 'true', E2E_VITE_CACHE: path.dirname(json) };
  for (const k of ['JEST_WORKER_ID', 'JEST_PG_MANIFEST', 'VITEST', 'VITEST_POOL_ID', 'VITEST_WORKER_ID', 'DATABASE_URL', 'PGHOST', 'PGPORT', 'PGUSER', 'PGPASSWORD', 'PGDATABASE']) delete env[k];
  for (const [k, v] of Object.entries(opts.env ?? {})) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  const args = [opts.bin ?? VITEST_BIN, opts.watch ? '--watch' : 'run', '--reporter=default', '--reporter=json', `--outputFile.json=${json}`, ...(opts.args ?? [])];
  const child = spawn(process.execPath, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  const done = new Promise<VitestRun>((resolve, reject) => {
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const files = new Map<string, VitestResult[]>();
      if (fs.existsSync(json)) {
        const r = JSON.parse(fs.readFileSync(json, 'utf8')) as { testResults: { name: string; assertionResults: VitestResult[] }[] };
        for (const f of r.testResults) files.set(path.relative(cwd, f.name), f.assertionResults);
        fs.rmSync(path.dirname(json), { recursive: true, force: true });
      }
      resolve({ code, signal, stdout, stderr, output: stdout + stderr, sandboxDir, files });
    });
  });
  return { child, sandboxDir, output: () => stdout + stderr, done };
}

/** The result of one test, by file and title; throws when there is none. */
export function testResult(run: VitestRun, file: string, title: string): VitestResult {
  const tests = run.files.get(file);
  if (!tests) throw new Error(`no results for ${file} (have: ${[...run.files.keys()].join(', ')})\n${run.output}`);
  const t = tests.find((x) => x.title === title);
  if (!t) throw new Error(`no test "${title}" in ${file}`);
  return t;
}

/**
 * A run's leftovers (jest-run.ts `leftovers`/`settle`) without Vitest's own temporary directory
 * (a nanoid under TMPDIR), which Vitest leaves when it is killed or interrupted: not ours to remove.
 */
export function exceptVitestTemp(l: { files: string[]; processes: string[] }): { files: string[]; processes: string[] } {
  return { ...l, files: l.files.filter((f) => !/^[\w-]{21}$/.test(f)) };
}
