// The IOVA allocator (lib/dma/iova.ts) against a model of what iova.c guarantees, over random
// alloc/free sequences with limits that are not 2^n - 1: ranges never overlap, stay inside
// [start_pfn, limit], have the rounded size and are aligned to it; a request fails (0) only when
// no aligned free slot exists below its limit; the counters and allocatedRanges() tell the truth.

import assert from 'node:assert/strict';
import fc from 'fast-check';
import { IovaDomain } from '../lib/dma/iova';

const pow2ceil = (n: number): number => (n <= 1 ? 1 : 2 ** Math.ceil(Math.log2(n)));
/** iova.c: below 2^(6-1) pages the size is rounded up to a power of two; alignment is always one. */
const roundedSize = (pages: number): number => (pages < 32 ? pow2ceil(pages) : pages);

function overlaps(live: Map<number, number>, pfn: number, size: number): boolean {
  for (const [lo, sz] of live) if (pfn < lo + sz && lo < pfn + size) return true;
  return false;
}

/** Whether some aligned slot of `size` pages lies in [start, limit] clear of every live range. */
function slotExists(live: Map<number, number>, start: number, limit: number, size: number): boolean {
  const align = pow2ceil(size);
  for (let pfn = Math.floor((limit + 1 - size) / align) * align; pfn >= start; pfn -= align) {
    if (!overlaps(live, pfn, size)) return true;
  }
  return false;
}

describe('53 the IOVA allocator against its model', () => {
  // A roomy space (255 pages) and a cramped one (63), where fragmentation sends most requests down
  // the slow path's gap search.
  for (const [end, maxPages] of [[255, 40], [63, 20]] as const) it(`random alloc/free sequences keep every guarantee (${end + 1} pages)`, () => {
    const op = fc.oneof(
      { weight: 3, arbitrary: fc.record({ kind: fc.constant('alloc' as const), pages: fc.integer({ min: 1, max: maxPages }), limit: fc.integer({ min: 0, max: end + 45 }) }) },
      { weight: 2, arbitrary: fc.record({ kind: fc.constant('free' as const), index: fc.nat() }) },
    );
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 8 }), fc.array(op, { maxLength: 120 }), (start, ops) => {
        const counters = { iovaAllocated: 0 };
        const iovad = new IovaDomain(start, end, counters, () => {});
        const live = new Map<number, number>();
        for (const o of ops) {
          if (o.kind === 'alloc') {
            const limit = Math.min(end, o.limit);
            const size = roundedSize(o.pages);
            const before = new Map(live);
            const pfn = iovad.alloc_iova(o.pages, limit);
            if (pfn === 0) {
              assert.equal(slotExists(before, start, limit, size), false, `alloc(${o.pages}, limit ${limit}) failed with room left`);
              continue;
            }
            assert.ok(pfn >= start && pfn + size - 1 <= limit, `[${pfn}, +${size}) inside [${start}, ${limit}]`);
            assert.equal(pfn % pow2ceil(size), 0, 'size aligned');
            assert.equal(overlaps(before, pfn, size), false, 'no overlap with a live range');
            live.set(pfn, size);
          } else {
            const entries = [...live];
            if (entries.length === 0) {
              assert.equal(iovad.free_iova(start + 1000), false, 'a free of nothing is refused');
              continue;
            }
            const [pfn] = entries[o.index % entries.length]!;
            assert.equal(iovad.free_iova(pfn), true);
            assert.equal(iovad.free_iova(pfn), false, 'a second free of the same range is refused');
            live.delete(pfn);
          }
          assert.equal(counters.iovaAllocated, [...live.values()].reduce((a, b) => a + b, 0));
          assert.deepEqual(new Map(iovad.allocatedRanges()), live);
        }
      }),
      { numRuns: 300 },
    );
  });

  it('the slow path drains the flush queue before it searches', () => {
    const counters = { iovaAllocated: 0 };
    let drains = 0;
    const iovad = new IovaDomain(1, 7, counters, () => { drains++; });
    assert.equal(iovad.alloc_iova(4, 7), 4);
    assert.equal(drains, 0, 'the fast path does not drain');
    assert.equal(iovad.alloc_iova(8, 7), 0, 'no room for 8 pages');
    assert.equal(drains, 1);
  });
});
