/**
 * In a Jest worker: find the run (from JEST_PG_MANIFEST), or in environment-only mode start it
 * from the first worker under a lock file while the others wait.
 */
import { spawn } from 'node:child_process';
import { existsSync, promises as fsp, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { errors, JestPgError, messageOf, type ErrorCode } from '../util/errors';
import { validate, type PgOptions } from '../util/options';
import { isAlive, startToken } from '../util/proc';
import { processRuns } from './registry';
import { guardSetup, setupBudgetMs, type SetupGuard } from '../util/settle';
import { MANIFEST_ENV, readManifest, type RunContext, type RunManifest } from './manifest';
import { startRun } from './start';
import { readJson, readText, writeJsonAtomic } from './files';
import { sleep } from '../util/text';


/**
 * In a Jest worker: the run this process belongs to. With globalSetup, from JEST_PG_MANIFEST;
 * without it (environment-only mode), the first worker of the Jest main process starts the run
 * under a lock file and the others wait for it. Cached per process.
 */
export function attachRun(projectOptions: unknown, ctx: RunContext = {}): Promise<RunManifest> {
  const fromEnv = process.env[MANIFEST_ENV];
  const key = fromEnv ?? 'env-only';
  const attached = processRuns.attached;
  if (attached?.key === key) return attached.promise;
  const promise = attachUncached(projectOptions, ctx, fromEnv);
  processRuns.attached = { key, promise };
  promise.catch(() => {
    if (processRuns.attached?.promise === promise) processRuns.attached = undefined;
  });
  return promise;
}

/** The Jest main process of this process: the parent of a jest-worker child, else ourselves (--runInBand, worker threads). */
export function jestMainPid(): number {
  return typeof process.send === 'function' ? process.ppid : process.pid;
}

async function attachUncached(projectOptions: unknown, ctx: RunContext, fromEnv: string | undefined): Promise<RunManifest> {
  if (fromEnv) {
    if (!existsSync(fromEnv)) throw errors.runNotFound(`its manifest ${fromEnv} (from ${MANIFEST_ENV}) no longer exists`);
    const m = readManifest(fromEnv);
    // Only if it belongs to our Jest: a variable inherited from an outer Jest run must not be used.
    if (m.mainPid === process.pid || m.mainPid === process.ppid) return m;
  }
  return attachEnvironmentOnly(projectOptions, ctx);
}

function attachEnvironmentOnly(projectOptions: unknown, ctx: RunContext): Promise<RunManifest> {
  return guardSetup('setting up the PostgreSQL run (environment-only mode)', (guard) => attachEnvironmentOnlyGuarded(projectOptions, ctx, guard));
}

async function attachEnvironmentOnlyGuarded(projectOptions: unknown, ctx: RunContext, guard: SetupGuard): Promise<RunManifest> {
  rejectHooksWithoutGlobalSetup(validate(projectOptions));
  const mainPid = jestMainPid();
  const mainStart = startToken(mainPid);
  const key = `${mainPid}-${mainStart ?? 'x'}`;
  const lockDir = path.join(os.tmpdir(), `jest-pg-main-${key}.lock`);
  const infoFile = path.join(os.tmpdir(), `jest-pg-main-${key}.json`);
  // Every step of the first worker's setup is bounded; this only bounds a first worker stuck outside them.
  const budget = setupBudgetMs();
  const deadline = Date.now() + budget;
  while (Date.now() < deadline) {
    const info = readJson(infoFile) as { manifestPath?: string; error?: { code?: string; message: string } } | undefined;
    if (info?.error) {
      throw info.error.code ? new JestPgError(info.error.code as ErrorCode, info.error.message) : new Error(info.error.message);
    }
    if (info?.manifestPath) {
      if (existsSync(info.manifestPath)) {
        const m = readManifest(info.manifestPath);
        process.env[MANIFEST_ENV] = info.manifestPath;
        return m;
      }
      // A torn-down run of this same Jest process (watch mode re-run after the reaper ran?): start over.
      await fsp.rm(infoFile, { force: true });
      await fsp.rm(lockDir, { recursive: true, force: true });
      continue;
    }
    let owner = false;
    try {
      await fsp.mkdir(lockDir, { mode: 0o700 });
      owner = true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    if (owner) {
      writeFileSync(path.join(lockDir, 'owner'), String(process.pid));
      // This worker exiting in the middle (process.exit() in a migration): the others must not try again.
      guard.onExit(() => {
        writeJsonAtomic(infoFile, { error: { code: 'JESTPG_SETUP_INTERRUPTED', message: `the Jest worker that was setting up the run (pid ${process.pid}) exited in the middle; see its output` } });
        removeWhenGone(mainPid, mainStart, [lockDir, infoFile]);
      });
      try {
        const m = await startRun(projectOptions, mainPid, { ...ctx, lockFiles: [lockDir, infoFile] });
        writeJsonAtomic(infoFile, { manifestPath: m.manifestPath });
        return m;
      } catch (e) {
        // The other workers read the error from here (and fail the same way, without trying again).
        writeJsonAtomic(infoFile, { error: { code: (e as { code?: string }).code, message: messageOf(e) } });
        removeWhenGone(mainPid, mainStart, [lockDir, infoFile]);
        throw e;
      }
    }
    // Someone else is setting up. If it died without a result, take over.
    const ownerPid = Number(readText(path.join(lockDir, 'owner')));
    if (ownerPid && !isAlive(ownerPid) && !existsSync(infoFile)) {
      await fsp.rm(lockDir, { recursive: true, force: true });
      continue;
    }
    await sleep(15);
  }
  throw errors.setupTimeout(budget, 'the first Jest worker to set up the PostgreSQL run (environment-only mode)');
}

/**
 * Environment-only mode, after a failed setup: the lock and the error file must outlive this
 * worker (the others read the error from it) but not the Jest run. No reaper is left to remove
 * them, so a tiny detached node process does once the Jest main process is gone.
 */
function removeWhenGone(pid: number, start: string | undefined, files: string[]): void {
  const script =
    "const [proc, pid, start, ...files] = process.argv.slice(1); const { isSameProcess } = require(proc); const fs = require('fs');" +
    "setInterval(() => { if (isSameProcess(Number(pid), start || undefined)) return; for (const f of files) fs.rmSync(f, { recursive: true, force: true }); process.exit(0); }, 250);";
  try {
    const procJs = [path.join(__dirname, '..', 'util', 'proc.js'), path.join(__dirname, '..', '..', 'dist', 'util', 'proc.js')].find((f) => existsSync(f));
    if (!procJs) return;
    const child = spawn(process.execPath, ['-e', script, procJs, String(pid), start ?? '', ...files], {
      detached: true,
      stdio: 'ignore',
      windowsHide: true,
    });
    child.on('error', () => undefined); // the next run's local sweep removes them instead
    child.unref();
  } catch {
    // same
  }
}

/** pg.globalSetup/globalTeardown are run by our globalSetup/globalTeardown: without them they would be silently skipped. */
function rejectHooksWithoutGlobalSetup(o: PgOptions): void {
  const keys = (['globalSetup', 'globalTeardown'] as const).filter((k) => o[k] !== undefined);
  if (keys.length === 0) return;
  const rule =
    "is run by jest-environment-pg's own globalSetup/globalTeardown, which this project does not use: add preset: 'jest-environment-pg' " +
    "(or globalSetup: 'jest-environment-pg/global-setup' and globalTeardown: 'jest-environment-pg/global-teardown')";
  throw errors.options(keys.map((key) => ({ kind: 'misplaced', key, rule })), []);
}
