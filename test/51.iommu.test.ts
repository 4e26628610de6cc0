// dma-iommu (drivers/iommu/dma-iommu.c) over the simulated IOMMU: IOVA allocation inside the mask,
// translation back to the real pages, permissions, sg mapping, exhaustion, lazy flushing, churn.
// Devices here ask for iommu.strict=1 where a test counts on unmap giving everything back at once
// (the default is lazy, as on x86: see test 69).

import assert from 'node:assert/strict';
import { Machine } from '../lib/mm/machine';
import '../lib/dma/device';
import type { Device } from '../lib/dma/device';
import { GFP_KERNEL, PAGE_SIZE } from '../lib/mm/gfp';
import { page_to_phys } from '../lib/mm/kernel';
import type { Page } from '../lib/mm/page';
import {
  DMA_ATTR_FORCE_CONTIGUOUS, DMA_BIDIRECTIONAL, DMA_FROM_DEVICE, DMA_MAPPING_ERROR, DMA_TO_DEVICE, EINVAL, ENOMEM,
} from '../lib/dma/constants';
import {
  IOMMU_READ, IOMMU_WRITE, IOVA_FQ_SIZE, IommuDomain, iommu_dma_alloc, iommu_dma_free, iommu_dma_map_page,
  iommu_dma_map_sg, iommu_dma_unmap_page, iommu_dma_unmap_sg, iommu_iova_to_phys, iommu_iova_to_prot,
  iommu_map, iommu_unmap,
} from '../lib/dma/iommu';
import { SgTable, for_each_sg, sg_free_table } from '../lib/dma/scatterlist';
import { sg_alloc_table_from_pages } from '../lib/dma/sg_pages';
import { expectNoLeaks } from './helpers/leaks';

const MiB = 1024 * 1024;
const RW = IOMMU_READ | IOMMU_WRITE;

function newMachine(physBase?: number): Machine {
  return new Machine({
    ramPerNode: 8 * MiB, cmaSize: 8 * MiB, hugepages: 'off', emitWarnings: false,
    ...(physBase === undefined ? {} : { physBase }),
  });
}

function domain(dev: Device): IommuDomain {
  assert.ok(dev.iommu !== null);
  return dev.iommu;
}

