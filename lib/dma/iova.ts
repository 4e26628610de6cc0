// The IOVA allocator: drivers/iommu/iova.c. Size-aligned ranges of IOVA pages, carved top-down
// below a limit, with per-size caches of freed ranges (the kernel's rcaches) and reserved ranges
// (reserve_iova) that are never handed out.

/** Sizes below 2^(6-1) pages are rounded up to a power of two so the caches can hold them (iova.c). */
const IOVA_RANGE_CACHE_MAX_SIZE = 6;

/** The last IOVA page below 4 GiB (iovad->dma_32bit_pfn - 1). */
export const IOVA_32BIT_LAST_PFN = 0xfffff;

function roundup_pow_of_two(n: number): number {
  if (n <= 1) return 1;
  if (n <= 2 ** 30) return 2 ** (32 - Math.clz32(n - 1));
  return 2 ** Math.ceil(Math.log2(n));
}

/**
 * An IOVA space [start_pfn, end_pfn] (struct iova_domain).
 *
 * Design: the space is split at 4 GiB into two zones, as the kernel keeps two cached search starts
 * (cached32_node and cached_node), so that 32-bit allocations of a PCI device do not move where
 * full-mask ones begin. In each zone everything from the zone's start up to its bump (`bumpLow`,
 * `bumpHigh`) is free except reserved ranges, and allocations carve top-down from the bump,
 * size-aligned like alloc_iova(size_aligned=true), skipping reserved ranges; pages below start_pfn
 * are never handed out. Freed ranges go back to a bump when they sit right on it (LIFO use costs
 * nothing) and otherwise onto a per-size stack, the equivalent of Linux's per-CPU rcaches: the
 * next request of that size takes it in O(1) if it lies under the request's limit. When neither
 * works, the slow path searches the gaps between live, reserved (and, without flush_rcache, cached)
 * ranges top-down (what alloc_iova's rbtree walk does); with flush_rcache it first drains the flush
 * queue and drops the caches. It then resets the bumps to the lowest occupied range of each zone,
 * which is how freed space coalesces again. Map + unmap of a granule is then a few Map operations.
 */
export class IovaDomain {
  /** First page above the low zone: 4 GiB, or end_pfn + 1 for a smaller space. */
  private readonly boundary: number;
  private bumpLow: number;
  private bumpHigh: number;
  private readonly live = new Map<number, number>();
  private readonly rcache = new Map<number, number[]>();
  /** reserve_iova ranges as [lo, hi] pages, inclusive; never allocated, never freed. */
  private readonly reserved: [number, number][] = [];

  /**
   * @param counters where the pages allocated are counted (the IOMMU domain's live counters).
   * @param drainFlushQueue runs before the slow path searches with flush_rcache: in lazy mode,
   *   IOVAs queued for the next IOTLB flush hold space that a flush gives back (it calls free_iova
   *   for each).
   */
  constructor(
    readonly start_pfn: number,
    readonly end_pfn: number,
    private readonly counters: { iovaAllocated: number },
    private readonly drainFlushQueue: () => void,
  ) {
    this.boundary = Math.min(end_pfn + 1, IOVA_32BIT_LAST_PFN + 1);
    this.bumpLow = this.boundary;
    this.bumpHigh = end_pfn + 1;
  }

  /**
   * reserve_iova: pages [lo, hi] are never handed out (clipped to the space). Meant for domain
   * set-up (iova_reserve_iommu_regions), before anything is allocated there.
   */
  reserve_iova(lo: number, hi: number): void {
    const a = Math.max(lo, this.start_pfn);
    const b = Math.min(hi, this.end_pfn);
    if (a > b) return;
    this.reserved.push([a, b]);
    this.reserved.sort((x, y) => y[0] - x[0]);
  }

  /** Reserved ranges as [first page, last page], highest first. */
  reservedRanges(): [number, number][] {
    return this.reserved.map(([a, b]) => [a, b]);
  }

