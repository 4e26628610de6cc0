// lib/scatterlist.c's helpers over entries that hold kernel memory: one-entry lists from a buffer,
// the entry's virtual address, the last entry, how many entries cover a length, and the page-by-page
// mapping iterator (sg_miter_*) with the copies built on it (sg_copy_{from,to}_buffer).

import { PAGE_SIZE } from '../mm/gfp';
import { page_address, virt_to_page } from '../mm/kernel';
import type { Machine } from '../mm/machine';
import type { Page } from '../mm/page';
import { checkInt, checkSize, describeValue } from '../mm/validate';
import { EINVAL } from './constants';
import { SG_END, Scatterlist, sg_next, sg_set_page } from './scatterlist';

function checkEntry(fn: string, sg: unknown): asserts sg is Scatterlist {
  if (!(sg instanceof Scatterlist)) throw new TypeError(`${fn}: Expected a Scatterlist for sg but received ${describeValue(sg)}`);
}

/**
 * sg_set_buf: point the entry at `buflen` bytes of linear-map memory at `buf` (the page and offset
 * of virt_to_page / offset_in_page). A vmalloc or unmapped address is refused (CONFIG_DEBUG_SG's
 * BUG_ON(!virt_addr_valid(buf)), as a RangeError).
 */
export function sg_set_buf(sg: Scatterlist, buf: number, buflen: number): void {
  checkEntry('sg_set_buf', sg);
  checkSize('sg_set_buf', 'buf', buf);
  checkInt('sg_set_buf', 'buflen', buflen, 0, 2 ** 32 - 1);
  const page = virt_to_page(buf);
  sg_set_page(sg, page, buflen, buf % PAGE_SIZE);
}

/** sg_init_one: make `sg` a one-entry list (zeroed, end-marked) over `buflen` bytes at `buf`. */
export function sg_init_one(sg: Scatterlist, buf: number, buflen: number): void {
  checkEntry('sg_init_one', sg);
  checkSize('sg_init_one', 'buf', buf);
  checkInt('sg_init_one', 'buflen', buflen, 0, 2 ** 32 - 1);
  const page = virt_to_page(buf);
  sg.page_link = null;
  sg.link_flags = SG_END;
  sg.offset = 0;
  sg.length = 0;
  sg.dma_address = 0n;
  sg.dma_length = 0;
  sg_set_page(sg, page, buflen, buf % PAGE_SIZE);
}

/** sg_virt: the kernel virtual address of the entry's data (page_address(sg_page(sg)) + offset). */
export function sg_virt(sg: Scatterlist): number {
  checkEntry('sg_virt', sg);
  const page = sg.page_link;
  if (page === null) throw new TypeError('sg_virt: the scatterlist entry has no page');
  return page_address(page) + sg.offset;
}

/** sg_last: the last of the first `nents` entries; a kernel BUG when it is not end-marked. */
export function sg_last(sgl: Scatterlist, nents: number): Scatterlist {
  checkEntry('sg_last', sgl);
  checkInt('sg_last', 'nents', nents, 0, 2 ** 32 - 1);
  let ret: Scatterlist | null = null;
  let sg: Scatterlist | null = sgl;
  for (let i = 0; i < nents && sg !== null; i++, sg = sg_next(sg)) ret = sg;
  if (ret === null || (ret.link_flags & SG_END) === 0) throw new Error('kernel BUG at lib/scatterlist.c: sg_last: the last entry is not marked as the end');
  return ret;
}

/**
 * sg_nents_for_len: how many entries from `sg` it takes to cover `len` bytes (0 for 0); -EINVAL when
 * the whole list is shorter.
 */
export function sg_nents_for_len(sg: Scatterlist | null, len: number): number {
  if (sg !== null) checkEntry('sg_nents_for_len', sg);
  checkSize('sg_nents_for_len', 'len', len);
  if (len === 0) return 0;
  let nents = 0;
  let total = 0;
  for (let s = sg; s !== null; s = sg_next(s)) {
    nents++;
    total += s.length;
    if (total >= len) return nents;
  }
  return -EINVAL;
}

