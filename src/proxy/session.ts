/**
 * One client connection to the sandbox. It speaks the server side of the protocol to
 * the client and takes turns on the shared upstream:
 *
 * - Every cycle the client starts outside its own transaction is wrapped in a guard
 *   savepoint, opened before the cycle and released (or rolled back to, after an
 *   error) when its ReadyForQuery arrives. An error never aborts the file transaction.
 * - The client's BEGIN keeps the guard open: the guard *is* its transaction. COMMIT
 *   becomes a no-op (the guard is released at ReadyForQuery), ROLLBACK becomes
 *   ROLLBACK TO the guard. While a client transaction is open, the client owns the
 *   upstream and its messages are forwarded as they come (pipelining intact).
 * - Prepared statement names, and the unnamed statement, are renamed per client so
 *   two clients never see each other's statements. Unnamed portals are not renamed:
 *   they cannot outlive a cycle the client owns the upstream for.
 * - ReadyForQuery carries the client's own status (I/T/E), not the upstream's.
 */
import type net from 'node:net';
import { F, TxStatus } from './codes';
import { FrameError, Framer } from './framer';
import * as m from './messages';
import { lex, type Lexed, type Statement } from './sql';
import { clockRewrite } from '../util/sql-clock';
import { countInjected, countSent, Kind, newUnit, type Owner, type Sink, type Unit, type Upstream } from './upstream';
import { refText, type VirtualRow } from './backends';
import { applyEdits, positionMap, sortEdits, type Edit } from './rewrite';
import { ClientStatements } from './client-statements';
import { txRewrite, type TxEffect, type TxRewrite } from './tx-control';
import type { RoleAuth } from './auth';
import { PasswordExchange, readStartupPacket, settingsFrame, startupSettings, welcomeFrames } from './handshake';
import { errors, JestPgError } from '../util/errors';
import { ident } from '../util/names';
import {
  contains,
  deallocateAll,
  DROPS,
  type Frame,
  frameSql,
  GUARD_OPEN_SQL,
  GUARD_RENEW_SQL,
  guardOpenFrame,
  guardReleaseFrame,
  guardRenewFrame,
  guardRollbackFrame,
  guardUndoFrame,
  isTxControl,
  isWrite,
  NOOP,
  raising,
  ROLLBACK_GUARD,
  settingsSql,
  warn,
  wireMessage,
} from './session-sql';

import { oneLine } from '../util/text';

/**
 * Where the connection is: reading the untyped startup packets (a partial one kept), exchanging
 * the password (the exchange undefined while the role is looked up), serving cycles, closing
 * (its last cycle and its cleanup still on the upstream), closed.
 */
type State =
  | { kind: 'startup'; partial: Buffer | undefined }
  | { kind: 'auth'; exchange: PasswordExchange | undefined }
  | { readonly kind: 'ready' }
  | { readonly kind: 'closing' }
  | { readonly kind: 'closed' };
export type Phase = State['kind'];
const READY: State = { kind: 'ready' };
const CLOSING: State = { kind: 'closing' };
const CLOSED: State = { kind: 'closed' };

/** A client's Parse, read: the frame, where its statement text (a) and its parameter types (b) start, its names and text. */
interface ParseMessage {
  buf: Buffer;
  start: number;
  end: number;
  a: number;
  b: number;
  name: string;
  key: string;
  target: string;
  sql: string;
  text: string;
  lexed: Lexed;
}

/** A simple Query being rewritten statement by statement: the client's transaction as simulated, and what is sent for each. */
interface Rewritten {
  inTx: boolean;
  failed: boolean;
  parts: string[];
  /** The tag each result gets (null: dropped, it is ours; undefined: the server's own). */
  tags: (string | null | undefined)[];
  effects: TxEffect[];
}

function push(out: Rewritten, sql: string, tag: string | null | undefined, effect?: TxEffect): void {
  out.parts.push(sql);
  out.tags.push(tag);
  out.effects.push(effect);
}

/** For the default of an exhaustive switch: a case was forgotten. */
function unreachable(x: never): Error {
  return new Error(`unhandled state ${JSON.stringify(x)}`);
}

/** What a session needs from the sandbox that owns it. */
export interface SessionHost {
  readonly upstream: Upstream | undefined;
  readonly secret: string;
  readonly lockWaitMs: number;
  /** Parameters reported to every client at startup (server_version, …). */
  readonly serverParams: ReadonlyMap<string, string>;
  /** The current scope label (test name or "file"), or undefined between tests. */
  scopeLabel(): string | undefined;
  issueKey(session: Session): [number, number];
  cancel(pid: number, key: number): void;
  closed(session: Session): void;
  /**
   * Called when a client cycle starts on the upstream, before anything of it is written (the
   * sandbox opens the scope's savepoint; a cycle between tests runs in one of its own).
   */
  beforeCycle(up: Upstream, session: Session, sql: () => string): void;
  /** Called before the client's bytes are judged: boundaries posted from another thread apply first. */
  poll(): void;
  /** May a cycle start now ('wait': the sandbox pumps the session again when it may)? */
  admit(session: Session): 'go' | 'wait' | JestPgError;
  /** Something the end of a test or file waits for may have changed (a unit answered, bytes handled). */
  changed(): void;
  /** A warning for the current test (or file). */
  warn(message: string): void;
  /** The database has the moving clock (now() per client transaction). */
  readonly clockMoves: boolean;
  /**
   * The side connection (for a kill statement while the upstream is busy), or undefined while it
   * is being opened (then `whenSide` calls back) or cannot be (then the upstream is used).
   */
  side(): Upstream | undefined;
  whenSide(cb: () => void): boolean;
  /** The statement that gives the virtual-backend functions the current clients (`current` is running). */
  backendState(current: Session): string;
  /** After a cycle that may have created temporary objects: look for them (pipelined, before the upstream is released). */
  scanTemp(session: Session, up: Upstream): Promise<void>;
  /** The statement that drops this client's temporary objects, or undefined when it has none. */
  dropTempSql(session: Session): string | undefined;
  /** After a cycle that may have changed session settings: read them (and these custom ones), for the frame that restores them. */
  captureSettings(session: Session, up: Upstream, custom: ReadonlySet<string>): void;
  /** The client has temporary objects on the upstream. */
  hasTemp(session: Session): boolean;
  /** Two-phase commit is on in the server (max_prepared_transactions > 0), and the identifiers prepared through the sandbox. */
  readonly twoPhase: boolean;
  readonly preparedXacts: Set<string>;
  /** The database may have deferrable constraints (their checks are fired at a client's COMMIT). */
  readonly deferrable: boolean;
  /** A client's SQL named DEFERRABLE (it may have created one). */
  noteDeferrable(): void;
  /** The user in DATABASE_URL: authenticated with the run secret, never looked up. */
  readonly defaultUser: string;
  /** What the server knows of another role (undefined: cannot tell; then the run secret, as for the default user). */
  roleAuth(user: string): Promise<RoleAuth | undefined>;
  /** The upstream is lost: undefined when `cb` will be called with a new one open, else the error to answer with. */
  whenUpstream(cb: () => void): JestPgError | undefined;
}


/** Words that may make a cycle one about the server or its backends (see Session.route), in raw bytes. */
const ABOUT_SERVER = ['_backend', '_BACKEND', 'stat_activity', 'STAT_ACTIVITY', 'server_', 'SERVER_'];
/** Settings that are the server's: the same on every connection, so SHOW of them may run anywhere. */
const SERVER_WIDE = new Set(['server_version', 'server_version_num', 'server_encoding', 'max_connections', 'block_size', 'max_identifier_length', 'integer_datetimes', 'lc_collate', 'lc_ctype']);

const FRONTEND = new Set<number>([F.Bind, F.Close, F.CopyData, F.CopyDone, F.CopyFail, F.Describe, F.Execute, F.Flush, F.FunctionCall, F.Parse, F.Query, F.Sync, F.Terminate]);

