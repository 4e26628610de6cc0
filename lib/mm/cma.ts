// CMA areas (mm/cma.c, mm/cma.h): reserved physical ranges handed out as contiguous runs through
// a bitmap with one bit per 2^order_per_bit pages; plus cma_alloc_aligned (kernel/dma/contiguous.c).

import { get_order, PAGE_SHIFT, __GFP_NOWARN, type gfp_t } from './gfp';
import { Page, pageState } from './page';

/** The allocators' writes to struct page state. */
const ps = pageState();
import { checkBool, checkGfp, checkInt, checkSameMachine, describeValue } from './validate';

/** Ranges per area (mm/cma.h). */
export const CMA_MAX_RANGES = 8;
/** Default of CONFIG_CMA_ALIGNMENT (kernel/dma/Kconfig; range 2..12). */
export const CONFIG_CMA_ALIGNMENT = 8;

const EBUSY = 16;

export interface CmaRange {
  readonly basePfn: number;
  readonly count: number;
}

export interface CmaOptions {
  readonly name: string;
  /** A single range: its first pfn and page count. Give either these or `ranges`. */
  readonly basePfn?: number;
  readonly count?: number;
  /** Up to CMA_MAX_RANGES ranges; each count must be a multiple of 2^orderPerBit. */
  readonly ranges?: readonly CmaRange[];
  /** Each bitmap bit covers 2^orderPerBit pages. */
  readonly orderPerBit?: number;
  readonly pfnToPage: (pfn: number) => Page;
  readonly nid: number;
  /** Where allocation failures are reported (the kernel's pr_err_ratelimited). */
  readonly warn?: (message: string) => void;
  /** Called with each run handed out; a throw undoes the allocation and propagates (page poisoning checks). */
  readonly allocated?: (pfn: number, count: number) => void;
  /** Called with each run given back, after it is free again (views are revoked, pages poisoned). */
  readonly released?: (pfn: number, count: number) => void;
}

/** struct cma_memrange: one physically contiguous range and its bitmap (one byte per bit). */
interface CmaMemrange extends CmaRange {
  readonly bitmap: Uint8Array;
}

function checkInteger(value: number, what: string, min: number): void {
  if (typeof value !== 'number') checkInt('cma', what, value, min);
  if (!Number.isSafeInteger(value) || value < min) {
    throw new RangeError(`Expected an integer >= ${min} for ${what} but received ${String(value)}`);
  }
}

/** What cma_alloc/cma_release change: kept out of the public object so callers can only read it. */
interface CmaState {
  readonly memranges: readonly CmaMemrange[];
  /** available_count: pages not handed out. */
  available: number;
  readonly pfnToPage: (pfn: number) => Page;
  readonly warn: (message: string) => void;
  readonly allocated: ((pfn: number, count: number) => void) | undefined;
  readonly released: ((pfn: number, count: number) => void) | undefined;
}

const states = new WeakMap<Cma, CmaState>();

function stateOf(cma: Cma): CmaState {
  const state = states.get(cma);
  if (state === undefined) throw new TypeError('Expected a Cma created by new Cma()');
  return state;
}

/** struct cma: a named area of one or more ranges on one node. */
export class Cma {
  readonly name: string;
  readonly nid: number;
  readonly orderPerBit: number;
  /** Total pages over all ranges. */
  readonly count: number;
  readonly ranges: readonly CmaRange[];

