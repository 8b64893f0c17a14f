/**
 * A small administrative client on the proxy's own protocol code (connect.ts, the framer): simple
 * queries, one at a time, rows as text (NULL as null). What the sandbox's own thread needs to
 * make sure its worker database exists before it connects to it, without the PostgreSQL driver
 * (whose load would cost every worker process tens of ms) and without the test's thread.
 */
import type net from 'node:net';
import { B, F } from './codes';
import { connect } from './connect';
import { Framer } from './framer';
import { query, readDataRow, readFields, readRowDescription } from './messages';

/** An error the server sent: its message, `code` its SQLSTATE. */
export class ServerError extends Error {
  constructor(
    message: string,
    readonly code: string | undefined,
  ) {
    super(message);
    this.name = 'ServerError';
  }
}

/** A query's rows as text (NULL as null), and the columns of its last result. */
export interface TextResult {
  columns: { name: string; type: number }[];
  rows: (string | null)[][];
}

export class SimpleClient {
  private readonly framer = new Framer();
  private current: { result: TextResult; error: Record<string, string> | undefined; resolve: (r: TextResult) => void; reject: (e: Error) => void } | undefined;
  private dead: Error | undefined;

  private constructor(private readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => this.framer.push(chunk, (buf, code, start, end) => this.onFrame(buf, code, start, end)));
    socket.on('error', (e) => this.die(e));
    socket.on('close', () => this.die(new Error('the connection closed')));
    socket.resume();
  }

  static async connect(url: string, applicationName: string, opts: { timeoutMs?: number } = {}): Promise<SimpleClient> {
    const c = await connect(url, { applicationName, ...opts });
    return new SimpleClient(c.socket);
  }

  /** Run `sql` (a simple query: no parameters, any number of statements); the rows of every result, as text. */
  async query(sql: string): Promise<(string | null)[][]> {
    return (await this.run(sql)).rows;
  }

  /** The same, with the columns of the last result (names and type OIDs). */
  run(sql: string): Promise<TextResult> {
    if (this.dead) return Promise.reject(this.dead);
    if (this.current) return Promise.reject(new Error('SimpleClient: one query at a time'));
    return new Promise((resolve, reject) => {
      this.current = { result: { columns: [], rows: [] }, error: undefined, resolve, reject };
      this.socket.write(query(sql));
    });
  }

  /** Call `f` once the connection is closed (at once if it is). */
  onClose(f: () => void): void {
    if (this.dead || this.socket.destroyed) return f();
    this.socket.once('close', f);
  }

  /** Whether the connection keeps the process alive. */
  ref(): void {
    this.socket.ref();
  }
  unref(): void {
    this.socket.unref();
  }

  /** Say goodbye and close. Never throws. */
  async end(): Promise<void> {
    if (this.dead) return;
    await new Promise<void>((resolve) => {
      this.socket.once('close', () => resolve());
      this.socket.end(Buffer.from([F.Terminate, 0, 0, 0, 4]));
      setTimeout(() => this.socket.destroy(), 2000).unref();
    });
  }

  private onFrame(buf: Buffer, code: number, start: number, end: number): void {
    const q = this.current;
    if (!q) return; // notices, parameter changes between queries
    if (code === B.DataRow) {
      q.result.rows.push(readDataRow(buf, start));
    } else if (code === B.RowDescription) {
      q.result.columns = readRowDescription(buf, start, end);
    } else if (code === B.ErrorResponse) {
      q.error ??= readFields(buf, start, end);
    } else if (code === B.ReadyForQuery) {
      this.current = undefined;
      if (q.error) q.reject(new ServerError(q.error.M ?? 'query failed', q.error.C));
      else q.resolve(q.result);
    }
  }

  private die(e: Error): void {
    if (this.dead) return;
    this.dead = e;
    const q = this.current;
    this.current = undefined;
    q?.reject(e);
  }
}
