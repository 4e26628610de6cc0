// Test helpers that read the real system: mappings, fds and the hugetlb pool.

import assert from 'node:assert/strict';
import * as fs from 'node:fs';

/**
 * dmamem's mappings in /proc/self/maps: its memfds and its reservations (PROT_NONE mappings of the
 * memfd "dmamem:reserved"). V8 and glibc map and unmap memory of their own all the time, so the
 * total line count is no measure of what dmamem leaves behind.
 */
export function mappingCount(): number {
  return fs.readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l.includes('memfd:dmamem')).length;
}

/** Open fds of dmamem's memfds (other fds come and go with Node's own machinery). */
export function fdCount(): number {
  let n = 0;
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    try {
      const target = fs.readlinkSync(`/proc/self/fd/${fd}`);
      // The reservation memfd is opened once per process and kept.
      if (target.includes('memfd:dmamem') && !target.includes('dmamem:reserved')) n++;
    } catch {
      // The fd readdir itself used is gone by now.
    }
  }
  return n;
}

/** Free 2 MiB hugetlb pages right now (HugePages_Free). */
export function hugepagesFree(): number {
  const m = /HugePages_Free:\s+(\d+)/.exec(fs.readFileSync('/proc/meminfo', 'utf8'));
  return m === null ? 0 : Number(m[1]);
}

/**
 * Registers before/after hooks on the current describe block asserting that the block leaves
 * /proc/self/maps and /proc/self/fd as it found them.
 */
export function checkNoLeaks(): void {
  let maps = 0;
  let fds = 0;
  before(() => {
    maps = mappingCount();
    fds = fdCount();
  });
  after(() => {
    assert.equal(mappingCount(), maps, 'mappings left behind');
    assert.equal(fdCount(), fds, 'fds left behind');
  });
}

/**
 * Skips the test when the pool lacks `n` free hugepages, saying how to fill it. Under CI=true it
 * fails instead: CI reserves pages so that the real path always runs.
 */
export function needHugepages(ctx: Mocha.Context, n: number): void {
  const free = hugepagesFree();
  if (free >= n) return;
  const msg = `needs ${n} free 2 MiB hugepages, the pool has ${free} (as root: echo ${n + 8} > /proc/sys/vm/nr_hugepages)`;
  if (process.env.CI === 'true') throw new Error(`CI must run the hugetlb path: ${msg}`);
  console.log(`      (skipped: ${msg})`);
  ctx.skip();
}
