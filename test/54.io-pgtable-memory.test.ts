// The I/O page table in machine memory (VT-d second-level format): entries read back from the
// machine's own pages, pages from the page allocator (counted, freed when empty, no leak at
// teardown), 2 MiB large-page entries where a mapping allows, splitting one on a partial unmap.

import assert from 'node:assert/strict';
import { Machine } from '../lib/mm/machine';
import '../lib/dma/device';
import type { Device } from '../lib/dma/device';
import { GFP_KERNEL, PAGE_SIZE } from '../lib/mm/gfp';
import { DMA_ATTR_FORCE_CONTIGUOUS, DMA_BIDIRECTIONAL, DMA_FROM_DEVICE, DMA_TO_DEVICE } from '../lib/dma/constants';
import { IOMMU_READ, IOMMU_WRITE, iommu_dma_map_page, iommu_dma_unmap_page, iommu_map, iommu_unmap, type IommuDomain } from '../lib/dma/iommu';
import { REG_ROOT_PFN } from '../lib/dma/iommu_regs';
import { dma_alloc_attrs, dma_free_coherent } from '../lib/dma/mapping';
import { expectNoLeaks } from './helpers/leaks';

const MiB = 1024 * 1024;
const RW = IOMMU_READ | IOMMU_WRITE;

function domain(dev: Device): IommuDomain {
  assert.ok(dev.iommu !== null);
  return dev.iommu;
}

/** The 64-bit entry `index` of the table in page `pfn`, read through the CPU side (machine.read). */
function entry(m: Machine, pfn: number, index: number): bigint {
  return m.read(m.pageOffset + pfn * PAGE_SIZE + index * 8, 8).readBigUInt64LE(0);
}

