/**
 * The template database: migrations + seed applied once into `<prefix>_tpl_<hash>`, built under
 * an advisory lock and marked complete (IS_TEMPLATE) last, so a crashed build is never reused.
 */
import type { Client } from 'pg';
import { dropDatabase, terminateBackends, withClient, withDatabase, type Queryable } from '../util/admin';
import { hashMigrations, runMigrations } from './migrations';
import { packageVersion } from '../util/version';
import { installMovingClock } from './clock';
import { ident, literal, lockKeyFor, marker, noteOf, sha256, templateName } from '../util/names';
import type { MigrationSource } from '../util/options';
import { sleep } from '../util/text';

export interface TemplateOptions {
  prefix: string;
  migrations?: MigrationSource;
  seed?: MigrationSource;
  /** server_version_num of the server the template lives on. */
  versionNum: number;
  rootDir?: string;
  /** The name, when the caller computed it already (templateNameFor). */
  name?: string;
  /** 'transaction' (default): install the moving clock (src/schema/clock.ts). */
  time?: 'transaction' | 'file';
  /** The setup step's bound: waiting for the build lock ends the connection; migrations stop and the half-built template is dropped. */
  signal?: AbortSignal;
}

export interface TemplateResult {
  name: string;
  /** false when an existing complete template was reused. */
  built: boolean;
  ms: number;
}

/** The template's name for these inputs (no database access). */
export async function templateNameFor(opts: TemplateOptions): Promise<string> {
  const contents = await hashMigrations(opts.migrations, opts.seed, { rootDir: opts.rootDir });
  const major = Math.floor(opts.versionNum / 10000);
  return templateName(opts.prefix, sha256(contents, `pg${major}`, `jest-environment-pg@${packageVersion()}`, opts.time === 'file' ? 'clock0' : 'clock1'));
}

export { lockKeyFor } from '../util/names';

/**
 * The key of the "in use" advisory lock of a template: every live run holds it shared (on its
 * lease connection), from before it looks for its template until the run ends; the template sweep
 * drops only templates whose key it can take exclusively.
 */
export function useLockKey(name: string): string {
  return lockKeyFor(`${name} in use`);
}

/** Make sure the template exists and is complete; returns its name. */
export async function ensureTemplate(adminUrl: string, opts: TemplateOptions): Promise<string> {
  return (await ensureTemplateDetailed(adminUrl, opts)).name;
}

export async function ensureTemplateDetailed(adminUrl: string, opts: TemplateOptions): Promise<TemplateResult> {
  const t0 = performance.now();
  const name = opts.name ?? (await templateNameFor(opts));
  const key = lockKeyFor(name);
  return withClient(
    adminUrl,
    async (c) => {
      const reused = async (look: TemplateLook) => {
        await stampUsed(c, name, look.comment);
        return { name, built: false, ms: Math.round(performance.now() - t0) };
      };
      // Fast path without the lock: a complete template is never modified (but its comment).
      const first = await lookForTemplate(c, name);
      if (first.complete) return reused(first);
      await lockTemplate(c, key, opts.signal);
      try {
        const look = await lookForTemplate(c, name);
        if (look.complete) return reused(look);
        // A half-built one (a crashed or failed build) is never reused.
        if (look.exists) await dropDatabase(c, name, opts.versionNum);
        await createAndMigrate(c, adminUrl, name, opts);
        await sealTemplate(c, name);
        return { name, built: true, ms: Math.round(performance.now() - t0) };
      } finally {
        await c.query('SELECT pg_advisory_unlock($1::bigint)', [key]).catch(() => undefined);
      }
    },
    { applicationName: 'jest-environment-pg template' },
  );
}

/**
 * What a look for a template found: nothing, a half-built one (a crashed or failed build), or a
 * complete one; and its comment (what stampUsed keeps). A complete template is never modified
 * (but its comment), so no lock is needed to look.
 */
export interface TemplateLook {
  exists: boolean;
  complete: boolean;
  comment: string | null;
}

/** The look of a row of TEMPLATE_LOOK_COLUMNS (none: no such database). */
export function templateLookOf(row: { tpl_complete: boolean | null; tpl_comment: string | null } | undefined): TemplateLook {
  return { exists: row?.tpl_complete != null, complete: row?.tpl_complete === true, comment: row?.tpl_comment ?? null };
}

