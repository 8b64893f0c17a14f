// The Vitest environment `pg` (see jest-environment-pg/vitest).
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
export default require('./dist/vitest/environment.js').default;
