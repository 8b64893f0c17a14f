/** `jest-environment-pg/vitest`: the Vitest plugin, environment and runner factory. */
export { pg, type PgPluginOptions } from './plugin';
export { default as environment } from './environment';
export { sandboxRunner, vitestWorkerId, VITEST_DIST_ENV } from './runner';
export type { PgOptions, MigrationSource } from '../util/options';
export { JestPgError, type ErrorCode } from '../util/errors';
