// Mocha reporter for the watchdog: prints what the spec reporter prints and, synchronously, tells the
// watchdog (on the fd named by MOCHA_WATCHDOG_FD) which test or hook is running, so that a test stuck
// in a synchronous loop, which no mocha timeout can stop, can still be named from outside.

import * as fs from 'node:fs';
import Mocha from 'mocha';

const { EVENT_TEST_BEGIN, EVENT_TEST_END, EVENT_TEST_FAIL, EVENT_HOOK_BEGIN, EVENT_HOOK_END, EVENT_RUN_END } =
  Mocha.Runner.constants;

/** One line to the watchdog. A synchronous write: the next thing this process does may be a hang. */
function tell(fd: number, event: 'begin' | 'end' | 'done', title: string): void {
  const line = Buffer.from(JSON.stringify({ event, title }) + '\n');
  let off = 0;
  while (off < line.length) {
    try {
      off += fs.writeSync(fd, line, off);
    } catch (e) {
      // A non-blocking pipe may be momentarily full; the watchdog is reading it.
      if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
    }
  }
}

class WatchdogReporter extends Mocha.reporters.Spec {
  constructor(runner: Mocha.Runner, options?: Mocha.MochaOptions) {
    super(runner, options);
    const fd = Number(process.env.MOCHA_WATCHDOG_FD);
    if (!Number.isInteger(fd) || fd < 3) return; // run without a watchdog: a plain spec reporter
    const begin = (r: Mocha.Runnable): void => tell(fd, 'begin', r.fullTitle());
    const end = (r: Mocha.Runnable): void => tell(fd, 'end', r.fullTitle());
    runner.on(EVENT_TEST_BEGIN, begin);
    runner.on(EVENT_HOOK_BEGIN, begin);
    runner.on(EVENT_TEST_END, end);
    runner.on(EVENT_HOOK_END, end);
    runner.on(EVENT_TEST_FAIL, end); // a failed hook never emits its end
    runner.on(EVENT_RUN_END, () => tell(fd, 'done', ''));
  }
}

export = WatchdogReporter;
