// dma-direct (kernel/dma/direct.c) over real memory: bus addresses, masks, zones, sg mapping,
// page allocation and mmap of the real pages.

import assert from 'node:assert/strict';
import { Machine } from '../lib/mm/machine';
import '../lib/dma/device';
import type { Device } from '../lib/dma/device';
import { GFP_KERNEL, PAGE_SIZE } from '../lib/mm/gfp';
import { page_to_phys } from '../lib/mm/kernel';
import type { Page } from '../lib/mm/page';
import {
  DMA_BIDIRECTIONAL, DMA_BIT_MASK, DMA_MAPPING_ERROR, DMA_TO_DEVICE, EIO, ENXIO,
} from '../lib/dma/constants';
import {
  dma_cache_maintenance, dma_capable, dma_direct_alloc, dma_direct_alloc_pages, dma_direct_free,
  dma_direct_free_pages, dma_direct_get_sgtable, dma_direct_map_page, dma_direct_map_resource,
  dma_direct_map_sg, dma_direct_mmap, dma_direct_supported, dma_direct_sync_single_for_device,
  dma_direct_unmap_page, dma_direct_unmap_sg, dma_to_phys, phys_to_dma,
} from '../lib/dma/direct';
import { dma_map_page_attrs } from '../lib/dma/mapping';
import { SgTable, sg_free_table, for_each_sg } from '../lib/dma/scatterlist';
import { sg_alloc_table_from_pages } from '../lib/dma/sg_pages';
import { expectNoLeaks } from './helpers/leaks';

const MiB = 1024 * 1024;

function newMachine(physBase?: number): Machine {
  return new Machine({
    ramPerNode: 8 * MiB, cmaSize: 8 * MiB, hugepages: 'off', emitWarnings: false,
    // No bounce buffers: these cases are about dma-direct alone (test 68 covers swiotlb).
    swiotlb: 'off',
    ...(physBase === undefined ? {} : { physBase }),
  });
}

function freePages(m: Machine): number {
  return m.stats().nodes.reduce((n, x) => n + x.freePages, 0);
}

function cmaAvailable(m: Machine): number {
  return m.dma_contiguous_default_area?.available ?? 0;
}

