/**
 * The handle the test's thread holds on a sandbox that runs on its own thread (thread-main.ts).
 * Boundaries (beginTest, hooks, per-file settings) are posted and take effect before any client
 * byte sent after them; beginFile/endTest/endFile/close are requests answered when done. Nothing
 * here waits without a bound: a sandbox thread that dies or stops answering fails the request
 * with an error naming what was waited for.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { MessageChannel, Worker } from 'node:worker_threads';
import type { ConnectionInfo, FileReport, LateProblem, SandboxOptions, TestReport } from '../proxy/sandbox';
import { BoundaryPoster } from './boundaries';
import type { CloneOrder, Control, Reply, ThreadData } from './thread-protocol';
import { JestPgError, reviveError } from '../util/errors';

type Method = Extract<Control, { op: 'call' }>['method'];

/** How long a request may wait beyond the time its own work is allowed (graceMs and friends). */
const ANSWER_MS = 30_000;
/** The sandbox thread must be listening within this. */
const START_MS = 30_000;

export interface ThreadOptions extends Omit<SandboxOptions, 'onUpstream' | 'pollControl' | 'onLate'> {
  /** Record the upstream connections' backend pids here (files named by pid). */
  upstreamsDir?: string;
  /** The upstream database may not exist yet: the thread makes sure of it first (see CloneOrder). */
  clone?: CloneOrder;
}

/** dist/sandbox/thread-main.js, also when this module runs from src/ (our own tests, through a TS transform). */
function threadScript(): string {
  const here = path.join(__dirname, 'thread-main.js');
  if (existsSync(here)) return here;
  return path.join(__dirname, '..', '..', 'dist', 'sandbox', 'thread-main.js');
}

export class SandboxThread extends BoundaryPoster {
  info!: ConnectionInfo;
  /**
   * Receives each query that ran between tests, as it happens (before the result of the
   * endTest/endFile that follows it).
   */
  onLate: ((problem: LateProblem) => void) | undefined;
  private readonly worker: Worker;
  private readonly control: MessageChannel['port1'];
  private readonly state: Int32Array;
  private readonly infoBuf: SharedArrayBuffer;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  private nextId = 1;
  private dead: Error | undefined;
  /** The thread ended (closed, or died). */
  get gone(): boolean {
    return this.dead !== undefined || this.closing !== undefined;
  }
  private closing: Promise<void> | undefined;
  private graceMs: number;

  private constructor(private readonly opts: ThreadOptions) {
    super();
    this.graceMs = opts.graceMs;
    const stateBuf = new SharedArrayBuffer(8);
    this.state = new Int32Array(stateBuf);
    this.infoBuf = new SharedArrayBuffer(4096);
    const { port1, port2 } = new MessageChannel();
    this.control = port1;
    const { upstreamsDir, clone, ...sandboxOpts } = opts;
    const data: ThreadData = { opts: sandboxOpts, upstreamsDir, clone, state: stateBuf, info: this.infoBuf, control: port2 };
    this.worker = new Worker(threadScript(), { workerData: data, transferList: [port2], stdout: false, stderr: false });
    this.worker.on('message', (r: Reply) => this.onReply(r));
    this.worker.on('error', (e: unknown) => this.die(e instanceof Error ? e : new Error(String(e))));
    this.worker.on('exit', (code) => this.die(new Error(`the sandbox thread exited (code ${code})`)));
    this.control.unref();
    this.idle();
  }

  /** Start the sandbox on its own thread and wait until it listens. */
  static start(opts: ThreadOptions): Promise<SandboxThread> {
    const t = SandboxThread.launch(opts);
    return t.listening!.then(() => t);
  }

  /**
   * Start the sandbox on its own thread and block this thread until it listens (a few ms): for
   * callers that must know the address synchronously (a Jest environment's constructor).
   */
  static startSync(opts: ThreadOptions): SandboxThread {
    return SandboxThread.launch(opts).listeningSync();
  }

  /**
   * Start the sandbox on its own thread and return at once: `listeningSync()` (or any request,
   * which the thread answers once it listens) waits for it. For a process that knows ahead of
   * its first test file that it may need one (a run's global setup, which may run the tests in band).
   */
  static launch(opts: ThreadOptions): SandboxThread {
    const t = new SandboxThread(opts);
    t.listening = t.request<void>(0, 'starting the sandbox thread', START_MS);
    t.listening.catch(() => undefined);
    return t;
  }

  /** Settles once the thread listens (set by `launch`). */
  listening: Promise<void> | undefined;

