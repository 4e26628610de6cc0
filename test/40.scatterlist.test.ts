// Scatterlist tables (lib/dma/scatterlist.ts, mirroring lib/scatterlist.c): table shape, chaining,
// the walkers, length truncation, building from pages, and allocation failure.

import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Page, PAGE_CONSTRUCTION_KEY, type PageSegment } from '../lib/mm/page';
import { EINVAL, ENOMEM } from '../lib/dma/constants';
import {
  SG_CHAIN, SG_END, Scatterlist, SgTable, for_each_sg, sgFaultInjection, sgIterate, sg_alloc_table, sg_chain, sg_dma_address, sg_dma_len, sg_free_table, sg_init_table, sg_is_chain, sg_is_last, sg_mark_end, sg_nents, sg_next, sg_page, sg_phys, sg_set_page,
} from '../lib/dma/scatterlist';
import { sg_alloc_table_from_pages, sg_alloc_table_from_pages_segment } from '../lib/dma/sg_pages';

const GFP_KERNEL = 0xcc0;
const segment: PageSegment = { kind: 'ram', nid: 0, startPfn: 0, pages: 1 << 24, fd: -1, mapGranule: 4096 };
const pagesOf = (pfns: readonly number[]): Page[] => pfns.map((pfn) => new Page(pfn, segment, null, PAGE_CONSTRUCTION_KEY));

/** The data entries of each chunk, walking slot by slot like C's `sg + 1` and following links. */
function chunkShape(sgl: Scatterlist | null): number[] {
  const shape: number[] = [];
  let count = 0;
  let sg = sgl;
  while (sg !== null) {
    if (sg_is_chain(sg)) {
      shape.push(count);
      count = 0;
      sg = sg.chain_next;
      continue;
    }
    count++;
    if (sg_is_last(sg)) break;
    sg = new Scatterlist(sg.store, sg.index + 1);
  }
  shape.push(count);
  return shape;
}

function entries(sgt: SgTable): Scatterlist[] {
  const out: Scatterlist[] = [];
  for_each_sg(sgt.sgl, sgt.orig_nents, (sg) => out.push(sg));
  return out;
}