export class Session implements Sink, Owner {
  private readonly prefix: string;
  /** Its prepared statements and portals, private to it on the shared upstream. */
  private readonly names: ClientStatements;
  private state: State = { kind: 'startup', partial: undefined };
  get phase(): Phase {
    return this.state.kind;
  }
  params: Record<string, string> = {};
  readonly openedAt = new Date();
  openedIn: string | undefined;
  lastSql = '';
  /** Cycles this client started (0: connected, nothing sent yet). */
  cycles = 0;
  lastSqlAt: Date | undefined;
  /** The client is inside its own transaction (BEGIN seen, no COMMIT/ROLLBACK yet). */
  inTx = false;
  /** The current cycle (or transaction) started between tests: it runs in the sandbox's late savepoint. */
  late = false;
  /** How many different tests this connection ran cycles in (a pool connection shared by the file's tests: ≥ 2). */
  testsServed = 0;
  private lastScope: string | undefined;

  /** A cycle starts in this scope (a test's name, 'file', or undefined between tests). */
  noteScope(scope: string | undefined): void {
    if (scope === this.lastScope) return;
    this.lastScope = scope;
    if (scope !== undefined && scope !== 'file') this.testsServed++;
  }

  /**
   * Left open at the end of its file but idle, and plainly a long-lived pool's (an ORM instance
   * that lives as long as the file): it served more than one test. Closing it is routine, not a
   * finding. One that served a single test (a child process's, a pool made in that test) or
   * none (the CLI's command) is still listed.
   */
  get idleLongLived(): boolean {
    return !this.busy && this.testsServed > 1;
  }
  txFailed = false;
  txStartedAt: Date | undefined;
  /** The connection the current cycle runs on (the upstream, or the side connection). */
  private conn: Upstream | undefined;
  /** A cycle of this client's transaction may have created temporary objects / changed settings. */
  private tempPending = false;
  private setsPending = false;
  /** Closed by the sandbox (terminated, file ended): nothing more reaches the client. */
  private silenced = false;
  private guardOpen = false;
  /** Units (Query/Sync) sent and not yet answered. */
  inflight = 0;
  private txControlInflight = 0;
  /** An extended-protocol cycle has started and its Sync was not sent yet. */
  cycleOpen = false;
  private copyIn = false;
  private unit: Unit | undefined;
  /** The sandbox refused a statement inside the client's transaction (the upstream never failed). */
  private abortedHere = false;
  /** Settings changed with SET LOCAL in the client's transaction (reset at its COMMIT). */
  private readonly localSettings = new Set<string>();
  /** The guard statements to prepend to the simple Query of this cycle ('' when none). */
  private guardPrefix = '';
  /** Executes sent in the current extended unit (to find the result of a given one). */
  private executes = 0;
  private readonly pending: Frame[] = [];
  private readonly framer = new Framer();
  /** Discarding the rest of a cycle, then answering this error. */
  private rejecting: JestPgError | undefined;
  private rejectSent = false;
  private waitTimer: NodeJS.Timeout | undefined;
  private waitingSince = 0;
  /** Set when the sandbox rolled this client's transaction back at the end of a test. */
  abortedBy: string | undefined;
  private out_: Buffer[] = [];
  private lastOut: Buffer | undefined;
  private lastStart = 0;
  private lastEnd = 0;
  pid = 0;
  key = 0;
  /** Puts the upstream session's settings where this client expects them (RESET ALL first: no other client's settings leak in). */
  private settingsFrame!: Buffer;
  private settingsKey = 'unset';
  /** The settings of its startup packet (what RESET ALL / DISCARD ALL go back to). */
  private startupSettings: [string, string][] = [];
  readonly viaUnix: boolean;

  /** `id`: unique among the sandbox's clients (their statement and portal names on the shared upstream). */
  constructor(private readonly socket: net.Socket, private readonly host: SessionHost, viaUnix: boolean, readonly id: number) {
    this.prefix = `jp${id}_`;
    this.names = new ClientStatements(this.prefix, this);
    this.viaUnix = viaUnix;
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', () => this.gone());
    socket.on('close', () => this.gone());
  }

  /** This client as a row of pg_stat_activity (`current`: the one whose statement asks). */
  activityRow(current: boolean): VirtualRow {
    const active = current || this.inflight > 0 || this.cycleOpen || this.waiting || this.pending.length > 0;
    const state = active ? 'active' : this.inTx ? (this.txFailed ? 'idle in transaction (aborted)' : 'idle in transaction') : 'idle';
    const iso = (d: Date | undefined) => (d ? d.toISOString() : null);
    const addr = this.viaUnix ? null : (this.socket.remoteAddress ?? null);
    return {
      pid: this.pid,
      application_name: this.params.application_name ?? '',
      backend_start: this.openedAt.toISOString(),
      xact_start: this.inTx ? iso(this.txStartedAt) : active ? iso(this.lastSqlAt) : null,
      query_start: iso(this.lastSqlAt),
      state_change: iso(this.lastSqlAt ?? this.openedAt),
      state,
      // Sent, and waiting for the upstream: its statement is the one queued here.
      query: this.waiting || (this.pending.length > 0 && this.inflight === 0 && !this.cycleOpen) ? this.pendingSql() : this.lastSql,
      wait_event_type: active ? null : 'Client',
      wait_event: active ? null : 'ClientRead',
      client_addr: addr?.startsWith('::ffff:') ? addr.slice(7) : addr,
      client_hostname: null,
      client_port: this.viaUnix ? -1 : (this.socket.remotePort ?? -1),
      backend_xid: null,
      backend_xmin: null,
      leader_pid: null,
      query_id: null,
    };
  }

  get applicationName(): string {
    return this.params.application_name || '(no application_name)';
  }

  /** Busy: something of this client is running or it holds an open transaction. */
  get busy(): boolean {
    return this.inflight > 0 || this.cycleOpen || this.copyIn || this.inTx || this.pending.length > 0;
  }

  get owning(): boolean {
    return this.host.upstream?.owner === this;
  }

  describe(): string {
    const where = this.openedIn === undefined ? 'between tests' : this.openedIn === 'file' ? 'module scope or beforeAll' : `test "${this.openedIn}"`;
    const last = this.lastSql ? `, last statement ${JSON.stringify(oneLine(this.lastSql))}` : '';
    return `connection ${this.applicationName} (#${this.id}, opened in ${where} at ${this.openedAt.toISOString().slice(11, 23)}${this.inTx ? ', inside a transaction' : ''}${last})`;
  }

  // ---- input ----

  private onData(chunk: Buffer): void {
    const state = this.state;
    switch (state.kind) {
      case 'closed':
      case 'closing':
        return;
      case 'startup':
        this.host.poll();
        return this.guarded(() => this.startup(state, chunk));
      case 'auth':
      case 'ready':
        this.host.poll();
        return this.guarded(() => this.framer.push(chunk, this.onFrame));
      default:
        throw unreachable(state);
    }
  }

  /** Handle the client's bytes; a protocol error closes the connection. Then pump what is pending. */
  private guarded(handle: () => void): void {
    try {
      handle();
    } catch (e) {
      const err = e instanceof JestPgError ? e : errors.protocol(e instanceof FrameError ? e.message : String((e as Error).message ?? e));
      this.fatal(err);
      return;
    }
    this.pump();
    this.host.changed();
  }

  private readonly onFrame = (buf: Buffer, code: number, start: number, end: number): void => {
    if (this.state.kind === 'auth') {
      this.password(this.state, buf, code, start, end);
      return;
    }
    if (!FRONTEND.has(code)) throw errors.protocol(`unknown message type ${JSON.stringify(String.fromCharCode(code))} (0x${code.toString(16)})`);
    this.pending.push([buf, code, start, end]);
  };

  /** The untyped startup packets; the bytes after the StartupMessage go to the framer. */
  private startup(state: Extract<State, { kind: 'startup' }>, chunk: Buffer): void {
    let buf = state.partial ? Buffer.concat([state.partial, chunk]) : chunk;
    state.partial = undefined;
    for (;;) {
      const packet = readStartupPacket(buf);
      switch (packet.kind) {
        case 'partial':
          state.partial = buf;
          return;
        case 'invalid':
          return this.closedNow();
        case 'encryption':
          this.socket.write(m.sslNo);
          buf = packet.rest;
          continue;
        case 'cancel':
          if (packet.target) this.host.cancel(...packet.target);
          return this.closedNow();
        case 'startup':
          this.started(packet.params);
          if (packet.rest.length > 0) this.framer.push(packet.rest, this.onFrame);
          return;
        default:
          throw unreachable(packet);
      }
    }
  }

