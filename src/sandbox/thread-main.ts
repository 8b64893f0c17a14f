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
import { Sandbox, type LateProblem, type SandboxOptions } from '../proxy/sandbox';
import { JestPgError, messageOf, type ErrorCode } from '../util/errors';

export interface ThreadData {
  opts: Omit<SandboxOptions, 'onUpstream' | 'pollControl' | 'onLate'>;
  /** Where the backend pid of each upstream connection is recorded (teardown knows them as ours). */
  upstreamsDir?: string;
  /** [0]: control messages posted by the owner; [1]: the sandbox is listening (1) or failed (2). */
  state: SharedArrayBuffer;
  /** The listening address as JSON, for the owner's synchronous hand-shake. */
  info: SharedArrayBuffer;
  control: MessagePort;
}

export type Control =
  | { op: 'configure'; args: Parameters<Sandbox['configure']>[0] }
  | { op: 'currentFile'; file: string }
  | { op: 'beginTest'; name: string }
  | { op: 'enterHook' }
  | { op: 'expectFile' }
  | { op: 'setUpstream'; url: string; label?: string; upstreamsDir?: string }
  | { op: 'leaveHook' }
  | { op: 'call'; id: number; method: 'beginFile' | 'endTest' | 'endFile' | 'disconnect' | 'close' };

export type Reply =
  | { type: 'listening'; info: Sandbox['info'] }
  | { type: 'failed'; error: SerializedError }
  | { type: 'late'; problem: LateProblem }
  | { type: 'result'; id: number; value?: unknown; error?: SerializedError };

export interface SerializedError {
  code?: string;
  message: string;
  sqlState?: string;
}

export function serializeError(e: unknown): SerializedError {
  const x = e as { code?: string; sqlState?: string };
  return { code: typeof x?.code === 'string' ? x.code : undefined, message: messageOf(e), sqlState: x?.sqlState };
}

function main(): void {
  const data = workerData as ThreadData;
  const port = parentPort!;
  const state = new Int32Array(data.state);
  let seen = 0;
  let sandbox: Sandbox | undefined;
  const queued: Control[] = [];

  const apply = (c: Control): void => {
    if (!sandbox) {
      queued.push(c);
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
        if (c.upstreamsDir) upstreamsDir = c.upstreamsDir;
        sandbox.setUpstream(c.url, c.label);
        return;
      case 'leaveHook':
        sandbox.leaveHook();
        return;
      case 'call':
        call(sandbox, c.id, c.method);
        return;
    }
  };
  const call = (sb: Sandbox, id: number, method: Extract<Control, { op: 'call' }>['method']): void => {
    // Started synchronously (in control order); the result goes back when it settles.
    let p: Promise<unknown>;
    try {
      p = Promise.resolve(sb[method]());
    } catch (e) {
      p = Promise.reject(e);
    }
    p.then(
      (value) => port.postMessage({ type: 'result', id, value: method === 'endTest' || method === 'endFile' ? value : undefined } satisfies Reply),
      (e) => port.postMessage({ type: 'result', id, error: serializeError(e) } satisfies Reply),
    );
    if (method === 'close') {
      void p.finally(() => {
        data.control.close();
      });
    }
  };
  /** Apply every control message posted so far, in order. Cheap when nothing moved (one atomic load). */
  const poll = (): void => {
    const now = Atomics.load(state, 0);
    if (now === seen) return;
    seen = now;
    for (let m = receiveMessageOnPort(data.control); m; m = receiveMessageOnPort(data.control)) apply(m.message as Control);
  };
  data.control.on('message', (c: Control) => {
    apply(c);
  });

  let upstreamsDir = data.upstreamsDir;
  Sandbox.start({
    ...data.opts,
    pollControl: poll,
    onLate: (problem) => port.postMessage({ type: 'late', problem } satisfies Reply),
    onUpstream: (pid) => {
      if (!upstreamsDir) return;
      try {
        mkdirSync(upstreamsDir, { recursive: true, mode: 0o700 });
        writeFileSync(path.join(upstreamsDir, String(pid)), '');
      } catch {
        // the run dir is gone (teardown): nothing to record
      }
    },
  }).then(
    (sb) => {
      sandbox = sb;
      const bytes = Buffer.from(JSON.stringify(sb.info));
      const info = new Uint8Array(data.info);
      if (bytes.length <= info.length - 4) {
        new DataView(data.info).setUint32(0, bytes.length);
        info.set(bytes, 4);
      }
      Atomics.store(state, 1, 1);
      Atomics.notify(state, 1);
      port.postMessage({ type: 'listening', info: sb.info } satisfies Reply);
      for (const c of queued.splice(0)) apply(c);
      poll();
    },
    (e) => {
      Atomics.store(state, 1, 2);
      Atomics.notify(state, 1);
      port.postMessage({ type: 'failed', error: serializeError(e) } satisfies Reply);
      data.control.close();
    },
  );
}

export function reviveError(e: SerializedError): Error {
  if (e.code && e.code.startsWith('JESTPG_')) return new JestPgError(e.code as ErrorCode, e.message, e.sqlState);
  const err = new Error(e.message);
  if (e.code) (err as { code?: string }).code = e.code;
  return err;
}

if (parentPort && (workerData as Partial<ThreadData> | undefined)?.control) main();
