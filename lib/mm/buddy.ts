// The binary buddy allocator (mm/page_alloc.c): per-node free lists of naturally aligned blocks of
// 2^order pages, split on allocation (expand) and merged with their buddy on free.

import { MAX_PAGE_ORDER } from './gfp';
import { PG_buddy, PG_head, pageState, type Page } from './page';

/** The allocators' writes to struct page state. */
const ps = pageState();

/** The free areas of one node: free_area[order] in the kernel. */
interface NodeArea {
  /**
   * Free block heads by order. A Set keeps insertion order, so "take the first" is deterministic,
   * and add/delete/has are O(1): alloc and free cost O(order), whatever the number of free blocks.
   */
  readonly free: Set<number>[];
  freePages: number;
  totalPages: number;
}


function checkInteger(value: number, what: string, min: number): void {
  if (!Number.isSafeInteger(value) || value < min) {
    throw new RangeError(`Expected an integer >= ${min} for ${what} but received ${String(value)}`);
  }
}

const hex = (n: number): string => n.toString(16);

/** The other end of a block's pair: pfn ^ (1 << order), in arithmetic that is safe above 2^31. */
function buddyPfn(pfn: number, order: number): number {
  const size = 1 << order;
  if (pfn < 0x40000000) return pfn ^ size;
  return Math.floor(pfn / size) % 2 === 0 ? pfn + size : pfn - size;
}

/** The first head in `list` whose first `pages` pages end at or below endPfn, or null. */
function firstFitting(list: Set<number>, pages: number, endPfn: number): number | null {
  if (endPfn === Infinity) {
    const first = list.values().next();
    return first.done === true ? null : first.value;
  }
  for (const pfn of list) if (pfn + pages <= endPfn) return pfn;
  return null;
}

/**
 * How many freed order-0 pages a node keeps on its per-CPU-style list before freeing into the
 * buddy lists (the kernel's pcp->high): a page freed and allocated again skips ten splits and
 * merges.
 */
export const PCP_HIGH = 64;

/**
 * What the owner of the memory learns about blocks changing hands (the kernel's
 * free_pages_prepare / post_alloc_hook): page poisoning, and revoking views over freed pages.
 */
export interface BuddyHooks {
  /** [pfn, pfn+pages) became free: by free() (a block as allocated, before it reaches the pcp list) or addRange(). */
  freed(pfn: number, pages: number): void;
  /** [pfn, pfn+pages) was handed out. A throw undoes the allocation (the block is freed again) and propagates. */
  allocated(pfn: number, pages: number): void;
}

export class BuddyAllocator {
  private readonly areas = new Map<number, NodeArea>();
  /** Per-node lists of free order-0 pages kept out of the buddy lists (the kernel's pcp lists). */
  private readonly pcp = new Map<number, number[]>();
  /** nodesByDistance results, per preferred node; cleared when memory is added. */
  private readonly distanceCache = new Map<number, number[]>();
  /** PFN ranges handed to addRange, to refuse overlaps. */
  private readonly ranges: { nid: number; start: number; end: number }[] = [];

  readonly #hooks: BuddyHooks | undefined;

  constructor(private readonly pfnToPage: (pfn: number) => Page, hooks?: BuddyHooks) {
    this.#hooks = hooks;
  }

  /**
   * Give [startPfn, startPfn + count) of node nid to the allocator. The range is freed as maximal
   * naturally aligned blocks, which merge with free neighbours of the same node, as when the
   * kernel frees boot memory (memblock_free_all).
   */
  addRange(nid: number, startPfn: number, count: number): void {
    checkInteger(nid, 'nid', 0);
    checkInteger(startPfn, 'startPfn', 0);
    checkInteger(count, 'count', 0);
    const end = startPfn + count;
    for (const r of this.ranges) {
      if (startPfn < r.end && r.start < end) {
        throw new RangeError(
          `addRange [${startPfn}, ${end}) overlaps [${r.start}, ${r.end}) of node ${r.nid}`,
        );
      }
    }
    if (count === 0) return;
    this.ranges.push({ nid, start: startPfn, end });
    this.distanceCache.clear();
    const area = this.area(nid);
    area.totalPages += count;
    let pfn = startPfn;
    this.#hooks?.freed(startPfn, count);
    while (pfn < end) {
      let order = MAX_PAGE_ORDER;
      while (pfn % (1 << order) !== 0 || pfn + (1 << order) > end) order--;
      this.freeBlock(area, pfn, order);
      pfn += 1 << order;
    }
  }

