// The x86 IOVA policy of drivers/iommu/dma-iommu.c: PCI devices below 4 GiB first
// (iommu_dma_alloc_iova, pci_32bit_workaround), reserved regions never handed out
// (iova_reserve_iommu_regions), lazy flushing through the flush queue by default (queue_iova,
// fq_flush_timeout) with iommu.strict=1 as an option, and the two-step IOVA API (dma_iova_*).

import assert from 'node:assert/strict';
import { Machine } from '../lib/mm/machine';
import '../lib/dma/device';
import type { Device } from '../lib/dma/device';
import { GFP_KERNEL, PAGE_SIZE } from '../lib/mm/gfp';
import { DMA_BIDIRECTIONAL, DMA_BIT_MASK, DMA_FROM_DEVICE, DMA_MAPPING_ERROR, DMA_TO_DEVICE, EIO } from '../lib/dma/constants';
import { dma_map_page, dma_unmap_page } from '../lib/dma/mapping';
import { IOMMU_RESV_MSI, IOMMU_RESV_RESERVED, IOVA_FQ_SIZE, iommu_get_resv_regions, type IommuDomain } from '../lib/dma/iommu';
import { iommu_dma_alloc_iova } from '../lib/dma/dma_iommu';
import {
  DmaIovaState, dma_iova_destroy, dma_iova_free, dma_iova_link, dma_iova_size, dma_iova_sync, dma_iova_try_alloc,
  dma_iova_unlink, dma_use_iova,
} from '../lib/dma/iova_api';
import { MEMTX_ACCESS_ERROR, MEMTX_OK } from '../lib/devices/bus_engine';
import { busMaster } from '../lib/devices/bus_master';
import { expectNoLeaks } from './helpers/leaks';
import { usePagesOf } from './helpers/pages-of';

const MiB = 1024 * 1024;
const EEXIST = 17;
const GiB4 = 1n << 32n;
const MSI_LO = 0xfee00;
const MSI_HI = 0xfeeff;

function domain(dev: Device): IommuDomain {
  assert.ok(dev.iommu !== null);
  return dev.iommu;
}

/** Allocates every free IOVA page below `limit` (big runs first, then smaller); returns the first pages. */
function fill(dev: Device, limit: bigint): number[] {
  const d = domain(dev);
  const got: number[] = [];
  for (let order = 18; order >= 0; order--) {
    for (;;) {
      const pfn = iommu_dma_alloc_iova(dev, d, 2 ** order, limit);
      if (pfn === 0) break;
      got.push(pfn);
    }
  }
  return got;
}

function overlaps(ranges: [number, number][], lo: number, hi: number): boolean {
  return ranges.some(([pfn, n]) => pfn <= hi && pfn + n - 1 >= lo);
}

