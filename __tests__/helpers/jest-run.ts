/**
 * Runs Jest in a child process on a fixture project, with every artifact of the run (temp
 * dirs, the cluster's data dir) inside one private directory, so a test can assert that
 * nothing of the run remains: no directory, no process.
 */
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export const ROOT = path.resolve(__dirname, '..', '..');
export const JEST_BIN = path.join(ROOT, 'node_modules', 'jest', 'bin', 'jest.js');
/** Jest 29, installed as the devDependency alias `jest29` (npm:jest@29). */
export const JEST29_BIN = path.join(ROOT, 'node_modules', 'jest29', 'bin', 'jest.js');

export interface JestRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  output: string;
  /** The private dir holding TMPDIR and the cluster root; removed by cleanup(). */
  sandboxDir: string;
}

export interface RunOptions {
  args?: string[];
  env?: Record<string, string | undefined>;
  timeoutMs?: number;
  /** Called with the child once it is spawned (to send signals). */
  onSpawn?: (child: import('node:child_process').ChildProcess) => void;
  sandboxDir?: string;
  /** Jest's bin to run (default: the root's jest); e.g. JEST29_BIN. */
  jestBin?: string;
  /** Node flags before the bin, e.g. ['--experimental-vm-modules']. */
  nodeArgs?: string[];
  /** Run in this directory instead of fixtures/<fixture> (a project assembled by the test). */
  cwd?: string;
}

export function privateDir(): string {
  // Not under os.tmpdir()'s jest-pg-* names: this is the harness's own dir.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'e2e-harness-'));
  fs.chmodSync(dir, 0o755); // the unprivileged postgres user must reach its data dir inside
  return dir;
}

export function runJest(fixture: string, opts: RunOptions = {}): Promise<JestRun> {
  const cwd = opts.cwd ?? path.join(ROOT, 'fixtures', fixture);
  const sandboxDir = opts.sandboxDir ?? privateDir();
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    TMPDIR: sandboxDir,
    JEST_PG_DATA_ROOT: sandboxDir,
    FORCE_COLOR: '0',
    CI: 'true',
  };
  for (const k of ['JEST_WORKER_ID', 'JEST_PG_MANIFEST', 'DATABASE_URL', 'PGHOST', 'PGPORT', 'PGUSER', 'PGPASSWORD', 'PGDATABASE']) delete env[k];
  for (const [k, v] of Object.entries(opts.env ?? {})) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  const args = [...(opts.nodeArgs ?? []), opts.jestBin ?? JEST_BIN, '--ci', '--cacheDirectory', path.join(sandboxDir, 'jest-cache'), ...(opts.args ?? [])];
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 90_000);
    opts.onSpawn?.(child);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, output: stdout + stderr, sandboxDir });
    });
  });
}

/** What of a run is still there: entries in its private dir (but Jest's cache) and processes mentioning it. */
export function leftovers(sandboxDir: string): { files: string[]; processes: string[] } {
  const files = fs.existsSync(sandboxDir) ? fs.readdirSync(sandboxDir).filter((f) => f !== 'jest-cache') : [];
  let processes: string[] = [];
  try {
    processes = execFileSync('ps', ['-eo', 'pid,args'], { encoding: 'utf8' })
      .split('\n')
      .filter((l) => l.includes(sandboxDir) && !l.includes(' ps '));
  } catch {
    processes = [];
  }
  return { files, processes };
}

/** Wait until nothing of the run remains (the reaper may still be finishing), up to ms. */
export async function settle(sandboxDir: string, ms = 5000): Promise<{ files: string[]; processes: string[] }> {
  const deadline = Date.now() + ms;
  let l = leftovers(sandboxDir);
  while ((l.files.length || l.processes.length) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    l = leftovers(sandboxDir);
  }
  return l;
}

export function cleanup(sandboxDir: string): void {
  fs.rmSync(sandboxDir, { recursive: true, force: true });
}