  /**
   * Allocate 2^order pages (__rmqueue_smallest): the smallest free block on nid that fits, split
   * down. If nid has none and thisNode is false, other nodes are tried by increasing distance
   * |node - nid|, then lower id. Returns null when nothing fits or order > MAX_PAGE_ORDER (the
   * caller decides whether to warn). The head page gets refcount 1 and PG_head if order > 0.
   * Order-0 requests are served from the node's pcp list first; when a request finds nothing,
   * the pcp lists are drained into the buddy lists and it is tried once more, as the kernel does.
   * `endPfn` limits the block to PFNs below it (a zone: ZONE_DMA, ZONE_DMA32); such requests skip
   * the pcp lists and search the free lists for a block low enough.
   */
  allocOrder(nid: number, order: number, thisNode: boolean, endPfn = Infinity): Page | null {
    checkInteger(nid, 'nid', 0);
    checkInteger(order, 'order', 0);
    if (order > MAX_PAGE_ORDER) return null;
    const candidates = thisNode ? [nid] : this.nodesByDistance(nid);
    let page = this.tryAlloc(candidates, order, endPfn);
    if (page === null && this.hasPcpPages()) {
      this.drainPcp();
      page = this.tryAlloc(candidates, order, endPfn);
    }
    if (page !== null && this.#hooks !== undefined) {
      try {
        this.#hooks.allocated(page.pfn, 1 << order);
      } catch (err) {
        this.free(page, order);
        throw err;
      }
    }
    return page;
  }

  private tryAlloc(candidates: readonly number[], order: number, endPfn: number): Page | null {
    for (const node of candidates) {
      const area = this.areas.get(node);
      if (area === undefined) continue;
      let pfn: number | null = null;
      if (order === 0 && endPfn === Infinity) {
        const list = this.pcp.get(node);
        if (list !== undefined && list.length > 0) {
          pfn = list.pop()!;
          area.freePages -= 1;
        }
      }
      pfn ??= this.takeBlock(area, order, endPfn);
      if (pfn === null) continue;
      const page = this.pfnToPage(pfn);
      ps.setFlags(page, page.flags & ~PG_buddy);
      if (order > 0) ps.setFlags(page, page.flags | PG_head);
      ps.setPrivate(page, -1);
      ps.setRefcount(page, 1);
      ps.setAllocOrder(page, order);
      return page;
    }
    return null;
  }

  private hasPcpPages(): boolean {
    for (const list of this.pcp.values()) if (list.length > 0) return true;
    return false;
  }

  /**
   * drain_all_pages: frees every page on the pcp lists into the buddy lists, where they merge.
   * /proc/buddyinfo (freeBlocks) does not show pcp pages, as in the kernel.
   */
  drainPcp(): void {
    for (const [nid, list] of this.pcp) {
      const area = this.areas.get(nid)!;
      while (list.length > 0) {
        area.freePages -= 1;
        this.freeBlock(area, list.pop()!, 0);
      }
    }
  }

  /** Pages waiting on nid's pcp list. */
  pcpPages(nid: number): number {
    return this.pcp.get(nid)?.length ?? 0;
  }

  /**
   * Return a block from allocOrder (__free_pages), merging it with its buddy as far as possible.
   * Throws if the page is not the head of an allocated block or the order differs from the
   * allocation's: the kernel would BUG or silently corrupt its free lists, we refuse.
   */
  free(page: Page, order: number): void {
    const allocOrder = page.allocOrder;
    const nid = this.nodeOfPfn(page.pfn);
    if (allocOrder < 0 || nid < 0) {
      throw new Error(`buddy: free of a page that is not allocated [pfn=0x${hex(page.pfn)}]`);
    }
    if (allocOrder !== order) {
      throw new Error(
        `buddy: free with a different order [pfn=0x${hex(page.pfn)}] ` +
          `[alloc order=${allocOrder}] [free order=${order}]`,
      );
    }
    const area = this.areas.get(nid);
    if (area === undefined) throw new Error(`buddy: node ${nid} vanished`);
    ps.setAllocOrder(page, -1);
    ps.setRefcount(page, 0);
    ps.setFlags(page, page.flags & ~PG_head);
    this.#hooks?.freed(page.pfn, 1 << order);
    if (order === 0) {
      let list = this.pcp.get(nid);
      if (list === undefined) this.pcp.set(nid, (list = []));
      if (list.length < PCP_HIGH) {
        list.push(page.pfn);
        area.freePages += 1;
        return;
      }
    }
    this.freeBlock(area, page.pfn, order);
  }

