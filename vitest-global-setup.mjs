// Vitest's globalSetup (set by the plugin of jest-environment-pg/vitest): starts and ends the run.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
export default require('./dist/vitest/global-setup.js').default;