describe('50 dma-direct', () => {
  // The leak check wraps both blocks so that it runs after their machines are destroyed.
  expectNoLeaks();

  describe('RAM at 1 GiB', () => {
    let m: Machine;
    before(() => {
      m = newMachine();
    });
    after(() => m.destroy());

    it('case 41: no ops and no IOMMU routes to dma-direct; bus address = phys + busOffset', () => {
      const dev = m.createDevice({ dmaMask: 64, busOffset: 0x1000_0000n });
      const page = m.alloc_pages_node(-1, GFP_KERNEL, 0)!;
      const phys = page_to_phys(page);
      assert.equal(phys_to_dma(dev, phys), phys + 0x1000_0000n);
      assert.equal(dma_to_phys(dev, phys + 0x1000_0000n), phys);
      const viaApi = dma_map_page_attrs(dev, page, 16, 100, DMA_TO_DEVICE, 0);
      const direct = dma_direct_map_page(dev, page, 16, 100, DMA_TO_DEVICE, 0);
      assert.equal(viaApi, phys + 16n + 0x1000_0000n);
      assert.equal(direct, viaApi);
      dma_direct_unmap_page(dev, direct, 100, DMA_TO_DEVICE, 0);
      m.__free_pages(page, 0);
    });

    it('case 51: a mapping beyond the mask is DMA_MAPPING_ERROR with a WARN (no swiotlb)', () => {
      // RAM starts at 1 GiB: a 30-bit device reaches none of it.
      const dev = m.createDevice({ dmaMask: 30 });
      const page = m.alloc_pages_node(-1, GFP_KERNEL, 0)!;
      const before = m.warnings.length;
      assert.equal(dma_direct_map_page(dev, page, 0, PAGE_SIZE, DMA_TO_DEVICE, 0), DMA_MAPPING_ERROR);
      assert.ok(m.warnings.length >= before, 'WARN_ONCE: at most one per machine');
      assert.ok(m.warnings.some((w) => /DMA addr 0x[0-9a-f]+ \+ size 0x1000 overflow \(mask 3fffffff, bus limit 0\)/.test(w.message)));
      // bus_dma_limit narrows a wide mask the same way; the last byte must fit exactly.
      const wide = m.createDevice({ dmaMask: 64 });
      const phys = page_to_phys(page);
      wide.bus_dma_limit = phys + 4095n;
      assert.equal(dma_direct_map_page(wide, page, 0, PAGE_SIZE, DMA_TO_DEVICE, 0), phys);
      assert.equal(dma_direct_map_page(wide, page, 1, PAGE_SIZE, DMA_TO_DEVICE, 0), DMA_MAPPING_ERROR);
      assert.equal(dma_capable(wide, phys, 4096, true), true);
      assert.equal(dma_capable(wide, phys, 4097, true), false);
      assert.equal(dma_capable(wide, DMA_MAPPING_ERROR, 1, true), false);
      m.__free_pages(page, 0);
    });

    it('case 53: dma_direct_supported: 16 bits no, 24 and 32 bits yes', () => {
      const dev = m.createDevice();
      assert.equal(dma_direct_supported(dev, DMA_BIT_MASK(16)), 0);
      assert.equal(dma_direct_supported(dev, DMA_BIT_MASK(24)), 1);
      assert.equal(dma_direct_supported(dev, DMA_BIT_MASK(32)), 1);
      assert.equal(dma_direct_supported(dev, DMA_BIT_MASK(64)), 1);
    });

    it('map_sg sets dma_address = phys + offset + busOffset and dma_length per entry', () => {
      const dev = m.createDevice({ dmaMask: 64, busOffset: 0x2000n });
      const pages: Page[] = [];
      for (let i = 0; i < 6; i++) pages.push(m.alloc_pages_node(-1, GFP_KERNEL, 0)!);
      const scattered = [pages[0]!, pages[2]!, pages[4]!];
      const sgt = new SgTable();
      assert.equal(sg_alloc_table_from_pages(sgt, scattered, 3, 100, 3 * PAGE_SIZE - 100, GFP_KERNEL), 0);
      const n = dma_direct_map_sg(dev, sgt.sgl!, sgt.orig_nents, DMA_BIDIRECTIONAL, 0);
      assert.equal(n, sgt.orig_nents);
      for_each_sg(sgt.sgl, sgt.orig_nents, (sg) => {
        assert.equal(sg.dma_address, page_to_phys(sg.page_link!) + BigInt(sg.offset) + 0x2000n);
        assert.equal(sg.dma_length, sg.length);
      });
      dma_direct_unmap_sg(dev, sgt.sgl!, sgt.orig_nents, DMA_BIDIRECTIONAL, 0);
      sg_free_table(sgt);
      for (const p of pages) m.__free_pages(p, 0);
    });

    it('map_sg returns -EIO when an entry is out of reach', () => {
      const dev = m.createDevice({ dmaMask: 64 });
      const got = [0, 1, 2].map(() => m.alloc_pages_node(-1, GFP_KERNEL, 0)!);
      const [lo, , hi] = [...got].sort((x, y) => x.pfn - y.pfn) as [Page, Page, Page];
      // Only the lower page is reachable: the second entry fails after the first was mapped.
      dev.bus_dma_limit = page_to_phys(lo) + 4095n;
      const sgt = new SgTable();
      assert.equal(sg_alloc_table_from_pages(sgt, [lo, hi], 2, 0, 2 * PAGE_SIZE, GFP_KERNEL), 0);
      assert.equal(sgt.orig_nents, 2);
      assert.equal(dma_direct_map_sg(dev, sgt.sgl!, sgt.orig_nents, DMA_TO_DEVICE, 0), -EIO);
      sg_free_table(sgt);
      for (const p of got) m.__free_pages(p, 0);
    });

    it('alloc_pages zeroes size bytes of real memory and free gives every page back', () => {
      const dev = m.createDevice({ coherentDmaMask: 64, busOffset: 0x100000n });
      const free0 = freePages(m);
      const cma0 = cmaAvailable(m);
      for (const size of [PAGE_SIZE, 4 * PAGE_SIZE, 3 * PAGE_SIZE]) {
        const h = { value: 0n };
        const page = dma_direct_alloc_pages(dev, size, h, DMA_BIDIRECTIONAL, GFP_KERNEL)!;
        assert.ok(page !== null);
        assert.equal(h.value, page_to_phys(page) + 0x100000n);
        const buf = m.view(m.page_address(page), size);
        assert.ok(buf.every((x) => x === 0));
        buf.fill(0xa5);
        dma_direct_free_pages(dev, size, page, h.value, DMA_BIDIRECTIONAL);
        // Allocate again: the allocators hand back the same memory first, and it is zero again.
        const h2 = { value: 0n };
        const again = dma_direct_alloc_pages(dev, size, h2, DMA_BIDIRECTIONAL, GFP_KERNEL)!;
        assert.ok(m.view(m.page_address(again), size).every((x) => x === 0), `size ${size}: zeroed`);
        dma_direct_free_pages(dev, size, again, h2.value, DMA_BIDIRECTIONAL);
      }
      assert.equal(freePages(m), free0);
      assert.equal(cmaAvailable(m), cma0);
    });

    it('alloc/free coherent, get_sgtable from dma_addr, mmap of the real pages', () => {
      const dev = m.createDevice({ coherentDmaMask: 32 });
      const free0 = freePages(m);
      const cma0 = cmaAvailable(m);
      const h = { value: 0n };
      const size = 3 * PAGE_SIZE;
      const cpu = dma_direct_alloc(dev, size, h, GFP_KERNEL, 0)!;
      assert.ok(cpu !== null);
      assert.equal(m.virt_to_phys(cpu), h.value);
      const buf = m.view(cpu, size);
      for (let i = 0; i < 3; i++) buf.fill(i + 1, i * PAGE_SIZE, (i + 1) * PAGE_SIZE);

      const sgt = new SgTable();
      assert.equal(dma_direct_get_sgtable(dev, sgt, 0, h.value, size, 0), 0);
      assert.equal(sgt.orig_nents, 1);
      assert.equal(sgt.sgl!.page_link!.pfn, Number(h.value / 4096n));
      assert.equal(sgt.sgl!.length, size);
      sg_free_table(sgt);

      const vma = m.createVma(2 * PAGE_SIZE, { pgoff: 1 });
      assert.equal(dma_direct_mmap(dev, vma, cpu, h.value, size, 0), 0);
      const user = vma.view();
      assert.equal(user[0], 2);
      assert.equal(user[PAGE_SIZE], 3);
      user[5] = 0x77; // the user mapping is the same memory as the buffer
      assert.equal(buf[PAGE_SIZE + 5], 0x77);
      vma.unmap();
      const tooFar = m.createVma(PAGE_SIZE, { pgoff: 3 });
      assert.equal(dma_direct_mmap(dev, tooFar, cpu, h.value, size, 0), -ENXIO);
      tooFar.unmap();

      dma_direct_free(dev, size, cpu, h.value, 0);
      assert.equal(freePages(m), free0);
      assert.equal(cmaAvailable(m), cma0);
    });

    it('non-coherent devices count the cache maintenance they would need; coherent ones none', () => {
      const coherent = m.createDevice({ dmaMask: 64 });
      const nc = m.createDevice({ dmaMask: 64, coherent: false });
      const page = m.alloc_pages_node(-1, GFP_KERNEL, 0)!;
      const stats = dma_cache_maintenance(m);
      const before = { ...stats };
      const a = dma_direct_map_page(coherent, page, 0, 64, DMA_TO_DEVICE, 0);
      dma_direct_unmap_page(coherent, a, 64, DMA_TO_DEVICE, 0);
      assert.deepEqual({ ...stats }, before);
      const b = dma_direct_map_page(nc, page, 0, 64, DMA_TO_DEVICE, 0);
      dma_direct_sync_single_for_device(nc, b, 64, DMA_TO_DEVICE);
      dma_direct_unmap_page(nc, b, 64, DMA_TO_DEVICE, 0);
      assert.equal(stats.forDevice - before.forDevice, 2);
      assert.equal(stats.forCpu - before.forCpu, 1);
      m.__free_pages(page, 0);
    });

    it('map_resource: no bus offset for MMIO, mask checked', () => {
      const dev = m.createDevice({ dmaMask: 32, busOffset: 0x1000n });
      assert.equal(dma_direct_map_resource(dev, 0xfee0_0000n, 4096, DMA_BIDIRECTIONAL, 0), 0xfee0_0000n);
      assert.equal(dma_direct_map_resource(dev, 0x1_0000_0000n, 4096, DMA_BIDIRECTIONAL, 0), DMA_MAPPING_ERROR);
    });
  });

  describe('all RAM above 4 GiB', () => {
    let m: Machine;
    let dev32: Device;
    let dev64: Device;
    before(() => {
      m = newMachine(2 ** 32);
      dev32 = m.createDevice({ dmaMask: 32, coherentDmaMask: 32 });
      dev64 = m.createDevice({ dmaMask: 64, coherentDmaMask: 64 });
    });
    after(() => m.destroy());

    it('a 32-bit device cannot map any page; a 64-bit one can', () => {
      const page = m.alloc_pages_node(-1, GFP_KERNEL, 0)!;
      assert.ok(page_to_phys(page) >= 2n ** 32n);
      assert.equal(dma_direct_map_page(dev32, page, 0, 512, DMA_TO_DEVICE, 0), DMA_MAPPING_ERROR);
      assert.equal(dma_direct_map_page(dev64, page, 0, 512, DMA_TO_DEVICE, 0), page_to_phys(page));
      m.__free_pages(page, 0);
    });

    it('alloc_pages with a 32-bit coherent mask fails cleanly (CMA dropped, no DMA32 memory); 64-bit succeeds', () => {
      const free0 = freePages(m);
      const cma0 = cmaAvailable(m);
      for (const size of [PAGE_SIZE, 4 * PAGE_SIZE]) {
        const h = { value: 123n };
        assert.equal(dma_direct_alloc_pages(dev32, size, h, DMA_BIDIRECTIONAL, GFP_KERNEL), null);
        assert.equal(h.value, 123n, 'handle untouched on failure');
        assert.equal(dma_direct_alloc(dev32, size, h, GFP_KERNEL, 0), null);
        assert.equal(freePages(m), free0);
        assert.equal(cmaAvailable(m), cma0);
        const page = dma_direct_alloc_pages(dev64, size, h, DMA_BIDIRECTIONAL, GFP_KERNEL);
        assert.ok(page !== null);
        assert.equal(h.value, page_to_phys(page));
        dma_direct_free_pages(dev64, size, page, h.value, DMA_BIDIRECTIONAL);
      }
      assert.equal(freePages(m), free0);
      assert.equal(cmaAvailable(m), cma0);
    });
  });
});
