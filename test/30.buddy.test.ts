// The buddy allocator (lib/mm/buddy.ts) and the page-size arithmetic of lib/mm/gfp.ts, on real
// Page objects over a plain segment literal: no machine, no memory.

import assert from 'node:assert/strict';
import fc from 'fast-check';
import { BuddyAllocator, PCP_HIGH } from '../lib/mm/buddy';
import {
  GFP_ATOMIC, GFP_KERNEL, GFP_NOWAIT, MAX_PAGE_ORDER, PAGE_ALIGN, PAGE_SIZE, __GFP_COMP,
  __GFP_DIRECT_RECLAIM, __GFP_NOWARN, __GFP_THISNODE, __GFP_ZERO, get_order, gfpflags_allow_blocking,
} from '../lib/mm/gfp';
import { PG_buddy, PG_head, Page, PAGE_CONSTRUCTION_KEY, type PageSegment } from '../lib/mm/page';

/** Lazily created pages that keep their identity, one segment per node. */
function pageMap(): (pfn: number, nid?: number) => Page {
  const pages = new Map<number, Page>();
  const segments = new Map<number, PageSegment>();
  return (pfn, nid = 0) => {
    let page = pages.get(pfn);
    if (page === undefined) {
      let segment = segments.get(nid);
      if (segment === undefined) {
        segment = { kind: 'ram', nid, startPfn: 0, pages: 2 ** 40, fd: -1, mapGranule: PAGE_SIZE };
        segments.set(nid, segment);
      }
      page = new Page(pfn, segment, null, PAGE_CONSTRUCTION_KEY);
      pages.set(pfn, page);
    }
    return page;
  };
}

/** The maximal naturally aligned decomposition of [start, start + count), counted per order. */
function maximalBlocks(start: number, count: number): number[] {
  const blocks = new Array<number>(MAX_PAGE_ORDER + 1).fill(0);
  let pfn = start;
  while (pfn < start + count) {
    let order = MAX_PAGE_ORDER;
    while (pfn % 2 ** order !== 0 || pfn + 2 ** order > start + count) order--;
    blocks[order] = (blocks[order] ?? 0) + 1;
    pfn += 2 ** order;
  }
  return blocks;
}

function allocator(start: number, count: number): BuddyAllocator {
  const buddy = new BuddyAllocator(pageMap());
  buddy.addRange(0, start, count);
  return buddy;
}

function allocOrFail(buddy: BuddyAllocator, nid: number, order: number, thisNode = false): Page {
  const page = buddy.allocOrder(nid, order, thisNode);
  assert.ok(page, `allocOrder(${nid}, ${order}) failed`);
  return page;
}

describe('30 gfp: constants and page arithmetic', () => {
  it('has the 6.17 bit values and combinations', () => {
    assert.equal(__GFP_ZERO, 0x100);
    assert.equal(__GFP_DIRECT_RECLAIM, 0x400);
    assert.equal(__GFP_NOWARN, 0x2000);
    assert.equal(__GFP_COMP, 0x40000);
    assert.equal(__GFP_THISNODE, 0x200000);
    assert.equal(GFP_KERNEL, 0xcc0);
    assert.equal(GFP_ATOMIC, 0x820);
    assert.equal(GFP_NOWAIT, 0x800);
    assert.equal(gfpflags_allow_blocking(GFP_KERNEL), true);
    assert.equal(gfpflags_allow_blocking(GFP_ATOMIC), false);
    assert.equal(gfpflags_allow_blocking(GFP_NOWAIT), false);
  });

  it('get_order covers size in whole buddy orders', () => {
    assert.equal(get_order(1), 0);
    assert.equal(get_order(4096), 0);
    assert.equal(get_order(4097), 1);
    assert.equal(get_order(8192), 1);
    assert.equal(get_order(3 * 4096), 2);
    assert.equal(get_order(4 * 1024 * 1024), 10);
    assert.equal(get_order(8 * 1024 * 1024), 11);
    assert.equal(get_order(2 ** 40), 28);
    assert.equal(get_order(2 ** 40 + 1), 29);
    assert.equal(get_order(2 ** 53), 41);
    assert.equal(get_order(0), 52); // undefined in the kernel; what the arithmetic gives at runtime
  });

  it('PAGE_ALIGN rounds up and keeps 0', () => {
    assert.equal(PAGE_ALIGN(0), 0);
    assert.equal(PAGE_ALIGN(1), 4096);
    assert.equal(PAGE_ALIGN(4096), 4096);
    assert.equal(PAGE_ALIGN(4097), 8192);
    assert.equal(PAGE_ALIGN(2 ** 40 + 1), 2 ** 40 + 4096);
    assert.equal(PAGE_ALIGN(2 ** 53 - 1), 2 ** 53);
    assert.throws(() => PAGE_ALIGN(-1), RangeError);
    assert.throws(() => get_order(1.5), RangeError);
  });
});

