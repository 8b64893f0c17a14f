/**
 * Migrations and seeds: a directory of .sql files (applied in path order, `*.down.sql` skipped,
 * one simple query per file), a single .sql file, a JS/TS module exporting `async (url) => {}`,
 * or `{ command }` run through the shell with DATABASE_URL / PG* set.
 */
import { spawn } from 'node:child_process';
import { promises as fsp, readFileSync, statSync } from 'node:fs';
import Module from 'node:module';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { pgEnv, withClient } from '../util/admin';
import { errors, messageOf, redactUrl } from '../util/errors';
import { sha256 } from '../util/names';
import type { MigrationSource } from '../util/options';
import { raceAbort } from '../util/settle';

export type Resolved =
  | { kind: 'none' }
  | { kind: 'sql'; root: string; files: string[] }
  | { kind: 'module'; file: string }
  | { kind: 'command'; command: string; cwd: string };

export interface MigrationOptions {
  /** Relative paths are resolved against this (Jest's rootDir); default process.cwd(). */
  rootDir?: string;
  /**
   * Stop when it aborts (the setup step's bound): a command is killed, the SQL connection
   * ended; a module's promise cannot be stopped and is abandoned. Rejects with the signal's reason.
   */
  signal?: AbortSignal;
}

/** Work out what a source is; throws JESTPG_MIGRATIONS_NOT_FOUND for a missing path. */
export async function resolveSource(source: MigrationSource | undefined, opts: MigrationOptions = {}): Promise<Resolved> {
  const rootDir = opts.rootDir ?? process.cwd();
  if (source === undefined) return { kind: 'none' };
  if (typeof source === 'object') return { kind: 'command', command: source.command, cwd: rootDir };
  const p = path.resolve(rootDir, source);
  let st;
  try {
    st = statSync(p);
  } catch {
    throw errors.migrationsNotFound(p);
  }
  if (st.isDirectory()) return { kind: 'sql', root: p, files: await sqlFiles(p) };
  if (/\.sql$/i.test(p)) return { kind: 'sql', root: path.dirname(p), files: [p] };
  return { kind: 'module', file: p };
}

/** Every .sql file under dir (Prisma-style `<ts>_name/migration.sql` included), in path order; `*.down.sql` skipped. */
async function sqlFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string) => {
    const entries = await fsp.readdir(d, { withFileTypes: true });
    for (const e of entries) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) {
        if (e.name !== 'node_modules' && !e.name.startsWith('.')) await walk(p);
      } else if (/\.sql$/i.test(e.name) && !/\.down\.sql$/i.test(e.name)) out.push(p);
    }
  };
  await walk(dir);
  const rel = (p: string) => path.relative(dir, p).split(path.sep).join('/');
  return out.sort((a, b) => (rel(a) < rel(b) ? -1 : rel(a) > rel(b) ? 1 : 0));
}

/**
 * A hash of everything the template is built from: the kind of each source and the contents of
 * its files (a module: its own file; a command: the command line). Paths are hashed relative to
 * the source root, so moving the checkout does not invalidate it.
 */
export async function hashMigrations(
  source: MigrationSource | undefined,
  seed: MigrationSource | undefined,
  opts: MigrationOptions = {},
): Promise<string> {
  const parts: (string | Buffer)[] = [];
  for (const [label, s] of [['migrations', source], ['seed', seed]] as const) {
    const r = await resolveSource(s, opts);
    parts.push(`${label}:${r.kind}`);
    if (r.kind === 'sql') {
      for (const f of r.files) parts.push(path.relative(r.root, f).split(path.sep).join('/'), await fsp.readFile(f));
    } else if (r.kind === 'module') {
      // A migration module usually loads its siblings (Kysely's, TypeORM's migration folders).
      parts.push(path.basename(r.file), ...(await hashTree(path.dirname(r.file))));
    } else if (r.kind === 'command') {
      parts.push(r.command);
      // What the command reads: `inputs`, else the conventional migration folders that exist.
      const rootDir = opts.rootDir ?? process.cwd();
      const inputs = typeof s === 'object' && s.inputs ? s.inputs : CONVENTIONAL_INPUTS;
      for (const input of inputs) parts.push(input, ...(await hashTree(path.resolve(rootDir, input))));
    }
  }
  return sha256(...parts);
}

/** Folders whose contents key a `{ command }` template when it names no `inputs`. */
export const CONVENTIONAL_INPUTS = ['migrations', 'db', 'drizzle', 'prisma', 'seeders', 'seeds', 'src/migrations', 'database'];

