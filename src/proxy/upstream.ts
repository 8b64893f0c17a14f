/**
 * The one upstream connection of a sandbox. It is always inside the file transaction.
 * Clients take turns owning it (a whole cycle, or a whole client transaction); every
 * Query or Sync written to it pushes a Unit, and the responses up to the matching
 * ReadyForQuery are routed by that unit: forwarded to its sink (a client) or swallowed.
 */
import net from 'node:net';
import { B, F } from './codes';
import { connect, type Connected } from './connect';
import { Framer } from './framer';
import { cancelRequest, close, commandComplete, query, readDataRow, readFields, shiftPosition, syncFrame, writer } from './messages';
import { SETUP_SQL } from './backends';
import { errors, messageOf } from '../util/errors';

/** Where a unit's responses go. Implemented by a client session. */
export interface Sink {
  /** Forward bytes [start, end) of buf to the client (coalesced until flushOut). */
  out(buf: Buffer, start?: number, end?: number): void;
  flushOut(): void;
  /** The unit's ReadyForQuery arrived on `from` (frame: the message itself, to forward with the status patched in place). */
  ready(unit: Unit, status: number, buf: Buffer | undefined, start: number, from: Upstream): void;
  copyInStarted(): void;
}

export interface Unit {
  sink: Sink | undefined;
  /** Per CommandComplete, in order: undefined keeps the tag, a string replaces it, null drops the message. */
  tags?: (string | null | undefined)[];
  /** Called with the index of each CommandComplete (after any rewrite). */
  onCommand?: (index: number) => void;
  /** Counts Execute/statement results (CommandComplete, EmptyQueryResponse, PortalSuspended). */
  tagIndex: number;
  /**
   * Messages we injected into a client's cycle: for each kind, how many of that kind
   * the unit has sent, and the indexes of ours, whose responses are dropped.
   */
  sent: [parse: number, bind: number, close: number];
  recv: [parse: number, bind: number, close: number];
  drop?: [parse: number[], bind: number[], close: number[]];
  error?: Record<string, string>;
  /** Resolves internal units (no sink). */
  done?: (status: number, unit: Unit) => void;
  txControl?: boolean;
  /** Characters prepended to the client's query: subtracted from error positions. */
  positionShift?: number;
  /** Or, when the client's text was edited too: the map back to its positions. */
  positionMap?: (p: number) => number;
  /** An error in this unit ends the client's transaction (a refused PREPARE TRANSACTION). */
  endsTxOnError?: boolean;
}

export interface Owner {
  /** Called when the upstream is handed to this owner. */
  granted(): void;
  describe(): string;
  /** Holds the upstream for an open transaction with nothing in flight or queued (it may be lent). */
  idleInTx?(): boolean;
  /** Its next cycle may run on the upstream lent by an owner idle in its transaction. */
  canBorrow?(): boolean;
}

const executeAll = Buffer.from([F.Execute, 0, 0, 0, 9, 0, 0, 0, 0, 0]);

export const newUnit = (sink: Sink | undefined): Unit => ({ sink, tagIndex: 0, sent: [0, 0, 0], recv: [0, 0, 0] });

export const enum Kind {
  Parse = 0,
  Bind = 1,
  Close = 2,
}

/** Count a client message of this kind (its response is forwarded). */
export function countSent(unit: Unit, kind: Kind): void {
  unit.sent[kind]++;
}

/** Count a message we injected (its response is dropped). */
export function countInjected(unit: Unit, kind: Kind): void {
  (unit.drop ??= [[], [], []])[kind].push(unit.sent[kind]++);
}

function dropped(unit: Unit, kind: Kind): boolean {
  const i = unit.recv[kind]++;
  return unit.drop !== undefined && unit.drop[kind].includes(i);
}