describe('scatterlist', () => {
  afterEach(() => {
    sgFaultInjection.failAfterChunks = null;
  });

  it('one-entry table as dma_common_get_sgtable builds it (case 17)', () => {
    const t = new SgTable();
    assert.equal(sg_alloc_table(t, 1, GFP_KERNEL), 0);
    assert.equal(t.nents, 1);
    assert.equal(t.orig_nents, 1);
    const sg = t.sgl;
    assert.ok(sg !== null);
    const [page] = pagesOf([42]);
    sg_set_page(sg, page ?? null, 8192, 0);
    assert.equal(sg.length, 8192);
    assert.equal(sg.offset, 0);
    assert.equal(sg_page(sg), page);
    assert.ok(sg_is_last(sg));
    assert.ok(!sg_is_chain(sg));
    assert.equal(sg_dma_address(sg), 0n);
    assert.equal(sg_dma_len(sg), 0);
    assert.equal(sg_next(sg), null);
  });

  it('sg_alloc_table(0) is -EINVAL and leaves the table empty (case 54)', () => {
    const t = new SgTable();
    t.nents = 7;
    assert.equal(sg_alloc_table(t, 0, GFP_KERNEL), -EINVAL);
    assert.equal(t.sgl, null);
    assert.equal(t.nents, 0);
    assert.equal(t.orig_nents, 0);
  });

  it('sg_alloc_table(200) chains 127 entries + link, then 73 (case 55)', () => {
    const t = new SgTable();
    assert.equal(sg_alloc_table(t, 200, GFP_KERNEL), 0);
    assert.equal(t.orig_nents, 200);
    assert.equal(t.nents, 200);
    assert.deepEqual(chunkShape(t.sgl), [127, 73]);
    assert.equal(sg_nents(t.sgl), 200);
    const all = entries(t);
    assert.equal(all.length, 200);
    assert.ok(all.every((sg, i) => sg_is_last(sg) === (i === 199)));
    assert.ok(all.every((sg) => !sg_is_chain(sg)));
  });

  it('chunk boundaries: 128 fits one chunk, 129 and 255 chain', () => {
    const shapes = [128, 129, 255, 256, 1000].map((n) => {
      const t = new SgTable();
      assert.equal(sg_alloc_table(t, n, GFP_KERNEL), 0);
      assert.equal(sg_nents(t.sgl), n);
      return chunkShape(t.sgl);
    });
    assert.deepEqual(shapes, [[128], [127, 2], [127, 128], [127, 127, 2], [127, 127, 127, 127, 127, 127, 127, 111]]);
  });

  it('table allocation failure is -ENOMEM with everything freed (case 19)', () => {
    const t = new SgTable();
    sgFaultInjection.failAfterChunks = 0;
    assert.equal(sg_alloc_table(t, 1, GFP_KERNEL), -ENOMEM);
    assert.equal(t.sgl, null);
    assert.equal(t.nents, 0);
    assert.equal(t.orig_nents, 0);

    // Failing on the second chunk of a chained table frees the first one too.
    sgFaultInjection.failAfterChunks = 1;
    assert.equal(sg_alloc_table(t, 200, GFP_KERNEL), -ENOMEM);
    assert.equal(t.sgl, null);
    assert.equal(t.nents, 0);
    assert.equal(t.orig_nents, 0);
    assert.equal(sg_alloc_table(t, 128, GFP_KERNEL), 0, 'a single chunk still fits');
  });

  it('sg_next, for_each_sg and sgIterate walk across chain links and stop at the end', () => {
    const t = new SgTable();
    assert.equal(sg_alloc_table(t, 300, GFP_KERNEL), 0);
    let n = 0;
    for (const [sg, i] of sgIterate(t.sgl, t.orig_nents)) {
      sg.length = i + 1;
      n++;
    }
    assert.equal(n, 300);
    const lengths: number[] = [];
    for_each_sg(t.sgl, 1000, (sg) => lengths.push(sg.length));
    assert.equal(lengths.length, 300, 'the walk ends at the end mark, however many are asked for');
    assert.deepEqual(lengths, Array.from({ length: 300 }, (_, i) => i + 1));

    let last: Scatterlist | null = t.sgl;
    for (let i = 0; i < 299 && last !== null; i++) last = sg_next(last);
    assert.ok(last !== null && sg_is_last(last));
    assert.equal(sg_next(last), null);
    assert.ok(last.sameEntry(entries(t)[299] ?? null));
  });

  it('entry fields write through to the entry, whichever handle is used', () => {
    const t = new SgTable();
    sg_alloc_table(t, 2, GFP_KERNEL);
    const a = t.sgl as Scatterlist;
    a.dma_address = 0x1234_5678_9abcn;
    a.dma_length = 4096;
    const again = new Scatterlist(a.store, a.index);
    assert.equal(sg_dma_address(again), 0x1234_5678_9abcn);
    assert.equal(sg_dma_len(again), 4096);
    assert.notEqual(again, a);
    assert.ok(again.sameEntry(a));
  });

  it('lengths are unsigned ints: 2^32 and above are truncated mod 2^32', () => {
    const sg = new Scatterlist();
    const [page] = pagesOf([1]);
    sg_set_page(sg, page ?? null, 2 ** 32, 0);
    assert.equal(sg.length, 0);
    sg_set_page(sg, page ?? null, 2 ** 32 + 5, 0);
    assert.equal(sg.length, 5);
    sg_set_page(sg, page ?? null, 2 ** 32 - 1, 0);
    assert.equal(sg.length, 0xffff_ffff);
    sg.length = 6 * 2 ** 32 + 4096;
    assert.equal(sg.length, 4096);
  });

  it('sg_set_page keeps the end mark; sg_phys is pfn << 12 + offset', () => {
    const t = new SgTable();
    sg_alloc_table(t, 1, GFP_KERNEL);
    const sg = t.sgl as Scatterlist;
    const [page] = pagesOf([10]);
    sg_set_page(sg, page ?? null, 100, 5);
    assert.ok(sg_is_last(sg));
    assert.equal(sg_phys(sg), 40965n);
    assert.throws(() => sg_phys(new Scatterlist()), TypeError);
  });

  it('sg_init_table + sg_chain link caller-built chunks; sg_mark_end clears a chain mark', () => {
    const a: Scatterlist[] = [];
    const b: Scatterlist[] = [];
    sg_init_table(a, 3);
    sg_init_table(b, 2);
    assert.ok(sg_is_last(a[2] as Scatterlist));
    sg_chain(a, 3, b[0] as Scatterlist);
    assert.equal((a[2] as Scatterlist).link_flags, SG_CHAIN);
    assert.equal(sg_nents(a[0] as Scatterlist), 4);
    assert.deepEqual(chunkShape(a[0] as Scatterlist), [2, 2]);
    sg_mark_end(a[2] as Scatterlist);
    assert.equal((a[2] as Scatterlist).link_flags, SG_END);
  });

  it('sg_free_table empties the table and is safe twice', () => {
    const t = new SgTable();
    sg_alloc_table(t, 5, GFP_KERNEL);
    sg_free_table(t);
    sg_free_table(t);
    assert.equal(t.sgl, null);
    assert.equal(t.nents, 0);
    assert.equal(t.orig_nents, 0);
  });

  describe('sg_alloc_table_from_pages', () => {
    const lengthsOf = (t: SgTable): number[] => entries(t).map((sg) => sg.length);

    it('pfns [10, 11, 12, 20], size 16384 -> 12288 + 4096 (case 56)', () => {
      const t = new SgTable();
      const pages = pagesOf([10, 11, 12, 20]);
      assert.equal(sg_alloc_table_from_pages(t, pages, 4, 0, 16384, GFP_KERNEL), 0);
      assert.equal(t.nents, 2);
      assert.equal(t.orig_nents, 2);
      assert.deepEqual(lengthsOf(t), [12288, 4096]);
      const [first, second] = entries(t);
      assert.equal(first && sg_page(first), pages[0]);
      assert.equal(second && sg_page(second), pages[3]);
      assert.ok(second !== undefined && sg_is_last(second));
    });

    it('the first entry starts at offset and its length excludes it', () => {
      const t = new SgTable();
      assert.equal(sg_alloc_table_from_pages(t, pagesOf([100, 101, 102]), 3, 100, 3 * 4096 - 100 - 50, GFP_KERNEL), 0);
      const [sg] = entries(t);
      assert.equal(t.nents, 1);
      assert.equal(sg?.offset, 100);
      assert.equal(sg?.length, 3 * 4096 - 150);
    });

    it('pages in several runs give one entry per run, offset only on the first', () => {
      const t = new SgTable();
      const pfns = [1, 2, 3, 7, 8, 20, 21, 22, 23, 24];
      const size = pfns.length * 4096 - 512 - 1000;
      assert.equal(sg_alloc_table_from_pages(t, pagesOf(pfns), pfns.length, 512, size, GFP_KERNEL), 0);
      assert.deepEqual(lengthsOf(t), [12288 - 512, 8192, 20480 - 1000]);
      assert.deepEqual(entries(t).map((sg) => sg.offset), [512, 0, 0]);
      assert.deepEqual(entries(t).map((sg) => sg_page(sg)?.pfn), [1, 7, 20]);
    });

    it('adjacent PFNs merge and a gap splits', () => {
      const t = new SgTable();
      assert.equal(sg_alloc_table_from_pages(t, pagesOf([20, 21, 23]), 3, 0, 3 * 4096, GFP_KERNEL), 0);
      assert.deepEqual(lengthsOf(t), [8192, 4096]);
    });

    it('size is an unsigned long counted down by chunks: running out early wraps (kernel quirk)', () => {
      const t = new SgTable();
      assert.equal(sg_alloc_table_from_pages(t, pagesOf([10, 20]), 2, 0, 100, GFP_KERNEL), 0);
      assert.deepEqual(lengthsOf(t), [100, 4096]);
    });

    it('max_segment caps a run (sg_alloc_table_from_pages_segment)', () => {
      const t = new SgTable();
      assert.equal(sg_alloc_table_from_pages_segment(t, pagesOf([5, 6, 7, 8, 9]), 5, 0, 5 * 4096, 8192 + 100, GFP_KERNEL), 0);
      assert.deepEqual(lengthsOf(t), [8192, 8192, 4096]);
    });

    it('chains past 128 entries like sg_alloc_table', () => {
      const t = new SgTable();
      const pfns = Array.from({ length: 300 }, (_, i) => i * 2);
      assert.equal(sg_alloc_table_from_pages(t, pagesOf(pfns), 300, 0, 300 * 4096, GFP_KERNEL), 0);
      assert.equal(t.orig_nents, 300);
      assert.deepEqual(chunkShape(t.sgl), [127, 127, 46]);
      assert.deepEqual(entries(t).map((sg) => sg_page(sg)?.pfn), pfns);
    });

    it('n_pages 0 is -EINVAL; allocation failure is -ENOMEM and leaves sgt untouched', () => {
      const t = new SgTable();
      assert.equal(sg_alloc_table_from_pages(t, [], 0, 0, 0, GFP_KERNEL), -EINVAL);
      sg_alloc_table(t, 3, GFP_KERNEL);
      const before = t.sgl;
      sgFaultInjection.failAfterChunks = 0;
      assert.equal(sg_alloc_table_from_pages(t, pagesOf([1, 2]), 2, 0, 8192, GFP_KERNEL), -ENOMEM);
      assert.equal(t.sgl, before);
      assert.equal(t.orig_nents, 3);
    });

    it('property: lengths sum to size and neighbouring entries are never PFN-contiguous', () => {
      fc.assert(
        fc.property(
          fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 1, maxLength: 400 }),
          fc.integer({ min: 0, max: 4095 }),
          fc.integer({ min: 0, max: 1 << 20 }),
          (gaps, offset, rawSlack) => {
            const pfns: number[] = [];
            let pfn = 1000;
            for (const gap of gaps) pfns.push((pfn += gap));
            const n = pfns.length;
            // Short of the full buffer by less than its last page, as real buffers are.
            const size = n * 4096 - offset - (rawSlack % Math.min(4096, n * 4096 - offset));
            const t = new SgTable();
            assert.equal(sg_alloc_table_from_pages(t, pagesOf(pfns), n, offset, size, GFP_KERNEL), 0);
            const sgs = entries(t);
            assert.equal(sgs.length, t.orig_nents);
            assert.equal(sgs.reduce((sum, sg) => sum + sg.length, 0), size);
            assert.equal(sgs[0]?.offset, offset);
            for (let i = 0; i + 1 < sgs.length; i++) {
              const cur = sgs[i] as Scatterlist;
              const next = sgs[i + 1] as Scatterlist;
              const pagesInEntry = (cur.offset + cur.length) / 4096;
              assert.ok(Number.isInteger(pagesInEntry), 'all but the last entry end on a page boundary');
              assert.notEqual(sg_page(next)?.pfn, (sg_page(cur)?.pfn ?? 0) + pagesInEntry);
            }
          },
        ),
        { numRuns: 300 },
      );
    });
  });
});
