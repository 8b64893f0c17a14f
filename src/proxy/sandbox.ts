/**
 * The sandbox: a Postgres wire-protocol server (unix socket + loopback TCP) in front of
 * one upstream connection that lives inside the file transaction. It tracks every client
 * connection and the scope it was opened in, and implements the test lifecycle:
 * beginFile → (beginTest → endTest)* → endFile. Runner-agnostic: Jest's environment,
 * the CLI and the programmatic API all drive it the same way.
 */
import net from 'node:net';
import { randomInt } from 'node:crypto';
import { Session, type SessionHost } from './session';
import { GUARD } from './session-sql';
import { newUnit, Upstream, type Owner } from './upstream';
import { query } from './messages';
import { statements } from './sql';
import { readMarker, stateSql } from './backends';
import type { RoleAuth } from './auth';
import { TempObjects } from './temp';
import { errors, JestPgError } from '../util/errors';
import { literal as lit } from '../util/names';
import { listen, type ConnectionInfo, type Listening } from './listen';

export type { ConnectionInfo } from './listen';

export interface SandboxOptions {
  /** URL of the worker database, with credentials that may connect to it (or later: setUpstream). */
  upstreamUrl?: string;
  /** Directory for the unix socket (private to the run); without one, loopback TCP only. */
  socketDir?: string;
  /** Password TCP clients must give. */
  secret: string;
  isolation: 'test' | 'file';
  /** Restore sequences a test advanced (default true). */
  resetSequences?: boolean;
  graceMs: number;
  lockWaitMs: number;
  /** application_name of the upstream connection. */
  label: string;
  /** User name put in DATABASE_URL. */
  user?: string;
  /** Database name put in DATABASE_URL (cosmetic: every name reaches the sandbox). */
  database?: string;
  /**
   * Never keep the process alive (Jest workers: the sandbox outlives test files and must not
   * hold a worker open). Standalone users keep the default, false.
   */
  unref?: boolean;
  /** Called with the backend pid of each upstream connection the sandbox opens. */
  onUpstream?: (backendPid: number) => void;
  /**
   * Called before the sandbox judges a client's bytes (its scope, a new cycle): on the sandbox's
   * own thread, applies the boundaries the test's thread has posted so far (src/sandbox/thread-main.ts).
   */
  pollControl?: () => void;
  /**
   * Called with each query that ran between tests (after its test ended): `afterTest` counts the
   * tests of the current file that had ended when it arrived (1 = the first test).
   */
  onLate?: (problem: LateProblem) => void;
}

export interface LateProblem extends Problem {
  kind: 'late';
  /** The test that had ended last (1-based within the file). */
  afterTest: number;
  testName: string;
}

export interface Problem {
  /**
   * unawaited: still running when its test ended, finished within graceMs (always a warning).
   * lost: the upstream died during the test (always an error).
   */
  kind: 'leak' | 'late' | 'unawaited' | 'interleaved' | 'lost' | 'open' | 'foreign';
  message: string;
}

export interface TestReport {
  /** Problems caused by the test that just ended (leaks, in-flight queries). */
  problems: Problem[];
}

export interface ForeignBackend {
  pid: number;
  applicationName: string;
  clientAddr: string;
  state: string;
  query: string;
}

export interface FileReport {
  /** Connections still open at the end of the file (closed by the sandbox). */
  open: Problem[];
  /** Queries rejected between tests. */
  late: Problem[];
  /** Backends on the worker database that did not come through the sandbox (terminated). */
  foreign: ForeignBackend[];
  /**
   * Connections still open but idle at the end of the file (nothing running, no transaction):
   * an ORM or pool that lives as long as the file. Closed quietly; only counted.
   */
  idle: number;
}

type Scope = { kind: 'file' } | { kind: 'test'; name: string } | { kind: 'between' };

const SAVEPOINT = 'jestpg_test';

class InternalOwner implements Owner {
  private resolve: (() => void) | undefined;
  readonly turn = new Promise<void>((r) => (this.resolve = r));
  constructor(private readonly what: string) {}
  granted(): void {
    this.resolve?.();
  }
  describe(): string {
    return `jest-environment-pg (${this.what})`;
  }
  /** The end of a test may take the upstream from a client idle in its transaction. */
  canBorrow(): boolean {
    return true;
  }
}

export class Sandbox implements SessionHost {
  upstream: Upstream | undefined;
  serverParams = new Map<string, string>();
  readonly sessions = new Set<Session>();
  /** Numbers its clients (their statement names on the upstream) and its upstream connections (see Upstream.gen). */
  private lastSessionId = 0;
  private lastUpstreamGen = 0;
  private readonly byPid = new Map<number, Session>();
  private scope: Scope = { kind: 'between' };
  private lastTestName: string | undefined;
  private readonly servers: net.Server[] = [];
  private lateLog: Problem[] = [];
  private testProblems: Problem[] = [];
  private savepointPending = false;
  private savepointOpen = false;
  private fileOpen = false;
  private closing: Promise<void> | undefined;
  info!: ConnectionInfo;
  hookDepth = 0;

  private readonly opts: SandboxOptions;
  private constructor(opts: SandboxOptions) {
    this.opts = { ...opts };
  }

