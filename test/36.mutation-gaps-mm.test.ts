// Mutation gaps in lib/mm (issue 17): each test kills a hand-made mutation the suite used to survive.
// The patterns behind them: allocators checked by counters instead of "release, then allocate the
// same range again" and "no overlap with live allocations", and zeroing tested on memory that was
// already zero; so these tests dirty the memory first and check the neighbours of what they free.

import assert from 'node:assert/strict';
import { BuddyAllocator } from '../lib/mm/buddy';
import { Cma, cma_alloc, cma_pages_allocated, cma_release } from '../lib/mm/cma';
import { GFP_KERNEL, PAGE_SIZE, __GFP_ZERO } from '../lib/mm/gfp';
import { Machine } from '../lib/mm/machine';
import { Page, PAGE_CONSTRUCTION_KEY, type PageSegment } from '../lib/mm/page';
import { vfree, vmalloc, vzalloc } from '../lib/mm/vmalloc';
import { expectNoLeaks } from './helpers/leaks';

const MiB = 1024 * 1024;

/** Pages made on demand that keep their identity (what a Machine's pfn_to_page gives). */
function pageMap(): (pfn: number) => Page {
  const segment: PageSegment = { kind: 'ram', nid: 0, startPfn: 0, pages: 2 ** 40, fd: -1, mapGranule: PAGE_SIZE };
  const pages = new Map<number, Page>();
  return (pfn) => {
    let p = pages.get(pfn);
    if (p === undefined) pages.set(pfn, (p = new Page(pfn, segment, null, PAGE_CONSTRUCTION_KEY)));
    return p;
  };
}

function cmaArea(options: { basePfn?: number; count?: number; orderPerBit?: number; ranges?: { basePfn: number; count: number }[] }): Cma {
  return new Cma({ name: 'mg36', nid: 0, pfnToPage: pageMap(), warn: () => {}, ...options });
}

function allocOrFail(cma: Cma, count: number): Page {
  const p = cma_alloc(cma, count, 0, false);
  assert.ok(p, `cma_alloc(${count}) failed`);
  return p;
}

/** Every free page of the machine gets written with 0xa5 and freed again: "fresh" memory is dirty. */
function dirtyAllFreeMemory(m: Machine): number {
  const taken: Page[] = [];
  for (let p = m.alloc_pages_node(0, GFP_KERNEL, 0); p !== null; p = m.alloc_pages_node(0, GFP_KERNEL, 0)) {
    m.memset(m.page_address(p), 0xa5, PAGE_SIZE);
    taken.push(p);
  }
  for (let i = taken.length - 1; i >= 0; i--) m.__free_pages(taken[i]!, 0);
  return taken.length;
}

