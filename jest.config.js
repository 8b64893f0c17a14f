/** Our own test suite (not the preset users get: that is jest-preset.js). */
module.exports = {
  testMatch: ['<rootDir>/__tests__/**/*.test.ts'],
  transform: { '^.+\\.ts$': ['@swc/jest', { jsc: { target: 'es2022' } }] },
  testEnvironment: 'node',
  testTimeout: 60000,
  maxWorkers: 2,
};
