/** Jest globalSetup: start the run (server, template, reaper) before any worker exists. */
import { existsSync } from 'node:fs';
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
  const m = await startRun(projectConfig?.testEnvironmentOptions?.pg, process.pid, { rootDir: projectConfig?.rootDir, reaperInBackground: true });
  if (m.swept) process.stderr.write(sweptLine(m.swept) + '\n');
  // What the reaper of an earlier run (Jest killed) could not do: its output went nowhere then.
  for (const line of takeReaperLogs()) process.stderr.write(`\njest-environment-pg: ${line}\n`);
  // A damaged cache entry never fails a run: it is deleted, the run starts without it, and says so.
  for (const d of m.cache?.discarded ?? []) process.stderr.write(`\njest-environment-pg: ${d}.\n`);
  installInterruptHandler();
  await runProjectSetup(m, globalConfig, projectConfig); // the project's own (pg.globalSetup), after ours
}

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
