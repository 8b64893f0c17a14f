/**
 * The sandbox's own thread (a worker_thread per Jest worker or standalone sandbox). The proxy
 * lives here so that a test that blocks its thread — `execFileSync` of a child that queries,
 * `Atomics.wait`, seconds of CPU — never stalls the clients the sandbox serves.
 *
 * Control arrives from the owning thread (src/sandbox/thread.ts) as messages on a private port.
 * Boundaries must apply before any client byte that was sent after them, so the owner bumps a
 * counter in shared memory after each post, and the sandbox drains the port synchronously
 * (receiveMessageOnPort) whenever that counter moved before it judges a client's scope: a
 * query sent right after `beginTest` always belongs to that test, whatever the machine's load.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import type net from 'node:net';
import path from 'node:path';
import { parentPort, receiveMessageOnPort, workerData, type MessagePort } from 'node:worker_threads';
import { listen, type ConnectionInfo } from '../proxy/listen';
import type { LateProblem, Sandbox } from '../proxy/sandbox';
import { errors, serializeError } from '../util/errors';
import type { CloneOrder, Control, Reply, ThreadData } from './thread-protocol';
import { ensureCloned } from '../run/worker-clone';
import { noteWorkerDatabaseIn } from '../run/known-databases';

/** The thread's state: its control channel, the sandbox once it listens, control queued before that. */
interface ThreadState {
  data: ThreadData;
  port: MessagePort;
  /** The shared counters (see ThreadData.state). */
  state: Int32Array;
  /** The control counter's value when the port was last drained. */
  seen: number;
  sandbox: Sandbox | undefined;
  queued: Control[];
  upstreamsDir: string | undefined;
  /**
   * The worker database to make sure of (a CloneOrder) and the attempt under way: the next
   * beginFile waits for it; one that fails it is retried by the beginFile after.
   */
  ensuring: { order: CloneOrder; attempt: Promise<void> | undefined } | undefined;
}

/** Apply one control message to the sandbox (queued until it listens). */
function apply(t: ThreadState, c: Control): void {
  if (c.op === 'setUpstream' && c.clone) {
    // Needs no sandbox: started at once (a prewarmed or just-started thread clones meanwhile).
    ensure(t, c.clone);
    c = { ...c, clone: undefined };
  }
  const sandbox = t.sandbox;
  if (!sandbox) {
    t.queued.push(c);
    return;
  }
  switch (c.op) {
    case 'configure':
      sandbox.configure(c.args);
      return;
    case 'currentFile':
      sandbox.currentFile = c.file;
      return;
    case 'beginTest':
      sandbox.beginTest(c.name);
      return;
    case 'enterHook':
      sandbox.enterHook();
      return;
    case 'expectFile':
      sandbox.expectFile();
      return;
    case 'setUpstream':
      if (c.upstreamsDir) t.upstreamsDir = c.upstreamsDir;
      sandbox.setUpstream(c.url, c.label);
      return;
    case 'leaveHook':
      sandbox.leaveHook();
      return;
    case 'call':
      call(t, sandbox, c.id, c.method);
      return;
  }
}

/** Start a sandbox method synchronously (in control order); its result goes back when it settles. */
function call(t: ThreadState, sb: Sandbox, id: number, method: Extract<Control, { op: 'call' }>['method']): void {
  let p: Promise<unknown>;
  const e = method === 'beginFile' ? t.ensuring : undefined;
  if (e) {
    // The file opens on its database once that exists.
    p = (e.attempt ??= cloneOnce(e.order)).then(
      () => {
        if (t.ensuring === e) t.ensuring = undefined;
        return sb.beginFile();
      },
      (err: unknown) => {
        e.attempt = undefined;
        throw err;
      },
    );
  } else if (method === 'close' && t.ensuring?.attempt) {
    // A clone under way finishes first: its database must exist (or not) before the teardown
    // lists the run's databases, never appear after it.
    p = t.ensuring.attempt.then(
      () => sb.close(),
      () => sb.close(),
    );
  } else {
    try {
      p = Promise.resolve(sb[method]());
    } catch (e) {
      p = Promise.reject(e);
    }
  }
  p.then(
    (value) => t.port.postMessage({ type: 'result', id, value: method === 'endTest' || method === 'endFile' ? value : undefined } satisfies Reply),
    (e) => t.port.postMessage({ type: 'result', id, error: serializeError(e) } satisfies Reply),
  );
  if (method === 'close') {
    void p.finally(() => {
      t.data.control.close();
    });
  }
}

/** Apply every control message posted so far, in order. Cheap when nothing moved (one atomic load). */
function poll(t: ThreadState): void {
  const now = Atomics.load(t.state, 0);
  if (now === t.seen) return;
  t.seen = now;
  for (let m = receiveMessageOnPort(t.data.control); m; m = receiveMessageOnPort(t.data.control)) apply(t, m.message as Control);
}

