// Tables from pages (lib/scatterlist.c): struct sg_append_table, built a batch of pages at a time as
// pin_user_pages hands them out (RDMA's ib_umem, vfio), and sg_alloc_table_from_pages(_segment),
// which are one append to an empty table. Runs of consecutive PFNs merge into one entry; a batch
// merges into the previous last entry when its pages continue it; chunks are chained on as needed.

import { PAGE_SIZE, type gfp_t } from '../mm/gfp';
import { Page } from '../mm/page';
import { checkGfp, checkInt, checkSameMachine, checkSize, describeValue } from '../mm/validate';
import { EINVAL, ENOMEM } from './constants';
import {
  __sg_chain,
  checkTable,
  Scatterlist,
  SG_MAX_SINGLE_ALLOC,
  sg_is_last,
  sg_mark_end,
  sg_next,
  sg_phys,
  sg_set_page,
  sgFaultInjection,
  SgStore,
  SgTable,
  SG_END,
} from './scatterlist';

const UINT_MAX = 0xffff_ffff;

/** struct sg_append_table: the table, its last filled entry, and the entries allocated in all. */
export class SgAppendTable {
  readonly sgt = new SgTable();
  /** The last entry filled so far (the kernel's prv), null before the first append. */
  prv: Scatterlist | null = null;
  /** Entries allocated, chain links included. */
  total_nents = 0;
}

function checkAppendTable(fn: string, t: unknown): asserts t is SgAppendTable {
  if (!(t instanceof SgAppendTable)) throw new TypeError(`${fn}: Expected an SgAppendTable (new SgAppendTable()) for sgt_append but received ${describeValue(t)}`);
  if (t.prv !== null && !(t.prv instanceof Scatterlist)) throw new TypeError(`${fn}: Expected a Scatterlist or null for sgt_append.prv but received ${describeValue(t.prv)}`);
  checkInt(fn, 'sgt_append.total_nents', t.total_nents, 0, UINT_MAX);
}

/** A chunk of `n` entries as sg_init_table leaves it: zeroed, the last one end-marked. */
function sg_kmalloc_chunk(n: number): Scatterlist {
  const store = new SgStore(n);
  store.flags[n - 1] = SG_END;
  return new Scatterlist(store, 0);
}

/**
 * get_next_sg: the entry after `cur`, or a new chunk of min(needed, SG_MAX_SINGLE_ALLOC) entries
 * chained on at cur's end-marked successor when more than one entry is still needed. null when the
 * chunk cannot be allocated (fault injection: `allocations` counts this call's chunks).
 */
function get_next_sg(table: SgAppendTable, cur: Scatterlist | null, needed: number, allocations: { n: number }): Scatterlist | null {
  let next: Scatterlist | null = null;
  if (cur !== null) {
    next = sg_next(cur);
    // The kernel dereferences sg_next's NULL here: an append after the list was ended
    // (left_pages said no more would come).
    if (next === null) throw new Error('kernel BUG: sg_alloc_append_table_from_pages: appending after the end-marked entry (an earlier call passed left_pages 0, or too few)');
    if (!sg_is_last(next) || needed === 1) return next;
  }
  const fail = sgFaultInjection.failAfterChunks;
  if (fail !== null && allocations.n >= fail) return null;
  allocations.n++;
  const size = Math.min(needed, SG_MAX_SINGLE_ALLOC);
  const chunk = sg_kmalloc_chunk(size);
  if (next !== null) {
    table.total_nents += size - 1;
    __sg_chain(next.store, next.index, chunk);
  } else {
    table.sgt.sgl = chunk;
    table.total_nents = size;
  }
  return chunk;
}

/**
 * sg_alloc_append_table_from_pages: append `n_pages` pages to the table, the first `offset` bytes
 * in and `size` bytes long, merging runs of consecutive PFNs into entries of at most `max_segment`
 * (rounded down to a page). Pages that continue the previous last entry are merged into it first
 * (whole pages: `offset` must then be 0). `left_pages` says how many pages later calls will still
 * append: chunks are sized for them, and with 0 the last entry is end-marked. nents and orig_nents
 * count the entries filled.
 * @returns 0; -EINVAL (with a warning) when max_segment < PAGE_SIZE or offset is not 0 on an
 *   append; -EINVAL when n_pages is 0 (the kernel reads past the array); -ENOMEM when a chunk cannot
 *   be allocated, with the previous last entry's length restored (chunks already chained stay, as
 *   in the kernel; sg_free_append_table frees them).
 * @example sg_alloc_append_table_from_pages(t, pages, 4, 0, 4 * PAGE_SIZE, UINT_MAX, 8, GFP_KERNEL)
 */
