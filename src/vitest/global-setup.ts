/**
 * Vitest globalSetup (the plugin adds it): start the run before any worker exists, with the same
 * code as Jest's global setup (server, template, lease, manifest, reaper); the returned teardown
 * reports what is still connected, drops the run's databases and prints the summary line.
 */
import { existsSync } from 'node:fs';
import { MANIFEST_ENV, printTeardown, readManifest, startRun, takeReaperLogs, teardownRun } from '../run/run';
import { sweptLine } from '../sandbox/report';
import { SandboxHost } from '../sandbox/host';

interface ProjectLike {
  config: { root: string; environmentOptions?: Record<string, unknown> };
}

export default async function globalSetup(project: ProjectLike): Promise<() => Promise<void>> {
  const config = project.config;
  // The teardown returned below runs in this process: as under Jest, the reaper's boot is not
  // waited for here (it holds the lease before the workers need it; the teardown fails the run if it never does).
  const m = await startRun(config.environmentOptions?.pg, process.pid, { rootDir: config.root, reaperInBackground: true });
  if (m.swept) {
    const line = sweptLine(m.swept);
    if (line) process.stderr.write(line + '\n');
  }
  for (const line of takeReaperLogs()) process.stderr.write(`\njest-environment-pg: ${line}\n`);
  for (const d of m.cache?.discarded ?? []) process.stderr.write(`\njest-environment-pg: ${d}.\n`);
  // The workers' sandboxes live here, one per pool id, across the files of the run (a worker
  // without a host socket, e.g. on a path too long for one, starts its own as under Jest).
  const host = await SandboxHost.start(m).catch(() => undefined);
  // Pool id 1 runs the first file: its sandbox starts now, and its thread clones the database meanwhile.
  host?.prewarm('1');
  return async () => {
    // Vitest runs this before it stops its workers: the sandboxes close (their clients and upstream) first.
    await host?.close();
    const file = process.env[MANIFEST_ENV];
    if (!file || !existsSync(file)) return; // already torn down
    const summary = await teardownRun(readManifest(file));
    printTeardown(summary);
    if (summary.reaperError) throw summary.reaperError;
  };
}
