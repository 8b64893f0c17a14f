/** Our own test suite (not the preset users get: that is jest-preset.js). */
module.exports = {
  testMatch: ['<rootDir>/__tests__/**/*.test.ts'],
  transform: { '^.+\\.ts$': ['@swc/jest', { jsc: { target: 'es2022' } }] },
  testEnvironment: 'node',
  testTimeout: 60000,
  maxWorkers: 2,
  reporters: ['default', '<rootDir>/__tests__/suite/summary-reporter.js'],
  // After the whole suite: nothing it created remains (see __tests__/suite/leftovers.js).
  globalSetup: '<rootDir>/__tests__/suite/global-setup.js',
  globalTeardown: '<rootDir>/__tests__/suite/global-teardown.js',
};
