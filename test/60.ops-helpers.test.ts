// The five dma_common_* helpers (lib/dma/ops_helpers.ts, kernel/dma/ops_helpers.c) and the CMA
// collaborators (lib/dma/contiguous.ts) over real memory: cases 1-37 of kernel-semantics.md §4.

import assert from 'node:assert/strict';
import { Machine } from '../lib/mm/machine';
import '../lib/dma/device';
import type { Device } from '../lib/dma/device';
import { cma_alloc, cma_release } from '../lib/mm/cma';
import { GFP_ATOMIC, GFP_DMA32, GFP_KERNEL, PAGE_SIZE, __GFP_NOWARN } from '../lib/mm/gfp';
import type { Page } from '../lib/mm/page';
import { PAGE_SHARED, pgprot_noncached, pgprot_writecombine } from '../lib/mm/pgprot';
import { VM_DONTDUMP, VM_DONTEXPAND, VM_IO, VM_PFNMAP, remap_pfn_range, type VmArea } from '../lib/mm/vma';
import { vfree, vmalloc, vmap, vunmap } from '../lib/mm/vmalloc';
import { CoherentPool, dma_mmap_from_dev_coherent, dma_mmap_range_ok, dma_release_coherent_memory } from '../lib/dma/coherent';
import {
  DMA_ATTR_SKIP_CPU_SYNC, DMA_ATTR_WRITE_COMBINE, DMA_BIDIRECTIONAL, DMA_FROM_DEVICE, DMA_MAPPING_ERROR,
  DMA_NONE, DMA_TO_DEVICE, EINVAL, ENOMEM, ENXIO, type DmaDataDirection,
} from '../lib/dma/constants';
import { dma_alloc_contiguous, dma_free_contiguous } from '../lib/dma/contiguous';
import {
  dma_common_alloc_pages, dma_common_free_pages, dma_common_get_sgtable, dma_common_mmap,
  dma_common_vaddr_to_page, dma_dummy_ops,
} from '../lib/dma/ops_helpers';
import { dma_mmap_pages } from '../lib/dma/mapping';
import { SgTable, sgFaultInjection, sg_is_last } from '../lib/dma/scatterlist';
import { PFN_HIDDEN } from '../lib/os/pagemap';
import { expectNoLeaks, hostPfnsVisible } from './helpers/leaks';
import { useDmaMachine } from './helpers/dma-fixtures';
import { spyBusAddress, spyOps } from './helpers/spy-ops';

const MiB = 1024 * 1024;
const S3 = 3 * PAGE_SIZE;