  /** The StartupMessage: its parameters are the client's settings; the user is checked as the server would (see auth.ts). */
  private started(params: Record<string, string>): void {
    this.params = params;
    const settings = startupSettings(params);
    this.settingsKey = JSON.stringify(settings);
    this.startupSettings = settings;
    this.settingsFrame = settingsFrame(settings);
    this.openedIn = this.host.scopeLabel();
    const auth: Extract<State, { kind: 'auth' }> = { kind: 'auth', exchange: undefined };
    this.state = auth;
    const user = params.user ?? '';
    if (user === this.host.defaultUser) this.challenge(auth, undefined);
    else {
      this.host.roleAuth(user).then(
        (role) => this.challenge(auth, role),
        () => this.challenge(auth, undefined),
      );
    }
  }

  /**
   * The client's session settings as read after it changed them (SET, RESET, set_config): from
   * now on they are its own, put back whenever it takes the upstream after another client had
   * it, and never seen by another client (its key is its own, see afterWork).
   */
  settingsCaptured(settings: [string, string][]): void {
    this.settingsFrame = m.query(settingsSql(settings));
    // Keyed by content from now on: two clients that set the same (a pool's connections, each
    // running the ORM's setup SETs) share a key, so one may run inside the other's idle
    // transaction without a RESET ALL there (src/proxy/upstream.ts lendIdle).
    const key = `settings ${JSON.stringify([...settings].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)))}`;
    const up = this.host.upstream;
    if (up && up.appliedSettings === this.settingsKey) up.appliedSettings = key;
    this.settingsKey = key;
  }

  /** What the server knows of the user (undefined: the sandbox's own user, or unknown): refuse, trust, or ask for a password. */
  private challenge(auth: Extract<State, { kind: 'auth' }>, role: RoleAuth | undefined): void {
    if (this.state !== auth) return;
    const user = this.params.user ?? '';
    const refusal = PasswordExchange.refusal(user, role);
    if (refusal) return this.fatal(refusal as JestPgError);
    if (this.viaUnix) return this.welcome();
    try {
      auth.exchange = new PasswordExchange(user, this.host.secret, role);
    } catch (e) {
      return this.fatal(e as JestPgError);
    }
    this.socket.write(auth.exchange.challenge);
  }

  private password(auth: Extract<State, { kind: 'auth' }>, buf: Buffer, code: number, start: number, end: number): void {
    if (!auth.exchange) {
      // A password before the challenge (the role still being looked up).
      if (code !== F.Password) throw errors.protocol(`expected a password message, got ${JSON.stringify(String.fromCharCode(code))}`);
      const user = this.params.user ?? '';
      throw errors.roleRefused('28P01', `password authentication failed for user "${user}"`, user);
    }
    const { reply, done } = auth.exchange.answer(buf, code, start, end);
    if (reply) this.socket.write(reply);
    if (done) this.welcome();
  }

  private welcome(): void {
    this.state = READY;
    [this.pid, this.key] = this.host.issueKey(this);
    this.socket.write(welcomeFrames(this.params, this.host.serverParams, this.pid, this.key));
  }

  // ---- the pump: move pending frames to the upstream when allowed ----

  pump(): void {
    try {
      this.pumpFrames();
    } catch (e) {
      this.fatal(e instanceof JestPgError ? e : errors.protocol(String((e as Error).message ?? e)));
    }
  }

  private pumpFrames(): void {
    if (this.phase !== 'ready' && this.phase !== 'closing') return;
    let corked: Upstream | undefined;
    while (this.pending.length > 0) {
      const frame = this.pending[0];
      const code = frame[1];
      if (this.rejecting) {
        this.pending.shift();
        this.discard(code);
        continue;
      }
      if (code === F.Terminate) {
        this.pending.length = 0;
        this.gone();
        break;
      }
      const starts = !this.cycleOpen && !this.copyIn;
      const conn = this.connFor(frame, starts);
      if (conn === 'stop') break;
      if (conn === 'next') continue;
      if ((code === F.Query || code === F.Execute) && this.inflight > 0 && this.isTxControl(frame)) break;
      if (corked !== conn) {
        corked?.socket.uncork();
        conn.socket.cork();
        corked = conn;
      }
      this.pending.shift();
      if (starts) {
        this.conn = conn;
        if (code !== F.Sync) this.beginCycle(conn, frame);
      }
      this.handle(conn, frame);
    }
    corked?.socket.uncork();
    // Granted, but everything pending was rejected (late, lock wait): hand the connections on.
    if (this.pending.length === 0 && this.inflight === 0 && !this.cycleOpen && !this.copyIn) {
      const up = this.host.upstream;
      if (up && up.owner === this && !this.inTx) up.release(this);
      const side = this.host.side();
      if (side && side.owner === this) side.release(this);
    }
  }

  /**
   * The connection the next frame goes to (at the start of a cycle: whether it may start, and
   * where), or what the pump does instead: 'stop' until it is pumped again (waiting for the
   * upstream, a side connection, a cancel), 'next' when the cycle was rejected (its frames are discarded).
   */
  private connFor(frame: Frame, starts: boolean): Upstream | 'stop' | 'next' {
    let conn: Upstream | undefined = this.conn;
    if (starts) {
      const admitted = this.host.admit(this);
      if (admitted === 'wait') return 'stop';
      if (admitted !== 'go') return this.rejectWith(admitted);
      const up = this.host.upstream;
      if (!up || up.lost) {
        // A new upstream is on its way (pumped again then), or cannot be had now.
        const err = this.host.whenUpstream(() => this.pump());
        return err === undefined ? 'stop' : this.rejectWith(err);
      }
      conn = this.route(frame, up);
      if (conn === undefined) return 'stop'; // the side connection is being opened: pumped again when it is
      // Answers come back in order only from one connection: finish the other's cycles first.
      if (conn !== this.conn && this.inflight > 0) return 'stop';
    }
    if (!conn || conn.lost) return this.rejectWith(conn?.lost instanceof JestPgError ? conn.lost : errors.upstreamLost(conn?.lost?.message ?? 'not connected'));
    if (conn.owner !== this) {
      this.wait(conn);
      return 'stop';
    }
    if (starts) {
      const steady = this.inTx && this.txControlInflight === 0;
      if (!steady && this.inflight > 0) return 'stop';
      // A cancel on its way must not hit this cycle (see Upstream.cancel); the temporary objects
      // of its last cycle are known before the next one (DISCARD TEMP, a disconnect) needs them.
      const wait = conn.cancelling ?? this.tempScan;
      if (wait) {
        void wait.then(() => this.pump());
        return 'stop';
      }
    }
    return conn;
  }

  /** Discard the rest of the cycle and answer `err`. */
  private rejectWith(err: JestPgError): 'next' {
    this.rejecting = err;
    this.rejectSent = false;
    return 'next';
  }

  /**
   * Where a cycle runs: on the upstream, except a statement about backends (it terminates or
   * cancels one, or reads pg_stat_activity) or about the server (SHOW server_version_num) while
   * another client holds the upstream (that client may be the one it cancels): the side
   * connection, outside the file's transaction, runs it, as another backend would at once.
   * Cheap for every other cycle: no look at the SQL unless the upstream is busy.
   */
  private route(frame: Frame, up: Upstream): Upstream | undefined {
    const [buf, code, start, end] = frame;
    if (this.names.sideStatements.size > 0 && (code === F.Bind || code === F.Describe)) {
      const off = code === F.Bind ? m.readCString(buf, start + 5, end)[1] : start + 6;
      const [name] = m.readCString(buf, off, end);
      if (this.names.sideStatements.has(this.prefix + (name || 'u'))) return this.sideOr(up);
      return up;
    }
    if (up.owner === this || up.owner === undefined || this.inTx) return up;
    if (code !== F.Query && code !== F.Parse) return up;
    if (!ABOUT_SERVER.some((w) => contains(buf, w, start, end))) return up;
    const sql = code === F.Query ? m.readCString(buf, start + 5, end)[0] : m.readCString(buf, m.readCString(buf, start + 5, end)[1], end)[0];
    const lexed = this.lex(sql);
    const stmts = lexed.stmts;
    // SHOW of a setting that is the server's, not the session's (a driver's version check).
    if (stmts.length === 1 && stmts[0].show !== undefined && SERVER_WIDE.has(stmts[0].show)) return this.sideOr(up);
    if (!lexed.activity || stmts.some((st) => st.kind !== 'other' || st.sets) || lexed.temp) return up;
    return this.sideOr(up);
  }

