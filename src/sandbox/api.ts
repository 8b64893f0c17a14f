/**
 * The sandbox outside Jest: `require('jest-environment-pg/sandbox')`.
 *
 * `startSandbox()` sets up what a Jest run sets up (a server or throwaway cluster, the template
 * built from your migrations, a database cloned from it, the lease and the reaper) and puts the
 * sandbox proxy in front of that database, inside one transaction. Everything connected through
 * `url`/`env` is rolled back; `beginTest`/`endTest` give each test its own savepoint with the same
 * leak and late-query tracking as the Jest environment; `close()` rolls back, reports what was
 * left open and tears the run down. If the process dies without `close()`, the reaper does it.
 *
 * Lower level, shared with the Jest worker: `openRunSandbox(manifest, …)` puts a sandbox on a
 * worker database of an existing run (the run is then owned by whoever started it).
 */
import path from 'node:path';
import type { RunManifest, TeardownSummary } from '../run/manifest';
import { forgetWorkerDatabase, knownWorkerDatabase, noteWorkerDatabase } from '../run/known-databases';
import { cloneSpec } from '../run/worker-clone';
import { databaseOf, withDatabase } from '../util/admin';
import { socketUrl } from '../server/socket-url';
import type { CloneOrder } from './thread-protocol';
import { workerDbName } from '../util/names';
import type { ConnectionInfo, FileReport, ForeignBackend, Problem } from '../proxy/sandbox';
import { SandboxThread } from './thread';
import { formatFileReport } from './report';
import { withClosingGuard } from './closing-guard';
import { classifyProblems, problemsError, type SandboxProblem } from './problems';
import { sandboxEnv, type SandboxEnv } from './env';
import { atMost, guardSetup, raceAbort, step } from '../util/settle';
import type { PgOptions } from '../util/options';

export type { PgOptions, MigrationSource } from '../util/options';
export type { ConnectionInfo, FileReport, ForeignBackend, Problem } from '../proxy/sandbox';
export type { TeardownSummary } from '../run/run';
export { JestPgError, type ErrorCode } from '../util/errors';

export { ENV_NAMES, sandboxEnv, type SandboxEnv } from './env';

// ---------------------------------------------------------------------------------------------
// Lower level: a sandbox on a worker database of a run (what a Jest worker holds)

export interface RunSandboxOptions {
  /** Names the worker database `<prefix>_<run>_w<workerId>` (letters and digits). */
  workerId: string;
  /**
   * Never keep the process alive (a Jest worker: the sandbox outlives test files). Default false:
   * the sandbox's listening sockets keep the process running until `close()`.
   */
  unref?: boolean;
  /** application_name of the sandbox's upstream connection. Default `jest-environment-pg w<workerId>`. */
  label?: string;
  /** Where the unix socket goes. Default `<runDir>/w<workerId>-<pid>` (removed with the run). */
  socketDir?: string;
  /** A sandbox thread already listening (a Jest worker's): pointed at this run's database instead of starting one. */
  thread?: SandboxThread;
}

export interface RunSandbox {
  manifest: RunManifest;
  /** The worker database's name. */
  database: string;
  /** The sandbox, on its own thread (a blocked test thread never stalls it). */
  sandbox: SandboxThread;
  /** Connection details of the sandbox (URL, host, port, user, password, database, socket dir). */
  info: ConnectionInfo;
  /**
   * End the current file: close clients still connected (listed in the report), roll back, and
   * if a backend went around the sandbox, terminate it and rebuild the worker database from the
   * template. Closing a client may make an idle pg.Pool without an 'error' listener throw; those
   * errors (and only those) are swallowed meanwhile. `label` is for the caller's report only.
   */
  endFile(label?: string): Promise<FileReport>;
  /** endFile without the closing guard: for a host whose clients are in other processes (they guard themselves). */
  endFileUnguarded(): Promise<FileReport>;
  /** Close the sandbox (listening sockets, clients, upstream). Idempotent. Does not end the run. */
  close(): Promise<void>;
}

