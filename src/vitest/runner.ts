/**
 * The Vitest runner: Vitest's own runner class (given by the caller, from the Vitest that runs)
 * with the sandbox's boundaries mapped onto its task hooks, for the files that run in the `pg`
 * environment. Everything else is src/sandbox/file.ts, shared with the Jest environment.
 *
 * - File: opened before collection (setup files and module scope already see DATABASE_URL/PG*
 *   and run inside the file transaction), ended after the file's afterAll hooks.
 * - Test: every attempt (retries, repeats, each `test.each` case) begins in `onBeforeTryTask`,
 *   before its beforeEach hooks, and ends in an `onFinished` hook of the attempt, which Vitest
 *   runs after the afterEach hooks and before deciding on a retry: a leak fails the attempt.
 * - Concurrent tests (`test.concurrent`, `describe.concurrent`) share one scope while any of them
 *   runs; what the group left is reported on the test that ends it.
 * - beforeAll/afterAll hooks (and a beforeAll's returned cleanup) belong to the file: their
 *   queries are not late.
 * - A late query fails the test that ended before it, also after that test's result was sent.
 */
import { SandboxFile } from '../sandbox/file';
import { knownManifest } from '../sandbox/known-run';
import { processHosted } from '../sandbox/hosted';
import { validate } from '../util/options';
import { activeEnvironment } from './active';
import type { RunnerClass, VitestHooks, VitestRunnerLike, VitestSuite, VitestTask } from './types';

/** Vitest's own id of the pool slot (1..maxWorkers, reused by the workers that replace each other) names the worker database. */
export const vitestWorkerId = (): string => process.env.VITEST_POOL_ID ?? process.env.VITEST_WORKER_ID ?? '1';

export { VITEST_DIST_ENV } from './active';

type AnyFn = (...args: unknown[]) => unknown;
const WRAPPED = Symbol.for('jest-environment-pg.vitest.hook');

