/**
 * The SQL and frames a session sends besides the client's own: the guard savepoint around each
 * cycle, what transaction control becomes, the statements that restore settings, refuse a
 * statement or drop a client's names. Pure: no state, built once where they are constant.
 */
import { F } from './codes';
import * as m from './messages';
import type { Statement } from './sql';
import type { JestPgError } from '../util/errors';
import { literal as lit } from '../util/names';

/** A client message as the framer delivers it: the buffer, its type, its start and end in the buffer. */
export type Frame = [Buffer, number, number, number];

export const GUARD = 'jestpg_guard';
export const NOOP = "SET LOCAL jestpg.noop = ''";
/** A client transaction's time begins / ends (procedures the template got: src/schema/clock.ts). */
export const CLOCK_BEGIN = 'CALL pg_catalog.jestpg_begin()';
export const CLOCK_END = 'CALL pg_catalog.jestpg_end()';
export const ROLLBACK_GUARD = `ROLLBACK TO SAVEPOINT ${GUARD}`;
export const warn = (text: string) => `DO $jestpg$BEGIN RAISE WARNING USING MESSAGE = '${text}', ERRCODE = '25001'; END$jestpg$`;
export const WARN_IN_TX = warn('there is already a transaction in progress');
export const WARN_NO_TX = warn('there is no transaction in progress');
export const GUARD_OPEN_SQL = `SAVEPOINT ${GUARD};\n`;
export const GUARD_RENEW_SQL = `RELEASE SAVEPOINT ${GUARD}; SAVEPOINT ${GUARD};\n`;
export const guardOpenFrame = m.query(GUARD_OPEN_SQL);
/** Move a clean guard forward past the work of the cycles before: one message, two statements. */
export const guardRenewFrame = m.query(GUARD_RENEW_SQL);
/** Undo a failed cycle; the guard stays, clean, for the next one. */
export const guardRollbackFrame = m.query(`ROLLBACK TO SAVEPOINT ${GUARD}`);
/** End the guard of a cycle that ran inside another client's transaction (kept / undone). */
export const guardReleaseFrame = m.query(`RELEASE SAVEPOINT ${GUARD}`);
export const guardUndoFrame = m.query(`ROLLBACK TO SAVEPOINT ${GUARD}; RELEASE SAVEPOINT ${GUARD}`);

/** Reads leave nothing a rollback could take away; anything else might be a write. */
const READS = /^\s*(select|show|values|table|explain|fetch|declare|set|reset|discard|deallocate|prepare|execute|listen|unlisten|notify|begin|start|commit|end|rollback|savepoint|release)\b/i;
export const isWrite = (sql: string) => !READS.test(sql.replace(/^(\s*(--[^\n]*\n|\/\*[\s\S]*?\*\/))*/, ''));

/** Tags of the statements the sandbox put before the client's (dropped), by their number. */
export const DROPS: (string | null | undefined)[][] = [[], [null], [null, null], [null, null, null]];

/** The SQL a cycle starts with (for reports). */
export function frameSql([buf, code, start, end]: Frame): string {
  if (code === F.Query) return m.readCString(buf, start + 5, end)[0];
  if (code === F.Parse) return m.readCString(buf, m.readCString(buf, start + 5, end)[1], end)[0];
  return '(extended protocol)';
}

/** A statement that fails with this error when executed (its message in a dollar-quoted literal). */
export function raising(err: JestPgError): string {
  const q = (text: string) => `$m$${text.replace(/\$jestpg\$/g, '').replace(/\$m\$/g, '')}$m$`;
  const extra = (err.detail ? `, DETAIL = ${q(err.detail)}` : '') + (err.hint ? `, HINT = ${q(err.hint)}` : '');
  return `DO $jestpg$BEGIN RAISE EXCEPTION USING MESSAGE = ${q(wireMessage(err))}${extra}, ERRCODE = '${err.sqlState}'; END$jestpg$`;
}

