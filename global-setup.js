module.exports = require('./dist/jest/global-setup').default;
