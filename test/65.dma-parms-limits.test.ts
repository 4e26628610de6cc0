// dev->dma_parms and what reads it (the IOMMU's scatterlist merging: max segment size and segment
// boundary), the mapping.c queries a driver asks before mapping, dma_alloc_wc, the sync range
// helpers, and managed coherent memory released at device teardown.

import assert from 'node:assert/strict';
import { Machine } from '../lib/mm/machine';
import { GFP_KERNEL, NUMA_NO_NODE, PAGE_SIZE } from '../lib/mm/gfp';
import type { Device } from '../lib/dma/device';
import '../lib/dma/device';
import {
  dma_get_max_seg_size, dma_get_min_align_mask, dma_get_seg_boundary, dma_get_seg_boundary_nr_pages, dma_set_max_seg_size,
  dma_set_min_align_mask, dma_set_seg_boundary,
} from '../lib/dma/dma_parms';
import {
  dma_addressing_limited, dma_can_mmap, dma_get_cache_alignment, dma_get_merge_boundary, dma_get_required_mask,
  dma_need_sync, dma_need_unmap, dma_opt_mapping_size,
} from '../lib/dma/limits';
import { dmam_alloc_coherent, dmam_free_coherent } from '../lib/dma/managed';
import { dma_alloc_coherent, dma_alloc_wc, dma_free_wc, dma_map_sgtable, dma_unmap_sgtable, dma_set_mask } from '../lib/dma/mapping';
import { dma_sync_single_range_for_cpu, dma_sync_single_range_for_device } from '../lib/dma/sync';
import { DMA_BIT_MASK, DMA_FROM_DEVICE, DMA_TO_DEVICE } from '../lib/dma/constants';
import { SgTable, sg_dma_address, sg_dma_len, sg_free_table, for_each_sgtable_dma_sg } from '../lib/dma/scatterlist';
import { sg_alloc_table_from_pages } from '../lib/dma/sg_pages';
import { busMaster } from '../lib/devices/bus_master';
import { MEMTX_OK } from '../lib/devices/bus_engine';
import type { Page } from '../lib/mm/page';
import { expectNoLeaks } from './helpers/leaks';

const MiB = 1 << 20;