/** sg_miter_start flags: which way the data goes (TO_SG flushes the page after writing). */
export const SG_MITER_ATOMIC = 1 << 0;
export const SG_MITER_TO_SG = 1 << 1;
export const SG_MITER_FROM_SG = 1 << 2;

/**
 * struct sg_mapping_iter: after sg_miter_next, `page`, `addr` (the virtual address of the piece),
 * `length` and `consumed` (set it lower when the caller used less) describe one piece of at most
 * one page. The walk's own state is private.
 */
export class SgMappingIter {
  page: Page | null = null;
  addr = 0;
  length = 0;
  consumed = 0;
}

/** The walk (struct sg_page_iter and the miter's private fields). */
interface MiterState {
  sg: Scatterlist | null;
  nents: number;
  pgoffset: number;
  pgAdvance: number;
  offset: number;
  remaining: number;
  flags: number;
  /** The length handed out by the last sg_miter_next, or -1 when no piece is out. */
  out: number;
}

const states = new WeakMap<SgMappingIter, MiterState>();

function stateOf(fn: string, miter: unknown): MiterState {
  if (!(miter instanceof SgMappingIter)) throw new TypeError(`${fn}: Expected an SgMappingIter (new SgMappingIter()) for miter but received ${describeValue(miter)}`);
  const st = states.get(miter);
  if (st === undefined) throw new TypeError(`${fn}: the iterator was not started (sg_miter_start)`);
  return st;
}

/** sg_page_count: pages an entry touches. */
function sg_page_count(sg: Scatterlist): number {
  return Math.ceil((sg.offset + sg.length) / PAGE_SIZE);
}

/** __sg_page_iter_next. */
function pageIterNext(st: MiterState): boolean {
  if (st.nents === 0 || st.sg === null) return false;
  st.pgoffset += st.pgAdvance;
  st.pgAdvance = 1;
  while (st.pgoffset >= sg_page_count(st.sg)) {
    st.pgoffset -= sg_page_count(st.sg);
    st.sg = sg_next(st.sg);
    if (--st.nents === 0 || st.sg === null) return false;
  }
  return true;
}

/** sg_miter_get_next_page. */
function getNextPage(st: MiterState): boolean {
  if (st.remaining === 0) {
    if (!pageIterNext(st)) return false;
    const sg = st.sg!;
    st.offset = st.pgoffset !== 0 ? 0 : sg.offset;
    st.pgoffset += Math.floor(st.offset / PAGE_SIZE);
    st.offset %= PAGE_SIZE;
    st.remaining = Math.min(sg.offset + sg.length - st.pgoffset * PAGE_SIZE - st.offset, PAGE_SIZE - st.offset);
  }
  return true;
}

/** sg_miter_start: iterate the first `nents` entries of `sgl`, page by page. */
export function sg_miter_start(miter: SgMappingIter, sgl: Scatterlist | null, nents: number, flags: number): void {
  if (!(miter instanceof SgMappingIter)) throw new TypeError(`sg_miter_start: Expected an SgMappingIter (new SgMappingIter()) for miter but received ${describeValue(miter)}`);
  if (sgl !== null) checkEntry('sg_miter_start', sgl);
  checkInt('sg_miter_start', 'nents', nents, 0, 2 ** 32 - 1);
  checkInt('sg_miter_start', 'flags', flags, 0, 7);
  states.set(miter, { sg: sgl, nents, pgoffset: 0, pgAdvance: 0, offset: 0, remaining: 0, flags, out: -1 });
  miter.page = null;
  miter.addr = 0;
  miter.length = 0;
  miter.consumed = 0;
}

/** sg_miter_stop: account for what the last piece consumed and drop it. */
export function sg_miter_stop(miter: SgMappingIter): void {
  const st = stateOf('sg_miter_stop', miter);
  if (st.out < 0) return;
  // WARN_ON(consumed > length) in the kernel; a consumed count outside the piece is refused here.
  checkInt('sg_miter_stop', 'miter.consumed', miter.consumed, 0, st.out);
  st.offset += miter.consumed;
  st.remaining -= miter.consumed;
  st.out = -1;
  miter.page = null;
  miter.addr = 0;
  miter.length = 0;
  miter.consumed = 0;
}

