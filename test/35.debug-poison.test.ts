// Debug mode of the memory model: freed pages are poisoned and checked when handed out again
// (mm/page_poison.c), and machine.destroy() reports what is still allocated or mapped.

import assert from 'node:assert/strict';
import { Machine } from '../lib/mm/machine';
import { GFP_KERNEL, PAGE_SIZE, __GFP_ZERO } from '../lib/mm/gfp';
import { cma_alloc, cma_release } from '../lib/mm/cma';
import { remap_pfn_range } from '../lib/mm/vma';
import { vmalloc } from '../lib/mm/vmalloc';
import { PAGE_POISON } from '../lib/mm/page-debug';
import { expectNoLeaks } from './helpers/leaks';

const MiB = 1024 * 1024;

/** Maps `page` (count pages) into a new VMA: the user mapping a driver forgot to tear down. */
function mapToUser(m: Machine, pfn: number, pages: number) {
  const vma = m.createVma(pages * PAGE_SIZE);
  assert.equal(remap_pfn_range(vma, vma.vm_start, pfn, pages * PAGE_SIZE, vma.vm_page_prot), 0);
  return vma;
}

describe('35 debug mode: page poisoning and the teardown report', () => {
  expectNoLeaks();

  describe('page poisoning', () => {
    let m: Machine;
    afterEach(() => {
      if (!m.isDestroyed) m.destroy();
    });

    it('freed buddy pages read PAGE_POISON (0xaa); allocation checks it and finds nothing on clean reuse', () => {
      m = new Machine({ name: 'p35', ramPerNode: 2 * MiB, cmaSize: 0, dmaDebug: true, emitWarnings: false });
      const page = m.alloc_pages(GFP_KERNEL, 2)!;
      const addr = m.page_address(page);
      assert.equal(m.read(addr, 1)[0], PAGE_POISON, 'boot memory is poisoned too');
      m.view(addr, 4 * PAGE_SIZE).fill(1);
      m.__free_pages(page, 2);
      assert.ok(m.read(addr, 4 * PAGE_SIZE).every((b) => b === PAGE_POISON));
      const again = m.alloc_pages(GFP_KERNEL | __GFP_ZERO, 2)!;
      assert.equal(again.pfn, page.pfn);
      assert.equal(m.read(addr, 1)[0], 0);
      assert.deepEqual(m.warnings, []);
      m.__free_pages(again, 2);
    });

    it('a write after free through a user mapping is reported when the page is handed out again (pcp list)', () => {
      m = new Machine({ name: 'p35', ramPerNode: 2 * MiB, cmaSize: 0, dmaDebug: true, emitWarnings: false });
      const page = m.alloc_pages(GFP_KERNEL, 0)!;
      const vma = mapToUser(m, page.pfn, 1);
      m.__free_pages(page, 0);             // the driver frees the page but leaves it mapped to user space
      vma.view(0x10, 3).set([1, 2, 3]);     // use after free
      const again = m.alloc_pages(GFP_KERNEL, 0)!;
      assert.equal(again.pfn, page.pfn, 'the pcp list hands the same page out again');
      assert.equal(m.warnings.length, 1);
      assert.match(m.warnings[0]!.message, /^pagealloc: memory corruption: pfn 0x[0-9a-f]+ bytes 0x10\.\.0x12 .*: 01 02 03$/);
      vma.unmap();
      m.__free_pages(again, 0);
    });

    it('one flipped bit is a "single bit error"; without dmaDebug nothing is poisoned or checked', () => {
      m = new Machine({ name: 'p35', ramPerNode: 2 * MiB, cmaSize: 0, dmaDebug: true, emitWarnings: false });
      const page = m.alloc_pages(GFP_KERNEL, 1)!;
      const vma = mapToUser(m, page.pfn, 2);
      m.__free_pages(page, 1);
      vma.view(PAGE_SIZE + 7, 1)[0] = PAGE_POISON ^ 0x04;
      const again = m.alloc_pages(GFP_KERNEL, 1)!;
      assert.equal(again.pfn, page.pfn);
      assert.match(m.warnings[0]!.message, new RegExp(`^pagealloc: single bit error: pfn 0x${(page.pfn + 1).toString(16)} bytes 0x7\\.\\.0x7`));
      vma.unmap();
      m.destroy();

      m = new Machine({ name: 'p35', ramPerNode: 2 * MiB, cmaSize: 0, emitWarnings: false });
      const p = m.alloc_pages(GFP_KERNEL, 0)!;
      const u = mapToUser(m, p.pfn, 1);
      u.view(0, 4).fill(5);
      m.__free_pages(p, 0);
      assert.equal(m.read(m.page_address(p), 1)[0], 5, 'no poison without debug');
      u.view(0, 4).fill(6);
      m.__free_pages(m.alloc_pages(GFP_KERNEL, 0)!, 0);
      assert.deepEqual(m.warnings, []);
      u.unmap();
    });

    it('strict mode throws ERR_DMAMEM_PAGE_CORRUPTION and the allocator keeps the pages (nothing leaks)', () => {
      m = new Machine({ name: 'p35', ramPerNode: 2 * MiB, cmaSize: 0, dmaDebug: 'strict', emitWarnings: false });
      const page = m.alloc_pages(GFP_KERNEL, 0)!;
      const vma = mapToUser(m, page.pfn, 1);
      m.__free_pages(page, 0);
      vma.view(100, 1)[0] = 0;
      const free = m.stats().nodes[0]!.freePages;
      assert.throws(() => m.alloc_pages(GFP_KERNEL, 0), (e: Error & { code?: string }) => e.code === 'ERR_DMAMEM_PAGE_CORRUPTION' && /pagealloc: memory corruption/.test(e.message));
      assert.equal(m.stats().nodes[0]!.freePages, free, 'the page went back to the allocator');
      assert.equal(m.warnings.length, 1);
      assert.equal(m.read(m.page_address(page) + 100, 1)[0], PAGE_POISON, 'poisoned again on the way back');
      vma.unmap();
      const ok = m.alloc_pages(GFP_KERNEL, 0)!;
      m.__free_pages(ok, 0);
    });

    it('CMA pages are poisoned on cma_release and checked on cma_alloc', () => {
      m = new Machine({ name: 'p35', ramPerNode: 2 * MiB, cmaSize: 2 * MiB, hugepages: 'off', dmaDebug: true, emitWarnings: false });
      const area = m.dma_contiguous_default_area!;
      const run = cma_alloc(area, 2, 0, false)!;
      assert.equal(m.read(m.page_address(run), 1)[0], PAGE_POISON, 'the CMA area is poisoned at boot');
      const vma = mapToUser(m, run.pfn, 2);
      assert.equal(cma_release(area, run, 2), true);
      assert.ok(m.read(m.page_address(run), 2 * PAGE_SIZE).every((b) => b === PAGE_POISON));
      vma.view(PAGE_SIZE, 2).fill(0x11);
      const again = cma_alloc(area, 2, 0, false)!;
      assert.equal(again.pfn, run.pfn);
      assert.equal(m.warnings.length, 1);
      assert.match(m.warnings[0]!.message, new RegExp(`^pagealloc: memory corruption: pfn 0x${(run.pfn + 1).toString(16)} bytes 0x0\\.\\.0x1 `));
      vma.unmap();
      cma_release(area, again, 2);
    });

    it('strict CMA: the corrupted run goes back to the area before the throw', () => {
      m = new Machine({ name: 'p35', ramPerNode: 2 * MiB, cmaSize: 2 * MiB, hugepages: 'off', dmaDebug: 'strict', emitWarnings: false });
      const area = m.dma_contiguous_default_area!;
      const run = cma_alloc(area, 1, 0, false)!;
      const vma = mapToUser(m, run.pfn, 1);
      cma_release(area, run, 1);
      vma.view(0, 1)[0] = 1;
      const available = area.available;
      assert.throws(() => cma_alloc(area, 1, 0, false), /pagealloc: memory corruption/);
      assert.equal(area.available, available);
      vma.unmap();
      const ok = cma_alloc(area, 1, 0, false)!;
      assert.equal(ok.pfn, run.pfn, 'the run is free again (and clean: poisoned on the way back)');
      cma_release(area, ok, 1);
    });
  });

  describe('machine.destroy() reports what is still allocated or mapped', () => {
    function leaky(dmaDebug: boolean | 'strict'): Machine {
      const m = new Machine({ name: 'leaky', ramPerNode: 2 * MiB, cmaSize: 2 * MiB, hugepages: 'off', dmaDebug, emitWarnings: false });
      m.alloc_pages(GFP_KERNEL, 0);
      m.alloc_pages(GFP_KERNEL, 3);
      cma_alloc(m.dma_contiguous_default_area, 3, 0, false);
      vmalloc(m, 2 * PAGE_SIZE);
      m.createVma(PAGE_SIZE);
      return m;
    }

    it('with dmaDebug: one WARN naming buddy blocks, CMA runs, vmalloc areas and VMAs, after a full teardown', () => {
      const m = leaky(true);
      const views = [m.view(m.page_address(m.alloc_pages(GFP_KERNEL, 0)!), 8)];
      m.destroy();
      assert.equal(m.isDestroyed, true);
      assert.equal(views[0]!.length, 0);
      assert.equal(m.warnings.length, 1);
      const msg = m.warnings[0]!.message;
      // vmalloc's two pages and the three allocated directly (the view's page included)
      assert.match(msg, /^WARNING: mm: leaky destroyed with memory still allocated or mapped: 5 buddy blocks \(pfn 0x[0-9a-f]+ order 0, .*order 3/);
      assert.match(msg, /; 3 CMA pages in 1 run \(pfn 0x[0-9a-f]+ x3 in leaky:cma-reserved\)/);
      assert.match(msg, /; 1 vmalloc area \(0x[0-9a-f]+ 8192 bytes\)/);
      assert.match(msg, /; 1 VMA \(0x[0-9a-f]+ 4096 bytes, 0 pages mapped\)$/);
    });

    it("strict: throws ERR_DMAMEM_LEAK once the machine is fully destroyed; without dmaDebug: silent", () => {
      const m = leaky('strict');
      assert.throws(() => m.destroy(), (e: Error & { code?: string }) => e.code === 'ERR_DMAMEM_LEAK' && /destroyed with memory still allocated/.test(e.message));
      assert.equal(m.isDestroyed, true);
      m.destroy(); // idempotent: nothing left to report
      const quiet = leaky(false);
      quiet.destroy();
      assert.deepEqual(quiet.warnings, []);
    });

    it('a machine freed clean reports nothing, even strict', () => {
      const m = new Machine({ name: 'clean', ramPerNode: 2 * MiB, cmaSize: 2 * MiB, hugepages: 'off', dmaDebug: 'strict', emitWarnings: false });
      const p = m.alloc_pages(GFP_KERNEL, 2)!;
      const c = cma_alloc(m.dma_contiguous_default_area, 2, 0, false)!;
      const va = m.vmalloc(PAGE_SIZE)!;
      const vma = m.createVma(PAGE_SIZE);
      vma.unmap();
      m.vfree(va);
      cma_release(m.dma_contiguous_default_area, c, 2);
      m.__free_pages(p, 2);
      m.destroy();
      assert.deepEqual(m.warnings, []);
    });
  });
});
