/**
 * While the sandbox closes connections at the end of a file, the clients it closes may throw:
 * closing an idle pg.Pool's connections makes the pool emit 'error', and a pool without an
 * 'error' listener throws that error out of its socket's handler. Those errors are ours (the
 * sandbox's FATAL, or the end of the socket right after it) and must not kill the process; any
 * other uncaught error must reach whoever listens for it, exactly as without the guard.
 *
 * One handler goes in front of every `uncaughtException` listener (Node's capture callback, which
 * runs instead of emitting the event): ours are dropped, anything else is emitted to the listeners
 * that are there (Jest's included, never removed), or thrown again when there are none. Where the
 * capture callback is taken already (a domain, a REPL), a prepended listener only keeps the process
 * alive when nobody else listens; the other listeners then see our errors too.
 */
import { sleep } from '../util/text';

/** What the sandbox's end of a file makes a client throw: recognised by SQLSTATE and our code, not by wording alone. */
export function closedBySandbox(e: unknown): boolean {
  if (typeof e !== 'object' || e === null) return false;
  const { code, message, context } = e as { code?: unknown; message?: unknown; context?: unknown };
  // An 'error' event nobody listens to, whose error is not an Error of this realm (a test's pool
  // runs in Jest's vm context): Node throws ERR_UNHANDLED_ERROR with the emitted error as its context.
  if (code === 'ERR_UNHANDLED_ERROR') return closedBySandbox(context);
  const msg = typeof message === 'string' ? message : '';
  // Our FATAL at the end of a file (57P01, "JESTPG_FILE_ENDED: …"; thrown in a worker thread, the
  // error reaches this thread without its code), or a backend that went around the sandbox,
  // terminated by the end-of-file check (Postgres' own 57P01).
  if (code === '57P01' || code === undefined) {
    if (msg.startsWith('JESTPG_FILE_ENDED: ')) return true;
    if (code === '57P01') return msg === 'terminating connection due to administrator command';
  }
  // node-postgres when the socket ends before it read the FATAL.
  return code === undefined && msg === 'Connection terminated unexpectedly';
}

function passOn(err: unknown): void {
  if (process.listenerCount('uncaughtException') > 0) {
    process.emit('uncaughtException', err, 'uncaughtException');
    return;
  }
  // Nobody listens: the process ends with it, as it would have without the guard.
  process.setUncaughtExceptionCaptureCallback(null);
  process.nextTick(() => {
    throw err;
  });
}

export async function withClosingGuard<T extends { open: unknown[]; foreign?: unknown[]; idle?: number }>(fn: () => Promise<T>): Promise<T> {
  let captured = false;
  const capture = (err: unknown) => {
    if (!closedBySandbox(err)) passOn(err);
  };
  const prepended = () => undefined;
  try {
    process.setUncaughtExceptionCaptureCallback(capture);
    captured = true;
  } catch {
    process.prependListener('uncaughtException', prepended);
  }
  let closedSome = true;
  try {
    const report = await fn();
    closedSome = report.open.length > 0 || (report.idle ?? 0) > 0 || (report.foreign?.length ?? 0) > 0;
    return report;
  } finally {
    // Let the clients read the FATAL and their sockets' end before handing errors back
    // (only when the sandbox closed connections: a clean file costs nothing here).
    if (closedSome) {
      for (let i = 0; i < 3; i++) await new Promise((r) => setImmediate(r));
      await sleep(5);
    }
    if (captured) process.setUncaughtExceptionCaptureCallback(null);
    else process.removeListener('uncaughtException', prepended);
  }
}
