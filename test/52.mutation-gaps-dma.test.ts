// Mutation gaps in lib/dma (issue 17): each test kills a hand-made mutation the suite used to
// survive, by asserting the kernel's behaviour: SKIP_CPU_SYNC on non-coherent IOMMU devices, IOVA
// given back when iommu_map_sg fails, unmap before free, vm_pgoff in iommu_dma_mmap, no merge of a
// mid-page sg entry, the rcache limit on the last page, 128-entry sg chunks, sg_next's end, a
// debug sync one byte past the end, and __GFP_NOWARN -> DMA_ATTR_NO_WARN.

import assert from 'node:assert/strict';
import { Machine } from '../lib/mm/machine';
import '../lib/dma/device';
import type { Device } from '../lib/dma/device';
import { GFP_KERNEL, PAGE_SIZE, __GFP_NOWARN } from '../lib/mm/gfp';
import { Page, PAGE_CONSTRUCTION_KEY, type PageSegment } from '../lib/mm/page';
import {
  DMA_ATTR_SKIP_CPU_SYNC, DMA_BIDIRECTIONAL, DMA_FROM_DEVICE, DMA_MAPPING_ERROR, DMA_TO_DEVICE, EINVAL, EIO,
} from '../lib/dma/constants';
import { dma_cache_maintenance, dma_direct_map_sg } from '../lib/dma/direct';
import { IOMMU_READ, IOMMU_WRITE, iommu_map, iommu_unmap, type IommuDomain } from '../lib/dma/iommu';
import {
  iommu_dma_map_page, iommu_dma_map_sg, iommu_dma_unmap_page, iommu_dma_unmap_sg,
} from '../lib/dma/dma_iommu';
import { IovaDomain } from '../lib/dma/iova';
import {
  dma_alloc_coherent, dma_alloc_pages, dma_free_coherent, dma_free_pages, dma_mmap_coherent,
} from '../lib/dma/mapping';
import {
  SG_MAX_SINGLE_ALLOC, SgTable, Scatterlist, sg_alloc_table, sg_init_table, sg_is_chain, sg_nents, sg_next,
  sg_set_page, type Scatterlist as Sg,
} from '../lib/dma/scatterlist';
import { DmaDebug } from '../lib/dma/debug';
import { expectNoLeaks } from './helpers/leaks';

const MiB = 1024 * 1024;
const RW = IOMMU_READ | IOMMU_WRITE;

function domainOf(dev: Device): IommuDomain {
  assert.ok(dev.iommu !== null, 'the device is behind an IOMMU');
  return dev.iommu;
}

/** A copy of the machine's cache-maintenance counters (what a non-coherent device would cost). */
function maintenance(m: Machine): { forDevice: number; forCpu: number } {
  const c = dma_cache_maintenance(m);
  return { forDevice: c.forDevice, forCpu: c.forCpu };
}