  private sideOr(up: Upstream): Upstream | undefined {
    const side = this.host.side();
    if (side && !side.lost) return side;
    // Being opened: pumped again when it is; cannot be opened: the upstream, in turn.
    return this.host.whenSide(() => this.pump()) ? undefined : up;
  }

  /** Waiting for the upstream when its test ended: the queued cycle is answered with this error. */
  get waiting(): boolean {
    return this.waitTimer !== undefined;
  }

  /** The SQL of the first queued cycle (for reports). */
  pendingSql(): string {
    const f = this.pending[0];
    return f ? frameSql(f) : this.lastSql;
  }

  abandonWait(err: JestPgError): void {
    const up = this.host.upstream;
    if (this.waitTimer) {
      clearTimeout(this.waitTimer);
      this.waitTimer = undefined;
    }
    up?.withdraw(this);
    this.host.side()?.withdraw(this);
    if (this.pending.length === 0) return;
    this.rejecting = err;
    this.rejectSent = false;
    this.pump();
  }

  private isTxControl(frame: Frame): boolean {
    const [buf, code, start, end] = frame;
    if (code === F.Execute) {
      const [portal] = m.readCString(buf, start + 5, end);
      return this.names.txPortals.has(portal ? this.prefix + portal : '');
    }
    const sql = m.readCString(buf, start + 5, end)[0];
    return this.lex(sql).stmts.some(isTxControl);
  }

  private wait(up: Upstream): void {
    if (this.waitTimer) return;
    this.waitingSince = Date.now();
    // Armed before acquire(): a free upstream is granted synchronously, and granted() disarms it.
    this.waitTimer = setTimeout(() => {
      this.waitTimer = undefined;
      if (up.owner === this) return;
      up.withdraw(this);
      const holder = up.owner ? up.owner.describe() : 'nobody';
      this.rejecting = errors.lockWait(Date.now() - this.waitingSince, holder);
      this.rejectSent = false;
      this.pump();
    }, this.host.lockWaitMs);
    this.waitTimer.unref?.();
    up.acquire(this);
  }

  /** Owner: the upstream is ours now. */
  granted(): void {
    if (this.waitTimer) {
      clearTimeout(this.waitTimer);
      this.waitTimer = undefined;
    }
    if (this.phase === 'closing') {
      this.finish();
      return;
    }
    // Nothing to do after all: pumpFrames hands the connection on.
    this.pump();
  }

  private beginCycle(up: Upstream, frame: Frame): void {
    const code = frame[1];
    this.cycleOpen = true;
    this.cycles++;
    if (up.isSide) return; // no transaction and no guard there
    this.host.beforeCycle(up, this, () => frameSql(frame));
    if (up.appliedSettings !== this.settingsKey) {
      up.send(this.settingsFrame, newUnit(undefined));
      up.appliedSettings = this.settingsKey;
    }
    if (!this.inTx && !this.guardOpen) {
      // A simple Query carries its guard in the same message (query() prepends it); an
      // extended cycle gets it as a message of its own before the cycle.
      if (code === F.Query) this.guardPrefix = up.guard === 'clean' ? GUARD_RENEW_SQL : GUARD_OPEN_SQL;
      else up.send(up.guard === 'clean' ? guardRenewFrame : guardOpenFrame, newUnit(undefined));
      up.guard = 'active';
      this.guardOpen = true;
    }
    if (this.abortedBy !== undefined) {
      // The sandbox rolled this client's transaction back when its test ended: the
      // client still believes it is in one, so answer as Postgres would for an aborted one.
      this.inTx = true;
      this.txFailed = true;
    }
  }

  private extUnit(up: Upstream): Unit {
    if (this.unit === undefined) {
      this.unit = newUnit(this);
      up.expectUnit(this.unit);
    }
    return this.unit;
  }

  /** One client message of a cycle, on the connection the cycle runs on: each handled by its namesake. */
  private handle(up: Upstream, [buf, code, start, end]: Frame): void {
    switch (code) {
      case F.Query:
        return this.query(up, buf, start, end);
      case F.Parse:
        return this.Parse(up, buf, start, end);
      case F.Bind:
        return this.Bind(up, buf, start, end);
      case F.Describe:
        return this.Describe(up, buf, start, end);
      case F.Execute:
        return this.Execute(up, buf, start, end);
      case F.Close:
        return this.Close(up, buf, start, end);
      case F.Sync:
        return this.Sync(up, buf, start, end);
      case F.Flush:
        this.extUnit(up);
        up.socket.write(buf.subarray(start, end));
        return;
      case F.CopyData:
        up.socket.write(buf.subarray(start, end));
        return;
      case F.CopyDone:
      case F.CopyFail:
        this.copyIn = false;
        up.socket.write(buf.subarray(start, end));
        return;
      case F.FunctionCall:
        this.cycleOpen = false;
        this.inflight++;
        up.send(buf.subarray(start, end), newUnit(this));
        return;
      default:
        throw errors.protocol(`unknown message type ${JSON.stringify(String.fromCharCode(code))} (0x${code.toString(16)})`);
    }
  }

  private Parse(up: Upstream, buf: Buffer, start: number, end: number): void {
    const unit = this.extUnit(up);
    const [name, a] = m.readCString(buf, start + 5, end);
    const [sql, b] = m.readCString(buf, a, end);
    this.noteSql(sql);
    // CURRENT_TIMESTAMP & co. onto the moving clock (src/util/sql-clock.ts).
    const text = this.host.clockMoves ? clockRewrite(sql) : sql;
    const key = this.prefix + (name || 'u');
    const lexed = this.lex(text);
    const frame = this.parseFrame({ buf, start, end, a, b, name, key, target: name && !up.isSide ? key : '', sql, text, lexed }, unit);
    this.parsed(up, key, name, sql, lexed, frame);
    up.socket.write(frame);
    countSent(unit, Kind.Parse);
  }

  /** The Parse sent upstream for the client's: renamed, rewritten, or in place of a statement that may not run. */
  private parseFrame(p: ParseMessage, unit: Unit): Buffer {
    const { buf, start, end, a, b, name, key, target, sql, text, lexed } = p;
    const tx = lexed.stmts;
    const kind = tx.length === 1 ? tx[0].kind : 'other';
    if (kind === 'setLocal') this.localSettings.add(tx[0].name!);
    else this.noteSetConfig(sql, 0, sql.length);
    const nonTx = tx.find((t) => t.kind === 'nonTx');
    if (tx.length === 1 && isTxControl(tx[0]) && !nonTx) this.names.txStatements.set(key, tx[0]);
    else if (this.names.txStatements.size) this.names.txStatements.delete(key);
    // Never let it reach the server (PREPARE TRANSACTION would take the whole file's
    // transaction with it): a statement that raises our error when executed.
    if (nonTx) return m.writer.cstring(target).cstring(raising(errors.unsupportedStatement(nonTx.what!))).int16(0).flush(F.Parse);
    if (kind === 'setTransaction') return m.writer.cstring(target).cstring(NOOP).bytes(buf, b, end).flush(F.Parse);
    // A placeholder Postgres accepts to parse and bind even in an aborted transaction.
    if (tx.length === 1 && isTxControl(tx[0])) return m.writer.cstring(target).cstring(ROLLBACK_GUARD).bytes(buf, b, end).flush(F.Parse);
    const edits = this.edits(lexed);
    if (edits || text !== sql) {
      // Rewritten: per-client names, virtual-backend functions, the moving clock.
      if (edits) unit.positionMap = positionMap(0, edits);
      if (kind === 'prepare') this.names.prepared.add(this.prefix + tx[0].name);
      return m.writer.cstring(target).cstring(edits ? applyEdits(text, edits) : text).bytes(buf, b, end).flush(F.Parse);
    }
    // The unnamed statement stays unnamed upstream (no rewrite, no copy); it is re-created
    // from this frame if anything replaced it before the client uses it again.
    return name ? m.writer.cstring(target).bytes(buf, a, end).flush(F.Parse) : buf.subarray(start, end);
  }

