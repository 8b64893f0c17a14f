/**
 * Per-process (per-thread, under a runner's thread pool) state of a test worker: its sandbox
 * thread, started synchronously by the first test file of the worker (so DATABASE_URL/PG* are
 * known before any setupFiles run),
 * and the run it serves: its own database, cloned the first time it is needed, by itself —
 * nothing counts workers in advance. Both live across the test files the worker runs. The same
 * implementation as the programmatic API (src/sandbox/api.ts), unref'd so it never keeps a worker alive.
 */
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { knownManifest } from './known-run';
import { threadId } from 'node:worker_threads';
import { openRunSandbox, type RunSandbox } from './api';
import { SandboxThread, type ThreadOptions } from './thread';
import type { RunManifest } from '../run/manifest';
import { workerDbName } from '../util/names';

export { knownDatabase, knownManifest } from './known-run';
import type { PgOptions } from '../util/options';

export type Worker = RunSandbox;


/**
 * A test worker's sandbox thread and the run sandbox it opened, in one object. One per module
 * instance: once per worker process (the environment module is loaded outside the test files'
 * module registry, so every file of the worker finds it), and once per thread under a runner's
 * thread pool (each worker thread loads its own modules).
 */
export class WorkerRegistry {
  private started: SandboxThread | undefined;
  private current: { manifestPath: string; workerId: string; worker: Promise<Worker> } | undefined;

  /**
   * This process's sandbox thread, started now if there is none: its address is known on return
   * (a few ms, once per worker process; nothing when `prestart` began it). It connects upstream
   * only when a file begins.
   */
  thread(options: PgOptions, id: string): SandboxThread {
    const t = this.started;
    if (t && !t.gone) {
      try {
        return t.listeningSync();
      } catch (e) {
        this.started = undefined;
        throw e;
      }
    }
    const m = knownManifest();
    this.started = SandboxThread.startSync(threadOptions(options, id, m));
    return this.started;
  }

  /**
   * Begin this process's sandbox thread now, without waiting for it, for a run being started in
   * this process (its global setup): when Jest runs the tests in band, here, the first file finds
   * it listening instead of starting it (the thread's boot, tens of ms, overlaps the run's start).
   * When the tests run in worker processes it stays idle, and the global teardown closes it.
   */
  prestart(options: PgOptions, id: string, run: RunNames): void {
    if (this.started && !this.started.gone) return;
    this.started = SandboxThread.launch(threadOptions(options, id, run));
  }

  /**
   * Once the run `prestart` was for is ready: point the thread at worker `id`'s database (cloned
   * now if it is new), so that a first file in this process finds it there. Never fails: whatever
   * goes wrong here happens again, and is reported, when a file attaches.
   */
  async prepare(rawProjectOptions: unknown, rootDir: string, options: PgOptions, id: string): Promise<void> {
    const t = this.started;
    if (!t?.listening || t.gone) return;
    try {
      await t.listening;
      if (this.started === t) await this.attach(rawProjectOptions, rootDir, options, id);
    } catch {
      // see above
    }
  }

  /** This worker's sandbox on its database of the run (attached, and the database cloned, on first use). */
  async attach(rawProjectOptions: unknown, rootDir: string, options: PgOptions, workerId: string): Promise<Worker> {
    // A run its global setup started is read from its manifest; only a worker that must start or
    // find one itself loads the code that does (the PostgreSQL client among it: tens of ms, per
    // file when every file has a fresh process).
    const manifest = knownManifest() ?? (await (await import('../run/attach')).attachRun(rawProjectOptions, { rootDir }));
    if (this.current?.manifestPath === manifest.manifestPath && this.current.workerId === workerId) return this.current.worker;
    // A new run in the same process (watch mode): the same thread, pointed at the new run's database.
    const worker = openRunSandbox(manifest, { workerId, unref: true, thread: this.thread(options, workerId) });
    this.current = { manifestPath: manifest.manifestPath, workerId, worker };
    worker.catch(() => {
      if (this.current?.manifestPath === manifest.manifestPath) this.current = undefined;
    });
    return worker;
  }

  /** Close this process's sandbox, if it has one (--runInBand: global teardown runs here too). */
  async close(): Promise<void> {
    const t = this.started;
    this.started = undefined;
    this.current = undefined;
    if (t) await t.close().catch(() => undefined);
  }
}

/** What names a run's worker sandbox: its socket directory and database. */
type RunNames = Pick<RunManifest, 'runDir' | 'prefix' | 'runId'>;

function threadOptions(options: PgOptions, id: string, run: RunNames | undefined): ThreadOptions {
  return {
    // Under the run dir when the run is known (removed with it); loopback TCP only otherwise.
    // Per thread: a runner's thread pool runs several workers in one process.
    socketDir: run ? path.join(run.runDir, `w${id}-${process.pid}${threadId ? `-${threadId}` : ''}`) : undefined,
    secret: randomBytes(18).toString('base64url'),
    isolation: options.isolation,
    resetSequences: options.resetSequences,
    graceMs: options.graceMs,
    lockWaitMs: options.lockWaitMs,
    label: `jest-environment-pg w${id}`,
    user: 'postgres',
    database: run ? workerDbName(run.prefix, run.runId, id) : 'postgres',
    unref: true,
  };
}

/** The one worker registry of this process (of this thread, under a thread pool). */
export const processWorker = new WorkerRegistry();

/** This process's sandbox thread, started now if there is none (see WorkerRegistry). */
export function workerThread(options: PgOptions, id: string): SandboxThread {
  return processWorker.thread(options, id);
}

/** This worker's sandbox on its database of the run (see WorkerRegistry). */
export function attachWorker(rawProjectOptions: unknown, rootDir: string, options: PgOptions, workerId: string): Promise<Worker> {
  return processWorker.attach(rawProjectOptions, rootDir, options, workerId);
}

/** Close this process's sandbox, if it has one (--runInBand: global teardown runs here too). */
export function closeWorkerInProcess(): Promise<void> {
  return processWorker.close();
}
