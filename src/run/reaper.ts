/**
 * The reaper: a small detached node process per run. It holds the run's lease (a session
 * advisory lock) and watches the Jest main process; when that process is gone and the run was
 * not torn down (its manifest still exists), it tears the run down itself. In environment-only
 * mode (no globalTeardown) it is the teardown.
 */
import { spawn } from 'node:child_process';
import { appendFileSync, existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { databaseOf } from '../util/admin';
import { AdminClient } from '../proxy/admin-client';
import { socketUrl } from '../server/socket-url';
import { errors, messageOf } from '../util/errors';
import { acquireLease, holdTemplate } from './lease';
import { cmdline, isAlive, isSameProcess } from '../util/proc';
import type { RunManifest } from './manifest';
import { sleep } from '../util/text';

export const POLL_MS = 250;

export function reaperScript(): string {
  const candidates = [path.join(__dirname, 'reaper-main.js'), path.join(__dirname, '..', '..', 'dist', 'run', 'reaper-main.js')];
  const found = candidates.find((p) => existsSync(p));
  if (!found) throw new Error(`jest-environment-pg: reaper script not found (looked at ${candidates.join(', ')}); run the build (npm run build).`);
  return found;
}

/**
 * Spawn the reaper for a written manifest; resolves with its pid once it holds the lease, rejects
 * with JESTPG_REAPER_FAILED (what went wrong in its message) if it cannot be started, exits or
 * says something else first, or is not ready `timeoutMs` after `armed` (default: now): setup may
 * take long before the final manifest exists (migrations), and the reaper only takes the lease after that.
 */
export function startReaper(manifestPath: string, timeoutMs = 120_000, armed?: Promise<unknown>, onSpawn?: (pid: number) => void): Promise<number> {
  return spawnReaper(manifestPath, timeoutMs, armed, onSpawn).catch((e: unknown) => {
    throw (e as { code?: string }).code === 'JESTPG_REAPER_FAILED' ? e : errors.reaperFailed(messageOf(e), e);
  });
}

function spawnReaper(manifestPath: string, timeoutMs: number, armed?: Promise<unknown>, onSpawn?: (pid: number) => void): Promise<number> {
  return new Promise((resolve, reject) => {
    const env = { ...process.env };
    delete env.NODE_OPTIONS; // no inspector, loaders or test hooks in the reaper
    const child = spawn(process.execPath, [reaperScript(), manifestPath], {
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
      env,
      windowsHide: true,
    });
    if (child.pid) onSpawn?.(child.pid);
    let out = '';
    // What it printed on stderr before it was ready (a crash's stack), for the error message.
    let errText = '';
    child.stderr!.on('data', (d: Buffer) => (errText = (errText + d.toString()).slice(-2000)));
    const stderrTail = () => {
      // A crash prints "<file>:<line>\n<source>\n^\n\nError: …\n    at …": keep the error line.
      const lines = errText.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('at ') && !/^Node\.js v/.test(l));
      const line = lines.find((l) => /^[A-Za-z]*Error\b/.test(l)) ?? lines[lines.length - 1];
      return line ? ` (its stderr: ${line.slice(0, 300)})` : '';
    };
    let settled = false;
    const done = (err?: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      child.stdout!.destroy();
      child.stderr!.destroy();
      child.unref();
      if (err) {
        if (child.pid && isAlive(child.pid)) child.kill('SIGKILL');
        reject(err);
      } else resolve(child.pid!);
    };
    let timer: NodeJS.Timeout | undefined;
    const arm = () => {
      if (!settled) timer = setTimeout(() => done(new Error(`it did not take the run's lease within ${timeoutMs} ms`)), timeoutMs);
    };
    if (armed) armed.then(arm, arm);
    else arm();
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const nl = out.indexOf('\n');
      if (nl < 0) return;
      const line = out.slice(0, nl);
      if (line === 'ready') done();
      else if (line.startsWith('error ')) {
        let e: { code?: string; message?: string } = {};
        try {
          e = JSON.parse(line.slice(6)) as typeof e;
        } catch {
          e = { message: line.slice(6) };
        }
        done(new Error(`it failed before taking the run's lease: ${e.code ? `${e.code}: ` : ''}${e.message ?? '(no message)'}`));
      } else done(new Error(`it printed ${JSON.stringify(line.slice(0, 200))} instead of "ready"`));
    });
    child.on('error', (e) => done(new Error(`${process.execPath} could not be started: ${messageOf(e)}`)));
    child.on('close', (code, sig) => done(new Error(`it exited ${sig ? `on signal ${sig}` : `with code ${code}`} before taking the run's lease${stderrTail()}`)));
  });
}

