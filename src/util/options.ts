import { errors, type OptionProblem } from './errors';

/** A migration source: a path (directory of .sql files, or a JS module) or a shell command. */
export type MigrationSource = string | { command: string; inputs?: string[] };

export interface PgOptions {
  /** Connection URL of an existing server whose role may CREATEDB. Default: $JEST_PG_URL, else an embedded cluster. */
  server?: string;
  /** Directory containing initdb and postgres. */
  binDir?: string;
  migrations?: MigrationSource;
  seed?: MigrationSource;
  isolation: 'test' | 'file';
  exposeAs: string[];
  leaks: 'error' | 'warn';
  lateQueries: 'error' | 'warn';
  graceMs: number;
  lockWaitMs: number;
  resetSequences: boolean;
  keepDatabases: boolean;
  /** Where the embedded cluster is cached for warm starts; false turns the cache off. Default `<rootDir>/node_modules/.cache/jest-environment-pg`. */
  cacheDir?: string | false;
  prefix: string;
  /** Old templates kept per prefix on the server (the most recently used; the run's own and those live runs use are always kept). */
  keepTemplates: number;
  /** The project's own globalSetup module, run after ours (Jest runs one globalSetup: the preset's). */
  globalSetup?: string;
  /** The project's own globalTeardown module, run before ours. */
  globalTeardown?: string;
  /**
   * 'transaction': now() & co. are each client transaction's own time, as on a real server
   * (src/schema/clock.ts); 'file': Postgres' own, the file transaction's start.
   */
  time: 'transaction' | 'file';
}

export const defaults: PgOptions = {
  isolation: 'test',
  exposeAs: [],
  leaks: 'error',
  lateQueries: 'error',
  graceMs: 100,
  lockWaitMs: 2000,
  resetSequences: true,
  keepDatabases: false,
  prefix: 'jestpg',
  keepTemplates: 3,
  time: 'transaction',
};

type Check = (v: unknown) => boolean;
/** A check, what it accepts (in words), and for a closed set of strings the set (for "did you mean"). */
type Spec = [check: Check, accepts: string, choices?: readonly string[]];
const str: Check = (v) => typeof v === 'string' && v.length > 0;
const bool: Check = (v) => typeof v === 'boolean';
const ms: Check = (v) => typeof v === 'number' && Number.isFinite(v) && v >= 0;
const oneOf = (...xs: string[]): Spec => [(v) => typeof v === 'string' && xs.includes(v), xs.map((x) => JSON.stringify(x)).join(' or '), xs];
const migration: Check = (v) => {
  if (str(v)) return true;
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const o = v as { command?: unknown; inputs?: unknown };
  const keysOk = Object.keys(o).every((k) => k === 'command' || k === 'inputs');
  const inputsOk = o.inputs === undefined || (Array.isArray(o.inputs) && o.inputs.every(str));
  return keysOk && str(o.command) && inputsOk;
};

const spec: Record<keyof PgOptions, Spec> = {
  server: [str, 'a postgres:// connection URL'],
  binDir: [str, 'a directory path containing initdb and postgres'],
  migrations: [migration, 'a path (directory of .sql files or a JS/TS module) or { command: "shell command", inputs?: ["paths the command reads"] }'],
  seed: [migration, 'a path (directory of .sql files, one .sql file or a JS/TS module) or { command: "shell command" }'],
  isolation: oneOf('test', 'file'),
  exposeAs: [(v) => Array.isArray(v) && v.every((x) => typeof x === 'string' && /^[A-Za-z_][A-Za-z0-9_]*$/.test(x)), 'an array of environment variable names'],
  leaks: oneOf('error', 'warn'),
  lateQueries: oneOf('error', 'warn'),
  graceMs: [ms, 'a non-negative number of milliseconds'],
  lockWaitMs: [ms, 'a non-negative number of milliseconds'],
  resetSequences: [bool, 'true or false'],
  keepDatabases: [bool, 'true or false'],
  cacheDir: [(v) => str(v) || v === false, 'a directory path, or false to turn the cache off'],
  prefix: [(v) => typeof v === 'string' && /^[a-z][a-z0-9]{0,15}$/.test(v), 'lowercase letters and digits, starting with a letter, at most 16 characters'],
  keepTemplates: [(v) => typeof v === 'number' && Number.isInteger(v) && v >= 0, 'a whole number ≥ 0 (templates kept besides the one in use)'],
  globalSetup: [str, 'a path (or module name) of your own globalSetup, run after jest-environment-pg\'s'],
  globalTeardown: [str, 'a path (or module name) of your own globalTeardown, run before jest-environment-pg\'s'],
  time: oneOf('transaction', 'file'),
};

export const optionKeys = Object.keys(spec) as (keyof PgOptions)[];

