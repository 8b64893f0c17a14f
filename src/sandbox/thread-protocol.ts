/**
 * What the test's thread (thread.ts) and the sandbox's own thread (thread-main.ts) exchange: the
 * thread's start data, control messages and replies (errors as util/errors' SerializedError). Kept apart from
 * thread-main.ts so that the owning side does not load the proxy, which only the sandbox thread runs.
 */
import type { MessagePort } from 'node:worker_threads';
import type { LateProblem, Sandbox, SandboxOptions } from '../proxy/sandbox';
import type { SerializedError } from '../util/errors';
import type { Boundary } from './boundaries';
import type { CloneSpec } from '../run/worker-clone';

/**
 * The worker database may not exist yet: the sandbox's thread makes sure it does (cloning it
 * from the template under its lock) before the next file opens on it, and notes it in the run dir.
 */
export interface CloneOrder {
  /** Where the thread connects to clone (the embedded cluster's unix socket when there is one). */
  adminUrl: string;
  spec: CloneSpec;
  /** The run dir, and the database's URL, for the note (run/known-databases.ts). */
  runDir: string;
  url: string;
}

export interface ThreadData {
  opts: Omit<SandboxOptions, 'onUpstream' | 'pollControl' | 'onLate'>;
  /** Where the backend pid of each upstream connection is recorded (teardown knows them as ours). */
  upstreamsDir?: string;
  /** The upstream database to make sure of first. */
  clone?: CloneOrder;
  /** [0]: control messages posted by the owner; [1]: the sandbox is listening (1) or failed (2). */
  state: SharedArrayBuffer;
  /** The listening address as JSON, for the owner's synchronous hand-shake. */
  info: SharedArrayBuffer;
  control: MessagePort;
}

export type Control =
  | Boundary
  | { op: 'setUpstream'; url: string; label?: string; upstreamsDir?: string; clone?: CloneOrder }
  | { op: 'call'; id: number; method: 'beginFile' | 'endTest' | 'endFile' | 'disconnect' | 'close' };

export type Reply =
  | { type: 'listening'; info: Sandbox['info'] }
  | { type: 'failed'; error: SerializedError }
  | { type: 'late'; problem: LateProblem }
  | { type: 'result'; id: number; value?: unknown; error?: SerializedError };
