/**
 * A small SQL lexer: splits a simple-query string into statements the way the server
 * does (quotes, dollar quotes, comments, nested block comments) and classifies each by
 * its leading keywords. Only what the sandbox must see is classified: transaction
 * control, statement deallocation, SQL-level PREPARE/EXECUTE names, session settings,
 * statements that cannot run in a transaction, and the names the sandbox answers for
 * its virtual backends (pg_backend_pid, pg_stat_activity, pg_terminate_backend,
 * pg_cancel_backend).
 */

export type StatementKind =
  | 'begin'
  | 'commit'
  | 'rollback'
  | 'savepoint'
  | 'release'
  | 'rollbackTo'
  | 'deallocate'
  | 'discardAll'
  | 'discardTemp'
  | 'prepare'
  | 'prepareTx'
  | 'commitPrepared'
  | 'rollbackPrepared'
  | 'nonTx'
  | 'setTransaction'
  | 'setLocal'
  | 'other';

export interface Statement {
  kind: StatementKind;
  start: number;
  end: number;
  /** The command tag Postgres would report for begin/commit/rollback. */
  tag?: string;
  /** DEALLOCATE's or PREPARE's target (case-folded unless quoted), or undefined for DEALLOCATE ALL. */
  name?: string;
  /** Where that name is in the SQL text (to rename it per client). */
  nameAt?: [number, number];
  /** EXECUTE name (also in EXPLAIN … EXECUTE and CREATE TABLE … AS EXECUTE): the name and where it is. */
  exec?: { name: string; at: [number, number] };
  /** For nonTx: what it is, for the error message. */
  what?: string;
  /** PREPARE TRANSACTION / COMMIT PREPARED / ROLLBACK PREPARED: the transaction's identifier. */
  gid?: string;
  /** SET (not LOCAL), RESET, DISCARD ALL: changes a session setting. */
  sets?: boolean;
  /** SHOW name: the setting's name (case-folded). */
  show?: string;
}

/** A name the sandbox answers for its virtual backends, and the text [start, end) it replaces. */
export interface Ref {
  kind: 'backendPid' | 'statActivity' | 'terminate' | 'cancel';
  start: number;
  end: number;
}

export interface Lexed {
  stmts: Statement[];
  /** Virtual-backend names, in text order; undefined when there are none. */
  refs: Ref[] | undefined;
  /** Calls pg_terminate_backend or pg_cancel_backend. */
  kill: boolean;
  /** Needs the sandbox's list of clients when it runs (pg_stat_activity, or a kill). */
  activity: boolean;
  /** A statement may create a temporary object (CREATE or SELECT INTO naming TEMP, TEMPORARY, pg_temp or VIEW). */
  temp: boolean;
  /** A statement may change a session setting (SET, RESET, DISCARD ALL, set_config). */
  sets: boolean;
  /** Names DEFERRABLE (may create a deferrable constraint). */
  deferrable: boolean;
}

const enum Ch {
  Tab = 9, Nl = 10, Cr = 13, Sp = 32, Dq = 34, Dollar = 36, Sq = 39, Star = 42, Dash = 45, Slash = 47,
  Semi = 59, E = 69, e = 101, Bs = 92,
}

