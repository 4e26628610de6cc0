// CMA areas (lib/mm/cma.ts): first-fit bitmap allocation with physical alignment, release bounds,
// order_per_bit, and cma_alloc_aligned as kernel/dma/contiguous.c calls it (cases 30, 31, 35-37).

import assert from 'node:assert/strict';
import {
  CONFIG_CMA_ALIGNMENT, Cma, cma_alloc, cma_alloc_aligned, cma_pages_valid, cma_release,
  type CmaOptions,
} from '../lib/mm/cma';
import { GFP_KERNEL, PAGE_ALIGN, PAGE_SIZE, __GFP_NOWARN, get_order } from '../lib/mm/gfp';
import { Page, PAGE_CONSTRUCTION_KEY, type PageSegment } from '../lib/mm/page';

const segment: PageSegment = { kind: 'cma', nid: 0, startPfn: 0, pages: 2 ** 40, fd: -1, mapGranule: PAGE_SIZE };

/** Lazily created pages that keep their identity. */
function pageMap(): (pfn: number) => Page {
  const pages = new Map<number, Page>();
  return (pfn) => {
    let page = pages.get(pfn);
    if (page === undefined) {
      page = new Page(pfn, segment, null, PAGE_CONSTRUCTION_KEY);
      pages.set(pfn, page);
    }
    return page;
  };
}

interface Area {
  cma: Cma;
  warnings: string[];
  page: (pfn: number) => Page;
}

function area(options: Partial<CmaOptions> = {}): Area {
  const warnings: string[] = [];
  const page = pageMap();
  const cma = new Cma({
    name: 'test',
    basePfn: 0x1000,
    count: 64,
    nid: 0,
    pfnToPage: page,
    warn: (message) => warnings.push(message),
    ...options,
  });
  return { cma, warnings, page };
}

function allocOrFail(cma: Cma, count: number, align: number): Page {
  const page = cma_alloc(cma, count, align, false);
  assert.ok(page, `cma_alloc(${count}, ${align}) failed`);
  return page;
}

