/**
 * The Jest environment: a thin layer over NodeEnvironment that drives the worker's sandbox
 * (src/proxy/sandbox.ts) from Circus events. Everything it does is in plain modules; this
 * file only maps Jest's lifecycle onto them.
 */
import { TestEnvironment as NodeEnvironment } from 'jest-environment-node';
import type { Circus, Config } from '@jest/types';
import { fileOverrides, validate, type PgOptions } from '../util/options';
import { attachWorker, knownDatabase, knownManifest, workerThread, type Worker } from './worker';
import type { SandboxThread } from '../sandbox/thread';
import { formatFileReport } from '../sandbox/report';
import { classifyProblems, problemsError, sandboxEnv } from '../sandbox/api';
import { JestPgError } from '../util/errors';
import type { LateProblem } from '../proxy/sandbox';
import { MANIFEST_ENV, noteIdleClosed } from '../run/run';

interface EnvironmentConfig {
  globalConfig: Config.GlobalConfig;
  projectConfig: Config.ProjectConfig;
}
interface EnvironmentContext {
  testPath: string;
  docblockPragmas: Record<string, string | string[]>;
  console?: Console;
}

export default class PgEnvironment extends NodeEnvironment {
  private readonly rawProject: unknown;
  private readonly overrides: Record<string, unknown>;
  private readonly rootDir: string;
  private readonly testPath: string;
  private options: PgOptions;
  private readonly thread: SandboxThread;
  private worker: Worker | undefined;
  private fileOpen = false;
  private tornDown = false;
  private readonly savedEnv: Record<string, string | undefined> = {};
  /** The tests of this file that have ended, one per sandbox test (late work is reported on them). */
  private readonly ended: Circus.TestEntry[] = [];

  constructor(config: EnvironmentConfig, context: EnvironmentContext) {
    super(config as never, context as never);
    const pragmas = context.docblockPragmas ?? {};
    const envOptions = pragmas['jest-environment-options'];
    // Jest merges a docblock's {"pg": …} shallowly over the project's options: when the file
    // has one, testEnvironmentOptions.pg is the file's, and the project's come from the run.
    const docblockHasPg = typeof envOptions === 'string' && /"pg"\s*:/.test(envOptions);
    const envOpts = (config.projectConfig.testEnvironmentOptions ?? {}) as Record<string, unknown>;
    this.rawProject = docblockHasPg ? undefined : envOpts.pg;
    if (docblockHasPg && !process.env[MANIFEST_ENV]) {
      // No global setup, and this file's {"pg": …} hides the project's options (migrations…)
      // from it: starting the run from here would silently drop them.
      throw new JestPgError(
        'JESTPG_OPTION_TYPE',
        `${context.testPath} sets @jest-environment-options {"pg": …}, which Jest substitutes for the project's whole "pg" options, and no global setup started the run. ` +
          `Use the preset (or globalSetup: 'jest-environment-pg/global-setup'), or per-key pragmas such as @pg-isolation file instead.`,
      );
    }
    this.overrides = fileOverrides(pragmas);
    const manifest = knownManifest();
    // Validated now (an unknown key or a bad value fails before anything starts); the run's
    // options (from the global setup) win when the run is known.
    const projectOptions = manifest && (docblockHasPg || this.rawProject === undefined) ? manifest.options : validate(this.rawProject);
    this.options = validate(this.overrides, projectOptions);
    this.rootDir = config.projectConfig.rootDir;
    this.testPath = context.testPath;
    // jest-environment-node copies every testEnvironmentOptions key onto the test global.
    const g = this.global as unknown as Record<string, unknown>;
    if ('pg' in envOpts && g.pg === envOpts.pg) delete g.pg;
    // The sandbox's address is known now, before Jest runs the project's setupFiles (which run
    // before setup()): they see DATABASE_URL/PG*. Clients that connect before setup() has opened
    // the file transaction wait for it.
    this.thread = workerThread(this.options);
    this.thread.currentFile = this.testPath;
    this.thread.expectFile();
    this.exportEnv(knownDatabase());
    // Opened at once, not in setup(): a setup file may await a query (Jest awaits a setup file
    // that exports a function, before setup()). setup() and teardown() wait for it.
    this.opened = this.open();
    this.opened.catch(() => undefined);
  }

  private readonly opened: Promise<void>;

  /** DATABASE_URL, PG* and the exposeAs names, in the test's process.env and the worker's own (inherited by child processes). */
  private exportEnv(database: string | undefined): void {
    const env = sandboxEnv(this.thread.info, this.options.exposeAs, database);
    const testEnv = (this.global.process as NodeJS.Process).env;
    for (const [k, v] of Object.entries(env)) {
      testEnv[k] = v;
      if (!(k in this.savedEnv)) this.savedEnv[k] = process.env[k];
      process.env[k] = v;
    }
  }

