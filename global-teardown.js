module.exports = require('./dist/jest/global-teardown').default;
