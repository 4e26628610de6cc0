// The demo's "same physical memory" step compares pages it touched, so it can fail: a different
// page, or a page that was never touched (no frame), fails the comparison; hidden PFNs are
// reported as "cannot compare", never as equal.

import assert from 'node:assert/strict';
import { playDemo, samePhysicalPage } from '../lib/cli/demo';
import { Machine } from '../lib/mm/machine';
import { GFP_KERNEL, PAGE_SIZE } from '../lib/mm/gfp';
import { expectNoLeaks, requirePfnsOrSkip } from './helpers/leaks';

describe('71 demo: the physical-memory check can fail', function () {
  this.timeout(60000);
  expectNoLeaks();

  let m: Machine;
  beforeEach(() => {
    m = new Machine({ name: 'demo-check', ramPerNode: 8 << 20, cmaSize: 4 << 20, hugepages: 'off', emitWarnings: false });
  });
  afterEach(() => m.destroy());

  it('the demo compares pages it touched, and they are the same frames', function () {
    requirePfnsOrSkip(this);
    const report = playDemo(m);
    const s = report.steps.find((x) => x.step === 'same physical memory');
    assert.ok(s, 'the step ran');
    assert.equal(s.ok, true, s.result);
    assert.match(s.result, /^0x[0-9a-f]+ == 0x[0-9a-f]+; 0x[0-9a-f]+ == 0x[0-9a-f]+$/);
  });

  it('fails against a deliberately different page, and against a page never touched', function () {
    requirePfnsOrSkip(this);
    const p = m.alloc_pages(GFP_KERNEL, 1)!;
    const a = m.page_address(p);
    assert.equal(samePhysicalPage(m, a, a).ok, true);
    const other = samePhysicalPage(m, a, a + PAGE_SIZE);
    assert.equal(other.ok, false);
    assert.match(other.result, /^0x[0-9a-f]+ != 0x[0-9a-f]+$/);
    const vma = m.createVma(PAGE_SIZE);
    const untouched = samePhysicalPage(m, vma.vm_start, a);
    assert.equal(untouched.ok, false, 'a page without a frame never compares equal');
    assert.match(untouched.result, /not present/);
    vma.unmap();
    m.__free_pages(p, 1);
  });
});
