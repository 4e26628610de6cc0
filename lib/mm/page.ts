// struct page: one object per physical page frame, created on first use and then always the same
// object for the same PFN (identity, like the kernel's mem_map). Allocators keep their state here.

/** Page flags (a small subset of include/linux/page-flags.h that the allocators need). */
export const PG_buddy = 1 << 0; // free, and the head of a free buddy block of order `private`
export const PG_reserved = 1 << 1; // not managed by the buddy allocator (e.g. belongs to a CMA area)
export const PG_head = 1 << 2; // head of an allocated higher-order block
export const PG_cma = 1 << 3; // lies inside a CMA area

/** The kinds of memory a page's segment can be. */
export type SegmentKind = 'ram' | 'cma';

/**
 * What a page knows of the segment that holds it. Implemented by lib/mm/segment.ts; kept as an
 * interface here so that allocators and the DMA layer need nothing else of the memory model.
 */
export interface PageSegment {
  readonly kind: SegmentKind;
  readonly nid: number;
  /** First PFN of the segment. */
  readonly startPfn: number;
  /** Number of 4 KiB pages. */
  readonly pages: number;
  /** The memfd that holds the segment's bytes; page i is at file offset i * PAGE_SIZE. */
  readonly fd: number;
  /** 4096, or 2 MiB for hugetlb-backed segments (such memory can only be mapped in whole huge pages). */
  readonly mapGranule: number;
}

export class Page {
  /** Page flags, PG_*. */
  flags = 0;
  /** Reference count: 1 while allocated, 0 while free. */
  refcount = 0;
  /** Allocator-private word: the buddy order of a free block head (PG_buddy), else -1. */
  private_ = -1;
  /**
   * The order of the block this page heads while the buddy allocator has it handed out, else -1
   * (the kernel keeps a folio's order in its head page too).
   */
  allocOrder = -1;
  #phys: bigint | undefined;

  constructor(
    /** Page frame number: physical address >> PAGE_SHIFT. */
    readonly pfn: number,
    /** The segment (RAM of one node, or a CMA area) that holds this page. */
    readonly segment: PageSegment,
    /** The machine this page belongs to (typed loosely to avoid an import cycle). */
    readonly machine: unknown,
  ) {}

  /** page_to_phys: pfn << PAGE_SHIFT, computed once (BigInt arithmetic is not free on hot paths). */
  get phys(): bigint {
    return (this.#phys ??= BigInt(this.pfn) << 12n);
  }

  /** NUMA node of the page (page_to_nid). */
  get nid(): number {
    return this.segment.nid;
  }
}
