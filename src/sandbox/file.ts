/**
 * One test file on the worker's sandbox, whatever the runner: the file transaction, a scope
 * (savepoint) per test or per group of concurrent tests, hooks that belong to the file, the
 * problems a test left (failing that test, or warnings, per option), late queries attributed to
 * the test that ended before them, the end-of-file report, and DATABASE_URL/PG* exported for the
 * file and put back after it. A runner adapter (src/jest/environment.ts, src/vitest/runner.ts)
 * only maps its own events onto these calls; `T` is its handle on a test.
 */
import { validate, type PgOptions } from '../util/options';
import type { ConnectionInfo, FileReport, LateProblem, TestReport } from '../proxy/sandbox';
import type { RunManifest } from '../run/manifest';
import { knownDatabase } from './known-run';
import { formatFileReport } from './report';
import { classifyProblems, problemsError } from './problems';
import { sandboxEnv } from './env';

export interface FileHost<T> {
  /** Fail `test` with `err` (the test may still run, or have ended: then before the file's results are final). */
  fail(test: T, err: Error): void;
}

/** What a file needs of its worker's sandbox: on a thread of this process (worker.ts) or hosted by the runner's main process (hosted.ts). */
export interface FileSandbox {
  readonly info: ConnectionInfo;
  currentFile: string | undefined;
  onLate: ((problem: LateProblem) => void) | undefined;
  expectFile(): void;
  configure(o: { isolation: 'test' | 'file'; graceMs: number; lockWaitMs: number; resetSequences: boolean }): void;
  beginFile(): Promise<void>;
  beginTest(name: string): void;
  enterHook(): void;
  leaveHook(): void;
  endTest(): Promise<TestReport>;
  disconnect(): Promise<void>;
  /** Resolves once every boundary posted so far is in effect (absent: at once, as on a thread of this process). */
  delivered?(): Promise<void>;
}

/** A worker's sandbox on its database of the run. */
export interface FileWorker {
  manifest: RunManifest;
  database: string;
  sandbox: FileSandbox;
  endFile(label?: string): Promise<FileReport>;
}

/** Where a file gets its worker's sandbox: worker.ts (this process's own) or hosted.ts (its runner's main process). */
export interface WorkerSource {
  /** The sandbox, its address known on return (started now if need be). */
  thread(options: PgOptions, workerId: string): FileSandbox;
  /** The sandbox on the run's worker database (attached, and the database cloned, on first use). */
  attach(rawProjectOptions: unknown, rootDir: string, options: PgOptions, workerId: string): Promise<FileWorker>;
}

export interface FileInit {
  /** The project's `pg` options as written (attaching without a global setup starts the run with them). */
  rawProject: unknown;
  /** This file's own option overrides (validated over the run's). */
  overrides: Record<string, unknown>;
  /** The options known now (validated): the sandbox thread starts with them. */
  options: PgOptions;
  rootDir: string;
  testPath: string;
  /** Names this worker's database (`<prefix>_<run>_w<workerId>`): the runner's own worker id. */
  workerId: string;
  /** The test's process.env when it is not this process's own (Jest's test context); DATABASE_URL/PG* go there too. */
  testEnv?: NodeJS.ProcessEnv;
  /** Where the worker's sandbox comes from: this process's own, on its own thread (worker.ts's processWorker), or a hosted one (hosted.ts). */
  source: WorkerSource;
}

export class SandboxFile<T> {
  private options: PgOptions;
  private readonly thread: FileSandbox;
  private readonly source: WorkerSource;
  private worker: FileWorker | undefined;
  private fileOpen = false;
  private ending: Promise<void> | undefined;
  private readonly savedEnv: Record<string, string | undefined> = {};
  /** The tests of this file that have ended, one per sandbox test (late work is reported on them). */
  private readonly ended: T[] = [];
  /** The tests sharing the open scope: one, or a group running concurrently. */
  private scope: T[] | undefined;
  /** Resolves when the file transaction is open (rejects with what failed). */
  readonly opened: Promise<void>;
  /**
   * The run was known when the file began (a global setup started it): the worker database's name,
   * and with it everything exported, is final from the start, and need not wait for the attach.
   */
  readonly runKnown: boolean;

  constructor(
    private readonly init: FileInit,
    private readonly host: FileHost<T>,
  ) {
    this.options = init.options;
    // The sandbox's address is known now, before the runner loads the project's setup files:
    // they see DATABASE_URL/PG*. Clients that connect before the file transaction is open wait for it.
    this.source = init.source;
    this.thread = this.source.thread(this.options, init.workerId);
    this.thread.currentFile = init.testPath;
    this.thread.expectFile();
    const database = knownDatabase(init.workerId);
    this.runKnown = database !== undefined;
    this.exportEnv(database);
    this.opened = this.open();
    this.opened.catch(() => undefined);
  }

  /** DATABASE_URL, PG* and the exposeAs names, in the test's process.env and the worker's own (inherited by child processes). */
  private exportEnv(database: string | undefined): void {
    const env = sandboxEnv(this.thread.info, this.options.exposeAs, database);
    for (const [k, v] of Object.entries(env)) {
      if (this.init.testEnv) this.init.testEnv[k] = v;
      if (!(k in this.savedEnv)) this.savedEnv[k] = process.env[k];
      process.env[k] = v;
    }
  }