describe('31 cma', () => {
  it('allocates first fit and marks the pages allocated', () => {
    const { cma, page } = area();
    assert.equal(allocOrFail(cma, 3, 0).pfn, 0x1000);
    assert.equal(allocOrFail(cma, 2, 0).pfn, 0x1003);
    for (let pfn = 0x1000; pfn < 0x1005; pfn++) assert.equal(page(pfn).refcount, 1);
    assert.equal(page(0x1005).refcount, 0);
    assert.equal(cma.available, 59);
    assert.equal(cma.count, 64);
    assert.equal(cma.basePfn, 0x1000);
    assert.equal(cma.name, 'test');
  });

  it('aligns the physical pfn when the base is not aligned', () => {
    const { cma } = area({ basePfn: 0x1003, count: 64 });
    assert.equal(allocOrFail(cma, 1, 4).pfn, 0x1010);
    assert.equal(allocOrFail(cma, 1, 0).pfn, 0x1003, 'the skipped pages stay free');
    assert.equal(allocOrFail(cma, 1, 4).pfn, 0x1020);
  });

  it('returns null for a null or empty area and for count 0, without warning', () => {
    const { cma, warnings } = area();
    assert.equal(cma_alloc(null, 1, 0, false), null);
    assert.equal(cma_alloc(cma, 0, 0, false), null);
    assert.equal(cma_alloc(area({ count: 0 }).cma, 1, 0, false), null);
    assert.deepEqual(warnings, []);
  });

  it('fails with a warning when count > available, silently with noWarn', () => {
    const { cma, warnings } = area();
    allocOrFail(cma, 60, 0);
    assert.equal(cma_alloc(cma, 5, 0, true), null);
    assert.deepEqual(warnings, []);
    assert.equal(cma_alloc(cma, 5, 0, false), null);
    assert.deepEqual(warnings, ['cma: cma_alloc: test: alloc failed, req-size: 5 pages, ret: -16']);
    assert.equal(cma.available, 4);
    assert.equal(allocOrFail(cma, 4, 0).pfn, 0x1000 + 60);
  });

  it('fails when free pages exist but no aligned run fits', () => {
    const { cma, warnings } = area({ count: 32 });
    allocOrFail(cma, 1, 0);
    assert.equal(cma_alloc(cma, 2, 5, false), null, 'the only 32-aligned start is taken');
    assert.equal(allocOrFail(cma, 16, 4).pfn, 0x1010);
    assert.equal(warnings.length, 1);
  });

  it('case 30: 12288 bytes -> 3 pages aligned to 4 pages', () => {
    const { cma } = area({ basePfn: 0x1001 });
    allocOrFail(cma, 1, 0);
    const page = cma_alloc_aligned(cma, 12288, GFP_KERNEL);
    assert.ok(page);
    assert.equal(page.pfn, 0x1004);
    assert.equal(cma.available, 64 - 1 - 3);
    assert.ok(cma_release(cma, page, PAGE_ALIGN(12288) / PAGE_SIZE));
    assert.equal(cma.available, 63);
  });

  it('case 31: 8 MiB aligns to min(11, 8) = 8', () => {
    assert.equal(Math.min(get_order(8 * 1024 * 1024), CONFIG_CMA_ALIGNMENT), 8);
    const { cma, warnings } = area({ basePfn: 0x10080, count: 4096 });
    const page = cma_alloc_aligned(cma, 8 * 1024 * 1024, GFP_KERNEL);
    assert.ok(page);
    assert.equal(page.pfn, 0x10100, 'the first 256-page boundary');
    assert.equal(cma.available, 2048);
    // A second one no longer fits after the 0x80 pages skipped for alignment.
    assert.equal(cma_alloc_aligned(cma, 8 * 1024 * 1024, GFP_KERNEL | __GFP_NOWARN), null);
    assert.deepEqual(warnings, []);
    assert.equal(cma_alloc_aligned(cma, 8 * 1024 * 1024, GFP_KERNEL), null);
    assert.equal(warnings.length, 1);
  });

  it('cma_alloc_aligned rounds the page count down', () => {
    const { cma } = area();
    assert.ok(cma_alloc_aligned(cma, 5000, GFP_KERNEL));
    assert.equal(cma.available, 63);
    assert.equal(cma_alloc_aligned(cma, 100, GFP_KERNEL), null, 'size < PAGE_SIZE asks for 0 pages');
  });

  it('release refuses ranges not wholly inside one range (cases 35, 37)', () => {
    const { cma, page } = area();
    const first = allocOrFail(cma, 64, 0);
    assert.equal(cma_release(cma, page(0x0fff), 2), false, 'starts before the area');
    assert.equal(cma_release(cma, page(0x103f), 2), false, 'runs past the end');
    assert.equal(cma_release(cma, page(0x2000), 1), false, 'outside the area');
    assert.equal(cma_release(cma, first, 65), false, 'count > area count');
    assert.equal(cma_release(cma, null, 1), false);
    assert.equal(cma_release(null, first, 1), false);
    assert.equal(cma.available, 0);
    assert.equal(cma_pages_valid(cma, first, 64), true);
    assert.equal(cma_pages_valid(cma, page(0x103f), 2), false);
    assert.equal(cma.contains(0x103f), true);
    assert.equal(cma.contains(0x1040), false);
  });

  it('release frees the pages and a new allocation reuses them', () => {
    const { cma, page } = area();
    const a = allocOrFail(cma, 8, 0);
    allocOrFail(cma, 8, 0);
    assert.equal(cma_release(cma, a, 8), true);
    assert.equal(page(0x1000).refcount, 0);
    assert.equal(page(0x1007).refcount, 0);
    assert.equal(cma.available, 56);
    assert.equal(allocOrFail(cma, 4, 0).pfn, 0x1000);
    assert.throws(() => cma_release(cma, page(0x1004), 1), /free page/, 'double release');
  });

  it('order_per_bit > 0: one bit per 2^order_per_bit pages', () => {
    const { cma, page } = area({ basePfn: 0x1002, count: 64, orderPerBit: 2 });
    // 3 pages take a whole bit (4 pages), but available drops by 3, as in the kernel.
    assert.equal(allocOrFail(cma, 3, 0).pfn, 0x1002);
    assert.equal(cma.available, 61);
    assert.equal(allocOrFail(cma, 1, 0).pfn, 0x1006);
    // align <= order_per_bit: no mask, any bit boundary will do.
    assert.equal(allocOrFail(cma, 1, 1).pfn, 0x100a);
    // align 4 from base 0x1002: offset = (0x1002 & 15) >> 2 = 0, so the bit index is aligned,
    // which is what the kernel does: the physical pfn is then 0x1002 + 16 = 0x1012.
    assert.equal(allocOrFail(cma, 4, 4).pfn, 0x1012);
    assert.ok(cma_release(cma, page(0x1002), 3));
    assert.equal(cma.available, 64 - 3 - 1 - 1 - 4 + 3);
    assert.equal(allocOrFail(cma, 4, 0).pfn, 0x1002);
    assert.throws(() => area({ count: 63, orderPerBit: 2 }), RangeError);
  });

  it('searches the ranges in order and releases into the right one', () => {
    const { cma, page } = area({
      ranges: [
        { basePfn: 0x1000, count: 8 },
        { basePfn: 0x3000, count: 16 },
      ],
    });
    assert.equal(cma.count, 24);
    assert.equal(allocOrFail(cma, 6, 0).pfn, 0x1000);
    assert.equal(allocOrFail(cma, 6, 0).pfn, 0x3000, 'does not fit in the first range');
    assert.equal(cma_release(cma, page(0x1007), 2), false, 'crosses out of the first range');
    assert.ok(cma_release(cma, page(0x3000), 6));
    assert.equal(cma.available, 18);
    assert.throws(
      () => area({ ranges: Array.from({ length: 9 }, (_, i) => ({ basePfn: i * 16, count: 16 })) }),
      RangeError,
    );
  });
});
