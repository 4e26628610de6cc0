#!/usr/bin/env node
// `npm run mutate [-- FILE|FOLDER ...]`: Stryker on all of lib/ (no argument) or on the given lib/
// files or folders (targets first, then any Stryker --flags). Each target set keeps its own incremental file under reports/, so a run on one
// file neither reuses nor overwrites the whole tree's results.
'use strict';
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const args = process.argv.slice(2);
// Targets first; from the first --flag on, everything goes to Stryker (flags may take values).
const firstFlag = args.findIndex((a) => a.startsWith('-'));
const targets = firstFlag < 0 ? args : args.slice(0, firstFlag);
const passOn = firstFlag < 0 ? [] : args.slice(firstFlag);

const globs = targets.map((t) => {
  const rel = path.relative(root, path.resolve(t)).split(path.sep).join('/');
  if (rel.startsWith('..') || !fs.existsSync(path.join(root, rel))) {
    console.error(`mutate: ${t} is not a file or folder of this project`);
    process.exit(2);
  }
  return fs.statSync(path.join(root, rel)).isDirectory() ? `${rel.replace(/\/$/, '')}/**/*.ts` : rel;
});

const strykerArgs = ['run', 'stryker.config.json', ...passOn];
if (globs.length > 0) {
  const slug = targets.map((t) => path.relative(root, path.resolve(t)).replace(/[^A-Za-z0-9]+/g, '_')).join('+');
  // The config's exclusions still apply to a folder given here.
  const excluded = ['!lib/cli/**', '!lib/native.ts', '!lib/index.ts', '!lib/os/index.ts'];
  strykerArgs.push('--mutate', [...globs, ...excluded].join(','));
  strykerArgs.push('--incrementalFile', `reports/stryker-incremental/${slug}.json`);
}

const stryker = path.join(root, 'node_modules', '@stryker-mutator', 'core', 'bin', 'stryker.js');
runForwardingSignals(process.execPath, [stryker, ...strykerArgs]);

/** Runs Stryker; a SIGTERM or SIGINT (CI's timeout, ^C) is passed on so that it cleans up its workers. */
function runForwardingSignals(cmd, argv) {
  const child = spawn(cmd, argv, { cwd: root, stdio: 'inherit' });
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP']) process.on(sig, () => child.kill(sig));
  child.on('exit', (code, signal) => process.exit(code ?? (signal ? 128 : 1)));
}