  /**
   * alloc_iova_fast: `pages` IOVA pages ending at or below limitPfn, aligned to their size rounded
   * up to a power of two. Returns the first IOVA page, or 0 when the space is exhausted.
   * flushRcache false (dma-iommu's first, 32-bit attempt) gives up without draining the flush
   * queue or the caches; the search still covers every gap.
   */
  alloc_iova(pages: number, limitPfn: number, flushRcache = true): number {
    let size = pages;
    if (size < 1 << (IOVA_RANGE_CACHE_MAX_SIZE - 1)) size = roundup_pow_of_two(size);
    const cached = this.rcache.get(size);
    if (cached !== undefined && cached.length > 0) {
      const pfn = cached[cached.length - 1]!;
      if (pfn + size - 1 <= limitPfn) {
        cached.pop();
        return this.insert(pfn, size);
      }
    }
    const align = roundup_pow_of_two(size);
    if (limitPfn >= this.boundary) {
      const pfn = this.carve(Math.min(this.bumpHigh, limitPfn + 1), size, align, this.boundary);
      if (pfn !== 0) {
        this.bumpHigh = pfn;
        return this.insert(pfn, size);
      }
    }
    const pfn = this.carve(Math.min(this.bumpLow, limitPfn + 1), size, align, this.start_pfn);
    if (pfn !== 0) {
      this.bumpLow = pfn;
      return this.insert(pfn, size);
    }
    return this.allocSlow(size, align, limitPfn, flushRcache);
  }

  /** The highest aligned run of `size` pages below `top` and at or above `floor` that misses every reserved range; 0 if none. */
  private carve(top: number, size: number, align: number, floor: number): number {
    for (;;) {
      const pfn = Math.floor((top - size) / align) * align;
      if (pfn < floor || pfn < this.start_pfn) return 0;
      let hit = -1;
      for (const [lo, hi] of this.reserved) {
        if (lo < pfn + size && hi >= pfn) {
          hit = lo;
          break;
        }
      }
      if (hit < 0) return pfn;
      top = hit;
    }
  }

  private insert(pfn: number, size: number): number {
    this.live.set(pfn, size);
    this.counters.iovaAllocated += size;
    return pfn;
  }

  /** Search the gaps between occupied ranges top-down (after a flush of what holds IOVAs back, with flushRcache). */
  private allocSlow(size: number, align: number, limitPfn: number, flushRcache: boolean): number {
    if (flushRcache) {
      this.drainFlushQueue();
      this.rcache.clear();
    }
    const held: [number, number][] = [...this.live];
    for (const [sz, stack] of this.rcache) for (const pfn of stack) held.push([pfn, sz]);
    const blocks = held.concat(this.reserved.map(([lo, hi]) => [lo, hi - lo + 1] as [number, number]));
    blocks.sort((a, b) => b[0] - a[0]);
    let found = 0;
    let cursor = limitPfn + 1;
    for (const [lo, sz] of blocks) {
      const hi = lo + sz;
      if (hi < cursor) {
        const pfn = Math.floor((cursor - size) / align) * align;
        if (pfn >= hi && pfn >= this.start_pfn) {
          found = pfn;
          break;
        }
      }
      if (lo < cursor) cursor = lo;
      if (cursor <= this.start_pfn) break;
    }
    if (found === 0 && cursor > this.start_pfn) {
      const pfn = Math.floor((cursor - size) / align) * align;
      if (pfn >= this.start_pfn) found = pfn;
    }
    if (found !== 0) held.push([found, size]);
    // Below the lowest held range of each zone everything is free (reserved ranges aside).
    let low = this.boundary;
    let high = this.end_pfn + 1;
    for (const [lo, sz] of held) {
      if (lo < low) low = lo;
      if (lo + sz > this.boundary && lo < high) high = Math.max(lo, this.boundary);
    }
    this.bumpLow = low;
    this.bumpHigh = high;
    return found === 0 ? 0 : this.insert(found, size);
  }

  /** free_iova_fast: false when `pfn` starts no allocated range (the kernel ignores such frees). */
  free_iova(pfn: number): boolean {
    const size = this.live.get(pfn);
    if (size === undefined) return false;
    this.live.delete(pfn);
    this.counters.iovaAllocated -= size;
    if (pfn === this.bumpLow && pfn + size <= this.boundary) {
      this.bumpLow = pfn + size;
      return true;
    }
    if (pfn === this.bumpHigh) {
      this.bumpHigh = pfn + size;
      return true;
    }
    let stack = this.rcache.get(size);
    if (stack === undefined) this.rcache.set(size, (stack = []));
    stack.push(pfn);
    return true;
  }

  /** IOVA ranges allocated now, as [first page, pages] (reserved ranges not included). */
  allocatedRanges(): [number, number][] {
    return [...this.live];
  }
}
