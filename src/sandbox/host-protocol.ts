/**
 * The wire between a runner's test workers and the sandboxes their main process hosts
 * (host.ts, hosted.ts): one JSON object per line over a unix socket in the run's directory. A
 * worker sends requests `{ id, op, … }`; the host answers each, in order, with `{ id, value }` or
 * `{ id, error }`, and sends `{ late }` as a query runs between tests (before the answer of the
 * endTest/endFile that follows it). Boundaries are applied in the order they arrive, so an answer
 * means every boundary sent before the request is in effect.
 */
import path from 'node:path';
import type { ConnectionInfo, LateProblem } from '../proxy/sandbox';
import type { SerializedError } from '../util/errors';
import type { Boundary } from './boundaries';

export type HostRequest = { id: number } & (Boundary | { op: 'open'; workerId: string } | { op: 'sync' | 'beginFile' | 'endTest' | 'endFile' });

type WithoutId<T> = T extends unknown ? Omit<T, 'id'> : never;
/** A request as the worker writes it (the id is added when sent). */
export type HostCall = WithoutId<HostRequest>;

export interface Opened {
  info: ConnectionInfo;
  database: string;
}

export type HostMessage = { id: number; value?: unknown; error?: SerializedError } | { late: LateProblem };

/** Where the host of a run listens (the run's directory is private to its user). */
export function hostSocket(runDir: string): string {
  return path.join(runDir, 'host.sock');
}

/** Split a stream of lines into parsed objects. */
export function lineReader<T>(onMessage: (m: T) => void): (chunk: Buffer) => void {
  let buf = '';
  return (chunk) => {
    buf += chunk.toString('utf8');
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line) onMessage(JSON.parse(line) as T);
    }
  };
}
