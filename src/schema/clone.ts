/**
 * Worker databases are true copies of the template. `CREATE DATABASE … TEMPLATE` copies the
 * contents but not what lives in shared catalogs: per-database settings (`ALTER DATABASE … SET`,
 * `ALTER ROLE … IN DATABASE … SET`, i.e. pg_db_role_setting), the owner, the privileges
 * (`GRANT … ON DATABASE`) and the comment. Those are read from the template and replayed on the
 * clone, the settings as pg_dump replays them.
 */
import { ident, literal, marker, noteOf } from '../util/names';

/**
 * Runs a simple query (no parameters; values inlined as literals), the rows of its results as
 * text, NULL as null: over the PostgreSQL driver (util/admin's textQuery) or the proxy's own
 * client (proxy/simple-client.ts, on the sandbox's thread). Errors carry the SQLSTATE as `code`.
 */
export type TextQuery = (sql: string) => Promise<(string | null)[][]>;

/** What a database has in shared catalogs that a clone must carry. */
export interface DatabaseShape {
  owner: string;
  comment: string | null;
  /** null: the default privileges (datacl IS NULL); else every grant. */
  acl: { grantee: string | null; privilege: string; grantable: boolean }[] | null;
  /** pg_db_role_setting rows: role null for `ALTER DATABASE … SET`, else `ALTER ROLE role IN DATABASE … SET`. */
  settings: { role: string | null; config: string[] }[];
}

export async function readDatabaseShape(q: TextQuery, database: string): Promise<DatabaseShape> {
  const rows = await q(
    `SELECT pg_catalog.pg_get_userbyid(d.datdba) AS owner,
            pg_catalog.shobj_description(d.oid, 'pg_database') AS comment,
            CASE WHEN d.datacl IS NULL THEN NULL ELSE coalesce((
              SELECT json_agg(json_build_object('grantee', CASE WHEN a.grantee = 0 THEN NULL ELSE pg_catalog.pg_get_userbyid(a.grantee) END,
                                                'privilege', a.privilege_type, 'grantable', a.is_grantable) ORDER BY a.grantee, a.privilege_type)
                FROM pg_catalog.aclexplode(d.datacl) AS a), '[]') END AS acl,
            coalesce((
              SELECT json_agg(json_build_object('role', r.rolname, 'config', s.setconfig) ORDER BY s.setrole)
                FROM pg_catalog.pg_db_role_setting s LEFT JOIN pg_catalog.pg_roles r ON r.oid = s.setrole
               WHERE s.setdatabase = d.oid), '[]') AS settings
       FROM pg_catalog.pg_database d WHERE d.datname = ${literal(database)}`,
  );
  const row = rows[0];
  if (!row) throw new Error(`database ${database} does not exist`);
  const [owner, comment, acl, settings] = row;
  return {
    owner: owner ?? '',
    comment,
    acl: acl === null ? null : (JSON.parse(acl) as DatabaseShape['acl']),
    settings: JSON.parse(settings ?? '[]') as DatabaseShape['settings'],
  };
}

/**
 * Create `name` as a copy of `template` (owner included), then give it the template's settings,
 * privileges and comment: our run marker first, the template's own comment (if a migration set
 * one) on the following lines.
 */
export async function cloneDatabase(q: TextQuery, template: string, name: string, runId: string, createOptions = ''): Promise<void> {
  const shape = await readDatabaseShape(q, template);
  await q(`CREATE DATABASE ${ident(name)} TEMPLATE ${ident(template)} OWNER ${ident(shape.owner)}${createOptions}`);
  try {
    // One round trip, one implicit transaction: all of them or none.
    await q(shapeStatements(shape, name, runId).join(';\n'));
  } catch (e) {
    // A bare clone must not be reused as if it were a copy.
    await q(`DROP DATABASE IF EXISTS ${ident(name)}`).catch(() => undefined);
    throw e;
  }
}

/** The statements that give a fresh clone `name` the shape of its template (owner excepted: set by CREATE). */
export function shapeStatements(shape: DatabaseShape, name: string, runId: string): string[] {
  const db = ident(name);
  const out = [`COMMENT ON DATABASE ${db} IS ${literal(marker(runId, noteOf(shape.comment)))}`];
  for (const s of shape.settings) {
    const target = s.role === null ? `ALTER DATABASE ${db}` : `ALTER ROLE ${ident(s.role)} IN DATABASE ${db}`;
    for (const entry of s.config) out.push(`${target} ${setClause(entry)}`);
  }
  if (shape.acl) {
    out.push(`REVOKE ALL ON DATABASE ${db} FROM PUBLIC, ${ident(shape.owner)}`);
    for (const a of shape.acl) {
      const grantee = a.grantee === null ? 'PUBLIC' : ident(a.grantee);
      out.push(`GRANT ${privilege(a.privilege)} ON DATABASE ${db} TO ${grantee}${a.grantable ? ' WITH GRANT OPTION' : ''}`);
    }
  }
  return out;
}

const PRIVILEGES = new Set(['CREATE', 'CONNECT', 'TEMPORARY', 'TEMP']);
function privilege(p: string): string {
  if (!PRIVILEGES.has(p)) throw new Error(`unexpected database privilege ${JSON.stringify(p)}`);
  return p;
}

/**
 * Settings whose stored value is a list of quoted identifiers (pg_dump's
 * variable_is_guc_list_quote): each element is replayed as its own literal.
 */
const LIST_QUOTE = new Set(['local_preload_libraries', 'search_path', 'session_preload_libraries', 'shared_preload_libraries', 'temp_tablespaces', 'unix_socket_directories']);

/** `SET name TO value` for one pg_db_role_setting entry (`name=value`), as pg_dump writes it. */
export function setClause(entry: string): string {
  const eq = entry.indexOf('=');
  if (eq <= 0) throw new Error(`unexpected setting ${JSON.stringify(entry)}`);
  const name = entry.slice(0, eq);
  const value = entry.slice(eq + 1);
  if (LIST_QUOTE.has(name.toLowerCase())) {
    const items = splitGucList(value);
    if (items) return `SET ${ident(name)} TO ${items.map(literal).join(', ')}`;
  }
  return `SET ${ident(name)} TO ${literal(value)}`;
}

/**
 * Split a GUC_LIST_QUOTE value (`"$user", public`) into its elements, as Postgres' SplitGUCList
 * does: `"…"` elements with `""` for a quote, unquoted ones up to a comma or whitespace, taken as
 * they are. undefined on a syntax error.
 */
export function splitGucList(raw: string): string[] | undefined {
  const out: string[] = [];
  const space = (ch: string | undefined) => ch !== undefined && /\s/.test(ch);
  let i = 0;
  while (space(raw[i])) i++;
  if (i === raw.length) return out;
  for (;;) {
    let item = '';
    if (raw[i] === '"') {
      i++;
      for (;;) {
        const end = raw.indexOf('"', i);
        if (end < 0) return undefined;
        item += raw.slice(i, end);
        if (raw[end + 1] === '"') {
          item += '"';
          i = end + 2;
        } else {
          i = end + 1;
          break;
        }
      }
    } else {
      const start = i;
      while (i < raw.length && raw[i] !== ',' && !space(raw[i])) i++;
      if (i === start) return undefined;
      item = raw.slice(start, i);
    }
    out.push(item);
    while (space(raw[i])) i++;
    if (i === raw.length) return out;
    if (raw[i] !== ',') return undefined;
    i++;
    while (space(raw[i])) i++;
  }
}
