/**
 * `pg(options)`: the one line a Vitest config needs. It sets the `pg` environment (or leaves it to
 * files that opt in with `// @vitest-environment pg`), the runner that gives each test its
 * savepoint, the global setup that starts and ends the run, and the options.
 */
import path from 'node:path';
import type { PgOptions } from '../util/options';
import { VITEST_DIST_ENV } from './active';

export interface PgPluginOptions {
  /** Set `environment` for every file (default). false: only files with `// @vitest-environment pg` use the sandbox. */
  environment?: boolean;
}

/** The package's root (where the .mjs entries Vitest loads are). */
const packageRoot = path.join(__dirname, '..', '..');

export function pg(options: Partial<PgOptions> = {}, plugin: PgPluginOptions = {}) {
  return {
    name: 'jest-environment-pg',
    config() {
      return {
        test: {
          ...(plugin.environment === false ? {} : { environment: path.join(packageRoot, 'vitest-environment.mjs') }),
          environmentOptions: { pg: options },
          runner: path.join(packageRoot, 'vitest-runner.mjs'),
          globalSetup: [path.join(packageRoot, 'vitest-global-setup.mjs')],
        },
      };
    },
    // The runner extends the running Vitest's own runner (not whichever `vitest` our package resolves).
    configureVitest({ vitest }: { vitest: { distPath?: string } }) {
      if (vitest.distPath) process.env[VITEST_DIST_ENV] = vitest.distPath;
    },
  };
}
