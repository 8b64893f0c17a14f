const path = require('path');

/** `preset: 'jest-environment-pg'`: the environment plus the global setup/teardown that make runs fast. */
module.exports = {
  testEnvironment: path.join(__dirname, 'dist', 'index.js'),
  globalSetup: path.join(__dirname, 'global-setup.js'),
  globalTeardown: path.join(__dirname, 'global-teardown.js'),
};