describe('30 buddy allocator', () => {
  it('frees a range as maximal naturally aligned blocks', () => {
    const buddy = allocator(3, 3000);
    assert.deepEqual(buddy.freeBlocks(0), maximalBlocks(3, 3000));
    assert.equal(buddy.freePages(0), 3000);
    assert.equal(buddy.totalPages(0), 3000);
    assert.deepEqual(buddy.nodes(), [0]);
  });

  it('returns to the maximal blocks after allocating everything at order 0 and freeing it', () => {
    const buddy = allocator(5, 2500);
    const initial = buddy.freeBlocks(0);
    const pages: Page[] = [];
    for (let page = buddy.allocOrder(0, 0, true); page !== null; page = buddy.allocOrder(0, 0, true)) {
      pages.push(page);
    }
    assert.equal(pages.length, 2500);
    assert.equal(new Set(pages.map((p) => p.pfn)).size, 2500);
    assert.equal(buddy.freePages(0), 0);
    for (const page of pages) buddy.free(page, 0);
    assert.equal(buddy.freePages(0), 2500);
    buddy.drainPcp();
    assert.deepEqual(buddy.freeBlocks(0), initial);
  });

  it('hands out 2^order-aligned blocks for every order 0..10', () => {
    const buddy = allocator(1, 8191);
    for (let order = 0; order <= MAX_PAGE_ORDER; order++) {
      const page = allocOrFail(buddy, 0, order);
      assert.equal(page.pfn % 2 ** order, 0, `order ${order} at pfn ${page.pfn}`);
      assert.equal(page.refcount, 1);
      assert.equal((page.flags & PG_head) !== 0, order > 0);
      assert.equal(page.flags & PG_buddy, 0);
      assert.equal(buddy.allocatedOrder(page.pfn), order);
    }
  });

  it('splits a block into halves and merges them back', () => {
    const buddy = allocator(0, 1024);
    const page = allocOrFail(buddy, 0, 0);
    assert.equal(page.pfn, 0);
    // expand(): 1024 = 1 (taken) + 1 + 2 + 4 + ... + 512
    assert.deepEqual(buddy.freeBlocks(0), [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0]);
    const buddyPage = allocOrFail(buddy, 0, 0);
    assert.equal(buddyPage.pfn, 1, 'the free order-0 buddy is used first');
    assert.deepEqual(buddy.freeBlocks(0), [0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0]);
    buddy.free(page, 0);
    buddy.drainPcp();
    assert.deepEqual(buddy.freeBlocks(0), [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0], 'no merge: the buddy is in use');
    buddy.free(buddyPage, 0);
    buddy.drainPcp();
    assert.deepEqual(buddy.freeBlocks(0), [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    const head = allocOrFail(buddy, 0, 10);
    assert.equal(head.pfn, 0);
    assert.equal(head.private_, -1);
  });

  it('keeps free heads marked PG_buddy with their order in private_', () => {
    const pages = pageMap();
    const buddy = new BuddyAllocator(pages);
    buddy.addRange(0, 0, 8);
    assert.equal(pages(0).flags & PG_buddy, PG_buddy);
    assert.equal(pages(0).private_, 3);
    const page = allocOrFail(buddy, 0, 1);
    assert.equal(pages(2).private_, 1);
    assert.equal(pages(4).private_, 2);
    buddy.free(page, 1);
    assert.equal(pages(0).private_, 3);
    assert.equal(pages(2).flags & PG_buddy, 0);
    assert.equal(pages(4).flags & PG_buddy, 0);
  });

  it('does not merge across nodes or outside the ranges', () => {
    const buddy = new BuddyAllocator(pageMap());
    buddy.addRange(0, 0, 2);
    buddy.addRange(1, 2, 2);
    assert.deepEqual(buddy.freeBlocks(0).slice(0, 3), [0, 1, 0]);
    assert.deepEqual(buddy.freeBlocks(1).slice(0, 3), [0, 1, 0]);
    const page = allocOrFail(buddy, 0, 0);
    buddy.free(page, 0);
    buddy.drainPcp();
    assert.deepEqual(buddy.freeBlocks(0).slice(0, 3), [0, 1, 0]);
    assert.throws(() => buddy.addRange(0, 3, 4), RangeError, 'overlapping range');
  });

  it('keeps freed order-0 pages on a pcp list: reused first, invisible to buddyinfo, drained on demand', () => {
    const buddy = allocator(0, 1024);
    const a = allocOrFail(buddy, 0, 0);
    const blocks = buddy.freeBlocks(0);
    buddy.free(a, 0);
    assert.equal(buddy.pcpPages(0), 1);
    assert.equal(buddy.freePages(0), 1024, 'pcp pages count as free');
    assert.deepEqual(buddy.freeBlocks(0), blocks, 'no merge while on the pcp list');
    const again = allocOrFail(buddy, 0, 0);
    assert.equal(again.pfn, a.pfn, 'the pcp page is reused first');
    // Free more than PCP_HIGH pages: the list keeps PCP_HIGH, the rest go back to the buddy lists.
    const held: Page[] = [again];
    for (let i = 0; i < PCP_HIGH + 10; i++) held.push(allocOrFail(buddy, 0, 0));
    for (const p of held) buddy.free(p, 0);
    assert.equal(buddy.pcpPages(0), PCP_HIGH);
    assert.equal(buddy.freePages(0), 1024);
    buddy.drainPcp();
    assert.equal(buddy.pcpPages(0), 0);
    assert.deepEqual(buddy.freeBlocks(0), maximalBlocks(0, 1024), 'drained pages merge back');
  });

  it('drains the pcp lists when a request would otherwise fail', () => {
    const buddy = allocator(0, 16);
    const pages: Page[] = [];
    for (let i = 0; i < 16; i++) pages.push(allocOrFail(buddy, 0, 0));
    for (const p of pages) buddy.free(p, 0);
    assert.equal(buddy.pcpPages(0), 16);
    const block = buddy.allocOrder(0, 4, true);
    assert.notEqual(block, null, 'order 4 fits after the drain merges the 16 pages');
    assert.equal(buddy.pcpPages(0), 0);
  });

  it('merges adjacent ranges of the same node', () => {
    const buddy = new BuddyAllocator(pageMap());
    buddy.addRange(0, 0, 512);
    buddy.addRange(0, 512, 512);
    assert.deepEqual(buddy.freeBlocks(0), maximalBlocks(0, 1024));
  });

  it('prefers the requested node and falls back by distance unless thisNode', () => {
    const buddy = new BuddyAllocator(pageMap());
    buddy.addRange(0, 0, 4);
    buddy.addRange(1, 1024, 4);
    buddy.addRange(2, 2048, 4);
    assert.equal(allocOrFail(buddy, 1, 2).pfn, 1024);
    // Node 1 is empty: node 0 and node 2 are equally far, the lower id wins.
    assert.equal(allocOrFail(buddy, 1, 2).pfn, 0);
    assert.equal(buddy.allocOrder(0, 0, true), null);
    assert.equal(allocOrFail(buddy, 0, 0).pfn, 2048);
    assert.equal(buddy.freePages(2), 3);
  });

  it('on two nodes, exhausting node 0 spills to node 1 unless thisNode', () => {
    const buddy = new BuddyAllocator(pageMap());
    buddy.addRange(0, 0, 1024);
    buddy.addRange(1, 4096, 1024);
    allocOrFail(buddy, 0, 10);
    assert.equal(buddy.allocOrder(0, 0, true), null);
    const page = allocOrFail(buddy, 0, 0, false);
    assert.ok(page.pfn >= 4096 && page.pfn < 5120);
    assert.equal(buddy.freePages(1), 1023);
  });

  it('returns null for order > MAX_PAGE_ORDER and when memory is short', () => {
    const buddy = allocator(0, 4096);
    assert.equal(buddy.allocOrder(0, 11, false), null);
    assert.equal(allocator(0, 1023).allocOrder(0, 10, false), null);
    assert.equal(buddy.allocOrder(5, 0, true), null, 'a node without memory');
    assert.throws(() => buddy.allocOrder(0, -1, false), RangeError);
  });

  it('refuses a double free, a wrong-order free and a free of a tail page', () => {
    const pages = pageMap();
    const buddy = new BuddyAllocator(pages);
    buddy.addRange(0, 0, 64);
    const page = allocOrFail(buddy, 0, 2);
    assert.throws(() => buddy.free(page, 1), /different order/);
    assert.throws(() => buddy.free(pages(page.pfn + 1), 0), /not allocated/);
    buddy.free(page, 2);
    assert.throws(() => buddy.free(page, 2), /not allocated/);
    assert.equal(buddy.freePages(0), 64);
    assert.deepEqual(buddy.freeBlocks(0), maximalBlocks(0, 64));
  });

  it('works with pfns above 2^32', () => {
    const start = 2 ** 36 + 3;
    const buddy = allocator(start, 3000);
    const page = allocOrFail(buddy, 0, 10);
    assert.equal(page.pfn % 1024, 0);
    buddy.free(page, 10);
    assert.deepEqual(buddy.freeBlocks(0), maximalBlocks(start, 3000));
  });

  it('keeps its invariants under random alloc/free sequences', () => {
    const op = fc.oneof(
      fc.record({ kind: fc.constant('alloc' as const), nid: fc.nat(1), order: fc.nat(11), thisNode: fc.boolean() }),
      fc.record({ kind: fc.constant('free' as const), index: fc.nat() }),
    );
    const layout = fc.record({ start: fc.nat(5000), count0: fc.integer({ min: 1, max: 3000 }), count1: fc.nat(3000) });
    fc.assert(
      fc.property(layout, fc.array(op, { maxLength: 300 }), ({ start, count0, count1 }, ops) => {
        const buddy = new BuddyAllocator(pageMap());
        buddy.addRange(0, start, count0);
        const start1 = start + count0 + 7;
        buddy.addRange(1, start1, count1);
        const initial = [buddy.freeBlocks(0), buddy.freeBlocks(1)];
        const total = count0 + count1;
        const live = new Map<number, { page: Page; order: number }>();
        let allocatedPages = 0;
        for (const o of ops) {
          if (o.kind === 'alloc') {
            const page = buddy.allocOrder(o.nid, o.order, o.thisNode);
            if (page === null) continue;
            assert.ok(o.order <= MAX_PAGE_ORDER);
            assert.equal(page.pfn % 2 ** o.order, 0);
            const node = page.pfn >= start1 ? 1 : 0;
            assert.ok(!o.thisNode || node === o.nid, `thisNode allocation on node ${node}`);
            for (const { page: other, order } of live.values()) {
              const disjoint = page.pfn + 2 ** o.order <= other.pfn || other.pfn + 2 ** order <= page.pfn;
              assert.ok(disjoint, `block ${page.pfn}/${o.order} overlaps ${other.pfn}/${order}`);
            }
            live.set(page.pfn, { page, order: o.order });
            allocatedPages += 2 ** o.order;
          } else if (live.size > 0) {
            const keys = [...live.keys()];
            const key = keys[o.index % keys.length] ?? 0;
            const block = live.get(key);
            assert.ok(block);
            buddy.free(block.page, block.order);
            live.delete(key);
            allocatedPages -= 2 ** block.order;
          }
          assert.equal(buddy.freePages(0) + buddy.freePages(1) + allocatedPages, total);
        }
        for (const { page, order } of live.values()) buddy.free(page, order);
        buddy.drainPcp();
        assert.deepEqual([buddy.freeBlocks(0), buddy.freeBlocks(1)], initial);
        assert.deepEqual(initial, [maximalBlocks(start, count0), maximalBlocks(start1, count1)]);
      }),
      { numRuns: 200 },
    );
  });
});
