/** Helpers for the administrative side: pg connections (the template's build, worker databases) and queries over any Queryable (a pg.Client, or the run's own proxy/admin-client). */
import type { Client } from 'pg';
import { errors } from './errors';
import { ident } from './names';
import { sleep } from './text';

export const APP_NAME = 'jest-environment-pg';

/**
 * The pg driver, loaded on first use rather than with this module: loading it takes ≈ 60 ms (far
 * more on a busy machine), and a run's start loads it while its embedded server boots instead of
 * before anything can begin (see StartClusterOptions.meanwhile). Node caches it after that.
 *
 * When pg loads, it tells Node from Cloudflare Workers by `navigator.userAgent`, and where there is
 * no `navigator` (Node < 21) by creating a `Response`, which loads Node's whole fetch
 * implementation: about half of pg's load time, in every process that loads it (Jest's main
 * process, each worker that clones its database, the reaper). Node ≥ 21 has `navigator`; on older
 * ones it is defined for the duration of that synchronous require only, so nothing else (the
 * tests' own copy of pg runs in their own global) ever sees it.
 */
export function loadDriver(): typeof import('pg') {
  const g = globalThis as { navigator?: unknown };
  const lent = typeof g.navigator === 'undefined' && !Object.prototype.hasOwnProperty.call(g, 'navigator');
  if (lent) Object.defineProperty(g, 'navigator', { value: { userAgent: `Node.js/${process.versions.node}` }, configurable: true, writable: true });
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return require('pg') as typeof import('pg');
  } finally {
    if (lent) delete g.navigator;
  }
}

/**
 * What the administrative queries need of a connection: pg's `query(text, values)` and its rows.
 * A pg.Client is one; so is the run's own driver-free client (proxy/admin-client.ts).
 */
export interface Queryable {
  query<R = Record<string, unknown>>(text: string, values?: readonly unknown[]): Promise<{ rows: R[] }>;
}

export interface ConnectOptions {
  applicationName?: string;
  timeoutMs?: number;
  /** When it aborts (a setup step's bound), the connection is ended: what runs on it fails. */
  signal?: AbortSignal;
}

/** Connect, or throw JESTPG_SERVER_UNREACHABLE naming the (redacted) URL. */
export async function connect(url: string, opts: ConnectOptions = {}): Promise<Client> {
  const client = new (loadDriver().Client)({
    connectionString: url,
    application_name: opts.applicationName ?? `${APP_NAME} admin`,
    connectionTimeoutMillis: opts.timeoutMs ?? 10_000,
  });
  // An admin connection that dies (server stopped, backend terminated) must not crash the process.
  client.on('error', () => undefined);
  const signal = opts.signal;
  if (signal) {
    signal.throwIfAborted();
    const stop = () => void client.end().catch(() => undefined);
    signal.addEventListener('abort', stop, { once: true });
    client.once('end', () => signal.removeEventListener('abort', stop));
  }
  try {
    await client.connect();
  } catch (e) {
    await client.end().catch(() => undefined);
    if (signal?.aborted) throw signal.reason;
    throw errors.serverUnreachable(url, e);
  }
  return client;
}

/** Run `fn` with a fresh connection, always closed afterwards. */
export async function withClient<T>(url: string, fn: (c: Client) => Promise<T>, opts?: ConnectOptions): Promise<T> {
  const c = await connect(url, opts);
  try {
    return await fn(c);
  } catch (e) {
    throw opts?.signal?.aborted ? opts.signal.reason : e;
  } finally {
    await c.end().catch(() => undefined);
  }
}

/**
 * A pg client as a TextQuery (schema/clone.ts): every result's rows as text, NULL as null, none
 * of pg's type parsing.
 */
export function textQuery(c: Client): (sql: string) => Promise<(string | null)[][]> {
  const raw = { getTypeParser: () => (v: string) => v };
  return async (sql) => {
    const r = (await c.query({ text: sql, rowMode: 'array', types: raw } as never)) as unknown as { rows: (string | null)[][] } | { rows: (string | null)[][] }[];
    return Array.isArray(r) ? r.flatMap((x) => x.rows) : r.rows;
  };
}

/** server_version_num, e.g. 180004. */
export async function serverVersionNum(c: Queryable): Promise<number> {
  // (SHOW names its column server_version_num, not v: select it under the name we read.)
  const r = await c.query<{ v: string }>("SELECT current_setting('server_version_num') AS v");
  return Number(r.rows[0].v);
}

/** The same URL with another database name. */
export function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = '/' + encodeURIComponent(database);
  // A `dbname`/`database` query parameter would override the path in some drivers.
  u.searchParams.delete('dbname');
  u.searchParams.delete('database');
  return u.toString();
}

/** The database named by a URL (default: the user name, as libpq does). */
export function databaseOf(url: string): string {
  const u = new URL(url);
  const db = decodeURIComponent(u.pathname.replace(/^\//, ''));
  return db || decodeURIComponent(u.username) || 'postgres';
}

/** PG* variables for a URL, for child processes (migration commands). */
export function pgEnv(url: string): Record<string, string> {
  const u = new URL(url);
  const env: Record<string, string> = { DATABASE_URL: url, PGDATABASE: databaseOf(url) };
  const host = u.searchParams.get('host') ?? u.hostname;
  if (host) env.PGHOST = decodeURIComponent(host);
  if (u.port) env.PGPORT = u.port;
  if (u.username) env.PGUSER = decodeURIComponent(u.username);
  if (u.password) env.PGPASSWORD = decodeURIComponent(u.password);
  return env;
}

/** Terminate every backend connected to `dbs` except ours; returns how many. */
export async function terminateBackends(c: Queryable, dbs: string[]): Promise<number> {
  if (dbs.length === 0) return 0;
  const r = await c.query<{ ok: boolean }>(
    'SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE datname = ANY($1) AND pid <> pg_backend_pid()',
    [dbs],
  );
  return r.rows.filter((x) => x.ok).length;
}

/**
 * DROP DATABASE IF EXISTS, forcing out connections: `WITH (FORCE)` from Postgres 13,
 * terminate + retry below.
 */
export async function dropDatabase(c: Queryable, name: string, versionNum: number): Promise<void> {
  if (versionNum >= 130000) {
    await c.query(`DROP DATABASE IF EXISTS ${ident(name)} WITH (FORCE)`);
    return;
  }
  for (let attempt = 0; ; attempt++) {
    await terminateBackends(c, [name]);
    try {
      await c.query(`DROP DATABASE IF EXISTS ${ident(name)}`);
      return;
    } catch (e) {
      // 55006: object_in_use ("being accessed by other users"): a backend reconnected; try again.
      if ((e as { code?: string }).code !== '55006' || attempt >= 50) throw e;
      await sleep(20);
    }
  }
}
