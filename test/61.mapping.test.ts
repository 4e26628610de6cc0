// The driver-facing wrappers (lib/dma/mapping.ts, kernel/dma/mapping.c): routing to dma-direct,
// the IOMMU layer or the device's ops, argument checks and return codes (cases 38-53; 45-48 are
// in 62.coherent-debug), plus dma_common_ops and dma_dummy_ops installed on devices.

import assert from 'node:assert/strict';
import type { Machine } from '../lib/mm/machine';
import '../lib/dma/device';
import type { Device } from '../lib/dma/device';
import { GFP_DMA, GFP_DMA32, GFP_KERNEL, PAGE_SIZE, __GFP_COMP, __GFP_HIGHMEM } from '../lib/mm/gfp';
import type { Page } from '../lib/mm/page';
import { PAGE_SHARED } from '../lib/mm/pgprot';
import { dma_declare_coherent_memory, dma_release_coherent_memory } from '../lib/dma/coherent';
import {
  DMA_BIDIRECTIONAL, DMA_FROM_DEVICE, DMA_BIT_MASK, DMA_MAPPING_ERROR, DMA_TO_DEVICE, EIO, ENOMEM, ENXIO, type DmaDataDirection,
} from '../lib/dma/constants';
import {
  dma_alloc_attrs, dma_alloc_pages, dma_free_pages, dma_get_mask, dma_get_sgtable, dma_get_sgtable_attrs, dma_map_page,
  dma_map_page_attrs, dma_map_sg_attrs, dma_map_sgtable, dma_mapping_error, dma_mmap_attrs, dma_mmap_coherent,
  dma_mmap_pages, dma_set_coherent_mask, dma_set_mask, dma_set_mask_and_coherent, dma_supported,
  dma_unmap_page, dma_alloc_noncoherent, dma_free_noncoherent, dma_map_single, dma_unmap_single, dma_alloc_coherent, dma_free_coherent,
} from '../lib/dma/mapping';
import { vfree, vmalloc } from '../lib/mm/vmalloc';
import { dma_common_ops, dma_dummy_ops } from '../lib/dma/ops_helpers';
import { SgTable, sg_alloc_table, sg_set_page, type Scatterlist } from '../lib/dma/scatterlist';
import { expectNoLeaks } from './helpers/leaks';
import { useDmaMachine } from './helpers/dma-fixtures';
import { spyOps } from './helpers/spy-ops';

const S3 = 3 * PAGE_SIZE;
const phys = (p: Page): bigint => BigInt(p.pfn) << 12n;

