// struct page: one object per physical page frame, created on first use and then always the same
// object for the same PFN (identity, like the kernel's mem_map). Allocators keep their state here.

/** Page flags (a small subset of include/linux/page-flags.h that the allocators need). */
export const PG_buddy = 1 << 0; // free, and the head of a free buddy block of order `private`
export const PG_reserved = 1 << 1; // not managed by the buddy allocator (e.g. belongs to a CMA area)
export const PG_head = 1 << 2; // head of an allocated higher-order block
export const PG_cma = 1 << 3; // lies inside a CMA area

/** The kinds of memory a page's segment can be. */
export type SegmentKind = 'ram' | 'cma' | 'user';

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

/**
 * Only the memory model makes pages (segment.ts, and unit tests of the allocators with their own
 * segments): a page forged with another PFN or segment would name memory the model never mapped.
 */
export const PAGE_CONSTRUCTION_KEY: unique symbol = Symbol('dmamem page construction');

/** The allocators' writes to a page's state (only lib/mm imports this; pages are read-only outside). */
export interface PageStateWriter {
  setFlags(page: Page, flags: number): void;
  setRefcount(page: Page, refcount: number): void;
  setPrivate(page: Page, value: number): void;
  setAllocOrder(page: Page, order: number): void;
}

// eslint-disable-next-line prefer-const -- assigned once, in Page's static block
let writer: PageStateWriter | undefined;

export class Page {
  #flags = 0;
  #refcount = 0;
  #private = -1;
  #allocOrder = -1;
  #phys: bigint | undefined;

  static {
    writer = {
      setFlags: (page, flags) => { page.#flags = flags; },
      setRefcount: (page, refcount) => { page.#refcount = refcount; },
      setPrivate: (page, value) => { page.#private = value; },
      setAllocOrder: (page, order) => { page.#allocOrder = order; },
    };
  }

  constructor(
    /** Page frame number: physical address >> PAGE_SHIFT. */
    readonly pfn: number,
    /** The segment (RAM of one node, or a CMA area) that holds this page. */
    readonly segment: PageSegment,
    /** The machine this page belongs to (typed loosely to avoid an import cycle). */
    readonly machine: unknown,
    key?: typeof PAGE_CONSTRUCTION_KEY,
  ) {
    if (key !== PAGE_CONSTRUCTION_KEY) throw new TypeError('Page: pages are made by the memory model (pfn_to_page), not constructed');
    Object.freeze(this);
  }

  /** Page flags, PG_*. */
  get flags(): number {
    return this.#flags;
  }

  /** Reference count: 1 while allocated, 0 while free. */
  get refcount(): number {
    return this.#refcount;
  }

  /** Allocator-private word: the buddy order of a free block head (PG_buddy), else -1. */
  get private_(): number {
    return this.#private;
  }

  /**
   * The order of the block this page heads while the buddy allocator has it handed out, else -1
   * (the kernel keeps a folio's order in its head page too).
   */
  get allocOrder(): number {
    return this.#allocOrder;
  }

  /** page_to_phys: pfn << PAGE_SHIFT, computed once (BigInt arithmetic is not free on hot paths). */
  get phys(): bigint {
    return (this.#phys ??= BigInt(this.pfn) << 12n);
  }

  /** NUMA node of the page (page_to_nid). */
  get nid(): number {
    return this.segment.nid;
  }
}

/** The writer of pages' allocator state, for lib/mm's allocators and segments. */
export function pageState(): PageStateWriter {
  return writer!;
}
