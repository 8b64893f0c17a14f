/**
 * Per-process state of a Jest worker: the run it belongs to and its sandbox (its own
 * database, cloned the first time it is needed, by itself: nothing counts workers in
 * advance), which lives across the test files the worker runs. The same implementation
 * as the programmatic API (src/api.ts), unref'd so it never keeps a worker alive.
 */
import { attachRun, type RunManifest } from './run';
import { openRunSandbox, type RunSandbox } from './api';

export type Worker = RunSandbox;

let current: { manifestPath: string; worker: Promise<Worker> } | undefined;

export async function attachWorker(rawProjectOptions: unknown, rootDir: string): Promise<Worker> {
  const manifest = await attachRun(rawProjectOptions, { rootDir });
  if (current?.manifestPath === manifest.manifestPath) return current.worker;
  // A new run in the same process (watch mode with --runInBand): drop the old sandbox.
  const old = current;
  current = { manifestPath: manifest.manifestPath, worker: startWorker(manifest) };
  if (old) void old.worker.then((w) => w.close()).catch(() => undefined);
  current.worker.catch(() => {
    if (current?.manifestPath === manifest.manifestPath) current = undefined;
  });
  return current.worker;
}

function startWorker(manifest: RunManifest): Promise<Worker> {
  const workerId = process.env.JEST_WORKER_ID ?? '1';
  return openRunSandbox(manifest, { workerId, unref: true, label: `jest-environment-pg w${workerId}` });
}

/** Close this process's sandbox, if it has one (--runInBand: global teardown runs here too). */
export async function closeWorkerInProcess(): Promise<void> {
  const w = current;
  current = undefined;
  if (w) await w.worker.then((x) => x.close()).catch(() => undefined);
}
