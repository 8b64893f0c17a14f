import { errors } from './errors';

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
};

type Check = (v: unknown) => boolean;
const str: Check = (v) => typeof v === 'string' && v.length > 0;
const bool: Check = (v) => typeof v === 'boolean';
const ms: Check = (v) => typeof v === 'number' && Number.isFinite(v) && v >= 0;
const oneOf = (...xs: string[]): Check => (v) => typeof v === 'string' && xs.includes(v);
const migration: Check = (v) => {
  if (str(v)) return true;
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const o = v as { command?: unknown; inputs?: unknown };
  const keysOk = Object.keys(o).every((k) => k === 'command' || k === 'inputs');
  const inputsOk = o.inputs === undefined || (Array.isArray(o.inputs) && o.inputs.every(str));
  return keysOk && str(o.command) && inputsOk;
};

const spec: Record<keyof PgOptions, [Check, string]> = {
  server: [str, 'a postgres:// connection URL'],
  binDir: [str, 'a directory path containing initdb and postgres'],
  migrations: [migration, 'a path (directory of .sql files or a JS/TS module) or { command: "shell command", inputs?: ["paths the command reads"] }'],
  seed: [migration, 'a path (directory of .sql files, one .sql file or a JS/TS module) or { command: "shell command" }'],
  isolation: [oneOf('test', 'file'), '"test" or "file"'],
  exposeAs: [(v) => Array.isArray(v) && v.every((x) => typeof x === 'string' && /^[A-Za-z_][A-Za-z0-9_]*$/.test(x)), 'an array of environment variable names'],
  leaks: [oneOf('error', 'warn'), '"error" or "warn"'],
  lateQueries: [oneOf('error', 'warn'), '"error" or "warn"'],
  graceMs: [ms, 'a non-negative number of milliseconds'],
  lockWaitMs: [ms, 'a non-negative number of milliseconds'],
  resetSequences: [bool, 'true or false'],
  keepDatabases: [bool, 'true or false'],
  cacheDir: [(v) => str(v) || v === false, 'a directory path, or false to turn the cache off'],
  prefix: [(v) => typeof v === 'string' && /^[a-z][a-z0-9]{0,15}$/.test(v), 'lowercase letters and digits, starting with a letter, at most 16 characters'],
};

export const optionKeys = Object.keys(spec) as (keyof PgOptions)[];

/** Keys that shape the run (server, template); a docblock may not change them per file. */
const runKeys = new Set<keyof PgOptions>(['server', 'binDir', 'migrations', 'seed', 'cacheDir', 'prefix', 'keepDatabases']);

/** Validate a raw `pg` options object. Throws JESTPG_OPTION_* naming the key and the accepted values. */
export function validate(raw: unknown, base: PgOptions = defaults): PgOptions {
  if (raw === undefined || raw === null) return { ...base };
  if (typeof raw !== 'object' || Array.isArray(raw)) throw errors.optionType('', 'an object', raw);
  const out: PgOptions = { ...base };
  for (const [key, value] of Object.entries(raw as Record<string, unknown>)) {
    const s = spec[key as keyof PgOptions];
    if (!s) throw errors.optionUnknown(key, optionKeys);
    if (value === undefined) continue;
    if (!s[0](value)) throw errors.optionType(key, s[1], value);
    (out as unknown as Record<string, unknown>)[key] = value;
  }
  return out;
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
      if (typeof pg !== 'object' || pg === null || Array.isArray(pg)) throw errors.optionType('', 'an object', pg);
      Object.assign(out, pg);
    }
  }
  for (const [name, value] of Object.entries(pragmas)) {
    if (!name.startsWith('pg-')) continue;
    const key = name.slice(3).replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
    const text = (Array.isArray(value) ? value[value.length - 1] : value).trim();
    out[key] = coercePragma(key, text);
  }
  for (const key of Object.keys(out)) {
    if (runKeys.has(key as keyof PgOptions)) {
      throw errors.optionType(key, 'set in the jest config, not per file (it shapes the whole run)', out[key]);
    }
  }
  return out;
}

function coercePragma(key: string, text: string): unknown {
  if (text === 'true') return true;
  if (text === 'false') return false;
  if (/^\d+$/.test(text)) return Number(text);
  if (key === 'exposeAs') return text.split(/[\s,]+/).filter(Boolean);
  return text;
}