/** Paths and contents of the files under `dir` (or of `dir` itself if it is a file), in order; node_modules and dot-entries skipped. */
async function hashTree(dir: string, limit = 5000): Promise<(string | Buffer)[]> {
  const out: (string | Buffer)[] = [];
  const walk = async (p: string, rel: string): Promise<void> => {
    if (out.length / 2 >= limit) return;
    let st;
    try {
      st = await fsp.stat(p);
    } catch {
      return;
    }
    if (st.isFile()) {
      out.push(rel, await fsp.readFile(p));
      return;
    }
    if (!st.isDirectory()) return;
    const names = (await fsp.readdir(p)).filter((n) => !n.startsWith('.') && n !== 'node_modules').sort();
    for (const n of names) await walk(path.join(p, n), rel ? `${rel}/${n}` : n);
  };
  await walk(dir, '');
  return out;
}

/** Apply a source to the database at `url`. */
export async function runMigrations(source: MigrationSource | undefined, url: string, opts: MigrationOptions = {}): Promise<void> {
  const r = await resolveSource(source, opts);
  const rootDir = opts.rootDir ?? process.cwd();
  const { signal } = opts;
  signal?.throwIfAborted();
  switch (r.kind) {
    case 'none':
      return;
    case 'sql':
      return raceAbort(runSqlFiles(r.files, url, rootDir, signal), signal);
    case 'module':
      return raceAbort(runModule(r.file, url, rootDir), signal);
    case 'command':
      return runCommand(r.command, r.cwd, url, signal);
  }
}

async function runSqlFiles(files: string[], url: string, rootDir: string, signal?: AbortSignal): Promise<void> {
  if (files.length === 0) return;
  await withClient(
    url,
    async (c) => {
      // Aborted: end the connection (the statement it runs fails; the template is dropped WITH (FORCE)).
      const stop = () => void c.end().catch(() => undefined);
      signal?.addEventListener('abort', stop, { once: true });
      try {
        await runEach(c);
      } finally {
        signal?.removeEventListener('abort', stop);
      }
    },
    { applicationName: 'jest-environment-pg migrations' },
  );

  async function runEach(c: import('pg').Client): Promise<void> {
    for (const file of files) {
      const text = await fsp.readFile(file, 'utf8');
      try {
        await c.query(text); // no parameters: one simple Query, multi-statement allowed
      } catch (e) {
        throw sqlError(e, text, path.relative(rootDir, file) || file);
      }
    }
  }
}

interface PgError {
  message: string;
  position?: string;
  detail?: string;
  hint?: string;
  where?: string;
  code?: string;
}

/** JESTPG_MIGRATION_FAILED with `file:line:col`, the Postgres message and the offending line. */
export function sqlError(e: unknown, text: string, file: string) {
  const pe = e as PgError;
  const pos = Number(pe.position);
  let where = file;
  let snippet = '';
  if (pos > 0) {
    const before = Array.from(text).slice(0, pos - 1).join('');
    const line = before.split('\n').length;
    const col = before.length - before.lastIndexOf('\n');
    where = `${file}:${line}:${col}`;
    const lineText = text.split('\n')[line - 1] ?? '';
    snippet = `\n    ${lineText.replace(/\t/g, ' ')}\n    ${' '.repeat(Math.max(0, col - 1))}^`;
  }
  const msg = typeof pe?.message === 'string' ? pe.message : messageOf(e);
  let detail = pe.code ? `${msg} (SQLSTATE ${pe.code})` : msg;
  if (pe.detail) detail += `\nDETAIL: ${pe.detail}`;
  if (pe.hint) detail += `\nHINT: ${pe.hint}`;
  if (pe.where) detail += `\nCONTEXT: ${pe.where}`;
  return errors.migrationFailed(where, detail + snippet, e);
}

// tsc would turn `import()` into `require()`; keep a real dynamic import for ES modules.
const dynamicImport = new Function('u', 'return import(u)') as (u: string) => Promise<unknown>;

async function runModule(file: string, url: string, rootDir: string): Promise<void> {
  const rel = path.relative(rootDir, file) || file;
  let mod: unknown;
  try {
    mod = await loadModule(file, rootDir);
  } catch (e) {
    if ((e as { code?: string }).code === 'JESTPG_MIGRATION_FAILED') throw e;
    throw errors.migrationFailed(rel, `could not load the module: ${messageOf(e)}`, e);
  }
  const fn = pickFunction(mod);
  if (!fn) {
    throw errors.migrationFailed(rel, 'the module does not export a function. Export `async (url) => { … }` as default or as module.exports.');
  }
  try {
    await fn(url);
  } catch (e) {
    throw errors.migrationFailed(rel, redact(messageOf(e), url), e);
  }
}

function pickFunction(mod: unknown): ((url: string) => unknown) | undefined {
  let m = mod as { default?: unknown } | ((u: string) => unknown) | undefined;
  for (let i = 0; i < 3 && m; i++) {
    if (typeof m === 'function') return m;
    m = (m as { default?: unknown }).default as typeof m;
  }
  return undefined;
}