  /** Per-file settings. */
  configure(o: Pick<SandboxOptions, 'isolation' | 'graceMs' | 'lockWaitMs' | 'resetSequences'>): void {
    Object.assign(this.opts, o);
  }

  get secret(): string {
    return this.opts.secret;
  }
  get lockWaitMs(): number {
    return this.opts.lockWaitMs;
  }

  static async start(opts: SandboxOptions): Promise<Sandbox> {
    const sb = new Sandbox(opts);
    sb.adopt(await listen(opts, (s, viaUnix) => sb.accept(s, viaUnix)));
    return sb;
  }

  /**
   * A sandbox on sockets that already listen (its own thread listens before it loads this
   * module): the caller passes every socket they accept to `accept`.
   */
  static adopt(opts: SandboxOptions, listening: Listening): Sandbox {
    const sb = new Sandbox(opts);
    sb.adopt(listening);
    return sb;
  }

  private adopt(l: Listening): void {
    this.servers.push(...l.servers);
    this.info = l.info;
  }

  accept(socket: net.Socket, viaUnix: boolean): void {
    this.poll();
    if (this.closing) {
      socket.destroy();
      return;
    }
    if (this.opts.unref) socket.unref();
    const s = new Session(socket, this, viaUnix, ++this.lastSessionId);
    this.sessions.add(s);
  }

  // ---- SessionHost ----

  poll(): void {
    this.opts.pollControl?.();
  }

  warn(message: string): void {
    // In a test: reported when it ends. Outside one (file scope, the CLI's run): said now.
    if (this.ending || this.scope.kind === 'test') (this.ending ?? this.testProblems).push({ kind: 'interleaved', message });
    else process.stderr.write(`jest-environment-pg warning: ${message}\n`);
  }

  /** A session's state changed (a unit answered, a cycle or the connection ended): wake whoever waits on it. */
  changed(): void {
    if (this.watchers.size === 0) return;
    for (const w of [...this.watchers]) w();
  }

  private readonly watchers = new Set<() => void>();

  /**
   * Resolves true once `done()` holds, false after `ms`: re-checked whenever a session reports a
   * change (never by polling), so the outcome does not depend on how busy the machine is.
   */
  private until(done: () => boolean, ms: number): Promise<boolean> {
    if (done()) return Promise.resolve(true);
    return new Promise<boolean>((resolve) => {
      const check = () => {
        if (!done()) return;
        finish(true);
      };
      const finish = (ok: boolean) => {
        clearTimeout(timer);
        this.watchers.delete(check);
        resolve(ok);
      };
      const timer = setTimeout(() => finish(done()), ms);
      this.watchers.add(check);
    });
  }

  scopeLabel(): string | undefined {
    switch (this.scope.kind) {
      case 'file':
        return 'file';
      case 'test':
        return this.scope.name;
      case 'between':
        return this.hookDepth > 0 ? 'file' : undefined;
    }
  }

  /** A client cycle between tests: it runs in the late savepoint; report it on the test that ended last. */
  private late(session: Session, sql: string): void {
    const testName = this.lastTestName ?? '(none)';
    const message = `${errors.lateRan(testName, sql).message}\n    on ${session.describe()}`;
    const p: LateProblem = { kind: 'late', message: `JESTPG_LATE_QUERY: ${message}`, afterTest: this.testsEnded, testName };
    this.lateLog.push(p);
    this.opts.onLate?.(p);
  }

  issueKey(session: Session): [number, number] {
    let pid: number;
    do pid = randomInt(1, 0x7fffffff);
    while (this.byPid.has(pid));
    this.byPid.set(pid, session);
    return [pid, randomInt(0, 0x7fffffff)];
  }

  cancel(pid: number, key: number): void {
    const s = this.byPid.get(pid);
    if (s && s.key === key) s.cancel();
  }

  // ---- virtual backends ----

  /** The side connection: runs a kill statement while the upstream is busy (opened on first need). */
  private sideConn: Upstream | undefined;
  private sideOpening: Promise<void> | undefined;
  private sideWaiters: (() => void)[] = [];
  private sideFailedAt = 0;

  side(): Upstream | undefined {
    const s = this.sideConn;
    return s && !s.lost ? s : undefined;
  }

  whenSide(cb: () => void): boolean {
    if (this.side()) return false;
    const url = this.opts.upstreamUrl;
    if (this.closing || !url || Date.now() - this.sideFailedAt < 1000) return false;
    this.sideWaiters.push(cb);
    this.sideOpening ??= Upstream.connect(url, `${this.opts.label} side`, ++this.lastUpstreamGen).then(
      (side) => {
        side.isSide = true;
        side.onNotice = this.onNotice;
        if (this.opts.unref) side.socket.unref();
        this.opts.onUpstream?.(side.backendPid);
        if (this.closing) void side.close();
        else this.sideConn = side;
      },
      () => {
        this.sideFailedAt = Date.now();
      },
    ).finally(() => {
      this.sideOpening = undefined;
      const waiters = this.sideWaiters;
      this.sideWaiters = [];
      for (const w of waiters) w();
    });
    return true;
  }

