/**
 * The Vitest environment `pg` (`environment: 'pg'` resolves to the `vitest-environment-pg` package,
 * `// @vitest-environment pg` opts one file in). Node's globals are left as they are; the
 * environment marks its worker so the runner (src/vitest/runner.ts) puts the files it runs on the
 * sandbox. Vitest sets an environment up per worker, not per file: the file lifecycle lives in the
 * runner, which also owns the per-test boundaries an environment cannot see.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { JestPgError } from '../util/errors';
import { RUNNER_MARK, setActiveEnvironment } from './active';
import { VITEST_DIST_ENV } from './active';

interface WorkerStateLike {
  config?: { runner?: string };
}

/** The running Vitest's major version, when the plugin said where it is. */
function vitestMajor(): number | undefined {
  const dist = process.env[VITEST_DIST_ENV];
  if (!dist) return undefined;
  try {
    return Number((JSON.parse(readFileSync(path.join(dist, '..', 'package.json'), 'utf8')) as { version: string }).version.split('.')[0]);
  } catch {
    return undefined;
  }
}

const major = vitestMajor();

const environment = {
  name: 'pg',
  viteEnvironment: 'ssr',
  // Vitest 3 requires it; Vitest 4 warns about it.
  ...(major !== undefined && major >= 4 ? {} : { transformMode: 'ssr' }),
  setup(_global: unknown, options: Record<string, unknown> | undefined) {
    const state = (globalThis as { __vitest_worker__?: WorkerStateLike }).__vitest_worker__;
    const runner = state?.config?.runner;
    if (state && !(runner && runner.includes(RUNNER_MARK))) {
      throw new JestPgError(
        'JESTPG_VITEST_SETUP',
        `the Vitest environment "pg" runs without the jest-environment-pg runner${runner ? ` (test.runner is ${JSON.stringify(runner)})` : ''}, so tests would get no savepoints. ` +
          `Add the plugin to vitest.config: plugins: [pg({ migrations: './migrations' })] with import { pg } from 'jest-environment-pg/vitest' (it sets the runner and the global setup).`,
      );
    }
    setActiveEnvironment({ options: options ?? {} });
    return {
      teardown() {
        setActiveEnvironment(undefined);
      },
    };
  },
};

export default environment;
