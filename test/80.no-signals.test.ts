// No sequence of public calls may kill the process: at least 10,000 random sequences (misuse of
// every export, cross-machine objects, workers terminated at random points, hostile receivers of
// shares, huge sizes in a memory-limited child) run in child processes, one per core, which must
// all end normally. A failure names the seed and the (shrunk) sequence. `npm run fuzz -- --runs N`
// runs the same longer. See test/fuzz/ and test/fixtures/no-signals-child.ts.

import assert from 'node:assert/strict';
import { DEFAULTS, formatFailure, fuzz } from './fuzz/driver';

/** CI's floor (issue 8): at least this many sequences per run of the suite. */
const CI_SEQUENCES = 10000;

describe('80 no signals from any sequence of public calls', function () {
  this.timeout(600000);

  it(`${CI_SEQUENCES} random sequences of 20-30 public calls (misuse, cross-machine, workers, receivers, huge sizes) end normally`, async function () {
    const seed = Number(process.env.DMAMEM_FUZZ_SEED ?? Date.now() % 2 ** 31);
    const lines: string[] = [];
    const r = await fuzz({ ...DEFAULTS, runs: CI_SEQUENCES, seed, shrinkBudgetMs: 30000, log: (l) => lines.push(l) });
    if (process.env.CI === 'true') assert.deepEqual(r.notes, [], 'CI must run the huge sizes in a memory cgroup');
    for (const n of r.notes) this.test!.title += ` [note: ${n}]`;
    this.test!.title += ` [seeds ${seed}.., ${(r.ms / 1000).toFixed(0)} s]`;
    assert.equal(r.failures.length, 0, `${r.failures.length} child process(es) failed (seeds from ${seed}; rerun with DMAMEM_FUZZ_SEED=${seed}):\n\n${r.failures.map(formatFailure).join('\n\n')}`);
    assert.equal(r.sequences, CI_SEQUENCES, `every sequence ran: ${r.okLines.join('\n')}`);
  });
});