/** Put a sandbox on this run's worker database `workerId` (cloned from the template on first use). */
export async function openRunSandbox(manifest: RunManifest, opts: RunSandboxOptions): Promise<RunSandbox> {
  const { workerId } = opts;
  // Known to exist (an earlier process of this worker noted it), or made sure of by the sandbox's
  // own thread before the file opens on it (cloned from the template on first use): neither this
  // thread nor the PostgreSQL client is involved.
  const name = workerDbName(manifest.prefix, manifest.runId, workerId);
  const known = knownWorkerDatabase(manifest, name);
  const db = known ?? { name, url: withDatabase(manifest.adminUrl, name) };
  const clone: CloneOrder | undefined = known ? undefined : { adminUrl: upstreamUrl(manifest, { name: databaseOf(manifest.adminUrl), url: manifest.adminUrl }), spec: cloneSpec(manifest, workerId), runDir: manifest.runDir, url: db.url };
  const o = manifest.options;
  const label = opts.label ?? `jest-environment-pg w${workerId}`;
  // So a teardown after an interrupt does not list the sandbox's own connection as a leak.
  const upstreamsDir = path.join(manifest.runDir, 'upstreams');
  let sandbox: SandboxThread;
  if (opts.thread) {
    sandbox = opts.thread;
    sandbox.setUpstream(upstreamUrl(manifest, db), label, upstreamsDir, clone);
  } else {
    sandbox = await SandboxThread.start({
      upstreamUrl: upstreamUrl(manifest, db),
      upstreamsDir,
      clone,
      socketDir: opts.socketDir ?? path.join(manifest.runDir, `w${workerId}-${process.pid}`),
      secret: manifest.proxySecret,
      isolation: o.isolation,
      resetSequences: o.resetSequences,
      graceMs: o.graceMs,
      lockWaitMs: o.lockWaitMs,
      label,
      user: 'postgres',
      database: db.name,
      unref: opts.unref ?? false,
    });
  }
  return {
    manifest,
    database: db.name,
    sandbox,
    info: sandbox.info,
    // Inside the guard: the clients closed (or terminated around the sandbox) learn it now.
    endFile: () => withClosingGuard(() => endSandboxFile(manifest, db, sandbox)),
    endFileUnguarded: () => endSandboxFile(manifest, db, sandbox),
    close: () => sandbox.close(),
  };
}

/**
 * End the file on a worker database's sandbox (see RunSandbox.endFile, which adds the closing
 * guard of the process whose clients are closed); a database written to around the sandbox can
 * no longer be trusted: it is rebuilt from the template.
 */
async function endSandboxFile(manifest: RunManifest, db: { name: string; url: string }, sandbox: SandboxThread): Promise<FileReport> {
  const report = await sandbox.endFile();
  if (report.foreign.length > 0) {
    await sandbox.disconnect();
    forgetWorkerDatabase(manifest, db.name);
    await (await import('../run/worker-db')).rebuildWorkerDatabase(manifest, db.name);
    noteWorkerDatabase(manifest, db);
  }
  return report;
}

/** The embedded cluster is reached over its unix socket (one less TCP stack per message); a server by its URL. */
export function upstreamUrl(m: RunManifest, db: { name: string; url: string }): string {
  return m.cluster ? socketUrl(m.cluster, db.name) : db.url;
}

// ---------------------------------------------------------------------------------------------
// Test problems

export { classifyProblems, problemsError, type SandboxProblem } from './problems';

// ---------------------------------------------------------------------------------------------
// The high-level handle

export interface StartSandboxOptions extends Partial<PgOptions> {
  /** Relative `migrations`/`seed`/`cacheDir` paths are resolved against it. Default process.cwd(). */
  rootDir?: string;
  /**
   * Also set DATABASE_URL, PG* and the `exposeAs` names in `process.env` now, and put the previous
   * values back at `close()`. Default false (use `handle.env`).
   */
  setEnv?: boolean;
  /** What the connection report calls the sandbox's user ("the sandbox" by default; the CLI passes the command). */
  label?: string;
  /** Where 'warn' problems of endTest go. Default: one line each on stderr. */
  onWarning?: (problem: SandboxProblem) => void;
}