describe('36 mutation gaps in lib/mm', () => {
  expectNoLeaks();

  it('the buddy allocator\'s zone limit applies to the whole block, not its head page', () => {
    const buddy = new BuddyAllocator(pageMap());
    buddy.addRange(0, 0, 8); // one free order-3 block [0, 8)
    assert.equal(buddy.allocOrder(0, 3, false, 4), null, '[0, 8) does not lie below pfn 4');
    const p = buddy.allocOrder(0, 1, false, 3);
    assert.equal(p?.pfn, 0, '[0, 2) does: split from the same block');
    // With the machine's zones (16 MiB, 4 GiB: multiples of 2^MAX_PAGE_ORDER pages) a naturally
    // aligned block never straddles the limit, so only limits like these tell head from block.
  });

  it('cma_release clears bitmap units (2^order_per_bit pages), leaving the neighbour allocated', () => {
    const cma = cmaArea({ basePfn: 0x1000, count: 64, orderPerBit: 2 });
    const a = allocOrFail(cma, 4);
    const b = allocOrFail(cma, 4);
    assert.deepEqual([a.pfn, b.pfn], [0x1000, 0x1004]);
    assert.ok(cma_release(cma, a, 4));
    assert.equal(cma_pages_allocated(cma, b.pfn, 4), true, 'B is still handed out');
    const c = allocOrFail(cma, 8);
    assert.ok(c.pfn + 8 <= b.pfn || c.pfn >= b.pfn + 4, `8 pages at 0x${c.pfn.toString(16)} overlap live B`);
    const d = allocOrFail(cma, 4);
    assert.equal(d.pfn, 0x1000, 'A\'s range is handed out again');
    for (const [p, n] of [[b, 4], [c, 8], [d, 4]] as const) assert.ok(cma_release(cma, p, n));
    assert.equal(cma.available, 64);
  });

  it('cma_release clears the bits of the range the pages are in, so that range is allocated again', () => {
    const cma = cmaArea({ ranges: [{ basePfn: 0x1000, count: 8 }, { basePfn: 0x3000, count: 16 }] });
    const a = allocOrFail(cma, 6);
    const b = allocOrFail(cma, 6);
    const c = allocOrFail(cma, 2);
    assert.deepEqual([a.pfn, b.pfn, c.pfn], [0x1000, 0x3000, 0x1006]);
    assert.ok(cma_release(cma, b, 6));
    assert.equal(cma_pages_allocated(cma, 0x3000, 6), false);
    assert.equal(cma_pages_allocated(cma, 0x1000, 8), true, 'the first range is untouched');
    assert.equal(allocOrFail(cma, 6).pfn, 0x3000, 'the same range again');
    assert.ok(cma_release(cma, c, 2));
    assert.equal(cma_pages_allocated(cma, 0x1000, 6), true, 'A is still handed out');
    assert.equal(cma_pages_allocated(cma, 0x1006, 2), false);
    assert.equal(allocOrFail(cma, 2).pfn, 0x1006);
  });

  describe('on a machine with dirty free memory', () => {
    let m: Machine;
    before(() => {
      m = new Machine({ name: 'mg36', ramPerNode: 8 * MiB, cmaSize: 0, hugepages: 'off', emitWarnings: false });
    });
    after(() => m.destroy());
    beforeEach(() => {
      assert.ok(dirtyAllFreeMemory(m) > 1000);
    });

    it('__GFP_ZERO zeroes every page of the block', () => {
      const q = m.alloc_pages_node(0, GFP_KERNEL, 2);
      assert.ok(q);
      // Without __GFP_ZERO the block is as it was: the check below means something.
      assert.equal(m.view(m.page_address(q), 4 * PAGE_SIZE).lastIndexOf(0xa5), 4 * PAGE_SIZE - 1);
      m.__free_pages(q, 2);
      const p = m.alloc_pages_node(0, GFP_KERNEL | __GFP_ZERO, 2);
      assert.ok(p);
      try {
        const bytes = m.view(m.page_address(p), 4 * PAGE_SIZE);
        assert.equal(bytes.indexOf(0xa5), -1, 'no byte of the 4 pages kept its old contents');
      } finally {
        m.__free_pages(p, 2);
      }
    });

    it('vzalloc zeroes the whole allocation, last byte included', () => {
      for (const size of [2 * PAGE_SIZE, 5000]) {
        const addr = vzalloc(m, size);
        assert.ok(addr !== null);
        try {
          const bytes = m.view(addr, 2 * PAGE_SIZE);
          assert.equal(bytes.indexOf(0xa5), -1, `vzalloc(${size}): no dirty byte`);
          assert.equal(bytes[2 * PAGE_SIZE - 1], 0);
        } finally {
          vfree(m, addr);
        }
      }
    });

    it('vmalloc areas are separated by a guard page, and a freed hole is reused first fit', () => {
      const a = vmalloc(m, PAGE_SIZE)!;
      const b = vmalloc(m, PAGE_SIZE)!;
      const c = vmalloc(m, PAGE_SIZE)!;
      try {
        assert.equal(b - a, 2 * PAGE_SIZE, 'one page and its guard page');
        assert.equal(c - b, 2 * PAGE_SIZE);
        vfree(m, b);
        const b2 = vmalloc(m, PAGE_SIZE)!;
        assert.equal(b2, b, 'the hole of B (a page and its guard) takes one page again');
        vfree(m, b2);
        const big = vmalloc(m, 2 * PAGE_SIZE)!;
        assert.equal(big, c + 2 * PAGE_SIZE, 'two pages and a guard do not fit in that hole');
        vfree(m, big);
      } finally {
        vfree(m, a);
        vfree(m, c);
      }
    });
  });
});
