// lib/scatterlist.c helpers: one-entry lists over kernel buffers, sg_virt, sg_last, sg_nents_for_len,
// the page-by-page mapping iterator (sg_miter_*) and the copies built on it, and for_each_sg's break.

import assert from 'node:assert/strict';
import { Machine } from '../lib/mm/machine';
import { GFP_KERNEL, NUMA_NO_NODE, PAGE_SIZE } from '../lib/mm/gfp';
import type { Page } from '../lib/mm/page';
import { EINVAL } from '../lib/dma/constants';
import {
  Scatterlist, SgTable, for_each_sg, sg_alloc_table, sg_free_table, sg_is_last, sg_next, sg_page, sg_set_page,
} from '../lib/dma/scatterlist';
import { sg_alloc_table_from_pages } from '../lib/dma/sg_pages';
import {
  SG_MITER_FROM_SG, SgMappingIter, sg_copy_from_buffer, sg_copy_to_buffer, sg_init_one, sg_last, sg_miter_next, sg_miter_skip,
  sg_miter_start, sg_miter_stop, sg_nents_for_len, sg_pcopy_from_buffer, sg_pcopy_to_buffer, sg_set_buf, sg_virt,
} from '../lib/dma/sg_helpers';
import { SgAppendTable, sg_alloc_append_table_from_pages, sg_free_append_table } from '../lib/dma/sg_pages';
import { SG_MAX_SINGLE_ALLOC, sgFaultInjection, sg_nents } from '../lib/dma/scatterlist';
import { sg_alloc_table_from_pages_segment } from '../lib/dma/sg_pages';
import { EINVAL as EINVAL_, ENOMEM } from '../lib/dma/constants';
import { expectNoLeaks } from './helpers/leaks';

const UINT_MAX = 0xffff_ffff;

/** [pfn, offset, length] of every entry of a table, following chain links. */
function entries(sgt: SgTable): [number, number, number][] {
  const out: [number, number, number][] = [];
  for_each_sg(sgt.sgl, sgt.nents, (sg) => void out.push([sg_page(sg)!.pfn, sg.offset, sg.length]));
  return out;
}

/** Warnings emitted while fn runs (the kernel's WARN_ONs are process warnings with code KERNEL_WARN). */
async function warningsOf(fn: () => void): Promise<string[]> {
  const seen: string[] = [];
  const on = (w: Error & { code?: string }): void => void (w.code === 'KERNEL_WARN' && seen.push(w.message));
  process.on('warning', on);
  try {
    fn();
    await new Promise((r) => setImmediate(r));
  } finally {
    process.off('warning', on);
  }
  return seen;
}

const MiB = 1 << 20;