describe('52 mutation gaps in lib/dma', () => {
  expectNoLeaks();

  describe('on a machine', () => {
    let m: Machine;
    const devs: Device[] = [];
    const held: Page[] = [];
    before(() => {
      m = new Machine({ name: 'mg52', ramPerNode: 8 * MiB, cmaSize: 8 * MiB, hugepages: 'off', emitWarnings: false });
    });
    after(() => m.destroy());
    afterEach(() => {
      for (const p of held.splice(0)) m.__free_pages(p, 0);
      for (const d of devs.splice(0)) d.destroy();
    });
    const device = (opts: Parameters<Machine['createDevice']>[0]): Device => {
      const d = m.createDevice(opts);
      devs.push(d);
      return d;
    };
    const page = (): Page => {
      const p = m.alloc_pages_node(0, GFP_KERNEL, 0);
      assert.ok(p);
      held.push(p);
      return p;
    };

    it('dma_alloc_pages / dma_free_pages on a non-coherent IOMMU device do no CPU cache maintenance (SKIP_CPU_SYNC)', () => {
      // kernel-semantics 1.4 step 5 and 1.5 step 2: the common helpers map and unmap with
      // DMA_ATTR_SKIP_CPU_SYNC; the buffer is fresh (zeroed after mapping), nothing to clean.
      const dev = device({ iommu: { strict: true }, coherent: false });
      const h = { value: 0n };
      const before = maintenance(m);
      const pg = dma_alloc_pages(dev, 3 * PAGE_SIZE, h, DMA_TO_DEVICE, GFP_KERNEL);
      assert.ok(pg);
      assert.notEqual(h.value, DMA_MAPPING_ERROR);
      assert.deepEqual(maintenance(m), before, 'no sync for the device at alloc');
      dma_free_pages(dev, 3 * PAGE_SIZE, pg, h.value, DMA_TO_DEVICE);
      assert.deepEqual(maintenance(m), before, 'no sync for the CPU at free');
      assert.equal(domainOf(dev).stats().iovaAllocated, 0);
    });

    it('iommu_dma_map_page / unmap_page on a non-coherent device sync unless DMA_ATTR_SKIP_CPU_SYNC', () => {
      const dev = device({ iommu: true, coherent: false });
      const p = page();
      let before = maintenance(m);
      const a = iommu_dma_map_page(dev, p, 0, 512, DMA_TO_DEVICE, DMA_ATTR_SKIP_CPU_SYNC);
      assert.notEqual(a, DMA_MAPPING_ERROR);
      assert.deepEqual(maintenance(m), before, 'skipped on map');
      iommu_dma_unmap_page(dev, a, 512, DMA_TO_DEVICE, DMA_ATTR_SKIP_CPU_SYNC);
      assert.deepEqual(maintenance(m), before, 'skipped on unmap');

      const b = iommu_dma_map_page(dev, p, 0, 512, DMA_FROM_DEVICE, 0);
      assert.deepEqual(maintenance(m), { ...before, forDevice: before.forDevice + 1 }, 'synced for the device on map');
      before = maintenance(m);
      iommu_dma_unmap_page(dev, b, 512, DMA_FROM_DEVICE, 0);
      assert.deepEqual(maintenance(m), { ...before, forCpu: before.forCpu + 1 }, 'synced for the CPU on unmap');
    });

    it('dma_direct_map_sg failing on an entry unmaps the ones before it without CPU sync', () => {
      // kernel/dma/direct.c: the error path unmaps with attrs | DMA_ATTR_SKIP_CPU_SYNC.
      const [lo, hi] = [page(), page()].sort((x, y) => x.pfn - y.pfn) as [Page, Page];
      // A bus limit (not 2^n - 1) that the lower page fits under and the higher one does not.
      const dev = device({ coherent: false, dmaMask: 64, busDmaLimit: hi.phys - 1n });
      const sgl: Sg[] = [];
      sg_init_table(sgl, 2);
      sg_set_page(sgl[0]!, lo, PAGE_SIZE, 0);
      sg_set_page(sgl[1]!, hi, PAGE_SIZE, 0);
      const before = maintenance(m);
      assert.equal(dma_direct_map_sg(dev, sgl[0]!, 2, DMA_TO_DEVICE, 0), -EIO);
      const after = maintenance(m);
      assert.equal(after.forDevice, before.forDevice + 1, 'the first entry was synced for the device when mapped');
      assert.equal(after.forCpu, before.forCpu, 'and not synced for the CPU when undone');
    });

    it('iommu_dma_map_sg gives the IOVA back when iommu_map_sg fails', () => {
      const dev = device({ dmaMask: 32, iommu: true });
      const dom = domainOf(dev);
      const p = page();
      // The first IOVA page handed out is the top one under the mask: occupy its PTE beforehand.
      assert.equal(iommu_map(dom, 0xffff_f000n, p.phys, PAGE_SIZE, RW), 0);
      try {
        const sgt = new SgTable();
        assert.equal(sg_alloc_table(sgt, 1, GFP_KERNEL), 0);
        sg_set_page(sgt.sgl!, p, PAGE_SIZE, 0);
        assert.equal(iommu_dma_map_sg(dev, sgt.sgl!, 1, DMA_BIDIRECTIONAL, 0), -EINVAL);
        assert.equal(dom.stats().iovaAllocated, 0, 'no IOVA left allocated');
        assert.equal(sgt.sgl!.dma_address, DMA_MAPPING_ERROR);
        assert.equal(sgt.sgl!.length, PAGE_SIZE, 'the entry is restored');
      } finally {
        assert.equal(iommu_unmap(dom, 0xffff_f000n, PAGE_SIZE), PAGE_SIZE);
      }
    });

    it('iommu_dma_free unmaps from the IOMMU before the pages are given back', () => {
      const dev = device({ iommu: true });
      const dom = domainOf(dev);
      const h = { value: 0n };
      const cpu = dma_alloc_coherent(dev, PAGE_SIZE, h, GFP_KERNEL);
      assert.ok(cpu !== null);
      // A blocking request through the IOMMU is remapped (a vmalloc address over its pages).
      const pg = m.vmalloc_to_page(cpu)!;
      assert.equal(pg.refcount, 1);
      const seen: number[] = [];
      const unmapPages = dom.unmapPages.bind(dom);
      // Watch (not replace) the IOMMU unmap: were the pages still allocated when it ran?
      dom.unmapPages = (iovaPfn: number, pages: number): number => {
        seen.push(pg.refcount);
        return unmapPages(iovaPfn, pages);
      };
      try {
        dma_free_coherent(dev, PAGE_SIZE, cpu, h.value);
      } finally {
        dom.unmapPages = unmapPages;
      }
      assert.deepEqual(seen, [1], 'the page was still allocated while the device could reach it');
      assert.equal(pg.refcount, 0, 'and freed after');
    });

    it('iommu_dma_mmap maps the buffer from vm_pgoff', () => {
      const dev = device({ iommu: true });
      const h = { value: 0n };
      const size = 3 * PAGE_SIZE;
      const cpu = dma_alloc_coherent(dev, size, h, GFP_KERNEL);
      assert.ok(cpu !== null);
      try {
        for (let i = 0; i < 3; i++) m.view(cpu + i * PAGE_SIZE, PAGE_SIZE).fill(0x30 + i);
        const vma = m.createVma(2 * PAGE_SIZE, { pgoff: 1, shared: true });
        try {
          assert.equal(dma_mmap_coherent(dev, vma, cpu, h.value, size), 0);
          assert.ok(vma.read(0, PAGE_SIZE).every((b) => b === 0x31), 'user page 0 is buffer page 1');
          assert.ok(vma.read(PAGE_SIZE, PAGE_SIZE).every((b) => b === 0x32), 'user page 1 is buffer page 2');
        } finally {
          vma.unmap();
        }
      } finally {
        dma_free_coherent(dev, size, cpu, h.value);
      }
    });

    it('iommu_dma_map_sg does not merge an entry that starts mid-page into the previous segment', () => {
      const dev = device({ iommu: { strict: true } });
      const [p0, p1] = [page(), page()];
      const sgt = new SgTable();
      assert.equal(sg_alloc_table(sgt, 2, GFP_KERNEL), 0);
      const e0 = sgt.sgl!;
      const e1 = sg_next(e0)!;
      sg_set_page(e0, p0, PAGE_SIZE, 0);
      sg_set_page(e1, p1, 200, 100);
      assert.equal(iommu_dma_map_sg(dev, e0, 2, DMA_BIDIRECTIONAL, 0), 2, 'two DMA segments');
      assert.equal(e0.dma_length, PAGE_SIZE);
      assert.equal(e1.dma_length, 200);
      assert.equal(e1.dma_address, e0.dma_address + BigInt(PAGE_SIZE) + 100n, 'IOVA page after, at the entry offset');
      assert.deepEqual([e1.offset, e1.length], [100, 200], 'the entry reads as the caller built it');
      iommu_dma_unmap_sg(dev, e0, 2, DMA_BIDIRECTIONAL, 0);
      assert.equal(domainOf(dev).stats().iovaAllocated, 0);
    });

    it('dma_alloc_coherent passes __GFP_NOWARN on as DMA_ATTR_NO_WARN, and only then', () => {
      const dev = device({});
      const h = { value: 0n };
      const size = 16 * MiB; // order 12 > MAX_PAGE_ORDER, and more than the CMA area
      const from = m.warnings.length;
      assert.equal(dma_alloc_coherent(dev, size, h, GFP_KERNEL | __GFP_NOWARN), null);
      assert.deepEqual(m.warnings.slice(from).map((w) => w.message), [], 'quiet with __GFP_NOWARN');
      assert.equal(dma_alloc_coherent(dev, size, h, GFP_KERNEL), null);
      assert.ok(m.warnings.slice(from).some((w) => /MAX_PAGE_ORDER/.test(w.message)), 'WARNs without it');
    });
  });

  it('the IOVA rcache hands out a cached range only if its last page is under the limit', () => {
    const counters = { iovaAllocated: 0 };
    const iovad = new IovaDomain(1, 1023, counters, () => {});
    const a = iovad.alloc_iova(2, 1023);
    const b = iovad.alloc_iova(2, 1023);
    assert.deepEqual([a, b], [1022, 1020]);
    assert.ok(iovad.free_iova(a), 'A goes to the size-2 cache (it is not at the bump)');
    // A limit that is not 2^n - 1: A's first page (1022) is under it, its last (1023) is not.
    const c = iovad.alloc_iova(2, 1022);
    assert.ok(c !== 0);
    assert.ok(c + 2 - 1 <= 1022, `range [${c}, ${c + 1}] ends under the limit`);
    // With the limit respected the cached range is still there for a request that allows it.
    assert.equal(iovad.alloc_iova(2, 1023), 1022);
  });

  // Equivalent mutants of __sg_alloc_table's `nents <= SG_MAX_SINGLE_ALLOC ? 1 : ceil((nents - 1) / 127)`:
  // `<` or `<= 127` in the test differ only at nents = 128, where ceil(127 / 127) = 1 chunk as well;
  // the test only matters for nents = 1 (ceil(0) = 0 chunks), which shape(1) checks.
  it('sg_alloc_table fits up to SG_MAX_SINGLE_ALLOC (128) entries in one chunk, then chains 127 + link', () => {
    const shape = (n: number): { slots: number; chains: number; nents: number } => {
      const t = new SgTable();
      assert.equal(sg_alloc_table(t, n, GFP_KERNEL), 0);
      const store = t.sgl!.store;
      let chains = 0;
      for (let i = 0; i < store.size; i++) if (sg_is_chain(new Scatterlist(store, i))) chains++;
      return { slots: store.size, chains, nents: sg_nents(t.sgl) };
    };
    assert.equal(SG_MAX_SINGLE_ALLOC, 128);
    assert.deepEqual(shape(1), { slots: 1, chains: 0, nents: 1 });
    assert.deepEqual(shape(127), { slots: 127, chains: 0, nents: 127 });
    assert.deepEqual(shape(128), { slots: 128, chains: 0, nents: 128 });
    assert.deepEqual(shape(129), { slots: 130, chains: 1, nents: 129 });
    assert.deepEqual(shape(255), { slots: 256, chains: 1, nents: 255 }, '127 + link, then 128');
    assert.deepEqual(shape(256), { slots: 258, chains: 2, nents: 256 }, '127 + link, 127 + link, then 2');
  });

  it('sg_next stops at the end of the entries even without an end mark', () => {
    const sgl: Sg[] = [];
    sg_init_table(sgl, 3);
    sgl[2]!.link_flags = 0; // a hand-built list whose end mark was cleared
    assert.equal(sg_next(sgl[1]!)?.index, 2);
    assert.equal(sg_next(sgl[2]!), null, 'no entry past the last slot');
    assert.equal(sg_nents(sgl[0]!), 3);
  });

  it('DMA-API debug reports a sync one byte past the end of a mapping, and not one that ends at it', () => {
    const d = new DmaDebug({ enabled: true, strict: false, maxPrinted: 0 });
    const dev = { name: 'mg52dbg' };
    const segment: PageSegment = { kind: 'ram', nid: 0, startPfn: 0, pages: 1 << 20, fd: -1, mapGranule: 4096 };
    d.debug_dma_map_page(dev, new Page(0x20, segment, null, PAGE_CONSTRUCTION_KEY), 0, 4096, DMA_FROM_DEVICE, 0x20000n, false);
    d.debug_dma_mapping_error(dev, 0x20000n);
    d.debug_dma_sync_single_for_cpu(dev, 0x20000n, 4096, DMA_FROM_DEVICE);
    d.debug_dma_sync_single_for_cpu(dev, 0x20800n, 2048, DMA_FROM_DEVICE);
    assert.deepEqual(d.reports.map((r) => r.check), [], 'syncs that end exactly at the end are fine');
    d.debug_dma_sync_single_for_cpu(dev, 0x20000n, 4097, DMA_FROM_DEVICE);
    d.debug_dma_sync_single_for_cpu(dev, 0x20801n, 2048, DMA_FROM_DEVICE);
    // As the kernel's containing_match: no entry holds the range, so it is memory it has not allocated.
    assert.deepEqual(d.reports.map((r) => r.check), [9, 9]);
    d.debug_dma_unmap_page(dev, 0x20000n, 4096, DMA_FROM_DEVICE);
    assert.equal(d.activeEntries(), 0);
  });
});
