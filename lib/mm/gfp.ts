// gfp flags and page-size arithmetic: include/linux/gfp_types.h, include/linux/gfp.h,
// include/asm-generic/getorder.h and the page constants of x86-64. All values are JS numbers.

import { describeValue } from '../os/validate';

/**
 * Bit numbers of the plain gfp bits, in the order of the enum in include/linux/gfp_types.h
 * (Linux 6.17). Bit 9 is the former __GFP_ATOMIC, now unused; the KASAN/LOCKDEP/OBJ_EXT bits
 * after ZEROTAGS depend on the kernel config and are left out.
 */
const GFP_BIT = {
  DMA: 0,
  HIGHMEM: 1,
  DMA32: 2,
  MOVABLE: 3,
  RECLAIMABLE: 4,
  HIGH: 5,
  IO: 6,
  FS: 7,
  ZERO: 8,
  UNUSED: 9,
  DIRECT_RECLAIM: 10,
  KSWAPD_RECLAIM: 11,
  WRITE: 12,
  NOWARN: 13,
  RETRY_MAYFAIL: 14,
  NOFAIL: 15,
  NORETRY: 16,
  MEMALLOC: 17,
  COMP: 18,
  NOMEMALLOC: 19,
  HARDWALL: 20,
  THISNODE: 21,
  ACCOUNT: 22,
  ZEROTAGS: 23,
} as const;

/** gfp_t: a bit set of __GFP_* flags. */
export type gfp_t = number;

/** Zone modifiers. */
export const __GFP_DMA = 1 << GFP_BIT.DMA; // 0x01
export const __GFP_HIGHMEM = 1 << GFP_BIT.HIGHMEM; // 0x02
export const __GFP_DMA32 = 1 << GFP_BIT.DMA32; // 0x04
export const __GFP_MOVABLE = 1 << GFP_BIT.MOVABLE; // 0x08
export const __GFP_RECLAIMABLE = 1 << GFP_BIT.RECLAIMABLE; // 0x10
/** Watermark and reclaim modifiers. */
export const __GFP_HIGH = 1 << GFP_BIT.HIGH; // 0x20
export const __GFP_IO = 1 << GFP_BIT.IO; // 0x40
export const __GFP_FS = 1 << GFP_BIT.FS; // 0x80
export const __GFP_ZERO = 1 << GFP_BIT.ZERO; // 0x100
export const __GFP_DIRECT_RECLAIM = 1 << GFP_BIT.DIRECT_RECLAIM; // 0x400
export const __GFP_KSWAPD_RECLAIM = 1 << GFP_BIT.KSWAPD_RECLAIM; // 0x800
export const __GFP_WRITE = 1 << GFP_BIT.WRITE; // 0x1000
export const __GFP_NOWARN = 1 << GFP_BIT.NOWARN; // 0x2000
export const __GFP_RETRY_MAYFAIL = 1 << GFP_BIT.RETRY_MAYFAIL; // 0x4000
export const __GFP_NOFAIL = 1 << GFP_BIT.NOFAIL; // 0x8000
export const __GFP_NORETRY = 1 << GFP_BIT.NORETRY; // 0x10000
export const __GFP_MEMALLOC = 1 << GFP_BIT.MEMALLOC; // 0x20000
export const __GFP_COMP = 1 << GFP_BIT.COMP; // 0x40000
export const __GFP_NOMEMALLOC = 1 << GFP_BIT.NOMEMALLOC; // 0x80000
export const __GFP_HARDWALL = 1 << GFP_BIT.HARDWALL; // 0x100000
export const __GFP_THISNODE = 1 << GFP_BIT.THISNODE; // 0x200000
export const __GFP_ACCOUNT = 1 << GFP_BIT.ACCOUNT; // 0x400000
export const __GFP_ZEROTAGS = 1 << GFP_BIT.ZEROTAGS; // 0x800000

export const __GFP_RECLAIM = __GFP_DIRECT_RECLAIM | __GFP_KSWAPD_RECLAIM;

/** The common combinations (include/linux/gfp_types.h, 6.17). */
export const GFP_ATOMIC = __GFP_HIGH | __GFP_KSWAPD_RECLAIM;
export const GFP_KERNEL = __GFP_RECLAIM | __GFP_IO | __GFP_FS;
// 6.17 value; later kernels add __GFP_NOWARN here.
export const GFP_NOWAIT = __GFP_KSWAPD_RECLAIM;
export const GFP_NOIO = __GFP_RECLAIM;
export const GFP_NOFS = __GFP_RECLAIM | __GFP_IO;
export const GFP_DMA = __GFP_DMA;
export const GFP_DMA32 = __GFP_DMA32;

/** True if the caller may sleep, i.e. may enter direct reclaim (include/linux/gfp.h). */
export function gfpflags_allow_blocking(gfp: gfp_t): boolean {
  if (typeof gfp !== 'number') throw new TypeError(`gfpflags_allow_blocking: Expected gfp flags (a number made of __GFP_* bits) for gfp but received ${describeValue(gfp)}`);
  return (gfp & __GFP_DIRECT_RECLAIM) !== 0;
}

/** x86-64 page constants (arch/x86/include/asm/page_types.h). */
export const PAGE_SHIFT = 12;
export const PAGE_SIZE = 4096;
/** Largest buddy order: 2^10 pages = 4 MiB (include/linux/mmzone.h). */
export const MAX_PAGE_ORDER = 10;
/** "No preferred node" (include/linux/numa.h). */
export const NUMA_NO_NODE = -1;

/** 2^53: the largest size a JS number holds exactly that is still a multiple of PAGE_SIZE. */
const MAX_SIZE = 2 ** 53;

function checkSize(size: number, what: string): void {
  if (typeof size !== 'number') {
    throw new TypeError(`Expected an integer in 0..2^53 for ${what} but received ${describeValue(size)}`);
  }
  if (!Number.isInteger(size) || size < 0 || size > MAX_SIZE) {
    throw new RangeError(`Expected an integer in 0..2^53 for ${what} but received ${String(size)}`);
  }
}

/** Round size up to a whole number of pages; 0 stays 0 (include/linux/mm.h). */
export function PAGE_ALIGN(size: number): number {
  checkSize(size, 'size');
  // Division by a power of two is exact for integers, so this stays exact up to 2^53.
  return Math.ceil(size / PAGE_SIZE) * PAGE_SIZE;
}

/** Index of the highest set bit, 1-based; 0 for 0 (fls64). Safe for integers up to 2^53. */
export function fls64(x: number): number {
  if (x === 0) return 0;
  // 32-bit operators would truncate, so split into two 32-bit halves arithmetically.
  const hi = Math.floor(x / 2 ** 32);
  return hi !== 0 ? 64 - Math.clz32(hi) : 32 - Math.clz32(x);
}

/**
 * The buddy order that covers size bytes: fls64((size - 1) >> PAGE_SHIFT).
 * 1..4096 -> 0, 4097..8192 -> 1, 3 pages -> 2. Size 0 is undefined in the kernel; at runtime
 * size - 1 wraps to 2^64 - 1 and the result is 52, which is what this returns.
 */
export function get_order(size: number): number {
  checkSize(size, 'size');
  if (size === 0) return 64 - PAGE_SHIFT;
  return fls64(Math.floor((size - 1) / PAGE_SIZE));
}