  /** Attach to the run (its worker database cloned on first use) and open the file transaction. */
  private async open(): Promise<void> {
    this.worker = await attachWorker(this.rawProject, this.rootDir, this.options);
    this.options = validate(this.overrides, this.worker.manifest.options);
    const sb = this.worker.sandbox;
    sb.configure({ isolation: this.options.isolation, graceMs: this.options.graceMs, lockWaitMs: this.options.lockWaitMs, resetSequences: this.options.resetSequences });
    // The first file of a worker without a global setup learns its database's name only now.
    if (process.env.PGDATABASE !== this.worker.database) this.exportEnv(this.worker.database);
    sb.onLate = (p) => this.onLate(p);
    await sb.beginFile();
    this.fileOpen = true;
  }

  override async setup(): Promise<void> {
    await super.setup();
    await this.opened;
  }

  /**
   * A query that ran after its test ended (in a savepoint of its own, rolled back): it fails the
   * test that started it (lateQueries: 'error', Jest reads a test's errors when the file ends)
   * or warns.
   */
  private onLate(p: LateProblem): void {
    const test = this.ended[p.afterTest - 1];
    const problems = classifyProblems([p], this.options);
    const err = test ? problemsError(problems) : undefined;
    if (err && test) test.errors.push(err);
    else for (const x of problems) process.stderr.write(`jest-environment-pg warning: ${x.message}\n`);
  }

  async handleTestEvent(event: Circus.AsyncEvent | Circus.SyncEvent, _state: Circus.State): Promise<void> {
    const sb = this.worker?.sandbox;
    if (!sb || !this.fileOpen) return;
    // Jest 30 runs a run of test.concurrent tests as a group between these two events: they
    // share one scope (one savepoint), opened before the first starts and rolled back after
    // the last ends, so none of their queries is late while any of them runs.
    const name = event.name as string;
    if (name === 'concurrent_tests_start') {
      const tests = (event as unknown as { tests: Circus.TestEntry[] }).tests;
      this.group = tests;
      sb.beginTest(`concurrent: ${tests.map((t) => testName(t)).join(' + ')}`);
      return;
    }
    if (name === 'concurrent_tests_end') {
      const group = this.group ?? [];
      this.group = undefined;
      // Reported on the first test of the group (whose connection it was cannot be known).
      if (group.length) await this.endTest(group[0]);
      return;
    }
    switch (event.name) {
      case 'test_started':
        if (!this.group) sb.beginTest(testName(event.test));
        return;
      case 'test_done':
        if (!this.group) await this.endTest(event.test);
        return;
      case 'hook_start':
        if (event.hook.type === 'beforeAll' || event.hook.type === 'afterAll') sb.enterHook();
        return;
      case 'hook_success':
      case 'hook_failure':
        if (event.hook.type === 'beforeAll' || event.hook.type === 'afterAll') sb.leaveHook();
        return;
      default:
        return;
    }
  }

  /** The concurrent tests running as one group (Jest 30), if any. */
  private group: Circus.TestEntry[] | undefined;

  /** End the sandbox's test and fail `test` (never the whole file) with what it left behind, or warn, per option. */
  private async endTest(test: Circus.TestEntry): Promise<void> {
    this.ended.push(test);
    const problems = classifyProblems((await this.worker!.sandbox.endTest()).problems, this.options);
    for (const p of problems) if (p.severity === 'warn') process.stderr.write(`jest-environment-pg warning: ${p.message}\n`);
    const err = problemsError(problems);
    if (err) test.errors.push(err);
  }

  override async teardown(): Promise<void> {
    try {
      if (!this.tornDown) {
        this.tornDown = true;
        await this.opened.catch(() => undefined);
        const worker = this.worker;
        if (worker && this.fileOpen) {
          this.fileOpen = false;
          const report = await worker.endFile(this.testPath);
          // Idle connections of a pool the app never closes are normal: counted, not listed.
          noteIdleClosed(worker.manifest, report.idle);
          // Late queries were reported on the tests that left them (onLate).
          const text = formatFileReport(this.testPath, { ...report, late: [] });
          if (text) process.stderr.write(text + '\n');
        }
      }
    } finally {
      const testEnv = (this.global?.process as NodeJS.Process | undefined)?.env;
      if (testEnv) for (const k of Object.keys(this.savedEnv)) delete testEnv[k];
      // The worker's own environment (inherited by child processes) goes back as it was, so a
      // later file on this worker that does not use the sandbox sees no dead sandbox URL.
      for (const [k, v] of Object.entries(this.savedEnv)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
      // Last, and whatever happened above (Jest calls teardown in a finally, also after a failed setup).
      await super.teardown();
    }
  }
}

/** "describe › nested › test name", as Jest prints it. */
function testName(test: Circus.TestEntry): string {
  const parts = [test.name];
  let block: Circus.DescribeBlock | undefined = test.parent;
  while (block && block.parent) {
    parts.unshift(block.name);
    block = block.parent;
  }
  return parts.join(' › ');
}
