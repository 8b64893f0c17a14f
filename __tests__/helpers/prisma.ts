/**
 * The Prisma fixture's client is generated code (git-ignored), made the way a project makes it,
 * once per checkout and schema: several test files use it (under Jest and under Vitest), and Jest
 * runs them at the same time, so generation takes a lock and is skipped when the client on disk
 * was generated from the current schema by the installed Prisma.
 *
 * Offline, `prisma generate` would first try to download the native schema engine, which generate
 * does not use (Prisma 7 generates with WebAssembly): pointing PRISMA_SCHEMA_ENGINE_BINARY at any
 * existing file skips that download. See docs/recipes.md.
 */
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT } from './jest-run';
import { waitFor } from './e2e';

const FIXTURE = path.join(ROOT, 'fixtures', 'prisma');
const STAMP = path.join(FIXTURE, 'generated', '.schema-hash');
const LOCK = path.join(FIXTURE, '.generating');
/** A lock older than this was left by a killed run. */
const STALE_MS = 120_000;

/** The schema and the generator's version: a client made from either before is made again. */
function schemaHash(): string {
  const version = (JSON.parse(fs.readFileSync(path.join(ROOT, 'node_modules', 'prisma', 'package.json'), 'utf8')) as { version: string }).version;
  return createHash('sha256').update(version).update('\0').update(fs.readFileSync(path.join(FIXTURE, 'prisma', 'schema.prisma'))).digest('hex');
}

function tryLock(): boolean {
  try {
    fs.mkdirSync(LOCK);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    const age = Date.now() - (fs.statSync(LOCK, { throwIfNoEntry: false })?.mtimeMs ?? Date.now());
    if (age > STALE_MS) fs.rmSync(LOCK, { recursive: true, force: true });
    return false;
  }
}

export async function generatePrismaClient(): Promise<void> {
  const hash = schemaHash();
  const current = () => fs.existsSync(STAMP) && fs.readFileSync(STAMP, 'utf8') === hash;
  if (current()) return;
  await waitFor('the lock on generating the Prisma client', tryLock, STALE_MS + 30_000, 100);
  try {
    if (current()) return;
    execFileSync(process.execPath, [path.join(ROOT, 'node_modules', 'prisma', 'build', 'index.js'), 'generate'], {
      cwd: FIXTURE,
      env: { ...process.env, PRISMA_SCHEMA_ENGINE_BINARY: process.env.PRISMA_SCHEMA_ENGINE_BINARY ?? process.execPath, PRISMA_HIDE_UPDATE_MESSAGE: '1', CHECKPOINT_DISABLE: '1' },
      stdio: 'pipe',
    });
    fs.writeFileSync(STAMP, hash);
  } finally {
    fs.rmSync(LOCK, { recursive: true, force: true });
  }
}
