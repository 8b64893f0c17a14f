/**
 * Virtual backends: every client of the sandbox is a backend of its own, as far as SQL can tell.
 *
 * The sandbox's connections to Postgres (the upstream, and the side connection used while the
 * upstream is busy) get a few temporary functions, created once per connection (they live in
 * its pg_temp schema, outside any transaction):
 *
 * - `pg_temp.pg_backend_pid(pid)` returns its argument: the client's `pg_backend_pid()` is
 *   rewritten to it with the client's own virtual pid (the one in its BackendKeyData).
 * - `pg_temp.pg_stat_activity()` returns the server's rows except the sandbox's own connections,
 *   plus one row per client, built from the upstream's row with the client's pid, state, query
 *   and times laid over it.
 * - `pg_temp.pg_terminate_backend(pid[, timeout])` / `pg_temp.pg_cancel_backend(pid)`: a virtual
 *   pid raises a marker notice the sandbox acts on (and swallows); the sandbox's own pids are
 *   "not a PostgreSQL backend process"; any other pid goes to Postgres' own function.
 *
 * What the functions know of the clients comes in one setting, `jestpg.b` (JSON), set in the same
 * message before a statement that needs it (never on the hot path: only statements naming
 * pg_stat_activity or a kill function).
 */
import type { Ref } from './sql';

/** The marker a kill function raises for a virtual pid: `jestpg:terminate:<pid>` / `jestpg:cancel:<pid>`. */
export const MARKER_CODE = '01JPG';
const MARKER = /^jestpg:(terminate|cancel):(\d+)$/;

export function readMarker(fields: Record<string, string>): { action: 'terminate' | 'cancel'; pid: number } | undefined {
  if (fields.C !== MARKER_CODE) return undefined;
  const m = MARKER.exec(fields.M ?? '');
  return m ? { action: m[1] as 'terminate' | 'cancel', pid: Number(m[2]) } : undefined;
}

const INTS = (key: string) =>
  `ARRAY(SELECT (e.value)::integer FROM pg_catalog.jsonb_array_elements_text(coalesce(nullif(pg_catalog.current_setting('jestpg.b', true), ''), '{}')::jsonb -> '${key}') e)`;

/**
 * pg_terminate_backend / pg_cancel_backend as a client sees them: a client's virtual pid raises the
 * marker (the sandbox acts on that client), a hidden pid (the sandbox's own connections) is no
 * backend, any other pid goes to Postgres (`rest`).
 */
function killFunction(action: 'terminate' | 'cancel', args: string, rest: string): string {
  return `CREATE FUNCTION pg_temp.pg_${action}_backend(${args}) RETURNS boolean LANGUAGE plpgsql VOLATILE AS $f$
BEGIN
  IF pid = ANY (pg_temp.jestpg_pids('p')) THEN
    RAISE NOTICE USING MESSAGE = 'jestpg:${action}:' || pid, ERRCODE = '${MARKER_CODE}';
    RETURN true;
  END IF;
  IF pid = ANY (pg_temp.jestpg_pids('h')) THEN
    RAISE WARNING 'PID % is not a PostgreSQL backend process', pid;
    RETURN false;
  END IF;
  ${rest}
END$f$;`;
}

/** Created on each connection of the sandbox at connect time (session-lifetime temporary objects). */
export const SETUP_SQL = `
CREATE FUNCTION pg_temp.pg_backend_pid(integer) RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS 'SELECT $1';
CREATE FUNCTION pg_temp.jestpg_pids(text) RETURNS integer[] LANGUAGE sql STABLE AS $f$SELECT CASE $1 WHEN 'p' THEN ${INTS('p')} ELSE ${INTS('h')} END$f$;
CREATE FUNCTION pg_temp.pg_stat_activity() RETURNS SETOF pg_catalog.pg_stat_activity LANGUAGE sql STABLE AS $f$
  SELECT a.* FROM pg_catalog.pg_stat_activity a
   WHERE a.pid <> ALL (pg_temp.jestpg_pids('h')) AND coalesce(a.application_name, '') NOT LIKE 'jest-environment-pg%'
  UNION ALL
  SELECT (pg_catalog.jsonb_populate_record(a, c.value)).*
    FROM pg_catalog.pg_stat_activity a,
         pg_catalog.jsonb_array_elements(coalesce(nullif(pg_catalog.current_setting('jestpg.b', true), ''), '{}')::jsonb -> 'c') c
   WHERE a.pid = (pg_temp.jestpg_pids('h'))[1]
$f$;
${killFunction('terminate', 'pid integer, timeout bigint DEFAULT 0', 'IF timeout = 0 THEN RETURN pg_catalog.pg_terminate_backend(pid); END IF;\n  RETURN pg_catalog.pg_terminate_backend(pid, timeout);')}
${killFunction('cancel', 'pid integer', 'RETURN pg_catalog.pg_cancel_backend(pid);')}
`;

/** A client as pg_stat_activity shows it. */
export interface VirtualRow {
  pid: number;
  application_name: string;
  backend_start: string;
  xact_start: string | null;
  query_start: string | null;
  state_change: string | null;
  state: string;
  query: string;
  wait_event_type: string | null;
  wait_event: string | null;
  client_addr: string | null;
  client_hostname: null;
  client_port: number;
  backend_xid: null;
  backend_xmin: null;
  leader_pid: null;
  query_id: null;
}

/**
 * The statement that hands the functions the sandbox's view: hidden pids (the upstream first, its
 * row is the base of every client's), the clients' pids and their rows. Dollar-quoted: '$' never
 * appears inside (escaped in the JSON).
 */
export function stateSql(hidden: number[], rows: VirtualRow[]): string {
  const json = JSON.stringify({ h: hidden, p: rows.map((r) => r.pid), c: rows }).replace(/\$/g, '\\u0024');
  return `SET jestpg.b = $j$${json}$j$`;
}

/** What each virtual-backend name becomes in the client's SQL. */
export function refText(ref: Ref, pid: number): string {
  switch (ref.kind) {
    case 'backendPid':
      return `pg_temp.pg_backend_pid(${pid})`;
    case 'statActivity':
      return 'pg_temp.pg_stat_activity()';
    case 'terminate':
      return 'pg_temp.pg_terminate_backend';
    case 'cancel':
      return 'pg_temp.pg_cancel_backend';
    default:
      throw new Error(`unknown reference ${(ref as Ref).kind}`);
  }
}