  /** The side connection, opened if need be; undefined if it cannot be. */
  private async openSide(): Promise<Upstream | undefined> {
    const now = this.side();
    if (now) return now;
    await new Promise<void>((resolve) => {
      if (!this.whenSide(resolve)) resolve();
    });
    return this.side();
  }

  /** Deferrable constraints may exist (read when an upstream is opened; set when a client's SQL names DEFERRABLE). */
  deferrable = false;

  noteDeferrable(): void {
    this.deferrable = true;
  }

  get defaultUser(): string {
    return this.opts.user ?? 'postgres';
  }

  /** Roles looked up for clients that connect as another user than the sandbox's own (per run: roles are the server's). */
  private readonly roles = new Map<string, Promise<RoleAuth | undefined>>();

  /**
   * What the server knows of a role, read on the side connection (committed roles). From
   * pg_authid with its stored password when the sandbox's role may read it (a superuser), else
   * from pg_roles (existence only). Undefined when it cannot be read at all.
   */
  roleAuth(user: string): Promise<RoleAuth | undefined> {
    let known = this.roles.get(user);
    if (!known) {
      known = (async () => {
        const side = await this.openSide();
        if (!side) return undefined;
        const owner = new InternalOwner('role lookup');
        side.acquire(owner);
        await owner.turn;
        try {
          const name = lit(user);
          const rows = await side
            .rows(`SELECT rolcanlogin, rolpassword FROM pg_catalog.pg_authid WHERE rolname = ${name}`)
            .catch(() => side.rows(`SELECT rolcanlogin, NULL FROM pg_catalog.pg_roles WHERE rolname = ${name}`));
          if (rows.length === 0) return { exists: false, canLogin: false, password: null };
          return { exists: true, canLogin: rows[0][0] === 't', password: rows[0][1] || null };
        } finally {
          side.release(owner);
        }
      })().catch(() => undefined);
      this.roles.set(user, known);
      // A role missing now may be created later (by another run's setup, by hand): ask again then.
      void known.then((r) => {
        if (!r || !r.exists) this.roles.delete(user);
      });
    }
    return known;
  }

  /** What the virtual-backend functions need: the sandbox's own pids (hidden) and every client's row. */
  backendState(current: Session): string {
    const hidden = [this.upstream?.backendPid ?? 0];
    if (this.sideConn) hidden.push(this.sideConn.backendPid);
    const rows = [];
    for (const s of this.sessions) if (s.phase === 'ready' || s === current) rows.push(s.activityRow(s === current));
    return stateSql(hidden, rows);
  }

  /** The marker of a kill function called with one of our virtual pids (on either connection). */
  private readonly onNotice = (fields: Record<string, string>): boolean => {
    const mark = readMarker(fields);
    if (!mark) return false;
    const target = this.byPid.get(mark.pid);
    if (target && target.phase === 'ready') {
      if (mark.action === 'terminate') target.terminate();
      else target.cancel();
    }
    return true;
  };

  /** Two-phase commit as the sandbox plays it (see Session.twoPhase): on when the server has it on. */
  twoPhase = false;
  readonly preparedXacts = new Set<string>();

  // ---- session-scoped objects ----

  private readonly temp = new TempObjects();

  scanTemp(session: Session, up: Upstream): Promise<void> {
    return this.temp.scan(session, up);
  }

  hasTemp(session: Session): boolean {
    return this.temp.has(session);
  }

  dropTempSql(session: Session): string | undefined {
    return this.temp.dropSql(session);
  }

  captureSettings(session: Session, up: Upstream, custom: ReadonlySet<string>): void {
    const named = custom.size
      ? ` UNION ALL SELECT n, pg_catalog.current_setting(n, true) FROM pg_catalog.unnest(ARRAY[${[...custom].map(lit).join(', ')}]::text[]) n WHERE pg_catalog.current_setting(n, true) IS NOT NULL`
      : '';
    up.rows(SESSION_SETTINGS + named).then(
      (rows) => session.settingsCaptured(rows.map(([k, v]) => [k, v] as [string, string])),
      () => undefined,
    );
  }

  closed(session: Session): void {
    this.sessions.delete(session);
    this.byPid.delete(session.pid);
    this.changed();
  }