  /** Block this thread until the sandbox thread listens (at once if it does already); its address is then in `info`. */
  listeningSync(): this {
    if (this.info) return this;
    const r = Atomics.wait(this.state, 1, 0, START_MS);
    const s = Atomics.load(this.state, 1);
    if (r === 'timed-out' || s !== 1) {
      void this.worker.terminate();
      throw new JestPgError('JESTPG_SANDBOX_STALLED', s === 2 ? `The sandbox thread could not start listening; see the error that follows on stderr.` : `The sandbox thread did not start listening within ${START_MS} ms (machine overloaded?). Re-run; if it persists, report it.`);
    }
    const len = new DataView(this.infoBuf).getUint32(0);
    this.info = JSON.parse(Buffer.from(new Uint8Array(this.infoBuf, 4, len)).toString('utf8')) as ConnectionInfo;
    // The 'listening' message still arrives; request id 0 is not pending, so it is ignored.
    return this;
  }

  private onReply(r: Reply): void {
    switch (r.type) {
      case 'listening':
        this.info = r.info;
        return this.settle(0, undefined, undefined);
      case 'failed':
        return this.settle(0, undefined, reviveError(r.error));
      case 'late':
        this.onLate?.(r.problem);
        return;
      case 'result':
        return this.settle(r.id, r.value, r.error ? reviveError(r.error) : undefined);
    }
  }

  private settle(id: number, value: unknown, error: Error | undefined): void {
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    clearTimeout(p.timer);
    if (error) p.reject(error);
    else p.resolve(value);
    this.idle();
  }

  private die(e: Error): void {
    if (this.dead) return;
    this.dead = e;
    for (const [id, p] of [...this.pending]) {
      this.pending.delete(id);
      clearTimeout(p.timer);
      p.reject(this.closing ? e : new JestPgError('JESTPG_SANDBOX_STALLED', `The sandbox thread ended unexpectedly (${e.message}); this file's database work is lost. Re-run; if it persists, report it.`));
    }
  }

  /** A Jest worker must not be kept alive by its sandbox; anyone waiting for an answer must be. */
  private idle(): void {
    if (!this.opts.unref) return;
    if (this.pending.size === 0) this.worker.unref();
    else this.worker.ref();
  }

  private request<T>(id: number, what: string, ms: number): Promise<T> {
    if (this.dead) return Promise.reject(this.closing ? this.dead : new JestPgError('JESTPG_SANDBOX_STALLED', `The sandbox thread is gone (${this.dead.message}); cannot run ${what}.`));
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        this.idle();
        reject(new JestPgError('JESTPG_SANDBOX_STALLED', `The sandbox did not finish ${what} within ${ms} ms. It is stuck (a bug in jest-environment-pg, or the server stopped answering): re-run, and report it with the output above if it persists.`));
      }, ms);
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer });
      this.idle();
    });
  }

  protected post(c: Control): void {
    if (this.dead) return;
    this.control.postMessage(c);
    // After the post: the sandbox thread sees the counter move only once the message is queued.
    Atomics.add(this.state, 0, 1);
  }

  private call<T>(method: Method, what: string, ms: number): Promise<T> {
    const id = this.nextId++;
    const p = this.request<T>(id, what, ms);
    this.post({ op: 'call', id, method });
    return p;
  }

  // ---- the Sandbox interface ----

  override configure(o: Parameters<BoundaryPoster['configure']>[0]): void {
    this.graceMs = o.graceMs;
    super.configure(o);
  }
  /**
   * The database the next beginFile connects to (and where its backend pid is recorded); with
   * `clone`, the thread makes sure it exists first (it starts now, beginFile waits for it).
   */
  setUpstream(url: string, label?: string, upstreamsDir?: string, clone?: CloneOrder): void {
    this.post({ op: 'setUpstream', url, label, upstreamsDir, clone });
  }
  beginFile(): Promise<void> {
    return this.call('beginFile', 'opening the file transaction', ANSWER_MS);
  }
  endTest(): Promise<TestReport> {
    return this.call('endTest', 'ending the test', ANSWER_MS + this.graceMs);
  }
  endFile(): Promise<FileReport> {
    return this.call('endFile', 'ending the test file', ANSWER_MS + this.graceMs);
  }
  disconnect(): Promise<void> {
    return this.call('disconnect', 'disconnecting its upstream connection', ANSWER_MS);
  }
  /** Close every client and the upstream, then end the thread. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      const hold = setInterval(() => undefined, 1 << 30);
      try {
        if (!this.dead) await this.call('close', 'closing', ANSWER_MS).catch(() => undefined);
        await this.worker.terminate().catch(() => undefined);
      } finally {
        clearInterval(hold);
      }
    })();
    return this.closing;
  }
}
