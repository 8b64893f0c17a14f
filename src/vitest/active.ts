/**
 * Which Vitest worker runs its files in the `pg` environment: the environment says so (per
 * worker, or per file through `// @vitest-environment pg`), the runner asks before each file.
 * Per process, or per thread under the `threads` pool (each thread has its own module instances).
 */
export interface ActiveEnvironment {
  /** The environment's options as Vitest passed them (`environmentOptions`, or the file's own). */
  options: Record<string, unknown>;
}

/** How the runner's module is named in `test.runner` (the plugin sets it; the environment checks it). */
export const RUNNER_MARK = 'vitest-runner.mjs';

/** Where the plugin says the running Vitest's dist directory is (its runner classes, its version). */
export const VITEST_DIST_ENV = 'JEST_PG_VITEST_DIST';

const key = Symbol.for('jest-environment-pg.vitest.environment');
type Holder = { [key]?: ActiveEnvironment };

/** Kept on globalThis: the environment and the runner may be loaded as separate module instances. */
export function setActiveEnvironment(env: ActiveEnvironment | undefined): void {
  const g = globalThis as Holder;
  if (env) g[key] = env;
  else delete g[key];
}

export function activeEnvironment(): ActiveEnvironment | undefined {
  return (globalThis as Holder)[key];
}
