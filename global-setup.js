module.exports = require('./dist/global-setup').default;