  /**
   * Called before each client cycle: open the scope's savepoint lazily, pipelined with the cycle.
   * A cycle between tests (work a test did not wait for) runs in a savepoint of its own, rolled
   * back before the next test's or hook's first cycle: it can reach neither the next test nor
   * the app as an error a real server would not give. While the test that ended is still being
   * rolled back, such a cycle runs in that test's savepoint and is rolled back with it.
   */
  beforeCycle(up: Upstream, session: Session, sql: () => string): void {
    this.poll();
    const scope = this.scopeLabel();
    session.noteScope(scope);
    if (!session.inTx) session.late = scope === undefined;
    if (session.late && onlySettings(sql())) {
      // A pool finishing a connection's setup (SET …) after the test ended touches no data: it
      // runs (in the late savepoint, if one is open), is kept as the client's settings, and is
      // no one's fault.
      return;
    } else if (session.late) {
      if (this.ending) {
        // Sent after its test ended, while that test is being rolled back: the test's problem.
        this.ending.push({ kind: 'late', message: `JESTPG_LATE_QUERY: ${errors.lateRan(this.endingName ?? '(none)', sql()).message}\n    on ${session.describe()}` });
        // Still inside the test's savepoint: rolled back with it.
        if (this.savepointOpen) return;
      } else this.late(session, sql());
      if (!this.lateOpen && this.fileOpen) {
        this.lateOpen = true;
        this.settingsAtLate = up.appliedSettings;
        up.send(up.guard === 'clean' ? releaseGuardThenLate : lateFrame, newUnit(undefined));
        if (up.guard === 'clean') up.guard = 'none';
      }
      return;
    }
    if (this.lateOpen) {
      // Whatever ran between tests is undone before the next scope's work.
      this.lateOpen = false;
      up.send(rollbackLate, newUnit(undefined));
      up.guard = 'none';
      up.appliedSettings = this.settingsAtLate;
    }
    if (this.savepointPending) {
      this.savepointPending = false;
      this.savepointOpen = true;
      this.settingsAtSavepoint = up.appliedSettings;
      // A clean guard from file-level work must not end up inside the test's savepoint.
      up.send(up.guard === 'clean' ? releaseGuardThenSavepoint : savepointFrame, newUnit(undefined));
      if (up.guard === 'clean') up.guard = 'none';
      // Sequence values at the start of the test, read once after file-level work changed them.
      if (this.opts.resetSequences !== false && this.sequencesDirty) {
        this.sequencesDirty = false;
        up.rows(READ_SEQUENCES).then(
          (rows) => (this.restoreSequences = setvalSql(rows)),
          () => (this.restoreSequences = ''),
        );
      }
    } else if (this.scope.kind !== 'test') {
      this.sequencesDirty = true;
    }
  }

  /** The late savepoint is open (work between tests runs in it). */
  private lateOpen = false;
  private settingsAtLate: string | undefined;
  /** Tests of the current file that have ended. */
  private testsEnded = 0;
  private endingName: string | undefined;

  /** Sequences as they were when the worker database was fresh: restored at each file's start. */
  private pristineSequences: string | undefined;
  /** Sequences at the start of the current test (after the file's own work): restored at its end. */
  private restoreSequences = '';
  private sequencesDirty = true;
  private prepared: { sql: string; name: string; upstream: Upstream } | undefined;
  private preparedCount = 0;

  private preparedRestore(up: Upstream): Promise<Record<string, string> | undefined> {
    let p = this.prepared;
    if (!p || p.sql !== this.restoreSequences || p.upstream !== up) {
      if (p && p.upstream === up) up.closeStatement(p.name);
      p = this.prepared = { sql: this.restoreSequences, name: `jestpg_seq_${++this.preparedCount}`, upstream: up };
      up.prepare(p.name, p.sql);
    }
    return up.runPrepared(p.name);
  }
  private settingsAtSavepoint: string | undefined;

  // ---- lifecycle ----

  private async turn(what: string): Promise<InternalOwner> {
    const up = this.upstream!;
    const owner = new InternalOwner(what);
    up.acquire(owner);
    await owner.turn;
    return owner;
  }

  private async run(sql: string, what: string): Promise<void> {
    const up = this.upstream!;
    const owner = await this.turn(what);
    try {
      const err = await up.exec(sql);
      if (err) throw new JestPgError('JESTPG_UPSTREAM_LOST', `${what} failed: ${err.M} (SQLSTATE ${err.C})`);
    } finally {
      up.release(owner);
    }
  }

  /** Start a test file: connect the upstream if needed and open the file transaction. */
  /**
   * The next file is about to start (its environment exists; setup has not run yet): clients that
   * connect now (a setup file's pool) are held until beginFile opens the file transaction.
   */
  expectFile(): void {
    this.opening = true;
    this.scope = { kind: 'file' };
  }

  /** Where the next beginFile connects (a new run in the same process reconnects). */
  setUpstream(url: string, label?: string): void {
    if (url !== this.opts.upstreamUrl && this.upstream) {
      const old = this.upstream;
      this.upstream = undefined;
      void old.close().catch(() => undefined);
      this.pristineSequences = undefined;
    }
    this.opts.upstreamUrl = url;
    if (label) this.opts.label = label;
  }

  /**
   * May this client start a cycle now? Only inside an open file transaction: while one is being
   * opened, it waits for it; between files (a connection the last file left behind), never.
   */
  admit(session: Session): 'go' | 'wait' | JestPgError {
    this.poll();
    if (this.fileOpen) return 'go';
    if (this.opening) {
      this.held.add(session);
      return 'wait';
    }
    return errors.fileEnded(this.currentFile ?? 'the test file');
  }

  private opening = false;
  private readonly held = new Set<Session>();

  private releaseHeld(): void {
    const held = [...this.held];
    this.held.clear();
    for (const s of held) s.pump();
  }

  async beginFile(): Promise<void> {
    this.opening = true;
    try {
      await this.openFile();
    } finally {
      this.opening = false;
      this.releaseHeld();
    }
  }

