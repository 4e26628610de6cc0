// Physical pages of virtual memory: /proc/self/pagemap (one batched pread per range) and
// /proc/kpageflags. A page with no frame (not present: never touched, dropped, swapped) and a
// frame the kernel hides (no CAP_SYS_ADMIN: it reads as 0) are told apart (PFN_NOT_PRESENT,
// PFN_HIDDEN), and neither is ever mistaken for a page frame.

import { native } from '../native';
import { errnoError } from './errors';
import { assertBackable } from './memory-limits';
import { assertInteger, assertPageAligned, assertPositiveInteger } from './validate';

/** One page of a pagemap read (see the kernel's admin-guide/mm/pagemap.rst). */
export interface PageInfo {
  /** Bit 63: the page is in RAM. */
  present: boolean;
  /** Bit 62: the page is in swap. */
  swapped: boolean;
  /** Bits 0-54 when present and PFNs are visible; null otherwise (see present and pfnHidden). */
  pfn: number | null;
  /** True when the page is present but the kernel hides its PFN (no CAP_SYS_ADMIN); false when pfn is known or the page is not present. */
  pfnHidden: boolean;
  /** Bit 55: written since the soft-dirty bits were last cleared. */
  softDirty: boolean;
  /** Bit 56: mapped exclusively (by this process only). */
  exclusive: boolean;
  /** Bit 61: a file page or shared anonymous page (memfd pages are). */
  fileOrShared: boolean;
}

/** /proc/kpageflags bit numbers (include/uapi/linux/kernel-page-flags.h). */
export const KPF_LOCKED = 0;
export const KPF_DIRTY = 4;
export const KPF_LRU = 5;
export const KPF_MMAP = 11;
export const KPF_ANON = 12;
export const KPF_SWAPBACKED = 14;
export const KPF_COMPOUND_HEAD = 15;
export const KPF_COMPOUND_TAIL = 16;
export const KPF_HUGE = 17;
export const KPF_UNEVICTABLE = 18;
export const KPF_NOPAGE = 20;
export const KPF_THP = 22;
export const KPF_ZERO_PAGE = 24;

/** readPfns value of a page with no frame: not present (never touched, dropped, or swapped out). */
export const PFN_NOT_PRESENT = -1;
/** readPfns value of a present page whose frame the kernel hides (no CAP_SYS_ADMIN). */
export const PFN_HIDDEN = -2;

import { pfnVisible } from './capabilities';

export { effectiveCapabilities, pfnVisible } from './capabilities';

// One scratch buffer, grown on demand, so the fast path allocates nothing per call.
let scratch = new BigUint64Array(512);
let scratchWords = new Uint32Array(scratch.buffer);

/** The end of x86-64 user address space (47 bits): pagemap has nothing to say beyond it. */
const USER_END = 2 ** 47;
/** The largest query answered in the cached scratch array, and the chunk of a larger one. */
const SCRATCH_MAX = 1 << 20;
/** Below this many pages a query is cheap whatever the machine: no limit is read. */
const CHEAP_PAGES = 1 << 16;

/**
 * Refuses a query that cannot be answered before anything is allocated: a range past user space
 * (RangeError), or results (`offHeap` bytes of typed arrays and `onHeap` bytes of JS objects per
 * page) more than memory or the JS heap can hold (ENOMEM), instead of an OOM kill or a V8 abort.
 */
function assertAnswerable(fn: string, address: number, pages: number, offHeap: number, onHeap: number): void {
  if (address >= 0 && address + pages * native.pageSize > USER_END) {
    throw new RangeError(`Expected a range inside user address space (below 0x${USER_END.toString(16)}) for ${fn} but received ${pages} pages at 0x${address.toString(16)}`);
  }
  if (pages <= CHEAP_PAGES) return;
  assertBackable(pages * offHeap, `${fn}(${pages} pages)`, 'never');
  // node:v8 loads on first use: it pulls in node's stream modules, a few ms at start-up.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const heap = (require('node:v8') as typeof import('node:v8')).getHeapStatistics();
  if (pages * onHeap > heap.heap_size_limit - heap.used_heap_size) {
    throw errnoError('ENOMEM', 'mmap', `${fn}(${pages} pages) needs about ${pages * onHeap} bytes of JS heap, more than the ${heap.heap_size_limit - heap.used_heap_size} left; nothing was read`);
  }
}

function readRaw(address: number, pages: number): Uint32Array {
  assertPageAligned('address', address);
  assertPositiveInteger('pages', pages);
  if (pages > SCRATCH_MAX) {
    // A large query gets its own array (the cached scratch stays small) and is read in chunks:
    // the kernel refuses a single pagemap read of gigabytes (EIO).
    const big = new BigUint64Array(pages);
    for (let i = 0; i < pages; i += SCRATCH_MAX) {
      const n = Math.min(SCRATCH_MAX, pages - i);
      native.pagemapRead(address + i * native.pageSize, n, big.subarray(i, i + n), false);
    }
    return new Uint32Array(big.buffer);
  }
  if (scratch.length < pages) {
    scratch = new BigUint64Array(Math.max(pages, Math.min(SCRATCH_MAX, scratch.length * 2)));
    scratchWords = new Uint32Array(scratch.buffer);
  }
  native.pagemapRead(address, pages, pages === scratch.length ? scratch : scratch.subarray(0, pages), false);
  return scratchWords; // little-endian: word 2i is bits 0-31 of entry i, word 2i+1 bits 32-63
}

