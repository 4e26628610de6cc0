#!/usr/bin/env node
// CI's mutation step: Stryker on the lines of lib/ that the last commit added or changed (git diff
// against HEAD~1, as Stryker mutation ranges file:start-end), or on a fixed small sample when the
// commit touched no lib/ code. Informative: it prints the score and survivors; the caller bounds it
// in time and does not fail CI on the score.
// Usage: node scripts/mutate-changed.js [base-ref] [--list]   (--list: print the targets only)
'use strict';
const { spawn, spawnSync } = require('node:child_process');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const args = process.argv.slice(2);
const listOnly = args.includes('--list');
const base = args.find((a) => !a.startsWith('--')) ?? 'HEAD~1';
const SAMPLE = ['lib/dma/iova.ts'];
/** Not mutated (as in stryker.config.json): the CLI, the addon loader and re-export barrels. */
const EXCLUDED = /^lib\/(cli\/|native\.ts$|index\.ts$|os\/index\.ts$)/;
/** Keep a run inside its time box: at most this many changed lines are mutated. */
const MAX_LINES = 150;

function changedRanges() {
  const d = spawnSync('git', ['diff', '-U0', '--diff-filter=AM', base, '--', 'lib/'], { cwd: root, encoding: 'utf8' });
  if (d.status !== 0) {
    console.log(`mutate-changed: no diff against ${base} (${(d.stderr || '').trim()}); using the sample`);
    return [];
  }
  const ranges = [];
  let file = null;
  let lines = 0;
  for (const line of d.stdout.split('\n')) {
    const f = /^\+\+\+ b\/(.+)$/.exec(line);
    if (f) {
      file = f[1].endsWith('.ts') && !EXCLUDED.test(f[1]) ? f[1] : null;
      continue;
    }
    const h = /^@@ -\S+ \+(\d+)(?:,(\d+))? @@/.exec(line);
    if (!h || file === null) continue;
    const start = Number(h[1]);
    const count = h[2] === undefined ? 1 : Number(h[2]);
    if (count === 0 || lines >= MAX_LINES) continue; // a pure deletion has no new lines to mutate
    const take = Math.min(count, MAX_LINES - lines);
    lines += take;
    ranges.push(`${file}:${start}-${start + take - 1}`);
  }
  return ranges;
}

let targets = changedRanges();
if (targets.length === 0) targets = SAMPLE;
console.log(`mutate-changed: mutating ${targets.join(' ')}`);
if (listOnly) process.exit(0);
const stryker = path.join(root, 'node_modules', '@stryker-mutator', 'core', 'bin', 'stryker.js');
runForwardingSignals(process.execPath, [
  stryker, 'run', 'stryker.config.json',
  '--mutate', targets.join(','),
  '--incrementalFile', 'reports/stryker-incremental/ci-changed.json',
  '--reporters', 'clear-text,progress',
]);

/** Runs Stryker; a SIGTERM or SIGINT (CI's timeout, ^C) is passed on so that it cleans up its workers. */
function runForwardingSignals(cmd, argv) {
  const child = spawn(cmd, argv, { cwd: root, stdio: 'inherit' });
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP']) process.on(sig, () => child.kill(sig));
  child.on('exit', (code, signal) => process.exit(code ?? (signal ? 128 : 1)));
}
