// vmalloc / vmap over scattered pages, and user VMAs with remap_pfn_range's checks, all as real
// MAP_FIXED mappings of the same physical (memfd) pages.

import assert from 'node:assert/strict';
import { Machine } from '../lib/mm/machine';
import { GFP_KERNEL, PAGE_SIZE } from '../lib/mm/gfp';
import { is_vmalloc_addr, vmalloc_to_page } from '../lib/mm/kernel';
import { vfree, vmalloc, vmap, vunmap, vzalloc } from '../lib/mm/vmalloc';
import {
  VM_DONTDUMP, VM_DONTEXPAND, VM_IO, VM_PFNMAP, VM_SHARED, VM_WRITE, remap_pfn_range, vma_pages,
} from '../lib/mm/vma';
import { native } from '../lib/native';
import type { Page } from '../lib/mm/page';
import { expectNoLeaks, hugepagesFree, requireHugepagesOrSkip as needHugepages } from './helpers/leaks';

const MiB = 1024 * 1024;

describe('33 vmalloc and user VMAs', () => {
  expectNoLeaks();
  let m: Machine;
  beforeEach(() => { m = new Machine({ name: 'm33', nodes: 2, ramPerNode: 4 * MiB, cmaSize: 0, emitWarnings: false }); });
  afterEach(() => m.destroy());

  /** Leaves node 0 with only every other page free, so order-0 allocations come out scattered. */
  function fragment(): Page[] {
    const all: Page[] = [];
    for (let i = 0; i < 1024; i++) all.push(m.alloc_pages_node(0, GFP_KERNEL, 0)!);
    const kept = all.filter((_, i) => i % 2 === 0);
    for (const p of all.filter((_, i) => i % 2 === 1)) m.__free_pages(p, 0);
    return kept;
  }

  describe('vmalloc', () => {
    it('maps scattered pages contiguously: one mmap call per physically consecutive run', () => {
      fragment();
      const addr = vmalloc(m, 8 * PAGE_SIZE)!;
      assert.ok(is_vmalloc_addr(addr));
      const area = m.findVmallocArea(addr)!;
      const pfns = area.pages.map((p) => p.pfn);
      let runs = 1;
      for (let i = 1; i < pfns.length; i++) if (pfns[i] !== pfns[i - 1]! + 1) runs++;
      assert.ok(runs > 1, 'the pages are scattered');
      assert.equal(area.mmapCalls, runs);
    });

    it('coalesces consecutive pages into one mmap call', () => {
      const addr = vmalloc(m, 64 * PAGE_SIZE)!;
      assert.equal(m.findVmallocArea(addr)!.mmapCalls, 1);
      vfree(m, addr);
    });

    it('aliases the linear map: writes through either address are the same bytes', () => {
      fragment();
      const addr = vzalloc(m, 4 * PAGE_SIZE)!;
      const v = m.view(addr, 4 * PAGE_SIZE);
      assert.ok(v.every((b) => b === 0));
      for (let i = 0; i < 4; i++) {
        const page = vmalloc_to_page(addr + i * PAGE_SIZE + 17)!;
        v[i * PAGE_SIZE + 17] = 0x40 + i;
        assert.equal(m.view(m.page_address(page) + 17, 1)[0], 0x40 + i);
        m.view(m.page_address(page), 1)[0] = 0x70 + i;
        assert.equal(v[i * PAGE_SIZE], 0x70 + i);
        const host = m.hostPfns(addr + i * PAGE_SIZE, 1)[0]!;
        const hostLinear = m.hostPfns(m.page_address(page), 1)[0]!;
        if (!Number.isNaN(host)) assert.equal(host, hostLinear, 'the same host frame');
      }
      vfree(m, addr);
    });

    it('vmalloc_to_page is null in the guard page and after vfree; vfree returns the pages', () => {
      const free = m.stats().nodes[0]!.freePages;
      const addr = vmalloc(m, 2 * PAGE_SIZE)!;
      assert.equal(m.stats().nodes[0]!.freePages, free - 2);
      assert.equal(vmalloc_to_page(addr + 2 * PAGE_SIZE), null, 'guard page');
      const v = m.view(addr, 8);
      vfree(m, addr);
      assert.equal(v.length, 0, 'views of a freed area are detached');
      assert.equal(vmalloc_to_page(addr), null);
      assert.equal(m.stats().nodes[0]!.freePages, free);
      vfree(m, addr);
      assert.match(m.warnings.at(-1)!.message, /nonexistent vm area/);
    });

    it('a VmallocArea kept after vfree or machine teardown gives no view (its range is no longer memory)', () => {
      const addr = vmalloc(m, 2 * PAGE_SIZE)!;
      const area = m.findVmallocArea(addr)!;
      vfree(m, addr);
      assert.equal(area.isReleased, true);
      assert.throws(() => area.view(addr, 16), RangeError);
      assert.equal(area.pageAt(addr), null);
      const addr2 = vmalloc(m, PAGE_SIZE)!;
      const area2 = m.findVmallocArea(addr2)!;
      m.destroy();
      assert.throws(() => area2.view(addr2, 1), RangeError);
      assert.throws(() => m.view(addr2, 1), { code: 'ERR_DMAMEM_DESTROYED' });
      assert.throws(() => m.memset(m.segments[0]!.address, 0, 1), { code: 'ERR_DMAMEM_DESTROYED' });
    });

    it('view() refuses the guard page, a range leaving the area, and addresses outside the vmalloc area', () => {
      const addr = vmalloc(m, 2 * PAGE_SIZE)!;
      assert.throws(() => m.view(addr + 2 * PAGE_SIZE, 1), RangeError, 'guard page');
      assert.throws(() => m.view(addr + PAGE_SIZE, PAGE_SIZE + 1), RangeError, 'leaves the area');
      assert.equal(is_vmalloc_addr(m.segments[0]!.address), false);
      assert.throws(() => vmalloc_to_page(m.segments[0]!.address), /^RangeError: kernel BUG/);
      vfree(m, addr);
    });

    it('fails cleanly (null) when pages run out, leaving nothing allocated', () => {
      const free = m.stats().nodes[0]!.freePages + m.stats().nodes[1]!.freePages;
      assert.equal(vmalloc(m, (free + 1) * PAGE_SIZE), null);
      assert.equal(m.stats().nodes[0]!.freePages + m.stats().nodes[1]!.freePages, free);
    });

    it('vmap maps given pages; vunmap leaves them allocated; a read-only vmap gives no writable view', () => {
      const pages = fragment().slice(0, 3);
      const addr = vmap(m, pages, 3)!;
      m.view(addr + PAGE_SIZE, 1)[0] = 9;
      assert.equal(m.view(m.page_address(pages[1]!), 1)[0], 9);
      vunmap(m, addr);
      assert.equal(pages[1]!.refcount, 1);
      const ro = vmap(m, pages, 3, 0, 'read')!;
      assert.throws(() => m.view(ro, 1), { code: 'ERR_DMAMEM_READONLY' });
      vunmap(m, ro);
    });
  });

  describe('remap_pfn_range', () => {
    it('maps physically consecutive pages into the VMA: same bytes, same host frames, VMA flags set', () => {
      const page = m.alloc_pages_node(0, GFP_KERNEL, 2)!;
      const vma = m.createVma(4 * PAGE_SIZE);
      assert.equal(vma_pages(vma), 4);
      assert.equal(remap_pfn_range(vma, vma.vm_start, page.pfn, 4 * PAGE_SIZE, vma.vm_page_prot), 0);
      for (const f of [VM_IO, VM_PFNMAP, VM_DONTEXPAND, VM_DONTDUMP]) assert.ok(vma.vm_flags & f);
      const user = vma.view();
      user[3 * PAGE_SIZE + 1] = 0x5a;
      assert.equal(m.view(m.page_address(page) + 3 * PAGE_SIZE + 1, 1)[0], 0x5a);
      m.view(m.page_address(page), 1)[0] = 0x33;
      assert.equal(user[0], 0x33);
      const a = m.hostPfns(vma.vm_start, 4);
      const b = m.hostPfns(m.page_address(page), 4);
      if (!Number.isNaN(a[0]!)) assert.deepEqual(a, b);
      vma.unmap();
      assert.equal(user.length, 0, 'unmap detaches views');
      m.__free_pages(page, 2);
    });

    it('an unaligned address is -EINVAL with a WARN', () => {
      const vma = m.createVma(2 * PAGE_SIZE);
      assert.equal(remap_pfn_range(vma, vma.vm_start + 1, m.segments[0]!.startPfn, PAGE_SIZE, vma.vm_page_prot), -22);
      assert.match(m.warnings.at(-1)!.message, /unaligned/);
    });

    it('size 0 is a kernel BUG (thrown), a range past the VMA is -EINVAL, and remapping a present page is a BUG', () => {
      const vma = m.createVma(2 * PAGE_SIZE);
      const pfn = m.segments[0]!.startPfn;
      assert.throws(() => remap_pfn_range(vma, vma.vm_start, pfn, 0, vma.vm_page_prot), /kernel BUG/);
      assert.equal(remap_pfn_range(vma, vma.vm_start, pfn, 3 * PAGE_SIZE, vma.vm_page_prot), -22);
      assert.equal(remap_pfn_range(vma, vma.vm_start, pfn, PAGE_SIZE, vma.vm_page_prot), 0);
      assert.throws(() => remap_pfn_range(vma, vma.vm_start, pfn, PAGE_SIZE, vma.vm_page_prot), /kernel BUG/);
      assert.throws(() => vma.view(PAGE_SIZE, 1), RangeError, 'the second page is not mapped');
    });

    it('one-page remaps in any order (ascending, descending, with gaps filled later) keep every earlier page', () => {
      const orders = [[0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0], [0, 2, 4, 1, 3, 5], [3, 0, 5, 1, 4, 2], [1, 0, 3, 2, 5, 4]];
      const pfn = m.segments[0]!.startPfn;
      for (const order of orders) {
        const vma = m.createVma(6 * PAGE_SIZE);
        const done = new Set<number>();
        for (const i of order) {
          assert.equal(remap_pfn_range(vma, vma.vm_start + i * PAGE_SIZE, pfn + 10 + i, PAGE_SIZE, vma.vm_page_prot), 0);
          done.add(i);
          assert.equal(vma.mappedPages(), done.size, `order ${order}: after page ${i}`);
          for (let k = 0; k < 6; k++) {
            assert.equal(vma.isMapped(vma.vm_start + k * PAGE_SIZE, 1), done.has(k), `order ${order}: page ${k} after page ${i}`);
          }
        }
        // Every page is the machine's page at pfn + 10 + k, and none can be mapped twice.
        const v = vma.view();
        for (let k = 0; k < 6; k++) {
          v[k * PAGE_SIZE] = 0x40 + k;
          assert.equal(m.read((pfn + 10 + k) * PAGE_SIZE - m.segments[0]!.startPfn * PAGE_SIZE + m.segments[0]!.address, 1)[0], 0x40 + k);
          assert.throws(() => remap_pfn_range(vma, vma.vm_start + k * PAGE_SIZE, pfn + 10 + k, PAGE_SIZE, vma.vm_page_prot), /kernel BUG/, `order ${order}: page ${k} again`);
        }
        vma.unmap();
      }
    });

    it('a private writable (COW) mapping must cover the whole VMA; then vm_pgoff becomes the pfn', () => {
      const vma = m.createVma(2 * PAGE_SIZE, { shared: false, pgoff: 7 });
      const pfn = m.segments[0]!.startPfn + 8;
      assert.equal(remap_pfn_range(vma, vma.vm_start, pfn, PAGE_SIZE, vma.vm_page_prot), -22);
      assert.equal(remap_pfn_range(vma, vma.vm_start, pfn, 2 * PAGE_SIZE, vma.vm_page_prot), 0);
      assert.equal(vma.vm_pgoff, pfn);
    });

    it('a run that crosses segments is mapped with one mmap per segment', () => {
      const end = m.segments[0]!.startPfn + m.segments[0]!.pages;
      assert.equal(m.segments[1]!.startPfn, end, 'node 1 RAM follows node 0 RAM');
      const vma = m.createVma(4 * PAGE_SIZE);
      const before = m.counters.mmapCalls;
      assert.equal(remap_pfn_range(vma, vma.vm_start, end - 2, 4 * PAGE_SIZE, vma.vm_page_prot), 0);
      assert.equal(m.counters.mmapCalls - before, 2);
      vma.view()[2 * PAGE_SIZE] = 1;
      assert.equal(m.read(m.segments[1]!.address, 1)[0], 1, 'the byte is in node 1 RAM (free memory: read by copy)');
    });

    it('createVma takes mmap(2) prot and flags; misuse is a TypeError/RangeError before anything is reserved', () => {
      const C = native.constants;
      const vma = m.createVma(PAGE_SIZE, { prot: C.PROT_READ, flags: C.MAP_PRIVATE, pgoff: 3 });
      assert.equal(vma.vm_pgoff, 3);
      assert.equal(vma.vm_flags & VM_WRITE, 0);
      assert.equal(vma.vm_flags & VM_SHARED, 0);
      vma.unmap();
      assert.throws(() => m.createVma(PAGE_SIZE, { prot: C.PROT_EXEC }), TypeError);
      assert.throws(() => m.createVma(PAGE_SIZE, { flags: C.MAP_FIXED }), TypeError);
      assert.throws(() => m.createVma(PAGE_SIZE, { pgoff: -1 }), RangeError);
      assert.throws(() => m.createVma(100), RangeError);
    });

    it('PFNs that are not memory are -EINVAL; a read-only VMA gives copies only', () => {
      const vma = m.createVma(PAGE_SIZE, { prot: 'read' });
      assert.equal(remap_pfn_range(vma, vma.vm_start, 5, PAGE_SIZE, vma.vm_page_prot), -22);
      const page = m.alloc_pages_node(0, GFP_KERNEL, 0)!;
      const pfn = page.pfn;
      m.view(m.page_address(page), 1)[0] = 0x77;
      assert.equal(remap_pfn_range(vma, vma.vm_start, pfn, PAGE_SIZE, vma.vm_page_prot), 0);
      assert.throws(() => vma.view(), { code: 'ERR_DMAMEM_READONLY' });
      assert.equal(vma.read(0, 1)[0], 0x77);
    });

    it('hugetlb memory is mapped in whole huge pages, with the VMA placed to match', function () {
      needHugepages(this, 2);
      const h = new Machine({ name: 'h33', ramPerNode: 2 * MiB, cmaSize: 4 * MiB, hugepages: 'require', emitWarnings: false });
      try {
        const seg = h.segments[1]!;
        assert.equal(seg.backing, 'hugetlb-2M');
        // 1 MiB starting half-way into the first huge page.
        const pfn = seg.startPfn + 256;
        const vma = h.createVma(MiB);
        assert.equal(remap_pfn_range(vma, vma.vm_start, pfn, MiB, vma.vm_page_prot), 0);
        assert.equal(vma.vm_start % (2 * MiB), MiB, 'placed congruent with the physical address');
        vma.view()[10] = 0x99;
        assert.equal(h.read(seg.addressOf(pfn) + 10, 1)[0], 0x99);
        const a = h.hostPfns(vma.vm_start, 1)[0]!;
        if (!Number.isNaN(a)) assert.equal(a, h.hostPfns(seg.addressOf(pfn), 1)[0]);
        // A second, non-congruent remap into a VMA that already has mappings cannot be done.
        const vma2 = h.createVma(2 * PAGE_SIZE);
        assert.equal(remap_pfn_range(vma2, vma2.vm_start, seg.startPfn, PAGE_SIZE, vma2.vm_page_prot), 0);
        assert.equal(remap_pfn_range(vma2, vma2.vm_start + PAGE_SIZE, seg.startPfn + 3, PAGE_SIZE, vma2.vm_page_prot), -22);
        assert.match(h.warnings.at(-1)!.message, /hugetlb/);
      } finally {
        h.destroy();
      }
    });

    it('whole huge pages never replace pages already mapped in the VMA, in either order', function () {
      needHugepages(this, 2);
      const h = new Machine({ name: 'h33b', ramPerNode: 2 * MiB, cmaSize: 4 * MiB, hugepages: 'require', emitWarnings: false });
      try {
        const huge = h.segments[1]!.startPfn;
        const ramPage = h.alloc_pages_node(0, GFP_KERNEL, 0)!;
        const ram = ramPage.pfn;
        h.view(h.page_address(ramPage), 1)[0] = 0x11;
        // 4 KiB page first, then a hugetlb page whose 2 MiB mapping would cover it.
        const a = h.createVma(2 * PAGE_SIZE);
        assert.equal(remap_pfn_range(a, a.vm_start + PAGE_SIZE, ram, PAGE_SIZE, a.vm_page_prot), 0);
        assert.equal(remap_pfn_range(a, a.vm_start, huge, PAGE_SIZE, a.vm_page_prot), -22);
        assert.match(h.warnings.at(-1)!.message, /would replace/);
        assert.equal(a.view(PAGE_SIZE, 1)[0], 0x11, 'page 1 still shows the RAM page');
        // Hugetlb first, then a 4 KiB page inside its 2 MiB mapping; the next page of the same huge page is fine.
        const b = h.createVma(3 * PAGE_SIZE);
        assert.equal(remap_pfn_range(b, b.vm_start, huge, PAGE_SIZE, b.vm_page_prot), 0);
        assert.equal(remap_pfn_range(b, b.vm_start + PAGE_SIZE, ram, PAGE_SIZE, b.vm_page_prot), -22);
        assert.equal(remap_pfn_range(b, b.vm_start + PAGE_SIZE, huge + 1, PAGE_SIZE, b.vm_page_prot), 0);
      } finally {
        h.destroy();
      }
    });

    it('a private mapping of hugetlb memory the pool cannot back is -ENOMEM, not a throw or a SIGBUS', function () {
      needHugepages(this, 2);
      const h = new Machine({ name: 'h33c', ramPerNode: 2 * MiB, cmaSize: 2 * MiB, hugepages: 'require', emitWarnings: false });
      const free = hugepagesFree();
      const hog = free > 0 ? new Machine({ name: 'hog33', ramPerNode: 2 * MiB, cmaSize: free * 2 * MiB, hugepages: 'require', emitWarnings: false }) : null;
      try {
        const vma = h.createVma(2 * MiB, { shared: false });
        assert.equal(remap_pfn_range(vma, vma.vm_start, h.segments[1]!.startPfn, 2 * MiB, vma.vm_page_prot), -12);
        assert.match(h.warnings.at(-1)!.message, /ENOMEM/);
        assert.equal(vma.isEmpty, true);
      } finally {
        hog?.destroy();
        h.destroy();
      }
    });
  });
});