// Bits of the high word (entry bit n is high-word bit n-32).
const HI_PRESENT = 1 << 31;
const HI_SWAPPED = 1 << 30;
const HI_FILE = 1 << 29;
const HI_EXCLUSIVE = 1 << 24;
const HI_SOFT_DIRTY = 1 << 23;
const HI_PFN_MASK = 0x7fffff; // bits 32-54
const TWO32 = 2 ** 32;

/**
 * Pagemap entries for `pages` pages from page-aligned `address`, with one pread.
 * @example readPagemap(region.address, 2)[0].pfn
 */
export function readPagemap(address: number, pages: number): PageInfo[] {
  assertPageAligned('address', address);
  assertPositiveInteger('pages', pages);
  assertAnswerable('readPagemap', address, pages, 8, 160);
  const w = readRaw(address, pages);
  const show = pfnVisible();
  const out: PageInfo[] = new Array<PageInfo>(pages);
  for (let i = 0; i < pages; i++) {
    const lo = w[2 * i]!;
    const hi = w[2 * i + 1]!;
    const present = (hi & HI_PRESENT) !== 0;
    const raw = (hi & HI_PFN_MASK) * TWO32 + lo;
    const pfn = present && show && raw !== 0 ? raw : null; // 0 is what a hidden PFN reads as
    out[i] = {
      present,
      swapped: (hi & HI_SWAPPED) !== 0,
      pfn,
      pfnHidden: present && pfn === null,
      softDirty: (hi & HI_SOFT_DIRTY) !== 0,
      exclusive: (hi & HI_EXCLUSIVE) !== 0,
      fileOrShared: (hi & HI_FILE) !== 0,
    };
  }
  return out;
}

/**
 * PFNs only: PFN_NOT_PRESENT (-1) for a page with no frame, PFN_HIDDEN (-2) for a present page
 * whose frame the kernel hides. Allocates nothing when `out` is given (it must hold at least
 * `pages` entries); for the memory model and benchmarks.
 * @example const pfns = readPfns(addr, 512, new Float64Array(512))
 */
export function readPfns(address: number, pages: number, out?: Float64Array): Float64Array {
  if (out !== undefined && (!(out instanceof Float64Array) || out.length < pages)) {
    throw new TypeError(`Expected a Float64Array of at least ${pages} entries for out`);
  }
  assertPageAligned('address', address);
  assertPositiveInteger('pages', pages);
  assertAnswerable('readPfns', address, pages, out === undefined ? 16 : 8, 0);
  const w = readRaw(address, pages);
  const result = out ?? new Float64Array(pages);
  const show = pfnVisible();
  for (let i = 0; i < pages; i++) {
    const hi = w[2 * i + 1]!;
    const pfn = (hi & HI_PFN_MASK) * TWO32 + w[2 * i]!;
    result[i] = (hi & HI_PRESENT) === 0 ? PFN_NOT_PRESENT : show && pfn !== 0 ? pfn : PFN_HIDDEN;
  }
  return result;
}

/**
 * /proc/kpageflags for [pfn, pfn+count): one 64-bit flag word per frame, or null when the file
 * cannot be read (no root, or a kernel without it).
 * @example (readKpageflags(pfn, 1)![0]! >> BigInt(KPF_HUGE)) & 1n
 */
export function readKpageflags(pfn: number, count: number): bigint[] | null {
  assertInteger('pfn', pfn);
  assertPositiveInteger('count', count);
  if (pfn + count > 2 ** 40) throw new RangeError(`Expected PFNs below 2^40 (52-bit physical addresses) for readKpageflags but received ${count} from ${pfn}`);
  if (count > CHEAP_PAGES) assertAnswerable('readKpageflags', -1, count, 8, 48); // -1: no address range
  const out = new BigUint64Array(count);
  try {
    native.kpageflagsRead(pfn, count, out);
  } catch (err) {
    if (err instanceof Error && typeof (err as NodeJS.ErrnoException).code === 'string' && (err as NodeJS.ErrnoException).code!.startsWith('E')) return null;
    throw err;
  }
  return Array.from(out);
}

/** True when bit `kpf` is set in a kpageflags word. @example hasFlag(flags[0]!, KPF_HUGE) */
export function hasKpageflag(flags: bigint, kpf: number): boolean {
  if (typeof flags !== 'bigint') throw new TypeError(`Expected a bigint (a kpageflags word) for flags but received ${String(flags)} of type ${typeof flags}`);
  assertInteger('kpf', kpf, 0, 63);
  return ((flags >> BigInt(kpf)) & 1n) === 1n;
}
