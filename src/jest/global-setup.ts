/** Jest globalSetup: start the run (server, template, reaper) before any worker exists. */
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { MANIFEST_ENV, printTeardown, readManifest, startRun, takeReaperLogs, teardownRun } from '../run/run';
import { runProjectSetup } from './user-hooks';
import { sweptLine } from '../sandbox/report';

interface ProjectConfigLike {
  rootDir?: string;
  testEnvironmentOptions?: Record<string, unknown>;
}

export default async function globalSetup(globalConfig: unknown, projectConfig?: ProjectConfigLike): Promise<void> {
  // This process outlives the tests and runs the teardown: the reaper's boot is not waited for here
  // (it holds the lease before the workers need it, and the teardown fails the run if it never does).
  const raw = projectConfig?.testEnvironmentOptions?.pg;
  const m = await startRun(raw, process.pid, { rootDir: projectConfig?.rootDir, reaperInBackground: true });
  if (m.swept) process.stderr.write(sweptLine(m.swept) + '\n');
  // What the reaper of an earlier run (Jest killed) could not do: its output went nowhere then.
  for (const line of takeReaperLogs()) process.stderr.write(`\njest-environment-pg: ${line}\n`);
  // A damaged cache entry never fails a run: it is deleted, the run starts without it, and says so.
  for (const d of m.cache?.discarded ?? []) process.stderr.write(`\njest-environment-pg: ${d}.\n`);
  installInterruptHandler();
  await runProjectSetup(m, globalConfig, projectConfig); // the project's own (pg.globalSetup), after ours
  if (runsInBand(globalConfig, projectConfig?.rootDir)) {
    // Jest runs the tests in this process: the sandbox thread their first file needs boots while
    // Jest prepares it (worker 1's database, Jest's id in band, cloned meanwhile if it is new;
    // after the project's own setup, which may still change the template).
    const { processWorker } = await import('../sandbox/worker');
    processWorker.prestart(m.options, IN_BAND_WORKER, m);
    void processWorker.prepare(raw, projectConfig?.rootDir ?? process.cwd(), m.options, IN_BAND_WORKER);
  }
}

/**
 * Whether Jest will run the tests in this process, known before it decides (after the global
 * setup; Jest 29 and 30 decide alike): always with --runInBand or --detectOpenHandles, never in
 * watch mode, else with one worker or one test file, unless a worker memory limit is set. One test
 * file is guessed from the command line (`jest path/to/one.test.ts` names an existing file); a
 * wrong guess costs an idle thread in this process, closed by the global teardown.
 */
function runsInBand(globalConfig: unknown, rootDir: string | undefined): boolean {
  const g = (globalConfig ?? {}) as {
    runInBand?: boolean;
    detectOpenHandles?: boolean;
    watch?: boolean;
    watchAll?: boolean;
    maxWorkers?: number;
    workerIdleMemoryLimit?: unknown;
    nonFlagArgs?: unknown;
    findRelatedTests?: boolean;
    testPathPatterns?: { patterns?: unknown }; // Jest 30
    testPathPattern?: unknown; // Jest 29
  };
  if (g.runInBand || g.detectOpenHandles) return true;
  if (g.watch || g.watchAll || g.workerIdleMemoryLimit) return false;
  if (typeof g.maxWorkers === 'number' && g.maxWorkers <= 1) return true;
  // One file named, and nothing else selecting tests (no --testPathPatterns beside it).
  const args = g.nonFlagArgs;
  const patterns = g.testPathPatterns?.patterns ?? (typeof g.testPathPattern === 'string' ? [g.testPathPattern] : undefined);
  if (g.findRelatedTests || !Array.isArray(args) || args.length !== 1 || typeof args[0] !== 'string') return false;
  if (!Array.isArray(patterns) || patterns.length !== 1 || patterns[0] !== args[0]) return false;
  return isFile(path.resolve(args[0])) || (rootDir !== undefined && isFile(path.resolve(rootDir, args[0])));
}

function isFile(p: string): boolean {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

/** JEST_WORKER_ID of tests that Jest runs in its own process. */
const IN_BAND_WORKER = '1';

const SIGNALS = ['SIGINT', 'SIGTERM'] as const;
/** How long an interrupted run may spend on its teardown before the process exits anyway (the reaper finishes). */
const INTERRUPT_TEARDOWN_MS = 10_000;

/**
 * Ctrl-C (SIGINT) or SIGTERM while tests run: Jest itself installs no handler, so Node would exit
 * at once and leave the teardown to the reaper, silently. Instead, tear the run down here (report
 * what was still connected, drop the databases, stop the embedded server), print the summary line,
 * then die of the same signal so the exit status is what the shell expects. A second signal exits
 * at once; the reaper finishes whatever is left. Installed once per process (watch mode re-runs
 * globalSetup: the process's own listeners say whether it is there already); it acts on the run
 * that is current when the signal arrives.
 */
function installInterruptHandler(): void {
  const ours = (l: unknown) => l === onInterrupt || l === exitNow;
  if (SIGNALS.some((sig) => process.listeners(sig).some(ours))) return;
  for (const sig of SIGNALS) process.once(sig, onInterrupt);
}

/** A second signal: exit now; the reaper sees Jest gone and does the rest. */
function exitNow(sig: NodeJS.Signals): void {
  process.exit(128 + (sig === 'SIGINT' ? 2 : 15));
}

function onInterrupt(signal: NodeJS.Signals): void {
  for (const sig of SIGNALS) {
    process.removeListener(sig, onInterrupt);
    process.once(sig, exitNow);
  }
  const rethrow = () => {
    for (const sig of SIGNALS) process.removeAllListeners(sig);
    process.kill(process.pid, signal);
  };
  const file = process.env[MANIFEST_ENV];
  if (!file || !existsSync(file)) return rethrow();
  process.stderr.write(`\njest-environment-pg: ${signal} received, tearing the run down before exiting...\n`);
  const timer = setTimeout(() => {
    process.stderr.write(`jest-environment-pg: teardown did not finish within ${INTERRUPT_TEARDOWN_MS} ms; the reaper process finishes it.\n`);
    rethrow();
  }, INTERRUPT_TEARDOWN_MS);
  void (async () => {
    try {
      // --runInBand: the sandbox lives in this process (loaded only now: most runs never need it here).
      await (await import('../sandbox/worker')).closeWorkerInProcess();
      const summary = await teardownRun(readManifest(file));
      printTeardown(summary);
    } catch (e) {
      process.stderr.write(`jest-environment-pg: teardown after ${signal} failed (${(e as Error).message}); the reaper process retries it.\n`);
    } finally {
      clearTimeout(timer);
      rethrow();
    }
  })();
}
