/**
 * A small SQL lexer: splits a simple-query string into statements the way the server
 * does (quotes, dollar quotes, comments, nested block comments) and classifies each by
 * its leading keywords. Only what the sandbox must see is classified: transaction
 * control, statement deallocation, and statements that cannot run in a transaction.
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
  /** DEALLOCATE's target: a name, or undefined for ALL. */
  name?: string;
  /** For nonTx: what it is, for the error message. */
  what?: string;
}

const enum Ch {
  Tab = 9, Nl = 10, Cr = 13, Sp = 32, Dq = 34, Dollar = 36, Sq = 39, Star = 42, Dash = 45, Slash = 47,
  Semi = 59, E = 69, e = 101, Bs = 92,
}

const isWordStart = (c: number) => (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || c === 95 || c >= 128;
const isWord = (c: number) => isWordStart(c) || (c >= 48 && c <= 57) || c === Ch.Dollar;

/** Split and classify. Empty statements (only whitespace/comments) are left out, as the server does. */
export function statements(sql: string): Statement[] {
  const out: Statement[] = [];
  const n = sql.length;
  let i = 0;
  let stmtStart = -1;
  let words: string[] = [];
  let concurrently = false;
  const finish = (end: number) => {
    if (stmtStart >= 0) out.push(classify(words, concurrently, stmtStart, end));
    stmtStart = -1;
    words = [];
    concurrently = false;
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
      i = skipQuoted(sql, i + 1, Ch.Dq, false);
      if (words.length < 6) words.push('"');
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
      if (words.length < 6) words.push(w);
      if (w === 'concurrently') concurrently = true;
      i = j;
      continue;
    }
    i++;
  }
  finish(n);
  return out;
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

function classify(w: string[], concurrently: boolean, start: number, end: number): Statement {
  const s = (kind: StatementKind, extra?: Partial<Statement>): Statement => ({ kind, start, end, ...extra });
  const [a, b, c] = w;
  switch (a) {
    case 'begin':
      return s('begin', { tag: 'BEGIN' });
    case 'start':
      return b === 'transaction' ? s('begin', { tag: 'START TRANSACTION' }) : s('other');
    case 'commit':
    case 'end':
      if (b === 'prepared') return s('nonTx', { what: 'COMMIT PREPARED' });
      return s('commit', { tag: 'COMMIT' });
    case 'abort':
      return s('rollback', { tag: 'ROLLBACK' });
    case 'rollback':
      if (b === 'prepared') return s('nonTx', { what: 'ROLLBACK PREPARED' });
      if (b === 'to' || ((b === 'work' || b === 'transaction') && c === 'to')) return s('rollbackTo');
      return s('rollback', { tag: 'ROLLBACK' });
    case 'savepoint':
      return s('savepoint');
    case 'set':
      // SET TRANSACTION … must come before any query of a transaction; a client's transaction
      // is a savepoint deep inside the file's, so its characteristics cannot be set.
      if (b === 'transaction' || (b === 'session' && c === 'characteristics')) return s('setTransaction');
      // SET LOCAL x: undone by the client's ROLLBACK, but its COMMIT (a kept savepoint) must undo it too.
      if (b === 'local' && c !== undefined && c !== '"') return s('setLocal', { name: c });
      return s('other');
    case 'release':
      return s('release');
    case 'prepare':
      return b === 'transaction' ? s('nonTx', { what: 'PREPARE TRANSACTION' }) : s('other');
    case 'deallocate': {
      const name = b === 'prepare' ? c : b;
      return s('deallocate', { name: name === 'all' || name === undefined ? undefined : name });
    }
    case 'discard':
      return b === 'all' ? s('discardAll') : s('other');
    case 'vacuum':
      return s('nonTx', { what: 'VACUUM' });
    case 'cluster':
      return b === undefined ? s('nonTx', { what: 'CLUSTER without a table' }) : s('other');
    case 'reindex':
      return concurrently || b === 'system' || b === 'database'
        ? s('nonTx', { what: `REINDEX ${concurrently ? 'CONCURRENTLY' : (b ?? '').toUpperCase()}` })
        : s('other');
    case 'create':
    case 'drop':
    case 'alter': {
      const verb = a.toUpperCase();
      if (b === 'database' && a !== 'alter') return s('nonTx', { what: `${verb} DATABASE` });
      if (b === 'tablespace' && a !== 'alter') return s('nonTx', { what: `${verb} TABLESPACE` });
      if (a === 'alter' && b === 'system') return s('nonTx', { what: 'ALTER SYSTEM' });
      if (b === 'subscription' && a !== 'alter') return s('nonTx', { what: `${verb} SUBSCRIPTION` });
      if (concurrently && (b === 'index' || (b === 'unique' && c === 'index'))) return s('nonTx', { what: `${verb} INDEX CONCURRENTLY` });
      return s('other');
    }
    default:
      return s('other');
  }
}
