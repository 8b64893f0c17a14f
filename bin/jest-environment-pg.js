#!/usr/bin/env node
'use strict';
// jest-environment-pg run | doctor | sweep — see `jest-environment-pg --help`.
const { main } = require('../dist/cli/cli.js');

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`jest-environment-pg: ${(err && err.stack) || err}\n`);
    process.exit(1);
  },
);
