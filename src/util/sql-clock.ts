/**
 * Time that moves. The file is one transaction, so Postgres' transaction time (now(),
 * CURRENT_TIMESTAMP, …) would stand still for the whole file. The template gets a now() and a
 * transaction_timestamp() that return the time the client's transaction began (set by the
 * sandbox at the client's BEGIN), or the statement's own time outside one — what a real server
 * gives. CURRENT_TIMESTAMP and its siblings are SQL syntax, not function calls, so wherever
 * they appear as text (client SQL, column defaults, function bodies) they are rewritten onto
 * now(). This module does that rewrite; src/schema/clock.ts installs the rest.
 */

const KEYWORDS: Record<string, string> = {
  current_timestamp: 'timestamptz',
  localtimestamp: 'timestamp',
  current_date: 'date',
  current_time: 'timetz',
  localtime: 'time',
};

/** Cheap test before lexing: most statements never mention the clock. */
const MAYBE = /current_(timestamp|date|time)|localtime/i;

const isWord = (c: number) => (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || c === 95 || c >= 128 || (c >= 48 && c <= 57) || c === 36;

/**
 * `sql` with CURRENT_TIMESTAMP, LOCALTIMESTAMP, CURRENT_DATE, CURRENT_TIME and LOCALTIME (with
 * an optional precision) replaced by casts of pg_catalog.now(), outside quotes, dollar quotes,
 * quoted identifiers and comments. Returns `sql` itself when there is nothing to replace.
 */
export function clockRewrite(sql: string): string {
  if (!MAYBE.test(sql)) return sql;
  const n = sql.length;
  let out = '';
  let last = 0;
  let i = 0;
  while (i < n) {
    const c = sql.charCodeAt(i);
    if (c === 39 /* ' */ || c === 34 /* " */) {
      i = skipQuoted(sql, i, c);
    } else if (c === 45 /* - */ && sql.charCodeAt(i + 1) === 45) {
      const nl = sql.indexOf('\n', i);
      i = nl < 0 ? n : nl + 1;
    } else if (c === 47 /* / */ && sql.charCodeAt(i + 1) === 42 /* * */) {
      i = skipBlockComment(sql, i);
    } else if (c === 36 /* $ */ && (i === 0 || !isWord(sql.charCodeAt(i - 1)))) {
      const m = /^\$([A-Za-z_\u0080-\uffff][\w\u0080-\uffff]*)?\$/.exec(sql.slice(i, i + 64));
      if (m) {
        const close = sql.indexOf(m[0], i + m[0].length);
        i = close < 0 ? n : close + m[0].length;
      } else i++;
    } else if (isWord(c)) {
      let j = i + 1;
      while (j < n && isWord(sql.charCodeAt(j))) j++;
      const type = KEYWORDS[sql.slice(i, j).toLowerCase()];
      // A keyword, not a column or a qualified name (t.localtime) of the same spelling.
      if (type !== undefined && sql.charCodeAt(i - 1) !== 46 /* . */) {
        let k = j;
        while (k < n && /\s/.test(sql[k])) k++;
        let precision = '';
        const p = sql.charCodeAt(k) === 40 /* ( */ ? /^\(\s*(\d+)\s*\)/.exec(sql.slice(k, k + 16)) : null;
        if (p) {
          precision = `(${p[1]})`;
          j = k + p[0].length;
        }
        out += sql.slice(last, i) + `(pg_catalog.now()::${type}${precision})`;
        last = j;
      }
      i = j;
    } else i++;
  }
  return last === 0 ? sql : out + sql.slice(last);
}

function skipQuoted(sql: string, i: number, q: number): number {
  const n = sql.length;
  // E'…' strings take backslash escapes.
  const escapes = q === 39 && i > 0 && (sql[i - 1] === 'E' || sql[i - 1] === 'e') && (i < 2 || !isWord(sql.charCodeAt(i - 2)));
  let j = i + 1;
  while (j < n) {
    const c = sql.charCodeAt(j);
    if (escapes && c === 92) j += 2;
    else if (c === q) {
      if (sql.charCodeAt(j + 1) === q) j += 2;
      else return j + 1;
    } else j++;
  }
  return n;
}

function skipBlockComment(sql: string, i: number): number {
  const n = sql.length;
  let depth = 0;
  let j = i;
  while (j < n) {
    if (sql.charCodeAt(j) === 47 && sql.charCodeAt(j + 1) === 42) {
      depth++;
      j += 2;
    } else if (sql.charCodeAt(j) === 42 && sql.charCodeAt(j + 1) === 47) {
      depth--;
      j += 2;
      if (depth === 0) return j;
    } else j++;
  }
  return n;
}
