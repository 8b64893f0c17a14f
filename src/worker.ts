/**
 * Per-process state of a Jest worker: the run it belongs to, its own database (cloned
 * from the template the first time it is needed, by itself: nothing counts workers in
 * advance) and its sandbox, which lives across the test files the worker runs.
 */
import path from 'node:path';
import { attachRun, ensureWorkerDatabase, rebuildWorkerDatabase, type RunManifest } from './run';
import { Sandbox, type FileReport } from './proxy/sandbox';

export interface Worker {
  manifest: RunManifest;
  database: string;
  sandbox: Sandbox;
  /** End the current file: close clients, roll back, rebuild the database if a backend went around the sandbox. */
  endFile(testPath: string): Promise<FileReport>;
}

let current: { manifestPath: string; worker: Promise<Worker> } | undefined;

export async function attachWorker(rawProjectOptions: unknown, rootDir: string): Promise<Worker> {
  const manifest = await attachRun(rawProjectOptions, { rootDir });
  if (current?.manifestPath === manifest.manifestPath) return current.worker;
  // A new run in the same process (watch mode with --runInBand): drop the old sandbox.
  const old = current;
  current = { manifestPath: manifest.manifestPath, worker: startWorker(manifest) };
  if (old) void old.worker.then((w) => w.sandbox.close()).catch(() => undefined);
  current.worker.catch(() => {
    if (current?.manifestPath === manifest.manifestPath) current = undefined;
  });
  return current.worker;
}

async function startWorker(manifest: RunManifest): Promise<Worker> {
  const workerId = process.env.JEST_WORKER_ID ?? '1';
  const db = await ensureWorkerDatabase(manifest, workerId);
  const o = manifest.options;
  const sandbox = await Sandbox.start({
    upstreamUrl: upstreamUrl(manifest, db),
    socketDir: path.join(manifest.runDir, `w${workerId}-${process.pid}`),
    secret: manifest.proxySecret,
    isolation: o.isolation,
    graceMs: o.graceMs,
    lockWaitMs: o.lockWaitMs,
    label: `jest-environment-pg w${workerId}`,
    user: 'postgres',
    database: db.name,
    unref: true,
  });
  return {
    manifest,
    database: db.name,
    sandbox,
    async endFile(testPath) {
      const report = await withClosingGuard(() => sandbox.endFile());
      void testPath;
      if (report.foreign.length > 0) {
        // Something wrote to the worker database around the sandbox: it can no longer be trusted.
        await sandbox.disconnect();
        await rebuildWorkerDatabase(manifest, db.name);
      }
      return report;
    },
  };
}

/**
 * Closing an idle pg.Pool's connections makes the pool emit 'error'; a pool without an
 * 'error' listener throws, and Jest's worker exits on any uncaught exception. While the
 * sandbox closes connections (inside teardown, before the next file can start), the
 * process's uncaughtException listeners are set aside and exactly those errors are
 * swallowed; any other error goes to the listeners that were there.
 */
async function withClosingGuard<T extends FileReport>(fn: () => Promise<T>): Promise<T> {
  const ours = (e: unknown) => {
    const msg = String((e as Error | undefined)?.message ?? e);
    return msg.includes('JESTPG_FILE_ENDED') || msg.includes('Connection terminated unexpectedly');
  };
  const saved = process.rawListeners('uncaughtException') as ((err: Error, origin: string) => void)[];
  const guard = (err: Error, origin: string) => {
    if (ours(err)) return;
    if (saved.length === 0) {
      process.removeListener('uncaughtException', guard);
      process.nextTick(() => {
        throw err;
      });
    }
    for (const l of saved) l.call(process, err, origin);
  };
  process.removeAllListeners('uncaughtException');
  process.on('uncaughtException', guard);
  let closedSome = true;
  try {
    const report = await fn();
    closedSome = report.open.length > 0;
    return report;
  } finally {
    // Let the clients read the FATAL and their sockets' end before handing errors back.
    if (closedSome) {
      for (let i = 0; i < 3; i++) await new Promise((r) => setImmediate(r));
      await new Promise((r) => setTimeout(r, 5));
    }
    process.removeListener('uncaughtException', guard);
    for (const l of saved) if (!process.rawListeners('uncaughtException').includes(l)) process.on('uncaughtException', l);
  }
}

/** Close this process's sandbox, if it has one (--runInBand: global teardown runs here too). */
export async function closeWorkerInProcess(): Promise<void> {
  const w = current;
  current = undefined;
  if (w) await w.worker.then((x) => x.sandbox.close()).catch(() => undefined);
}

/** The embedded cluster is reached over its unix socket (one less TCP stack per message); a server by its URL. */
export function upstreamUrl(m: RunManifest, db: { name: string; url: string }): string {
  const c = m.cluster;
  if (!c) return db.url;
  return `postgres://${encodeURIComponent(c.user)}@localhost:${c.port}/${encodeURIComponent(db.name)}?host=${encodeURIComponent(c.socketDir)}`;
}
