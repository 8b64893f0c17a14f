module.exports = require('./dist/global-teardown').default;
