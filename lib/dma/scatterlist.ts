// Scatter-gather tables: lib/scatterlist.c and include/linux/scatterlist.h. Entries come in chunks
// of at most SG_MAX_SINGLE_ALLOC; a full chunk's last slot is a chain link to the next chunk.

import type { Page } from '../mm/page';
import { type gfp_t } from '../mm/gfp';
import { getHeapStatistics } from 'node:v8';
import { freemem } from 'node:os';
import { Page as PageClass } from '../mm/page';
import { checkGfp, checkInt, checkSize, describeValue } from '../mm/validate';
import { EINVAL, ENOMEM } from './constants';

/** PAGE_SIZE / sizeof(struct scatterlist) on x86-64. */
export const SG_MAX_SINGLE_ALLOC = 128;
/** Low bits of page_link: the entry is a link to another chunk. */
export const SG_CHAIN = 0x1;
/** Low bits of page_link: the entry is the last of the list. */
export const SG_END = 0x2;

const UINT_MAX = 0xffff_ffff;

/**
 * Backing store of a scatterlist: one slot per entry, struct-of-arrays. A table of 262144 entries
 * is then a handful of allocations instead of 262144 objects for the garbage collector to copy.
 * Slot i + 1 is the kernel's `sg + 1`. Internal: use Scatterlist handles.
 */
export class SgStore {
  readonly pages: (Page | null)[];
  /** SG_CHAIN | SG_END per slot: the low bits of the kernel's page_link. */
  readonly flags: Uint8Array;
  readonly offset: Uint32Array;
  /** unsigned int, so stores truncate mod 2^32 exactly like C. */
  readonly length: Uint32Array;
  readonly dmaAddress: BigUint64Array;
  readonly dmaLength: Uint32Array;
  /** Target of each chain slot (the pointer part of page_link when SG_CHAIN is set). */
  readonly chains = new Map<number, Scatterlist>();

  constructor(readonly size: number) {
    // Reachable as `sg.store.constructor`: the same size rules as sg_init_table.
    checkInt('SgStore', 'size', size, 0, UINT_MAX + 128);
    if (!sg_table_fits(size)) throw new RangeError(`SgStore: ${size} entries of ${SG_ENTRY_BYTES} bytes do not fit in this process's memory`);
    this.pages = new Array<Page | null>(size).fill(null);
    this.flags = new Uint8Array(size);
    this.offset = new Uint32Array(size);
    this.length = new Uint32Array(size);
    this.dmaAddress = new BigUint64Array(size);
    this.dmaLength = new Uint32Array(size);
    Object.freeze(this);
  }
}

/**
 * struct scatterlist: a handle on one slot of an SgStore. The fields read and write the store, so
 * two handles on the same slot see the same entry (compare them with `sameEntry`, not ===).
 * `new Scatterlist()` makes a standalone zeroed entry. CONFIG_NEED_SG_DMA_LENGTH is on, so
 * dma_length is its own field.
 */
export class Scatterlist {
  constructor(
    readonly store: SgStore = new SgStore(1),
    readonly index = 0,
  ) {
    if (!(store instanceof SgStore)) throw new TypeError(`Scatterlist: Expected an SgStore for store but received ${describeValue(store)}`);
    if (!Number.isInteger(index) || index < 0 || index >= store.size) throw new RangeError(`Scatterlist: Expected an integer from 0 to ${store.size - 1} for index but received ${describeValue(index)}`);
    Object.freeze(this);
  }

  /** The page of a data entry, or null (the pointer part of page_link). */
  get page_link(): Page | null {
    return this.store.pages[this.index] ?? null;
  }
  set page_link(page: Page | null) {
    if (page !== null && !(page instanceof PageClass)) throw new TypeError(`Scatterlist: Expected a Page or null for page_link but received ${describeValue(page)}`);
    this.store.pages[this.index] = page;
  }
  /** SG_CHAIN | SG_END. */
  get link_flags(): number {
    return this.store.flags[this.index] ?? 0;
  }
  set link_flags(v: number) {
    this.store.flags[this.index] = v;
  }
  /** For a chain entry: the first entry of the next chunk; else null. */
  get chain_next(): Scatterlist | null {
    return this.store.chains.get(this.index) ?? null;
  }
  /** Byte offset into the page. */
  get offset(): number {
    return this.store.offset[this.index] ?? 0;
  }
  set offset(v: number) {
    this.store.offset[this.index] = v;
  }
  /** Byte length: an unsigned int, so a stored value is truncated mod 2^32. */
  get length(): number {
    return this.store.length[this.index] ?? 0;
  }
  set length(v: number) {
    this.store.length[this.index] = v;
  }
  /** Bus address once mapped (sg_dma_address); 0n before. */
  get dma_address(): bigint {
    return this.store.dmaAddress[this.index] ?? 0n;
  }
  set dma_address(v: bigint) {
    this.store.dmaAddress[this.index] = v;
  }
  /** Mapped length (sg_dma_len). */
  get dma_length(): number {
    return this.store.dmaLength[this.index] ?? 0;
  }
  set dma_length(v: number) {
    this.store.dmaLength[this.index] = v;
  }