  /** What a Parse leaves behind: the statement's kind, where it lives, the session objects it may make. */
  private parsed(up: Upstream, key: string, name: string, sql: string, lexed: Lexed, frame: Buffer): void {
    if (lexed.activity) this.names.activityStatements.add(key);
    else if (this.names.activityStatements.size) this.names.activityStatements.delete(key);
    // Nothing of a client stays on the side connection: its statements are the side's
    // unnamed one, parsed again whenever another replaced it.
    if (up.isSide) return this.names.parsedOnSide(up, key, frame);
    if (this.names.sideStatements.size) this.names.sideStatements.delete(key);
    if (lexed.temp) this.tempPending = true;
    if (lexed.sets) this.noteSettings(sql, lexed.stmts);
    if (lexed.deferrable && !this.host.deferrable) this.host.noteDeferrable();
    if (name) this.names.parsedNamed(up, key, frame);
    else this.names.parsedUnnamed(up, frame);
  }

  private Bind(up: Upstream, buf: Buffer, start: number, end: number): void {
    const unit = this.extUnit(up);
    const [portal, a] = m.readCString(buf, start + 5, end);
    const [stmt, b] = m.readCString(buf, a, end);
    const key = this.prefix + (stmt || 'u');
    if (up.isSide) {
      if (this.names.activityStatements.has(key)) this.injectState(up, unit);
      this.names.onSide(up, unit, key);
      up.socket.write(m.writer.cstring('').cstring('').bytes(buf, b, end).flush(F.Bind));
      countSent(unit, Kind.Bind);
      return;
    }
    const p = portal ? this.prefix + portal : '';
    const tx = this.names.txStatements.get(key);
    if (tx) this.names.txPortals.set(p, tx);
    else if (this.names.txPortals.size) this.names.txPortals.delete(p);
    // The virtual-backend functions learn the current clients before the statement runs.
    if (this.names.activityStatements.size && this.names.activityStatements.has(key)) this.injectState(up, unit);
    if (!stmt) this.names.ensureUnnamed(up, unit);
    else this.names.ensurePrepared(up, unit, key);
    if (!portal && !stmt) up.socket.write(buf.subarray(start, end));
    else up.socket.write(m.writer.cstring(p).cstring(stmt ? key : '').bytes(buf, b, end).flush(F.Bind));
    countSent(unit, Kind.Bind);
  }

  private Describe(up: Upstream, buf: Buffer, start: number, end: number): void {
    const unit = this.extUnit(up);
    const kind = buf[start + 5];
    const [name] = m.readCString(buf, start + 6, end);
    if (up.isSide) {
      if (kind === 0x53) this.names.onSide(up, unit, this.prefix + (name || 'u'));
      up.socket.write(m.writer.byte(kind).cstring('').flush(F.Describe));
    } else if (!name) {
      if (kind === 0x53) this.names.ensureUnnamed(up, unit);
      up.socket.write(buf.subarray(start, end));
    } else {
      if (kind === 0x53) this.names.ensurePrepared(up, unit, this.prefix + name);
      up.socket.write(m.writer.byte(kind).cstring(this.prefix + name).flush(F.Describe));
    }
  }

  private Execute(up: Upstream, buf: Buffer, start: number, end: number): void {
    const unit = this.extUnit(up);
    const [portal, a] = m.readCString(buf, start + 5, end);
    const p = portal && !up.isSide ? this.prefix + portal : '';
    const tx = this.names.txPortals.size && !up.isSide ? this.names.txPortals.get(p) : undefined;
    if (tx) return this.txExecute(up, unit, tx);
    if (p) up.socket.write(m.writer.cstring(p).bytes(buf, a, end).flush(F.Execute));
    else if (portal) up.socket.write(m.writer.cstring('').bytes(buf, a, end).flush(F.Execute));
    else up.socket.write(buf.subarray(start, end));
    this.executes++;
  }

  private Close(up: Upstream, buf: Buffer, start: number, end: number): void {
    const unit = this.extUnit(up);
    const kind = buf[start + 5];
    const [name] = m.readCString(buf, start + 6, end);
    let target: string;
    if (up.isSide) {
      if (kind === 0x53) this.names.sideStatements.delete(this.prefix + (name || 'u'));
      target = '';
    } else if (kind === 0x53) target = this.names.close(up, name);
    else {
      target = name ? this.prefix + name : '';
      this.names.txPortals.delete(target);
    }
    up.socket.write(m.writer.byte(kind).cstring(target).flush(F.Close));
    countSent(unit, Kind.Close);
  }

  private Sync(up: Upstream, buf: Buffer, start: number, end: number): void {
    this.extUnit(up); // a bare Sync is a cycle of its own
    this.unit = undefined;
    this.executes = 0;
    this.cycleOpen = false;
    this.inflight++;
    up.send(buf.subarray(start, end), undefined);
  }

  /** The statements of a query's text; the last one is kept, since a held-back Query is lexed when checked and again when sent. */
  private lex(sql: string): Lexed {
    const last = this.lexed;
    if (last && last.sql === sql) return last.lexed;
    const lexed = lex(sql);
    this.lexed = { sql, lexed };
    return lexed;
  }
  private lexed: { sql: string; lexed: Lexed } | undefined;

  /** The clients' list for the virtual-backend functions, as a statement of ours inside the client's cycle. */
  private injectState(up: Upstream, unit: Unit): void {
    this.executeInjected(up, unit, this.host.backendState(this));
    (unit.tags ??= [])[this.executes++] = null;
  }

  /** Execute of a BEGIN/COMMIT/ROLLBACK (or a refused PREPARE TRANSACTION) prepared through the extended protocol. */
  private txExecute(up: Upstream, unit: Unit, tx: Statement): void {
    const r = this.txRewrite(tx);
    if (r.endsOnError) unit.endsTxOnError = true;
    if (r.before) {
      this.executeInjected(up, unit, r.before);
      (unit.tags ??= [])[this.executes++] = null;
    }
    this.executeInjected(up, unit, r.sql);
    this.rewriteNextTag(unit, r.tag, r.effect);
    this.txControlInflight++;
    unit.txControl = true;
  }

  /** Parse, Bind (unnamed portal), Execute and Close one statement of ours inside the client's cycle; only its result reaches the client. */
  private executeInjected(up: Upstream, unit: Unit, sql: string): void {
    const name = this.prefix + '$tx';
    // Closed first: after an error in its cycle the Close at the end never ran, and the name
    // would still be taken (42P05) the next time.
    up.socket.write(m.close('S', name));
    countInjected(unit, Kind.Close);
    up.socket.write(m.writer.cstring(name).cstring(sql).int16(0).flush(F.Parse));
    countInjected(unit, Kind.Parse);
    up.socket.write(m.writer.cstring('').cstring(name).int16(0).int16(0).int16(0).flush(F.Bind));
    countInjected(unit, Kind.Bind);
    up.socket.write(m.writer.cstring('').int32(0).flush(F.Execute));
    up.socket.write(m.close('S', name));
    countInjected(unit, Kind.Close);
  }

  /** What a transaction-control statement becomes, given the client's state (now, or as simulated through a multi-statement query). */
  private txRewrite(s: Statement, inTx = this.inTx, failed = this.txFailed): TxRewrite {
    const r = txRewrite(s, { inTx, failed, localSettings: this.localSettings }, this.host);
    if (r.rollingBack) this.rollingBack = true;
    return r;
  }

  /** Rewrite the tag of the unit's next Execute result (the transaction-control one). */
  private rewriteNextTag(unit: Unit, tag: string, effect: TxEffect): void {
    const index = this.executes++;
    (unit.tags ??= [])[index] = tag;
    const prev = unit.onCommand;
    unit.onCommand = (i) => {
      prev?.(i);
      if (i === index) this.effect(effect);
    };
  }

  private effect(effect: TxEffect): void {
    if (effect === 'begin') {
      this.inTx = true;
      this.txFailed = false;
      this.lentWrites = [];
      this.txStartedAt = new Date();
    } else if (effect === 'end') {
      if (this.rollingBack) this.lentWritesLost();
      this.rollingBack = false;
      this.lentWrites = [];
      this.inTx = false;
      this.txFailed = false;
      this.abortedHere = false;
      this.localSettings.clear();
      this.abortedBy = undefined;
    }
  }