export function sg_alloc_append_table_from_pages(
  sgt_append: SgAppendTable,
  pages: readonly Page[],
  n_pages: number,
  offset: number,
  size: number,
  max_segment: number,
  left_pages: number,
  gfp: gfp_t,
): number {
  const fn = 'sg_alloc_append_table_from_pages';
  checkAppendTable(fn, sgt_append);
  if (!Array.isArray(pages)) throw new TypeError(`${fn}: Expected an array of pages for pages but received ${describeValue(pages)}`);
  checkInt(fn, 'n_pages', n_pages, 0, UINT_MAX);
  checkInt(fn, 'offset', offset, 0, UINT_MAX);
  checkSize(fn, 'size', size);
  checkInt(fn, 'max_segment', max_segment, 0, UINT_MAX);
  checkInt(fn, 'left_pages', left_pages, 0, UINT_MAX);
  checkGfp(fn, gfp);
  if (n_pages > pages.length) throw new RangeError(`${fn}: Expected 0..${pages.length} for n_pages but received ${n_pages}`);
  checkPages(fn, pages, n_pages, sgt_append.prv?.page_link?.machine);
  return appendPages(sgt_append, pages, n_pages, offset, size, max_segment, left_pages);
}

/** Every page a struct page, all of one machine (a table never mixes machines): TypeErrors. */
function checkPages(fn: string, pages: readonly unknown[], n_pages: number, machine: unknown): void {
  let ours = machine ?? (pages[0] instanceof Page ? pages[0].machine : undefined);
  for (let i = 0; i < n_pages; i++) {
    const p = pages[i];
    if (!(p instanceof Page)) throw new TypeError(`${fn}: Expected a struct page (Page) for pages[${i}] but received ${describeValue(p)}`);
    ours ??= p.machine;
    if (p.machine !== ours) checkSameMachine(fn, `pages[${i}]`, p.machine, ours);
  }
}

/** sg_alloc_append_table_from_pages on validated arguments. */
function appendPages(
  sgt_append: SgAppendTable,
  pages: readonly Page[],
  n_pages: number,
  offset: number,
  size: number,
  max_segment: number,
  left_pages: number,
): number {
  const fn = 'sg_alloc_append_table_from_pages';
  const prv = sgt_append.prv;
  // The algorithm below needs max_segment page-aligned, or it can overshoot.
  const maxSegment = Math.floor(max_segment / PAGE_SIZE) * PAGE_SIZE;
  if (maxSegment < PAGE_SIZE) {
    process.emitWarning(`${fn}: max_segment < PAGE_SIZE`, { code: 'KERNEL_WARN' });
    return -EINVAL;
  }
  if (prv !== null && offset !== 0) {
    process.emitWarning(`${fn}: offset ${offset} when appending (WARN_ON(offset))`, { code: 'KERNEL_WARN' });
    return -EINVAL;
  }
  if (n_pages === 0) return -EINVAL;

  let first = 0;
  let prvLen = 0;
  if (prv !== null) {
    // Merge pages that continue the previous last entry, whole pages at a time.
    prvLen = prv.length;
    const nextPfn = Number((sg_phys(prv) + BigInt(prv.length)) / BigInt(PAGE_SIZE));
    if ((pages[0] as Page).pfn === nextPfn) {
      let lastPfn = nextPfn - 1;
      while (first < n_pages && (pages[first] as Page).pfn === lastPfn + 1) {
        if (prv.length + PAGE_SIZE > maxSegment) break;
        prv.length += PAGE_SIZE;
        lastPfn = (pages[first] as Page).pfn;
        first++;
      }
      if (first === n_pages) {
        if (left_pages === 0) sg_mark_end(prv);
        return 0;
      }
    }
  }

  // Count the chunks of the rest (a chunk ends once it holds max_segment bytes or the PFNs jump).
  let chunks = 1;
  let segLen = 0;
  for (let i = first + 1; i < n_pages; i++) {
    segLen += PAGE_SIZE;
    if (segLen >= maxSegment || (pages[i] as Page).pfn !== (pages[i - 1] as Page).pfn + 1) {
      chunks++;
      segLen = 0;
    }
  }

  const allocations = { n: 0 };
  let s = prv;
  let added = 0;
  let cur = first;
  let sizeWrapped = false;
  let off = offset;
  for (let i = 0; i < chunks; i++) {
    let j = cur + 1;
    segLen = 0;
    for (; j < n_pages; j++) {
      segLen += PAGE_SIZE;
      if (segLen >= maxSegment || (pages[j] as Page).pfn !== (pages[j - 1] as Page).pfn + 1) break;
    }
    const next = get_next_sg(sgt_append, s, chunks - i + left_pages, allocations);
    if (next === null) {
      if (prv !== null) prv.length = prvLen;
      return -ENOMEM;
    }
    s = next;
    // chunk_size is an unsigned int, size an unsigned long that may wrap below zero.
    const chunkSize = ((j - cur) * PAGE_SIZE - off) >>> 0;
    sg_set_page(s, pages[cur] as Page, sizeWrapped || size >= chunkSize ? chunkSize : size, off);
    if (!sizeWrapped) {
      if (size >= chunkSize) size -= chunkSize;
      else sizeWrapped = true;
    }
    added++;
    off = 0;
    cur = j;
  }
  const sgt = sgt_append.sgt;
  sgt.nents = sgt.nents + added;
  sgt.orig_nents = sgt.nents;
  sgt_append.prv = s;
  if (left_pages === 0) sg_mark_end(s as Scatterlist);
  return 0;
}

