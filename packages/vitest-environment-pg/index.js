// `environment: 'pg'` and `// @vitest-environment pg` resolve to this package: the environment of
// jest-environment-pg/vitest. The plugin is re-exported for configs that import from here.
import vitest from 'jest-environment-pg/vitest';

export { default } from 'jest-environment-pg/vitest-environment';
export const pg = vitest.pg;
