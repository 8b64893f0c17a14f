/**
 * The README's Vitest recipes on real ORMs: the Drizzle (node-postgres and postgres.js drivers,
 * `drizzle-kit migrate`), Kysely (its Migrator in a TypeScript module) and Prisma 7 (pg adapter,
 * its migrations folder as .sql files, the client generated as a project does) fixtures' own test
 * files, written for Jest, run by Vitest 4 through the plugin with Vitest's globals. Kysely's
 * Migrator imports .ts migration files at run time, in Vitest's main process: a TypeScript loader
 * there (`NODE_OPTIONS="--import tsx"`) is what it needs, as the README says.
 */
import { cleanup, settle } from '../helpers/jest-run';
import { capture } from '../helpers/e2e';
import { runVitest } from '../helpers/vitest-run';
import { generatePrismaClient } from '../helpers/prisma';

const dirs: string[] = [];
afterAll(() => dirs.forEach(cleanup));
beforeAll(() => generatePrismaClient(), 120_000);

test.each([
  ['drizzle', 12, { TSX_DISABLE_CACHE: '1' }],
  ['kysely', 6, { NODE_OPTIONS: '--import tsx', TSX_DISABLE_CACHE: '1' }],
  ['prisma', 5, {}],
] as const)('%s under Vitest: its Jest-written tests pass through the sandbox; nothing left', async (orm, tests, env) => {
  const run = await runVitest('vitest-orms', { args: ['--config', `${orm}.config.mjs`], env: { ...env } });
  dirs.push(run.sandboxDir);
  capture(`vitest-${orm}`, run);
  expect(run.output).toMatch(new RegExp(`Tests\\s+${tests} passed \\(${tests}\\)`));
  expect(run.output).toMatch(/jest-environment-pg: dropped 1 database, terminated 0 backends in \d+ ms/);
  expect(run.code).toBe(0);
  expect(await settle(run.sandboxDir)).toEqual({ files: [], processes: [] });
}, 150_000);