const isWordStart = (c: number) => (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || c === 95 || c >= 128;
const isWord = (c: number) => isWordStart(c) || (c >= 48 && c <= 57) || c === Ch.Dollar;

/** Words kept per statement for classification (with their positions). */
const WORDS = 12;

/** Split and classify. Empty statements (only whitespace/comments) are left out, as the server does. */
export function statements(sql: string): Statement[] {
  return lex(sql).stmts;
}

export function lex(sql: string): Lexed {
  const out: Statement[] = [];
  const n = sql.length;
  let i = 0;
  let stmtStart = -1;
  let words: string[] = [];
  let at: number[] = [];
  let concurrently = false;
  let refs: Ref[] | undefined;
  let kill = false;
  let activity = false;
  let temp = false;
  let sets = false;
  let deferrable = false;
  let mentionsTemp = false;
  let into = false;
  const finish = (end: number) => {
    if (stmtStart >= 0) {
      const s = classify(sql, words, at, concurrently, stmtStart, end);
      if (s.sets) sets = true;
      if (mentionsTemp && (words[0] === 'create' || (into && (words[0] === 'select' || words[0] === 'with')))) temp = true;
      out.push(s);
    }
    stmtStart = -1;
    words = [];
    at = [];
    concurrently = false;
    mentionsTemp = false;
    into = false;
  };
  while (i < n) {
    const c = sql.charCodeAt(i);
    if (c === Ch.Sp || c === Ch.Tab || c === Ch.Nl || c === Ch.Cr || c === 12) {
      i++;
      continue;
    }
    if (c === Ch.Dash && sql.charCodeAt(i + 1) === Ch.Dash) {
      const nl = sql.indexOf('\n', i);
      i = nl < 0 ? n : nl + 1;
      continue;
    }
    if (c === Ch.Slash && sql.charCodeAt(i + 1) === Ch.Star) {
      let depth = 1;
      i += 2;
      while (i < n && depth > 0) {
        if (sql.charCodeAt(i) === Ch.Slash && sql.charCodeAt(i + 1) === Ch.Star) { depth++; i += 2; }
        else if (sql.charCodeAt(i) === Ch.Star && sql.charCodeAt(i + 1) === Ch.Slash) { depth--; i += 2; }
        else i++;
      }
      continue;
    }
    if (c === Ch.Semi) {
      finish(i);
      i++;
      continue;
    }
    if (stmtStart < 0) stmtStart = i;
    if (c === Ch.Sq) {
      const escapes = i > 0 && (sql.charCodeAt(i - 1) === Ch.E || sql.charCodeAt(i - 1) === Ch.e) && (i < 2 || !isWord(sql.charCodeAt(i - 2)));
      i = skipQuoted(sql, i + 1, Ch.Sq, escapes);
      continue;
    }
    if (c === Ch.Dq) {
      const j = skipQuoted(sql, i + 1, Ch.Dq, false);
      if (words.length < WORDS) {
        words.push('"' + sql.slice(i + 1, j - 1).replace(/""/g, '"'));
        at.push(i, j);
      }
      i = j;
      continue;
    }
    if (c === Ch.Dollar) {
      const m = /^\$([A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*)?\$/.exec(sql.slice(i, i + 66));
      if (m) {
        const close = sql.indexOf(m[0], i + m[0].length);
        i = close < 0 ? n : close + m[0].length;
        continue;
      }
      i++;
      continue;
    }
    if (isWordStart(c)) {
      let j = i + 1;
      while (j < n && isWord(sql.charCodeAt(j))) j++;
      // E'..' strings: leave the quote for the next turn, which sees the E before it.
      if (j - i === 1 && (c === Ch.E || c === Ch.e) && sql.charCodeAt(j) === Ch.Sq) {
        i = j;
        continue;
      }
      const w = sql.slice(i, j).toLowerCase();
      if (words.length < WORDS) {
        words.push(w);
        at.push(i, j);
      }
      switch (w) {
        case 'concurrently':
          concurrently = true;
          break;
        case 'temp':
        case 'temporary':
        case 'pg_temp':
        case 'view':
          mentionsTemp = true;
          break;
        case 'set_config':
          sets = true;
          break;
        case 'into':
          into = true;
          break;
        case 'deferrable':
          deferrable = true;
          break;
        case 'pg_backend_pid':
        case 'pg_stat_activity':
        case 'pg_terminate_backend':
        case 'pg_cancel_backend': {
          const r = virtualRef(sql, w, i, j, words);
          if (r) {
            (refs ??= []).push(r);
            if (r.kind === 'terminate' || r.kind === 'cancel') kill = activity = true;
            else if (r.kind === 'statActivity') activity = true;
          }
          break;
        }
        default:
          break;
      }
      i = j;
      continue;
    }
    i++;
  }
  finish(n);
  return { stmts: out, refs, kill, activity, temp, sets, deferrable };
}

const skipSpace = (sql: string, i: number, step: 1 | -1): number => {
  while (i >= 0 && i < sql.length && /\s/.test(sql[i])) i += step;
  return i;
};

/**
 * pg_backend_pid(), pg_terminate_backend(…), pg_cancel_backend(…) as calls and pg_stat_activity as
 * a relation, bare or qualified with pg_catalog; not in statements that store SQL for later
 * (CREATE VIEW/FUNCTION/RULE/TRIGGER: those would depend on the sandbox's temporary functions).
 */
function virtualRef(sql: string, w: string, start: number, end: number, words: string[]): Ref | undefined {
  if (words[0] === 'create' && words.some((x) => x === 'view' || x === 'function' || x === 'procedure' || x === 'rule' || x === 'trigger')) return undefined;
  // Qualified: only pg_catalog.<name> is Postgres' own.
  const before = skipSpace(sql, start - 1, -1);
  if (before >= 0 && sql[before] === '.') {
    const q = skipSpace(sql, before - 1, -1);
    if (q < 9 || sql.slice(q - 9, q + 1).toLowerCase() !== 'pg_catalog' || (q >= 10 && isWord(sql.charCodeAt(q - 10)))) return undefined;
    start = q - 9;
  }
  const next = skipSpace(sql, end, 1);
  const ch = sql[next];
  if (w === 'pg_stat_activity') {
    // A relation, not a column qualifier (pg_stat_activity.pid) or a call.
    if (ch === '.' || ch === '(') return undefined;
    return { kind: 'statActivity', start, end };
  }
  if (ch !== '(') return undefined;
  if (w === 'pg_backend_pid') {
    const close = skipSpace(sql, next + 1, 1);
    if (sql[close] !== ')') return undefined;
    return { kind: 'backendPid', start, end: close + 1 };
  }
  return { kind: w === 'pg_terminate_backend' ? 'terminate' : 'cancel', start, end };
}

function skipQuoted(sql: string, i: number, q: number, backslash: boolean): number {
  const n = sql.length;
  while (i < n) {
    const c = sql.charCodeAt(i);
    if (backslash && c === Ch.Bs) { i += 2; continue; }
    if (c === q) {
      if (sql.charCodeAt(i + 1) === q) { i += 2; continue; }
      return i + 1;
    }
    i++;
  }
  return n;
}

/** The name token at word index k (case-folded unless quoted) and its position. */
function nameAt(w: string[], at: number[], k: number): { name: string; at: [number, number] } | undefined {
  const x = w[k];
  if (x === undefined) return undefined;
  return { name: x.startsWith('"') ? x.slice(1) : x, at: [at[2 * k], at[2 * k + 1]] };
}

/** The first string literal of the statement (a two-phase transaction's identifier). */
function gidOf(sql: string, start: number, end: number): string | undefined {
  const m = /'((?:[^']|'')*)'/.exec(sql.slice(start, end));
  return m ? m[1].replace(/''/g, "'") : undefined;
}