  /** A simple Query: its guard in the same message, its statements looked at, rewritten only where they must be. */
  private query(up: Upstream, buf: Buffer, start: number, end: number): void {
    this.cycleOpen = false;
    const [text] = m.readCString(buf, start + 5, end);
    this.noteSql(text);
    // CURRENT_TIMESTAMP & co. onto the moving clock (src/util/sql-clock.ts).
    const sql = this.host.clockMoves ? clockRewrite(text) : text;
    if (sql !== text) {
      buf = m.query(sql);
      start = 0;
      end = buf.length;
    }
    const lexed = this.lex(sql);
    const stmts = lexed.stmts;
    let guard = this.guardPrefix;
    this.guardPrefix = '';
    // An empty query must still answer EmptyQueryResponse: its guard goes separately.
    if (stmts.length === 0) guard = this.sendGuard(up, guard);
    const unit = newUnit(this);
    const rewrite = this.refusal(stmts) ?? this.scan(stmts, sql);
    if (typeof rewrite !== 'boolean') {
      this.sendGuard(up, guard);
      return this.reject(up, rewrite);
    }
    if (!up.isSide) {
      if (lexed.temp) this.tempPending = true;
      if (lexed.sets) this.noteSettings(sql, stmts);
      if (lexed.deferrable && !this.host.deferrable) this.host.noteDeferrable();
    }
    const edits = this.edits(lexed);
    // What the virtual-backend functions need to know, in the same message.
    const state = lexed.activity ? this.host.backendState(this) + ';\n' : '';
    const prefix = guard + state;
    this.inflight++;
    const skip = (guard === GUARD_RENEW_SQL ? 2 : guard ? 1 : 0) + (state ? 1 : 0);
    if (rewrite) return this.sendRewritten(up, unit, sql, stmts, edits, prefix, skip);
    if (!prefix && !edits) return up.send(buf.subarray(start, end), unit);
    if (skip) unit.tags = DROPS[skip];
    if (edits) unit.positionMap = positionMap(prefix.length, edits);
    else unit.positionShift = prefix.length;
    up.send(m.query(prefix + (edits ? applyEdits(sql, edits) : sql)), unit);
  }

  /** Send a simple Query's guard on its own (when the query is answered without running); returns what is left of it (''). */
  private sendGuard(up: Upstream, guard: string): string {
    if (guard) up.send(guard === GUARD_RENEW_SQL ? guardRenewFrame : guardOpenFrame, newUnit(undefined));
    return '';
  }

  /** A query refused whole because the client's transaction is aborted (by the sandbox at its test's end, or by a refusal here). */
  private refusal(stmts: Statement[]): JestPgError | undefined {
    const first = stmts[0]?.kind;
    const endsTx = first === 'commit' || first === 'rollback' || first === 'rollbackTo';
    if (this.abortedBy !== undefined && !endsTx) return errors.transactionRolledBack(this.abortedBy);
    if (this.abortedHere && this.inTx && !endsTx) return errors.transactionAborted();
    return undefined;
  }

  /** Note what the statements do (SET LOCAL, set_config, PREPARE): whether any must be rewritten, or the error for one that may not run. */
  private scan(stmts: Statement[], sql: string): boolean | JestPgError {
    let rewrite = false;
    for (const s of stmts) {
      if (s.kind === 'nonTx') return errors.unsupportedStatement(s.what!);
      if (s.kind === 'setLocal') this.localSettings.add(s.name!);
      else if (this.inTx || s.kind === 'other') this.noteSetConfig(sql, s.start, s.end);
      if (isTxControl(s) || s.kind === 'deallocate' || s.kind === 'discardAll' || s.kind === 'discardTemp' || s.kind === 'setTransaction') rewrite = true;
      else if (s.kind === 'setLocal' && !this.inTx) rewrite = true;
      else if (s.kind === 'prepare') this.names.prepared.add(this.prefix + s.name);
    }
    return rewrite;
  }

  /**
   * Rewrite statement by statement, simulating the transaction state: a statement that fails
   * stops the rest of the query, so the simulation holds for every statement that runs.
   */
  private sendRewritten(up: Upstream, unit: Unit, sql: string, stmts: Statement[], edits: Edit[] | undefined, prefix: string, skip: number): void {
    const out: Rewritten = { inTx: this.inTx, failed: this.txFailed, parts: [], tags: [...DROPS[skip]], effects: new Array<undefined>(skip).fill(undefined) };
    for (const s of stmts) {
      if (isTxControl(s)) this.rewriteTx(s, unit, out);
      else this.rewriteOther(s, sql, edits, out);
    }
    unit.tags = out.tags;
    const effects = out.effects;
    unit.onCommand = (i) => this.effect(effects[i]);
    if (unit.txControl) this.txControlInflight++;
    up.send(m.query(prefix + out.parts.join(';\n')), unit);
  }

  private rewriteTx(s: Statement, unit: Unit, out: Rewritten): void {
    const r = this.txRewrite(s, out.inTx, out.failed);
    if (r.before) push(out, r.before, null);
    push(out, r.sql, r.tag, r.effect);
    if (r.effect) {
      out.inTx = r.effect === 'begin';
      out.failed = false;
    }
    if (r.endsOnError) unit.endsTxOnError = true;
    unit.txControl = true;
  }

  private rewriteOther(s: Statement, sql: string, edits: Edit[] | undefined, out: Rewritten): void {
    switch (s.kind) {
      case 'setLocal':
        // Outside a transaction Postgres warns and does nothing; here it would last until the
        // test ends, for every connection of the file.
        if (!out.inTx) return push(out, warn('SET LOCAL can only be used in transaction blocks'), 'SET');
        break;
      case 'setTransaction':
        // Accepted and ignored (isolation level and access mode are the file transaction's).
        return push(out, NOOP, 'SET');
      case 'discardTemp':
        // This client's temporary objects, not those of every client of the shared session.
        return push(out, this.host.dropTempSql(this) ?? NOOP, 'DISCARD TEMP');
      case 'deallocate':
      case 'discardAll':
        return this.rewriteDeallocate(s, out);
      default:
        break;
    }
    push(out, edits ? applyEdits(sql, edits, s.start, s.end) : sql.slice(s.start, s.end), undefined);
  }

  /** DEALLOCATE [ALL] and DISCARD ALL act on this client's statements only (protocol and SQL level share the namespace). */
  private rewriteDeallocate(s: Statement, out: Rewritten): void {
    if (s.kind === 'deallocate' && s.name !== undefined) {
      this.names.deallocate(s.name);
      return push(out, `DEALLOCATE ${ident(this.prefix + s.name)}`, 'DEALLOCATE');
    }
    if (s.kind === 'discardAll') {
      // Also its temporary objects, and its settings back to those of its startup packet.
      const temp = this.host.dropTempSql(this);
      if (temp) push(out, temp, null);
      push(out, settingsSql(this.startupSettings), null);
    }
    this.names.deallocate();
    push(out, deallocateAll(this.prefix), s.kind === 'discardAll' ? 'DISCARD ALL' : 'DEALLOCATE ALL');
  }

  /** Per-client names (SQL PREPARE/EXECUTE) and the virtual-backend functions, as edits of the client's text. */
  private edits(lexed: Lexed): Edit[] | undefined {
    let edits: Edit[] | undefined;
    if (lexed.refs) for (const r of lexed.refs) (edits ??= []).push({ start: r.start, end: r.end, text: refText(r, this.pid) });
    for (const s of lexed.stmts) {
      if (s.kind === 'prepare' && s.nameAt) (edits ??= []).push({ start: s.nameAt[0], end: s.nameAt[1], text: ident(this.prefix + s.name) });
      else if (s.exec) (edits ??= []).push({ start: s.exec.at[0], end: s.exec.at[1], text: ident(this.prefix + s.exec.name) });
    }
    return edits && sortEdits(edits);
  }