describe('54 I/O page tables in machine memory', () => {
  expectNoLeaks();
  let m: Machine;
  beforeEach(() => {
    m = new Machine({ name: 'pt54', ramPerNode: 16 * MiB, cmaSize: 8 * MiB, hugepages: 'off', emitWarnings: false, dmaDebug: true });
  });
  afterEach(() => {
    m.destroy();
    assert.deepEqual(m.warnings.filter((w) => /still allocated|leak/i.test(w.message)).map((w) => w.message), [], 'no page-table page leaked');
  });

  it('a mapping is a 4-level walk of little-endian entries in machine pages, with the read/write bits of its direction', () => {
    const dev = m.createDevice({ name: 'pt', dmaMask: 48, iommu: true });
    const page = m.alloc_pages(GFP_KERNEL, 0)!;
    const iova = iommu_dma_map_page(dev, page, 0, PAGE_SIZE, DMA_TO_DEVICE, 0);
    const d = domain(dev);
    const regs = new Int32Array(d.regs);
    const root = regs[REG_ROOT_PFN]!;
    assert.ok(m.pfn_valid(root), 'the root table is a page of the machine');
    let table = root;
    const iovaPfn = Number(iova) / PAGE_SIZE;
    for (let level = 4; level >= 2; level--) {
      const e = entry(m, table, Math.floor(iovaPfn / 512 ** (level - 1)) % 512);
      assert.equal(e & 3n, 3n, `level ${level}: a next-table pointer allows read and write`);
      table = Number((e >> 12n) & 0xff_ffff_ffffn);
      assert.ok(m.pfn_valid(table), `level ${level} points at a machine page`);
    }
    const leaf = entry(m, table, iovaPfn % 512);
    assert.equal(Number((leaf >> 12n) & 0xff_ffff_ffffn), page.pfn, 'the leaf holds the page frame');
    assert.equal(leaf & 3n, 1n, 'DMA_TO_DEVICE: read only');
    assert.equal(leaf & 0x80n, 0n, 'a 4 KiB leaf, not a large page');
    iommu_dma_unmap_page(dev, iova, PAGE_SIZE, DMA_TO_DEVICE, 0);
    assert.equal(regs[REG_ROOT_PFN], 0, 'after the unmap no walk can reach the freed tables');
    m.__free_pages(page, 0);
    dev.destroy();
  });

  it('table pages come from the page allocator, show in machine.secPageTables, and go back once empty', () => {
    const dev = m.createDevice({ name: 'acct', dmaMask: 48, iommu: { strict: true } });
    const free0 = m.stats().nodes[0]!.freePages;
    const page = m.alloc_pages(GFP_KERNEL, 0)!;
    const a = iommu_dma_map_page(dev, page, 0, PAGE_SIZE, DMA_BIDIRECTIONAL, 0);
    assert.equal(m.secPageTables, 4, 'root, level 3, level 2, leaf');
    assert.equal(domain(dev).stats().pageTables, 4);
    assert.deepEqual(domain(dev).tablesPerLevel(), [0, 1, 1, 1, 1]);
    assert.equal(m.stats().nodes[0]!.freePages, free0 - 1 - 4, 'the data page and four table pages');
    const b = iommu_dma_map_page(dev, page, 0, PAGE_SIZE, DMA_FROM_DEVICE, 0);
    assert.equal(m.secPageTables, 4, 'a second mapping nearby shares the tables');
    iommu_dma_unmap_page(dev, a, PAGE_SIZE, DMA_BIDIRECTIONAL, 0);
    assert.equal(m.secPageTables, 4, 'the leaf still holds one entry');
    iommu_dma_unmap_page(dev, b, PAGE_SIZE, DMA_FROM_DEVICE, 0);
    assert.equal(m.secPageTables, 0, 'strict: emptied tables are freed after the invalidation');
    assert.equal(new Int32Array(domain(dev).regs)[REG_ROOT_PFN], 0, 'no root table any more');
    m.__free_pages(page, 0);
    assert.equal(m.stats().nodes[0]!.freePages, free0);
    dev.destroy();
  });

  it('lazy mode keeps emptied tables until the flush, then frees them', () => {
    const dev = m.createDevice({ name: 'lazy', dmaMask: 48, iommu: { strict: false } });
    const page = m.alloc_pages(GFP_KERNEL, 0)!;
    const a = iommu_dma_map_page(dev, page, 0, PAGE_SIZE, DMA_BIDIRECTIONAL, 0);
    iommu_dma_unmap_page(dev, a, PAGE_SIZE, DMA_BIDIRECTIONAL, 0);
    assert.equal(m.secPageTables, 4, 'unlinked but not yet freed: the IOTLB may still hold translations through them');
    domain(dev).flush_iotlb_all();
    assert.equal(m.secPageTables, 0);
    m.__free_pages(page, 0);
    dev.destroy();
  });

  it('a 2 MiB aligned contiguous mapping is one large-page entry; a partial unmap splits it exactly', () => {
    const dev = m.createDevice({ name: 'large', dmaMask: 48, iommu: true });
    const d = domain(dev);
    const block = m.alloc_pages(GFP_KERNEL, 9)!; // 2 MiB, naturally aligned
    assert.equal(block.pfn % 512, 0);
    const iova = 0x4000_0000n;
    assert.equal(iommu_map(d, iova, BigInt(block.pfn * PAGE_SIZE), 2 * MiB, RW), 0);
    assert.equal(d.isLargePage(Number(iova) / PAGE_SIZE), true);
    assert.deepEqual(d.tablesPerLevel(), [0, 0, 1, 1, 1], 'no leaf table: the level-2 entry maps the whole 2 MiB');
    const l2 = d.stats().pageTables;
    assert.equal(l2, 3);
    // Every page translates, through the large entry.
    for (const k of [0, 1, 255, 511]) {
      assert.equal(d.translate(Number(iova) + k * PAGE_SIZE + 12), (block.pfn + k) * PAGE_SIZE + 12);
    }
    // Unmap one page in the middle: the entry becomes a table of 512, minus that page.
    assert.equal(iommu_unmap(d, iova + 7n * BigInt(PAGE_SIZE), PAGE_SIZE), PAGE_SIZE);
    assert.equal(d.isLargePage(Number(iova) / PAGE_SIZE), false);
    assert.equal(d.translate(Number(iova) + 7 * PAGE_SIZE), -1);
    assert.equal(d.translate(Number(iova) + 8 * PAGE_SIZE), (block.pfn + 8) * PAGE_SIZE);
    assert.equal(d.stats().mappedPages, 511);
    assert.equal(iommu_unmap(d, iova, 7 * PAGE_SIZE), 7 * PAGE_SIZE);
    assert.equal(iommu_unmap(d, iova + 8n * BigInt(PAGE_SIZE), 504 * PAGE_SIZE), 504 * PAGE_SIZE);
    assert.equal(d.stats().mappedPages, 0);
    assert.equal(m.secPageTables, 0);
    // Not aligned on the physical side: 4 KiB entries.
    assert.equal(iommu_map(d, iova, BigInt((block.pfn + 1) * PAGE_SIZE), 2 * MiB - PAGE_SIZE, RW), 0);
    assert.equal(d.isLargePage(Number(iova) / PAGE_SIZE), false);
    assert.equal(iommu_unmap(d, iova, 2 * MiB - PAGE_SIZE), 2 * MiB - PAGE_SIZE);
    m.__free_pages(block, 9);
    dev.destroy();
  });

  it('dma_alloc_coherent of 2 MiB from CMA is mapped with a large page when the IOVA is aligned', () => {
    const dev = m.createDevice({ name: 'cma2m', dmaMask: 48, coherentDmaMask: 48, iommu: true });
    const h = { value: 0n };
    // FORCE_CONTIGUOUS: a plain blocking request would be built from scattered pages (test 67).
    const cpu = dma_alloc_attrs(dev, 2 * MiB, h, GFP_KERNEL, DMA_ATTR_FORCE_CONTIGUOUS);
    assert.ok(cpu !== null);
    const d = domain(dev);
    const phys = Number(m.virt_to_phys(cpu));
    const large = d.isLargePage(Number(h.value) / PAGE_SIZE);
    assert.equal(Number(h.value) % (2 * MiB), 0, 'the IOVA allocator aligns a 2 MiB range to 2 MiB');
    assert.equal(phys % (2 * MiB), 0, 'CMA gives a 2 MiB buffer 2 MiB aligned here');
    assert.equal(large, true, 'so the mapping is one large-page entry');
    assert.equal(d.translate(Number(h.value) + 5000), phys + 5000);
    dma_free_coherent(dev, 2 * MiB, cpu, h.value);
    d.flush_iotlb_all(); // lazy (the default): emptied tables wait for the flush-queue flush
    assert.equal(m.secPageTables, 0);
    dev.destroy();
  });

  it('iommu_map refuses an overlapping range with -EEXIST and changes nothing, large page or not', () => {
    const dev = m.createDevice({ name: 'exist', dmaMask: 48, iommu: true });
    const d = domain(dev);
    const block = m.alloc_pages(GFP_KERNEL, 9)!;
    const base = BigInt(block.pfn * PAGE_SIZE);
    assert.equal(iommu_map(d, 0x20_0000n, base, 2 * MiB, RW), 0);
    const tables = m.secPageTables;
    assert.equal(iommu_map(d, 0x20_0000n + 0x1000n * 100n, base, PAGE_SIZE, IOMMU_READ), -17);
    assert.equal(iommu_map(d, 0x1f_f000n, base, 2 * PAGE_SIZE, IOMMU_READ), -17);
    assert.equal(d.translate(0x1f_f000), -1, 'nothing mapped by the refused call');
    assert.equal(m.secPageTables, tables);
    assert.equal(iommu_unmap(d, 0x20_0000n, 2 * MiB), 2 * MiB);
    m.__free_pages(block, 9);
    dev.destroy();
  });

  it('a domain with mappings left at machine teardown is reported with its table pages (dmaDebug)', () => {
    const dev = m.createDevice({ name: 'held', dmaMask: 48, iommu: true, debug: false });
    const page = m.alloc_pages(GFP_KERNEL, 0)!;
    iommu_dma_map_page(dev, page, 0, PAGE_SIZE, DMA_BIDIRECTIONAL, 0);
    const mm = m;
    m = new Machine({ name: 'pt54b', ramPerNode: 2 * MiB, cmaSize: 0, emitWarnings: false }); // for afterEach
    mm.destroy();
    const leak = mm.warnings.find((w) => /buddy block/.test(w.message));
    assert.ok(leak !== undefined, 'the leak report names buddy blocks');
    assert.match(leak.message, /5 buddy blocks/, 'the data page and the 4 table pages');
  });
});