/** Make sure of the worker database `order` names, starting now (see cloneOnce). */
function ensure(t: ThreadState, order: CloneOrder): void {
  const attempt = cloneOnce(order);
  attempt.catch(() => undefined); // said by the beginFile that waits for it
  t.ensuring = { order, attempt };
}

/**
 * Make sure the worker database exists (cloned from the template under its lock, see
 * run/worker-clone.ts), over an admin connection of the proxy's own client, then note it in the
 * run dir.
 */
async function cloneOnce(order: CloneOrder): Promise<void> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { SimpleClient } = require('../proxy/simple-client') as typeof import('../proxy/simple-client');
  let c: import('../proxy/simple-client').SimpleClient;
  try {
    c = await SimpleClient.connect(order.adminUrl, 'jest-environment-pg clone');
  } catch (e) {
    throw errors.serverUnreachable(order.adminUrl, e);
  }
  try {
    await ensureCloned((sql) => c.query(sql), order.spec);
  } catch (e) {
    throw new Error(`jest-environment-pg: making the worker database ${order.spec.name} (a clone of ${order.spec.template}) failed: ${(e as Error).message}`, { cause: e });
  } finally {
    await c.end();
  }
  noteWorkerDatabaseIn(order.runDir, { name: order.spec.name, url: order.url });
}

/** Record an upstream connection's backend pid in the run dir (teardown knows it as ours). */
function recordUpstream(t: ThreadState, pid: number): void {
  if (!t.upstreamsDir) return;
  try {
    mkdirSync(t.upstreamsDir, { recursive: true, mode: 0o700 });
    writeFileSync(path.join(t.upstreamsDir, String(pid)), '');
  } catch {
    // the run dir is gone (teardown): nothing to record
  }
}

/** The sockets listen: tell the owner where (shared memory for its synchronous hand-shake, then a message). */
function announce(t: ThreadState, info: ConnectionInfo): void {
  const bytes = Buffer.from(JSON.stringify(info));
  const buf = new Uint8Array(t.data.info);
  if (bytes.length <= buf.length - 4) {
    new DataView(t.data.info).setUint32(0, bytes.length);
    buf.set(bytes, 4);
  }
  Atomics.store(t.state, 1, 1);
  Atomics.notify(t.state, 1);
  t.port.postMessage({ type: 'listening', info } satisfies Reply);
}

/** The sandbox exists: apply the control that waited for it, in order. */
function ready(t: ThreadState, sb: Sandbox): void {
  t.sandbox = sb;
  for (const c of t.queued.splice(0)) apply(t, c);
  poll(t);
}

/** The sandbox could not start: tell the owner and stop listening for control. */
function failed(t: ThreadState, e: unknown): void {
  Atomics.store(t.state, 1, 2);
  Atomics.notify(t.state, 1);
  t.port.postMessage({ type: 'failed', error: serializeError(e) } satisfies Reply);
  t.data.control.close();
}

/**
 * Listen first and say where (the test's thread waits for that, blocked, in a Jest
 * environment's constructor), then load the proxy (tens of ms of modules) while the test's
 * thread goes on. A client that connects meanwhile waits in `pending`, its bytes in its socket,
 * until the sandbox takes it, after the control posted before it.
 */
async function start(t: ThreadState): Promise<void> {
  const pending: [net.Socket, boolean][] = [];
  const early = await listen(t.data.opts, (s, viaUnix) => (t.sandbox ? t.sandbox.accept(s, viaUnix) : pending.push([s, viaUnix])));
  announce(t, early.info);
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { Sandbox } = require('../proxy/sandbox') as typeof import('../proxy/sandbox');
  const opts = {
    ...t.data.opts,
    pollControl: () => poll(t),
    onLate: (problem: LateProblem) => t.port.postMessage({ type: 'late', problem } satisfies Reply),
    onUpstream: (pid: number) => recordUpstream(t, pid),
  };
  // The control posted so far applies before the first client is taken.
  ready(t, Sandbox.adopt(opts, early));
  for (const [s, viaUnix] of pending.splice(0)) t.sandbox!.accept(s, viaUnix);
}

function main(): void {
  const data = workerData as ThreadData;
  const t: ThreadState = { data, port: parentPort!, state: new Int32Array(data.state), seen: 0, sandbox: undefined, queued: [], upstreamsDir: data.upstreamsDir, ensuring: undefined };
  if (data.clone) ensure(t, data.clone);
  data.control.on('message', (c: Control) => {
    apply(t, c);
  });
  start(t).catch((e: unknown) => {
    if (Atomics.load(t.state, 1) === 0) return failed(t, e);
    // Listening was announced, then the proxy could not load: nothing can serve the clients; end
    // the thread (the owner fails what waits for it, naming the thread's exit).
    process.stderr.write(`jest-environment-pg: the sandbox thread could not start: ${(e as Error)?.stack ?? String(e)}\n`);
    process.exit(1);
  });
}


if (parentPort && (workerData as Partial<ThreadData> | undefined)?.control) main();