describe('65 dma_parms, limits and managed memory', () => {
  expectNoLeaks();
  let m: Machine;
  let iommu: Device;
  let direct: Device;
  beforeEach(() => {
    m = new Machine({ name: 'm65', ramPerNode: 8 * MiB, cmaSize: 2 * MiB, hugepages: 'off', emitWarnings: false });
    iommu = m.createDevice({ name: 'nvme0', dmaMask: 64, coherentDmaMask: 64, iommu: true });
    direct = m.createDevice({ name: 'e1000', dmaMask: 64, coherentDmaMask: 64 });
  });
  afterEach(() => m.destroy());

  /** `n` order-0 pages, every other page of a run, so that none is physically next to another. */
  function scattered(n: number): Page[] {
    const all = Array.from({ length: 2 * n }, () => m.alloc_pages_node(NUMA_NO_NODE, GFP_KERNEL, 0)!);
    const kept = all.filter((_, i) => i % 2 === 0);
    for (const p of all.filter((_, i) => i % 2 === 1)) m.__free_pages(p, 0);
    return kept;
  }

  /** Maps `pages` (each its own sg entry) through `dev` and returns the DMA segments. */
  function mapSegments(dev: Device, pages: Page[]): { sgt: SgTable; segs: [bigint, number][] } {
    const sgt = new SgTable();
    assert.equal(sg_alloc_table_from_pages(sgt, pages, pages.length, 0, pages.length * PAGE_SIZE, GFP_KERNEL), 0);
    assert.equal(dma_map_sgtable(dev, sgt, DMA_TO_DEVICE, 0), 0);
    const segs: [bigint, number][] = [];
    for_each_sgtable_dma_sg(sgt, (sg) => segs.push([sg_dma_address(sg), sg_dma_len(sg)]));
    return { sgt, segs };
  }

  function unmap(dev: Device, sgt: SgTable, pages: Page[]): void {
    dma_unmap_sgtable(dev, sgt, DMA_TO_DEVICE, 0);
    sg_free_table(sgt);
    for (const p of pages) m.__free_pages(p, 0);
  }

  describe('dma_parms', () => {
    it('defaults (64 KiB, ULONG_MAX, 0), setters, and a device without dma_parms WARNs once', () => {
      assert.equal(dma_get_max_seg_size(iommu), 65536);
      assert.equal(dma_get_seg_boundary(iommu), 2n ** 64n - 1n);
      assert.equal(dma_get_min_align_mask(iommu), 0);
      dma_set_max_seg_size(iommu, 2 ** 32 - 1);
      dma_set_seg_boundary(iommu, 0xffffn);
      dma_set_min_align_mask(iommu, 4095);
      assert.equal(dma_get_max_seg_size(iommu), 2 ** 32 - 1);
      assert.equal(dma_get_seg_boundary(iommu), 0xffffn);
      assert.equal(dma_get_min_align_mask(iommu), 4095);
      assert.equal(dma_get_seg_boundary_nr_pages(iommu, 12), 16n);
      assert.equal(dma_get_seg_boundary_nr_pages(null, 12), 2n ** 20n, 'no device: U32_MAX');
      const bare = m.createDevice({ name: 'bare', dmaParms: false });
      assert.equal(bare.dma_parms, null);
      dma_set_max_seg_size(bare, 1 << 20);
      dma_set_max_seg_size(bare, 1 << 20);
      assert.equal(m.warnings.filter((w) => /dma_set_max_seg_size: bare has no dma_parms/.test(w.message)).length, 1, 'WARN_ON_ONCE');
      assert.equal(dma_get_max_seg_size(bare), 65536);
      assert.equal(dma_get_min_align_mask(bare), 0);
    });

    it('misuse is refused before anything changes; dma_parms fields are checked on assignment', () => {
      assert.throws(() => dma_set_max_seg_size(iommu, 2 ** 32), RangeError);
      assert.throws(() => dma_set_max_seg_size(iommu, '65536' as unknown as number), TypeError);
      assert.throws(() => dma_set_seg_boundary(iommu, 0xffff as unknown as bigint), TypeError);
      assert.throws(() => dma_set_seg_boundary(iommu, -1n), RangeError);
      assert.throws(() => { (iommu.dma_parms as { segment_boundary_mask: unknown }).segment_boundary_mask = 'x'; }, TypeError);
      assert.throws(() => { (iommu.dma_parms as { max_segment_size: unknown }).max_segment_size = -1; }, RangeError);
      assert.throws(() => { (iommu as { dma_parms: unknown }).dma_parms = null; }, TypeError);
      assert.equal(dma_get_max_seg_size(iommu), 65536);
      assert.equal(dma_get_seg_boundary(iommu), 2n ** 64n - 1n);
      assert.throws(() => m.createDevice({ dmaParms: 'yes' as unknown as boolean }), TypeError);
    });
  });

  describe('the IOMMU merges scatterlists within max_seg_size and the segment boundary', () => {
    it('600 scattered pages: 38 segments of 64 KiB by default, one with UINT_MAX (NVMe)', () => {
      const pages = scattered(600);
      const a = mapSegments(iommu, pages);
      assert.equal(a.segs.length, 38);
      assert.ok(a.segs.every(([, len], i) => len === (i < 37 ? 65536 : 600 * PAGE_SIZE - 37 * 65536)));
      dma_unmap_sgtable(iommu, a.sgt, DMA_TO_DEVICE, 0);
      sg_free_table(a.sgt);
      dma_set_max_seg_size(iommu, 2 ** 32 - 1);
      const b = mapSegments(iommu, pages);
      assert.deepEqual(b.segs.map(([, l]) => l), [600 * PAGE_SIZE], 'one segment, as Linux gives NVMe');
      // The device reads the whole request through the one segment.
      const bus = busMaster(iommu);
      pages.forEach((p, i) => m.view(m.page_address(p), PAGE_SIZE).fill(i & 0xff));
      const data = new Uint8Array(600 * PAGE_SIZE);
      assert.equal(bus.read(b.segs[0]![0], data), MEMTX_OK);
      for (let i = 0; i < 600; i++) assert.equal(data[i * PAGE_SIZE + 100], i & 0xff);
      unmap(iommu, b.sgt, pages);
    });

    it('no segment crosses the segment boundary: 16 KiB boundary, 4-page segments on 16 KiB lines', () => {
      dma_set_max_seg_size(iommu, 2 ** 32 - 1);
      dma_set_seg_boundary(iommu, 0x3fffn);
      const pages = scattered(12);
      const { sgt, segs } = mapSegments(iommu, pages);
      assert.deepEqual(segs.map(([, l]) => l), [16384, 16384, 16384]);
      for (const [addr, len] of segs) {
        assert.equal(addr & 0x3fffn, 0n, 'each segment starts on the boundary');
        assert.equal((addr & ~0x3fffn) === ((addr + BigInt(len) - 1n) & ~0x3fffn), true, 'and ends before the next');
      }
      unmap(iommu, sgt, pages);
    });

    it('DMA-API debug with sg checks on (CONFIG_DMA_API_DEBUG_SG) reports a dma-direct entry past max_seg_size and across the boundary', () => {
      const dev = m.createDevice({ name: 'sgdbg', dmaMask: 64, debug: true });
      dev.debug.sg = true;
      dev.debug.maxPrinted = 0;
      const block = m.alloc_pages_node(NUMA_NO_NODE, GFP_KERNEL, 5)!; // 128 KiB, 128 KiB aligned
      const pages = Array.from({ length: 32 }, (_, i) => m.pfn_to_page(block.pfn + i));
      dma_set_seg_boundary(dev, 0xffffn);
      const { sgt, segs } = mapSegments(dev, pages);
      // dma-direct maps the one 128 KiB entry as it is: longer than the default 64 KiB, across a 64 KiB line.
      assert.deepEqual(segs.map(([, l]) => l), [131072]);
      assert.deepEqual(dev.debug.reports.map((r) => r.check), [18, 19]);
      dma_unmap_sgtable(dev, sgt, DMA_TO_DEVICE, 0);
      sg_free_table(sgt);
      m.__free_pages(block, 5);
      dev.destroy();
    });

    it('an entry that would cross the boundary is moved onto it by padding the entry before', () => {
      dma_set_max_seg_size(iommu, 2 ** 32 - 1);
      dma_set_seg_boundary(iommu, 0x3fffn);
      // Entries of 3 pages, then 2: the second would cross the 16 KiB line at 12 KiB.
      const runA = m.alloc_pages_node(NUMA_NO_NODE, GFP_KERNEL, 2)!;
      const gap = m.alloc_pages_node(NUMA_NO_NODE, GFP_KERNEL, 0)!;
      const runB = m.alloc_pages_node(NUMA_NO_NODE, GFP_KERNEL, 1)!;
      const pages = [0, 1, 2].map((i) => m.pfn_to_page(runA.pfn + i)).concat([0, 1].map((i) => m.pfn_to_page(runB.pfn + i)));
      const sgt = new SgTable();
      assert.equal(sg_alloc_table_from_pages(sgt, pages, 5, 0, 5 * PAGE_SIZE, GFP_KERNEL), 0);
      assert.equal(sgt.orig_nents, runB.pfn === runA.pfn + 5 ? 1 : 2, 'two entries unless the runs touch');
      assert.equal(dma_map_sgtable(iommu, sgt, DMA_TO_DEVICE, 0), 0);
      const segs: [bigint, number][] = [];
      for_each_sgtable_dma_sg(sgt, (sg) => segs.push([sg_dma_address(sg), sg_dma_len(sg)]));
      assert.deepEqual(segs.map(([, l]) => l), [3 * PAGE_SIZE, 2 * PAGE_SIZE]);
      assert.equal(segs[1]![0] - segs[0]![0], 16384n, 'the second entry starts on the next boundary');
      dma_unmap_sgtable(iommu, sgt, DMA_TO_DEVICE, 0);
      sg_free_table(sgt);
      m.__free_pages(runA, 2);
      m.__free_pages(gap, 0);
      m.__free_pages(runB, 1);
    });
  });

  describe('limits and questions', () => {
    it('answers as Linux on x86 for dma-direct and the IOMMU', () => {
      // RAM ends below 4 GiB (physBase 1 GiB + 8 MiB + CMA), so 31 bits reach it.
      assert.equal(dma_get_required_mask(direct), DMA_BIT_MASK(31));
      assert.equal(dma_get_required_mask(iommu), DMA_BIT_MASK(32));
      assert.equal(dma_addressing_limited(direct), false);
      assert.equal(dma_set_mask(direct, DMA_BIT_MASK(30)), 0);
      assert.equal(dma_addressing_limited(direct), true, 'a 30-bit mask does not reach RAM at 1 GiB');
      assert.equal(dma_opt_mapping_size(iommu), 128 * 1024, 'the IOVA rcache range');
      assert.equal(dma_opt_mapping_size(direct), Number.MAX_SAFE_INTEGER);
      assert.equal(dma_get_merge_boundary(iommu), 4095);
      assert.equal(dma_get_merge_boundary(direct), 0);
      assert.equal(dma_can_mmap(iommu), true);
      assert.equal(dma_can_mmap(direct), true);
      assert.equal(dma_get_cache_alignment(), 1);
    });

    it('dma_need_sync / dma_need_unmap: coherent dma-direct needs neither unless DMA-API debug is on', () => {
      assert.equal(dma_need_sync(direct, 0x40000000n), false);
      assert.equal(dma_need_unmap(direct), false);
      assert.equal(dma_need_sync(iommu, 0x1000n), false, 'coherent behind the IOMMU: dma_skip_sync');
      assert.equal(dma_need_unmap(iommu), true, 'the IOVA must be given back');
      const nc = m.createDevice({ name: 'nc', coherent: false });
      assert.equal(dma_need_sync(nc, 0x40000000n), true);
      assert.equal(dma_need_unmap(nc), true);
      const dbg = m.createDevice({ name: 'dbg', debug: true });
      assert.equal(dma_need_sync(dbg, 0x40000000n), false, 'asked of dma-direct, which answers per address');
      assert.equal(dma_need_unmap(dbg), true, 'DMA-API debug tracks unmaps');
      const dbgIommu = m.createDevice({ name: 'dbgi', debug: true, iommu: true });
      assert.equal(dma_need_sync(dbgIommu, 0x1000n), true);
    });
  });

  describe('wc, sync ranges, managed memory', () => {
    it('dma_alloc_wc / dma_free_wc, and sync of a range within a mapping', () => {
      const h = { value: 0n };
      const wc = dma_alloc_wc(direct, 2 * PAGE_SIZE, h, GFP_KERNEL)!;
      assert.notEqual(wc, null);
      m.view(wc, 8).fill(3);
      assert.equal(busMaster(direct).read8(h.value + 7n), 3);
      dma_sync_single_range_for_device(direct, h.value, 4096, 100, DMA_FROM_DEVICE);
      dma_sync_single_range_for_cpu(direct, h.value, 4096, 100, DMA_FROM_DEVICE);
      assert.throws(() => dma_sync_single_range_for_cpu(direct, h.value, -1, 100, DMA_FROM_DEVICE), RangeError);
      dma_free_wc(direct, 2 * PAGE_SIZE, wc, h.value);
    });

    it('dmam_alloc_coherent memory is freed with the device; dmam_free_coherent frees early and WARNs on strangers', () => {
      const free0 = m.stats().nodes[0]!.freePages + m.stats().cma[0]!.available;
      const dev = m.createDevice({ name: 'managed', debug: true });
      const h1 = { value: 0n };
      const h2 = { value: 0n };
      const a = dmam_alloc_coherent(dev, 3 * PAGE_SIZE, h1, GFP_KERNEL)!;
      const b = dmam_alloc_coherent(dev, PAGE_SIZE, h2, GFP_KERNEL)!;
      assert.ok(a !== null && b !== null);
      dmam_free_coherent(dev, PAGE_SIZE, b, h2.value);
      const h3 = { value: 0n };
      const plain = dma_alloc_coherent(dev, PAGE_SIZE, h3, GFP_KERNEL)!;
      const warned = m.warnings.length;
      dmam_free_coherent(dev, PAGE_SIZE, plain, h3.value);
      assert.match(m.warnings[warned]!.message, /dmam_free_coherent: managed has no managed allocation/);
      dev.destroy();
      assert.equal(dev.debug.reports.filter((r) => /pending|still/.test(r.message)).length, 0, 'no leak reported at teardown: released first');
      assert.equal(m.stats().nodes[0]!.freePages + m.stats().cma[0]!.available, free0, 'everything back');
    });
  });
});
