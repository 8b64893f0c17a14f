/**
 * Query builders and ORMs through the sandbox, each fixture a small real project whose
 * migrations run the way that tool runs them: create/read/update, a transaction, a unique
 * violation followed by more work, isolation between two tests.
 *
 *   knex       migrations: { command: 'npx knex migrate:latest' }                    JS
 *   kysely     migrations: './migrate.ts' (TS module, Kysely's Migrator + files)      ts-jest
 *   drizzle    migrations: { command: 'npx drizzle-kit migrate' } (node-postgres and postgres.js)  @swc/jest
 *   typeorm    migrations: './migrate.js' (JS module, DataSource#runMigrations)       ts-jest, decorators
 *   sequelize  migrations + seed: { command: 'npx sequelize-cli db:migrate' / 'db:seed:all' }  JS
 *   prisma     migrations: './prisma/migrations' (Prisma's folder as .sql files), @prisma/adapter-pg  @swc/jest
 */
import { expectRun } from '../helpers/expect-run';
import { cleanup, runJest, settle, type JestRun } from '../helpers/jest-run';
import { generatePrismaClient } from '../helpers/prisma';

const dirs: string[] = [];
afterAll(() => dirs.forEach(cleanup));

beforeAll(() => generatePrismaClient(), 120_000);

test.each([
  ['knex', 6],
  ['kysely', 6],
  ['drizzle', 12],
  ['typeorm', 7],
  ['sequelize', 8],
  ['prisma', 5],
])('%s: every test passes, nothing is left behind', async (fixture, passed) => {
  const run = await runFixture(fixture);
  expect(run.output).not.toMatch(TEMPLATE_RACE);
  await expectRun(run, { passed });
});

async function runFixture(fixture: string): Promise<JestRun> {
  // drizzle-kit loads drizzle.config.ts through tsx, which would keep a cache in $TMPDIR/tsx-<uid>.
  const run = await runJest(fixture, { args: ['--runInBand'], env: { TSX_DISABLE_CACHE: '1' } });
  dirs.push(run.sandboxDir);
  return run;
}

/**
 * Was blocked on src/schema/template.ts (fixed: the build waits for the template's backends): a migration module that ends its own
 * pg Pool (Kysely `db.destroy()`, TypeORM `ds.destroy()`: `await pool.end()`) returns while the
 * pool's backends are still closing — pg-pool's end() resolves once it has *asked* its idle
 * clients to end (measured: 8 of 20 times a backend was still in pg_stat_activity right after
 * `await pool.end()`). The template build then runs `pg_terminate_backend` on the template's
 * backends; the closing client receives FATAL 57P01, pg's pool re-emits it as 'error' with no
 * listener, and Jest's main process dies in globalSetup ("Unhandled 'error' event … 57P01").
 * Seen in about 1 of 3 grouped e2e runs. Fix: before terminating, wait (bounded) for the
 * template's backends to go away on their own.
 */
const TEMPLATE_RACE = /Unhandled 'error' event[\s\S]*57P01/;

test('a migration module that ends its pg Pool never crashes Jest (template build waits for its backends)', async () => {
  for (let i = 0; i < 3; i++) {
    const run = await runFixture('kysely');
    expect(run.output).not.toMatch(TEMPLATE_RACE);
    await expectRun(run, { passed: 6 });
  }
});
