// DMA to a Region's memory (mm/gup.c): pin_user_pages_fast / get_user_pages over a Region give
// struct pages of this machine, sg_alloc_table_from_pages + dma_map_sgtable map them, a device's
// DMA (direct, IOMMU, worker) reaches the Region's bytes, and the Region is blocked while pinned.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { Machine } from '../lib/mm/machine';
import '../lib/dma/device';
import { GFP_KERNEL, PAGE_SIZE } from '../lib/mm/gfp';
import type { Page } from '../lib/mm/page';
import { Region } from '../lib/os/region';
import {
  FOLL_GET, FOLL_LONGTERM, FOLL_WRITE, FOLL_NOWAIT, GUP_PIN_COUNTING_BIAS, page_maybe_dma_pinned,
  unpin_user_page, unpin_user_pages, unpin_user_pages_dirty_lock,
} from '../lib/mm/gup';
import { get_page, put_page } from '../lib/mm/page_ref';
import { DMA_BIDIRECTIONAL } from '../lib/dma/constants';
import { dma_map_sgtable, dma_unmap_sgtable } from '../lib/dma/mapping';
import { SgTable, for_each_sgtable_dma_sg, sg_alloc_table_from_pages, sg_dma_address, sg_dma_len, sg_free_table } from '../lib/dma/scatterlist';
import { MEMTX_OK } from '../lib/devices/bus_engine';
import { busDescription, busMaster } from '../lib/devices/bus_master';
import { BusEngine } from '../lib/devices/bus_engine';
import { expectNoLeaks } from './helpers/leaks';

const MiB = 1024 * 1024;
const EFAULT = 14;
const EINVAL = 22;

function busy(fn: () => void): void {
  assert.throws(fn, (e: NodeJS.ErrnoException) => e.code === 'ERR_DMAMEM_BUSY');
}

describe('39 user pages (pin_user_pages, DMA to a Region)', () => {
  expectNoLeaks();
  let m: Machine;
  let r: Region;
  beforeEach(() => {
    m = new Machine({ name: 'gup39', ramPerNode: 8 * MiB, cmaSize: 0, hugepages: 'off', emitWarnings: false });
    r = Region.allocate(16 * PAGE_SIZE, { hugepages: 'off' });
  });
  afterEach(() => {
    m.destroy();
    r.close();
  });

  /** Maps pages[0..n) as one sg table for dev; returns the table (mapped) and its DMA entries. */
  function mapPages(dev: ReturnType<Machine['createDevice']>, pages: Page[], n: number): { sgt: SgTable; segs: { dma: bigint; len: number }[] } {
    const sgt = new SgTable();
    assert.equal(sg_alloc_table_from_pages(sgt, pages, n, 0, n * PAGE_SIZE, GFP_KERNEL), 0);
    assert.equal(dma_map_sgtable(dev, sgt, DMA_BIDIRECTIONAL, 0), 0);
    const segs: { dma: bigint; len: number }[] = [];
    for_each_sgtable_dma_sg(sgt, (sg) => { segs.push({ dma: sg_dma_address(sg), len: sg_dma_len(sg) }); });
    return { sgt, segs };
  }

  for (const iommu of [false, true]) {
    it(`a ${iommu ? 'IOMMU' : 'direct'} device's DMA through the mapped user pages reads and writes the Region's bytes`, () => {
      const dev = m.createDevice({ name: 'd', dmaMask: 64, iommu });
      const pages: Page[] = [];
      assert.equal(m.pin_user_pages_fast(r, r.address + 2 * PAGE_SIZE, 4, FOLL_WRITE | FOLL_LONGTERM, pages), 4);
      assert.equal(pages.length, 4);
      for (let i = 0; i < 4; i++) {
        const p = pages[i]!;
        assert.equal(p.machine, m);
        assert.equal(m.pfn_to_page(p.pfn), p);
        assert.equal(p.pfn, pages[0]!.pfn + i);
        assert.ok(page_maybe_dma_pinned(p));
        assert.equal(p.refcount, 1 + GUP_PIN_COUNTING_BIAS);
        assert.equal(m.virt_to_page(m.page_address(p)), p);
        // Above every other segment: never the buddy allocator's.
        for (const s of m.segments) if (s.kind !== 'user') assert.ok(p.pfn >= s.startPfn + s.pages);
      }
      const { sgt, segs } = mapPages(dev, pages, 4);
      assert.equal(segs.length, 1); // contiguous PFNs: one entry, one DMA segment
      const bus = busMaster(dev);
      const { dma } = segs[0]!;
      // Device writes land in the Region.
      assert.equal(bus.write(dma + 10n, Uint8Array.from([1, 2, 3])), MEMTX_OK);
      assert.equal(bus.write32(dma + BigInt(3 * PAGE_SIZE) + 8n, 0xdeadbeef), MEMTX_OK);
      const v = r.view();
      assert.deepEqual([...v.subarray(2 * PAGE_SIZE + 10, 2 * PAGE_SIZE + 13)], [1, 2, 3]);
      assert.equal(v.readUInt32LE(5 * PAGE_SIZE + 8), 0xdeadbeef);
      // CPU writes through the Region are what the device reads, and the kernel's linear map sees them.
      v.fill(0x5a, 3 * PAGE_SIZE, 3 * PAGE_SIZE + 64);
      const back = new Uint8Array(64);
      assert.equal(bus.read(dma + BigInt(PAGE_SIZE), back), MEMTX_OK);
      assert.ok(back.every((b) => b === 0x5a));
      assert.equal(m.view(m.page_address(pages[1]!), 64)[0], 0x5a);
      dma_unmap_sgtable(dev, sgt, DMA_BIDIRECTIONAL, 0);
      sg_free_table(sgt);
      unpin_user_pages(pages, 4);
      dev.destroy();
    });
  }
});