  private async openFile(): Promise<void> {
    if (this.reopening) await this.reopening.catch(() => undefined);
    if (!this.upstream || this.upstream.lost) {
      this.upstream = await this.connectUpstream();
      if (this.serverParams.size === 0) await this.readServerParams();
      const [[moves]] = await this.upstream.rows(`SELECT pg_catalog.to_regprocedure('pg_catalog.jestpg_begin()') IS NOT NULL`);
      this.clockMoves = moves === 't';
    }
    // nextval survives rollback: put every sequence back where a fresh database has it (one
    // message with the BEGIN).
    const reset = this.opts.resetSequences !== false && this.pristineSequences ? `; ${this.pristineSequences}` : '';
    await this.run(`BEGIN${reset}`, 'BEGIN of the file transaction');
    if (this.opts.resetSequences !== false) {
      if (this.pristineSequences === undefined) this.pristineSequences = setvalSql(await this.upstream.rows(READ_SEQUENCES));
      this.restoreSequences = this.pristineSequences;
      this.sequencesDirty = false;
    }
    this.fileOpen = true;
    this.scope = { kind: 'file' };
    this.lateLog = [];
    this.testsEnded = 0;
    this.lastTestName = undefined;
  }

  /** The worker database has the moving clock (src/schema/clock.ts); read at connect. */
  clockMoves = false;

  private async readServerParams(): Promise<void> {
    const rows = await this.upstream!.rows(
      `SELECT name, setting FROM pg_settings WHERE name IN ('server_version','server_encoding','client_encoding','DateStyle','TimeZone','IntervalStyle','integer_datetimes','standard_conforming_strings','is_superuser','session_authorization','in_hot_standby','default_transaction_read_only','scram_iterations','max_prepared_transactions') UNION ALL SELECT 'jestpg.deferrable', (EXISTS (SELECT 1 FROM pg_catalog.pg_constraint WHERE condeferrable))::text UNION ALL SELECT 'session_authorization', current_user UNION ALL SELECT 'is_superuser', CASE WHEN rolsuper THEN 'on' ELSE 'off' END FROM pg_roles WHERE rolname = current_user`,
    );
    for (const [k, v] of rows) {
      if (k === 'max_prepared_transactions') this.twoPhase = Number(v) > 0;
      else if (k === 'jestpg.deferrable') this.deferrable ||= v === 'true';
      else this.serverParams.set(k, v);
    }
  }

  enterHook(): void {
    this.hookDepth++;
  }
  leaveHook(): void {
    if (this.hookDepth > 0) this.hookDepth--;
  }

  beginTest(name: string): void {
    this.scope = { kind: 'test', name };
    this.testProblems = [];
    if (this.opts.isolation === 'test') this.savepointPending = true;
    // Work that started between tests and still runs holds the upstream: the new test waits for
    // it at most graceMs, then it is cancelled (it was reported when it arrived).
    const up = this.upstream;
    const late = up?.owner;
    if (up && late instanceof Session && late.late && (late.inflight > 0 || late.cycleOpen)) {
      setTimeout(() => {
        if (up.owner === late && late.late && (late.inflight > 0 || late.cycleOpen)) void up.cancel();
      }, this.opts.graceMs).unref();
    }
  }

  /**
   * End a test: give running queries graceMs, cancel the rest, roll back what any client
   * left open, and roll the test's savepoint back. Returns what the test left behind.
   */
  async endTest(): Promise<TestReport> {
    await this.checkRollback();
    // What the test sent before it ended is its own: read the bytes already on the sockets first.
    await ioTurn();
    const name = this.scope.kind === 'test' ? this.scope.name : '(unknown)';
    this.lastTestName = name;
    this.testsEnded++;
    this.scope = { kind: 'between' };
    const problems = this.testProblems;
    this.testProblems = [];
    const up = this.upstream;
    if (!up || up.lost) return { problems };
    // Queries that arrive while the test is being ended were sent by it: they are its problems.
    this.ending = problems;
    this.endingName = name;
    try {
      await this.settle(up, name, problems);
    } finally {
      this.ending = undefined;
      this.endingName = undefined;
    }
    return { problems };
  }

  private ending: Problem[] | undefined;
  /** The last test's rollback, sent but not awaited (see settle). */
  private rollbackDone: Promise<void> | undefined;

  /** Throw if the previous test's rollback failed. */
  private async checkRollback(): Promise<void> {
    const done = this.rollbackDone;
    this.rollbackDone = undefined;
    if (done) await done;
  }

  /** The end of a test: running work gets graceMs, late work is stopped, leaks said, the savepoint rolled back. */
  private async settle(up: Upstream, name: string, problems: Problem[]): Promise<void> {
    const quiet = await this.awaitRunning(name, problems);
    if (!quiet) await this.stopLateWork(up, name, problems);
    this.reportLeaks(name, problems);
    await this.rollbackTest(up, name);
  }