  constructor(options: CmaOptions) {
    const orderPerBit = options.orderPerBit ?? 0;
    checkInteger(orderPerBit, 'orderPerBit', 0);
    checkInteger(options.nid, 'nid', 0);
    const ranges = options.ranges ?? [
      { basePfn: options.basePfn ?? Number.NaN, count: options.count ?? Number.NaN },
    ];
    if (ranges.length < 1 || ranges.length > CMA_MAX_RANGES) {
      throw new RangeError(
        `Expected 1..${CMA_MAX_RANGES} ranges for cma ${options.name} ` +
          `but received ${ranges.length}`,
      );
    }
    const memranges = ranges.map(({ basePfn, count }): CmaMemrange => {
      checkInteger(basePfn, 'basePfn', 0);
      checkInteger(count, 'count', 0);
      // The kernel rounds area sizes to whole bitmap bits; we ask for it instead of hiding pages.
      if (count % 2 ** orderPerBit !== 0) {
        throw new RangeError(
          `cma ${options.name}: range count ${count} is not a multiple of 2^${orderPerBit}`,
        );
      }
      return { basePfn, count, bitmap: new Uint8Array(count / 2 ** orderPerBit) };
    });
    this.name = options.name;
    this.nid = options.nid;
    this.orderPerBit = orderPerBit;
    this.ranges = Object.freeze(memranges.map(({ basePfn, count }) => Object.freeze({ basePfn, count })));
    this.count = memranges.reduce((sum, r) => sum + r.count, 0);
    states.set(this, {
      memranges,
      available: this.count,
      pfnToPage: options.pfnToPage,
      warn: options.warn ?? ((message) => process.emitWarning(message)),
      allocated: options.allocated,
      released: options.released,
    });
    Object.freeze(this);
  }

  /** Pages not handed out (available_count). */
  get available(): number {
    return stateOf(this).available;
  }

  /** First pfn of the first range (the kernel's deprecated cma->base_pfn). */
  get basePfn(): number {
    return this.ranges[0]?.basePfn ?? 0;
  }

  /** True if pfn lies inside one of the area's ranges. */
  contains(pfn: number): boolean {
    return this.ranges.some((r) => pfn >= r.basePfn && pfn < r.basePfn + r.count);
  }
}

/** cma_bitmap_pages_to_bits: pages rounded up to whole bits. */
function pagesToBits(cma: Cma, pages: number): number {
  return Math.ceil(pages / 2 ** cma.orderPerBit);
}

/** cma_bitmap_aligned_mask: in bits, 0 when one bit already covers the alignment. */
function alignedMask(cma: Cma, align: number): number {
  return align <= cma.orderPerBit ? 0 : 2 ** (align - cma.orderPerBit) - 1;
}

/** cma_bitmap_aligned_offset: how far the range base lies past a 2^align boundary, in bits. */
function alignedOffset(cma: Cma, cmr: CmaMemrange, align: number): number {
  return Math.floor((cmr.basePfn % 2 ** align) / 2 ** cma.orderPerBit);
}

/**
 * bitmap_find_next_zero_area_off (lib/bitmap.c): first index >= start of nr clear bits such that
 * (index + offset) is a multiple of mask + 1. Returns a value > size - nr when there is none.
 */
function findNextZeroAreaOff(
  map: Uint8Array,
  start: number,
  nr: number,
  mask: number,
  offset: number,
): number {
  const size = map.length;
  for (;;) {
    let index = start;
    while (index < size && map[index] !== 0) index++;
    // __ALIGN_MASK(index + offset, mask) - offset
    index = Math.ceil((index + offset) / (mask + 1)) * (mask + 1) - offset;
    const end = index + nr;
    if (end > size) return end;
    let busy = index;
    while (busy < end && map[busy] === 0) busy++;
    if (busy === end) return index;
    start = busy + 1;
  }
}

