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
import path from 'node:path';
import { parentPort, receiveMessageOnPort, workerData, type MessagePort } from 'node:worker_threads';
import { Sandbox } from '../proxy/sandbox';
import { serializeError } from '../util/errors';
import type { Control, Reply, ThreadData } from './thread-protocol';

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
}

/** Apply one control message to the sandbox (queued until it listens). */
function apply(t: ThreadState, c: Control): void {
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
  try {
    p = Promise.resolve(sb[method]());
  } catch (e) {
    p = Promise.reject(e);
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

/** The sandbox listens: tell the owner (shared memory for its synchronous hand-shake, then a message), apply what waited. */
function listening(t: ThreadState, sb: Sandbox): void {
  t.sandbox = sb;
  const bytes = Buffer.from(JSON.stringify(sb.info));
  const info = new Uint8Array(t.data.info);
  if (bytes.length <= info.length - 4) {
    new DataView(t.data.info).setUint32(0, bytes.length);
    info.set(bytes, 4);
  }
  Atomics.store(t.state, 1, 1);
  Atomics.notify(t.state, 1);
  t.port.postMessage({ type: 'listening', info: sb.info } satisfies Reply);
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

function main(): void {
  const data = workerData as ThreadData;
  const t: ThreadState = { data, port: parentPort!, state: new Int32Array(data.state), seen: 0, sandbox: undefined, queued: [], upstreamsDir: data.upstreamsDir };
  data.control.on('message', (c: Control) => {
    apply(t, c);
  });
  Sandbox.start({
    ...data.opts,
    pollControl: () => poll(t),
    onLate: (problem) => t.port.postMessage({ type: 'late', problem } satisfies Reply),
    onUpstream: (pid) => recordUpstream(t, pid),
  }).then(
    (sb) => listening(t, sb),
    (e) => failed(t, e),
  );
}


if (parentPort && (workerData as Partial<ThreadData> | undefined)?.control) main();