/** A Statement of the given kind spanning the statement being classified. */
type Make = (kind: StatementKind, extra?: Partial<Statement>) => Statement;

/** What a statement is, from its first words `w` (lower case; their offsets `at`). */
function classify(sql: string, w: string[], at: number[], concurrently: boolean, start: number, end: number): Statement {
  const s: Make = (kind, extra) => ({ kind, start, end, ...extra });
  switch (w[0]) {
    case 'begin':
    case 'start':
    case 'commit':
    case 'end':
    case 'abort':
    case 'rollback':
    case 'savepoint':
    case 'release':
      return transactionControl(w, s, sql, start, end);
    case 'set':
    case 'reset':
    case 'show':
      return settings(w, s);
    case 'prepare':
    case 'execute':
    case 'explain':
    case 'deallocate':
    case 'discard':
      return sessionObjects(w, at, s, sql, start, end);
    case 'vacuum':
    case 'cluster':
    case 'reindex':
      return maintenance(w, concurrently, s);
    case 'create':
    case 'drop':
    case 'alter':
      return definition(w, at, concurrently, s);
    default:
      return s('other');
  }
}

/** BEGIN, START TRANSACTION, COMMIT/END, ABORT, ROLLBACK (TO), SAVEPOINT, RELEASE, COMMIT/ROLLBACK PREPARED. */
function transactionControl(w: string[], s: Make, sql: string, start: number, end: number): Statement {
  const [a, b, c] = w;
  switch (a) {
    case 'begin':
      return s('begin', { tag: 'BEGIN' });
    case 'start':
      return b === 'transaction' ? s('begin', { tag: 'START TRANSACTION' }) : s('other');
    case 'commit':
    case 'end':
      if (b === 'prepared') return s('commitPrepared', { gid: gidOf(sql, start, end) });
      return s('commit', { tag: 'COMMIT' });
    case 'abort':
      return s('rollback', { tag: 'ROLLBACK' });
    case 'rollback':
      if (b === 'prepared') return s('rollbackPrepared', { gid: gidOf(sql, start, end) });
      if (b === 'to' || ((b === 'work' || b === 'transaction') && c === 'to')) return s('rollbackTo');
      return s('rollback', { tag: 'ROLLBACK' });
    case 'savepoint':
      return s('savepoint');
    default:
      return s('release');
  }
}