/** sg_miter_next: the next piece (at most up to the end of its page); false at the end. */
export function sg_miter_next(miter: SgMappingIter): boolean {
  sg_miter_stop(miter);
  const st = stateOf('sg_miter_next', miter);
  if (!getNextPage(st)) return false;
  const first = st.sg!.page_link;
  if (first === null) throw new TypeError('sg_miter_next: a scatterlist entry has no page');
  const page = (first.machine as Machine).pfn_to_page(first.pfn + st.pgoffset);
  miter.page = page;
  miter.consumed = miter.length = st.out = st.remaining;
  miter.addr = page_address(page) + st.offset;
  return true;
}

/** sg_miter_skip: move `offset` bytes on without handing them out; false when the list ends first. */
export function sg_miter_skip(miter: SgMappingIter, offset: number): boolean {
  checkSize('sg_miter_skip', 'offset', offset);
  sg_miter_stop(miter);
  const st = stateOf('sg_miter_skip', miter);
  while (offset > 0) {
    if (!getNextPage(st)) return false;
    const consumed = Math.min(offset, st.remaining);
    st.offset += consumed;
    st.remaining -= consumed;
    offset -= consumed;
  }
  return true;
}

/** sg_copy_buffer: copy between `buf` and the list, after skipping `skip` bytes; returns bytes copied. */
function sg_copy_buffer(fn: string, sgl: Scatterlist | null, nents: number, buf: Uint8Array, buflen: number, skip: number, to_buffer: boolean): number {
  if (sgl !== null) checkEntry(fn, sgl);
  checkInt(fn, 'nents', nents, 0, 2 ** 32 - 1);
  if (!(buf instanceof Uint8Array)) throw new TypeError(`${fn}: Expected a Uint8Array for buf but received ${describeValue(buf)}`);
  checkInt(fn, 'buflen', buflen, 0, buf.length);
  checkSize(fn, 'skip', skip);
  const miter = new SgMappingIter();
  sg_miter_start(miter, sgl, nents, SG_MITER_ATOMIC | (to_buffer ? SG_MITER_FROM_SG : SG_MITER_TO_SG));
  if (!sg_miter_skip(miter, skip)) return 0;
  let offset = 0;
  while (offset < buflen && sg_miter_next(miter)) {
    const len = Math.min(miter.length, buflen - offset);
    const mem = (miter.page!.machine as Machine).view(miter.addr, len);
    if (to_buffer) buf.set(mem, offset);
    else mem.set(buf.subarray(offset, offset + len));
    offset += len;
  }
  sg_miter_stop(miter);
  return offset;
}

/** sg_copy_from_buffer: copy `buflen` bytes of `buf` into the list; returns the bytes copied. */
export function sg_copy_from_buffer(sgl: Scatterlist | null, nents: number, buf: Uint8Array, buflen: number): number {
  return sg_copy_buffer('sg_copy_from_buffer', sgl, nents, buf, buflen, 0, false);
}

/** sg_copy_to_buffer: copy up to `buflen` bytes of the list into `buf`; returns the bytes copied. */
export function sg_copy_to_buffer(sgl: Scatterlist | null, nents: number, buf: Uint8Array, buflen: number): number {
  return sg_copy_buffer('sg_copy_to_buffer', sgl, nents, buf, buflen, 0, true);
}

/** sg_pcopy_from_buffer: sg_copy_from_buffer starting `skip` bytes into the list. */
export function sg_pcopy_from_buffer(sgl: Scatterlist | null, nents: number, buf: Uint8Array, buflen: number, skip: number): number {
  return sg_copy_buffer('sg_pcopy_from_buffer', sgl, nents, buf, buflen, skip, false);
}

/** sg_pcopy_to_buffer: sg_copy_to_buffer starting `skip` bytes into the list. */
export function sg_pcopy_to_buffer(sgl: Scatterlist | null, nents: number, buf: Uint8Array, buflen: number, skip: number): number {
  return sg_copy_buffer('sg_pcopy_to_buffer', sgl, nents, buf, buflen, skip, true);
}