const TS_EXT = /\.(c|m)?tsx?$/i;

async function loadModule(file: string, rootDir: string): Promise<unknown> {
  if (/\.mjs$/i.test(file)) return dynamicImport(pathToFileURL(file).href);
  delete require.cache[file];
  if (!TS_EXT.test(file)) {
    try {
      return require(file);
    } catch (e) {
      if ((e as { code?: string }).code === 'ERR_REQUIRE_ESM') return dynamicImport(pathToFileURL(file).href);
      throw e;
    }
  }
  // TypeScript: a registered loader (ts-node, tsx, @swc-node, Node's type stripping) first…
  const hooks = require.extensions as Record<string, unknown>;
  if (hooks['.ts']) return require(file);
  // …else transpile with whatever the project has, and hook .ts for its own imports while loading.
  const transpile = findTranspiler([path.dirname(file), rootDir, process.cwd()]);
  if (!transpile) {
    throw errors.migrationFailed(
      path.relative(rootDir, file) || file,
      'it is TypeScript and no transpiler was found. Install one of typescript, @swc/core or esbuild in your project, ' +
        'register a loader (e.g. NODE_OPTIONS="--require ts-node/register"), or compile the migrations to JavaScript.',
    );
  }
  const exts = ['.ts', '.cts', '.mts', '.tsx'];
  const saved = exts.map((x) => hooks[x]);
  const hook = (m: NodeModule & { _compile(code: string, f: string): void }, f: string) => m._compile(transpile(readFileSync(f, 'utf8'), f), f);
  for (const x of exts) hooks[x] = hook;
  try {
    return require(file);
  } finally {
    exts.forEach((x, i) => {
      if (saved[i]) hooks[x] = saved[i];
      else delete hooks[x];
    });
  }
}

type Transpile = (code: string, file: string) => string;

function findTranspiler(from: string[]): Transpile | undefined {
  const req = Module.createRequire(path.join(from[0], 'noop.js'));
  const tryLoad = (name: string): unknown => {
    try {
      return req(require.resolve(name, { paths: from }));
    } catch {
      try {
        return require(name);
      } catch {
        return undefined;
      }
    }
  };
  const ts = tryLoad('typescript') as typeof import('typescript') | undefined;
  if (ts?.transpileModule) {
    return (code, file) =>
      ts.transpileModule(code, {
        fileName: file,
        compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2020, esModuleInterop: true, sourceMap: false },
      }).outputText;
  }
  const swc = tryLoad('@swc/core') as { transformSync?: (c: string, o: unknown) => { code: string } } | undefined;
  if (swc?.transformSync) {
    return (code, file) =>
      swc.transformSync!(code, {
        filename: file,
        jsc: { parser: { syntax: 'typescript', tsx: file.endsWith('x') }, target: 'es2020' },
        module: { type: 'commonjs' },
      }).code;
  }
  const esbuild = tryLoad('esbuild') as { transformSync?: (c: string, o: unknown) => { code: string } } | undefined;
  if (esbuild?.transformSync) {
    return (code, file) => esbuild.transformSync!(code, { loader: file.endsWith('x') ? 'tsx' : 'ts', format: 'cjs', target: 'es2020' }).code;
  }
  return undefined;
}

function runCommand(command: string, cwd: string, url: string, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    let output = '';
    const child = spawn(command, {
      shell: true,
      cwd,
      env: { ...process.env, ...pgEnv(url) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    // Aborted (the step's bound): kill it and settle once it is gone.
    const stop = () => {
      try {
        child.kill('SIGKILL');
      } catch {
        // gone already
      }
    };
    signal?.addEventListener('abort', stop, { once: true });
    child.on('close', () => signal?.removeEventListener('abort', stop));
    const keep = (d: Buffer) => {
      output += d.toString();
      if (output.length > 20_000) output = output.slice(-8000);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    child.on('error', (e) => reject(errors.migrationFailed(`command "${command}"`, `could not start it: ${e.message}`, e)));
    child.on('close', (code, sig) => {
      if (signal?.aborted) return reject(signal.reason);
      if (code === 0) return resolve();
      const tail = output.trim().split('\n').slice(-40).join('\n');
      reject(
        errors.migrationFailed(
          `command "${command}" (run in ${cwd})`,
          `it exited with ${sig ? `signal ${sig}` : `code ${code}`}${tail ? `. Its output:\n${redact(tail, url)}` : ' and printed nothing.'}`,
        ),
      );
    });
  });
}

/** Remove the URL's password (and the URL itself, redacted) from text shown to the user. */
function redact(text: string, url: string): string {
  let out = text.split(url).join(redactUrl(url));
  try {
    const pw = decodeURIComponent(new URL(url).password);
    if (pw) out = out.split(pw).join('***');
  } catch {
    // not a URL
  }
  return out;
}
