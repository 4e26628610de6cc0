// Physical frame queries tell "not present" from "hidden": readPfns / Region.pfns give
// PFN_NOT_PRESENT (-1) and PFN_HIDDEN (-2), physicalPages() gives present / pfnHidden, and the
// Machine's hostPfns / hostPhysAddr / isHostContiguous follow. Hidden PFNs are checked for real, in
// a child running as an unprivileged user (setpriv), whatever user runs the suite.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { Machine } from '../lib/mm/machine';
import { GFP_KERNEL } from '../lib/mm/gfp';
import { PFN_HIDDEN, PFN_NOT_PRESENT, pfnVisible } from '../lib/os/pagemap';
import { Region } from '../lib/os/region';
import { C, native } from '../lib/native';
import { expectNoLeaks, requirePfnsOrSkip } from './helpers/leaks';

const PAGE = native.pageSize;
const INDEX_JS = JSON.stringify(path.resolve(__dirname, '..', 'lib', 'index.js'));

/** What a process sees: page 0 touched, page 1 never touched, and the Machine's queries. */
const PROBE = `
  const d = require(${INDEX_JS});
  const r = d.Region.allocate(2 * 4096, { hugepages: 'off', populate: false });
  r.view()[0] = 1;
  const m = new d.Machine({ name: 'pfn-probe', ramPerNode: 4 << 20, cmaSize: 0, emitWarnings: false });
  const p = m.alloc_pages(d.GFP_KERNEL, 1);
  const vma = m.createVma(4096);
  const out = {
    pfnVisible: d.pfnVisible(),
    pfns: [...r.pfns()],
    pages: r.physicalPages().map((x) => ({ present: x.present, pfn: x.pfn, pfnHidden: x.pfnHidden })),
    contiguous: r.isPhysicallyContiguous(),
    hostPhysAddr: String(m.hostPhysAddr(p)),
    hostContiguous: m.isHostContiguous(p, 2),
    hostPfnsLinear: [...m.hostPfns(m.page_address(p), 2)],
    hostPfnsUntouchedVma: [...m.hostPfns(vma.vm_start, 1)],
  };
  vma.unmap(); m.__free_pages(p, 1); m.destroy(); r.close();
  process.stdout.write(JSON.stringify(out));`;

describe('29 PFN states: not present vs hidden', function () {
  this.timeout(60000);
  expectNoLeaks();

  it('the two values are distinct and are not page frames', () => {
    assert.notEqual(PFN_NOT_PRESENT, PFN_HIDDEN);
    assert.ok(PFN_NOT_PRESENT < 0 && PFN_HIDDEN < 0);
  });

  it('as an unprivileged user (setpriv --reuid=65534): touched pages are PFN_HIDDEN, untouched ones PFN_NOT_PRESENT', function () {
    if (process.getuid?.() !== 0 || spawnSync('setpriv', ['--version']).status !== 0) {
      if (this.test) this.test.title += ' [skipped: needs root to drop to another user, and setpriv]';
      this.skip();
    }
    const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '-e', PROBE], { encoding: 'utf8' });
    assert.equal(r.signal, null, r.stderr);
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as Record<string, unknown>;
    assert.equal(out.pfnVisible, false, 'nobody has no CAP_SYS_ADMIN');
    assert.deepEqual(out.pfns, [PFN_HIDDEN, PFN_NOT_PRESENT]);
    assert.deepEqual(out.pages, [
      { present: true, pfn: null, pfnHidden: true },
      { present: false, pfn: null, pfnHidden: false },
    ]);
    assert.equal(out.contiguous, null, 'unknown, not false, when PFNs are hidden');
    assert.equal(out.hostPhysAddr, 'null');
    assert.equal(out.hostContiguous, null);
    assert.deepEqual(out.hostPfnsLinear, [PFN_HIDDEN, PFN_HIDDEN]);
    assert.deepEqual(out.hostPfnsUntouchedVma, [PFN_NOT_PRESENT], 'a VMA page never mapped is not present, even when PFNs are hidden');
  });

  it('as root: touched pages have real frames, untouched ones PFN_NOT_PRESENT (in a child and here)', function () {
    requirePfnsOrSkip(this);
    const r = spawnSync(process.execPath, ['-e', PROBE], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { pfns: number[]; pages: { present: boolean; pfn: number | null; pfnHidden: boolean }[]; contiguous: boolean; hostPhysAddr: string; hostContiguous: boolean; hostPfnsLinear: number[] };
    assert.ok(out.pfns[0]! > 0);
    assert.equal(out.pfns[1], PFN_NOT_PRESENT);
    assert.deepEqual(out.pages[0], { present: true, pfn: out.pfns[0], pfnHidden: false });
    assert.equal(out.contiguous, false, 'a page with no frame is not contiguous');
    assert.equal(BigInt(out.hostPhysAddr), BigInt(out.hostPfnsLinear[0]!) * 4096n);
    assert.equal(out.hostContiguous, out.hostPfnsLinear[1] === out.hostPfnsLinear[0]! + 1);

    using reg = Region.allocate(2 * PAGE, { hugepages: 'off' });
    assert.ok(pfnVisible());
    assert.ok([...reg.pfns()].every((p) => p > 0), 'populated pages all have frames');
  });

  it('hostPhysAddr faults a dropped page of machine RAM back in instead of answering "not present"', function () {
    requirePfnsOrSkip(this);
    const m = new Machine({ name: 'pfn-dropped', ramPerNode: 4 * 2 ** 20, cmaSize: 0, emitWarnings: false });
    try {
      const p = m.alloc_pages(GFP_KERNEL, 0)!;
      const addr = m.page_address(p);
      native.madvise(addr, PAGE, C.MADV_DONTNEED); // drops this process's page table entry only (shmem keeps the page)
      assert.equal(m.hostPfns(addr, 1)[0], PFN_NOT_PRESENT, 'the page table entry is gone');
      assert.equal(m.isHostContiguous(p, 1), false);
      const phys = m.hostPhysAddr(p);
      assert.ok(phys !== null && phys > 0n);
      assert.equal(m.hostPfns(addr, 1)[0], Number(phys / 4096n));
      m.__free_pages(p, 0);
    } finally {
      m.destroy();
    }
  });
});