/** cma_range_alloc: returns the first page, or -EBUSY when this range has no room. */
function cmaRangeAlloc(
  cma: Cma,
  state: CmaState,
  cmr: CmaMemrange,
  count: number,
  align: number,
): Page | number {
  const mask = alignedMask(cma, align);
  const offset = alignedOffset(cma, cmr, align);
  const bitmapCount = pagesToBits(cma, count);
  if (bitmapCount > cmr.bitmap.length) return -EBUSY;
  if (count > state.available) return -EBUSY;
  const bitmapNo = findNextZeroAreaOff(cmr.bitmap, 0, bitmapCount, mask, offset);
  if (bitmapNo >= cmr.bitmap.length) return -EBUSY;
  cmr.bitmap.fill(1, bitmapNo, bitmapNo + bitmapCount);
  state.available -= count;
  // The kernel now calls alloc_contig_range(), which can fail with -EBUSY when a page in the run
  // is pinned or unmovable, and then retries further on. Here nothing but cma_alloc hands out
  // pages of a CMA area, so the run is always free and that step cannot fail.
  const pfn = cmr.basePfn + bitmapNo * 2 ** cma.orderPerBit;
  for (let i = 0; i < count; i++) ps.setRefcount(state.pfnToPage(pfn + i), 1);
  if (state.allocated !== undefined) {
    try {
      state.allocated(pfn, count);
    } catch (err) {
      for (let i = 0; i < count; i++) ps.setRefcount(state.pfnToPage(pfn + i), 0);
      cmr.bitmap.fill(0, bitmapNo, bitmapNo + bitmapCount);
      state.available += count;
      state.released?.(pfn, count);
      throw err;
    }
  }
  return state.pfnToPage(pfn);
}

/**
 * Allocate count contiguous pages from cma, the first one's pfn aligned to 2^align (cma_alloc).
 * Returns null if cma is null or empty, count is 0, or no range has a fitting free run; in the
 * last case a warning goes to the area's warn callback unless noWarn. Each page gets refcount 1.
 * @example cma_alloc(area, 3, 2, false) // 3 pages starting on a 4-page boundary, or null
 */
export function cma_alloc(
  cma: Cma | null,
  count: number,
  align: number,
  noWarn: boolean,
): Page | null {
  checkCma('cma_alloc', cma);
  checkInt('cma_alloc', 'count', count, 0);
  checkInt('cma_alloc', 'align', align, 0);
  checkBool('cma_alloc', 'noWarn', noWarn);
  if (cma === null || cma.count === 0) return null;
  checkInteger(count, 'count', 0);
  checkInteger(align, 'align', 0);
  if (count === 0) return null;
  const state = stateOf(cma);
  let ret = -EBUSY;
  for (const cmr of state.memranges) {
    const result = cmaRangeAlloc(cma, state, cmr, count, align);
    if (typeof result !== 'number') return result;
    ret = result;
  }
  // Linux 6.17 reports the last range's -EBUSY (-16); single-range kernels reported -ENOMEM.
  if (!noWarn) {
    state.warn(`cma: cma_alloc: ${cma.name}: alloc failed, req-size: ${count} pages, ret: ${ret}`);
  }
  return null;
}

/** A struct cma or null (the kernel's NULL area). */
function checkCma(fn: string, cma: unknown): asserts cma is Cma | null {
  if (cma !== null && !(cma instanceof Cma)) throw new TypeError(`${fn}: Expected a CMA area (Cma) or null for cma but received ${describeValue(cma)}`);
}

/**
 * A struct page or null. A page whose PFN lies in the area but that is not the area's own struct
 * page belongs to another machine (PFNs repeat across machines): refused, naming both machines.
 */
function checkCmaPage(fn: string, cma: Cma | null, page: unknown): asserts page is Page | null {
  if (page === null) return;
  if (!(page instanceof Page)) throw new TypeError(`${fn}: Expected a struct page (Page) or null for pages but received ${describeValue(page)}`);
  if (cma === null || !cma.contains(page.pfn)) return;
  const own = stateOf(cma).pfnToPage(page.pfn);
  if (own !== page) checkSameMachine(fn, 'page', page.machine, own.machine);
}

/** The range that holds all of [pfn, pfn + count), if one does. */
function findRange(cma: Cma, pfn: number, count: number): CmaMemrange | undefined {
  const cmr = stateOf(cma).memranges.find((r) => pfn >= r.basePfn && pfn < r.basePfn + r.count);
  return cmr !== undefined && pfn + count <= cmr.basePfn + cmr.count ? cmr : undefined;
}

