/**
 * jest-environment-pg: every test file in one PostgreSQL transaction, every test in a
 * savepoint, every connection through a sandbox that tracks it.
 */
import PgEnvironment from './environment';

export default PgEnvironment;
export { PgEnvironment as TestEnvironment };
export type { PgOptions, MigrationSource } from './options';
export { JestPgError, type ErrorCode } from './errors';