/** Keys that shape the run (server, template); a docblock may not change them per file. */
const runKeys = new Set<keyof PgOptions>(['server', 'binDir', 'migrations', 'seed', 'cacheDir', 'prefix', 'keepDatabases', 'keepTemplates', 'globalSetup', 'globalTeardown', 'time']);

/**
 * Validate a raw `pg` options object. Every problem is collected and thrown as one error
 * (JESTPG_OPTION_UNKNOWN when a key is unknown, else JESTPG_OPTION_TYPE) that lists each unknown
 * key with a "did you mean" where one is close, and each bad value with the accepted values.
 */
export function validate(raw: unknown, base: PgOptions = defaults): PgOptions {
  if (raw === undefined || raw === null) return { ...base };
  if (typeof raw !== 'object' || Array.isArray(raw)) throw errors.options([{ kind: 'type', key: '', expected: 'an object', got: raw }], optionKeys);
  const out: PgOptions = { ...base };
  const problems: OptionProblem[] = [];
  for (const [key, value] of Object.entries(raw as Record<string, unknown>)) {
    const s = Object.prototype.hasOwnProperty.call(spec, key) ? spec[key as keyof PgOptions] : undefined;
    if (!s) {
      problems.push({ kind: 'unknown', key, suggestion: closest(key, optionKeys) });
      continue;
    }
    if (value === undefined) continue;
    if (!s[0](value)) {
      const suggestion = s[2] && typeof value === 'string' ? closest(value, s[2]) : undefined;
      problems.push({ kind: 'type', key, expected: s[1], got: value, suggestion });
      continue;
    }
    (out as unknown as Record<string, unknown>)[key] = value;
  }
  if (problems.length) throw errors.options(problems, optionKeys);
  return out;
}

/**
 * The candidate `word` most likely meant, or undefined when none is close: equal once case,
 * `_` and `-` are ignored, or within a small edit distance (transpositions count as one edit).
 */
export function closest(word: string, candidates: readonly string[]): string | undefined {
  const norm = (s: string) => s.toLowerCase().replace(/[-_\s]/g, '');
  const w = norm(word);
  if (!w) return undefined;
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    const d = editDistance(w, norm(c));
    if (d < bestD) {
      best = c;
      bestD = d;
    }
  }
  const limit = w.length <= 3 ? 1 : w.length <= 6 ? 2 : 3;
  return bestD <= limit ? best : undefined;
}

/** Optimal string alignment distance (Levenshtein plus adjacent transpositions). */
function editDistance(a: string, b: string): number {
  const rows = a.length + 1;
  const cols = b.length + 1;
  const d: number[] = new Array(rows * cols).fill(0);
  for (let i = 0; i < rows; i++) d[i * cols] = i;
  for (let j = 0; j < cols; j++) d[j] = j;
  for (let i = 1; i < rows; i++) {
    for (let j = 1; j < cols; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[(i - 1) * cols + j] + 1, d[i * cols + j - 1] + 1, d[(i - 1) * cols + j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[(i - 2) * cols + j - 2] + 1);
      d[i * cols + j] = v;
    }
  }
  return d[rows * cols - 1];
}

/**
 * Per-file overrides. Jest merges `@jest-environment-options` shallowly, so a file's
 * `{"pg": {...}}` would replace the project's whole `pg` object: we merge per key ourselves,
 * from the raw docblock pragmas. Short pragmas (`@pg-isolation file`) are accepted too.
 */
export function fileOverrides(pragmas: Record<string, string | string[]> | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (!pragmas) return out;
  const envOpts = pragmas['jest-environment-options'];
  if (envOpts) {
    const text = Array.isArray(envOpts) ? envOpts[envOpts.length - 1] : envOpts;
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = undefined; // Jest itself reports a malformed docblock JSON.
    }
    const pg = (parsed as { pg?: unknown } | undefined)?.pg;
    if (pg !== undefined) {
      if (typeof pg !== 'object' || pg === null || Array.isArray(pg)) throw errors.options([{ kind: 'type', key: '', expected: 'an object', got: pg }], optionKeys);
      Object.assign(out, pg);
    }
  }
  for (const [name, value] of Object.entries(pragmas)) {
    if (!name.startsWith('pg-')) continue;
    const key = name.slice(3).replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
    const text = (Array.isArray(value) ? value[value.length - 1] : value).trim();
    out[key] = coercePragma(key, text);
  }
  const perRun: OptionProblem[] = Object.keys(out)
    .filter((key) => runKeys.has(key as keyof PgOptions))
    .map((key) => ({ kind: 'misplaced', key, rule: 'shapes the whole run, so it must be set in the jest config, not per file' }));
  if (perRun.length) throw errors.options(perRun, optionKeys);
  return out;
}

function coercePragma(key: string, text: string): unknown {
  if (text === 'true') return true;
  if (text === 'false') return false;
  if (/^\d+$/.test(text)) return Number(text);
  if (key === 'exposeAs') return text.split(/[\s,]+/).filter(Boolean);
  return text;
}