  /** Order of the allocated block headed by pfn, or -1 if pfn heads no allocated block. */
  allocatedOrder(pfn: number): number {
    return this.nodeOfPfn(pfn) < 0 ? -1 : this.pfnToPage(pfn).allocOrder;
  }

  /** Free pages on nid. */
  freePages(nid: number): number {
    return this.areas.get(nid)?.freePages ?? 0;
  }

  /** Pages given to nid by addRange. */
  totalPages(nid: number): number {
    return this.areas.get(nid)?.totalPages ?? 0;
  }

  /** Free block count per order 0..MAX_PAGE_ORDER, like a line of /proc/buddyinfo. */
  freeBlocks(nid: number): number[] {
    const area = this.areas.get(nid);
    return Array.from({ length: MAX_PAGE_ORDER + 1 }, (_, order) => area?.free[order]?.size ?? 0);
  }

  /** Nodes that have been given memory, in increasing order. */
  nodes(): number[] {
    return [...this.areas.keys()].sort((a, b) => a - b);
  }

  /** The node whose range holds pfn, or -1 (ranges are few: one or two per node). */
  private nodeOfPfn(pfn: number): number {
    for (const r of this.ranges) if (pfn >= r.start && pfn < r.end) return r.nid;
    return -1;
  }

  private area(nid: number): NodeArea {
    let area = this.areas.get(nid);
    if (area === undefined) {
      area = {
        free: Array.from({ length: MAX_PAGE_ORDER + 1 }, () => new Set<number>()),
        freePages: 0,
        totalPages: 0,
      };
      this.areas.set(nid, area);
    }
    return area;
  }

  private nodesByDistance(nid: number): number[] {
    let nodes = this.distanceCache.get(nid);
    if (nodes === undefined) {
      nodes = this.nodes().sort((a, b) => Math.abs(a - nid) - Math.abs(b - nid) || a - b);
      this.distanceCache.set(nid, nodes);
    }
    return nodes;
  }

  private list(area: NodeArea, order: number): Set<number> {
    const list = area.free[order];
    if (list === undefined) throw new RangeError(`order ${order} out of range`);
    return list;
  }

  /**
   * Remove a block of exactly `order` pages ending at or below endPfn from area, splitting a larger
   * one if needed (expand keeps the lower half, so only the head of the result must fit).
   */
  private takeBlock(area: NodeArea, order: number, endPfn: number): number | null {
    for (let current = order; current <= MAX_PAGE_ORDER; current++) {
      const list = this.list(area, current);
      const pfn = firstFitting(list, 1 << order, endPfn);
      if (pfn === null) continue;
      this.unlinkFree(area, list, pfn, current);
      // expand(): keep the lower half, give the upper halves back, largest first.
      while (current > order) {
        current--;
        this.linkFree(area, pfn + (1 << current), current);
      }
      return pfn;
    }
    return null;
  }

  /** __free_one_page: merge with the buddy while it is a free block of the same order. */
  private freeBlock(area: NodeArea, pfn: number, order: number): void {
    // Membership in this node's list is what makes a buddy mergeable: it is then a free head of
    // the same order, on the same node, inside the ranges (nothing else is ever put there).
    while (order < MAX_PAGE_ORDER) {
      const buddy = buddyPfn(pfn, order);
      const list = this.list(area, order);
      if (!list.has(buddy)) break;
      this.unlinkFree(area, list, buddy, order);
      pfn = Math.min(pfn, buddy);
      order++;
    }
    this.linkFree(area, pfn, order);
  }

  private linkFree(area: NodeArea, pfn: number, order: number): void {
    this.list(area, order).add(pfn);
    area.freePages += 1 << order;
    const page = this.pfnToPage(pfn);
    ps.setFlags(page, page.flags | PG_buddy);
    ps.setPrivate(page, order);
  }

  private unlinkFree(area: NodeArea, list: Set<number>, pfn: number, order: number): void {
    list.delete(pfn);
    area.freePages -= 1 << order;
    const page = this.pfnToPage(pfn);
    ps.setFlags(page, page.flags & ~PG_buddy);
    ps.setPrivate(page, -1);
  }
}