describe('60 ops_helpers: dma_common_* over real memory', () => {
  expectNoLeaks();
  // Nested so that the machine is destroyed before the leak check runs.
  describe('on one machine', () => {
    const fx = useDmaMachine('oh60');
    const { calls, buffer, vma } = fx;
    let m: Machine;
    let dev: Device;
    before(() => {
      m = fx.m;
    });
    beforeEach(() => {
      // Destroyed by the fixture after each test, once its VMAs and pages are given back.
      dev = fx.device({ name: 'spy0', ops: spyOps(calls) });
    });

    /** Asserts user page u of the VMA is buffer page b, by bytes both ways and by host PFN. */
    function assertSamePage(v: VmArea, u: number, cpu: number, b: number): void {
      const user = v.view(u * PAGE_SIZE, PAGE_SIZE);
      const kern = m.view(cpu + b * PAGE_SIZE, PAGE_SIZE);
      user.fill(0x40 + u);
      assert.equal(kern[0], 0x40 + u, `kernel sees the byte written at user page ${u}`);
      kern[PAGE_SIZE - 1] = 0x90 + b;
      assert.equal(user[PAGE_SIZE - 1], 0x90 + b, `user page ${u} sees the byte written at buffer page ${b}`);
      const up = m.hostPfns(v.vm_start + u * PAGE_SIZE, 1)[0];
      const kp = m.hostPfns(cpu + b * PAGE_SIZE, 1)[0];
      if (hostPfnsVisible()) {
        assert.ok(up !== undefined && up > 0, 'host PFNs are visible (root)');
        assert.equal(up, kp, `host PFN of user page ${u} is that of buffer page ${b}`);
      } else {
        assert.ok(up === PFN_HIDDEN && kp === PFN_HIDDEN, 'hidden PFNs read as PFN_HIDDEN, never as 0');
      }
    }

    describe('dma_common_mmap', () => {
      it('case 1: S = 3 pages, 3-page VMA, pgoff 0 -> 0; user pages 0..2 are buffer pages 0..2 (bytes and host PFNs)', () => {
        const { cpu } = buffer(2);
        const v = vma(3);
        assert.equal(dma_common_mmap(dev, v, cpu, 0n, S3, 0), 0);
        for (let i = 0; i < 3; i++) assertSamePage(v, i, cpu, i);
        assert.equal(v.remaps[0]?.pfn, m.virt_to_page(cpu).pfn);
        assert.equal(v.remaps[0]?.size, S3);
      });

      it('case 2: pgoff == count (3) -> -ENXIO, nothing mapped', () => {
        const { cpu } = buffer(2);
        const v = vma(1, 3);
        assert.equal(dma_common_mmap(dev, v, cpu, 0n, S3, 0), -ENXIO);
        assert.ok(v.isEmpty);
      });

      it('case 3: pgoff 1, 2-page VMA -> 0; user page 0 is buffer page 1', () => {
        const { cpu } = buffer(2);
        const v = vma(2, 1);
        assert.equal(dma_common_mmap(dev, v, cpu, 0n, S3, 0), 0);
        assertSamePage(v, 0, cpu, 1);
        assertSamePage(v, 1, cpu, 2);
      });

      it('case 4: pgoff 1, 3-page VMA -> -ENXIO', () => {
        const { cpu } = buffer(2);
        const v = vma(3, 1);
        assert.equal(dma_common_mmap(dev, v, cpu, 0n, S3, 0), -ENXIO);
        assert.ok(v.isEmpty);
      });

      it('case 5: S = 1 byte, 1-page VMA -> 0 (count is 1)', () => {
        const { cpu } = buffer(0);
        const v = vma(1);
        assert.equal(dma_common_mmap(dev, v, cpu, 0n, 1, 0), 0);
        assertSamePage(v, 0, cpu, 0);
      });

      it('case 6: S = 4097: a 2-page VMA -> 0, a 3-page VMA -> -ENXIO', () => {
        const { cpu } = buffer(2);
        const v2 = vma(2);
        assert.equal(dma_common_mmap(dev, v2, cpu, 0n, 4097, 0), 0);
        assertSamePage(v2, 1, cpu, 1);
        assert.equal(dma_common_mmap(dev, vma(3), cpu, 0n, 4097, 0), -ENXIO);
      });

      it('case 7: S = 0 -> -ENXIO for any VMA', () => {
        const { cpu } = buffer(0);
        assert.equal(dma_common_mmap(dev, vma(1), cpu, 0n, 0, 0), -ENXIO);
        assert.equal(dma_common_mmap(dev, vma(2, 5), cpu, 0n, 0, 0), -ENXIO);
      });

      it('case 8: pgoff = ULONG_MAX (and other huge values) -> -ENXIO, no wrap-around', () => {
        const { cpu } = buffer(2);
        const v = vma(1);
        for (const huge of [2 ** 64 - 1, 2 ** 53, Number.MAX_SAFE_INTEGER, 2 ** 64 - 2 ** 11]) {
          v.vm_pgoff = huge;
          assert.equal(dma_common_mmap(dev, v, cpu, 0n, S3, 0), -ENXIO, `pgoff ${huge}`);
        }
        assert.ok(v.isEmpty);
        // The bound check itself, with pgoff as an exact unsigned long.
        assert.equal(dma_mmap_range_ok(2n ** 64n - 1n, 3, 1), false);
        assert.equal(dma_mmap_range_ok(2n ** 64n - 1n, 3, 0), false);
        assert.equal(dma_mmap_range_ok(2n, 3, 1), true);
        assert.equal(dma_mmap_range_ok(2n, 3, 2), false);
      });

      it('case 9: after -ENXIO, vm_page_prot has still been replaced by dma_pgprot', () => {
        const nc = m.createDevice({ name: 'nc9', coherent: false, ops: spyOps([]) });
        const { cpu } = buffer(0);
        const v = vma(1, 7);
        assert.equal(v.vm_page_prot, PAGE_SHARED);
        assert.equal(dma_common_mmap(nc, v, cpu, 0n, PAGE_SIZE, 0), -ENXIO);
        assert.equal(v.vm_page_prot, pgprot_noncached(PAGE_SHARED));
        nc.destroy();
      });

      it('case 10: coherent -> prot unchanged; non-coherent + WRITE_COMBINE -> WC; other non-coherent -> uncached', () => {
        const nc = m.createDevice({ name: 'nc10', coherent: false, ops: spyOps([]) });
        const { cpu } = buffer(0);
        const a = vma(1);
        assert.equal(dma_common_mmap(dev, a, cpu, 0n, PAGE_SIZE, DMA_ATTR_WRITE_COMBINE), 0);
        assert.equal(a.vm_page_prot, PAGE_SHARED);
        assert.equal(a.remaps[0]?.cacheMode, 'WB');
        const b = vma(1);
        assert.equal(dma_common_mmap(nc, b, cpu, 0n, PAGE_SIZE, DMA_ATTR_WRITE_COMBINE), 0);
        assert.equal(b.vm_page_prot, pgprot_writecombine(PAGE_SHARED));
        assert.equal(b.remaps[0]?.cacheMode, 'WC');
        const c = vma(1);
        assert.equal(dma_common_mmap(nc, c, cpu, 0n, PAGE_SIZE, DMA_ATTR_SKIP_CPU_SYNC), 0);
        assert.equal(c.vm_page_prot, pgprot_noncached(PAGE_SHARED));
        assert.equal(c.remaps[0]?.cacheMode, 'UC-');
        nc.destroy();
      });

      // The pool's CPU address (virt_base) is buffer `a`, its pfn_base is buffer `b`: as memremap
      // gives pool memory a CPU address of its own, and so that the remapped pfn shows which path
      // ran (the pool path maps b's pages, the generic path a's). With a pool declared over its
      // own linear-map address both paths would give the same pfns.
      describe('with a 16-page device pool', () => {
        let a: { page: Page; cpu: number };
        let b: { page: Page; cpu: number };
        beforeEach(() => {
          a = buffer(4);
          b = buffer(4);
          dev.dma_mem = new CoherentPool(a.cpu, 0x9000_0000n, b.page.pfn, 16);
        });
        afterEach(() => dma_release_coherent_memory(dev));

        it('case 11: cpu_addr..cpu_addr+S inside the pool -> pool path: pfn = pfn_base + page index + pgoff', () => {
          const cpu = a.cpu + 5 * PAGE_SIZE;
          const v = vma(2, 1);
          assert.equal(dma_common_mmap(dev, v, cpu, 0n, S3, 0), 0);
          assert.equal(v.remaps[0]?.pfn, b.page.pfn + 5 + 1, 'pfn_base + 5 + pgoff, not the page behind cpu_addr');
          assertSamePage(v, 0, b.cpu, 6);
          assertSamePage(v, 1, b.cpu, 7);
        });

        it('case 12: the pool claims but the bounds check fails -> -ENXIO, no fallthrough', () => {
          const v = vma(3, 1);
          assert.equal(dma_common_mmap(dev, v, a.cpu, 0n, S3, 0), -ENXIO);
          assert.ok(v.isEmpty);
          const ret = { value: 0 };
          assert.equal(dma_mmap_from_dev_coherent(dev, v, a.cpu, S3, ret), 1, 'claimed');
          assert.equal(ret.value, -ENXIO);
          // Claimed means final: a pool whose remap fails returns that error, although the generic
          // path would have mapped cpu_addr's page.
          dev.dma_mem = new CoherentPool(a.cpu, 0x9000_0000n, 1, 16); // pfn 1: not memory
          const w = vma(1);
          assert.equal(dma_common_mmap(dev, w, a.cpu, 0n, PAGE_SIZE, 0), -EINVAL);
          assert.ok(w.isEmpty);
        });

        it('case 13: a range starting before the pool or running past its end (raw size) -> the generic path runs', () => {
          const other = buffer(2);
          // Not in the pool at all: generic.
          const x = vma(3);
          assert.equal(dma_common_mmap(dev, x, other.cpu, 0n, S3, 0), 0);
          assertSamePage(x, 2, other.cpu, 2);
          // Starts in the pool, runs past its end by one byte: the pool does not claim it.
          const cpu = a.cpu + 15 * PAGE_SIZE;
          assert.equal(dma_common_mmap(dev, vma(2, 3), cpu, 0n, PAGE_SIZE + 1, 0), -ENXIO, 'generic bounds: pgoff 3 >= count 2');
          const y = vma(1);
          assert.equal(dma_common_mmap(dev, y, cpu, 0n, PAGE_SIZE + 1, 0), 0);
          assert.equal(y.remaps[0]?.pfn, a.page.pfn + 15, 'the page behind cpu_addr, not the pool\'s pfn');
          // Ends exactly at the pool end: claimed.
          const z = vma(1);
          assert.equal(dma_common_mmap(dev, z, cpu, 0n, PAGE_SIZE, 0), 0);
          assert.equal(z.remaps[0]?.pfn, b.page.pfn + 15);
          // Starts one byte before the pool: not claimed (ret untouched, nothing remapped).
          const ret = { value: 99 };
          const u = vma(1);
          assert.equal(dma_mmap_from_dev_coherent(dev, u, a.cpu - 1, PAGE_SIZE, ret), 0);
          assert.equal(ret.value, 99);
          assert.ok(u.isEmpty);
        });
      });

      it('case 14: vmalloc cpu_addr -> first page is vmalloc_to_page(cpu_addr), then pfn+1, pfn+2 (vmap of contiguous pages)', () => {
        const { page, cpu } = buffer(2);
        const pages = [0, 1, 2].map((i) => m.pfn_to_page(page.pfn + i));
        const va = vmap(m, pages, 3);
        assert.ok(va !== null && m.is_vmalloc_addr(va));
        try {
          assert.equal(dma_common_vaddr_to_page(va), page);
          const v = vma(3);
          assert.equal(dma_common_mmap(dev, v, va, 0n, S3, 0), 0);
          assert.equal(v.remaps[0]?.pfn, page.pfn);
          for (let i = 0; i < 3; i++) assertSamePage(v, i, cpu, i);
          m.view(va + PAGE_SIZE, 1)[0] = 0x5a;
          assert.equal(v.view(PAGE_SIZE, 1)[0], 0x5a);
        } finally {
          vunmap(m, va);
        }
      });

      it('case 14: vmalloc() cpu_addr (scattered pages) -> only the first user page is the first vmalloc page', () => {
        const va = vmalloc(m, S3);
        assert.ok(va !== null);
        try {
          const first = dma_common_vaddr_to_page(va);
          assert.ok(first !== null);
          const v = vma(1);
          assert.equal(dma_common_mmap(dev, v, va, 0n, S3, 0), 0);
          assert.equal(v.remaps[0]?.pfn, first.pfn);
          m.view(va, 1)[0] = 0x77;
          assert.equal(v.view(0, 1)[0], 0x77);
          assert.equal(m.hostPfns(v.vm_start, 1)[0], m.hostPfns(va, 1)[0]);
        } finally {
          vfree(m, va);
        }
      });

      it('case 15: after a remap the VMA has IO|PFNMAP|DONTEXPAND|DONTDUMP; a private writable VMA gets vm_pgoff = start pfn', () => {
        const { page, cpu } = buffer(1);
        const s = vma(2);
        assert.equal(dma_common_mmap(dev, s, cpu, 0n, 2 * PAGE_SIZE, 0), 0);
        const want = VM_IO | VM_PFNMAP | VM_DONTEXPAND | VM_DONTDUMP;
        assert.equal(s.vm_flags & want, want);
        assert.equal(s.vm_pgoff, 0);
        const p = vma(1, 1, false);
        assert.equal(dma_common_mmap(dev, p, cpu, 0n, 2 * PAGE_SIZE, 0), 0);
        assert.equal(p.vm_flags & want, want);
        assert.equal(p.vm_pgoff, page.pfn + 1);
      });

      it('case 57: remap_pfn_range: unaligned addr -> -EINVAL; size 0 is a BUG, which the mmap helpers never reach', () => {
        const { page, cpu } = buffer(0);
        const v = vma(1);
        assert.equal(remap_pfn_range(v, v.vm_start + 1, page.pfn, PAGE_SIZE, v.vm_page_prot), -EINVAL);
        assert.throws(() => remap_pfn_range(v, v.vm_start, page.pfn, 0, v.vm_page_prot), /kernel BUG/);
        assert.ok(v.isEmpty);
        // S = 0 gives count 0, so the bounds check answers before any remap of size 0.
        assert.equal(dma_common_mmap(dev, v, cpu, 0n, 0, 0), -ENXIO);
        assert.equal(dma_mmap_pages(dev, v, 0, page), -ENXIO);
        assert.ok(v.isEmpty);
      });

      // Case 16 (a kernel without CONFIG_MMU returns -ENXIO) does not apply: the model is x86-64,
      // which always has an MMU, so there is no such configuration to test.
    });

    describe('dma_common_get_sgtable', () => {
      it('case 17: S = 5000 -> 0; one entry: length 8192, offset 0, page of cpu_addr, end mark, dma_address 0', () => {
        const { page, cpu } = buffer(1);
        const sgt = new SgTable();
        assert.equal(dma_common_get_sgtable(dev, sgt, cpu, 0x1234n, 5000, 0), 0);
        assert.equal(sgt.orig_nents, 1);
        assert.equal(sgt.nents, 1);
        const sg = sgt.sgl;
        assert.ok(sg !== null);
        assert.equal(sg.length, 8192);
        assert.equal(sg.offset, 0);
        assert.equal(sg.page_link, page);
        assert.ok(sg_is_last(sg));
        assert.equal(sg.dma_address, 0n);
        assert.equal(sg.dma_length, 0);
        assert.deepEqual(calls, [], 'no op is called');
      });

      it('case 18: S = 0 -> 0, one entry of length 0', () => {
        const { cpu } = buffer(0);
        const sgt = new SgTable();
        assert.equal(dma_common_get_sgtable(dev, sgt, cpu, 0n, 0, 0), 0);
        assert.equal(sgt.orig_nents, 1);
        assert.equal(sgt.sgl?.length, 0);
      });

      it('case 18: S = 4 GiB -> the unsigned int length truncates to 0', () => {
        const { cpu } = buffer(0);
        const sgt = new SgTable();
        assert.equal(dma_common_get_sgtable(dev, sgt, cpu, 0n, 2 ** 32, 0), 0);
        assert.equal(sgt.sgl?.length, 0);
      });

      it('case 19: table allocation fails -> -ENOMEM, sgl null, nents 0', () => {
        const { cpu } = buffer(0);
        const sgt = new SgTable();
        sgFaultInjection.failAfterChunks = 0;
        try {
          assert.equal(dma_common_get_sgtable(dev, sgt, cpu, 0n, PAGE_SIZE, 0), -ENOMEM);
        } finally {
          sgFaultInjection.failAfterChunks = null;
        }
        assert.equal(sgt.sgl, null);
        assert.equal(sgt.nents, 0);
        assert.equal(sgt.orig_nents, 0);
      });

      it('case 20: dma_addr and attrs do not change the result', () => {
        const { cpu } = buffer(1);
        const shape = (t: SgTable): unknown[] => [t.nents, t.orig_nents, t.sgl?.page_link, t.sgl?.length, t.sgl?.offset, t.sgl?.dma_address];
        const a = new SgTable();
        const b = new SgTable();
        assert.equal(dma_common_get_sgtable(dev, a, cpu, 0n, 6000, 0), 0);
        assert.equal(dma_common_get_sgtable(dev, b, cpu, DMA_MAPPING_ERROR, 6000, DMA_ATTR_WRITE_COMBINE | DMA_ATTR_SKIP_CPU_SYNC), 0);
        assert.deepEqual(shape(a), shape(b));
      });
    });

    describe('dma_common_alloc_pages / dma_common_free_pages', () => {
      const def = (): NonNullable<Machine['dma_contiguous_default_area']> => {
        const a = m.dma_contiguous_default_area;
        assert.ok(a);
        return a;
      };

      it('case 21: dev->cma_area set, S = 4096 -> the page comes from the device CMA area', () => {
        const cdev = m.createDevice({ name: 'cma21', cma: 1 * MiB, ops: spyOps(calls) });
        const h = { value: 0n };
        const page = dma_common_alloc_pages(cdev, PAGE_SIZE, h, DMA_TO_DEVICE, GFP_KERNEL);
        assert.ok(page !== null && cdev.cma_area !== null);
        assert.ok(cdev.cma_area.contains(page.pfn));
        assert.equal(cdev.cma_area.available, cdev.cma_area.count - 1);
        dma_common_free_pages(cdev, PAGE_SIZE, page, h.value, DMA_TO_DEVICE);
        assert.equal(cdev.cma_area.available, cdev.cma_area.count);
        cdev.destroy();
      });

      it('case 22: no device CMA, S <= 4096 -> CMA is skipped, the buddy allocator is used', () => {
        const before = def().available;
        const free = m.buddy.freePages(0);
        const h = { value: 0n };
        const page = dma_common_alloc_pages(dev, 100, h, DMA_TO_DEVICE, GFP_KERNEL);
        assert.ok(page !== null);
        assert.equal(page.segment.kind, 'ram');
        assert.equal(def().available, before);
        assert.equal(m.buddy.freePages(0), free - 1);
        dma_common_free_pages(dev, 100, page, h.value, DMA_TO_DEVICE);
        assert.equal(m.buddy.freePages(0), free);
      });

      it('case 23: gfp without __GFP_DIRECT_RECLAIM -> no CMA area is touched (even the device one)', () => {
        const cdev = m.createDevice({ name: 'cma23', cma: 1 * MiB, ops: spyOps(calls) });
        const before = def().available;
        const h = { value: 0n };
        const page = dma_common_alloc_pages(cdev, S3, h, DMA_TO_DEVICE, GFP_ATOMIC);
        assert.ok(page !== null && cdev.cma_area !== null);
        assert.equal(page.segment.kind, 'ram');
        assert.equal(cdev.cma_area.available, cdev.cma_area.count);
        assert.equal(def().available, before);
        dma_common_free_pages(cdev, S3, page, h.value, DMA_TO_DEVICE);
        cdev.destroy();
      });

      describe('on a 2-node machine without CMA', () => {
        let m2: Machine;
        before(() => {
          m2 = new Machine({ name: 'oh60b', nodes: 2, ramPerNode: 8 * MiB, cmaSize: 0, hugepages: 'off', emitWarnings: false });
        });
        after(() => m2.destroy());

        it('case 24: CMA gives null -> buddy on dev_to_node(dev) with order get_order(S)', () => {
          const d = m2.createDevice({ name: 'n1', numaNode: 1, ops: spyOps(calls) });
          const free1 = m2.buddy.freePages(1);
          const h = { value: 0n };
          const page = dma_common_alloc_pages(d, S3, h, DMA_TO_DEVICE, GFP_KERNEL);
          assert.ok(page !== null);
          assert.equal(page.nid, 1);
          assert.equal(m2.buddy.allocatedOrder(page.pfn), 2);
          assert.equal(m2.buddy.freePages(1), free1 - 4);
          dma_common_free_pages(d, S3, page, h.value, DMA_TO_DEVICE);
          assert.equal(m2.buddy.freePages(1), free1);
          d.destroy();
        });

        it('case 25: numa_node 1 -> node 1; NUMA_NO_NODE -> the current CPU\'s node', () => {
          const d = m2.createDevice({ name: 'nn', ops: spyOps(calls) });
          const h = { value: 0n };
          for (const cpuNode of [0, 1]) {
            m2.currentNode = cpuNode;
            const page = dma_common_alloc_pages(d, PAGE_SIZE, h, DMA_TO_DEVICE, GFP_KERNEL);
            assert.ok(page !== null);
            assert.equal(page.nid, cpuNode);
            dma_common_free_pages(d, PAGE_SIZE, page, h.value, DMA_TO_DEVICE);
          }
          m2.currentNode = 0;
          d.destroy();
        });

        it('case 26 / 31: CMA and buddy both fail (8 MiB: order 11 > 10) -> null, WARN, map_page not called, handle untouched', () => {
          const d = m2.createDevice({ name: 'big', ops: spyOps(calls) });
          const warned = m2.warnings.length;
          const h = { value: 0x1234n };
          assert.equal(dma_common_alloc_pages(d, 8 * MiB, h, DMA_TO_DEVICE, GFP_KERNEL), null);
          assert.equal(h.value, 0x1234n);
          assert.deepEqual(calls, []);
          assert.match(m2.warnings[warned]?.message ?? '', /order 11 > MAX_PAGE_ORDER/);
          d.destroy();
        });
      });

      it('case 27: map_page called exactly once with (dev, page, 0, S, dir, 0x20)', () => {
        const h = { value: 0n };
        const page = dma_common_alloc_pages(dev, S3, h, DMA_FROM_DEVICE, GFP_KERNEL);
        assert.ok(page !== null);
        assert.equal(calls.length, 1);
        assert.deepEqual(calls[0], { op: 'map_page', args: [dev, page, 0, S3, DMA_FROM_DEVICE, 0x20] });
        dma_common_free_pages(dev, S3, page, h.value, DMA_FROM_DEVICE);
      });

      it('case 28: map_page returns ~0 -> pages freed, null, handle == ~0, memory not zeroed', () => {
        let seen: Page | null = null;
        const failing = m.createDevice({
          name: 'fail28',
          ops: spyOps(calls, {
            map_page: (_d: Device, page: Page, _o: number, size: number): bigint => {
              seen = page;
              m.view(m.page_address(page), size).fill(0xab);
              return DMA_MAPPING_ERROR;
            },
          }),
        });
        const before = def().available;
        const h = { value: 0n };
        assert.equal(dma_common_alloc_pages(failing, S3, h, DMA_TO_DEVICE, GFP_KERNEL), null);
        assert.equal(h.value, DMA_MAPPING_ERROR);
        const page = seen as Page | null;
        assert.ok(page !== null && def().contains(page.pfn), 'the pages came from the default CMA area');
        assert.equal(def().available, before, 'dma_free_contiguous gave them back');
        assert.ok(m.read(m.page_address(page), S3).every((b) => b === 0xab), 'not zeroed');
        // Also from the buddy allocator (atomic gfp skips CMA).
        const free = m.buddy.freePages(0);
        assert.equal(dma_common_alloc_pages(failing, S3, h, DMA_TO_DEVICE, GFP_ATOMIC), null);
        assert.equal(m.buddy.freePages(0), free);
        failing.destroy();
      });

      it('case 28: a table without map_page -> DMA_MAPPING_ERROR (later kernels), pages given back; dma_dummy_ops likewise', () => {
        const noMap = m.createDevice({ name: 'nomap', ops: spyOps(calls, { map_page: undefined }) });
        const dummy = m.createDevice({ name: 'dummy', ops: dma_dummy_ops });
        const before = def().available;
        for (const d of [noMap, dummy]) {
          const h = { value: 0n };
          assert.equal(dma_common_alloc_pages(d, S3, h, DMA_TO_DEVICE, GFP_KERNEL), null);
          assert.equal(h.value, DMA_MAPPING_ERROR);
          assert.equal(def().available, before);
        }
        noMap.destroy();
        dummy.destroy();
      });

      it('case 29 / 30: success -> exactly S bytes zeroed after mapping, handle = map_page result; buddy order 2 for 3 pages', () => {
        const filling = m.createDevice({
          name: 'fill29',
          ops: spyOps(calls, {
            map_page: (_d: Device, page: Page, offset: number): bigint => {
              m.view(m.page_address(page), 4 * PAGE_SIZE).fill(0xcd); // the whole order-2 block
              return spyBusAddress(page, offset);
            },
          }),
        });
        const h = { value: 0n };
        const page = dma_common_alloc_pages(filling, S3, h, DMA_TO_DEVICE, GFP_ATOMIC);
        assert.ok(page !== null);
        assert.equal(h.value, spyBusAddress(page, 0));
        assert.equal(m.buddy.allocatedOrder(page.pfn), 2, '4 pages allocated');
        const bytes = m.view(m.page_address(page), 4 * PAGE_SIZE);
        assert.ok(bytes.subarray(0, S3).every((b) => b === 0), 'S bytes zeroed (after map_page wrote them)');
        assert.ok(bytes.subarray(S3).every((b) => b === 0xcd), 'the 4th page is not zeroed');
        dma_common_free_pages(filling, S3, page, h.value, DMA_TO_DEVICE);
        filling.destroy();
      });

      it('case 30: S = 12288 from CMA -> 3 pages, aligned to 4 pages', () => {
        const before = def().available;
        const pin = cma_alloc(def(), 1, 0, false); // so that first fit must skip to the next 4-page boundary
        assert.ok(pin);
        const h = { value: 0n };
        const page = dma_common_alloc_pages(dev, S3, h, DMA_TO_DEVICE, GFP_KERNEL);
        assert.ok(page !== null && def().contains(page.pfn));
        assert.equal(page.pfn % 4, 0);
        assert.equal(page.pfn, pin.pfn + 4);
        assert.equal(def().available, before - 4);
        dma_common_free_pages(dev, S3, page, h.value, DMA_TO_DEVICE);
        cma_release(def(), pin, 1);
        assert.equal(def().available, before);
      });

      it('case 31: S = 8 MiB from CMA -> alignment min(11, 8) = 8; when CMA fails, buddy order 11 -> NULL', () => {
        const h = { value: 0n };
        const page = dma_common_alloc_pages(dev, 8 * MiB, h, DMA_TO_DEVICE, GFP_KERNEL);
        assert.ok(page !== null && def().contains(page.pfn));
        assert.equal(page.pfn % 256, 0);
        assert.equal(def().available, 0);
        const h2 = { value: 7n };
        const warned = m.warnings.length;
        assert.equal(dma_common_alloc_pages(dev, 8 * MiB, h2, DMA_TO_DEVICE, GFP_KERNEL | __GFP_NOWARN), null);
        assert.equal(h2.value, 7n);
        assert.equal(m.warnings.length, warned, '__GFP_NOWARN silences both CMA and buddy');
        dma_common_free_pages(dev, 8 * MiB, page, h.value, DMA_TO_DEVICE);
        assert.equal(def().available, def().count);
      });

      it('case 31: the CMA alignment is min(get_order(8 MiB) = 11, 8) = 8, not 11 (a 16 MiB device area, first page pinned)', () => {
        const cdev = m.createDevice({ name: 'cma31', cma: 16 * MiB, ops: spyOps(calls) });
        const area = cdev.cma_area;
        assert.ok(area !== null);
        const pin = cma_alloc(area, 1, 0, false);
        assert.ok(pin && pin.pfn === area.basePfn);
        const h = { value: 0n };
        const page = dma_common_alloc_pages(cdev, 8 * MiB, h, DMA_TO_DEVICE, GFP_KERNEL);
        assert.ok(page !== null && area.contains(page.pfn));
        // First fit past the pinned page at a 2^8-page boundary; 2^11 alignment would skip further.
        const want = Math.ceil((area.basePfn + 1) / 256) * 256;
        assert.equal(page.pfn, want);
        assert.notEqual(page.pfn % 2048, 0, 'the test tells 8 from 11');
        dma_common_free_pages(cdev, 8 * MiB, page, h.value, DMA_TO_DEVICE);
        cma_release(area, pin, 1);
        assert.equal(area.available, area.count);
        cdev.destroy();
      });

      it('case 32: a valid dir is passed to map_page unchanged; an invalid one is the kernel BUG before anything runs (issue 8)', () => {
        for (const dir of [DMA_NONE, 7] as DmaDataDirection[]) {
          calls.length = 0;
          const before = m.stats();
          assert.throws(() => dma_common_alloc_pages(dev, PAGE_SIZE, { value: 0n }, dir, GFP_KERNEL), /^Error: kernel BUG/);
          assert.equal(calls.length, 0);
          assert.deepEqual(m.stats(), before);
        }
        const dirs: DmaDataDirection[] = [DMA_BIDIRECTIONAL, DMA_TO_DEVICE, DMA_FROM_DEVICE];
        for (const dir of dirs) {
          calls.length = 0;
          const h = { value: 0n };
          const page = dma_common_alloc_pages(dev, PAGE_SIZE, h, dir, GFP_KERNEL);
          assert.ok(page !== null);
          assert.equal(calls[0]?.args[4], dir);
          dma_common_free_pages(dev, PAGE_SIZE, page, h.value, dir);
          assert.equal(calls[1]?.args[3], dir);
        }
      });

      it('case 33: unmap_page(dev, handle, S, dir, 0x20) is called before the pages are released', () => {
        const area = def();
        let availableAtUnmap = -1;
        let refAtUnmap = -1;
        let target: Page | null = null;
        const d = m.createDevice({
          name: 'order33',
          ops: spyOps(calls, {
            unmap_page: (dd: Device, addr: bigint, size: number, dir: DmaDataDirection, attrs: number): void => {
              calls.push({ op: 'unmap_page', args: [dd, addr, size, dir, attrs] });
              availableAtUnmap = area.available;
              refAtUnmap = (target as Page | null)?.refcount ?? -1;
            },
          }),
        });
        const h = { value: 0n };
        const page = dma_common_alloc_pages(d, S3, h, DMA_TO_DEVICE, GFP_KERNEL);
        assert.ok(page !== null);
        target = page;
        const during = area.available;
        dma_common_free_pages(d, S3, page, h.value, DMA_TO_DEVICE);
        assert.deepEqual(calls.map((c) => c.op), ['map_page', 'unmap_page']);
        assert.deepEqual(calls[1]?.args, [d, h.value, S3, DMA_TO_DEVICE, 0x20]);
        assert.equal(availableAtUnmap, during, 'still allocated when unmap_page ran');
        assert.equal(refAtUnmap, 1);
        assert.equal(area.available, during + 3);
        assert.equal(page.refcount, 0);
        d.destroy();
      });

      it('case 34: no unmap_page -> the unmap is skipped, the pages are still released', () => {
        const d = m.createDevice({ name: 'nounmap', ops: spyOps(calls, { unmap_page: undefined }) });
        const before = def().available;
        const h = { value: 0n };
        const page = dma_common_alloc_pages(d, S3, h, DMA_TO_DEVICE, GFP_KERNEL);
        assert.ok(page !== null);
        dma_common_free_pages(d, S3, page, h.value, DMA_TO_DEVICE);
        assert.deepEqual(calls.map((c) => c.op), ['map_page']);
        assert.equal(def().available, before);
      });

      it('case 35: device CMA set, page not in it -> __free_pages(page, get_order(S)); numa/default areas not tried', () => {
        const cdev = m.createDevice({ name: 'cma35', cma: 1 * MiB, ops: spyOps(calls) });
        const free = m.buddy.freePages(0);
        const page = m.alloc_pages_node(0, GFP_KERNEL, 1);
        assert.ok(page !== null);
        dma_free_contiguous(cdev, page, 2 * PAGE_SIZE);
        assert.equal(m.buddy.freePages(0), free);
        // A default-area page is not released to the default area for such a device: it goes to
        // the buddy allocator, which refuses a page it never handed out.
        const cmaPage = cma_alloc(def(), 1, 0, false);
        assert.ok(cmaPage);
        const before = def().available;
        assert.throws(() => dma_free_contiguous(cdev, cmaPage, PAGE_SIZE), /buddy: free of a page that is not allocated/);
        assert.equal(def().available, before);
        cma_release(def(), cmaPage, 1);
        cdev.destroy();
      });

      describe('case 36: pernuma, numa and default areas', () => {
        let m3: Machine;
        before(() => {
          m3 = new Machine({
            name: 'oh60c', ramPerNode: 4 * MiB, cmaSize: 2 * MiB, numaCmaSize: 2 * MiB, pernumaCmaSize: 2 * MiB,
            hugepages: 'off', emitWarnings: false,
          });
        });
        after(() => m3.destroy());

        it('case 36: allocation tries pernuma, then numa, then default (node set, no DMA zone flags)', () => {
          const d = m3.createDevice({ name: 'n0', numaNode: 0 });
          const [pern, numa, dflt] = [m3.pernumaCmaAreas[0], m3.numaCmaAreas[0], m3.dma_contiguous_default_area];
          assert.ok(pern && numa && dflt);
          const a = dma_alloc_contiguous(d, 2 * MiB, GFP_KERNEL);
          const b = dma_alloc_contiguous(d, 2 * MiB, GFP_KERNEL | __GFP_NOWARN);
          const c = dma_alloc_contiguous(d, 2 * MiB, GFP_KERNEL | __GFP_NOWARN);
          assert.ok(a && b && c);
          assert.ok(pern.contains(a.pfn) && numa.contains(b.pfn) && dflt.contains(c.pfn));
          assert.equal(dma_alloc_contiguous(d, 2 * PAGE_SIZE, GFP_KERNEL | __GFP_NOWARN), null, 'all full');
          // Release goes back to the right area whichever it is.
          dma_free_contiguous(d, b, 2 * MiB);
          assert.equal(numa.available, numa.count);
          dma_free_contiguous(d, a, 2 * MiB);
          assert.equal(pern.available, pern.count);
          dma_free_contiguous(d, c, 2 * MiB);
          assert.equal(dflt.available, dflt.count);
          // GFP_DMA32, or no node: only the default area.
          const z = dma_alloc_contiguous(d, 2 * PAGE_SIZE, GFP_KERNEL | GFP_DMA32);
          assert.ok(z && dflt.contains(z.pfn));
          dma_free_contiguous(d, z, 2 * PAGE_SIZE);
          const any = m3.createDevice({ name: 'nonode' });
          const y = dma_alloc_contiguous(any, 2 * PAGE_SIZE, GFP_KERNEL);
          assert.ok(y && dflt.contains(y.pfn));
          dma_free_contiguous(any, y, 2 * PAGE_SIZE);
          // Not in any area: buddy.
          const free = m3.buddy.freePages(0);
          const p = m3.alloc_pages_node(0, GFP_KERNEL, 1);
          assert.ok(p);
          dma_free_contiguous(d, p, 2 * PAGE_SIZE);
          assert.equal(m3.buddy.freePages(0), free);
          d.destroy();
          any.destroy();
        });
      });

      it('case 37: release count = PAGE_ALIGN(S)/4096; a range not wholly inside one CMA range goes to buddy', () => {
        const area = def();
        const before = area.available;
        const page = dma_alloc_contiguous(dev, S3, GFP_KERNEL);
        assert.ok(page);
        assert.equal(area.available, before - 3);
        dma_free_contiguous(dev, page, S3 - 100); // PAGE_ALIGN: still 3 pages
        assert.equal(area.available, before);
        // The area's last page, freed as 2 pages: the run leaves the range, cma_release refuses.
        const last = m.pfn_to_page(area.basePfn + area.count - 1);
        const all = cma_alloc(area, area.count, 0, false);
        assert.ok(all);
        assert.throws(() => dma_free_contiguous(dev, last, 2 * PAGE_SIZE), /buddy: free of a page that is not allocated/);
        assert.equal(area.available, 0, 'nothing was released to CMA');
        cma_release(area, all, area.count);
      });
    });
  });
});
