/**
 * The moving clock, installed into the template once its migrations ran (superuser only: it
 * replaces two functions of pg_catalog in that database, never on the server as a whole):
 * - now() and transaction_timestamp() return the time the client's transaction began (the
 *   sandbox records it at the client's BEGIN, as a transaction-local setting, and clears it at
 *   COMMIT; a rollback clears it by itself), else the statement's own time;
 * - procedures jestpg_begin()/jestpg_end() that the sandbox calls for BEGIN/COMMIT;
 * - column defaults and SQL/PL/pgSQL function bodies that use CURRENT_TIMESTAMP, LOCALTIMESTAMP,
 *   CURRENT_DATE, CURRENT_TIME or LOCALTIME (SQL syntax, not function calls) are rewritten onto
 *   now(). Client SQL is rewritten the same way by the sandbox (src/util/sql-clock.ts).
 * Everything else keeps Postgres' own clock: statement_timestamp(), clock_timestamp(),
 * timeofday().
 */
import type pg from 'pg';
import { clockRewrite } from '../util/sql-clock';
import { ident } from '../util/names';

/**
 * Microseconds since the epoch, exactly (no text round trip through DateStyle/TimeZone). One
 * expression, no FROM: Postgres inlines it wherever now() is planned (client SQL, defaults,
 * PL/pgSQL); a call that is not inlined would reach the built-in function by its OID.
 */
const NOW_BODY = `SELECT CASE WHEN pg_catalog.current_setting('jestpg.now', true) <> ''
  THEN 'epoch'::pg_catalog.timestamptz + pg_catalog.current_setting('jestpg.now', true)::pg_catalog.int8 * '1 microsecond'::pg_catalog.interval
  ELSE pg_catalog.statement_timestamp() END`;

const INSTALL = `
CREATE OR REPLACE FUNCTION pg_catalog.now() RETURNS timestamptz LANGUAGE sql STABLE PARALLEL SAFE AS $jestpg$${NOW_BODY}$jestpg$;
CREATE OR REPLACE FUNCTION pg_catalog.transaction_timestamp() RETURNS timestamptz LANGUAGE sql STABLE PARALLEL SAFE AS $jestpg$${NOW_BODY}$jestpg$;
CREATE OR REPLACE PROCEDURE pg_catalog.jestpg_begin() LANGUAGE sql AS $jestpg$
  SELECT pg_catalog.set_config('jestpg.now', (EXTRACT(epoch FROM pg_catalog.statement_timestamp()) * 1000000)::pg_catalog.int8::text, true)
$jestpg$;
CREATE OR REPLACE PROCEDURE pg_catalog.jestpg_end() LANGUAGE sql AS $jestpg$ SELECT pg_catalog.set_config('jestpg.now', '', true) $jestpg$;
`;

export interface ClockResult {
  installed: boolean;
  /** Why not, or what was rewritten. */
  note: string;
}

/** Install the moving clock into the database `c` is connected to (the template being built). */
export async function installMovingClock(c: pg.Client): Promise<ClockResult> {
  const su = await c.query<{ s: boolean }>('SELECT rolsuper AS s FROM pg_catalog.pg_roles WHERE rolname = current_user');
  if (!su.rows[0]?.s) return { installed: false, note: 'the role is not a superuser, so now() stays the file transaction\'s time' };
  await c.query(INSTALL);
  const defaults = await c.query<{ rel: string; col: string; expr: string }>(
    `SELECT d.adrelid::pg_catalog.regclass::text AS rel, a.attname AS col, pg_catalog.pg_get_expr(d.adbin, d.adrelid) AS expr
       FROM pg_catalog.pg_attrdef d
       JOIN pg_catalog.pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
       JOIN pg_catalog.pg_class c ON c.oid = d.adrelid
       JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND a.attgenerated = ''`,
  );
  let columns = 0;
  for (const r of defaults.rows) {
    const moved = clockRewrite(r.expr);
    if (moved === r.expr) continue;
    await c.query(`ALTER TABLE ${r.rel} ALTER COLUMN ${ident(r.col)} SET DEFAULT ${moved}`);
    columns++;
  }
  // Function bodies (not extensions' own): the text PL/pgSQL and SQL functions are compiled from.
  const fns = await c.query<{ oid: number; src: string }>(
    `SELECT p.oid::int AS oid, p.prosrc AS src
       FROM pg_catalog.pg_proc p
       JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
       JOIN pg_catalog.pg_language l ON l.oid = p.prolang
      WHERE l.lanname IN ('plpgsql', 'sql') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
        AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend e WHERE e.classid = 'pg_catalog.pg_proc'::regclass AND e.objid = p.oid AND e.deptype = 'e')`,
  );
  let bodies = 0;
  for (const f of fns.rows) {
    const moved = clockRewrite(f.src);
    if (moved === f.src) continue;
    await c.query('UPDATE pg_catalog.pg_proc SET prosrc = $1 WHERE oid = $2', [moved, f.oid]);
    bodies++;
  }
  return { installed: true, note: `${columns} column default${columns === 1 ? '' : 's'} and ${bodies} function bod${bodies === 1 ? 'y' : 'ies'} moved onto now()` };
}
