/**
 * Start-up paths end settled (DESIGN.md, "Loud failure"): success, or an error with a code and
 * nothing left running. Three guards, used by every start-up path (global setup and the
 * environment-only first worker through startRun, startSandbox, the CLI):
 *
 * - `guardSetup`: while a setup is pending, a ref'd timer keeps the event loop alive, so an
 *   awaited promise that nothing will ever settle (an unref'd socket, a migration module that
 *   never resolves) cannot let Node find its loop empty and exit 0 in the middle of it.
 * - `step`: each step has a bound; when it passes, the step's AbortSignal fires (children are
 *   killed, connections ended) and the step rejects with JESTPG_SETUP_TIMEOUT naming it.
 * - If the process exits anyway while a setup is pending (something called `process.exit()`,
 *   e.g. a migration module), an 'exit' hook says so (JESTPG_SETUP_INTERRUPTED), runs the
 *   synchronous last-resort cleanups the setup registered, and makes the exit code non-zero.
 */
import { writeSync } from 'node:fs';
import { errors, type JestPgError } from './errors';

/** The steps of setting up a run, as messages name them. */
export type SetupStep =
  | 'finding the PostgreSQL binaries'
  | 'initdb'
  | 'restoring the cluster from the cache'
  | 'starting the server'
  | 'connecting to the server'
  | 'taking the run lease'
  | 'sweeping databases of dead runs'
  | 'building the template (migrations)'
  | 'starting the reaper'
  | 'opening the sandbox';

/**
 * The bound of a step, in ms. Migrations may legitimately take minutes (a large schema, an ORM's
 * migrator), the rest seconds: building the template has its own bound, JEST_PG_MIGRATIONS_TIMEOUT_MS
 * (default 10 min); every other step JEST_PG_SETUP_TIMEOUT_MS (default 2 min).
 */
export function stepTimeoutMs(step: SetupStep): number {
  const migrations = step === 'building the template (migrations)';
  const env = Number(process.env[timeoutVariable(step)]);
  if (Number.isFinite(env) && env > 0) return env;
  return migrations ? 600_000 : 120_000;
}

/** The environment variable that sets a step's bound. */
export function timeoutVariable(step: SetupStep): 'JEST_PG_MIGRATIONS_TIMEOUT_MS' | 'JEST_PG_SETUP_TIMEOUT_MS' {
  return step === 'building the template (migrations)' ? 'JEST_PG_MIGRATIONS_TIMEOUT_MS' : 'JEST_PG_SETUP_TIMEOUT_MS';
}

/**
 * How long environment-only workers wait for the first worker to finish setting up: every step
 * of its setup is bounded, so this only matters if that worker itself is stuck outside them.
 */
export function setupBudgetMs(): number {
  return stepTimeoutMs('building the template (migrations)') + 8 * stepTimeoutMs('initdb');
}

/** After a step's bound, how long its work gets to react to the abort (kill, clean up) before the step rejects anyway. */
const ABORT_GRACE_MS = 5_000;