  /** True when both handles name the same entry. */
  sameEntry(other: Scatterlist | null): boolean {
    return other !== null && other.store === this.store && other.index === this.index;
  }
}

/** struct sg_table. */
export class SgTable {
  #sgl: Scatterlist | null = null;
  #nents = 0;
  #origNents = 0;

  /** First entry, or null when nothing is allocated. */
  get sgl(): Scatterlist | null {
    return this.#sgl;
  }

  set sgl(sgl: Scatterlist | null) {
    if (sgl !== null && !(sgl instanceof Scatterlist)) throw new TypeError(`SgTable: Expected a Scatterlist or null for sgl but received ${describeValue(sgl)}`);
    this.#sgl = sgl;
  }

  /** Number of mapped entries (set by dma_map_sgtable); equals orig_nents until then. An unsigned int. */
  get nents(): number {
    return this.#nents;
  }

  set nents(n: number) {
    checkInt('SgTable', 'nents', n, 0, UINT_MAX);
    this.#nents = n;
  }

  /** Number of CPU entries the table was built with. An unsigned int. */
  get orig_nents(): number {
    return this.#origNents;
  }

  set orig_nents(n: number) {
    checkInt('SgTable', 'orig_nents', n, 0, UINT_MAX);
    this.#origNents = n;
  }
}

/**
 * Fault injection for table allocation (tests: "table allocation fails -> -ENOMEM"). When
 * `failAfterChunks` is a number, the chunk allocation after that many successful ones fails
 * (0 = the first chunk fails). Counted per table allocation call.
 */
export const sgFaultInjection: { failAfterChunks: number | null } = { failAfterChunks: null };

export function sg_is_chain(sg: Scatterlist): boolean {
  checkSgEntry('sg_is_chain', sg);
  return (sg.link_flags & SG_CHAIN) !== 0;
}

export function sg_is_last(sg: Scatterlist): boolean {
  checkSgEntry('sg_is_last', sg);
  return (sg.link_flags & SG_END) !== 0;
}

/** sg_page: the page of a data entry. */
export function sg_page(sg: Scatterlist): Page | null {
  checkSgEntry('sg_page', sg);
  return sg.page_link;
}

function checkSgEntry(fn: string, sg: unknown): asserts sg is Scatterlist {
  if (!(sg instanceof Scatterlist)) throw new TypeError(`${fn}: Expected a Scatterlist for sg but received ${describeValue(sg)}`);
}

/** A list head (or null) and a count, for the walks. */
function checkSgList(fn: string, sgl: unknown, nents: unknown): void {
  if (sgl !== null) checkSgEntry(fn, sgl);
  checkInt(fn, 'nents', nents, 0);
}

/** An SgTable or a TypeError (internal to lib/dma: the table builders share it). */
export function checkTable(fn: string, table: unknown): asserts table is SgTable {
  if (!(table instanceof SgTable)) throw new TypeError(`${fn}: Expected an SgTable (new SgTable()) for table but received ${describeValue(table)}`);
}

/** sizeof(struct scatterlist) on x86-64 (page_link, offset, length, dma_address, dma_length, padded). */
export const SG_ENTRY_BYTES = 32;
/** Below this many entries a table is always small enough; the memory figures are only read above it. */
const SG_CHEAP_ENTRIES = 1 << 20;

/**
 * Whether a table of `nents` entries can be backed. The kernel kmallocs its chunks and returns
 * -ENOMEM when that fails; here a table lives in this process (a page array on the JS heap, typed
 * arrays beside it), so the bound is what the process could hold: `nents` entries of
 * SG_ENTRY_BYTES must fit both in what the JS heap has left and in the host's free memory.
 * Asking for more returns -ENOMEM at once instead of running V8 out of heap (a fatal abort).
 */
export function sg_table_fits(nents: number): boolean {
  if (nents <= SG_CHEAP_ENTRIES) return true;
  const heap = getHeapStatistics();
  const bytes = nents * SG_ENTRY_BYTES;
  return bytes <= heap.heap_size_limit - heap.used_heap_size && bytes <= freemem();
}

/**
 * sg_set_page: store page, length and offset, keeping the chain/end marks. `len` is truncated to
 * an unsigned int exactly as C does (so 4 GiB becomes 0).
 */
