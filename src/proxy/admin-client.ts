/**
 * The run's own administrative connections (the lease, the sweep, the teardown) without the
 * PostgreSQL driver: the proxy's wire client (simple-client.ts) behind the one method those
 * callers use, `query(text, values)`, with pg's results (`rows` as objects, pg's default parsing
 * of the types they read). Loading pg and its SCRAM exchange cost a run's start 30 ms and more;
 * this costs a few. Parameters are sent as SQL literals (our own statements: numbers, strings,
 * booleans, arrays of them), never as text spliced into the statement.
 */
import type { Queryable } from '../util/admin';
import { errors } from '../util/errors';
import { literal } from '../util/names';
import { SimpleClient, type TextResult } from './simple-client';

export class AdminClient implements Queryable {
  private constructor(private readonly c: SimpleClient) {}

  /**
   * Connect, or throw JESTPG_SERVER_UNREACHABLE naming the (redacted) URL. When `signal` aborts,
   * the connection is ended: what runs on it fails (with the signal's reason while connecting).
   */
  static async connect(url: string, opts: { applicationName: string; timeoutMs?: number; signal?: AbortSignal }): Promise<AdminClient> {
    const { signal } = opts;
    signal?.throwIfAborted();
    const attempt = SimpleClient.connect(url, opts.applicationName, { timeoutMs: opts.timeoutMs ?? 10_000 });
    let sc: SimpleClient;
    try {
      sc = await (signal ? abortable(attempt, signal) : attempt);
    } catch (e) {
      if (signal?.aborted) throw signal.reason;
      throw errors.serverUnreachable(url, e);
    }
    if (signal) {
      const stop = () => void sc.end();
      signal.addEventListener('abort', stop, { once: true });
      sc.onClose(() => signal.removeEventListener('abort', stop));
    }
    return new AdminClient(sc);
  }

  async query<R = Record<string, unknown>>(text: string, values: readonly unknown[] = []): Promise<{ rows: R[] }> {
    const r = await this.c.run(values.length ? bind(text, values) : text);
    return { rows: objects<R>(r) };
  }

  /** Say goodbye and close. Never throws. */
  end(): Promise<void> {
    return this.c.end();
  }

  /** Call `f` once the connection is closed, whoever closed it (at once if it is). */
  onClose(f: () => void): void {
    this.c.onClose(f);
  }

  /** Whether the connection keeps the process alive (the lease, held while Jest runs: not). */
  ref(): void {
    this.c.ref();
  }
  unref(): void {
    this.c.unref();
  }
}

/** The attempt's connection, or the signal's reason (the connection, if it comes later, is ended). */
function abortable(attempt: Promise<SimpleClient>, signal: AbortSignal): Promise<SimpleClient> {
  return new Promise<SimpleClient>((resolve, reject) => {
    const onAbort = () => {
      reject(signal.reason);
      attempt.then((c) => void c.end(), () => undefined);
    };
    signal.addEventListener('abort', onAbort, { once: true });
    attempt.then(
      (c) => {
        signal.removeEventListener('abort', onAbort);
        if (signal.aborted) return void c.end();
        resolve(c);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}

/**
 * `text` with its `$n` placeholders replaced by `values[n-1]` as literals. Placeholders are found
 * outside quoted strings and identifiers; a placeholder without a value is an error.
 */
export function bind(text: string, values: readonly unknown[]): string {
  let out = '';
  let i = 0;
  while (i < text.length) {
    const ch = text[i];
    if (ch === "'" || ch === '"') {
      // to the closing quote (a doubled quote stays inside)
      let j = i + 1;
      for (;;) {
        const k = text.indexOf(ch, j);
        if (k < 0) throw new Error(`unterminated ${ch} in: ${text}`);
        if (text[k + 1] === ch) {
          j = k + 2;
          continue;
        }
        j = k + 1;
        break;
      }
      out += text.slice(i, j);
      i = j;
    } else if (ch === '$' && /[0-9]/.test(text[i + 1] ?? '')) {
      let j = i + 1;
      while (/[0-9]/.test(text[j] ?? '')) j++;
      const n = Number(text.slice(i + 1, j));
      if (n < 1 || n > values.length) throw new Error(`no value for $${n} in: ${text}`);
      out += sqlValue(values[n - 1]);
      i = j;
    } else {
      out += ch;
      i++;
    }
  }
  return out;
}

/** A value as an SQL literal: NULL, a number, TRUE/FALSE, a quoted string, an ARRAY of them. */
export function sqlValue(v: unknown): string {
  if (v === null || v === undefined) return 'NULL';
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) throw new TypeError(`not a finite number: ${v}`);
    return String(v);
  }
  if (typeof v === 'bigint') return String(v);
  if (typeof v === 'boolean') return v ? 'TRUE' : 'FALSE';
  // With a backslash, the escape form: the same value whatever standard_conforming_strings is.
  if (typeof v === 'string') return v.includes('\\') ? 'E' + literal(v.replace(/\\/g, '\\\\')) : literal(v);
  if (Array.isArray(v)) return v.length ? `ARRAY[${v.map(sqlValue).join(', ')}]` : "'{}'";
  throw new TypeError(`cannot send a ${typeof v} as an SQL literal`);
}

/** Type OIDs pg parses by default, as pg does; every other type stays text. */
const BOOL = 16;
const NUMBERS = new Set([21, 23, 26, 700, 701]); // int2, int4, oid, float4, float8
const DATES = new Set([1114, 1184]); // timestamp, timestamptz
const JSON_TYPES = new Set([114, 3802]);

function parse(v: string | null, type: number): unknown {
  if (v === null) return null;
  if (type === BOOL) return v === 't';
  if (NUMBERS.has(type)) return Number(v);
  if (DATES.has(type)) return new Date(type === 1114 ? v.replace(' ', 'T') : v.replace(' ', 'T').replace(/([+-]\d\d)$/, '$1:00'));
  if (JSON_TYPES.has(type)) return JSON.parse(v) as unknown;
  return v;
}

function objects<R>(r: TextResult): R[] {
  const cols = r.columns;
  return r.rows.map((row) => {
    const o: Record<string, unknown> = {};
    for (let i = 0; i < cols.length; i++) o[cols[i].name] = parse(row[i], cols[i].type);
    return o as R;
  });
}
