// Waiting in tests for something another thread does (a worker's interrupt, a log line that comes
// by message): event-loop turns and 1 ms sleeps until a condition holds. A hang guard, never a
// timing check: the limit only turns a hang into a failure that names what never happened.

import assert from 'node:assert/strict';

/** Resolves once `cond()` holds; fails naming `what` after `limitMs`. */
export async function until(cond: () => boolean, what: string, limitMs = 20000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > limitMs) assert.fail(`gave up waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}