/** Tell a reaper to exit (after teardown removed the manifest). Only signals a pid that looks like our reaper. */
export function stopReaper(pid: number | undefined): void {
  if (!pid || pid === process.pid || !isAlive(pid)) return;
  const cmd = cmdline(pid);
  if (cmd !== undefined && !cmd.includes('reaper')) return; // recycled pid
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    // already gone
  }
}

/** What the reaper runs when the run must be torn down (teardown.ts's teardownRun, loaded only then). */
export type LoadTeardown = () => Promise<(m: RunManifest, opts: { fromReaper?: boolean }) => Promise<unknown>>;

/** The reaper process' main loop: hold the run, say "ready", then watch it until it ends. */
export async function reaperMain(manifestPath: string, loadTeardown: LoadTeardown): Promise<void> {
  const held = await holdRun(manifestPath, loadTeardown);
  process.stdout.write('ready\n');
  // Nothing is written to stdout from here on: the parent has closed its end.
  process.stdout.on('error', () => undefined);
  watchRun(manifestPath, held, loadTeardown);
}

/** The run the reaper holds: its manifest and the session holding its lease. */
interface HeldRun {
  m: RunManifest;
  lease: AdminClient;
  /** The server dropped the lease's session. */
  lost: boolean;
}

/** Wait for the run, take its lease; on failure say why on stdout (the parent reads it) and exit 1. */
async function holdRun(manifestPath: string, loadTeardown: LoadTeardown): Promise<HeldRun> {
  try {
    const m = await awaitManifest(manifestPath, loadTeardown);
    const held = { m, lost: false } as HeldRun;
    held.lease = await takeLease(m, () => (held.lost = true));
    return held;
  } catch (e) {
    const code = (e as { code?: string }).code;
    process.stdout.write(`error ${JSON.stringify({ code: code?.startsWith('JESTPG_') ? code : undefined, message: messageOf(e) })}\n`);
    process.exit(1);
  }
}

/**
 * Started early (while initdb runs); the manifest appears once the server is up. If the run dir
 * disappears first, the setup failed and cleaned up: nothing to watch, exit. A manifest in phase
 * "setup" (the cluster runs, the template is being built and cached): no lease yet, but if the
 * main process dies now, this is the only one left to clean up.
 */
async function awaitManifest(manifestPath: string, loadTeardown: LoadTeardown): Promise<RunManifest> {
  const runDir = path.dirname(manifestPath);
  let deadline = Date.now() + 120_000;
  for (;;) {
    if (!existsSync(runDir) || Date.now() > deadline) process.exit(0);
    let pre: RunManifest | undefined;
    try {
      if (existsSync(manifestPath)) pre = JSON.parse(readFileSync(manifestPath, 'utf8')) as RunManifest;
    } catch {
      pre = undefined; // being replaced: read it again
    }
    if (pre && pre.phase !== 'setup') return pre;
    if (pre) {
      if (!isSameProcess(pre.mainPid, pre.mainStart)) {
        await tearDownLogged(pre.runId, loadTeardown, { ...pre, options: { ...pre.options, keepDatabases: false } });
        process.exit(0);
      }
      deadline = Date.now() + 120_000; // the main process is alive and working on it
    }
    await sleep(5);
  }
}