/**
 * sg_free_append_table: drop every chunk. Also forgets prv and the counts (the kernel leaves them
 * dangling), so the table can be built again from scratch.
 */
export function sg_free_append_table(sgt_append: SgAppendTable): void {
  checkAppendTable('sg_free_append_table', sgt_append);
  sgt_append.sgt.sgl = null;
  sgt_append.sgt.nents = 0;
  sgt_append.sgt.orig_nents = 0;
  sgt_append.prv = null;
  sgt_append.total_nents = 0;
}

/**
 * sg_alloc_table_from_pages: sg_alloc_table_from_pages_segment with max_segment = UINT_MAX
 * (rounded down to a page inside, so a segment is at most 4 GiB - 4 KiB).
 * @returns 0, -EINVAL (n_pages 0) or -ENOMEM (table allocation failed; sgt untouched).
 * @example pfns [10, 11, 12, 20], size 16384 -> two entries of 12288 and 4096 bytes.
 */
export function sg_alloc_table_from_pages(
  sgt: SgTable,
  pages: readonly Page[],
  n_pages: number,
  offset: number,
  size: number,
  gfp: gfp_t,
): number {
  return sg_alloc_table_from_pages_segment(sgt, pages, n_pages, offset, size, UINT_MAX, gfp);
}

/**
 * sg_alloc_table_from_pages_segment: one sg_alloc_append_table_from_pages to an empty table with
 * no pages left to come, copied into `sgt`. Runs of consecutive PFNs merge into one entry of at
 * most `max_segment` bytes; the first entry starts at `offset`; each entry's length is
 * min(remaining size, chunk bytes - offset).
 *
 * As in C, `size` is an unsigned long decremented by whole chunks: if it runs out before the last
 * chunk it wraps around, and the remaining entries get their full chunk length.
 * @returns 0; -EINVAL when max_segment < PAGE_SIZE (with a warning) or n_pages is 0 (the kernel
 *   would read past the array); -ENOMEM when allocation fails, leaving `sgt` untouched.
 */
export function sg_alloc_table_from_pages_segment(
  sgt: SgTable,
  pages: readonly Page[],
  n_pages: number,
  offset: number,
  size: number,
  max_segment: number,
  gfp: gfp_t,
): number {
  const fn = 'sg_alloc_table_from_pages_segment';
  checkTable(fn, sgt);
  if (!Array.isArray(pages)) throw new TypeError(`${fn}: Expected an array of pages for pages but received ${describeValue(pages)}`);
  checkInt(fn, 'n_pages', n_pages, 0, UINT_MAX);
  checkSize(fn, 'offset', offset);
  checkSize(fn, 'size', size);
  checkSize(fn, 'max_segment', max_segment);
  checkGfp(fn, gfp);
  if (n_pages > pages.length) throw new RangeError(`${fn}: Expected 1..${pages.length} for n_pages but received ${n_pages}`);
  checkPages(fn, pages, n_pages, undefined);
  const append = new SgAppendTable();
  // offset is an unsigned int and max_segment one too: C truncates them on the call.
  const err = appendPages(append, pages, n_pages, offset >>> 0, size, Math.min(max_segment, UINT_MAX), 0);
  if (err !== 0) {
    sg_free_append_table(append);
    return err;
  }
  sgt.sgl = append.sgt.sgl;
  sgt.nents = append.sgt.nents;
  sgt.orig_nents = append.sgt.orig_nents;
  return 0;
}
