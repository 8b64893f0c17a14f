/**
 * A test worker's side of a sandbox hosted by its runner's main process (host.ts): what a file
 * does on its sandbox, sent over the run's host socket. Boundaries (a test begins, a hook runs)
 * are sent without waiting; `delivered()` resolves once the host has applied every one sent
 * before it, and the runner awaits it before the test's or hook's code runs, so no client byte
 * can overtake its boundary. The host keeps the upstream connection between files: `disconnect`
 * has nothing to do. One connection per process (per thread, under a thread pool), kept across
 * the files it runs; never what keeps the process alive.
 */
import { existsSync } from 'node:fs';
import net from 'node:net';
import type { ConnectionInfo, FileReport, LateProblem, TestReport } from '../proxy/sandbox';
import type { RunManifest } from '../run/manifest';
import { JestPgError, reviveError } from '../util/errors';
import { withClosingGuard } from './closing-guard';
import type { FileSandbox, FileWorker, WorkerSource } from './file';
import { BoundaryPoster } from './boundaries';
import { hostSocket, lineReader, type HostCall, type HostMessage, type Opened } from './host-protocol';

export class HostedSandbox extends BoundaryPoster implements FileSandbox {
  info!: ConnectionInfo;
  database!: string;
  onLate: ((problem: LateProblem) => void) | undefined;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private nextId = 1;
  private dead: Error | undefined;

  private constructor(private readonly socket: net.Socket) {
    super();
    socket.setNoDelay(true);
    socket.on(
      'data',
      lineReader<HostMessage>((m) => this.onMessage(m)),
    );
    socket.on('error', (e) => this.die(e));
    socket.on('close', () => this.die(new Error('the connection closed')));
  }

  /** Connect to the host listening at `file` and get worker `workerId`'s sandbox. */
  static async connect(file: string, workerId: string): Promise<HostedSandbox> {
    const socket = net.connect(file);
    const h = new HostedSandbox(socket);
    const opened = (await h.call({ op: 'open', workerId })) as Opened;
    h.info = opened.info;
    h.database = opened.database;
    return h;
  }

  /** The connection is gone (the runner's main process ended, or closed the run). */
  get gone(): boolean {
    return this.dead !== undefined;
  }

  private onMessage(m: HostMessage): void {
    if ('late' in m) {
      this.onLate?.(m.late);
      return;
    }
    const p = this.pending.get(m.id);
    if (!p) return;
    this.pending.delete(m.id);
    this.idle();
    if (m.error) p.reject(reviveError(m.error));
    else p.resolve(m.value);
  }

  private die(e: Error): void {
    if (this.dead) return;
    this.dead = e;
    this.socket.destroy();
    for (const [id, p] of [...this.pending]) {
      this.pending.delete(id);
      p.reject(this.stalled(e));
    }
  }

  private stalled(e: Error): JestPgError {
    return new JestPgError('JESTPG_SANDBOX_STALLED', `The sandbox hosted by the test runner's main process is unreachable (${e.message}); this file's database work is lost. Re-run; if it persists, report it.`);
  }

  /** Keep the process alive only while an answer is awaited. */
  private idle(): void {
    if (this.pending.size === 0) this.socket.unref();
    else this.socket.ref();
  }

  protected post(m: HostCall): void {
    if (this.dead) return;
    this.socket.write(JSON.stringify({ id: this.nextId++, ...m }) + '\n');
  }

  private call(m: HostCall): Promise<unknown> {
    if (this.dead) return Promise.reject(this.stalled(this.dead));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.idle();
      this.socket.write(JSON.stringify({ id, ...m }) + '\n');
    });
  }

  // ---- FileSandbox ----

  async delivered(): Promise<void> {
    await this.call({ op: 'sync' });
  }
  async beginFile(): Promise<void> {
    await this.call({ op: 'beginFile' });
  }
  endTest(): Promise<TestReport> {
    return this.call({ op: 'endTest' }) as Promise<TestReport>;
  }
  endFile(): Promise<FileReport> {
    return this.call({ op: 'endFile' }) as Promise<FileReport>;
  }
  /** The host keeps the upstream connection for the next file of this worker id; it closes with the run. */
  async disconnect(): Promise<void> {}

  close(): void {
    this.die(new Error('closed'));
  }
}

/**
 * This process's connection to the run's sandbox host, if the run has one (its main process
 * started it): a source of sandboxes for SandboxFile. One per module instance, like worker.ts's
 * registry; reconnected when the run or the worker id changes (watch mode, a new run).
 */
export class HostedWorkers {
  private current: { socket: string; workerId: string; sandbox: Promise<HostedSandbox> } | undefined;

  /** The worker's hosted sandbox as a WorkerSource, or undefined when the run hosts none. */
  async source(manifest: RunManifest | undefined, workerId: string): Promise<WorkerSource | undefined> {
    if (!manifest) return undefined;
    const socket = hostSocket(manifest.runDir);
    if (!existsSync(socket)) return undefined;
    let cur = this.current;
    if (!cur || cur.socket !== socket || cur.workerId !== workerId || (await cur.sandbox.catch(() => undefined))?.gone !== false) {
      void cur?.sandbox.then((s) => s.close()).catch(() => undefined);
      cur = { socket, workerId, sandbox: HostedSandbox.connect(socket, workerId) };
      this.current = cur;
      const attempt = cur;
      attempt.sandbox.catch(() => {
        if (this.current === attempt) this.current = undefined;
      });
    }
    const sandbox = await cur.sandbox;
    const worker: FileWorker = {
      manifest,
      database: sandbox.database,
      sandbox,
      // The clients the host closes are in this process: its closing guard goes around the call.
      endFile: () => withClosingGuard(() => sandbox.endFile()),
    };
    return { thread: () => sandbox, attach: async () => worker };
  }
}

/** This process's (this thread's) connection to its run's sandbox host. */
export const processHosted = new HostedWorkers();
