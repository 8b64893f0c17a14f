/**
 * The sandboxes of a run's workers, hosted by the runner's main process (Vitest's, where the
 * global setup runs): one per worker id, started on first use and kept for the whole run, each on
 * its own thread. A test worker (under Vitest's isolation, a fresh process per test file) then
 * neither starts a sandbox thread nor connects upstream: it sends its boundaries here
 * (hosted.ts) and its clients connect to the sandbox's address. A blocked worker cannot stall a
 * sandbox, and a busy main thread only delays the answer to a boundary, never a client's queries.
 *
 * Messages of a connection are applied in the order they arrive; a request that takes time (the
 * file's begin and end, a test's end) is started in that order and answered when done. A worker
 * that goes away in the middle of a file (killed, crashed) has its file ended before the next
 * worker with its id gets the sandbox. Closed, upstream connections included, before the run is
 * torn down.
 */
import { rmSync } from 'node:fs';
import net from 'node:net';
import type { RunManifest } from '../run/manifest';
import { openRunSandbox, type RunSandbox } from './api';
import { serializeError } from '../util/errors';
import { listening } from '../proxy/listen';
import { hostSocket, lineReader, type HostMessage, type HostRequest, type Opened } from './host-protocol';

const noop = (): void => undefined;
/** Errors go to another process: with the stack of where they were raised. */
const serialized = (e: unknown) => serializeError(e, { stack: true });

export class SandboxHost {
  private readonly sandboxes = new Map<string, Promise<RunSandbox>>();
  private readonly sockets = new Set<net.Socket>();
  /** The connection whose file is open on each worker id. */
  private readonly owners = new Map<string, net.Socket>();
  private closing: Promise<void> | undefined;

  private constructor(
    private readonly manifest: RunManifest,
    private readonly server: net.Server,
  ) {
    server.on('connection', (socket) => this.serve(socket));
  }

  /** Listen on the run's host socket (hostSocket(runDir)); workers that find it use it. */
  static async start(manifest: RunManifest): Promise<SandboxHost> {
    const file = hostSocket(manifest.runDir);
    rmSync(file, { force: true });
    const server = net.createServer();
    await listening(server, (s) => s.listen(file));
    // Never what keeps the runner's main process alive.
    server.unref();
    return new SandboxHost(manifest, server);
  }

  /** Start worker `id`'s sandbox now, while the runner starts its workers (its first file then finds it listening). */
  prewarm(id: string): void {
    this.sandbox(id).catch(() => undefined);
  }

  /** The sandbox of worker `id` (started on first use; after a file its worker left open is ended). */
  private sandbox(id: string): Promise<RunSandbox> {
    let p = this.sandboxes.get(id);
    if (!p) {
      p = openRunSandbox(this.manifest, { workerId: id, unref: true });
      this.sandboxes.set(id, p);
      const opened = p;
      opened.catch(() => {
        if (this.sandboxes.get(id) === opened) this.sandboxes.delete(id);
      });
    }
    return p;
  }

  private serve(socket: net.Socket): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    this.sockets.add(socket);
    socket.unref();
    socket.setNoDelay(true);
    const send = (m: HostMessage): void => {
      if (!socket.destroyed) socket.write(JSON.stringify(m) + '\n');
    };
    let workerId: string | undefined;
    let rs: RunSandbox | undefined;
    // Applied one after the other: `open` waits for the sandbox, everything else is immediate.
    let queue = Promise.resolve();
    const answer = (id: number, p: Promise<unknown>): void => {
      p.then(
        (value) => send({ id, value }),
        (e: unknown) => send({ id, error: serialized(e) }),
      );
    };
    const handle = async (req: HostRequest): Promise<void> => {
      if (req.op === 'open') {
        workerId = req.workerId;
        try {
          rs = await this.sandbox(req.workerId);
        } catch (e) {
          send({ id: req.id, error: serialized(e) });
          return;
        }
        rs.sandbox.onLate = (problem) => send({ late: problem });
        const opened: Opened = { info: rs.info, database: rs.database };
        send({ id: req.id, value: opened });
        return;
      }
      const sb = rs?.sandbox;
      if (!rs || !sb || workerId === undefined) {
        send({ id: req.id, error: serialized(new Error('the sandbox host got a request before open')) });
        return;
      }
      switch (req.op) {
        case 'configure':
          return sb.configure(req.args);
        case 'currentFile':
          sb.currentFile = req.file;
          return;
        case 'expectFile':
          return sb.expectFile();
        case 'beginTest':
          return sb.beginTest(req.name);
        case 'enterHook':
          return sb.enterHook();
        case 'leaveHook':
          return sb.leaveHook();
        case 'sync':
          return send({ id: req.id, value: null });
        case 'beginFile': {
          // A file of this worker id still open by another connection: Vitest gave the pool id to
          // a new worker, the old one is stuck or gone. Its file ends first.
          const previous = this.owners.get(workerId);
          this.owners.set(workerId, socket);
          const left = rs;
          return answer(req.id, previous && previous !== socket ? left.endFileUnguarded().then(noop, noop).then(() => sb.beginFile()) : sb.beginFile());
        }
        case 'endTest':
          return answer(req.id, sb.endTest());
        case 'endFile':
          if (this.owners.get(workerId) === socket) this.owners.delete(workerId);
          return answer(req.id, rs.endFileUnguarded());
      }
    };
    socket.on(
      'data',
      lineReader<HostRequest>((req) => {
        queue = queue.then(() => handle(req));
      }),
    );
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.sockets.delete(socket);
      const left = rs;
      const id = workerId;
      if (!left || id === undefined || this.owners.get(id) !== socket || this.closing) return;
      // The worker went away in the middle of its file: end it (roll back, close its clients)
      // before the next worker with this id gets the sandbox.
      this.owners.delete(id);
      const ended = queue.then(() => left.endFileUnguarded()).then(
        () => left,
        () => left,
      );
      if (this.sandboxes.get(id) !== undefined) this.sandboxes.set(id, ended);
    });
  }

  /** Stop listening, drop the workers' connections, close every sandbox (its clients and upstream). Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.server.close();
      for (const s of this.sockets) s.destroy();
      this.sockets.clear();
      const all = [...this.sandboxes.values()];
      this.sandboxes.clear();
      await Promise.all(all.map((p) => p.then((rs) => rs.close()).catch(() => undefined)));
      rmSync(hostSocket(this.manifest.runDir), { force: true });
    })();
    return this.closing;
  }
}
