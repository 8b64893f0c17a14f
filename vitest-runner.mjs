// Vitest's `test.runner` (set by the plugin of jest-environment-pg/vitest): the sandbox's runner
// over the running Vitest's own runner class.
import { createRequire } from 'node:module';
import path from 'node:path';

const require = createRequire(import.meta.url);
const { sandboxRunner, VITEST_DIST_ENV } = require('./dist/vitest/runner.js');
const dist = process.env[VITEST_DIST_ENV];
const entry = (name, bare) => (dist ? path.join(dist, `${name}.js`) : bare);

// Vitest 4.1+: the runner class and its hooks' accessor on the main entry; before: vitest/runners and vitest/suite.
const main = await import(entry('index', 'vitest'));
const Base = main.TestRunner?.getSuiteHooks ? main.TestRunner : (await import(entry('runners', 'vitest/runners'))).VitestTestRunner;
const getHooks = main.TestRunner?.getSuiteHooks ?? (await import(entry('suite', 'vitest/suite'))).getHooks;

export default sandboxRunner(Base, getHooks);