export function sg_set_page(sg: Scatterlist, page: Page | null, len: number, offset: number): void {
  checkSgEntry('sg_set_page', sg);
  if (page !== null && !(page instanceof PageClass)) throw new TypeError(`sg_set_page: Expected a struct page (Page) or null for page but received ${describeValue(page)}`);
  checkSize('sg_set_page', 'len', len);
  checkSize('sg_set_page', 'offset', offset);
  sg.page_link = page;
  sg.offset = offset >>> 0;
  sg.length = len >>> 0;
}

/** sg_mark_end: this entry ends the list (clears a chain mark, as the kernel does). */
export function sg_mark_end(sg: Scatterlist): void {
  checkSgEntry('sg_mark_end', sg);
  sg.link_flags = (sg.link_flags | SG_END) & ~SG_CHAIN;
}

/** sg_unmark_end. */
export function sg_unmark_end(sg: Scatterlist): void {
  checkSgEntry('sg_unmark_end', sg);
  sg.link_flags &= ~SG_END;
}

/** sg_dma_address. */
export function sg_dma_address(sg: Scatterlist): bigint {
  checkSgEntry('sg_dma_address', sg);
  return sg.dma_address;
}

/** sg_dma_len (CONFIG_NEED_SG_DMA_LENGTH: a separate field). */
export function sg_dma_len(sg: Scatterlist): number {
  checkSgEntry('sg_dma_len', sg);
  return sg.dma_length;
}

/**
 * sg_phys: physical address of the entry's data, page_to_phys(page) + offset.
 * @throws TypeError for an entry without a page (the kernel would dereference NULL).
 */
export function sg_phys(sg: Scatterlist): bigint {
  checkSgEntry('sg_phys', sg);
  const page = sg.page_link;
  if (page === null) throw new TypeError('sg_phys: scatterlist entry has no page');
  return page.phys + BigInt(sg.offset);
}

/**
 * sg_next: the following entry, following chain links; null after the end-marked entry (or past
 * the end of the store, where C would run off its allocation).
 */
export function sg_next(sg: Scatterlist): Scatterlist | null {
  checkSgEntry('sg_next', sg);
  const { store, index } = sg;
  if (((store.flags[index] ?? 0) & SG_END) !== 0) return null;
  const next = index + 1;
  if (next >= store.size) return null;
  if (((store.flags[next] ?? 0) & SG_CHAIN) !== 0) return store.chains.get(next) ?? null;
  return new Scatterlist(store, next);
}

/**
 * for_each_sg: call `fn(sg, i)` for the first `nents` entries; `fn` returning false stops the
 * walk (the loop's break). Stops early if the list ends before `nents` (where the kernel would walk
 * off the end).
 */
export function for_each_sg(
  sgl: Scatterlist | null,
  nents: number,
  fn: (sg: Scatterlist, i: number) => unknown,
): void {
  checkSgList('for_each_sg', sgl, nents);
  if (typeof fn !== 'function') throw new TypeError(`for_each_sg: Expected a function for fn but received ${describeValue(fn)}`);
  let sg = sgl;
  // `return false` from fn is the loop's `break`.
  for (let i = 0; i < nents && sg !== null; i++, sg = sg_next(sg)) if (fn(sg, i) === false) break;
}

/** The same walk as for_each_sg, as an iterator of [entry, index]. */
export function* sgIterate(sgl: Scatterlist | null, nents: number): Generator<[Scatterlist, number]> {
  checkSgList('sgIterate', sgl, nents);
  let sg = sgl;
  for (let i = 0; i < nents && sg !== null; i++, sg = sg_next(sg)) yield [sg, i];
}

/** for_each_sgtable_sg: the CPU entries (orig_nents). */
export function for_each_sgtable_sg(sgt: SgTable, fn: (sg: Scatterlist, i: number) => unknown): void {
  checkTable('for_each_sgtable_sg', sgt);
  for_each_sg(sgt.sgl, sgt.orig_nents, fn);
}

/** for_each_sgtable_dma_sg: the mapped entries (nents). */
export function for_each_sgtable_dma_sg(sgt: SgTable, fn: (sg: Scatterlist, i: number) => unknown): void {
  checkTable('for_each_sgtable_dma_sg', sgt);
  for_each_sg(sgt.sgl, sgt.nents, fn);
}

/** sg_nents: number of data entries up to the end mark (chain links do not count). */
export function sg_nents(sgl: Scatterlist | null): number {
  if (sgl !== null) checkSgEntry('sg_nents', sgl);
  let n = 0;
  for (let sg = sgl; sg !== null; sg = sg_next(sg)) n++;
  return n;
}