/** SET (TRANSACTION, LOCAL, CONSTRAINTS), RESET, SHOW. */
function settings(w: string[], s: Make): Statement {
  const [a, b, c] = w;
  if (a === 'show') return s('other', { show: b });
  if (a === 'reset') return s('other', { sets: true });
  // SET TRANSACTION … must come before any query of a transaction; a client's transaction
  // is a savepoint deep inside the file's, so its characteristics cannot be set.
  if (b === 'transaction' || (b === 'session' && c === 'characteristics')) return s('setTransaction');
  // SET LOCAL x: undone by the client's ROLLBACK, but its COMMIT (a kept savepoint) must undo it too.
  if (b === 'local' && c !== undefined && !c.startsWith('"')) return s('setLocal', { name: c });
  if (b === 'constraints') return s('other');
  return s('other', { sets: true });
}

/** PREPARE (TRANSACTION), EXECUTE, EXPLAIN … EXECUTE, DEALLOCATE, DISCARD. */
function sessionObjects(w: string[], at: number[], s: Make, sql: string, start: number, end: number): Statement {
  const [a, b] = w;
  switch (a) {
    case 'prepare': {
      if (b === 'transaction') return s('prepareTx', { gid: gidOf(sql, start, end) });
      const n = nameAt(w, at, 1);
      return n ? s('prepare', { name: n.name, nameAt: n.at }) : s('other');
    }
    case 'execute': {
      const n = nameAt(w, at, 1);
      return n ? s('other', { exec: n }) : s('other');
    }
    case 'explain': {
      const k = w.indexOf('execute');
      const n = k > 0 ? nameAt(w, at, k + 1) : undefined;
      return n ? s('other', { exec: n }) : s('other');
    }
    case 'deallocate': {
      const n = nameAt(w, at, b === 'prepare' ? 2 : 1);
      if (n === undefined || n.name === 'all') return s('deallocate');
      return s('deallocate', { name: n.name, nameAt: n.at });
    }
    default:
      if (b === 'all') return s('discardAll', { sets: true });
      if (b === 'temp' || b === 'temporary') return s('discardTemp');
      return s('other');
  }
}

/** VACUUM, CLUSTER, REINDEX: some of them cannot run inside a transaction block. */
function maintenance(w: string[], concurrently: boolean, s: Make): Statement {
  const [a, b] = w;
  if (a === 'vacuum') return s('nonTx', { what: 'VACUUM' });
  if (a === 'cluster') return b === undefined ? s('nonTx', { what: 'CLUSTER without a table' }) : s('other');
  return concurrently || b === 'system' || b === 'database' ? s('nonTx', { what: `REINDEX ${concurrently ? 'CONCURRENTLY' : (b ?? '').toUpperCase()}` }) : s('other');
}

/** CREATE, DROP, ALTER: those that cannot run inside a transaction block; CREATE TABLE … AS EXECUTE name. */
function definition(w: string[], at: number[], concurrently: boolean, s: Make): Statement {
  const [a, b, c] = w;
  const verb = a.toUpperCase();
  if (b === 'database' && a !== 'alter') return s('nonTx', { what: `${verb} DATABASE` });
  if (b === 'tablespace' && a !== 'alter') return s('nonTx', { what: `${verb} TABLESPACE` });
  if (a === 'alter' && b === 'system') return s('nonTx', { what: 'ALTER SYSTEM' });
  if (b === 'subscription' && a !== 'alter') return s('nonTx', { what: `${verb} SUBSCRIPTION` });
  if (concurrently && (b === 'index' || (b === 'unique' && c === 'index'))) return s('nonTx', { what: `${verb} INDEX CONCURRENTLY` });
  if (a === 'create') {
    const k = w.indexOf('execute');
    if (k > 1 && w[k - 1] === 'as') {
      const n = nameAt(w, at, k + 1);
      if (n) return s('other', { exec: n });
    }
  }
  return s('other');
}
