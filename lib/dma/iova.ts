// The IOVA allocator: drivers/iommu/iova.c. Size-aligned ranges of IOVA pages, carved top-down
// below a limit, with per-size caches of freed ranges (the kernel's rcaches).

/** Sizes below 2^(6-1) pages are rounded up to a power of two so the caches can hold them (iova.c). */
const IOVA_RANGE_CACHE_MAX_SIZE = 6;

function roundup_pow_of_two(n: number): number {
  if (n <= 1) return 1;
  if (n <= 2 ** 30) return 2 ** (32 - Math.clz32(n - 1));
  return 2 ** Math.ceil(Math.log2(n));
}

/**
 * An IOVA space [start_pfn, end_pfn] (struct iova_domain).
 *
 * Design: everything below `bump` is free, and allocations carve top-down from it, size-aligned
 * like alloc_iova(size_aligned=true); pages below start_pfn are never handed out. Freed ranges go
 * back to `bump` when they sit right on it (LIFO use costs nothing) and otherwise onto a per-size
 * stack, the equivalent of Linux's per-CPU rcaches: the next request of that size takes it in O(1)
 * if it lies under the request's limit. When neither works, the slow path drains the flush queue,
 * drops the caches and searches the gaps between live ranges top-down (what alloc_iova's rbtree
 * walk does), then resets `bump` to the lowest live range, which is how freed space coalesces
 * again. Map + unmap of a granule is then a few Map operations.
 */
export class IovaDomain {
  private bump: number;
  private readonly live = new Map<number, number>();
  private readonly rcache = new Map<number, number[]>();

  /**
   * @param counters where the pages allocated are counted (the IOMMU domain's live counters).
   * @param drainFlushQueue runs before the slow path searches: in lazy mode, IOVAs queued for the
   *   next IOTLB flush hold space that a flush gives back (it calls free_iova for each).
   */
  constructor(
    readonly start_pfn: number,
    readonly end_pfn: number,
    private readonly counters: { iovaAllocated: number },
    private readonly drainFlushQueue: () => void,
  ) {
    this.bump = end_pfn + 1;
  }

  /**
   * alloc_iova_fast: `pages` IOVA pages ending at or below limitPfn, aligned to their size rounded
   * up to a power of two. Returns the first IOVA page, or 0 when the space is exhausted.
   */
  alloc_iova(pages: number, limitPfn: number): number {
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
    const top = Math.min(this.bump, limitPfn + 1);
    const pfn = Math.floor((top - size) / align) * align;
    if (pfn >= this.start_pfn) {
      this.bump = pfn;
      return this.insert(pfn, size);
    }
    return this.allocSlow(size, align, limitPfn);
  }

  private insert(pfn: number, size: number): number {
    this.live.set(pfn, size);
    this.counters.iovaAllocated += size;
    return pfn;
  }

  /** Flush everything that holds IOVAs back, then search the gaps between live ranges top-down. */
  private allocSlow(size: number, align: number, limitPfn: number): number {
    this.drainFlushQueue();
    this.rcache.clear();
    const blocks = [...this.live].sort((a, b) => b[0] - a[0]);
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
    // The caches are empty now, so everything below the lowest live range is free.
    const lowest = blocks.length > 0 ? blocks[blocks.length - 1]![0] : this.end_pfn + 1;
    this.bump = found === 0 ? lowest : Math.min(lowest, found);
    return found === 0 ? 0 : this.insert(found, size);
  }

  /** free_iova_fast: false when `pfn` starts no allocated range (the kernel ignores such frees). */
  free_iova(pfn: number): boolean {
    const size = this.live.get(pfn);
    if (size === undefined) return false;
    this.live.delete(pfn);
    this.counters.iovaAllocated -= size;
    if (pfn === this.bump) {
      this.bump = pfn + size;
      return true;
    }
    let stack = this.rcache.get(size);
    if (stack === undefined) this.rcache.set(size, (stack = []));
    stack.push(pfn);
    return true;
  }

  /** IOVA ranges allocated now, as [first page, pages]. */
  allocatedRanges(): [number, number][] {
    return [...this.live];
  }
}