export interface EndTestOptions {
  /** Reject with a JestPgError (JESTPG_LEAKED_CONNECTION / JESTPG_LATE_QUERY) when the test caused an 'error' problem. */
  throwOnError?: boolean;
}

export interface SandboxReport {
  /** Connections still open at close() (the sandbox closed them). */
  open: Problem[];
  /** Queries that arrived between tests and were rejected. */
  late: Problem[];
  /** Backends on the sandbox's database that did not come through it (terminated). */
  foreign: ForeignBackend[];
  /** Human-readable form of open/late/foreign; '' when nothing was left. */
  text: string;
  /** What tearing the run down did (databases dropped, backends terminated, its summary line). */
  teardown: TeardownSummary;
}

export interface SandboxHandle {
  /** postgres://… URL of the sandbox (loopback TCP, a random per-run password). Any user or database name reaches it. */
  readonly url: string;
  /** DATABASE_URL, PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE, and the `exposeAs` names, for `process.env` or a child process. */
  readonly env: SandboxEnv;
  /** The same connection details as separate fields (plus the unix socket dir). */
  readonly info: ConnectionInfo;
  /** The database behind the sandbox (`<prefix>_<run>_w1`); dropped at close(). */
  readonly database: string;
  /** The validated options in effect. */
  readonly options: PgOptions;
  /** Start a test: with isolation 'test', a savepoint is opened before its first statement. Connections opened from now on belong to it. */
  beginTest(name: string): void;
  /**
   * End the test: running queries get `graceMs` and are then cancelled, transactions a client left
   * open are rolled back, the test's savepoint is rolled back and the sequences it advanced are
   * put back. Resolves with what the test left behind ('warn' problems are also passed to
   * `onWarning`); with `throwOnError`, rejects when one of them has severity 'error'. Queries
   * that arrive after this and before the next beginTest are rejected (JESTPG_LATE_QUERY).
   */
  endTest(opts?: EndTestOptions): Promise<SandboxProblem[]>;
  /**
   * End the open test (if any), close every connection still open, roll everything back, report,
   * and tear the run down (drop its databases, stop the throwaway server, end the reaper).
   * Idempotent: later calls resolve with the same report.
   */
  close(): Promise<SandboxReport>;
}

/**
 * Start a sandbox: a server (`server`, `$JEST_PG_URL`, or a throwaway cluster), the template from
 * `migrations`/`seed`, a database cloned from it and the sandbox proxy in front of it, inside one
 * transaction. Accepts the same options as `testEnvironmentOptions.pg` (see the README).
 *
 * ```js
 * const sb = await startSandbox({ migrations: './migrations' });
 * const pool = new pg.Pool({ connectionString: sb.url });
 * sb.beginTest('writes');  …  await sb.endTest({ throwOnError: true });
 * await pool.end(); await sb.close();
 * ```
 */
export async function startSandbox(options: StartSandboxOptions = {}): Promise<SandboxHandle> {
  // Settles, whatever fails or stalls (see settle.ts): the run and the sandbox are bounded steps,
  // and a failure tears down whatever was started before the error (with its code) is thrown.
  const { manifest, run } = await guardSetup('starting the sandbox', () => openSandbox(options));
  return sandboxHandle(manifest, run, options);
}

async function openSandbox(options: StartSandboxOptions): Promise<{ manifest: RunManifest; run: RunSandbox }> {
  const { rootDir, setEnv: _setEnv, label, onWarning: _onWarning, ...raw } = options;
  const manifest = await (await import('../run/start')).startRun(raw, process.pid, { rootDir: rootDir ?? process.cwd() });
  let rs: RunSandbox | undefined;
  try {
    await step('opening the sandbox', async (signal) => {
      // Not unref'd: its listening sockets keep the process alive until close() (awaits on an unref'd
      // upstream would let a test runner's process exit in the middle of a hook).
      const opening = openRunSandbox(manifest, { workerId: '1', unref: false, label: 'jest-environment-pg sandbox' });
      // Timed out: the sandbox may still open; close it when it does (the run is torn down below).
      signal.addEventListener('abort', () => void opening.then((r) => r.close()).catch(() => undefined), { once: true });
      rs = await raceAbort(opening, signal);
      rs.sandbox.currentFile = label ?? 'the sandbox';
      await raceAbort(rs.sandbox.beginFile(), signal);
    });
  } catch (e) {
    if (rs) await atMost(rs.close(), 5000);
    await atMost((await import('../run/teardown')).teardownRun(manifest), 30_000);
    throw e;
  }
  return { manifest, run: rs! };
}