export function sandboxRunner(Base: RunnerClass, getHooks: (suite: VitestSuite) => VitestHooks): RunnerClass {
  class PgRunner extends Base {
    private file: SandboxFile<VitestTask> | undefined;
    /** The tests of the open scope still running (more than one when they run concurrently). */
    private readonly running = new Set<VitestTask>();
    /** Resolves when the open scope's beginning is in effect (at once for a sandbox of this process's own). */
    private scopeOpened: Promise<void> | undefined;
    /** The test whose end is being reported (its problems fail the attempt, thrown from its onFinished hook). */
    private finishing: { test: VitestTask; errors: Error[] } | undefined;

    override async onBeforeCollect(paths: string[]): Promise<void> {
      await super.onBeforeCollect?.(paths);
      await this.endFile();
      const env = activeEnvironment();
      if (!env || paths.length === 0) return;
      const project = this.config.environmentOptions?.pg;
      const fromEnv = env.options.pg;
      // A file's own `@vitest-environment-options {"pg": …}` replaces the project's: its keys override the run's.
      const overrides = fromEnv !== undefined && JSON.stringify(fromEnv) !== JSON.stringify(project) ? (fromEnv as Record<string, unknown>) : {};
      const manifest = knownManifest();
      const base = manifest ? manifest.options : validate(project);
      const workerId = vitestWorkerId();
      // The sandbox hosted by Vitest's main process (its global setup started one): no sandbox
      // thread or upstream connection of this process's own, per file under isolation.
      // Without one, this process's own (loaded only then).
      const source = (await processHosted.source(manifest, workerId)) ?? (await import('../sandbox/worker')).processWorker;
      this.running.clear();
      this.file = new SandboxFile<VitestTask>(
        { rawProject: project, overrides, options: validate(overrides, base), rootDir: this.config.root, testPath: paths[0], workerId, source },
        { fail: (test, err) => this.fail(test, err) },
      );
      await this.file.opened;
    }

    override async onCollected(files: VitestSuite[]): Promise<void> {
      await super.onCollected?.(files);
      if (!this.file) return;
      for (const f of files) this.wrapHooks(f);
    }

    /** beforeAll/afterAll hooks of every suite run as the file's (their returned cleanups too). */
    private wrapHooks(suite: VitestSuite): void {
      const hooks = getHooks(suite);
      if (hooks) {
        hooks.beforeAll = hooks.beforeAll.map((h) => this.asFileHook(h));
        hooks.afterAll = hooks.afterAll.map((h) => this.asFileHook(h));
      }
      for (const t of suite.tasks ?? []) if (t.type === 'suite') this.wrapHooks(t as VitestSuite);
    }

    private asFileHook(hook: AnyFn): AnyFn {
      if ((hook as unknown as Record<symbol, unknown>)[WRAPPED]) return hook;
      const file = this.file;
      const wrapped = async (...args: unknown[]) => {
        file?.enterHook();
        try {
          await file?.delivered();
          const result = await hook(...args);
          return typeof result === 'function' ? this.asFileHook(result as AnyFn) : result;
        } finally {
          file?.leaveHook();
        }
      };
      // Vitest keeps a hook's timeout and stack on the function itself.
      return Object.assign(wrapped, hook, { [WRAPPED]: true });
    }

    override async onBeforeTryTask(test: VitestTask, options: { retry: number; repeats: number }): Promise<void> {
      await super.onBeforeTryTask?.(test, options);
      const file = this.file;
      if (!file?.active) return;
      // Concurrent tests join the scope already open.
      if (this.running.size === 0) {
        file.beginTest(test, testName(test));
        this.scopeOpened = file.delivered();
      }
      this.running.add(test);
      // Run last of the attempt's onFinished hooks (they run in reverse order): after afterEach.
      (test.onFinished ??= []).unshift(() => this.finishTest(test));
      // Only once the scope is in effect may the test's code send anything: a concurrent test
      // that joins the scope waits for the same delivery as the test that opened it.
      await this.scopeOpened;
    }

    private async finishTest(test: VitestTask): Promise<void> {
      if (!this.running.delete(test) || this.running.size > 0) return;
      const file = this.file;
      if (!file) return;
      const finishing = { test, errors: [] as Error[] };
      this.finishing = finishing;
      try {
        await file.endTest(test);
      } finally {
        this.finishing = undefined;
      }
      // Thrown here, Vitest fails this attempt (and retries it, if the test may be retried).
      if (finishing.errors.length) throw finishing.errors[0];
    }

    /** Fail a test: the one ending now through its hook; one that has ended by marking its result and sending it again. */
    private fail(test: VitestTask, err: Error): void {
      if (this.finishing?.test === test) {
        this.finishing.errors.push(err);
        return;
      }
      const result = (test.result ??= {});
      result.state = 'fail';
      (result.errors ??= []).push({ name: err.name, message: err.message, stack: err.stack, code: (err as { code?: string }).code });
      void this.onTaskUpdate?.([[test.id, test.result, test.meta]], []).catch(() => undefined);
    }

    override async onAfterRunSuite(suite: VitestSuite): Promise<void> {
      await super.onAfterRunSuite?.(suite);
      if (suite.file === suite || suite.filepath !== undefined) await this.endFile(suite);
    }

    override async onAfterRunFiles(files: VitestSuite[]): Promise<void> {
      // A file that failed to collect is not run: it ends here.
      await this.endFile();
      await super.onAfterRunFiles?.(files);
    }

    /** End the open file: its report, its DATABASE_URL/PG* put back; a late query after its last test fails that test and the file. */
    private async endFile(suite?: VitestSuite): Promise<void> {
      const file = this.file;
      if (!file) return;
      this.file = undefined;
      this.running.clear();
      try {
        await file.end();
      } catch (e) {
        if (!suite) throw e;
        const result = (suite.result ??= {});
        (result.errors ??= []).push({ name: (e as Error).name, message: (e as Error).message, stack: (e as Error).stack });
        result.state = 'fail';
      } finally {
        file.restoreEnv();
        // A sandbox of this process's own (no host): Vitest runs the global teardown before it
        // stops its workers, and with isolation starts the next file's worker before the last one
        // is gone, so the upstream connection closes with the file: no backend of an idle worker
        // is left for the teardown to terminate or the next worker on this database to take as
        // foreign. A hosted sandbox keeps it (the host closes it before the teardown).
        await file.disconnect();
      }
      if (suite?.result && suite.result.state !== 'fail' && hasFailed(suite)) suite.result.state = 'fail';
    }
  }
  return PgRunner;
}

function hasFailed(suite: VitestSuite): boolean {
  return suite.tasks.some((t) => t.result?.state === 'fail' || (t.type === 'suite' && hasFailed(t as VitestSuite)));
}

/** "describe › nested › test name", as the Jest adapter names them. */
function testName(test: VitestTask): string {
  const parts = [test.name];
  let block = test.suite;
  while (block && block.filepath === undefined && block !== test.file) {
    parts.unshift(block.name);
    block = block.suite;
  }
  return parts.join(' › ');
}

export type { VitestRunnerLike };
