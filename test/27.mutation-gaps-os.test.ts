// Mutation gaps in lib/os (issue 17): each test kills a hand-made mutation the suite used to survive,
// with the boundary values it lacked: a resize within the same page, a 1-byte Region, advise on
// hugetlb with a length that is not a granule multiple, and a Region dropped while its view lives.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { Region } from '../lib/os/region';
import { readPagemap } from '../lib/os/pagemap';
import { expectNoLeaks, requireHugepagesOrSkip } from './helpers/leaks';

describe('27 mutation gaps in lib/os', () => {
  expectNoLeaks();

  it('resize within the same mapped length still detaches the old views (they had the old length)', () => {
    const r = Region.allocate(100, { hugepages: 'off' });
    try {
      const v = r.view(0, 100);
      v.fill(1);
      r.resize(50);
      assert.equal(v.length, 0, 'the 100-byte view would reach past the new end');
      const w = r.view();
      assert.equal(w.length, 50);
      assert.equal(w[49], 1, 'same memory, contents kept');
      r.resize(200);
      assert.equal(w.length, 0, 'growing inside the page detaches too');
      assert.equal(r.view().length, 200);
    } finally {
      r.close();
    }
  });

  it('a 1-byte Region: its 1-byte view works and is detached on close', () => {
    const r = Region.allocate(1, { hugepages: 'off' });
    const v = r.view(0, 1);
    assert.equal(v.length, 1);
    v[0] = 7;
    assert.equal(r.read(0, 1)[0], 7);
    r.close();
    // Checked before any access: a still-attached view would now point at unmapped memory.
    assert.equal(v.byteLength, 0);
    assert.equal(v[0], undefined);
  });

  it('advise rounds the length up to the granule: on hugetlb, 4 KiB of dontneed drops the whole 2 MiB page', function () {
    // madvise itself page-aligns the length, so for 4 KiB memory the rounding changes nothing; for
    // hugetlb the kernel aligns the end *down* to the huge page, so an unrounded 4 KiB does nothing.
    requireHugepagesOrSkip(this, 1);
    const r = Region.allocate(2 << 20, { hugepages: 'require' });
    try {
      r.view().fill(7);
      assert.equal(readPagemap(r.address, 1)[0]!.present, true);
      r.advise('dontneed', 0, 4096);
      assert.equal(readPagemap(r.address, 1)[0]!.present, false, 'the huge page left the page tables');
      assert.equal(r.read(0, 1)[0], 7, 'shared memfd memory keeps its contents');
    } finally {
      r.close();
    }
  });

  it('a view keeps its Region mapped after the Region is dropped and collected (child process)', function () {
    this.timeout(60000);
    const child = path.resolve(__dirname, 'fixtures', 'view-outlives-region-child.js');
    const r = spawnSync(process.execPath, [child], { encoding: 'utf8', timeout: 50000 });
    assert.equal(r.signal, null, `the child was killed by ${r.signal}: a view outlived its mapping\n${r.stderr}`);
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /^ok$/m);
  });
});