export class Upstream {
  /** The side connection: runs a kill statement while the upstream is busy; no transaction, no guard. */
  isSide = false;
  /** Tells upstreams apart (a client's prepared statements live on one; after a reconnect they are parsed again). */
  readonly gen: number;
  readonly socket: net.Socket;
  readonly backendPid: number;
  private readonly secretKey: number;
  private readonly cancelTarget: net.NetConnectOpts;
  private readonly framer = new Framer();
  private readonly expect: Unit[] = [];
  owner: Owner | undefined;
  private readonly waiters: Owner[] = [];
  private touched: Sink[] = [];
  closed = false;
  /** Set when the connection dies; callers fail with it. */
  lost: Error | undefined;
  /** Why, in Postgres' words when it said (the FATAL before it closed), else the socket's. */
  lostDetail = '';
  private fatalSeen: Record<string, string> | undefined;
  onLost: ((err: Error) => void) | undefined;
  /**
   * The guard savepoint: none; clean (a finished cycle's, kept to be moved forward by the next
   * one); active (protecting a running cycle or a client transaction).
   */
  guard: 'none' | 'clean' | 'active' = 'none';
  /** Whose unnamed statement the upstream holds (any simple Query destroys it). */
  unnamedOwner: Owner | undefined;
  /** Identifies the per-client settings last applied to the upstream session. */
  /** '' = the session's defaults (a fresh connection); undefined = unknown (after a rollback). */
  appliedSettings: string | undefined = '';
  /**
   * A cancel request is on its way to Postgres: no new cycle may start until it has been
   * delivered, or it could cancel that cycle (another client's, or the sandbox's own guard).
   */
  cancelling: Promise<void> | undefined;
  /** Notices are offered here first; true swallows one (the marker of a virtual pg_terminate_backend). */
  onNotice: ((fields: Record<string, string>) => boolean) | undefined;