/** A small deterministic PRNG (mulberry32), so failures reproduce. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('51 dma-iommu', () => {
  // The leak check wraps both blocks so that it runs after their machines are destroyed.
  expectNoLeaks();

  describe('RAM at 1 GiB', () => {
    let m: Machine;
    let pages: Page[];
    before(() => {
      m = newMachine();
      pages = [];
      for (let i = 0; i < 16; i++) pages.push(m.alloc_pages_node(-1, GFP_KERNEL, 0)!);
    });
    after(() => {
      for (const p of pages) m.__free_pages(p, 0);
      m.destroy();
    });

    it("the domain's page-level methods (reachable through dev.iommu) refuse hostile arguments at once and change nothing", () => {
      const dev = m.createDevice({ dmaMask: 32, iommu: { strict: true } });
      const d = dev.iommu!;
      const before = d.stats();
      const obj = {} as unknown as number;
      const str = '4096' as unknown as number;
      // unmapPages on a string used to loop for ever (found by the fuzzer of test 80).
      assert.throws(() => d.unmapPages(obj, str), TypeError);
      assert.throws(() => d.unmapPages(1, NaN), RangeError);
      assert.throws(() => d.unmapPages(1, 2 ** 40), RangeError);
      assert.throws(() => d.mapPages(1, str, 1, 3), TypeError);
      assert.throws(() => d.mapPages(-1, 1, 1, 3), RangeError);
      assert.throws(() => d.mapPages(1, 1, 1, 0x100), RangeError);
      assert.throws(() => d.alloc_iova(0, 100), RangeError);
      assert.throws(() => d.alloc_iova(1, obj), TypeError);
      assert.throws(() => d.free_iova(0.5), RangeError);
      assert.throws(() => d.queue_iova(str), TypeError);
      assert.throws(() => d.lookupPfn(-1), RangeError);
      assert.throws(() => d.translate(str), TypeError);
      assert.throws(() => d.limitPfn(1 as unknown as bigint), TypeError);
      assert.deepEqual(d.stats(), before);
      assert.equal(d.unmapPages(1, 0), 0, 'an empty run is still fine');
    });

    it('map_page: an IOVA inside the mask that translates back to the page + offset', () => {
      const dev = m.createDevice({ dmaMask: 32, iommu: { strict: true } });
      const page = pages[0]!;
      const iova = iommu_dma_map_page(dev, page, 100, 200, DMA_BIDIRECTIONAL, 0);
      assert.notEqual(iova, DMA_MAPPING_ERROR);
      assert.ok(iova + 199n <= 0xffff_ffffn, 'inside the 32-bit mask');
      assert.notEqual(iova, page_to_phys(page) + 100n, 'translated, not the physical address');
      assert.equal(iova % 4096n, 100n, 'the offset inside the page is kept');
      assert.equal(iommu_iova_to_phys(dev, iova), page_to_phys(page) + 100n);
      assert.equal(iommu_iova_to_phys(domain(dev), iova + 3000n), page_to_phys(page) + 3100n);
      assert.deepEqual(
        { mapped: domain(dev).stats().mappedPages, iova: domain(dev).stats().iovaAllocated },
        { mapped: 1, iova: 1 },
      );
      iommu_dma_unmap_page(dev, iova, 200, DMA_BIDIRECTIONAL, 0);
      assert.equal(iommu_iova_to_phys(dev, iova), 0n);
      assert.equal(domain(dev).stats().mappedPages, 0);
      assert.equal(domain(dev).stats().iovaAllocated, 0);
    });

    it('IOVAs are top-down, size aligned and never 0; a range straddling pages maps both', () => {
      const dev = m.createDevice({ dmaMask: 32, iommu: { strict: true } });
      const one = iommu_dma_map_page(dev, pages[0]!, 0, PAGE_SIZE, DMA_TO_DEVICE, 0);
      assert.equal(one, 0xffff_f000n, 'the first IOVA is the top page under the mask');
      const two = iommu_dma_map_page(dev, pages[1]!, 4000, 200, DMA_TO_DEVICE, 0);
      assert.equal((two - 4000n) % 8192n, 0n, 'two pages: aligned to two pages');
      assert.equal(domain(dev).stats().mappedPages, 3);
      const four = iommu_dma_map_page(dev, pages[2]!, 0, 3 * PAGE_SIZE, DMA_TO_DEVICE, 0);
      assert.equal(four % 16384n, 0n, 'three pages round up to four, aligned to four');
      assert.equal(domain(dev).stats().iovaAllocated, 1 + 2 + 4);
      for (const [h, s] of [[one, PAGE_SIZE], [two, 200], [four, 3 * PAGE_SIZE]] as const) iommu_dma_unmap_page(dev, h, s, DMA_TO_DEVICE, 0);
      assert.equal(domain(dev).stats().iovaAllocated, 0);
    });

    it('the PTE permission follows the direction', () => {
      const dev = m.createDevice({ dmaMask: 64, iommu: { strict: true } });
      const expect = [[DMA_TO_DEVICE, IOMMU_READ], [DMA_FROM_DEVICE, IOMMU_WRITE], [DMA_BIDIRECTIONAL, RW]] as const;
      for (const [dir, prot] of expect) {
        const iova = iommu_dma_map_page(dev, pages[3]!, 0, 64, dir, 0);
        assert.equal(iommu_iova_to_prot(dev, iova)! & RW, prot);
        iommu_dma_unmap_page(dev, iova, 64, dir, 0);
        assert.equal(iommu_iova_to_prot(dev, iova), null);
      }
    });

    it('map_sg: one contiguous IOVA range over scattered pages, reaching the bytes of each page', () => {
      const dev = m.createDevice({ dmaMask: 32, iommu: { strict: true } });
      const scattered = [pages[4]!, pages[7]!, pages[5]!, pages[12]!];
      scattered.forEach((p, i) => m.view(m.page_address(p), PAGE_SIZE).fill(0x10 + i));
      const sgt = new SgTable();
      assert.equal(sg_alloc_table_from_pages(sgt, scattered, 4, 0, 4 * PAGE_SIZE, GFP_KERNEL), 0);
      assert.equal(sgt.orig_nents, 4);
      const count = iommu_dma_map_sg(dev, sgt.sgl!, sgt.orig_nents, DMA_BIDIRECTIONAL, 0);
      assert.equal(count, 1, 'page-aligned entries merge into one DMA segment');
      const base = sgt.sgl!.dma_address;
      assert.equal(sgt.sgl!.dma_length, 4 * PAGE_SIZE);
      for (let i = 0; i < 4; i++) {
        const phys = iommu_iova_to_phys(dev, base + BigInt(i * PAGE_SIZE));
        assert.equal(phys, page_to_phys(scattered[i]!));
        // What the device would read at that IOVA: the real bytes of page i.
        const seen = m.view(m.phys_to_virt(phys), PAGE_SIZE);
        assert.ok(seen.every((b) => b === 0x10 + i), `page ${i} reads its own bytes`);
      }
      // The CPU fields are restored after the in-place stash.
      for_each_sg(sgt.sgl, 4, (sg) => {
        assert.equal(sg.offset, 0);
        assert.equal(sg.length, PAGE_SIZE);
      });
      iommu_dma_unmap_sg(dev, sgt.sgl!, sgt.orig_nents, DMA_BIDIRECTIONAL, 0);
      assert.equal(iommu_iova_to_phys(dev, base), 0n);
      assert.equal(domain(dev).stats().mappedPages, 0);
      assert.equal(domain(dev).stats().iovaAllocated, 0);
      sg_free_table(sgt);
    });

    it('map_sg keeps the sub-page offset of the first entry; a page-aligned next entry continues the segment', () => {
      const dev = m.createDevice({ dmaMask: 32, iommu: { strict: true } });
      const sgt = new SgTable();
      assert.equal(sg_alloc_table_from_pages(sgt, [pages[8]!, pages[10]!], 2, 100, 2 * PAGE_SIZE - 100, GFP_KERNEL), 0);
      const count = iommu_dma_map_sg(dev, sgt.sgl!, 2, DMA_TO_DEVICE, 0);
      assert.equal(count, 1, 'the second entry starts on a page boundary and continues the first');
      const sg0 = sgt.sgl!;
      assert.equal(sg0.dma_address % 4096n, 100n);
      assert.equal(sg0.dma_length, 2 * PAGE_SIZE - 100);
      assert.equal(iommu_iova_to_phys(dev, sg0.dma_address), page_to_phys(pages[8]!) + 100n);
      assert.equal(iommu_iova_to_phys(dev, sg0.dma_address + 3996n), page_to_phys(pages[10]!));
      assert.equal(sg0.offset, 100);
      iommu_dma_unmap_sg(dev, sg0, 2, DMA_TO_DEVICE, 0);
      assert.equal(domain(dev).stats().iovaAllocated, 0);
      sg_free_table(sgt);
    });

    it('a tiny aperture runs out: DMA_MAPPING_ERROR, -ENOMEM for sg, and space comes back on unmap', () => {
      // 14 bits = 4 IOVA pages, page 0 never used: 3 single-page mappings fit.
      const dev = m.createDevice({ dmaMask: 64, iommu: { apertureBits: 14, strict: true } });
      const got = [0, 1, 2].map((i) => iommu_dma_map_page(dev, pages[i]!, 0, PAGE_SIZE, DMA_TO_DEVICE, 0));
      assert.ok(got.every((h) => h !== DMA_MAPPING_ERROR && h !== 0n && h < 16384n));
      assert.equal(new Set(got).size, 3);
      assert.equal(iommu_dma_map_page(dev, pages[3]!, 0, PAGE_SIZE, DMA_TO_DEVICE, 0), DMA_MAPPING_ERROR);
      const sgt = new SgTable();
      assert.equal(sg_alloc_table_from_pages(sgt, [pages[3]!], 1, 0, PAGE_SIZE, GFP_KERNEL), 0);
      assert.equal(iommu_dma_map_sg(dev, sgt.sgl!, 1, DMA_TO_DEVICE, 0), -ENOMEM);
      assert.equal(sgt.sgl!.dma_address, DMA_MAPPING_ERROR, 'the entry reads as unmapped');
      assert.equal(sgt.sgl!.length, PAGE_SIZE, 'and its CPU fields are intact');
      iommu_dma_unmap_page(dev, got[1]!, PAGE_SIZE, DMA_TO_DEVICE, 0);
      const again = iommu_dma_map_page(dev, pages[3]!, 0, PAGE_SIZE, DMA_TO_DEVICE, 0);
      assert.equal(again, got[1], 'the freed IOVA is reused');
      for (const h of [got[0]!, got[2]!, again]) iommu_dma_unmap_page(dev, h, PAGE_SIZE, DMA_TO_DEVICE, 0);
      assert.equal(domain(dev).stats().iovaAllocated, 0);
      sg_free_table(sgt);
    });

    it('misuse WARNs and never throws: double unmap, unmap of a wild IOVA', () => {
      const dev = m.createDevice({ dmaMask: 32, iommu: { strict: true } });
      const iova = iommu_dma_map_page(dev, pages[0]!, 0, 64, DMA_TO_DEVICE, 0);
      iommu_dma_unmap_page(dev, iova, 64, DMA_TO_DEVICE, 0);
      const before = m.warnings.length;
      iommu_dma_unmap_page(dev, iova, 64, DMA_TO_DEVICE, 0);
      iommu_dma_unmap_page(dev, 0x1234_5000n, 64, DMA_TO_DEVICE, 0);
      assert.equal(m.warnings.length, before + 2);
      assert.match(m.warnings.at(-1)!.message, /iommu_dma_unmap_page: .*IOVA 0x12345000 is not mapped/);
      assert.equal(domain(dev).stats().iovaAllocated, 0);
    });

    it('iommu_map / iommu_unmap: alignment, overlap, partial unmap, unmapped holes', () => {
      const dev = m.createDevice({ dmaMask: 32, iommu: { strict: true } });
      const d = domain(dev);
      const phys = page_to_phys(pages[0]!);
      assert.equal(iommu_map(d, 0x10_0000n, phys, 4 * PAGE_SIZE, RW), 0);
      assert.equal(iommu_iova_to_phys(d, 0x10_3004n), phys + 0x3004n);
      assert.equal(iommu_map(d, 0x10_0001n, phys, PAGE_SIZE, RW), -EINVAL);
      assert.equal(iommu_map(d, 0x20_0000n, phys, PAGE_SIZE, 0), -EINVAL);
      const before = m.warnings.length;
      assert.equal(iommu_map(d, 0x10_3000n, phys, 2 * PAGE_SIZE, RW), -17, 'overlap: -EEXIST');
      assert.equal(iommu_iova_to_phys(d, 0x10_4000n), 0n, 'nothing of the failed map stays');
      assert.equal(iommu_unmap(d, 0x10_1000n, 2 * PAGE_SIZE), 2 * PAGE_SIZE);
      assert.equal(iommu_iova_to_phys(d, 0x10_1000n), 0n);
      assert.equal(iommu_iova_to_phys(d, 0x10_3000n), phys + 0x3000n);
      // From page 0: one page mapped, then a hole: WARN, 4096 bytes.
      assert.equal(iommu_unmap(d, 0x10_0000n, 4 * PAGE_SIZE), PAGE_SIZE);
      assert.equal(iommu_unmap(d, 0x10_3000n, PAGE_SIZE), PAGE_SIZE);
      assert.equal(m.warnings.length, before + 2);
      assert.equal(d.stats().mappedPages, 0);
    });

    it('iommu_dma_alloc/free: zeroed, contiguous, mapped inside the coherent mask, pages given back', () => {
      const dev = m.createDevice({ dmaMask: 64, coherentDmaMask: 32, iommu: { strict: true } });
      const free0 = m.stats().nodes[0]!.freePages;
      const cma0 = m.dma_contiguous_default_area!.available;
      const h = { value: 0n };
      const size = 5 * PAGE_SIZE + 10;
      const cpu = iommu_dma_alloc(dev, size, h, GFP_KERNEL, DMA_ATTR_FORCE_CONTIGUOUS)!;
      assert.ok(cpu !== null);
      assert.ok(h.value + BigInt(size) - 1n <= 0xffff_ffffn);
      assert.ok(m.view(cpu, 6 * PAGE_SIZE).every((b) => b === 0));
      for (let i = 0; i < 6; i++) assert.equal(iommu_iova_to_phys(dev, h.value + BigInt(i * PAGE_SIZE)), m.virt_to_phys(cpu) + BigInt(i * PAGE_SIZE));
      iommu_dma_free(dev, size, cpu, h.value, 0);
      assert.equal(domain(dev).stats().mappedPages, 0);
      assert.equal(m.stats().nodes[0]!.freePages, free0);
      assert.equal(m.dma_contiguous_default_area!.available, cma0);
    });

    it('lazy mode defers IOVA reuse until the flush queue drains', () => {
      const dev = m.createDevice({ dmaMask: 32, iommu: { strict: false } });
      const d = domain(dev);
      const first = iommu_dma_map_page(dev, pages[0]!, 0, PAGE_SIZE, DMA_TO_DEVICE, 0);
      iommu_dma_unmap_page(dev, first, PAGE_SIZE, DMA_TO_DEVICE, 0);
      assert.equal(d.stats().mappedPages, 0, 'the PTE is gone at once');
      assert.equal(d.stats().iovaAllocated, 1, 'the IOVA waits for the IOTLB flush');
      assert.equal(d.stats().iotlbFlushes, 0);
      const second = iommu_dma_map_page(dev, pages[0]!, 0, PAGE_SIZE, DMA_TO_DEVICE, 0);
      assert.notEqual(second, first, 'no reuse before the flush');
      iommu_dma_unmap_page(dev, second, PAGE_SIZE, DMA_TO_DEVICE, 0);
      for (let i = 0; i < IOVA_FQ_SIZE; i++) {
        iommu_dma_unmap_page(dev, iommu_dma_map_page(dev, pages[1]!, 0, 8, DMA_TO_DEVICE, 0), 8, DMA_TO_DEVICE, 0);
      }
      assert.equal(d.stats().iotlbFlushes, 1, 'one flush per full queue');
      d.flush_iotlb_all();
      assert.equal(d.stats().iovaAllocated, 0);
      assert.equal(d.stats().iotlbFlushes, 2);
    });

    it('10,000 map/unmap cycles of mixed sizes leave every counter back at zero', function () {
      this.timeout(20000);
      const dev = m.createDevice({ dmaMask: 32, iommu: { strict: true } });
      const d = domain(dev);
      const rnd = prng(1);
      const sizes = [1, 1, 2, 3, 8, 17, 33, 100, 1024];
      const live: { h: bigint; size: number }[] = [];
      for (let i = 0; i < 10_000; i++) {
        const size = sizes[Math.floor(rnd() * sizes.length)]! * PAGE_SIZE - Math.floor(rnd() * 64);
        const h = iommu_dma_map_page(dev, pages[i % 4]!, 0, size, DMA_BIDIRECTIONAL, 0);
        assert.notEqual(h, DMA_MAPPING_ERROR);
        live.push({ h, size });
        // Keep up to 32 mappings alive, freed in random order, so the caches and holes get used.
        if (live.length > 32 || rnd() < 0.5) {
          const [victim] = live.splice(Math.floor(rnd() * live.length), 1);
          iommu_dma_unmap_page(dev, victim!.h, victim!.size, DMA_BIDIRECTIONAL, 0);
        }
      }
      for (const { h, size } of live) iommu_dma_unmap_page(dev, h, size, DMA_BIDIRECTIONAL, 0);
      const s = d.stats();
      assert.equal(s.mappedPages, 0);
      assert.equal(s.iovaAllocated, 0);
      assert.equal(s.maps, 10_000);
      assert.equal(s.unmaps, s.maps);
      assert.equal(s.iotlbFlushes, 10_000, 'strict: one IOTLB flush per unmap');
    });

    it('the allocator never overlaps, stays inside the limit and recovers space when nearly full', () => {
      // 2^22 bytes = 1024 IOVA pages; sizes up to 64 pages force the slow path often.
      const dev = m.createDevice({ dmaMask: 64, iommu: { apertureBits: 22, strict: true } });
      const d = domain(dev);
      const rnd = prng(7);
      const live = new Map<number, number>();
      let failures = 0;
      for (let i = 0; i < 5000; i++) {
        if (rnd() < 0.55) {
          const pages = 1 + Math.floor(rnd() * 64);
          const pfn = d.alloc_iova(pages, rnd() < 0.2 ? 511 : d.endPfn);
          if (pfn === 0) {
            failures++;
            continue;
          }
          live.set(pfn, pages);
        } else if (live.size > 0) {
          const keys = [...live.keys()];
          const pfn = keys[Math.floor(rnd() * keys.length)]!;
          assert.ok(d.free_iova(pfn));
          live.delete(pfn);
        }
        if (i % 97 === 0) {
          const ranges = d.allocatedRanges().sort((a, b) => a[0] - b[0]);
          for (let k = 0; k < ranges.length; k++) {
            const [lo, n] = ranges[k]!;
            assert.ok(lo >= 1 && lo + n - 1 <= d.endPfn, 'inside the aperture, never page 0');
            const align = 2 ** Math.ceil(Math.log2(n));
            assert.equal(lo % align, 0, 'size aligned');
            if (k > 0) assert.ok(ranges[k - 1]![0] + ranges[k - 1]![1] <= lo, 'no overlap');
          }
        }
      }
      assert.ok(failures > 0, 'the test did reach exhaustion');
      for (const pfn of live.keys()) d.free_iova(pfn);
      assert.equal(d.stats().iovaAllocated, 0);
      // Fully coalesced again: one maximal aligned block fits.
      assert.equal(d.alloc_iova(512, d.endPfn), 512);
      d.free_iova(512);
    });
  });

  describe('all RAM above 4 GiB', () => {
    let m: Machine;
    before(() => {
      m = newMachine(2 ** 32);
    });
    after(() => m.destroy());

    it('a 32-bit device behind an IOMMU maps memory it could never reach directly', () => {
      const dev = m.createDevice({ dmaMask: 32, coherentDmaMask: 32, iommu: { strict: true } });
      const page = m.alloc_pages_node(-1, GFP_KERNEL, 0)!;
      assert.ok(page_to_phys(page) >= 2n ** 32n);
      const iova = iommu_dma_map_page(dev, page, 8, 4000, DMA_FROM_DEVICE, 0);
      assert.notEqual(iova, DMA_MAPPING_ERROR);
      assert.ok(iova + 3999n <= 0xffff_ffffn);
      assert.equal(iommu_iova_to_phys(dev, iova), page_to_phys(page) + 8n);
      iommu_dma_unmap_page(dev, iova, 4000, DMA_FROM_DEVICE, 0);
      m.__free_pages(page, 0);
      // Coherent memory too: the pages sit above 4 GiB, the handle below.
      const h = { value: 0n };
      const cpu = iommu_dma_alloc(dev, 2 * PAGE_SIZE, h, GFP_KERNEL, DMA_ATTR_FORCE_CONTIGUOUS)!;
      assert.ok(cpu !== null && h.value <= 0xffff_ffffn && m.virt_to_phys(cpu) >= 2n ** 32n);
      iommu_dma_free(dev, 2 * PAGE_SIZE, cpu, h.value, 0);
      assert.equal(domain(dev).stats().iovaAllocated, 0);
    });
  });
});