describe('61 mapping: the driver-facing wrappers', () => {
  expectNoLeaks();
  // Nested so that the machine is destroyed before the leak check runs.
  describe('on one machine', () => {
    const fx = useDmaMachine('map61');
    const { calls, buffer, vma, device } = fx;
    let m: Machine;
    before(() => {
      m = fx.m;
    });

    /** A spy alloc_pages_op / free_pages pair over the buddy allocator. */
    function pageOps(): Record<string, unknown> {
      return {
        alloc_pages_op: (d: Device, size: number, h: { value: bigint }, dir: DmaDataDirection, gfp: number): Page | null => {
          calls.push({ op: 'alloc_pages_op', args: [d, size, dir, gfp] });
          const page = m.alloc_pages_node(0, gfp, 0);
          if (page !== null) h.value = 0x4000_0000_0000n + phys(page);
          return page;
        },
        free_pages: (d: Device, size: number, page: Page, h: bigint, dir: DmaDataDirection): void => {
          calls.push({ op: 'free_pages', args: [d, size, page, h, dir] });
          m.__free_pages(page, 0);
        },
      };
    }

    it('case 38: dma_alloc_pages(S = 100) -> the implementation receives size 4096', () => {
      const d = device({ name: 'c38', ops: spyOps(calls, pageOps()) });
      const h = { value: 0n };
      const page = dma_alloc_pages(d, 100, h, DMA_TO_DEVICE, GFP_KERNEL);
      assert.ok(page !== null);
      assert.equal(calls[0]?.args[1], 4096);
      dma_free_pages(d, 100, page, h.value, DMA_TO_DEVICE);
      assert.equal(calls[1]?.op, 'free_pages');
      assert.equal(calls[1]?.args[1], 4096);
    });

    it('case 39: coherent_dma_mask 0 -> NULL (WARN once), nothing called', () => {
      const d = device({ name: 'c39', coherentDmaMask: 0, ops: spyOps(calls, pageOps()) });
      const warned = m.warnings.length;
      assert.equal(dma_alloc_pages(d, PAGE_SIZE, { value: 0n }, DMA_TO_DEVICE, GFP_KERNEL), null);
      assert.deepEqual(calls, []);
      assert.match(m.warnings[warned]?.message ?? '', /coherent_dma_mask/);
    });

    it('case 40: gfp with GFP_DMA, GFP_DMA32, __GFP_HIGHMEM or __GFP_COMP -> NULL', () => {
      const d = device({ name: 'c40', ops: spyOps(calls, pageOps()) });
      for (const bad of [GFP_DMA, GFP_DMA32, __GFP_HIGHMEM, __GFP_COMP]) {
        assert.equal(dma_alloc_pages(d, PAGE_SIZE, { value: 0n }, DMA_TO_DEVICE, GFP_KERNEL | bad), null, `gfp 0x${bad.toString(16)}`);
      }
      assert.deepEqual(calls, []);
    });

    it('case 41: ops NULL, no IOMMU -> dma-direct (handle = phys + bus offset; mmap/sgtable use dma_addr)', () => {
      const off = 0x10_0000_0000n;
      const d = device({ name: 'c41', busOffset: off, dmaMask: 64, coherentDmaMask: 64 });
      const h = { value: 0n };
      const page = dma_alloc_pages(d, S3, h, DMA_BIDIRECTIONAL, GFP_KERNEL);
      assert.ok(page !== null);
      assert.equal(h.value, phys(page) + off, 'the bus address, not a helper mapping (no map_page exists)');
      // dma_direct_mmap takes its pfn from dma_addr; dma_common_mmap would use cpu_addr.
      const other = buffer(0);
      const v = vma(1);
      assert.equal(dma_mmap_coherent(d, v, other.cpu, h.value, S3), 0);
      assert.equal(v.remaps[0]?.pfn, page.pfn);
      const sgt = new SgTable();
      assert.equal(dma_get_sgtable(d, sgt, other.cpu, h.value, S3), 0);
      assert.equal(sgt.sgl?.page_link, page);
      dma_free_pages(d, S3, page, h.value, DMA_BIDIRECTIONAL);
      const hm = dma_map_page(d, other.page, 8, 64, DMA_TO_DEVICE);
      assert.equal(hm, phys(other.page) + 8n + off);
      dma_unmap_page(d, hm, 64, DMA_TO_DEVICE);
    });

    it('case 41 converse: behind an IOMMU, dma_alloc_pages goes through dma_common_alloc_pages (IOVA from iommu_dma_map_page)', () => {
      const d = device({ name: 'c41i', iommu: true, coherentDmaMask: 64, dmaMask: 64 });
      const h = { value: 0n };
      const page = dma_alloc_pages(d, S3, h, DMA_BIDIRECTIONAL, GFP_KERNEL);
      assert.ok(page !== null);
      assert.notEqual(h.value, DMA_MAPPING_ERROR);
      assert.ok(m.dma_contiguous_default_area?.contains(page.pfn), 'CMA first (dma_alloc_contiguous)');
      assert.ok(m.view(m.page_address(page), S3).every((b) => b === 0));
      const hn = { value: 0n };
      const cpu = dma_alloc_noncoherent(d, PAGE_SIZE, hn, DMA_TO_DEVICE, GFP_KERNEL);
      assert.ok(cpu !== null);
      dma_free_pages(d, S3, page, h.value, DMA_BIDIRECTIONAL);
      assert.equal(m.dma_contiguous_default_area?.available, (m.dma_contiguous_default_area?.count ?? 0));
      const free = m.buddy.freePages(0);
      const tables = m.secPageTables;
      dma_free_noncoherent(d, PAGE_SIZE, cpu, hn.value, DMA_TO_DEVICE);
      // The last unmap also frees the domain's I/O page-table pages (they are machine memory).
      assert.equal(m.buddy.freePages(0), free + 1 + (tables - m.secPageTables), 'one page: no CMA for a single page');
    });

    it('case 42: alloc_pages_op NULL -> dma_alloc_pages NULL; free_pages NULL -> dma_free_pages does nothing', () => {
      const d = device({ name: 'c42', ops: spyOps(calls) });
      assert.equal(dma_alloc_pages(d, PAGE_SIZE, { value: 0n }, DMA_TO_DEVICE, GFP_KERNEL), null);
      const { page } = buffer(0);
      dma_free_pages(d, PAGE_SIZE, page, 0x1234n, DMA_TO_DEVICE);
      assert.equal(page.refcount, 1, 'still allocated');
      assert.deepEqual(calls, []);
    });

    it('case 43: ops.mmap NULL -> dma_mmap_attrs -ENXIO; ops.get_sgtable NULL -> -ENXIO', () => {
      const d = device({ name: 'c43', ops: spyOps(calls) });
      const { cpu } = buffer(0);
      const v = vma(1);
      assert.equal(dma_mmap_attrs(d, v, cpu, 0n, PAGE_SIZE, 0), -ENXIO);
      assert.equal(dma_get_sgtable_attrs(d, new SgTable(), cpu, 0n, PAGE_SIZE, 0), -ENXIO);
      assert.ok(v.isEmpty);
    });

    it('case 44: dma_mmap_pages: bounds of cases 2 and 4 -> -ENXIO; prot untouched; the pool is ignored', () => {
      const d = device({ name: 'c44', coherent: false, ops: spyOps(calls) });
      const { page, cpu } = buffer(2);
      assert.equal(dma_declare_coherent_memory(d, phys(page), 0x8000_0000n, 4 * PAGE_SIZE), 0);
      try {
        assert.equal(dma_mmap_pages(d, vma(1, 3), S3, page), -ENXIO);
        assert.equal(dma_mmap_pages(d, vma(3, 1), S3, page), -ENXIO);
        const v = vma(2, 1);
        assert.equal(dma_mmap_pages(d, v, S3, page), 0);
        assert.equal(v.vm_page_prot, PAGE_SHARED, 'no dma_pgprot even for a non-coherent device');
        assert.equal(v.remaps[0]?.pfn, page.pfn + 1);
        v.view(0, 2).write('ok');
        assert.equal(m.view(cpu + PAGE_SIZE, 2).toString(), 'ok');
      } finally {
        dma_release_coherent_memory(d);
      }
    });

    it('case 49: dma_mapping_error(DMA_MAPPING_ERROR) -> -ENOMEM; any other handle -> 0', () => {
      const d = device({ name: 'c49' });
      assert.equal(dma_mapping_error(d, DMA_MAPPING_ERROR), -ENOMEM);
      assert.equal(dma_mapping_error(d, 0n), 0);
      assert.equal(dma_mapping_error(d, 0xffff_ffff_ffff_fffen), 0);
    });

    it('case 50: dma_mask NULL -> DMA_MAPPING_ERROR (WARN); dir 3 -> kernel BUG (throws)', () => {
      const d = device({ name: 'c50', dmaMask: null, ops: spyOps(calls) });
      const { page } = buffer(0);
      const warned = m.warnings.length;
      assert.equal(dma_map_page_attrs(d, page, 0, PAGE_SIZE, DMA_TO_DEVICE, 0), DMA_MAPPING_ERROR);
      assert.match(m.warnings[warned]?.message ?? '', /dma_mask/);
      assert.deepEqual(calls, []);
      const ok = device({ name: 'c50b', ops: spyOps(calls) });
      assert.throws(() => dma_map_page_attrs(ok, page, 0, PAGE_SIZE, 3 as DmaDataDirection, 0), /^Error: kernel BUG/);
      assert.deepEqual(calls, []);
    });

    it('dma_map_single of a vmalloc address -> DMA_MAPPING_ERROR with a WARN once; nothing mapped or tracked', () => {
      const d = device({ name: 'vm', debug: true, ops: spyOps(calls) });
      const va = vmalloc(m, PAGE_SIZE);
      assert.ok(va !== null);
      try {
        const warned = m.warnings.length;
        assert.equal(dma_map_single(d, va, 64, DMA_TO_DEVICE), DMA_MAPPING_ERROR);
        assert.equal(dma_map_single(d, va, 64, DMA_TO_DEVICE), DMA_MAPPING_ERROR);
        const msgs = m.warnings.slice(warned).map((w) => w.message);
        assert.equal(msgs.length, 1, 'dev_WARN_ONCE');
        assert.match(msgs[0] ?? '', /rejecting DMA map of vmalloc memory/);
        assert.deepEqual(calls, []);
        assert.equal(d.debug.activeEntries(), 0);
      } finally {
        vfree(m, va);
      }
    });

    it('case 51: direct map beyond min_not_zero(mask, bus limit), no swiotlb -> DMA_MAPPING_ERROR', () => {
      const { page } = buffer(0);
      // RAM starts at 1 GiB: a 30-bit mask cannot reach it.
      const d = device({ name: 'c51', dmaMask: 30 });
      assert.equal(dma_map_page(d, page, 0, PAGE_SIZE, DMA_TO_DEVICE), DMA_MAPPING_ERROR);
      const lim = device({ name: 'c51b', dmaMask: 64, busDmaLimit: phys(page) + 4095n });
      assert.equal(dma_map_page(lim, page, 0, PAGE_SIZE, DMA_TO_DEVICE), phys(page), 'the last byte exactly at the limit');
      assert.equal(dma_map_page(lim, page, 1, PAGE_SIZE, DMA_TO_DEVICE), DMA_MAPPING_ERROR);
    });

    it('case 52: map_sg -ENOMEM -> dma_map_sg_attrs 0, dma_map_sgtable -ENOMEM with nents unchanged; other codes -> -EIO', () => {
      let result = -ENOMEM;
      const d = device({ name: 'c52', ops: spyOps(calls, { map_sg: (): number => result }) });
      const { page } = buffer(0);
      const sgt = new SgTable();
      assert.equal(sg_alloc_table(sgt, 1, GFP_KERNEL), 0);
      sg_set_page(sgt.sgl as Scatterlist, page, PAGE_SIZE, 0);
      sgt.nents = 7;
      assert.equal(dma_map_sg_attrs(d, sgt.sgl, 1, DMA_TO_DEVICE, 0), 0);
      assert.equal(dma_map_sgtable(d, sgt, DMA_TO_DEVICE, 0), -ENOMEM);
      assert.equal(sgt.nents, 7);
      for (const other of [-28, 0, -95]) {
        result = other;
        assert.equal(dma_map_sgtable(d, sgt, DMA_TO_DEVICE, 0), -EIO, `map_sg returned ${other}`);
        assert.equal(dma_map_sg_attrs(d, sgt.sgl, 1, DMA_TO_DEVICE, 0), 0);
      }
      assert.equal(sgt.nents, 7);
      result = 1;
      assert.equal(dma_map_sgtable(d, sgt, DMA_TO_DEVICE, 0), 0);
      assert.equal(sgt.nents, 1);
    });

    it('dma_alloc_attrs (kernel/dma/mapping.c): a zero coherent_dma_mask WARNs once and still calls ops->alloc', () => {
      const allocs: number[] = [];
      const d = device({
        name: 'mask0',
        ops: spyOps(calls, {
          alloc: (_d: Device, size: number): number | null => {
            allocs.push(size);
            return null;
          },
        }),
      });
      d.coherent_dma_mask = 0n;
      const before = m.warnings.length;
      const h = { value: 0n };
      assert.equal(dma_alloc_attrs(d, PAGE_SIZE, h, GFP_KERNEL, 0), null);
      assert.equal(dma_alloc_attrs(d, 2 * PAGE_SIZE, h, GFP_KERNEL, 0), null);
      assert.deepEqual(allocs, [PAGE_SIZE, 2 * PAGE_SIZE], 'ops->alloc ran both times');
      const warned = m.warnings.slice(before).filter((w) => /coherent_dma_mask/.test(w.message));
      assert.equal(warned.length, 1, 'WARN_ON_ONCE');
    });

    it('DMA-API debug check 20 spans the devices of one machine and covers coherent buffers (one dma_active_cacheline tree)', () => {
      const a = device({ name: 'ovl-a', debug: true });
      const b = device({ name: 'ovl-b', debug: true });
      a.debug.maxPrinted = b.debug.maxPrinted = 0;
      const { page } = buffer(0);
      const ha = dma_map_page(a, page, 0, 64, DMA_FROM_DEVICE);
      assert.equal(dma_mapping_error(a, ha), 0);
      const hb = dma_map_page(b, page, 8, 16, DMA_FROM_DEVICE);
      assert.equal(dma_mapping_error(b, hb), 0);
      assert.deepEqual(b.debug.reports.map((r) => r.check), [20]);
      assert.deepEqual(a.debug.reports.map((r) => r.check), []);
      dma_unmap_page(a, ha, 64, DMA_FROM_DEVICE);
      dma_unmap_page(b, hb, 16, DMA_FROM_DEVICE);
      // A coherent buffer holds its first line (DMA_BIDIRECTIONAL): a streaming FROM_DEVICE map of it overlaps.
      const h = { value: 0n };
      const cpu = dma_alloc_coherent(a, PAGE_SIZE, h, GFP_KERNEL)!;
      const hs = dma_map_single(b, cpu + 32, 16, DMA_FROM_DEVICE);
      assert.equal(dma_mapping_error(b, hs), 0);
      assert.deepEqual(b.debug.reports.map((r) => r.check), [20, 20]);
      dma_unmap_single(b, hs, 16, DMA_FROM_DEVICE);
      dma_free_coherent(a, PAGE_SIZE, cpu, h.value);
      const again = dma_map_single(b, cpu + 32, 16, DMA_FROM_DEVICE);
      assert.equal(dma_mapping_error(b, again), 0);
      assert.deepEqual(b.debug.reports.map((r) => r.check), [20, 20], 'freed lines are free again');
      dma_unmap_single(b, again, 16, DMA_FROM_DEVICE);
    });

    it('case 53: dma_set_mask on dma-direct: 16 bits -> -EIO; 24 and 32 bits -> 0', () => {
      const d = device({ name: 'c53' });
      assert.equal(dma_set_mask(d, DMA_BIT_MASK(16)), -EIO);
      assert.equal(dma_get_mask(d), DMA_BIT_MASK(32));
      assert.equal(dma_set_mask(d, DMA_BIT_MASK(24)), 0);
      assert.equal(dma_get_mask(d), DMA_BIT_MASK(24));
      assert.equal(dma_set_mask(d, DMA_BIT_MASK(32)), 0);
      assert.equal(dma_set_coherent_mask(d, DMA_BIT_MASK(16)), -EIO);
      assert.equal(dma_set_mask_and_coherent(d, DMA_BIT_MASK(64)), 0);
      assert.equal(d.coherent_dma_mask, DMA_BIT_MASK(64));
      const noMask = device({ name: 'c53b', dmaMask: null });
      assert.equal(dma_set_mask(noMask, DMA_BIT_MASK(32)), -EIO, 'no dma_mask pointer');
      assert.equal(dma_get_mask(noMask), DMA_BIT_MASK(32));
      assert.equal(dma_supported(device({ name: 'c53c', iommu: true }), DMA_BIT_MASK(8)), true);
    });

    it('dma_common_ops installed on a device: direct-style map_page, helper alloc/mmap/get_sgtable', () => {
      const off = 0x2_0000_0000n;
      const d = device({ name: 'common', ops: dma_common_ops, busOffset: off, dmaMask: 64, coherentDmaMask: 64 });
      const h = { value: 0n };
      const page = dma_alloc_pages(d, S3, h, DMA_BIDIRECTIONAL, GFP_KERNEL);
      assert.ok(page !== null);
      assert.equal(h.value, phys(page) + off);
      const v = vma(3);
      assert.equal(dma_mmap_attrs(d, v, m.page_address(page), h.value, S3, 0), 0);
      v.view(0, 3).write('xyz');
      assert.equal(m.view(m.page_address(page), 3).toString(), 'xyz');
      const sgt = new SgTable();
      assert.equal(dma_get_sgtable_attrs(d, sgt, m.page_address(page), h.value, S3, 0), 0);
      assert.equal(sgt.sgl?.page_link, page);
      assert.equal(dma_map_sgtable(d, sgt, DMA_TO_DEVICE, 0), 0);
      assert.equal(sgt.sgl?.dma_address, phys(page) + off);
      dma_free_pages(d, S3, page, h.value, DMA_BIDIRECTIONAL);
      assert.equal(m.dma_contiguous_default_area?.available, m.dma_contiguous_default_area?.count);
      const narrow = device({ name: 'common30', ops: dma_common_ops, dmaMask: 30 });
      assert.equal(dma_map_page(narrow, page, 0, 16, DMA_TO_DEVICE), DMA_MAPPING_ERROR, 'mask-checked');
    });

    it('dma_dummy_ops: every operation fails cleanly', () => {
      const d = device({ name: 'dummy', ops: dma_dummy_ops });
      const { page, cpu } = buffer(0);
      assert.equal(dma_map_page(d, page, 0, 16, DMA_TO_DEVICE), DMA_MAPPING_ERROR);
      const sgt = new SgTable();
      sg_alloc_table(sgt, 1, GFP_KERNEL);
      sg_set_page(sgt.sgl as Scatterlist, page, 16, 0);
      assert.equal(dma_map_sg_attrs(d, sgt.sgl, 1, DMA_TO_DEVICE, 0), 0);
      assert.equal(dma_map_sgtable(d, sgt, DMA_TO_DEVICE, 0), -22);
      assert.equal(dma_mmap_attrs(d, vma(1), cpu, 0n, PAGE_SIZE, 0), -ENXIO);
      assert.equal(dma_set_mask(d, DMA_BIT_MASK(64)), -EIO);
      assert.equal(dma_supported(d, DMA_BIT_MASK(64)), false);
    });
  });
});
