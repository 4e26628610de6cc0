// DMA-API debug's active cacheline tracking (kernel/dma/debug.c, dma_active_cacheline): the cacheline
// each live mapping starts in, with a count of further mappings of that line, so that two mappings
// the device may write and that share a cacheline are reported (the CPU would see stale data).

import { DMA_TO_DEVICE } from './constants';

/** L1_CACHE_SHIFT on x86-64: 64-byte cachelines. */
export const L1_CACHE_SHIFT = 6;
/** The radix tree's three tag bits count the overlaps of a line: at most 7. */
export const ACTIVE_CACHELINE_MAX_OVERLAP = 7;

/** Cacheline number -> overlaps beyond the first mapping. One per owner (a machine: one kernel). */
const trees = new WeakMap<object, Map<bigint, number>>();

function treeOf(owner: object): Map<bigint, number> {
  let tree = trees.get(owner);
  if (tree === undefined) trees.set(owner, (tree = new Map()));
  return tree;
}

/** Owners whose overflow was already WARNed (WARN_ONCE: once per tree, like the tree itself). */
const overflowWarned = new WeakSet<object>();

/** True the first time an owner's tree overflows: the caller WARNs then, and only then. */
export function active_cacheline_first_overflow(owner: object): boolean {
  if (overflowWarned.has(owner)) return false;
  overflowWarned.add(owner);
  return true;
}

/** The cacheline number of a physical address (to_cacheline_number). */
export const to_cacheline_number = (paddr: bigint): bigint => paddr >> BigInt(L1_CACHE_SHIFT);

/** What inserting a mapping found: a free line, a line already mapped, or one mapped too often. */
export type CachelineInsert = 'inserted' | 'overlap' | 'overflow';

/**
 * active_cacheline_insert: track the line `paddr` starts in. A DMA_TO_DEVICE mapping is not tracked
 * (the device does not write, so the CPU cannot read stale data). 'overflow' is the kernel's
 * "exceeded 7 overlapping mappings" (a likely leak): the count stays at 7.
 */
export function active_cacheline_insert(owner: object, paddr: bigint, direction: number): CachelineInsert {
  if (direction === DMA_TO_DEVICE) return 'inserted';
  const tree = treeOf(owner);
  const cln = to_cacheline_number(paddr);
  const overlap = tree.get(cln);
  if (overlap === undefined) {
    tree.set(cln, 0);
    return 'inserted';
  }
  if (overlap + 1 > ACTIVE_CACHELINE_MAX_OVERLAP) return 'overflow';
  tree.set(cln, overlap + 1);
  return 'overlap';
}

/** active_cacheline_remove: one mapping of the line goes; the line is forgotten with its last one. */
export function active_cacheline_remove(owner: object, paddr: bigint, direction: number): void {
  if (direction === DMA_TO_DEVICE) return;
  const tree = treeOf(owner);
  const cln = to_cacheline_number(paddr);
  const overlap = tree.get(cln);
  if (overlap === undefined) return;
  if (overlap === 0) tree.delete(cln);
  else tree.set(cln, overlap - 1);
}