function sandboxHandle(manifest: RunManifest, run: RunSandbox, options: StartSandboxOptions): SandboxHandle {
  const { setEnv, label, onWarning } = options;
  const opts = manifest.options;
  const env = sandboxEnv(run.info, opts.exposeAs);
  const h: HandleState = {
    manifest,
    run,
    label: label ?? 'the sandbox',
    warn: onWarning ?? ((p: SandboxProblem) => process.stderr.write(`jest-environment-pg warning: ${p.message}\n`)),
    previous: setEnv ? applyEnv(env) : new Map(),
    testOpen: undefined,
    ending: undefined,
    closing: undefined,
  };
  return {
    url: run.info.url,
    env,
    info: run.info,
    database: run.database,
    options: opts,
    beginTest: (name: string) => beginTest(h, name),
    endTest: (o?: EndTestOptions) => endTest(h, o),
    close: () => (h.closing ??= closeHandle(h)),
  };
}

/** A handle's state: the test open now, the test ending now, the close once asked for. */
interface HandleState {
  manifest: RunManifest;
  run: RunSandbox;
  label: string;
  warn: (p: SandboxProblem) => void;
  /** The variables setEnv replaced, with their previous values (put back on close). */
  previous: Map<string, string | undefined>;
  testOpen: string | undefined;
  ending: Promise<SandboxProblem[]> | undefined;
  closing: Promise<SandboxReport> | undefined;
}

/** Put the sandbox's variables in process.env; the values they replaced. */
function applyEnv(env: Record<string, string>): Map<string, string | undefined> {
  const previous = new Map<string, string | undefined>();
  for (const [k, v] of Object.entries(env)) {
    previous.set(k, process.env[k]);
    process.env[k] = v;
  }
  return previous;
}

function beginTest(h: HandleState, name: string): void {
  if (h.closing) throw new Error('jest-environment-pg: beginTest() after close()');
  if (h.ending) throw new Error(`jest-environment-pg: beginTest("${name}") while the previous test is still ending: await endTest() first`);
  if (h.testOpen !== undefined) throw new Error(`jest-environment-pg: beginTest("${name}") while test "${h.testOpen}" is open: call (and await) endTest() first`);
  h.testOpen = name;
  h.run.sandbox.beginTest(name);
}

async function endTest(h: HandleState, o: EndTestOptions = {}): Promise<SandboxProblem[]> {
  if (h.ending) await h.ending.catch(() => undefined);
  if (h.testOpen === undefined || h.closing) return [];
  h.testOpen = undefined;
  h.ending = (async () => {
    const { problems } = await h.run.sandbox.endTest();
    const classified = classifyProblems(problems, h.manifest.options);
    for (const p of classified) if (p.severity === 'warn') h.warn(p);
    return classified;
  })();
  try {
    const problems = await h.ending;
    if (o.throwOnError) {
      const err = problemsError(problems);
      if (err) throw err;
    }
    return problems;
  } finally {
    h.ending = undefined;
  }
}

/** End the open test and the file, close the sandbox, tear the run down, put process.env back. */
async function closeHandle(h: HandleState): Promise<SandboxReport> {
  if (h.ending) await h.ending.catch(() => undefined);
  let file: FileReport = { open: [], late: [], foreign: [], idle: 0 };
  let failure: unknown;
  try {
    if (h.testOpen !== undefined) {
      h.testOpen = undefined;
      await h.run.sandbox.endTest();
    }
    file = await h.run.endFile();
  } catch (e) {
    failure = e;
  }
  await h.run.close().catch(() => undefined);
  const teardown = await (await import('../run/teardown')).teardownRun(h.manifest);
  for (const [k, v] of h.previous) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  if (failure) throw failure;
  return { ...file, text: formatFileReport(h.label, file), teardown };
}
