#!/usr/bin/env node
// The dmamem command: `dmamem info | demo | bench [--json] [--quick]`. Compiled code lives in dist/.
'use strict';
require('../dist/lib/cli/main.js')
  .main(process.argv.slice(2))
  .then((code) => { process.exitCode = code; })
  .catch((err) => { console.error(err && err.stack ? err.stack : err); process.exitCode = 1; });