/**
 * Fire the checks of deferred constraints now (SET CONSTRAINTS ALL IMMEDIATE does, retroactively),
 * then put every constraint's mode back to its own default for what follows in the file's
 * transaction (deferred, except those declared INITIALLY IMMEDIATE).
 */
export const FIRE_DEFERRED =
  `DO $jestpg$DECLARE r record; BEGIN SET CONSTRAINTS ALL IMMEDIATE; SET CONSTRAINTS ALL DEFERRED; ` +
  `FOR r IN SELECT pg_catalog.format('%I.%I', n.nspname, c.conname) AS name FROM pg_catalog.pg_constraint c JOIN pg_catalog.pg_namespace n ON n.oid = c.connamespace ` +
  `WHERE c.condeferrable AND NOT c.condeferred AND c.contype IN ('f', 'u', 'p', 'x', 't') LOOP EXECUTE 'SET CONSTRAINTS ' || r.name || ' IMMEDIATE'; END LOOP; END$jestpg$`;

/** Statements that begin or end a client's transaction (or prepare or finish a two-phase one). */
export function isTxControl(s: Statement): boolean {
  switch (s.kind) {
    case 'begin':
    case 'commit':
    case 'rollback':
    case 'prepareTx':
    case 'commitPrepared':
    case 'rollbackPrepared':
      return true;
    default:
      return false;
  }
}

/** DEALLOCATE every prepared statement whose name starts with `prefix` (one client's). */
export function deallocateAll(prefix: string): string {
  return (
    `DO $jestpg$DECLARE r record; BEGIN FOR r IN SELECT name FROM pg_catalog.pg_prepared_statements WHERE pg_catalog.starts_with(name, ${lit(prefix)}) ` +
    `LOOP EXECUTE 'DEALLOCATE ' || pg_catalog.quote_ident(r.name); END LOOP; END$jestpg$`
  );
}

/** Put settings changed with SET LOCAL back to their session values, for the rest of the file's transaction. */
export function resetLocals(names: ReadonlySet<string>): string {
  const list = [...names].map((n) => lit(n)).join(', ');
  // Custom settings (app.user_id) are not in pg_settings: their session value is ''.
  return (
    `DO $jestpg$BEGIN PERFORM pg_catalog.set_config(n, coalesce((SELECT s.reset_val FROM pg_catalog.pg_settings s WHERE s.name = n), ''), true) ` +
    `FROM unnest(ARRAY[${list}]::text[]) AS n; END$jestpg$`
  );
}

/**
 * RESET ALL, then each setting in its own exception block: a bad value is ignored instead of
 * aborting the file's transaction (a real server would have refused the connection).
 */
export function settingsSql(settings: [string, string][]): string {
  return (
    'DO $jestpg$BEGIN RESET ALL; ' +
    settings.map(([k, v]) => `BEGIN PERFORM pg_catalog.set_config(${lit(k)}, ${lit(v)}, false); EXCEPTION WHEN others THEN NULL; END; `).join('') +
    'END$jestpg$'
  );
}

/** `-c name=value` pairs from the startup `options` parameter. */
export function parseOptions(options: string): [string, string][] {
  const out: [string, string][] = [];
  const re = /(?:-c\s*|--)([A-Za-z_.]+)=((?:\\.|[^\s\\])+)/g;
  let match: RegExpExecArray | null;
  while ((match = re.exec(options))) out.push([match[1].replace(/-/g, '_'), match[2].replace(/\\(.)/g, '$1')]);
  return out;
}

/** What a client reads: `JESTPG_…: message`, or Postgres' own words for an error the sandbox raises in its place. */
export function wireMessage(err: JestPgError): string {
  return err.wire ?? `${err.code}: ${err.message}`;
}

export function contains(buf: Buffer, text: string, start: number, end: number): boolean {
  const i = buf.indexOf(text, start);
  return i >= 0 && i < end;
}