  private constructor(c: Connected, gen: number) {
    this.gen = gen;
    const socket = c.socket;
    this.socket = socket;
    this.backendPid = c.backendPid;
    this.secretKey = c.secretKey;
    this.cancelTarget = c.cancelTarget;
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => this.die(err));
    socket.on('close', () => this.die(new Error('connection closed')));
    socket.resume(); // connect() hands it over paused, right after the first ReadyForQuery
  }

  /**
   * Connect, authenticate and take the socket (see connect.ts): from here on the bytes are ours.
   * `gen`: unique among the sandbox's upstream connections.
   */
  static async connect(url: string, applicationName: string, gen: number): Promise<Upstream> {
    let up: Upstream;
    try {
      up = new Upstream(await connect(url, { applicationName }), gen);
    } catch (e) {
      throw errors.serverUnreachable(url, e);
    }
    // The virtual-backend functions, for the life of this connection (outside any transaction).
    const err = await up.exec(SETUP_SQL).catch((e: Error) => ({ M: e.message }) as Record<string, string>);
    if (err) {
      await up.close();
      throw errors.serverUnreachable(url, new Error(`setting up the virtual-backend functions failed: ${err.M}`));
    }
    return up;
  }

  // ---- ownership ----

  /** Ask for the upstream; `owner.granted()` is called when it is this owner's turn. */
  acquire(owner: Owner): void {
    if (this.owner === owner) return;
    if (owner === this.lender) {
      this.lenderWants = true;
      return;
    }
    if (this.owner === undefined) {
      this.owner = owner;
      owner.granted();
      return;
    }
    if (!this.waiters.includes(owner)) this.waiters.push(owner);
    this.lendIdle();
  }

  /**
   * The owner a borrower took the upstream from: a client idle inside its transaction, whose
   * app waits for another connection's answer before it sends its next statement. Lending
   * makes that deadlock impossible: the borrower's cycle runs inside the lender's transaction,
   * in a guard of its own, and the upstream goes back to the lender when it ends.
   */
  lender: Owner | undefined;
  private lenderWants = false;

  /** The owner is idle inside its transaction: let the first waiter that may borrow run meanwhile. */
  lendIdle(): void {
    if (this.lender || !this.owner?.idleInTx?.()) return;
    const i = this.waiters.findIndex((w) => w.canBorrow?.() === true);
    if (i < 0) return;
    const [borrower] = this.waiters.splice(i, 1);
    this.lender = this.owner;
    this.lenderWants = false;
    this.owner = borrower;
    borrower.granted();
  }

  /** Take the upstream from an idle owner (a client left holding a transaction when its test ended). */
  seize(owner: Owner): void {
    this.owner = owner;
    owner.granted();
  }

  /** Stop waiting (a client that disconnected or timed out). */
  withdraw(owner: Owner): void {
    const i = this.waiters.indexOf(owner);
    if (i >= 0) this.waiters.splice(i, 1);
    if (owner === this.lender) this.lenderWants = false;
  }

  release(owner: Owner): void {
    if (this.owner !== owner) return;
    const lender = this.lender;
    if (lender) {
      // Back to the client whose transaction it is.
      this.lender = undefined;
      this.owner = lender;
      if (this.lenderWants) {
        this.lenderWants = false;
        lender.granted();
      } else if (lender.idleInTx?.()) this.lendIdle();
      else this.release(lender); // its transaction ended meanwhile (rolled back at the end of its test)
      return;
    }
    this.owner = this.waiters.shift();
    this.owner?.granted();
  }

  // ---- writing ----

  /** Register a unit whose messages are being written piecewise (an extended-protocol cycle). */
  expectUnit(unit: Unit): void {
    this.expect.push(unit);
  }

  /** Write a frame that ends a unit (Query, Sync, FunctionCall) and register the unit. */
  send(frame: Buffer, unit: Unit | undefined): void {
    if (unit) this.expect.push(unit);
    if (frame[0] === 0x51) this.unnamedOwner = undefined; // Query drops the unnamed statement
    this.socket.write(frame);
  }

  /** Run SQL as a swallowed unit; resolves with the first error's fields, if any. */
  exec(sql: string): Promise<Record<string, string> | undefined> {
    return this.internal(query(sql));
  }

  /** Write an internal unit's bytes (ending in Query or Sync); resolves with its first error, if any. */
  private internal(bytes: Buffer): Promise<Record<string, string> | undefined> {
    return new Promise((resolve, reject) => {
      if (this.lost) return reject(this.lost);
      const unit = newUnit(undefined);
      this.pendingRejects.add(reject);
      unit.done = (_status, u) => {
        this.pendingRejects.delete(reject);
        resolve(u.error);
      };
      this.send(bytes, unit);
    });
  }
  private pendingRejects = new Set<(e: Error) => void>();

  /** Parse a named statement for internal use (swallowed; errors surface when it is run). */
  prepare(name: string, sql: string): void {
    const unit = newUnit(undefined);
    this.expect.push(unit);
    this.socket.write(Buffer.concat([writer.cstring(name).cstring(sql).int16(0).flush(F.Parse), syncFrame]));
  }

  closeStatement(name: string): void {
    this.expect.push(newUnit(undefined));
    this.socket.write(Buffer.concat([close('S', name), syncFrame]));
  }

  /** Bind + Execute + Sync of a prepared statement; resolves with the first error, if any. */
  runPrepared(name: string): Promise<Record<string, string> | undefined> {
    return this.internal(Buffer.concat([writer.cstring('').cstring(name).int16(0).int16(0).int16(0).flush(F.Bind), executeAll, syncFrame]));
  }

  /** Run SQL and collect the rows of its last result as text. */
  rows(sql: string): Promise<string[][]> {
    return new Promise((resolve, reject) => {
      if (this.lost) return reject(this.lost);
      const rows: string[][] = [];
      const sink: Sink = {
        out: (buf, start = 0, end = buf.length) => {
          let off = start;
          while (off < end) {
            const code = buf[off];
            const len = buf.readInt32BE(off + 1);
            // NULL reads as '' here (its callers compare with '').
            if (code === B.DataRow) rows.push(readDataRow(buf, off).map((v) => v ?? ''));
            off += 1 + len;
          }
        },
        flushOut: () => undefined,
        ready: (u) => {
          this.pendingRejects.delete(reject);
          if (u.error) reject(new Error(u.error.M ?? 'query failed'));
          else resolve(rows);
        },
        copyInStarted: () => undefined,
      };
      this.pendingRejects.add(reject);
      this.send(query(sql), newUnit(sink));
    });
  }

  /**
   * Ask Postgres to cancel whatever the upstream runs now. Until Postgres has taken the request
   * (it closes the cancel connection after signalling the backend), `cancelling` is set and no
   * new cycle starts: a signal that arrives while the backend reads its next message is ignored,
   * one that arrives while it runs the next statement would cancel that one.
   */
  cancel(): Promise<void> {
    if (this.cancelling) return this.cancelling;
    const done = new Promise<void>((resolve) => {
      const s = net.connect(this.cancelTarget, () => s.end(cancelRequest(this.backendPid, this.secretKey)));
      s.on('close', () => resolve());
      s.on('error', () => resolve());
    });
    this.cancelling = done;
    void done.then(() => {
      if (this.cancelling === done) this.cancelling = undefined;
    });
    return done;
  }

  // ---- reading ----

  private onData(chunk: Buffer): void {
    try {
      this.framer.push(chunk, this.onFrame);
    } catch (e) {
      this.die(new Error(`unreadable data from the server: ${messageOf(e)}`));
      this.socket.destroy();
    }
    const touched = this.touched;
    if (touched.length) {
      this.touched = [];
      for (const s of touched) s.flushOut();
    }
  }

  private readonly onFrame = (buf: Buffer, code: number, start: number, end: number): void => {
    // A FATAL ends this connection: the sandbox tells the clients (JESTPG_UPSTREAM_LOST), in its words.
    if (code === B.ErrorResponse && buf[start + 6] === 0x46 /* F */) {
      this.fatalSeen = readFields(buf, start, end);
      return;
    }
    const unit = this.expect[0];
    if (unit === undefined) return; // asynchronous ParameterStatus/Notice outside any unit
    const sink = unit.sink;
    switch (code) {
      case B.ReadyForQuery:
        return this.unitDone(unit, buf, start);
      case B.CommandComplete:
        return this.commandDone(unit, buf, start, end);
      case B.ParseComplete:
        if (dropped(unit, Kind.Parse)) return;
        break;
      case B.BindComplete:
        if (dropped(unit, Kind.Bind)) return;
        break;
      case B.CloseComplete:
        if (dropped(unit, Kind.Close)) return;
        break;
      case B.EmptyQueryResponse:
      case B.PortalSuspended:
        unit.tagIndex++;
        break;
      case B.ErrorResponse:
        if (unit.error === undefined) unit.error = readFields(buf, start, end);
        if ((unit.positionShift || unit.positionMap) && sink && unit.error.P) {
          this.touch(sink);
          const shift = unit.positionShift ?? 0;
          sink.out(shiftPosition(buf, start, end, unit.positionMap ?? ((p) => p - shift)));
          return;
        }
        break;
      case B.NoticeResponse:
        if (this.onNotice !== undefined && this.onNotice(readFields(buf, start, end))) return;
        break;
      case B.CopyInResponse:
      case B.CopyBothResponse:
        sink?.copyInStarted();
        break;
      default:
        break;
    }
    if (sink) this.forward(sink, buf, start, end);
  };

  /** The unit's ReadyForQuery: it is answered. */
  private unitDone(unit: Unit, buf: Buffer, start: number): void {
    this.expect.shift();
    const status = buf[start + 5];
    const sink = unit.sink;
    if (sink) {
      this.touch(sink);
      sink.ready(unit, status, buf, start, this);
    }
    unit.done?.(status, unit);
  }

  /** A CommandComplete: forwarded, or replaced by the unit's tag for it (null: dropped). */
  private commandDone(unit: Unit, buf: Buffer, start: number, end: number): void {
    const i = unit.tagIndex++;
    const tag = unit.tags?.[i];
    const sink = unit.sink;
    if (sink) {
      if (tag === undefined) this.forward(sink, buf, start, end);
      else if (tag !== null) {
        this.touch(sink);
        sink.out(commandComplete(tag));
      }
    }
    unit.onCommand?.(i);
  }

  private forward(sink: Sink, buf: Buffer, start: number, end: number): void {
    this.touch(sink);
    sink.out(buf, start, end);
  }

  private touch(sink: Sink): void {
    const t = this.touched;
    if (t.length === 0 || t[t.length - 1] !== sink) {
      if (!t.includes(sink)) t.push(sink);
    }
  }

  /**
   * The connection is gone. Internal units fail; the clients whose units were in flight are
   * told by the sandbox (onLost), which knows what else each of them had here.
   */
  private die(err: Error): void {
    if (this.lost) return;
    const f = this.fatalSeen;
    this.lostDetail = f ? `${f.M} (SQLSTATE ${f.C})` : err.message;
    this.lost = this.closed ? err : errors.upstreamLost(this.lostDetail);
    const units = this.expect.splice(0);
    for (const u of units) {
      u.error ??= { C: '08006', M: this.lost.message };
      u.done?.(0x45, u);
    }
    for (const r of this.pendingRejects) r(this.lost);
    this.pendingRejects.clear();
    if (!this.closed) this.onLost?.(this.lost);
    // Nobody will release it: whoever waits for it learns it is lost when granted.
    this.owner = undefined;
    this.lender = undefined;
    for (const w of this.waiters.splice(0)) w.granted();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await new Promise<void>((resolve) => {
      if (this.socket.destroyed) return resolve();
      this.socket.once('close', () => resolve());
      this.socket.end(Buffer.from([0x58, 0, 0, 0, 4]));
      setTimeout(() => this.socket.destroy(), 1000).unref();
    });
  }
}