  /** Attach to the run (its worker database cloned on first use) and open the file transaction. */
  private async open(): Promise<void> {
    const { rawProject, rootDir, overrides, workerId } = this.init;
    this.worker = await this.source.attach(rawProject, rootDir, this.options, workerId);
    this.options = validate(overrides, this.worker.manifest.options);
    const sb = this.worker.sandbox;
    sb.configure({ isolation: this.options.isolation, graceMs: this.options.graceMs, lockWaitMs: this.options.lockWaitMs, resetSequences: this.options.resetSequences });
    // The first file of a worker without a global setup learns its database's name only now.
    if (process.env.PGDATABASE !== this.worker.database) this.exportEnv(this.worker.database);
    sb.onLate = (p) => this.onLate(p);
    await sb.beginFile();
    this.fileOpen = true;
  }

  /** The file transaction is open (events before it, or after the end, are ignored). */
  get active(): boolean {
    return this.fileOpen && this.ending === undefined;
  }

  /**
   * A query that ran after its test ended (in a savepoint of its own, rolled back): it fails the
   * test that started it (lateQueries: 'error') or warns.
   */
  private onLate(p: LateProblem): void {
    const test = this.ended[p.afterTest - 1];
    const problems = classifyProblems([p], this.options);
    const err = test !== undefined ? problemsError(problems) : undefined;
    if (err && test !== undefined) this.host.fail(test, err);
    else for (const x of problems) warn(x.message);
  }

  /** A test starts: it gets its own scope (a savepoint with isolation 'test'). */
  beginTest(test: T, name: string): void {
    if (!this.active) return;
    this.scope = [test];
    this.worker!.sandbox.beginTest(name);
  }

  /**
   * Tests that run concurrently share one scope, opened before the first starts and rolled back
   * after the last ends, so none of their queries is late while any of them runs.
   */
  beginGroup(tests: T[], name: string): void {
    if (!this.active) return;
    this.scope = tests;
    this.worker!.sandbox.beginTest(`concurrent: ${name}`);
  }

  /** The open scope's tests (one, or a concurrent group), if any. */
  get current(): readonly T[] | undefined {
    return this.scope;
  }

  /**
   * End the open scope and fail `reportOn` (never the whole file; by default the scope's first
   * test, since whose connection it was cannot be known in a group) with what it left behind,
   * or warn, per option.
   */
  async endTest(reportOn?: T): Promise<void> {
    const scope = this.scope;
    this.scope = undefined;
    if (!scope || !this.fileOpen || !this.worker) return;
    const test = reportOn ?? scope[0];
    this.ended.push(test);
    // What the test started but had not yet sent when it returned is sent before its end is
    // posted: a pool hands out an idle client on process.nextTick, and a runner can reach this
    // point in the same chain of promise jobs (Vitest's does), which would post the end before the
    // query's bytes — the sandbox applies every boundary posted before it reads a client's bytes,
    // so it would take the query for the next test's. A check-phase callback runs only once the
    // nextTick and promise queues are empty: those writes are on the socket first, and the sandbox
    // reads what is on its sockets before it ends the test.
    await new Promise<void>((resolve) => setImmediate(resolve));
    const problems = classifyProblems((await this.worker.sandbox.endTest()).problems, this.options);
    for (const p of problems) if (p.severity === 'warn') warn(p.message);
    const err = problemsError(problems);
    if (err && test !== undefined) this.host.fail(test, err);
  }

  /** Resolves once the boundaries posted so far (test begun, hook entered) are in effect: the runner awaits it before running the test's or hook's code. */
  async delivered(): Promise<void> {
    await this.worker?.sandbox.delivered?.();
  }

  /** A beforeAll/afterAll hook runs: what it does belongs to the file, not late. */
  enterHook(): void {
    if (this.active) this.worker!.sandbox.enterHook();
  }
  leaveHook(): void {
    if (this.active) this.worker!.sandbox.leaveHook();
  }

  /**
   * End the file: close the connections still open (listed on stderr), roll back, count the idle
   * ones of pools the app never closed (the run's summary line). Late queries were reported on
   * the tests that left them. Idempotent; waits for the opening.
   */
  end(): Promise<void> {
    this.ending ??= (async () => {
      await this.opened.catch(() => undefined);
      const worker = this.worker;
      if (!worker || !this.fileOpen) return;
      try {
        const report = await worker.endFile(this.init.testPath);
        if (report.idle > 0) (await import('../run/teardown')).noteIdleClosed(worker.manifest, report.idle);
        const text = formatFileReport(this.init.testPath, { ...report, late: [] });
        if (text) process.stderr.write(text + '\n');
      } finally {
        this.fileOpen = false;
      }
    })();
    return this.ending;
  }

  /** Close the sandbox's upstream connection (and its side connection) until the next file opens one. */
  async disconnect(): Promise<void> {
    await this.worker?.sandbox.disconnect();
  }

  /** Put DATABASE_URL/PG* back as they were before the file (a later file without the sandbox sees no dead URL). */
  restoreEnv(): void {
    const testEnv = this.init.testEnv;
    if (testEnv) for (const k of Object.keys(this.savedEnv)) delete testEnv[k];
    for (const [k, v] of Object.entries(this.savedEnv)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

function warn(message: string): void {
  process.stderr.write(`jest-environment-pg warning: ${message}\n`);
}