function blame(step: SetupStep): string {
  switch (step) {
    case 'building the template (migrations)':
      return 'Your migrations or seed are at fault: one never finished (a lock wait, a promise that never resolves, a command waiting for input).';
    case 'finding the PostgreSQL binaries':
    case 'initdb':
    case 'restoring the cluster from the cache':
    case 'starting the server':
      return 'The PostgreSQL binaries or the machine are at fault, not your tests (a hung initdb or postgres, no shared memory, a full disk): run `npx jest-environment-pg doctor`, set "binDir", or point JEST_PG_URL at a server.';
    case 'connecting to the server':
    case 'taking the run lease':
    case 'sweeping databases of dead runs':
      return 'The server is at fault (overloaded, not answering, or a lock held by another session): check it, or point JEST_PG_URL at another one.';
    case 'starting the reaper':
      return 'The reaper process (it tears the run down if Jest is killed) never said it was ready: check that node can start child processes here.';
    case 'opening the sandbox':
      return 'Cloning the worker database or connecting the sandbox to it hung: check the server.';
    default: {
      const never: never = step;
      throw new Error(`unknown setup step ${String(never)}`);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Pending setups of this process

interface Pending {
  what: string;
  /** Synchronous last-resort cleanups if the process exits while this setup is pending. */
  onExit: Set<() => void>;
}

/** A handle on the setup being guarded: register last-resort cleanups. */
export interface SetupGuard {
  /** Run `f` (synchronously) if the process exits while the setup is pending; returns an unregister function. */
  onExit(f: () => void): () => void;
}

/**
 * The setups pending in this process and the steps they are running, in one object: what the
 * 'exit' hook reports and cleans up, and the timer that holds the event loop open meanwhile.
 */
export class SetupRegistry {
  private readonly pending = new Set<Pending>();
  /** Steps running now (in any pending setup of this process), with how many of each. */
  private readonly running = new Map<SetupStep, number>();
  private keepAlive: NodeJS.Timeout | undefined;
  private hookInstalled = false;
  private readonly onProcessExit = (code: number): void => {
    if (this.pending.size === 0) return;
    const whats = [...new Set([...this.pending].map((p) => p.what))].join('; ');
    const steps = this.running.size ? `${whats}, during: ${[...this.running.keys()].join(', ')}` : whats;
    const how = code === 0 ? 'exited (code 0)' : `exited with code ${code}`;
    const err = errors.setupInterrupted(steps, how);
    try {
      writeSync(2, `\njest-environment-pg: ${err.code}: ${err.message}\n`);
    } catch {
      // stderr closed
    }
    for (const p of this.pending) {
      for (const f of p.onExit) {
        try {
          f();
        } catch {
          // best effort: the reaper (if any) or the next run's sweep does the rest
        }
      }
    }
    this.pending.clear();
    if (!code) process.exitCode = 1;
  };

  /** See guardSetup. */
  async guard<T>(what: string, fn: (guard: SetupGuard) => Promise<T>): Promise<T> {
    const p: Pending = { what, onExit: new Set() };
    this.pending.add(p);
    if (!this.hookInstalled) {
      this.hookInstalled = true;
      process.on('exit', this.onProcessExit);
    }
    this.keepAlive ??= setInterval(() => undefined, 60_000); // ref'd: the point of it
    try {
      return await fn({
        onExit(f) {
          p.onExit.add(f);
          return () => p.onExit.delete(f);
        },
      });
    } finally {
      this.pending.delete(p);
      if (this.pending.size === 0 && this.keepAlive) {
        clearInterval(this.keepAlive);
        this.keepAlive = undefined;
      }
    }
  }

  /** A step of a pending setup began. */
  stepStarted(name: SetupStep): void {
    this.running.set(name, (this.running.get(name) ?? 0) + 1);
  }

  /** A step of a pending setup settled. */
  stepEnded(name: SetupStep): void {
    const n = (this.running.get(name) ?? 1) - 1;
    if (n > 0) this.running.set(name, n);
    else this.running.delete(name);
  }
}

/** The one setup registry of this process (every start-up path of the process shares it). */
export const processSetups = new SetupRegistry();

/**
 * Run a start-up path: the event loop is held open until it settles, and an exit of the process
 * in the meantime is reported (JESTPG_SETUP_INTERRUPTED) with a non-zero exit code.
 */
export function guardSetup<T>(what: string, fn: (guard: SetupGuard) => Promise<T>, setups: SetupRegistry = processSetups): Promise<T> {
  return setups.guard(what, fn);
}

/**
 * One bounded step of a setup. After `ms` (default stepTimeoutMs(name)) the signal given to `fn`
 * aborts with JESTPG_SETUP_TIMEOUT; `fn` gets a few seconds to stop what it started (kill a
 * child, end a connection), then the step rejects with that error whatever `fn` does.
 */
export function step<T>(name: SetupStep, fn: (signal: AbortSignal) => Promise<T>, ms = stepTimeoutMs(name), setups: SetupRegistry = processSetups): Promise<T> {
  setups.stepStarted(name);
  const ac = new AbortController();
  return new Promise<T>((resolve, reject) => {
    let timedOut: JestPgError | undefined;
    let grace: NodeJS.Timeout | undefined;
    let settled = false;
    const settle = (ok: boolean, v: unknown) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clearTimeout(grace);
      setups.stepEnded(name);
      if (ok) resolve(v as T);
      else reject(v);
    };
    const timer = setTimeout(() => {
      timedOut = errors.stepTimeout(name, ms, blame(name), timeoutVariable(name));
      ac.abort(timedOut);
      grace = setTimeout(() => settle(false, timedOut), ABORT_GRACE_MS);
    }, ms);
    let work: Promise<T>;
    try {
      work = fn(ac.signal);
    } catch (e) {
      settle(false, e);
      return;
    }
    work.then(
      (v) => settle(!timedOut, timedOut ?? v),
      (e) => settle(false, timedOut ?? e),
    );
  });
}

/** A promise that rejects with the signal's reason once it aborts (never, if it does not). */
export function aborted(signal: AbortSignal | undefined): Promise<never> {
  return new Promise((_, reject) => {
    if (!signal) return;
    if (signal.aborted) return reject(signal.reason);
    signal.addEventListener('abort', () => reject(signal.reason), { once: true });
  });
}

/** `p`, or the signal's reason if it aborts first (the work itself cannot be stopped). */
export function raceAbort<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return p;
  const a = aborted(signal);
  a.catch(() => undefined);
  return Promise.race([p, a]);
}

/** Wait for `p` at most `ms` (cleanup that must not hold a failing setup forever). */
export async function atMost(p: Promise<unknown>, ms: number): Promise<void> {
  let t: NodeJS.Timeout | undefined;
  await Promise.race([p.catch(() => undefined), new Promise((r) => (t = setTimeout(r, ms)))]);
  clearTimeout(t);
}