describe('69 x86 IOVA policy (dma-iommu.c)', () => {
  expectNoLeaks();
  let m: Machine;
  const take = usePagesOf(() => m);
  beforeEach(() => {
    m = new Machine({ name: 'iova69', ramPerNode: 8 * MiB, cmaSize: 0, hugepages: 'off', emitWarnings: false });
  });

  describe('iommu_dma_alloc_iova: 32-bit first for PCI devices', () => {
    it('a PCI device with a 64-bit mask gets IOVAs below 4 GiB until that space is exhausted, then above (and stays there)', () => {
      const dev = m.createDevice({ name: 'nvme', dmaMask: 64, iommu: { strict: true } });
      assert.equal(dev.bus, 'pci');
      const d = domain(dev);
      assert.equal(d.pci_32bit_workaround, true);
      const page = take();
      const first = dma_map_page(dev, page, 0, PAGE_SIZE, DMA_BIDIRECTIONAL);
      assert.equal(first, GiB4 - BigInt(PAGE_SIZE), 'the top page below 4 GiB, not the top of the 48-bit aperture');
      dma_unmap_page(dev, first, PAGE_SIZE, DMA_BIDIRECTIONAL);
      // Exhaust the 32-bit space (a 32-bit limit takes no 32-bit-first detour).
      const low = fill(dev, DMA_BIT_MASK(32));
      assert.ok(low.length > 0);
      assert.equal(d.pci_32bit_workaround, true, 'a 32-bit limit does not touch the workaround');
      const h = dma_map_page(dev, page, 0, PAGE_SIZE, DMA_BIDIRECTIONAL);
      assert.equal(h, (1n << 48n) - BigInt(PAGE_SIZE), 'the full limit, top-down: the top of the 48-bit aperture');
      assert.equal(d.pci_32bit_workaround, false, 'cleared for good');
      assert.deepEqual(m.warnings.map((w) => w.message), ['nvme: Using 48-bit DMA addresses']);
      dma_unmap_page(dev, h, PAGE_SIZE, DMA_BIDIRECTIONAL);
      for (const pfn of low) d.free_iova(pfn);
      // 32-bit space is free again, but the device no longer tries it first.
      const again = dma_map_page(dev, page, 0, PAGE_SIZE, DMA_BIDIRECTIONAL);
      assert.ok(again >= GiB4, `0x${again.toString(16)} is above 4 GiB`);
      dma_unmap_page(dev, again, PAGE_SIZE, DMA_BIDIRECTIONAL);
      assert.equal(d.stats().iovaAllocated, 0);
      dev.destroy();
    });

    it('a platform device allocates below its full mask at once', () => {
      const dev = m.createDevice({ name: 'plat', bus: 'platform', dmaMask: 64, iommu: { strict: true } });
      assert.equal(dev.bus, 'platform');
      assert.equal(domain(dev).pci_32bit_workaround, false);
      const page = take();
      const h = dma_map_page(dev, page, 0, PAGE_SIZE, DMA_BIDIRECTIONAL);
      assert.equal(h, (1n << 48n) - BigInt(PAGE_SIZE));
      dma_unmap_page(dev, h, PAGE_SIZE, DMA_BIDIRECTIONAL);
      assert.deepEqual(m.warnings, [], 'no notice: there was no 32-bit attempt');
      dev.destroy();
    });

    it('a 32-bit device is unaffected: its limit is the 32-bit one', () => {
      const dev = m.createDevice({ name: 'old', dmaMask: 32, iommu: true });
      const page = take();
      const h = dma_map_page(dev, page, 0, PAGE_SIZE, DMA_BIDIRECTIONAL);
      assert.equal(h, GiB4 - BigInt(PAGE_SIZE));
      dma_unmap_page(dev, h, PAGE_SIZE, DMA_BIDIRECTIONAL);
      assert.equal(domain(dev).pci_32bit_workaround, true);
      dev.destroy();
    });
  });

  describe('iova_reserve_iommu_regions: reserved regions', () => {
    it('the MSI window and a per-device region are never handed out, even with every other IOVA taken', () => {
      const region = { start: 0x8000_0000n, length: 0x20_0000 }; // an RMRR-like 2 MiB at 2 GiB
      const dev = m.createDevice({ name: 'rmrr', dmaMask: 32, iommu: { strict: true, reservedRegions: [region] } });
      const d = domain(dev);
      assert.deepEqual(iommu_get_resv_regions(dev), [
        { start: 0xfee0_0000n, length: 0x10_0000, type: IOMMU_RESV_MSI },
        { start: 0x8000_0000n, length: 0x20_0000, type: IOMMU_RESV_RESERVED },
      ]);
      const got = fill(dev, DMA_BIT_MASK(32));
      const ranges = d.allocatedRanges();
      assert.equal(overlaps(ranges, MSI_LO, MSI_HI), false, 'nothing inside 0xfee00000-0xfeefffff');
      assert.equal(overlaps(ranges, 0x80000, 0x801ff), false, 'nothing inside the device region');
      // Every other page (1 .. 0xfffff) was handed out: the space really was full.
      const total = ranges.reduce((a, [, n]) => a + n, 0);
      assert.equal(total, 0xfffff - 0x100 - 0x200);
      const page = take();
      assert.equal(dma_map_page(dev, page, 0, PAGE_SIZE, DMA_TO_DEVICE), DMA_MAPPING_ERROR, 'full: no fallback into the reserved IOVAs');
      // A page freed next to the MSI window comes back, the window does not.
      const justBelow = ranges.find(([pfn, n]) => pfn + n === MSI_LO);
      assert.ok(justBelow !== undefined);
      d.free_iova(justBelow[0]);
      const h = dma_map_page(dev, page, 0, PAGE_SIZE, DMA_TO_DEVICE);
      assert.ok(h !== DMA_MAPPING_ERROR);
      assert.ok(Number(h >> 12n) < MSI_LO && Number(h >> 12n) >= justBelow[0]);
      dma_unmap_page(dev, h, PAGE_SIZE, DMA_TO_DEVICE);
      for (const pfn of got) d.free_iova(pfn);
      assert.equal(d.stats().iovaAllocated, 0);
      dev.destroy();
    });

    it('the fast path skips the MSI window: the allocation under it lands right below 0xfee00000', () => {
      const dev = m.createDevice({ name: 'msi', dmaMask: 32, iommu: { strict: true } });
      const d = domain(dev);
      // 0xfef00..0xfffff is 0x1100 pages above the window: take them, then the next is below it.
      const above = iommu_dma_alloc_iova(dev, d, 0x1000, DMA_BIT_MASK(32));
      assert.equal(above, 0xff000);
      const rest = [iommu_dma_alloc_iova(dev, d, 0x100, DMA_BIT_MASK(32))];
      assert.equal(rest[0], 0xfef00);
      const next = iommu_dma_alloc_iova(dev, d, 2, DMA_BIT_MASK(32));
      assert.equal(next, MSI_LO - 2);
      for (const pfn of [above, rest[0]!, next]) d.free_iova(pfn);
      dev.destroy();
    });

    it('bad reserved regions and bus kinds are refused before anything is created', () => {
      const before = m.stats().segments.length;
      assert.throws(() => m.createDevice({ bus: 'isa' as 'pci' }), TypeError);
      assert.throws(() => m.createDevice({ iommu: { reservedRegions: {} as [] } }), TypeError);
      assert.throws(() => m.createDevice({ iommu: { reservedRegions: [{ start: 0, length: 4096 } as unknown as { start: bigint; length: number }] } }), TypeError);
      assert.throws(() => m.createDevice({ iommu: { reservedRegions: [{ start: 0n, length: 0 }] } }), RangeError);
      assert.throws(() => m.createDevice({ iommu: { reservedRegions: [{ start: -1n, length: 1 }] } }), RangeError);
      assert.throws(() => m.createDevice({ iommu: { reservedRegions: [{ start: 0n, length: 1, type: 3 } as { start: bigint; length: number }] } }), TypeError);
      assert.throws(() => m.createDevice({ cma: 4 * MiB, iommu: { reservedRegions: [{ start: 0n, length: 0 }] } }), RangeError);
      assert.equal(m.stats().segments.length, before, 'no per-device CMA area was created');
    });
  });

  describe('flush queue (queue_iova) and iommu.strict', () => {
    it('lazy by default: a freed IOVA is not reused before the flush; once flushed, the device faults on it and the old page is safe', () => {
      const dev = m.createDevice({ name: 'lazy', dmaMask: 64, iommu: true });
      const d = domain(dev);
      assert.equal(d.strict, false);
      const page = take();
      const cpu = m.view(m.page_address(page), PAGE_SIZE);
      cpu.fill(0);
      const bus = busMaster(dev);
      const h = dma_map_page(dev, page, 0, PAGE_SIZE, DMA_FROM_DEVICE);
      assert.equal(bus.write32(h, 0x11), MEMTX_OK);
      const flushes = d.stats().iotlbFlushes;
      dma_unmap_page(dev, h, PAGE_SIZE, DMA_FROM_DEVICE);
      assert.equal(d.queuedIovas, 1);
      assert.equal(d.stats().iovaAllocated, 1, 'held by the flush queue');
      assert.equal(d.stats().iotlbFlushes, flushes, 'no flush at unmap');
      const other = take();
      const h2 = dma_map_page(dev, other, 0, PAGE_SIZE, DMA_FROM_DEVICE);
      assert.notEqual(h2, h, 'not reused before the flush');
      dma_unmap_page(dev, h2, PAGE_SIZE, DMA_FROM_DEVICE);
      d.flush_iotlb_all();
      assert.equal(d.queuedIovas, 0);
      assert.equal(d.stats().iotlbFlushes, flushes + 1, 'one flush for both');
      assert.equal(d.stats().iovaAllocated, 0);
      assert.equal(bus.write32(h + 4n, 0x22), MEMTX_ACCESS_ERROR, 'after the flush the device faults');
      assert.equal(cpu.readUInt32LE(4), 0, 'and the old page is untouched');
      assert.equal(d.faults.length, 1);
      assert.equal(d.faults[0]!.iova, h, 'recorded at its page, as the DMAR fault record does');
      const h3 = dma_map_page(dev, other, 0, PAGE_SIZE, DMA_FROM_DEVICE);
      assert.equal(h3, h, 'reused after the flush');
      dma_unmap_page(dev, h3, PAGE_SIZE, DMA_FROM_DEVICE);
      dev.destroy();
      assert.equal(d.queuedIovas, 0, 'device teardown drains the queue (iommu_dma_free_fq)');
    });

    it('the flush queue flushes when full (IOVA_FQ_SIZE) and after its timeout (fq_flush_timeout)', async () => {
      const dev = m.createDevice({ name: 'fq', dmaMask: 32, iommu: true });
      const d = domain(dev);
      const page = take();
      for (let i = 0; i < IOVA_FQ_SIZE - 1; i++) dma_unmap_page(dev, dma_map_page(dev, page, 0, 64, DMA_TO_DEVICE), 64, DMA_TO_DEVICE);
      assert.equal(d.queuedIovas, IOVA_FQ_SIZE - 1);
      assert.equal(d.stats().iotlbFlushes, 0);
      dma_unmap_page(dev, dma_map_page(dev, page, 0, 64, DMA_TO_DEVICE), 64, DMA_TO_DEVICE);
      assert.equal(d.queuedIovas, 0, 'full: flushed');
      assert.equal(d.stats().iotlbFlushes, 1);
      dma_unmap_page(dev, dma_map_page(dev, page, 0, 64, DMA_TO_DEVICE), 64, DMA_TO_DEVICE);
      assert.equal(d.queuedIovas, 1);
      await new Promise((resolve) => setTimeout(resolve, 60));
      assert.equal(d.queuedIovas, 0, 'the timer flushed it');
      assert.equal(d.stats().iotlbFlushes, 2);
      assert.equal(d.stats().iovaAllocated, 0);
      dev.destroy();
    });

    it('a machine destroyed with IOVAs still queued reports no leak: the domain flushes its queue as it goes (iommu_dma_free_fq)', () => {
      const mm = new Machine({ name: 'fq69', ramPerNode: 4 * MiB, cmaSize: 0, hugepages: 'off', emitWarnings: false, dmaDebug: true });
      try {
        const dev = mm.createDevice({ name: 'q', dmaMask: 48, iommu: true });
        const p = mm.alloc_pages(GFP_KERNEL, 0)!;
        dma_unmap_page(dev, dma_map_page(dev, p, 0, PAGE_SIZE, DMA_TO_DEVICE), PAGE_SIZE, DMA_TO_DEVICE);
        assert.equal(domain(dev).queuedIovas, 1);
        assert.ok(mm.secPageTables > 0, 'the emptied page tables wait for the flush');
        mm.__free_pages(p, 0);
        mm.destroy();
        assert.equal(domain(dev).queuedIovas, 0);
        assert.deepEqual(mm.warnings.map((w) => w.message).filter((w) => /destroyed with memory/.test(w)), []);
      } finally {
        mm.destroy();
      }
    });

    it('strict (iommu.strict=1): every unmap flushes at once and the IOVA is free again', () => {
      const dev = m.createDevice({ name: 'strict', dmaMask: 64, iommu: { strict: true } });
      const d = domain(dev);
      const page = take();
      const bus = busMaster(dev);
      const h = dma_map_page(dev, page, 0, PAGE_SIZE, DMA_BIDIRECTIONAL);
      assert.equal(bus.write32(h, 1), MEMTX_OK);
      dma_unmap_page(dev, h, PAGE_SIZE, DMA_BIDIRECTIONAL);
      assert.equal(d.queuedIovas, 0);
      assert.equal(d.stats().iotlbFlushes, 1);
      assert.equal(d.stats().iovaAllocated, 0);
      assert.equal(bus.write32(h, 2), MEMTX_ACCESS_ERROR, 'the stale translation is gone at once');
      const h2 = dma_map_page(dev, page, 0, PAGE_SIZE, DMA_BIDIRECTIONAL);
      assert.equal(h2, h, 'reused at once');
      dma_unmap_page(dev, h2, PAGE_SIZE, DMA_BIDIRECTIONAL);
      d.processFaults();
      dev.destroy();
    });
  });

  describe('the two-step IOVA API (dma_iova_try_alloc ... dma_iova_destroy)', () => {
    it('several scattered pages under one IOVA state: linked, synced, reached by the device, unlinked and destroyed', () => {
      const dev = m.createDevice({ name: 'rdma', dmaMask: 64, iommu: true });
      const d = domain(dev);
      const pages = [take(), take(), take()];
      take(); // keep them apart
      const state = new DmaIovaState();
      assert.equal(dma_use_iova(state), false);
      const phys0 = BigInt(pages[0]!.pfn * PAGE_SIZE);
      assert.equal(dma_iova_try_alloc(dev, state, phys0, 3 * PAGE_SIZE), true);
      assert.equal(dma_use_iova(state), true);
      assert.equal(dma_iova_size(state), 3 * PAGE_SIZE);
      assert.ok(state.addr < GiB4, 'iommu_dma_alloc_iova: a PCI device gets a 32-bit IOVA first');
      for (let i = 0; i < 3; i++) {
        assert.equal(dma_iova_link(dev, state, BigInt(pages[i]!.pfn * PAGE_SIZE), i * PAGE_SIZE, PAGE_SIZE, DMA_BIDIRECTIONAL), 0);
      }
      assert.equal(dma_iova_sync(dev, state, 0, 3 * PAGE_SIZE), 0);
      assert.equal(d.stats().mappedPages, 3);
      const bus = busMaster(dev);
      for (let i = 0; i < 3; i++) assert.equal(bus.write32(state.addr + BigInt(i * PAGE_SIZE + 8), 0xa0 + i), MEMTX_OK);
      for (let i = 0; i < 3; i++) assert.equal(m.view(m.page_address(pages[i]!), PAGE_SIZE).readUInt32LE(8), 0xa0 + i, `page ${i} reached`);
      // Linking over a linked page is refused, as is an unaligned phys at an offset.
      assert.equal(dma_iova_link(dev, state, BigInt(pages[0]!.pfn * PAGE_SIZE), PAGE_SIZE, PAGE_SIZE, DMA_TO_DEVICE), -EEXIST);
      assert.equal(dma_iova_link(dev, state, BigInt(pages[0]!.pfn * PAGE_SIZE + 8), PAGE_SIZE, 8, DMA_TO_DEVICE), -EIO);
      // dma_iova_unlink: the middle page goes (IOTLB flushed), the IOVA stays allocated.
      dma_iova_unlink(dev, state, PAGE_SIZE, PAGE_SIZE, DMA_BIDIRECTIONAL);
      assert.equal(bus.write32(state.addr + BigInt(PAGE_SIZE), 1), MEMTX_ACCESS_ERROR);
      assert.equal(d.stats().mappedPages, 2);
      assert.equal(d.stats().iovaAllocated, 4, '3 pages, rounded up to a power of two');
      // Relink it, then destroy all 3 pages: lazy, so the IOVA waits in the flush queue.
      assert.equal(dma_iova_link(dev, state, BigInt(pages[1]!.pfn * PAGE_SIZE), PAGE_SIZE, PAGE_SIZE, DMA_BIDIRECTIONAL), 0);
      dma_iova_destroy(dev, state, 3 * PAGE_SIZE, DMA_BIDIRECTIONAL);
      assert.equal(d.stats().mappedPages, 0);
      assert.equal(d.queuedIovas, 1);
      d.flush_iotlb_all();
      assert.equal(d.stats().iovaAllocated, 0);
      assert.equal(bus.write32(state.addr, 1), MEMTX_ACCESS_ERROR);
      d.processFaults();
      dev.destroy();
    });

    it('dma_iova_free gives back a range with nothing linked; dma_iova_destroy of 0 bytes is that too', () => {
      const dev = m.createDevice({ name: 'free', dmaMask: 32, iommu: { strict: true } });
      const d = domain(dev);
      const state = new DmaIovaState();
      assert.equal(dma_iova_try_alloc(dev, state, 0x1234n, 2 * PAGE_SIZE), true);
      assert.equal(Number(state.addr % BigInt(PAGE_SIZE)), 0x234, 'the offset of phys in its page');
      assert.equal(d.stats().iovaAllocated, 4, '0x234 + 8 KiB spans 3 pages, rounded to 4');
      dma_iova_free(dev, state);
      assert.equal(d.stats().iovaAllocated, 0);
      assert.equal(dma_iova_try_alloc(dev, state, 0n, PAGE_SIZE), true);
      dma_iova_destroy(dev, state, 0, DMA_TO_DEVICE);
      assert.equal(d.stats().iovaAllocated, 0);
      assert.equal(d.stats().iotlbFlushes, 0, 'nothing was mapped, nothing flushed');
      dev.destroy();
    });

    it('dma_use_iova is false without an IOMMU or for a size of 0; bad arguments throw before any side effect', () => {
      const direct = m.createDevice({ name: 'direct' });
      const state = new DmaIovaState();
      state.size = 5; // try_alloc zeroes the state first
      assert.equal(dma_iova_try_alloc(direct, state, 0n, PAGE_SIZE), false);
      assert.equal(dma_use_iova(state), false);
      const dev = m.createDevice({ name: 'io', iommu: true });
      assert.equal(dma_iova_try_alloc(dev, state, 0n, 0), false);
      assert.equal(dma_use_iova(state), false);
      assert.equal(m.warnings.length, 1, 'WARN_ON_ONCE(!size)');
      assert.throws(() => dma_iova_try_alloc(dev, {} as DmaIovaState, 0n, PAGE_SIZE), TypeError);
      assert.throws(() => dma_iova_try_alloc(dev, state, 0 as unknown as bigint, PAGE_SIZE), TypeError);
      assert.throws(() => dma_iova_try_alloc(dev, state, -1n, PAGE_SIZE), RangeError);
      assert.throws(() => dma_iova_link(dev, state, 0n, 0, PAGE_SIZE, 7 as 0), Error);
      assert.throws(() => dma_iova_link(direct, state, 0n, 0, PAGE_SIZE, DMA_TO_DEVICE), TypeError);
      assert.throws(() => dma_use_iova(null as unknown as DmaIovaState), TypeError);
      assert.equal(domain(dev).stats().iovaAllocated, 0);
      assert.equal(domain(dev).stats().mappedPages, 0);
      dev.destroy();
      direct.destroy();
    });
  });
});
