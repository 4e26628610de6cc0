// `npm test` runs mocha through this watchdog: mocha runs in a child process group; if one test or
// hook runs longer than the per-test limit (a synchronous endless loop, which mocha's own timeout
// cannot stop) or the whole run exceeds its limit, the watchdog prints the running test's full title,
// kills the child's whole process group and exits non-zero. Arguments are passed on to mocha.
//   MOCHA_WATCHDOG_TEST_S  per test or hook, seconds (default 300; mocha's own timeout is 60 s)
//   MOCHA_WATCHDOG_TOTAL_S whole run, seconds (default 1200)

import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { Readable } from 'node:stream';

const EXIT_HUNG = 124; // what timeout(1) exits with

function seconds(name: string, dflt: number): number {
  const v = process.env[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!(n > 0)) throw new RangeError(`${name} must be a positive number of seconds, got ${JSON.stringify(v)}`);
  return n;
}

const testLimitS = seconds('MOCHA_WATCHDOG_TEST_S', 300);
const totalLimitS = seconds('MOCHA_WATCHDOG_TOTAL_S', 1200);
const mochaBin = require.resolve('mocha/bin/mocha.js');
const reporter = path.join(__dirname, 'reporter.js');

// Our reporter is appended last so that it wins over the config file's "reporter".
const child = spawn(process.execPath, [mochaBin, ...process.argv.slice(2), '--reporter', reporter], {
  stdio: ['inherit', 'inherit', 'inherit', 'pipe'],
  env: { ...process.env, MOCHA_WATCHDOG_FD: '3' },
  detached: true, // its own process group, so that the tests' own children are killed with it
});

/** Runnables that began and have not ended, innermost last (a test's hooks run inside its span). */
const running: string[] = [];
const started = Date.now();
/** Every event resets it: a run that says nothing for the per-test limit is stuck in what runs. */
let lastEvent = started;
let killedFor: string | null = null;

const events = child.stdio[3] as Readable;
let pending = '';
events.setEncoding('utf8');
events.on('data', (chunk: string) => {
  pending += chunk;
  let nl: number;
  while ((nl = pending.indexOf('\n')) >= 0) {
    const line = pending.slice(0, nl);
    pending = pending.slice(nl + 1);
    const msg = JSON.parse(line) as { event: string; title: string };
    lastEvent = Date.now();
    if (msg.event === 'begin') running.push(msg.title);
    else if (msg.event === 'end') {
      const i = running.lastIndexOf(msg.title);
      if (i >= 0) running.splice(i);
    }
  }
});

function whatRuns(): string {
  if (running.length === 0) return 'no test (loading spec files, or between tests)';
  return running.slice().reverse().join('  <-  inside  ');
}

function killGroup(signal: NodeJS.Signals): void {
  try {
    process.kill(-child.pid!, signal);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw e;
  }
}

function hung(why: string): void {
  if (killedFor !== null) return;
  killedFor = why;
  process.stderr.write(`\nwatchdog: ${why}\nwatchdog: killing the test run (process group ${child.pid})\n`);
  killGroup('SIGKILL');
}

const tick = setInterval(() => {
  const now = Date.now();
  if (now - lastEvent > testLimitS * 1000) {
    hung(`hung for more than ${testLimitS} s in: ${whatRuns()}`);
  } else if (now - started > totalLimitS * 1000) {
    hung(`the test run took longer than ${totalLimitS} s; running: ${whatRuns()}`);
  }
}, 250);

// Stopped from outside (CI's timeout, ^C): take the test run down with us.
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(sig, () => {
    hung(`stopped by ${sig}; running: ${whatRuns()}`);
  });
}

child.on('exit', (code, signal) => {
  clearInterval(tick);
  if (killedFor !== null) process.exit(EXIT_HUNG);
  if (signal !== null) {
    process.stderr.write(`watchdog: mocha was killed by ${signal}; running: ${whatRuns()}\n`);
    process.exit(1);
  }
  process.exit(code ?? 1);
});
