// Issue 11, item 4: IOMMU buffers built from scattered pages (drivers/iommu/dma-iommu.c
// iommu_dma_alloc_remap) and the dma_alloc_noncontiguous family (kernel/dma/mapping.c): high
// orders first down to order 0, one IOVA range, a vmalloc CPU address, cleanup on every failure.

import assert from 'node:assert/strict';
import { Machine } from '../lib/mm/machine';
import '../lib/dma/device';
import type { Device } from '../lib/dma/device';
import { GFP_ATOMIC, GFP_KERNEL, PAGE_SIZE, __GFP_COMP, __GFP_NOWARN } from '../lib/mm/gfp';
import type { Page } from '../lib/mm/page';
import {
  DMA_ATTR_ALLOC_SINGLE_PAGES, DMA_ATTR_FORCE_CONTIGUOUS, DMA_BIDIRECTIONAL, DMA_FROM_DEVICE, DMA_TO_DEVICE,
  ENXIO,
} from '../lib/dma/constants';
import { iommu_iova_to_phys, type IommuDomain } from '../lib/dma/iommu';
import {
  dma_alloc_attrs, dma_alloc_coherent, dma_free_coherent, dma_get_sgtable, dma_mmap_attrs,
} from '../lib/dma/mapping';
import {
  dma_alloc_noncontiguous, dma_free_noncontiguous, dma_mmap_noncontiguous, dma_vmap_noncontiguous,
  dma_vunmap_noncontiguous,
} from '../lib/dma/noncontiguous';
import { SgTable, for_each_sg, sg_dma_address, sg_dma_len, sg_free_table } from '../lib/dma/scatterlist';
import { busMaster } from '../lib/devices/bus_master';
import { MEMTX_OK } from '../lib/devices/bus_engine';
import * as index from '../lib/index';
import { expectNoLeaks } from './helpers/leaks';

const MiB = 1024 * 1024;

function newMachine(extra: { ramPerNode?: number; vmallocSize?: number; dmaDebug?: boolean } = {}): Machine {
  return new Machine({ ramPerNode: 32 * MiB, cmaSize: 0, hugepages: 'off', emitWarnings: false, ...extra });
}

function domain(dev: Device): IommuDomain {
  assert.ok(dev.iommu !== null);
  return dev.iommu;
}

function freePages(m: Machine): number {
  return m.stats().nodes[0]!.freePages;
}

/**
 * Fragments the machine: every page is allocated, then every other one freed, so no two free
 * pages are neighbours and no block above order 0 can be had. Returns the pages still held.
 */
function fragment(m: Machine): Page[] {
  const all: Page[] = [];
  for (;;) {
    const p = m.alloc_pages_node(-1, GFP_KERNEL | __GFP_NOWARN, 0);
    if (p === null) break;
    all.push(p);
  }
  all.sort((a, b) => a.pfn - b.pfn);
  const held: Page[] = [];
  for (const p of all) {
    if (p.pfn % 2 === 0) m.__free_pages(p, 0);
    else held.push(p);
  }
  m.drain_all_pages();
  return held;
}

/** The pages behind [cpu, cpu + size) of a vmalloc address, in order. */
function vmallocPages(m: Machine, cpu: number, size: number): Page[] {
  const pages: Page[] = [];
  for (let off = 0; off < size; off += PAGE_SIZE) pages.push(m.vmalloc_to_page(cpu + off)!);
  return pages;
}

/** Every IOVA page of [iova, iova + pages) translates to the matching page. */
function assertIovaCovers(dev: Device, iova: bigint, pages: readonly Page[]): void {
  pages.forEach((p, i) => {
    assert.equal(iommu_iova_to_phys(dev, iova + BigInt(i * PAGE_SIZE)), p.phys, `IOVA page ${i}`);
  });
}

/** Entries of a table as { pfn, length }. */
function entries(sgt: SgTable): { pfn: number; length: number; offset: number }[] {
  const out: { pfn: number; length: number; offset: number }[] = [];
  for_each_sg(sgt.sgl!, sgt.orig_nents, (sg) => out.push({ pfn: sg.page_link!.pfn, length: sg.length, offset: sg.offset }));
  return out;
}