async function lookForTemplate(c: Client, name: string): Promise<TemplateLook> {
  return templateLookOf((await c.query<{ tpl_complete: boolean | null; tpl_comment: string | null }>(`SELECT ${TEMPLATE_LOOK_COLUMNS}`, [name])).rows[0]);
}

/** Wait for the template's lock (another build may hold it); aborted meanwhile: nothing of ours exists yet, end the connection. */
async function lockTemplate(c: Client, key: string, signal: AbortSignal | undefined): Promise<void> {
  const giveUp = () => void c.end().catch(() => undefined);
  signal?.addEventListener('abort', giveUp, { once: true });
  await c.query('SELECT pg_advisory_lock($1::bigint)', [key]);
  signal?.removeEventListener('abort', giveUp);
  signal?.throwIfAborted();
}

/** Create the template database with our marker and run the migrations, the seed and the clock in it. */
async function createAndMigrate(c: Client, adminUrl: string, name: string, opts: TemplateOptions): Promise<void> {
  // FILE_COPY (15+): copying template1's files beats WAL-logging every page (fsync is off on the embedded server).
  await c.query(`CREATE DATABASE ${ident(name)}${opts.versionNum >= 150000 ? ' STRATEGY FILE_COPY' : ''}`);
  await c.query(`COMMENT ON DATABASE ${ident(name)} IS ${literal(marker('template'))}`);
  const url = withDatabase(adminUrl, name);
  try {
    await runMigrations(opts.migrations, url, { rootDir: opts.rootDir, signal: opts.signal });
    await runMigrations(opts.seed, url, { rootDir: opts.rootDir, signal: opts.signal });
    // now() per client transaction, not per file (src/schema/clock.ts).
    if (opts.time !== 'file') await withClient(url, installMovingClock, { applicationName: 'jest-environment-pg template', signal: opts.signal });
  } catch (e) {
    // Not marked complete; drop it so no half-built database lingers (the next run rebuilds it).
    await dropDatabase(c, name, opts.versionNum).catch(() => undefined);
    throw e;
  }
}

/** Nobody connected, our marker first in its comment, then marked complete (and closed to connections). */
async function sealTemplate(c: Client, name: string): Promise<void> {
  // CREATE DATABASE … TEMPLATE needs no one connected to the source. A migration's pool that
  // was just ended may still be disconnecting (pool.end() resolves first): give it up to 2 s,
  // since terminating a connection its pool still watches makes that pool emit an error.
  for (let waited = 0; waited < 2000; waited += 20) {
    const r = await c.query('SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1', [name]);
    if (r.rows[0].n === 0) break;
    await sleep(20);
  }
  await terminateBackends(c, [name]);
  // A migration may have commented the database: our marker stays first (it proves the
  // template is ours), the migration's comment follows it (and is carried to every clone).
  const cm = (await c.query<{ comment: string | null }>(`SELECT shobj_description(oid, 'pg_database') AS comment FROM pg_database WHERE datname = $1`, [name])).rows[0]?.comment;
  const wanted = marker('template', noteOf(cm), Date.now() / 1000);
  if (cm !== wanted) await c.query(`COMMENT ON DATABASE ${ident(name)} IS ${literal(wanted)}`);
  // Mark complete last, and refuse connections from now on so clones never find one.
  await c.query(`ALTER DATABASE ${ident(name)} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false`);
}

/**
 * Mark the template as used now (its comment's first line; `comment` is the current one, from a
 * TemplateLook), so the sweep keeps the recently used ones. Best effort: a role that may not
 * comment on it only loses that ordering.
 */
export async function stampUsed(c: Queryable, name: string, comment: string | null): Promise<void> {
  try {
    await c.query(`COMMENT ON DATABASE ${ident(name)} IS ${literal(marker('template', noteOf(comment), Date.now() / 1000))}`);
  } catch {
    // not the owner: no stamp
  }
}

/**
 * Columns that look for the template `$1`, alone or in the same round trip as other work (the
 * run's lease): read them with templateLookOf.
 */
export const TEMPLATE_LOOK_COLUMNS =
  `(SELECT datistemplate FROM pg_catalog.pg_database WHERE datname = $1) AS tpl_complete, ` +
  `(SELECT pg_catalog.shobj_description(oid, 'pg_database') FROM pg_catalog.pg_database WHERE datname = $1) AS tpl_comment`;