/** True if [page, page + count) lies wholly inside one range of cma (cma_pages_valid). */
export function cma_pages_valid(cma: Cma | null, page: Page | null, count: number): boolean {
  checkCma('cma_pages_valid', cma);
  checkCmaPage('cma_pages_valid', cma, page);
  checkInt('cma_pages_valid', 'count', count, 0);
  if (cma === null || page === null || count > cma.count) return false;
  return findRange(cma, page.pfn, count) !== undefined;
}

/**
 * Whether every page of [pfn, pfn + count) lies in one range of the area and is handed out (its
 * bitmap bits set). Not a kernel function: the memory model uses it to keep views inside
 * allocations.
 */
export function cma_pages_allocated(cma: Cma, pfn: number, count: number): boolean {
  const cmr = findRange(cma, pfn, count);
  if (cmr === undefined) return false;
  const first = Math.floor((pfn - cmr.basePfn) / 2 ** cma.orderPerBit);
  const end = Math.ceil((pfn + count - cmr.basePfn) / 2 ** cma.orderPerBit);
  return cmr.bitmap.subarray(first, end).indexOf(0) < 0;
}

/**
 * Give back count pages from cma_alloc (cma_release). Returns false, touching nothing, unless the
 * pages lie wholly inside one range. Throws if a page of the run is not allocated: the kernel would
 * free a free page ("Bad page state"); we refuse.
 */
export function cma_release(cma: Cma | null, pages: Page | null, count: number): boolean {
  checkCma('cma_release', cma);
  checkCmaPage('cma_release', cma, pages);
  checkInt('cma_release', 'count', count, 0);
  if (cma === null || pages === null || !cma_pages_valid(cma, pages, count)) return false;
  const cmr = findRange(cma, pages.pfn, count);
  if (cmr === undefined) return false;
  const state = stateOf(cma);
  for (let i = 0; i < count; i++) {
    if (state.pfnToPage(pages.pfn + i).refcount === 0) {
      throw new Error(
        `cma: release of a free page [cma=${cma.name}] [pfn=0x${(pages.pfn + i).toString(16)}]`,
      );
    }
  }
  for (let i = 0; i < count; i++) ps.setRefcount(state.pfnToPage(pages.pfn + i), 0);
  // cma_clear_bitmap: whole bits, so a partial bit at the end is freed too, as in the kernel.
  const bitmapNo = Math.floor((pages.pfn - cmr.basePfn) / 2 ** cma.orderPerBit);
  cmr.bitmap.fill(0, bitmapNo, bitmapNo + pagesToBits(cma, count));
  state.available += count;
  state.released?.(pages.pfn, count);
  return true;
}

/**
 * cma_alloc_aligned (kernel/dma/contiguous.c): size >> PAGE_SHIFT pages (rounded down), aligned to
 * min(get_order(size), CONFIG_CMA_ALIGNMENT), quiet if gfp has __GFP_NOWARN.
 * @example cma_alloc_aligned(area, 12288, GFP_KERNEL) // 3 pages aligned to 4 pages
 */
export function cma_alloc_aligned(cma: Cma | null, size: number, gfp: gfp_t, cmaAlignment: number = CONFIG_CMA_ALIGNMENT): Page | null {
  checkCma('cma_alloc_aligned', cma);
  checkInt('cma_alloc_aligned', 'size', size, 0);
  checkGfp('cma_alloc_aligned', gfp);
  checkInt('cma_alloc_aligned', 'cmaAlignment', cmaAlignment, 0, 12);
  const align = Math.min(get_order(size), cmaAlignment);
  return cma_alloc(cma, Math.floor(size / 2 ** PAGE_SHIFT), align, (gfp & __GFP_NOWARN) !== 0);
}