/** The physically contiguous runs of `pages`, as sg_alloc_table_from_pages would describe them. */
function runsOf(pages: readonly Page[]): { pfn: number; length: number; offset: number }[] {
  const runs: { pfn: number; length: number; offset: number }[] = [];
  let last = -2;
  for (const p of pages) {
    if (p.pfn === last + 1) runs[runs.length - 1]!.length += PAGE_SIZE;
    else runs.push({ pfn: p.pfn, length: PAGE_SIZE, offset: 0 });
    last = p.pfn;
  }
  return runs;
}

/** Nothing of a device's DMA state or the machine's vmalloc space left. */
function assertAllBack(m: Machine, dev: Device, free0: number, areas0: number): void {
  assert.equal(domain(dev).stats().mappedPages, 0, 'no IOVA page mapped');
  assert.equal(domain(dev).stats().iovaAllocated, 0, 'no IOVA allocated');
  assert.equal(m.stats().vmallocAreas, areas0, 'no vmalloc area left');
  assert.equal(freePages(m), free0, 'every page given back');
}

describe('67 IOMMU buffers from scattered pages and dma_alloc_noncontiguous', function () {
  // 8 MiB of single pages through the model (2048 IOMMU mappings, a 2048-page vmap) takes ~1 s on a quiet machine.
  this.timeout(20000);
  expectNoLeaks();

  describe('dma_alloc_coherent through the IOMMU (iommu_dma_alloc_remap)', () => {
    let m: Machine;
    afterEach(() => m.destroy());

    it('8 MiB succeeds with no CMA on a machine where no two free pages are neighbours; CPU and device see the same bytes', () => {
      m = newMachine();
      const held = fragment(m);
      const dev = m.createDevice({ name: 'gpu', dmaMask: 48, coherentDmaMask: 48, iommu: { strict: true } });
      const size = 8 * MiB;
      const probe = m.alloc_pages_node(-1, GFP_KERNEL | __GFP_NOWARN, 1);
      assert.equal(probe, null, 'not even 2 contiguous pages can be had');
      const free0 = freePages(m);
      const areas0 = m.stats().vmallocAreas;
      const h = { value: 0n };
      // The contiguous paths cannot do it: FORCE_CONTIGUOUS, and a non-blocking request.
      assert.equal(dma_alloc_attrs(dev, size, h, GFP_KERNEL, DMA_ATTR_FORCE_CONTIGUOUS), null);
      assert.equal(dma_alloc_coherent(dev, size, h, GFP_ATOMIC), null);
      assertAllBack(m, dev, free0, areas0);

      const cpu = dma_alloc_coherent(dev, size, h, GFP_KERNEL);
      assert.ok(cpu !== null, 'the blocking request is built from single pages');
      assert.ok(m.is_vmalloc_addr(cpu), 'a vmalloc CPU address');
      assert.equal(freePages(m), free0 - size / PAGE_SIZE - domain(dev).stats().pageTables, 'the pages and the I/O page tables came from the buddy allocator');
      assert.ok(m.view(cpu, size).every((b) => b === 0), 'zeroed');
      const pages = vmallocPages(m, cpu, size);
      assert.ok(pages.every((p) => p.allocOrder === 0), 'every page is an order-0 allocation');
      assertIovaCovers(dev, h.value, pages);

      // The device writes through the IOVA range, the CPU reads through the vmalloc address...
      const bus = busMaster(dev);
      const data = new Uint8Array(size).map((_, i) => (i * 7 + (i >> 12)) & 0xff);
      assert.equal(bus.write(h.value, data), MEMTX_OK);
      assert.ok(m.view(cpu, size).equals(data), 'the CPU sees what the device wrote');
      // ... and the other way round, across a page boundary.
      m.view(cpu + 3 * PAGE_SIZE - 2, 4).set([0xde, 0xad, 0xbe, 0xef]);
      const back = new Uint8Array(4);
      assert.equal(bus.read(h.value + BigInt(3 * PAGE_SIZE - 2), back), MEMTX_OK);
      assert.deepEqual([...back], [0xde, 0xad, 0xbe, 0xef]);

      // dma_get_sgtable: one entry per physically contiguous run (here every page), covering it all.
      const sgt = new SgTable();
      assert.equal(dma_get_sgtable(dev, sgt, cpu, h.value, size), 0);
      const ents = entries(sgt);
      assert.equal(ents.length, size / PAGE_SIZE, 'one entry per page: no two pages are neighbours');
      assert.deepEqual(ents, runsOf(pages));
      assert.equal(ents.reduce((s, e) => s + e.length, 0), size);
      ents.forEach((e, i) => assert.equal(e.pfn, pages[i]!.pfn));
      sg_free_table(sgt);

      // dma_mmap_attrs: page by page from vm_pgoff.
      const vma = m.createVma(5 * PAGE_SIZE, { pgoff: 1000 });
      assert.equal(dma_mmap_attrs(dev, vma, cpu, h.value, size, 0), 0);
      assert.equal(vma.remaps.length, 5, 'one remap per page');
      vma.remaps.forEach((r, i) => assert.equal(r.pfn, pages[1000 + i]!.pfn));
      assert.ok(vma.view().equals(m.view(cpu + 1000 * PAGE_SIZE, 5 * PAGE_SIZE)));
      vma.view()[PAGE_SIZE + 1] = 0x42;
      const one = new Uint8Array(1);
      assert.equal(bus.read(h.value + BigInt(1001 * PAGE_SIZE + 1), one), MEMTX_OK);
      assert.equal(one[0], 0x42, 'the device sees a write through the user mapping');
      vma.unmap();
      const far = m.createVma(2 * PAGE_SIZE, { pgoff: size / PAGE_SIZE - 1 });
      assert.equal(dma_mmap_attrs(dev, far, cpu, h.value, size, 0), -ENXIO, 'past the end of the buffer');
      far.unmap();

      dma_free_coherent(dev, size, cpu, h.value);
      assertAllBack(m, dev, free0 + domain(dev).stats().pageTables, areas0);
      assert.equal(m.findVmallocArea(cpu), null);
      dev.destroy();
      for (const p of held) m.__free_pages(p, 0);
    });

    it('high orders first: 2 MiB chunks while they last, then order 0 for the rest', () => {
      m = newMachine();
      const held = fragment(m);
      // Give back one aligned 2 MiB run: the only block above order 0.
      const base = held.find((p) => p.pfn % 512 === 0 || p.pfn % 512 === 1)!;
      const start = base.pfn - (base.pfn % 512);
      const keep: Page[] = [];
      for (const p of held) {
        if (p.pfn >= start && p.pfn < start + 512) m.__free_pages(p, 0);
        else keep.push(p);
      }
      m.drain_all_pages();
      const dev = m.createDevice({ name: 'mix', dmaMask: 48, iommu: { strict: true } });
      const size = 4 * MiB;
      const h = { value: 0n };
      const cpu = dma_alloc_coherent(dev, size, h, GFP_KERNEL)!;
      assert.ok(cpu !== null);
      const pages = vmallocPages(m, cpu, size);
      assert.equal(pages[0]!.allocOrder, 9, 'the first chunk is a 2 MiB block');
      assert.equal(pages[0]!.pfn, start);
      for (let i = 1; i < 512; i++) assert.equal(pages[i]!.pfn, start + i);
      assert.ok(pages.slice(512).every((p) => p.allocOrder === 0), 'then single pages');
      assertIovaCovers(dev, h.value, pages);
      const sgt = new SgTable();
      assert.equal(dma_get_sgtable(dev, sgt, cpu, h.value, size), 0);
      const ents = entries(sgt);
      assert.equal(ents[0]!.pfn, start);
      assert.ok(ents[0]!.length >= 2 * MiB, 'the 2 MiB chunk is inside one entry');
      assert.deepEqual(ents, runsOf(pages), 'one entry per physically contiguous run');
      assert.ok(ents.length > 256, 'the single pages are scattered');
      sg_free_table(sgt);
      const free0 = freePages(m);
      const tables0 = domain(dev).stats().pageTables;
      dma_free_coherent(dev, size, cpu, h.value);
      const tablesFreed = tables0 - domain(dev).stats().pageTables;
      assert.equal(freePages(m), free0 + 1024 + tablesFreed, 'the 2 MiB block and the 512 single pages are back');
      dev.destroy();
      for (const p of keep) m.__free_pages(p, 0);
    });

    it('on an unfragmented machine the buffer is 2 MiB blocks (the VT-d page sizes), mapped with large pages where aligned', () => {
      m = newMachine();
      const dev = m.createDevice({ name: 'big', dmaMask: 48, iommu: { strict: true } });
      const h = { value: 0n };
      const free0 = freePages(m);
      const cpu = dma_alloc_coherent(dev, 6 * MiB + 5, h, GFP_KERNEL)!;
      assert.ok(cpu !== null);
      const size = 6 * MiB + PAGE_SIZE;
      const pages = vmallocPages(m, cpu, size);
      for (let c = 0; c < 3; c++) {
        assert.equal(pages[c * 512]!.allocOrder, 9, `chunk ${c} is order 9`);
        assert.equal(pages[c * 512]!.pfn % 512, 0);
      }
      assert.equal(pages[1536]!.allocOrder, 0, 'the last page: the order is capped by what is left');
      assertIovaCovers(dev, h.value, pages);
      dma_free_coherent(dev, 6 * MiB + 5, cpu, h.value);
      assert.equal(freePages(m), free0);
      assert.equal(domain(dev).stats().iovaAllocated, 0);
      dev.destroy();
    });

    it('non-blocking and FORCE_CONTIGUOUS requests keep the contiguous path (a linear address)', () => {
      m = newMachine();
      const dev = m.createDevice({ name: 'c', dmaMask: 48, iommu: { strict: true } });
      for (const [gfp, attrs] of [[GFP_ATOMIC, 0], [GFP_KERNEL, DMA_ATTR_FORCE_CONTIGUOUS]] as const) {
        const h = { value: 0n };
        const cpu = dma_alloc_attrs(dev, 3 * PAGE_SIZE, h, gfp, attrs)!;
        assert.ok(cpu !== null && !m.is_vmalloc_addr(cpu) && m.isLinearAddress(cpu));
        dma_free_coherent(dev, 3 * PAGE_SIZE, cpu, h.value);
      }
      assert.equal(domain(dev).stats().iovaAllocated, 0);
      dev.destroy();
    });

    it('every failure gives everything back: pages run out, IOVA space runs out, the I/O page table cannot grow, vmalloc space is full', () => {
      // Pages run out half way (48 MiB asked of 32).
      m = newMachine();
      let dev = m.createDevice({ name: 'f1', dmaMask: 48, iommu: { strict: true } });
      let free0 = freePages(m);
      let areas0 = m.stats().vmallocAreas;
      const h = { value: 0n };
      assert.equal(dma_alloc_coherent(dev, 48 * MiB, h, GFP_KERNEL), null);
      assertAllBack(m, dev, free0, areas0);
      // IOVA space: a 1 MiB aperture cannot hold 2 MiB.
      dev = m.createDevice({ name: 'f2', dmaMask: 48, iommu: { apertureBits: 20, strict: true } });
      free0 = freePages(m);
      assert.equal(dma_alloc_coherent(dev, 2 * MiB, h, GFP_KERNEL), null);
      assertAllBack(m, dev, free0, areas0);
      m.destroy();

      // The I/O page table needs pages the buffer took: iommu_map_sg fails, -ENOMEM inside.
      m = newMachine();
      dev = m.createDevice({ name: 'f3', dmaMask: 48, iommu: { strict: true } });
      const hog: Page[] = [];
      while (freePages(m) > 16) hog.push(m.alloc_pages_node(-1, GFP_KERNEL, 0)!);
      free0 = freePages(m);
      areas0 = m.stats().vmallocAreas;
      assert.equal(dma_alloc_coherent(dev, free0 * PAGE_SIZE, h, GFP_KERNEL), null);
      assertAllBack(m, dev, free0, areas0);
      assert.equal(domain(dev).stats().pageTables, 0, 'no page-table page kept');
      for (const p of hog) m.__free_pages(p, 0);
      m.destroy();

      // vmalloc space: 2 MiB of it cannot map 4 MiB; the IOVA range is unmapped again.
      m = newMachine({ vmallocSize: 2 * MiB });
      dev = m.createDevice({ name: 'f4', dmaMask: 48, iommu: { strict: true } });
      free0 = freePages(m);
      areas0 = m.stats().vmallocAreas;
      assert.equal(dma_alloc_coherent(dev, 4 * MiB, h, GFP_KERNEL), null);
      assertAllBack(m, dev, free0 + domain(dev).stats().pageTables, areas0);
      dev.destroy();
    });
  });

  describe('dma_alloc_noncontiguous and friends', () => {
    let m: Machine;
    afterEach(() => m.destroy());

    it('through the IOMMU: one DMA segment over scattered pages; vmap, mmap from vm_pgoff, device access, free', () => {
      m = newMachine({ dmaDebug: true });
      const held = fragment(m);
      const dev = m.createDevice({ name: 'cam', dmaMask: 32, coherentDmaMask: 32, iommu: { strict: true } });
      const free0 = freePages(m);
      const areas0 = m.stats().vmallocAreas;
      const size = 64 * PAGE_SIZE + 100;
      const sgt = dma_alloc_noncontiguous(dev, size, DMA_FROM_DEVICE, GFP_KERNEL, 0)!;
      assert.ok(sgt !== null);
      assert.equal(sgt.nents, 1, 'one DMA segment');
      assert.equal(sgt.orig_nents, 65, 'one CPU entry per physically contiguous run');
      assert.equal(sg_dma_len(sgt.sgl!), 65 * PAGE_SIZE);
      const iova = sg_dma_address(sgt.sgl!);
      assert.ok(iova + BigInt(65 * PAGE_SIZE) - 1n <= 0xffff_ffffn, 'below coherent_dma_mask');
      const pages = entries(sgt).map((e) => m.pfn_to_page(e.pfn));
      assertIovaCovers(dev, iova, pages);

      const vaddr = dma_vmap_noncontiguous(dev, size, sgt)!;
      assert.ok(vaddr !== null && m.is_vmalloc_addr(vaddr));
      assert.deepEqual(vmallocPages(m, vaddr, 65 * PAGE_SIZE), pages);
      const bus = busMaster(dev);
      const data = new Uint8Array(size).map((_, i) => (i * 13) & 0xff);
      assert.equal(bus.write(iova, data), MEMTX_OK, 'the mapping is BIDIRECTIONAL whatever the direction');
      assert.ok(m.view(vaddr, size).equals(data));

      const vma = m.createVma(3 * PAGE_SIZE, { pgoff: 60 });
      assert.equal(dma_mmap_noncontiguous(dev, vma, size, sgt), 0);
      assert.equal(vma.remaps.length, 3);
      assert.ok(vma.view().equals(m.view(vaddr + 60 * PAGE_SIZE, 3 * PAGE_SIZE)));
      vma.unmap();
      const beyond = m.createVma(PAGE_SIZE, { pgoff: 65 });
      assert.equal(dma_mmap_noncontiguous(dev, beyond, size, sgt), -ENXIO);
      beyond.unmap();

      dma_vunmap_noncontiguous(dev, vaddr);
      assert.equal(m.stats().vmallocAreas, areas0);
      dma_free_noncontiguous(dev, size, sgt, DMA_FROM_DEVICE);
      assert.equal(sgt.sgl, null, 'the table is freed');
      assertAllBack(m, dev, free0 + domain(dev).stats().pageTables, areas0);
      assert.equal(dev.debug.errorCount, 0, 'DMA-API debug saw a matching map_sg / unmap_sg');
      assert.throws(() => dma_free_noncontiguous(dev, size, sgt, DMA_FROM_DEVICE), TypeError, 'a second free is refused');
      dev.destroy();
      for (const p of held) m.__free_pages(p, 0);
    });

    it('DMA_ATTR_ALLOC_SINGLE_PAGES takes order-0 pages only; without it the pages come in 2 MiB blocks', () => {
      m = newMachine();
      const dev = m.createDevice({ name: 'sp', dmaMask: 48, iommu: { strict: true } });
      const single = dma_alloc_noncontiguous(dev, 2 * MiB, DMA_TO_DEVICE, GFP_KERNEL, DMA_ATTR_ALLOC_SINGLE_PAGES)!;
      const blocks = dma_alloc_noncontiguous(dev, 2 * MiB, DMA_TO_DEVICE, GFP_KERNEL, 0)!;
      const pagesOf = (t: SgTable): Page[] => entries(t).flatMap((e) => Array.from({ length: e.length / PAGE_SIZE }, (_, i) => m.pfn_to_page(e.pfn + i)));
      assert.ok(pagesOf(single).every((p) => p.allocOrder === 0), 'every page its own order-0 allocation');
      assert.equal(pagesOf(blocks)[0]!.allocOrder, 9);
      assert.equal(blocks.orig_nents, 1);
      dma_free_noncontiguous(dev, 2 * MiB, single, DMA_TO_DEVICE);
      dma_free_noncontiguous(dev, 2 * MiB, blocks, DMA_TO_DEVICE);
      assert.equal(domain(dev).stats().iovaAllocated, 0);
      dev.destroy();
    });

    it('without an IOMMU: one dma_alloc_pages allocation in a one-entry table (alloc_single_sgt)', () => {
      m = newMachine({ dmaDebug: true });
      const dev = m.createDevice({ name: 'direct', dmaMask: 64, busOffset: 0x1000_0000n });
      const free0 = freePages(m);
      const size = 5 * PAGE_SIZE;
      const sgt = dma_alloc_noncontiguous(dev, size, DMA_BIDIRECTIONAL, GFP_KERNEL, 0)!;
      assert.ok(sgt !== null);
      assert.equal(sgt.nents, 1);
      assert.equal(sgt.orig_nents, 1);
      const page = sgt.sgl!.page_link!;
      assert.equal(sgt.sgl!.length, size);
      assert.equal(sg_dma_len(sgt.sgl!), size);
      assert.equal(sg_dma_address(sgt.sgl!), page.phys + 0x1000_0000n);
      const vaddr = dma_vmap_noncontiguous(dev, size, sgt);
      assert.equal(vaddr, m.page_address(page), 'the linear address');
      const vma = m.createVma(2 * PAGE_SIZE, { pgoff: 3 });
      assert.equal(dma_mmap_noncontiguous(dev, vma, size, sgt), 0);
      assert.ok(vma.view().equals(m.view(vaddr! + 3 * PAGE_SIZE, 2 * PAGE_SIZE)));
      vma.unmap();
      dma_vunmap_noncontiguous(dev, vaddr!);
      dma_free_noncontiguous(dev, size, sgt, DMA_BIDIRECTIONAL);
      assert.equal(freePages(m), free0);
      assert.equal(dev.debug.errorCount, 0);
      dev.destroy();
    });

    it('failures give everything back: pages, IOVA space and the I/O page table', () => {
      m = newMachine();
      let dev = m.createDevice({ name: 'n1', dmaMask: 48, iommu: { strict: true } });
      let free0 = freePages(m);
      const areas0 = m.stats().vmallocAreas;
      assert.equal(dma_alloc_noncontiguous(dev, 40 * MiB, DMA_TO_DEVICE, GFP_KERNEL, 0), null);
      assertAllBack(m, dev, free0, areas0);
      dev = m.createDevice({ name: 'n2', dmaMask: 48, iommu: { apertureBits: 20, strict: true } });
      assert.equal(dma_alloc_noncontiguous(dev, 2 * MiB, DMA_TO_DEVICE, GFP_KERNEL, 0), null);
      assertAllBack(m, dev, free0, areas0);
      const hog: Page[] = [];
      dev = m.createDevice({ name: 'n3', dmaMask: 48, iommu: { strict: true } });
      while (freePages(m) > 8) hog.push(m.alloc_pages_node(-1, GFP_KERNEL, 0)!);
      free0 = freePages(m);
      assert.equal(dma_alloc_noncontiguous(dev, free0 * PAGE_SIZE, DMA_TO_DEVICE, GFP_KERNEL, 0), null);
      assertAllBack(m, dev, free0, areas0);
      for (const p of hog) m.__free_pages(p, 0);
      // A direct device: no memory at all.
      const direct = m.createDevice({ name: 'n4', dmaMask: 64 });
      free0 = freePages(m);
      assert.equal(dma_alloc_noncontiguous(direct, 64 * MiB, DMA_TO_DEVICE, GFP_KERNEL | __GFP_NOWARN, 0), null);
      assert.equal(freePages(m), free0);
    });

    it('dma_vmap_noncontiguous returns null when the vmalloc space is full; the table stays usable', () => {
      m = newMachine({ vmallocSize: 2 * MiB });
      const dev = m.createDevice({ name: 'vm', dmaMask: 48, iommu: { strict: true } });
      const sgt = dma_alloc_noncontiguous(dev, 4 * MiB, DMA_TO_DEVICE, GFP_KERNEL, 0)!;
      assert.ok(sgt !== null);
      assert.equal(dma_vmap_noncontiguous(dev, 4 * MiB, sgt), null);
      const small = dma_vmap_noncontiguous(dev, PAGE_SIZE, sgt)!;
      assert.ok(small !== null);
      dma_vunmap_noncontiguous(dev, small);
      dma_free_noncontiguous(dev, 4 * MiB, sgt, DMA_TO_DEVICE);
      assert.equal(domain(dev).stats().iovaAllocated, 0);
      dev.destroy();
    });

    it('misuse: the kernel WARNs and NULLs, TypeError / RangeError / the direction BUG, all before anything is allocated', () => {
      m = newMachine();
      const dev = m.createDevice({ name: 'bad', dmaMask: 48, iommu: { strict: true } });
      const other = m.createDevice({ name: 'other', dmaMask: 48, iommu: { strict: true } });
      const free0 = freePages(m);
      assert.equal(dma_alloc_noncontiguous(dev, PAGE_SIZE, DMA_TO_DEVICE, GFP_KERNEL, DMA_ATTR_FORCE_CONTIGUOUS), null);
      assert.ok(m.warnings.some((w) => w.message.includes('attrs & ~DMA_ATTR_ALLOC_SINGLE_PAGES')));
      assert.equal(dma_alloc_noncontiguous(dev, PAGE_SIZE, DMA_TO_DEVICE, GFP_KERNEL | __GFP_COMP, 0), null);
      assert.ok(m.warnings.some((w) => w.message.includes('dma_alloc_noncontiguous: __GFP_COMP')));
      assert.equal(dma_alloc_noncontiguous(dev, 0, DMA_TO_DEVICE, GFP_KERNEL, 0), null, 'size 0: nothing');
      assert.throws(() => dma_alloc_noncontiguous(dev, '4096' as unknown as number, DMA_TO_DEVICE, GFP_KERNEL, 0), TypeError);
      assert.throws(() => dma_alloc_noncontiguous(dev, -1, DMA_TO_DEVICE, GFP_KERNEL, 0), RangeError);
      assert.throws(() => dma_alloc_noncontiguous(dev, PAGE_SIZE, 7 as never, GFP_KERNEL, 0), /kernel BUG/);
      assert.throws(() => dma_alloc_noncontiguous({} as Device, PAGE_SIZE, DMA_TO_DEVICE, GFP_KERNEL, 0), TypeError);
      assert.equal(freePages(m), free0);
      assert.equal(domain(dev).stats().iovaAllocated, 0);

      const sgt = dma_alloc_noncontiguous(dev, 4 * PAGE_SIZE, DMA_TO_DEVICE, GFP_KERNEL, 0)!;
      const used = freePages(m);
      const stranger = new SgTable();
      assert.throws(() => dma_free_noncontiguous(dev, 4 * PAGE_SIZE, stranger, DMA_TO_DEVICE), TypeError, 'a table it did not make');
      assert.throws(() => dma_free_noncontiguous(other, 4 * PAGE_SIZE, sgt, DMA_TO_DEVICE), TypeError, 'another device');
      assert.throws(() => dma_free_noncontiguous(dev, 5 * PAGE_SIZE, sgt, DMA_TO_DEVICE), RangeError, 'a larger size');
      assert.throws(() => dma_free_noncontiguous(dev, 4 * PAGE_SIZE, sgt, 9 as never), /kernel BUG/);
      assert.throws(() => dma_vmap_noncontiguous(dev, 8 * PAGE_SIZE, sgt), RangeError);
      const vma = m.createVma(PAGE_SIZE);
      assert.throws(() => dma_mmap_noncontiguous(dev, vma, 4 * PAGE_SIZE, stranger), TypeError);
      assert.throws(() => dma_mmap_noncontiguous(dev, {} as never, 4 * PAGE_SIZE, sgt), TypeError);
      assert.equal(vma.remaps.length, 0);
      vma.unmap();
      assert.throws(() => dma_vunmap_noncontiguous(dev, -5), RangeError);
      assert.equal(freePages(m), used, 'nothing freed or allocated by the refused calls');
      dma_free_noncontiguous(dev, 4 * PAGE_SIZE, sgt, DMA_TO_DEVICE);
      assert.equal(freePages(m), free0 + domain(dev).stats().pageTables);
      other.destroy();
      dev.destroy();
    });

    it('the family is exported from the package', () => {
      m = newMachine();
      for (const name of ['dma_alloc_noncontiguous', 'dma_free_noncontiguous', 'dma_vmap_noncontiguous', 'dma_vunmap_noncontiguous', 'dma_mmap_noncontiguous']) {
        assert.equal(typeof (index as Record<string, unknown>)[name], 'function', name);
      }
    });
  });
});
