/**
 * The Jest environment: a thin layer over NodeEnvironment that maps Circus events onto the
 * runner-agnostic test file (src/sandbox/file.ts): options from Jest's config and docblocks,
 * test start/end, hooks, test.concurrent groups, setup and teardown.
 */
import { TestEnvironment as NodeEnvironment } from 'jest-environment-node';
import type { Circus, Config } from '@jest/types';
import { fileOverrides, validate } from '../util/options';
import { knownManifest, processWorker } from '../sandbox/worker';
import { SandboxFile } from '../sandbox/file';
import { JestPgError } from '../util/errors';
import { MANIFEST_ENV } from '../run/manifest';

interface EnvironmentConfig {
  globalConfig: Config.GlobalConfig;
  projectConfig: Config.ProjectConfig;
}
interface EnvironmentContext {
  testPath: string;
  docblockPragmas: Record<string, string | string[]>;
  console?: Console;
}

/** Jest's worker id names the worker database. */
const jestWorkerId = (): string => process.env.JEST_WORKER_ID ?? '1';

export default class PgEnvironment extends NodeEnvironment {
  private readonly file: SandboxFile<Circus.TestEntry>;
  private tornDown = false;

  constructor(config: EnvironmentConfig, context: EnvironmentContext) {
    super(config as never, context as never);
    const pragmas = context.docblockPragmas ?? {};
    const envOptions = pragmas['jest-environment-options'];
    // Jest merges a docblock's {"pg": …} shallowly over the project's options: when the file
    // has one, testEnvironmentOptions.pg is the file's, and the project's come from the run.
    const docblockHasPg = typeof envOptions === 'string' && /"pg"\s*:/.test(envOptions);
    const envOpts = (config.projectConfig.testEnvironmentOptions ?? {}) as Record<string, unknown>;
    const rawProject = docblockHasPg ? undefined : envOpts.pg;
    if (docblockHasPg && !process.env[MANIFEST_ENV]) {
      // No global setup, and this file's {"pg": …} hides the project's options (migrations…)
      // from it: starting the run from here would silently drop them.
      throw new JestPgError(
        'JESTPG_OPTION_TYPE',
        `${context.testPath} sets @jest-environment-options {"pg": …}, which Jest substitutes for the project's whole "pg" options, and no global setup started the run. ` +
          `Use the preset (or globalSetup: 'jest-environment-pg/global-setup'), or per-key pragmas such as @pg-isolation file instead.`,
      );
    }
    const overrides = fileOverrides(pragmas);
    const manifest = knownManifest();
    // Validated now (an unknown key or a bad value fails before anything starts); the run's
    // options (from the global setup) win when the run is known.
    const projectOptions = manifest && (docblockHasPg || rawProject === undefined) ? manifest.options : validate(rawProject);
    // jest-environment-node copies every testEnvironmentOptions key onto the test global.
    const g = this.global as unknown as Record<string, unknown>;
    if ('pg' in envOpts && g.pg === envOpts.pg) delete g.pg;
    // Started in the constructor, before Jest runs the project's setupFiles (which run before
    // setup()), and opened at once: a setup file may await a query (Jest awaits a setup file
    // that exports a function, before setup()). setup() and teardown() wait for it.
    this.file = new SandboxFile<Circus.TestEntry>(
      {
        rawProject,
        overrides,
        options: validate(overrides, projectOptions),
        rootDir: config.projectConfig.rootDir,
        testPath: context.testPath,
        workerId: jestWorkerId(),
        testEnv: (this.global.process as NodeJS.Process).env,
        source: processWorker,
      },
      // Jest reads a test's errors when the file ends: a late query fails the test that started it.
      { fail: (test, err) => test.errors.push(err) },
    );
  }

  /**
   * With the run known (global setup), setup() does not wait for the file transaction: Jest loads
   * the setupFilesAfterEnv and the test file meanwhile (a client that queries while they load waits
   * in the sandbox for the file), and run_start, before any hook or test, waits for it; a failure
   * fails the file there as it would here. Without a global setup, the first file's attach names
   * the worker database (PGDATABASE): setup() waits, so the test file never sees a provisional one.
   */
  override async setup(): Promise<void> {
    await super.setup();
    if (!this.file.runKnown) await this.file.opened;
  }

  async handleTestEvent(event: Circus.AsyncEvent | Circus.SyncEvent, _state: Circus.State): Promise<void> {
    const file = this.file;
    if (event.name === 'run_start') return file.opened;
    if (!file.active) return;
    // Jest 30 runs a run of test.concurrent tests as a group between these two events: they
    // share one scope, reported on the group's first test.
    const name = event.name as string;
    if (name === 'concurrent_tests_start') {
      const tests = (event as unknown as { tests: Circus.TestEntry[] }).tests;
      this.inGroup = true;
      file.beginGroup(tests, tests.map((t) => testName(t)).join(' + '));
      return;
    }
    if (name === 'concurrent_tests_end') {
      this.inGroup = false;
      await file.endTest();
      return;
    }
    switch (event.name) {
      case 'test_started':
        if (!this.inGroup) file.beginTest(event.test, testName(event.test));
        return;
      case 'test_done':
        if (!this.inGroup) await file.endTest(event.test);
        return;
      case 'hook_start':
        if (event.hook.type === 'beforeAll' || event.hook.type === 'afterAll') file.enterHook();
        return;
      case 'hook_success':
      case 'hook_failure':
        if (event.hook.type === 'beforeAll' || event.hook.type === 'afterAll') file.leaveHook();
        return;
      default:
        return;
    }
  }

  /** Inside a group of concurrent tests (Jest 30). */
  private inGroup = false;

  override async teardown(): Promise<void> {
    try {
      if (!this.tornDown) {
        this.tornDown = true;
        await this.file.end();
      }
    } finally {
      // The worker's own environment (inherited by child processes) goes back as it was, so a
      // later file on this worker that does not use the sandbox sees no dead sandbox URL.
      this.file.restoreEnv();
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