  /** A statement may change session settings: read them after its cycle; note the custom names it sets. */
  private noteSettings(sql: string, stmts: Statement[]): void {
    this.setsPending = true;
    let match: RegExpExecArray | null;
    const call = /set_config\s*\(\s*'((?:[^']|'')+)'/gi;
    while ((match = call.exec(sql))) if (match[1].includes('.')) this.customSettings.add(match[1].replace(/''/g, "'"));
    for (const st of stmts) {
      if (!st.sets) continue;
      const set = /^\s*(?:set|reset)\s+(?:session\s+)?((?:"[^"]+"|[A-Za-z_][\w$]*)\s*\.\s*(?:"[^"]+"|[A-Za-z_][\w$]*))/i.exec(sql.slice(st.start, st.end));
      if (set) this.customSettings.add(set[1].split('.').map((part) => (part.trim().startsWith('"') ? part.trim().slice(1, -1) : part.trim().toLowerCase())).join('.'));
    }
  }

  /** set_config('name', …, true) with a literal name: the same as SET LOCAL for the client's COMMIT. */
  private noteSetConfig(sql: string, start: number, end: number): void {
    if (!this.inTx && !sql.includes('BEGIN') && !sql.includes('begin')) return;
    const re = /set_config\s*\(\s*'([^']+)'\s*,[^;]*?,\s*true\s*\)/gi;
    const text = sql.slice(start, end);
    let m: RegExpExecArray | null;
    while ((m = re.exec(text))) this.localSettings.add(m[1]);
  }

  private noteSql(sql: string): void {
    this.lastSql = sql;
    this.lastSqlAt = new Date();
  }

  /** Answer a whole simple Query with an error without sending it upstream. */
  private reject(up: Upstream, err: JestPgError, rollBackGuard = false): void {
    this.out(m.errorResponse({ code: err.sqlState, message: wireMessage(err), detail: err.detail }));
    this.cycleOpen = false;
    // Inside a client transaction an error aborts it, as in Postgres: until COMMIT/ROLLBACK,
    // its statements are answered 25P02 (the upstream itself never saw the error).
    if (this.inTx) this.txFailed = this.abortedHere = true;
    this.afterCycle(up, this.inTx || rollBackGuard ? TxStatus.Failed : TxStatus.InTransaction, true);
    this.flushOut();
  }

  /** Discard frames of a rejected cycle; answer at its end. */
  private discard(code: number): void {
    if (!this.rejectSent) {
      const err = this.rejecting!;
      this.out(m.errorResponse({ code: err.sqlState, message: wireMessage(err), detail: err.detail }));
      this.rejectSent = true;
    }
    if (code === F.Query || code === F.Sync || code === F.FunctionCall) {
      // The cycle is answered: the next rejection is told with an ErrorResponse of its own.
      this.rejecting = undefined;
      this.rejectSent = false;
      this.cycleOpen = false;
      if (this.inTx) this.txFailed = true;
      this.out(m.readyForQuery(this.inTx ? 'E' : 'I'));
      this.flushOut();
    } else {
      this.cycleOpen = code !== F.CopyData && code !== F.CopyDone && code !== F.CopyFail;
    }
  }

  // ---- output (Sink) ----

  out(buf: Buffer, start = 0, end = buf.length): void {
    if (this.phase === 'closed' || this.silenced) return;
    if (buf === this.lastOut && start === this.lastEnd) {
      this.lastEnd = end;
      return;
    }
    if (this.lastOut) this.out_.push(this.lastOut.subarray(this.lastStart, this.lastEnd));
    this.lastOut = buf;
    this.lastStart = start;
    this.lastEnd = end;
  }

  flushOut(): void {
    if (this.lastOut) this.out_.push(this.lastOut.subarray(this.lastStart, this.lastEnd));
    this.lastOut = undefined;
    const parts = this.out_;
    if (parts.length === 0) return;
    this.out_ = [];
    if (this.phase === 'closed' || this.socket.destroyed) return;
    if (parts.length === 1) this.socket.write(parts[0]);
    else {
      this.socket.cork();
      for (const p of parts) this.socket.write(p);
      this.socket.uncork();
    }
  }

  copyInStarted(): void {
    this.copyIn = true;
    if (this.phase === 'closing') {
      this.host.upstream?.socket.write(m.writer.cstring('client disconnected').flush(F.CopyFail));
      this.copyIn = false;
    }
  }

  ready(unit: Unit, status: number, buf: Buffer | undefined, start: number, from: Upstream): void {
    this.inflight--;
    if (unit.txControl) this.txControlInflight--;
    if (unit.endsTxOnError && unit.error && this.inTx) this.effect('end');
    this.afterCycle(from, status, false, buf, start);
    if (this.pending.length) this.pump();
    else if (this.phase === 'closing' && this.inflight === 0 && !this.cycleOpen) this.finish();
    this.host.changed();
  }

  /** A cycle's ReadyForQuery: resolve the guard, answer the client, maybe hand the upstream on. */
  private afterCycle(up: Upstream, status: number, synthetic: boolean, buf?: Buffer, start = 0): void {
    let client: 'I' | 'T' | 'E';
    if (up.isSide) {
      // The client's transaction is on the upstream, untouched; an error here aborts it all the
      // same, as it would in Postgres (25P02 from the sandbox until ROLLBACK).
      if (this.inTx && status === TxStatus.Failed && !synthetic) this.txFailed = this.abortedHere = true;
      client = !this.inTx ? 'I' : this.txFailed ? 'E' : 'T';
    } else if (this.inTx) {
      if (!synthetic) this.txFailed = status === TxStatus.Failed;
      client = this.txFailed ? 'E' : 'T';
    } else {
      client = 'I';
      if (this.guardOpen && this.inflight === 0 && !this.cycleOpen && !up.lost) {
        if (up.lender) {
          // A cycle run inside another client's idle transaction: its guard goes now, so that
          // client's own guard (its transaction) is the innermost one again.
          up.send(status === TxStatus.Failed ? guardUndoFrame : guardReleaseFrame, newUnit(undefined));
          up.guard = 'active';
          if (status !== TxStatus.Failed && up.lender instanceof Session && isWrite(this.lastSql)) up.lender.lentWrite(this, this.lastSql);
        } else {
          // Success: nothing to send; the next cycle moves the guard forward before it starts.
          if (status === TxStatus.Failed) up.send(guardRollbackFrame, newUnit(undefined));
          up.guard = 'clean';
        }
        this.guardOpen = false;
      }
    }
    if (buf) {
      // Forward Postgres' own ReadyForQuery with this client's status: it joins the bytes
      // before it in one write.
      buf[start + 5] = client.charCodeAt(0);
      this.out(buf, start, start + 6);
    } else this.out(m.readyForQuery(client));
    if (this.inflight === 0 && !this.cycleOpen && !this.copyIn && up.owner === this) {
      if (up.isSide) up.release(this);
      else if (!this.inTx) {
        this.afterWork(up);
        up.release(this);
      } else if (this.idleInTx()) up.lendIdle();
    }
  }

  // ---- lending: another client's cycle inside this client's idle transaction ----

  /** Inside a transaction that is not aborted, with nothing in flight or queued. */
  idleInTx(): boolean {
    // Not with SET LOCALs: a borrower with other settings puts its own in place (RESET ALL first),
    // which would take them away; the holder puts its session settings back when it resumes.
    return this.inTx && !this.txFailed && this.localSettings.size === 0 && this.phase === 'ready' && this.inflight === 0 && !this.cycleOpen && !this.copyIn && this.pending.length === 0;
  }

  /**
   * May run its next cycle inside another client's idle transaction: an autocommit cycle (not
   * one that starts a transaction), inside a test or the file's scope. Its own session settings
   * are put in place for it (and the holder's back when the holder resumes).
   */
  canBorrow(): boolean {
    const up = this.host.upstream;
    const f = this.pending[0];
    return (
      !this.inTx && this.phase === 'ready' && f !== undefined && !this.cycleOpen && up !== undefined && !this.startsTx(f) && this.host.scopeLabel() !== undefined
    );
  }

  private startsTx([buf, code, start, end]: Frame): boolean {
    if (code === F.Query || code === F.Parse) {
      const sql = code === F.Query ? m.readCString(buf, start + 5, end)[0] : m.readCString(buf, m.readCString(buf, start + 5, end)[1], end)[0];
      return this.lex(sql).stmts.some(isTxControl);
    }
    if (code === F.Bind) {
      const [, a] = m.readCString(buf, start + 5, end);
      const [statement] = m.readCString(buf, a, end);
      return this.names.txStatements.has(statement ? this.prefix + statement : '');
    }
    return false;
  }

  /** Writes other clients made inside this client's open transaction (undone if it rolls back). */
  private lentWrites: string[] = [];
  private rollingBack = false;

  lentWrite(by: Session, sql: string): void {
    if (this.lentWrites.length < 5) this.lentWrites.push(`${JSON.stringify(oneLine(sql))} by ${by.describe()}`);
  }

  /** This client's transaction is being rolled back: the writes made inside it by others go too. */
  private lentWritesLost(): void {
    if (this.lentWrites.length === 0) return;
    this.host.warn(
      `JESTPG_INTERLEAVED_WRITE: ${this.describe()} rolled back its transaction, and with it what other connections wrote while it was open (their statements ran inside it, since the sandbox has one connection): ${this.lentWrites.join('; ')}. ` +
        `On a real server those writes would have stayed. If the test relies on them, pass the transaction to those queries or commit before making them.`,
    );
    this.lentWrites = [];
  }

  /**
   * Outside its transaction again, with the upstream still held: look for the temporary objects
   * and read the settings its last cycles may have made (pipelined; the next client's cycle is
   * written after them, so what they find is this client's).
   */
  private afterWork(up: Upstream): void {
    if (this.tempPending) {
      this.tempPending = false;
      if (!up.lost) {
        const scan = this.host.scanTemp(this, up);
        this.tempScan = scan;
        void scan.then(() => {
          if (this.tempScan === scan) this.tempScan = undefined;
        });
      }
    }
    if (this.setsPending) {
      this.setsPending = false;
      if (up.lost) return;
      // From now on the upstream's settings are this client's own: every other client puts
      // its own back before it runs (RESET ALL first), and this one gets what is read here.
      this.settingsKey = up.appliedSettings = `client ${this.id}.${++this.settingsVersion}`;
      this.host.captureSettings(this, up, this.customSettings);
    }
  }
  private settingsVersion = 0;
  /** Custom settings (app.user_id) it set: Postgres lists them nowhere, so they are read by name. */
  private readonly customSettings = new Set<string>();
  /** A look for its temporary objects still on its way (awaited before they are dropped). */
  private tempScan: Promise<void> | undefined;

  // ---- end of life ----

  /** The sandbox ends this client's transaction (end of test): its savepoints are gone. */
  resetByRollback(testName: string): void {
    if (this.inTx) this.abortedBy = testName;
    if (this.inTx) this.lentWritesLost();
    this.inTx = false;
    this.txFailed = false;
    this.guardOpen = false;
  }

  /** Running on the upstream now (not queued, not on the side connection). */
  private get running(): boolean {
    const up = this.host.upstream;
    return up !== undefined && up.owner === this && this.conn === up && (this.inflight > 0 || this.cycleOpen);
  }

  /**
   * Cancel what the client runs (a CancelRequest with its key, or pg_cancel_backend of its pid):
   * a statement running on the upstream is cancelled there (57014 from Postgres); a cycle still
   * queued for the upstream is answered 57014 at once.
   */
  cancel(): void {
    if (this.running) void this.host.upstream!.cancel();
    else if (this.waiting) this.abandonWait(errors.queryCanceled());
    else if (this.phase === 'ready' && this.pending.length > 0 && this.inflight === 0 && !this.cycleOpen && !this.copyIn && !this.rejecting) {
      // Sent by the client, still held back here (a cancel or a look at its temporary objects
      // on its way, a file being opened): it never ran, as it would have been cancelled.
      this.rejecting = errors.queryCanceled();
      this.rejectSent = false;
      this.pump();
    }
  }

  /** pg_terminate_backend of its pid: FATAL 57P01, as a real backend ends; what it runs is cancelled first. */
  terminate(): void {
    if (this.running) void this.host.upstream!.cancel();
    this.fatal(errors.terminated());
  }

  /**
   * The upstream died (see Sandbox.lost). A client that was using it (a statement in flight, a
   * transaction open) is closed, as by a dying backend: FATAL with the sandbox's explanation.
   * An idle one goes on with the next upstream: its settings are put back and its prepared
   * statements parsed again there when it uses them; what it had in the old session's
   * transaction (temporary objects, SQL-level PREPAREs) is gone.
   */
  upstreamLost(up: Upstream, err: JestPgError): void {
    if (this.phase === 'closing') return this.closedNow();
    if (this.phase !== 'ready') return;
    const using = up.owner === this || this.inTx || this.copyIn || (this.conn === up && (this.inflight > 0 || this.cycleOpen));
    if (using) return this.fatal(err);
    if (this.waitTimer) {
      clearTimeout(this.waitTimer);
      this.waitTimer = undefined;
    }
    this.guardOpen = false;
    this.tempPending = false;
    this.tempScan = undefined;
    if (this.conn === up) {
      this.conn = undefined;
      this.unit = undefined;
    }
  }

  /** Close with a FATAL error (protocol violation, end of file, terminated). */
  fatal(err: JestPgError): void {
    if (this.phase === 'closed') return;
    this.flushOut();
    this.silenced = true;
    if (!this.socket.destroyed) {
      this.socket.end(m.errorResponse({ severity: 'FATAL', code: err.sqlState, message: wireMessage(err), detail: err.detail }));
    }
    this.gone();
  }

  /** The client went away (Terminate, socket closed, fatal error). */
  private gone(): void {
    if (this.phase === 'closed' || this.phase === 'closing') return;
    const wasReady = this.phase === 'ready';
    this.state = CLOSING;
    if (this.waitTimer) clearTimeout(this.waitTimer);
    this.pending.length = 0;
    this.rejecting = undefined;
    const up = this.host.upstream;
    this.host.side()?.withdraw(this);
    if (!wasReady || !up || up.lost) return this.closedNow();
    up.withdraw(this);
    const conn = this.conn;
    if (conn && conn.owner === this && !conn.lost) {
      // Its cycle ends first (an open extended cycle gets its Sync); finish() follows at its
      // ReadyForQuery. A statement still running is cancelled: nobody waits for its result, and
      // every other client waits for the upstream (a driver's query_timeout hangs up on a pg_sleep).
      if (this.running) void conn.cancel();
      if (this.copyIn) this.copyInStarted();
      if (this.cycleOpen && this.unit) {
        this.cycleOpen = false;
        this.inflight++;
        this.unit = undefined;
        conn.send(m.syncFrame, undefined);
      }
      if (this.inflight === 0) this.finish();
      return;
    }
    if (this.leftBehind) up.acquire(this);
    else this.closedNow();
  }

  /** Something of this client stays on the upstream until it is cleaned up: a transaction, statements, temporary objects. */
  private get leftBehind(): boolean {
    return this.inTx || this.names.prepared.size > 0 || this.tempScan !== undefined || this.host.hasTemp(this);
  }

  /** Owning the upstream with nothing in flight: roll back what the client left, close its statements. */
  private finish(): void {
    const up = this.host.upstream;
    if (this.phase === 'closed') return;
    const side = this.host.side();
    if (side && side.owner === this) side.release(this);
    if (up && !up.lost && up.owner !== this && this.leftBehind) {
      up.acquire(this);
      return;
    }
    if (up && !up.lost && up.owner === this) {
      // A cancel on its way (this client's statement was cancelled) must not hit what follows;
      // the objects its last cycle made must be known before they are dropped.
      const wait = up.cancelling ?? this.tempScan;
      if (wait) {
        if (wait === this.tempScan) this.tempScan = undefined;
        void wait.then(() => this.finish());
        return;
      }
      if (this.inTx || this.guardOpen) {
        if (this.inTx) this.lentWritesLost();
        up.send(guardRollbackFrame, newUnit(undefined));
        up.guard = 'clean';
        this.inTx = false;
        this.guardOpen = false;
      }
      if (this.names.prepared.size > 0) this.names.closeAll(up, newUnit(undefined));
      // Its temporary objects go with it, as they do when a real session ends.
      const drop = this.host.dropTempSql(this);
      if (drop) up.send(m.query(drop), newUnit(undefined));
      up.release(this);
    }
    this.closedNow();
  }

  private closedNow(): void {
    this.state = CLOSED;
    if (!this.socket.destroyed) this.socket.destroy();
    this.host.closed(this);
  }
}