/** A session holding the run's lease (and its template, before "ready": the main process lets go of it then). */
async function takeLease(m: RunManifest, onError: () => void): Promise<AdminClient> {
  const lease = await AdminClient.connect(m.cluster ? socketUrl(m.cluster, databaseOf(m.adminUrl)) : m.adminUrl, { applicationName: 'jest-environment-pg reaper' });
  lease.onClose(onError);
  await acquireLease(lease, m.runId);
  if (m.templateDb) await holdTemplate(lease, m.templateDb);
  return lease;
}

/** Every POLL_MS: exit once the run was torn down, tear it down if Jest's main process died, retake a lost lease. */
function watchRun(manifestPath: string, held: HeldRun, loadTeardown: LoadTeardown): void {
  let busy = false;
  const exit = async (code: number) => {
    await held.lease.end().catch(() => undefined);
    process.exit(code);
  };
  process.on('SIGTERM', () => {
    if (!existsSync(manifestPath)) void exit(0);
    // Otherwise ignore: only teardown (which removes the manifest first) or main's death ends us.
  });
  process.on('SIGINT', () => undefined);
  process.on('SIGHUP', () => undefined);

  const tick = async () => {
    if (busy) return;
    busy = true;
    try {
      if (!existsSync(manifestPath)) return void (await exit(0));
      if (isSameProcess(held.m.mainPid, held.m.mainStart)) {
        if (held.lost) await retakeLease(held);
        return;
      }
      // Jest's main process is gone and nobody tore the run down: do it.
      const fresh = JSON.parse(readFileSync(manifestPath, 'utf8')) as RunManifest;
      await tearDownLogged(held.m.runId, loadTeardown, fresh);
      await exit(0);
    } catch {
      // transient (manifest being rewritten): try again next tick
    } finally {
      busy = false;
    }
  };
  setInterval(() => void tick(), POLL_MS);
}

/** The server dropped our session (restart?): take the lease again if we can (else the next tick tries again). */
async function retakeLease(held: HeldRun): Promise<void> {
  try {
    held.lease = await takeLease(held.m, () => (held.lost = true));
    held.lost = false;
  } catch {
    // keep polling
  }
}

const LOG_PREFIX = 'jest-pg-reaper-';

/**
 * The reaper's teardown: its stdout is closed by then, so what went wrong (the teardown failed,
 * or could not reach the server) is logged in the temp dir, and the next run's global setup says it.
 */
export async function tearDownLogged(runId: string, loadTeardown: LoadTeardown, m: RunManifest, dir = os.tmpdir()): Promise<void> {
  let problem: string | undefined;
  try {
    const teardownRun = await loadTeardown();
    const r = (await teardownRun(m, { fromReaper: true })) as { report?: string };
    if (r?.report && /could not connect/.test(r.report)) problem = r.report.replace(/^jest-environment-pg: /, '');
  } catch (e) {
    problem = `its teardown failed: ${messageOf(e)}`;
  }
  if (!problem) return;
  try {
    appendFileSync(path.join(dir, `${LOG_PREFIX}${runId}.log`), `run ${runId} (Jest's main process died; its reaper cleaned up): ${problem}\n`, { mode: 0o600 });
  } catch {
    // nowhere left to say it
  }
}

/** What reapers of earlier runs could not do (see tearDownLogged), read once: the files are removed. */
export function takeReaperLogs(dir = os.tmpdir()): string[] {
  const out: string[] = [];
  let names: string[] = [];
  try {
    names = readdirSync(dir).filter((n) => n.startsWith(LOG_PREFIX) && n.endsWith('.log'));
  } catch {
    return out;
  }
  for (const n of names) {
    try {
      out.push(...readFileSync(path.join(dir, n), 'utf8').split('\n').filter(Boolean));
      rmSync(path.join(dir, n), { force: true });
    } catch {
      // another run took it
    }
  }
  return out;
}
