/**
 * jest-environment-pg: every test file in one PostgreSQL transaction, every test in a
 * savepoint, every connection through a sandbox that tracks it.
 */
import PgEnvironment from './jest/environment';

export default PgEnvironment;
export { PgEnvironment as TestEnvironment };
export type { PgOptions, MigrationSource } from './util/options';
export { JestPgError, type ErrorCode } from './util/errors';