/**
 * sg_init_table: fill `sgl[0..nents-1]` with the zeroed entries of one new chunk and end-mark the
 * last (the kernel zeroes an array the caller allocated; here the array receives the handles).
 */
export function sg_init_table(sgl: Scatterlist[], nents: number): void {
  if (!Array.isArray(sgl)) throw new TypeError(`sg_init_table: Expected an array for sgl but received ${describeValue(sgl)}`);
  checkInt('sg_init_table', 'nents', nents, 0, UINT_MAX);
  if (!sg_table_fits(nents)) throw new RangeError(`sg_init_table: ${nents} entries of ${SG_ENTRY_BYTES} bytes do not fit in this process's memory`);
  const store = new SgStore(nents);
  for (let i = 0; i < nents; i++) sgl[i] = new Scatterlist(store, i);
  if (nents > 0) store.flags[nents - 1] = SG_END;
}

/**
 * sg_chain: turn slot `prv_nents - 1` of the chunk `prv` into a link to `sgl`. Offset and length
 * are cleared and the end mark is dropped, as in the kernel.
 */
export function sg_chain(prv: readonly Scatterlist[], prv_nents: number, sgl: Scatterlist): void {
  if (!Array.isArray(prv)) throw new TypeError(`sg_chain: Expected an array of entries for prv but received ${describeValue(prv)}`);
  checkInt('sg_chain', 'prv_nents', prv_nents, 1, prv.length);
  checkSgEntry('sg_chain', sgl);
  const link = prv[prv_nents - 1];
  if (link === undefined) throw new RangeError(`sg_chain: no slot ${prv_nents - 1} in the chunk`);
  __sg_chain(link.store, link.index, sgl);
}

/** __sg_chain on a store slot. Internal to lib/dma (the append table chains new chunks with it). */
export function __sg_chain(store: SgStore, slot: number, sgl: Scatterlist): void {
  store.offset[slot] = 0;
  store.length[slot] = 0;
  store.pages[slot] = null;
  store.chains.set(slot, sgl);
  store.flags[slot] = SG_CHAIN;
}

/**
 * __sg_alloc_table with sg_kmalloc: chunks of at most SG_MAX_SINGLE_ALLOC slots; every chunk but
 * the last gives its final slot to the chain link (so 200 -> 127 + link, then 73). All chunks
 * share one store, laid out one after the other. Returns 0, or -ENOMEM (fault injection) with
 * the table left as it was.
 */
function __sg_alloc_table(table: SgTable, nents: number): number {
  const perChunk = SG_MAX_SINGLE_ALLOC - 1;
  const chunks = nents <= SG_MAX_SINGLE_ALLOC ? 1 : Math.ceil((nents - 1) / perChunk);
  const fail = sgFaultInjection.failAfterChunks;
  if (fail !== null && fail < chunks) return -ENOMEM;
  const store = new SgStore(nents + chunks - 1);
  for (let c = 0; c < chunks - 1; c++) {
    const link = c * SG_MAX_SINGLE_ALLOC + perChunk;
    __sg_chain(store, link, new Scatterlist(store, link + 1));
  }
  store.flags[store.size - 1] = SG_END;
  table.sgl = new Scatterlist(store, 0);
  table.nents = table.orig_nents = nents;
  return 0;
}

/**
 * sg_alloc_table: allocate a table of `nents` entries, chained in chunks of at most
 * SG_MAX_SINGLE_ALLOC (a chained chunk holds 127 data entries plus a link).
 * @returns 0; -EINVAL if nents is 0; -ENOMEM if a chunk cannot be allocated, in which case
 *   everything is freed (sgl null, nents and orig_nents 0). A retry can help only for -ENOMEM.
 * @example sg_alloc_table(t, 200, GFP_KERNEL) // 0: 127 entries + link, then 73
 */
export function sg_alloc_table(table: SgTable, nents: number, gfp: gfp_t): number {
  checkTable('sg_alloc_table', table);
  checkInt('sg_alloc_table', 'nents', nents, 0, UINT_MAX);
  checkGfp('sg_alloc_table', gfp);
  table.sgl = null;
  table.nents = 0;
  table.orig_nents = 0;
  if (nents === 0) return -EINVAL;
  if (!sg_table_fits(nents)) return -ENOMEM;
  const ret = __sg_alloc_table(table, nents);
  // The kernel's sg_free_table leaves a stale nents behind after a failure past the first
  // chunk; we clear it so the table is plainly empty.
  if (ret !== 0) sg_free_table(table);
  return ret;
}

/** sg_free_table: drop every entry. Safe to call twice. */
export function sg_free_table(table: SgTable): void {
  checkTable('sg_free_table', table);
  table.sgl = null;
  table.nents = 0;
  table.orig_nents = 0;
}
