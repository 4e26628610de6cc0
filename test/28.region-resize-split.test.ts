// A growing resize() works when advise() or lock() on part of a Region split its mapping into
// several VMAs (mremap moves one VMA only and failed with EFAULT): the memfd is mapped afresh,
// contents kept, the lock carried over, nothing left behind.

import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { Region } from '../lib/os/region';
import { native } from '../lib/native';
import { expectNoLeaks } from './helpers/leaks';

const PAGE = native.pageSize;

/** The smaps "Locked:" kB summed over the VMAs inside [start, end). */
function lockedKiB(start: number, end: number): number {
  let total = 0;
  let inside = false;
  for (const line of fs.readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) /.exec(line);
    if (head) {
      inside = Number.parseInt(head[1]!, 16) >= start && Number.parseInt(head[2]!, 16) <= end;
      continue;
    }
    const m = /^Locked:\s+(\d+) kB/.exec(line);
    if (inside && m) total += Number(m[1]);
  }
  return total;
}

/** How many VMAs /proc/self/maps lists inside [start, end). */
function vmasIn(start: number, end: number): number {
  return fs.readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => {
    const [a, b] = l.split(' ')[0]!.split('-').map((x) => Number.parseInt(x, 16));
    return a !== undefined && b !== undefined && a >= start && b <= end;
  }).length;
}

describe('28 resize of a split mapping', () => {
  expectNoLeaks();

  it('grows after advise() on part of the region (the advice split the mapping)', () => {
    using r = Region.allocate(16 * PAGE, { hugepages: 'off' });
    r.view().fill(3);
    r.advise('random', 0, PAGE);
    assert.ok(vmasIn(r.address, r.address + r.mappedLength) >= 2, 'the advice split the mapping');
    r.resize(32 * PAGE);
    assert.equal(r.length, 32 * PAGE);
    const v = r.view();
    assert.equal(v[16 * PAGE - 1], 3, 'contents kept');
    assert.equal(v[16 * PAGE], 0, 'the new part reads zero');
    v[32 * PAGE - 1] = 1;
    r.resize(64 * PAGE); // and again, now from one VMA
    assert.equal(r.view()[32 * PAGE - 1], 1);
  });

  it('keeps the lock when a split, locked region grows', function () {
    using r = Region.allocate(8 * PAGE, { hugepages: 'off' });
    try {
      r.lock();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EPERM' || (err as NodeJS.ErrnoException).code === 'ENOMEM') this.skip();
      throw err;
    }
    r.advise('sequential', 2 * PAGE, PAGE);
    r.resize(16 * PAGE);
    assert.equal(lockedKiB(r.address, r.address + r.mappedLength), (16 * PAGE) / 1024, 'the whole grown mapping is locked');
    r.unlock();
  });
});