  /** Give what is running at the test's end graceMs; what finished in time is a warning. Whether all of it did. */
  private async awaitRunning(name: string, problems: Problem[]): Promise<boolean> {
    // Running: a query in flight, or a connection opened for one that has not sent it yet.
    const since = Date.now();
    const running = () =>
      [...this.sessions].filter(
        (s) => s.inflight > 0 || s.cycleOpen || s.waiting || s.phase === 'startup' || s.phase === 'auth' || (s.cycles === 0 && s.phase === 'ready' && s.openedAt.getTime() >= since - 1),
      );
    const atEnd = running().filter((s) => s.inflight > 0 || s.cycleOpen || s.waiting);
    const quiet = await this.until(() => running().length === 0, this.opts.graceMs);
    // Work the test did not wait for that finished within graceMs ran in its savepoint: a warning.
    for (const s of atEnd) {
      if (quiet || !(s.inflight > 0 || s.cycleOpen || s.waiting)) {
        problems.push({
          kind: 'unawaited',
          message: `JESTPG_LATE_QUERY: test "${name}" ended while ${s.describe()} was still running or waiting to run its query; it finished within graceMs (${this.opts.graceMs} ms) inside the test's savepoint and was rolled back with it. Await every query and request before the test ends.`,
        });
      }
    }
    return quiet;
  }

  /** graceMs passed with work still running: reject clients still queued, cancel running queries. */
  private async stopLateWork(up: Upstream, name: string, problems: Problem[]): Promise<void> {
    // Clients still queued for the upstream: their query belongs to the test that ended.
    for (const s of this.sessions) {
      if (!s.waiting) continue;
      problems.push({
        kind: 'late',
        message: `JESTPG_LATE_QUERY: test "${name}" ended while ${s.describe()} was still waiting for the sandbox connection to run ${JSON.stringify(s.pendingSql())}; it was rejected after ${this.opts.graceMs} ms (graceMs). Await every query before the test ends.`,
      });
      s.abandonWait(errors.lateQuery(name, s.pendingSql()));
    }
    const busy = (s: Session) => s.inflight > 0 || s.cycleOpen;
    const stuck = [...this.sessions].filter(busy);
    if (stuck.length > 0) {
      for (const s of stuck) {
        problems.push({
          kind: 'late',
          message: `JESTPG_LATE_QUERY: test "${name}" ended while ${s.describe()} was still running its query; it was cancelled after ${this.opts.graceMs} ms (graceMs). Await every query and request before the test ends.`,
        });
        if (s.cycleOpen && s.inflight === 0) s.fatal(errors.lateQuery(name, s.lastSql));
      }
      await up.cancel();
      await this.until(() => ![...this.sessions].some(busy), 2000);
      for (const s of this.sessions) if (busy(s)) s.fatal(errors.lateQuery(name, s.lastSql));
    }
  }

  /** A client still inside its transaction holds the upstream (taken back by rollbackTest). */
  private reportLeaks(name: string, problems: Problem[]): void {
    for (const s of this.sessions) {
      if (s.inTx) {
        problems.push({
          kind: 'leak',
          message: `JESTPG_LEAKED_CONNECTION: test "${name}" ended while ${s.describe()} was still inside a transaction; it was rolled back. Commit or roll back, and release pool clients (client.release()), before the test ends.`,
        });
      }
    }
  }

  /** Take the upstream back and roll the test's savepoint back (not awaited: see rollbackDone). */
  private async rollbackTest(up: Upstream, name: string): Promise<void> {
    const owner = new InternalOwner('end of test');
    const holder = up.owner instanceof Session && up.owner.inTx && up.owner.inflight === 0 ? up.owner : undefined;
    if (holder) up.seize(owner);
    else up.acquire(owner);
    await owner.turn;
    try {
      for (const s of this.sessions) s.resetByRollback(name);
      const sql = this.savepointOpen ? `ROLLBACK TO SAVEPOINT ${SAVEPOINT}; RELEASE SAVEPOINT ${SAVEPOINT}` : undefined;
      this.savepointOpen = false;
      this.savepointPending = false;
      if (sql) {
        // The sequence restore is a prepared statement (parsed once per set of values), pipelined.
        const rollback = up.exec(sql);
        const restore = this.restoreSequences ? this.preparedRestore(up) : undefined;
        // The rollback puts the session's settings back to what they were at the savepoint.
        up.appliedSettings = this.settingsAtSavepoint;
        up.guard = 'none';
        // Not awaited: the upstream runs everything in order, so whatever a client sends next is
        // written after the rollback. Its outcome is checked before the next test or file ends.
        this.rollbackDone = Promise.all([rollback, restore]).then(([err, seqErr]) => {
          if (err) throw new JestPgError('JESTPG_UPSTREAM_LOST', `rolling back test "${name}" failed: ${err.M}`);
          if (seqErr) throw new JestPgError('JESTPG_UPSTREAM_LOST', `restoring sequences after test "${name}" failed: ${seqErr.M}`);
        });
        this.rollbackDone.catch(() => undefined);
      } else if (holder) {
        // isolation "file": the leaked transaction is still rolled back, to its guard.
        await up.exec(`ROLLBACK TO SAVEPOINT ${GUARD}`);
        up.guard = 'clean';
      }
    } finally {
      up.release(owner);
    }
  }

