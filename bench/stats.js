'use strict';
/** Small statistics and formatting helpers for the benchmarks. */

const sorted = (xs) => Float64Array.from(xs).sort();

function quantile(xs, q) {
  if (!xs.length) return NaN;
  const s = sorted(xs);
  const i = Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1));
  return s[i];
}

function median(xs) {
  if (!xs.length) return NaN;
  const s = sorted(xs);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

const min = (xs) => Math.min(...xs);
const max = (xs) => Math.max(...xs);

/** A fixed-width text table. `align`: 'l' or 'r' per column. */
function table(headers, rows, align = []) {
  const cells = [headers, ...rows].map((r) => r.map((c) => (c === undefined || c === null ? '' : String(c))));
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  const fmt = (r) => r.map((c, i) => (align[i] === 'r' ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join('  ').trimEnd();
  return [fmt(cells[0]), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.slice(1).map(fmt)].join('\n');
}

/** The same table as GitHub markdown. */
function mdTable(headers, rows, align = []) {
  const esc = (c) => (c === undefined || c === null ? '' : String(c).replace(/\|/g, '\\|'));
  return [
    `| ${headers.map(esc).join(' | ')} |`,
    `| ${headers.map((_, i) => (align[i] === 'r' ? '---:' : '---')).join(' | ')} |`,
    ...rows.map((r) => `| ${r.map(esc).join(' | ')} |`),
  ].join('\n');
}

const round = (x, d = 0) => (Number.isFinite(x) ? Math.round(x * 10 ** d) / 10 ** d : null);

module.exports = { quantile, median, min, max, table, mdTable, round };
