#!/usr/bin/env node
// Builds the prebuilt binary the package ships: prebuilds/linux-x64/dmamem.napi.node, the addon
// compiled with Node-API only (binding.gyp's napi_only=1), so that one binary loads on every Node
// version from 20 on. It builds in a scratch copy of binding.gyp and native/, leaving this
// checkout's build/ (the faster V8 build that `npm install` compiles here) alone.
// Run by `npm pack` / `npm publish` (prepack); by hand: node scripts/prebuild.js
'use strict';
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'dmamem-prebuild-'));
try {
  fs.copyFileSync(path.join(root, 'binding.gyp'), path.join(scratch, 'binding.gyp'));
  fs.cpSync(path.join(root, 'native'), path.join(scratch, 'native'), { recursive: true });
  fs.symlinkSync(path.join(root, 'node_modules'), path.join(scratch, 'node_modules'), 'dir');
  const nodeGyp = require.resolve('node-gyp/bin/node-gyp.js', { paths: [root] });
  // Under npm, npm_config_nodedir (npm's nodedir setting) reaches node-gyp through the environment.
  execFileSync(process.execPath, [nodeGyp, 'rebuild', '--', '-Dnapi_only=1'], { cwd: scratch, stdio: ['ignore', 'ignore', 'inherit'] });
  const out = path.join(root, 'prebuilds', 'linux-x64');
  fs.mkdirSync(out, { recursive: true });
  fs.copyFileSync(path.join(scratch, 'build', 'Release', 'dmamem.node'), path.join(out, 'dmamem.napi.node'));
  process.stdout.write(`dmamem: built ${path.relative(root, path.join(out, 'dmamem.napi.node'))} (Node-API only)\n`);
} finally {
  fs.rmSync(scratch, { recursive: true, force: true });
}