describe('66 scatterlist helpers over kernel memory', () => {
  expectNoLeaks();
  let m: Machine;
  beforeEach(() => { m = new Machine({ name: 'm66', ramPerNode: 4 * MiB, cmaSize: 0, hugepages: 'off', emitWarnings: false }); });
  afterEach(() => m.destroy());

  /** `n` pages no two of which are physically adjacent. */
  function scattered(n: number): Page[] {
    const all = Array.from({ length: 2 * n }, () => m.alloc_pages_node(NUMA_NO_NODE, GFP_KERNEL, 0)!);
    for (const p of all.filter((_, i) => i % 2 === 1)) m.__free_pages(p, 0);
    return all.filter((_, i) => i % 2 === 0);
  }

  it('sg_init_one / sg_set_buf point an end-marked entry at a buffer; sg_virt gives the address back', () => {
    const block = m.alloc_pages_node(NUMA_NO_NODE, GFP_KERNEL, 1)!;
    const buf = m.page_address(block) + 100;
    const sg = new Scatterlist();
    sg.offset = 7;
    sg.dma_length = 9;
    sg_init_one(sg, buf, 5000);
    assert.equal(sg_page(sg), block);
    assert.equal(sg.offset, 100);
    assert.equal(sg.length, 5000);
    assert.equal(sg.dma_length, 0, 'zeroed first');
    assert.equal(sg_is_last(sg), true);
    assert.equal(sg_virt(sg), buf);
    sg_set_buf(sg, buf + PAGE_SIZE, 10);
    assert.equal(sg_page(sg), m.pfn_to_page(block.pfn + 1));
    assert.equal(sg.offset, 100);
    const v = m.vmalloc(PAGE_SIZE)!;
    assert.throws(() => sg_set_buf(sg, v, 10), RangeError, 'vmalloc memory has no linear-map page');
    assert.throws(() => sg_init_one(sg, buf, 2 ** 32), RangeError);
    assert.throws(() => sg_virt(new Scatterlist()), TypeError);
    m.vfree(v);
    m.__free_pages(block, 1);
  });

  it('sg_last walks to the end mark (a kernel BUG short of it); sg_nents_for_len counts entries', () => {
    const t = new SgTable();
    assert.equal(sg_alloc_table(t, 5, GFP_KERNEL), 0);
    const lengths = [4096, 100, 8192, 1, 1];
    let sg: Scatterlist | null = t.sgl;
    for (const len of lengths) { sg_set_page(sg!, null, len, 0); sg = sg_next(sg!); }
    const last = sg_last(t.sgl!, 5);
    assert.equal(sg_is_last(last), true);
    assert.equal(last.index, 4);
    assert.throws(() => sg_last(t.sgl!, 3), /kernel BUG at lib\/scatterlist.c: sg_last/);
    assert.equal(sg_nents_for_len(t.sgl, 0), 0);
    assert.equal(sg_nents_for_len(t.sgl, 1), 1);
    assert.equal(sg_nents_for_len(t.sgl, 4096), 1);
    assert.equal(sg_nents_for_len(t.sgl, 4097), 2);
    assert.equal(sg_nents_for_len(t.sgl, 4196), 2);
    assert.equal(sg_nents_for_len(t.sgl, 4197), 3);
    assert.equal(sg_nents_for_len(t.sgl, 12390), 5);
    assert.equal(sg_nents_for_len(t.sgl, 12391), -EINVAL);
    sg_free_table(t);
  });

  it('sg_miter hands out page-sized pieces, honours a lower consumed, and skips', () => {
    const pages = scattered(3);
    const t = new SgTable();
    assert.equal(sg_alloc_table_from_pages(t, pages, 3, 100, 3 * PAGE_SIZE - 200, GFP_KERNEL), 0);
    assert.equal(t.orig_nents, 3);
    const miter = new SgMappingIter();
    sg_miter_start(miter, t.sgl, 3, SG_MITER_FROM_SG);
    const pieces: [number, number][] = [];
    while (sg_miter_next(miter)) pieces.push([miter.addr, miter.length]);
    assert.deepEqual(pieces, [
      [m.page_address(pages[0]!) + 100, PAGE_SIZE - 100],
      [m.page_address(pages[1]!), PAGE_SIZE],
      [m.page_address(pages[2]!), PAGE_SIZE - 100],
    ]);
    sg_miter_start(miter, t.sgl, 3, SG_MITER_FROM_SG);
    assert.equal(sg_miter_next(miter), true);
    miter.consumed = 1000;
    assert.equal(sg_miter_next(miter), true);
    assert.deepEqual([miter.addr, miter.length], [m.page_address(pages[0]!) + 1100, PAGE_SIZE - 1100], 'the rest of the first piece');
    miter.consumed = miter.length + 1;
    assert.throws(() => sg_miter_stop(miter), RangeError, 'consumed beyond the piece');
    miter.consumed = miter.length;
    sg_miter_stop(miter);
    sg_miter_start(miter, t.sgl, 3, SG_MITER_FROM_SG);
    assert.equal(sg_miter_skip(miter, 5000), true);
    assert.equal(sg_miter_next(miter), true);
    assert.deepEqual([miter.addr, miter.length], [m.page_address(pages[1]!) + 1004, PAGE_SIZE - 1004], "3996 bytes of page 0, then 1004 of page 1");
    assert.equal(sg_miter_skip(miter, 1e6), false, 'past the end');
    assert.throws(() => sg_miter_next(new SgMappingIter()), /not started/);
    sg_free_table(t);
    for (const p of pages) m.__free_pages(p, 0);
    // One entry over three consecutive pages: pieces still end at page ends.
    const block = m.alloc_pages_node(NUMA_NO_NODE, GFP_KERNEL, 2)!;
    const run = [0, 1, 2].map((i) => m.pfn_to_page(block.pfn + i));
    const one = new SgTable();
    assert.equal(sg_alloc_table_from_pages(one, run, 3, 100, 3 * PAGE_SIZE - 200, GFP_KERNEL), 0);
    assert.equal(one.orig_nents, 1);
    sg_miter_start(miter, one.sgl, 1, SG_MITER_FROM_SG);
    const inOne: [number, number][] = [];
    while (sg_miter_next(miter)) inOne.push([miter.addr - m.page_address(block), miter.length]);
    assert.deepEqual(inOne, [[100, PAGE_SIZE - 100], [PAGE_SIZE, PAGE_SIZE], [2 * PAGE_SIZE, PAGE_SIZE - 100]]);
    sg_free_table(one);
    m.__free_pages(block, 2);
  });

  it('sg_copy_{from,to}_buffer move bytes through scattered pages; the p- variants skip', () => {
    const pages = scattered(4);
    const t = new SgTable();
    const size = 4 * PAGE_SIZE - 300;
    assert.equal(sg_alloc_table_from_pages(t, pages, 4, 300, size, GFP_KERNEL), 0);
    const src = Buffer.alloc(size);
    for (let i = 0; i < size; i++) src[i] = (i * 7) & 0xff;
    assert.equal(sg_copy_from_buffer(t.sgl, t.orig_nents, src, size), size);
    assert.equal(m.view(m.page_address(pages[1]!), 1)[0], src[PAGE_SIZE - 300], 'page 1 starts where page 0 ended');
    const back = Buffer.alloc(size + 50);
    assert.equal(sg_copy_to_buffer(t.sgl, t.orig_nents, back, back.length), size, 'only what the list holds');
    assert.equal(back.subarray(0, size).equals(src), true);
    const part = Buffer.alloc(10);
    assert.equal(sg_pcopy_to_buffer(t.sgl, t.orig_nents, part, 10, 5000), 10);
    assert.equal(part.equals(src.subarray(5000, 5010)), true);
    assert.equal(sg_pcopy_from_buffer(t.sgl, t.orig_nents, Buffer.from([1, 2, 3]), 3, size - 2), 2, 'two bytes fit before the end');
    assert.equal(sg_pcopy_to_buffer(t.sgl, t.orig_nents, part, 10, size + 1), 0, 'a skip past the end copies nothing');
    assert.throws(() => sg_copy_to_buffer(t.sgl, 4, 'x' as unknown as Uint8Array, 1), TypeError);
    assert.throws(() => sg_copy_to_buffer(t.sgl, 4, part, 11), RangeError, 'buflen beyond the buffer');
    sg_free_table(t);
    for (const p of pages) m.__free_pages(p, 0);
  });

  it('for_each_sg stops when the callback returns false (the loop\'s break)', () => {
    const t = new SgTable();
    assert.equal(sg_alloc_table(t, 6, GFP_KERNEL), 0);
    const seen: number[] = [];
    for_each_sg(t.sgl, 6, (_sg, i) => { seen.push(i); return i < 2; });
    assert.deepEqual(seen, [0, 1, 2]);
    sg_free_table(t);
  });

  describe('sg_alloc_append_table_from_pages / sg_free_append_table', () => {
    /** The pages of one physically contiguous block of 2^order pages. */
    function run(order: number): Page[] {
      const head = m.alloc_pages_node(NUMA_NO_NODE, GFP_KERNEL, order)!;
      return Array.from({ length: 1 << order }, (_, i) => m.pfn_to_page(head.pfn + i));
    }

    it('pages that continue the last entry merge into it across calls; left_pages 0 ends the list', () => {
      const pages = run(3);
      const t = new SgAppendTable();
      assert.equal(sg_alloc_append_table_from_pages(t, pages.slice(0, 3), 3, 0, 3 * PAGE_SIZE, UINT_MAX, 5, GFP_KERNEL), 0);
      // Chunks are sized for the pages still to come: 1 + 5.
      assert.equal(t.total_nents, 6);
      assert.equal(sg_is_last(t.prv!), false);
      assert.equal(sg_alloc_append_table_from_pages(t, pages.slice(3), 5, 0, 5 * PAGE_SIZE, UINT_MAX, 0, GFP_KERNEL), 0);
      assert.deepEqual(entries(t.sgt), [[pages[0]!.pfn, 0, 8 * PAGE_SIZE]]);
      assert.equal(t.sgt.nents, 1);
      assert.equal(t.sgt.orig_nents, 1);
      assert.equal(sg_is_last(t.sgt.sgl!), true);
      sg_free_append_table(t);
      assert.equal(t.sgt.sgl, null);
      assert.equal(t.prv, null);
      assert.equal(t.total_nents, 0);
    });

    it('merging stops at max_segment, and a gap in the PFNs starts a new entry', () => {
      const a = run(2);
      const gap = m.alloc_pages_node(NUMA_NO_NODE, GFP_KERNEL, 0)!;
      const b = run(1);
      const t = new SgAppendTable();
      assert.equal(sg_alloc_append_table_from_pages(t, a.slice(0, 1), 1, 0, PAGE_SIZE, 2 * PAGE_SIZE + 100, 4, GFP_KERNEL), 0);
      // max_segment is rounded down to 2 pages: the first entry takes one more page, then a new one starts.
      assert.equal(sg_alloc_append_table_from_pages(t, a.slice(1), 3, 0, 3 * PAGE_SIZE, 2 * PAGE_SIZE + 100, 2, GFP_KERNEL), 0);
      assert.equal(sg_alloc_append_table_from_pages(t, b, 2, 0, 2 * PAGE_SIZE, 2 * PAGE_SIZE + 100, 0, GFP_KERNEL), 0);
      const expected: [number, number, number][] = [[a[0]!.pfn, 0, 2 * PAGE_SIZE], [a[2]!.pfn, 0, 2 * PAGE_SIZE]];
      // b continues a only if the allocator placed it right after a (the page in between is `gap`).
      assert.notEqual(b[0]!.pfn, a[3]!.pfn + 1);
      expected.push([b[0]!.pfn, 0, 2 * PAGE_SIZE]);
      assert.deepEqual(entries(t.sgt), expected);
      assert.equal(t.sgt.nents, 3);
      // The first chunk was sized for 5 entries; the last call (left_pages 0) ends the list at the third.
      assert.equal(t.total_nents, 5);
      assert.equal(sg_nents(t.sgt.sgl), 3);
      m.__free_pages(gap, 0);
      sg_free_append_table(t);
    });

    it('hundreds of scattered pages in batches chain new chunks on; the walk gives every page in order', () => {
      const pages = scattered(300);
      const t = new SgAppendTable();
      for (let i = 0; i < 300; i += 50) {
        assert.equal(sg_alloc_append_table_from_pages(t, pages.slice(i, i + 50), 50, 0, 50 * PAGE_SIZE, UINT_MAX, 300 - i - 50, GFP_KERNEL), 0);
      }
      assert.equal(t.sgt.nents, 300);
      assert.deepEqual(entries(t.sgt).map((e) => e[0]), pages.map((p) => p.pfn));
      // Chunks of 128, 128 and the 46 still needed; total_nents counts entries, not the 2 chain links.
      assert.equal(t.total_nents, 300);
      const chunks = new Set<unknown>();
      for_each_sg(t.sgt.sgl, t.sgt.nents, (sg) => void chunks.add(sg.store));
      assert.equal(chunks.size, Math.ceil(300 / (SG_MAX_SINGLE_ALLOC - 1)));
      let last = t.sgt.sgl!;
      for (let sg = sg_next(last); sg !== null; sg = sg_next(sg)) last = sg;
      assert.equal(sg_page(last), pages[299]);
      sg_free_append_table(t);
    });

    it('one call gives what sg_alloc_table_from_pages_segment gives (offset, short size, max_segment)', () => {
      const pages = [...run(2), ...scattered(3), ...run(1)];
      for (const [offset, size, maxSeg] of [[0, pages.length * PAGE_SIZE, UINT_MAX], [100, 5 * PAGE_SIZE + 7, UINT_MAX], [4000, 9 * PAGE_SIZE, 2 * PAGE_SIZE]] as const) {
        const t = new SgAppendTable();
        assert.equal(sg_alloc_append_table_from_pages(t, pages, pages.length, offset, size, maxSeg, 0, GFP_KERNEL), 0);
        const ref = new SgTable();
        assert.equal(sg_alloc_table_from_pages_segment(ref, pages, pages.length, offset, size, maxSeg, GFP_KERNEL), 0);
        assert.deepEqual(entries(t.sgt), entries(ref), `offset ${offset} size ${size} max_segment ${maxSeg}`);
        assert.equal(t.sgt.nents, ref.nents);
        sg_free_append_table(t);
      }
    });

    it('refuses an offset on an append and max_segment < PAGE_SIZE with a warning and -EINVAL, changing nothing', async () => {
      const pages = run(1);
      const t = new SgAppendTable();
      assert.equal(sg_alloc_append_table_from_pages(t, pages.slice(0, 1), 1, 0, PAGE_SIZE, UINT_MAX, 1, GFP_KERNEL), 0);
      let ret = 0;
      assert.equal((await warningsOf(() => { ret = sg_alloc_append_table_from_pages(t, pages.slice(1), 1, 8, PAGE_SIZE, UINT_MAX, 0, GFP_KERNEL); })).length, 1);
      assert.equal(ret, -EINVAL_);
      assert.equal((await warningsOf(() => { ret = sg_alloc_append_table_from_pages(t, pages.slice(1), 1, 0, PAGE_SIZE, PAGE_SIZE - 1, 0, GFP_KERNEL); })).length, 1);
      assert.equal(ret, -EINVAL_);
      assert.equal(sg_alloc_append_table_from_pages(t, pages.slice(1), 0, 0, 0, UINT_MAX, 0, GFP_KERNEL), -EINVAL_);
      assert.deepEqual(entries(t.sgt), [[pages[0]!.pfn, 0, PAGE_SIZE]]);
      assert.throws(() => sg_alloc_append_table_from_pages(t, [{} as Page], 1, 0, PAGE_SIZE, UINT_MAX, 0, GFP_KERNEL), TypeError);
      assert.throws(() => sg_alloc_append_table_from_pages({} as SgAppendTable, pages, 1, 0, PAGE_SIZE, UINT_MAX, 0, GFP_KERNEL), TypeError);
      assert.throws(() => sg_alloc_append_table_from_pages(t, pages, 3, 0, PAGE_SIZE, UINT_MAX, 0, GFP_KERNEL), RangeError);
      const other = new Machine({ name: 'm66b', ramPerNode: 4 * MiB, cmaSize: 0, hugepages: 'off', emitWarnings: false });
      try {
        const foreign = other.alloc_pages_node(NUMA_NO_NODE, GFP_KERNEL, 0)!;
        assert.throws(() => sg_alloc_append_table_from_pages(t, [foreign], 1, 0, PAGE_SIZE, UINT_MAX, 0, GFP_KERNEL), TypeError);
      } finally {
        other.destroy();
      }
      assert.deepEqual(entries(t.sgt), [[pages[0]!.pfn, 0, PAGE_SIZE]]);
      sg_free_append_table(t);
    });

    it('a chunk that cannot be allocated is -ENOMEM with the merged length undone', () => {
      const pages = run(1);
      const spacer = m.alloc_pages_node(NUMA_NO_NODE, GFP_KERNEL, 0)!;
      const far = scattered(2);
      assert.ok(far.every((p) => p.pfn !== pages[1]!.pfn + 1 && p.pfn !== pages[0]!.pfn - 1), 'far pages do not continue the run');
      const t = new SgAppendTable();
      // Room for exactly one entry: the next append must chain a new chunk.
      assert.equal(sg_alloc_append_table_from_pages(t, pages.slice(0, 1), 1, 0, PAGE_SIZE, UINT_MAX, 0, GFP_KERNEL), 0);
      const t2 = new SgAppendTable();
      assert.equal(sg_alloc_append_table_from_pages(t2, pages.slice(0, 1), 1, 0, PAGE_SIZE, UINT_MAX, 3, GFP_KERNEL), 0);
      sgFaultInjection.failAfterChunks = 0;
      try {
        // pages[1] merges into the first entry, then far[] needs two more entries than the chunk has left.
        assert.equal(sg_alloc_append_table_from_pages(t2, [pages[1]!, ...far], 3, 0, 3 * PAGE_SIZE, UINT_MAX, 0, GFP_KERNEL), 0);
        const t3 = new SgAppendTable();
        assert.equal(sg_alloc_append_table_from_pages(t3, pages.slice(0, 1), 1, 0, PAGE_SIZE, UINT_MAX, 1, GFP_KERNEL), -ENOMEM);
      } finally {
        sgFaultInjection.failAfterChunks = null;
      }
      assert.deepEqual(entries(t2.sgt), [[pages[0]!.pfn, 0, 2 * PAGE_SIZE], [far[0]!.pfn, 0, PAGE_SIZE], [far[1]!.pfn, 0, PAGE_SIZE]]);
      const t4 = new SgAppendTable();
      assert.equal(sg_alloc_append_table_from_pages(t4, far.slice(0, 1), 1, 0, PAGE_SIZE, UINT_MAX, 1, GFP_KERNEL), 0);
      // Two slots, one used: after a page merges into the first, two scattered pages need a chunk chained on, and that fails.
      sgFaultInjection.failAfterChunks = 0;
      try {
        assert.equal(sg_alloc_append_table_from_pages(t4, [m.pfn_to_page(far[0]!.pfn + 1), pages[0]!, far[1]!], 3, 0, 3 * PAGE_SIZE, UINT_MAX, 0, GFP_KERNEL), -ENOMEM);
      } finally {
        sgFaultInjection.failAfterChunks = null;
      }
      assert.deepEqual(entries(t4.sgt), [[far[0]!.pfn, 0, PAGE_SIZE]], 'the merged page was taken back out of the last entry');
      // Appending after the list was ended is the kernel's NULL dereference: a BUG here.
      assert.throws(() => sg_alloc_append_table_from_pages(t, far, 2, 0, 2 * PAGE_SIZE, UINT_MAX, 0, GFP_KERNEL), /kernel BUG/);
      for (const x of [t, t2, t4]) sg_free_append_table(x);
      m.__free_pages(spacer, 0);
    });
  });
});