  /** End a test file: close every client, roll back, look for backends that went around the sandbox. */
  async endFile(): Promise<FileReport> {
    if (this.reopening) await this.reopening.catch(() => undefined);
    if (this.scope.kind === 'test') await this.endTest();
    await this.checkRollback();
    this.scope = { kind: 'between' };
    // A pool ended in afterAll has sent its Terminates: read what is already on the sockets before judging.
    await ioTurn();
    const open: Problem[] = [];
    let idle = 0;
    for (const s of [...this.sessions]) {
      if (s.phase === 'ready') {
        // Busy, inside a transaction, or opened by one test and left behind: worth a report.
        // Idle and shared by the file (a pool the app never closes): counted only.
        if (s.idleLongLived) idle++;
        else open.push({ kind: 'open', message: s.describe() });
        s.fatal(errors.fileEnded(this.currentFile ?? 'this test file'));
      } else if (s.phase !== 'closing') s.fatal(errors.fileEnded(this.currentFile ?? 'this test file'));
    }
    await this.until(() => this.sessions.size === 0, 2000);
    const late = this.lateLog;
    this.lateLog = [];
    let foreign: ForeignBackend[] = [];
    const up = this.upstream;
    if (up && !up.lost && this.fileOpen) {
      const owner = await this.turn('end of file');
      try {
        // The rollback and the look for backends around the sandbox, pipelined. The sequences go
        // back too (nextval survives rollback): the next process on this database (a runner that
        // starts one per file) finds them as a fresh database has them.
        const reset = this.opts.resetSequences !== false && this.pristineSequences ? `; ${this.pristineSequences}` : '';
        const rolledBack = up.exec(`ROLLBACK${reset}`);
        const listed = up.rows(
          `SELECT pid, coalesce(application_name, ''), coalesce(host(client_addr), 'local socket'), coalesce(state, ''), left(coalesce(query, ''), 300) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend' AND pid <> ${this.sideConn?.backendPid ?? 0}`,
        );
        const [rbErr, rows] = await Promise.all([rolledBack, listed]);
        if (rbErr) throw new JestPgError('JESTPG_UPSTREAM_LOST', `ROLLBACK of the file transaction failed: ${rbErr.M}`);
        up.appliedSettings = undefined;
        up.guard = 'none';
        this.fileOpen = false;
        this.savepointOpen = false;
        this.lateOpen = false;
        foreign = rows.map(([pid, applicationName, clientAddr, state, query]) => ({ pid: Number(pid), applicationName, clientAddr, state, query }));
        if (foreign.length) {
          await up.rows(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid IN (${foreign.map((f) => f.pid).join(',')})`);
        }
      } finally {
        up.release(owner);
      }
    }
    this.fileOpen = false;
    this.preparedXacts.clear();
    // The file lost its upstream on the way: its results cannot be trusted, so it fails (once).
    const lost = this.lostInFile;
    this.lostInFile = undefined;
    if (lost) throw lost;
    return { open, late, foreign, idle };
  }

  currentFile: string | undefined;

  // ---- losing the upstream ----

  /** The loss of the upstream during the open file, reported (thrown) once by endFile. */
  private lostInFile: JestPgError | undefined;
  private reopening: Promise<Upstream> | undefined;
  private upstreamWaiters: (() => void)[] = [];
  private reopenFailed: { at: number; err: JestPgError } | undefined;

  private async connectUpstream(): Promise<Upstream> {
    if (!this.opts.upstreamUrl) throw new Error('jest-environment-pg: the sandbox has no upstream database yet (setUpstream)');
    const up = await Upstream.connect(this.opts.upstreamUrl, this.opts.label, ++this.lastUpstreamGen);
    up.onNotice = this.onNotice;
    up.onLost = (err) => this.lost(up, err);
    this.temp.clear();
    if (this.opts.unref) up.socket.unref();
    this.opts.onUpstream?.(up.backendPid);
    return up;
  }

  /**
   * The upstream died (terminated from outside, server restart). Said once, clearly; the clients
   * that were using it are closed as by a dying backend, the others go on with a new upstream,
   * opened now, in a new file transaction. Never every later client failing for ever.
   */
  private lost(up: Upstream, err: Error): void {
    if (up !== this.upstream || this.closing) return;
    const where =
      this.scope.kind === 'test' ? `during test "${this.scope.name}"` : `during ${this.currentFile ?? 'the file'}${this.lastTestName ? `, after test "${this.lastTestName}"` : ''}`;
    const e = errors.upstreamReplaced(up.lostDetail || err.message, where);
    // Said once: the test it happened in fails with it; outside a test (a hook, the CLI's one
    // command) a warning now, and the file fails at its end.
    if (this.scope.kind === 'test') (this.ending ?? this.testProblems).push({ kind: 'lost', message: `${e.code}: ${e.message}` });
    else {
      if (this.fileOpen) this.lostInFile ??= e;
      process.stderr.write(`jest-environment-pg warning: ${e.code}: ${e.message}\n`);
    }
    // What lived on it: the test's savepoint (opened again before the next client cycle), the
    // last rollback (moot), the sequence-restore statement, the temporary objects.
    this.savepointOpen = false;
    this.savepointPending = this.scope.kind === 'test' && this.opts.isolation === 'test';
    this.lateOpen = false;
    this.rollbackDone = undefined;
    this.prepared = undefined;
    this.temp.clear();
    this.preparedXacts.clear();
    for (const s of [...this.sessions]) s.upstreamLost(up, e);
    if (this.fileOpen) void this.reopen().catch(() => undefined);
  }

  /** A new upstream (in a new file transaction when a file is open); the clients waiting for it go on. */
  private reopen(): Promise<Upstream> {
    this.reopening ??= (async () => {
      const up = await this.connectUpstream();
      if (this.fileOpen) {
        const reset = this.opts.resetSequences !== false && this.pristineSequences ? `; ${this.pristineSequences}` : '';
        const err = await up.exec(`BEGIN${reset}`);
        if (err) {
          await up.close();
          throw errors.upstreamLost(`BEGIN on the new connection failed: ${err.M}`);
        }
      }
      this.upstream = up;
      this.reopenFailed = undefined;
      return up;
    })()
      .catch((e: unknown) => {
        const err = e instanceof JestPgError ? e : errors.upstreamLost(String(e));
        this.reopenFailed = { at: Date.now(), err };
        throw err;
      })
      .finally(() => {
        this.reopening = undefined;
        const waiters = this.upstreamWaiters;
        this.upstreamWaiters = [];
        for (const w of waiters) w();
      });
    return this.reopening;
  }

  /**
   * A client needs the upstream, which is lost: undefined when `cb` will be called once a new one
   * is open (being opened now), or the error to answer with (no file open, or opening just failed).
   */
  whenUpstream(cb: () => void): JestPgError | undefined {
    if (!this.fileOpen || this.closing) return errors.upstreamLost(this.upstream?.lost?.message ?? 'not connected');
    const failed = this.reopenFailed;
    if (failed && !this.reopening && Date.now() - failed.at < 1000) return failed.err;
    this.upstreamWaiters.push(cb);
    void this.reopen().catch(() => undefined);
    return undefined;
  }

  /** Disconnect the upstream (e.g. before the worker database is rebuilt). */
  async disconnect(): Promise<void> {
    const up = this.upstream;
    const side = this.sideConn;
    this.upstream = undefined;
    this.sideConn = undefined;
    await Promise.allSettled([up?.close(), side?.close(), this.sideOpening]);
  }

  /** Stop listening, close every client and the upstream. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      // Its sockets may be unref'd (Jest): keep the process alive until closing is done.
      const hold = setInterval(() => undefined, 1 << 30);
      try {
        for (const s of [...this.sessions]) s.fatal(errors.fileEnded(this.currentFile ?? 'the sandbox'));
        await Promise.allSettled(this.servers.map((srv) => new Promise<void>((r) => srv.close(() => r()))));
        await this.disconnect();
      } finally {
        clearInterval(hold);
      }
    })();
    return this.closing;
  }
}

const savepointFrame = query(`SAVEPOINT ${SAVEPOINT}`);
const LATE = 'jestpg_late';
/** Every statement of the cycle is a SET or RESET (a connection's setup). */
function onlySettings(sql: string): boolean {
  const stmts = statements(sql);
  return stmts.length > 0 && stmts.every((st) => /^\s*(set|reset)\b/i.test(sql.slice(st.start, st.end)));
}
const lateFrame = query(`SAVEPOINT ${LATE}`);
const releaseGuardThenLate = query(`RELEASE SAVEPOINT ${GUARD}; SAVEPOINT ${LATE}`);
const rollbackLate = query(`ROLLBACK TO SAVEPOINT ${LATE}; RELEASE SAVEPOINT ${LATE}`);
const releaseGuardThenSavepoint = query(`RELEASE SAVEPOINT ${GUARD}; SAVEPOINT ${SAVEPOINT}`);
/** Settings a client changed (SET, set_config, its startup packet's): read after it did, put back whenever it runs. */
const SESSION_SETTINGS = `SELECT name, setting FROM pg_catalog.pg_settings WHERE source = 'session' AND name NOT LIKE 'jestpg.%'`;
const READ_SEQUENCES = `SELECT format('%I.%I', schemaname, sequencename), last_value, start_value FROM pg_catalog.pg_sequences`;

/**
 * One statement that puts back the sequences whose value differs from the one read (setval
 * writes WAL; reading a sequence does not, so only the few a test advanced are written).
 */
function setvalSql(rows: string[][]): string {
  if (rows.length === 0) return '';
  const one = ([name, last, start]: string[]) =>
    last === '' ? `(${lit(name)}::regclass, ${lit(start)}::int8, false)` : `(${lit(name)}::regclass, ${lit(last)}::int8, true)`;
  return (
    `SELECT pg_catalog.setval(t.s, t.v, t.c) FROM (VALUES ${rows.map(one).join(', ')}) AS t(s, v, c) ` +
    `WHERE pg_catalog.pg_sequence_last_value(t.s) IS DISTINCT FROM CASE WHEN t.c THEN t.v END`
  );
}
/**
 * Let the event loop pass through one full I/O poll: bytes already written to a client socket
 * (by a test that just ended, on another thread or in this one) are read before the sandbox
 * judges the scope. Called while handling a message (itself in a poll phase), a first
 * setImmediate runs in that same iteration's check phase; the second runs only after the next
 * iteration's poll, which reports every socket that was readable by then. No timing involved.
 */
const ioTurn = () => new Promise<void>((r) => setImmediate(() => setImmediate(r)));
