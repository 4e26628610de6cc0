// Page fragments (mm/page_frag_cache.c, Linux 6.17): a cache carves small buffers out of one 32 KiB
// compound page (a single page when that cannot be had), front to back; each fragment holds a page
// reference, so the page is freed once the cache has moved on and every fragment was freed.
// netdev_alloc_frag is the network stack's cache (GFP_ATOMIC, sizes rounded to a cache line).

import { defaultMachine } from './default';
import { GFP_ATOMIC, NUMA_NO_NODE, PAGE_SIZE, __GFP_COMP, __GFP_DIRECT_RECLAIM, __GFP_NOMEMALLOC, __GFP_NORETRY, __GFP_NOWARN, type gfp_t } from './gfp';
import { Machine } from './machine';
import { Page, pageState } from './page';
import { put_page } from './page_ref';
import { machineOfAddress } from './registry';
import { checkGfp, checkInt, describeValue } from './validate';

const ps = pageState();

/** PAGE_FRAG_CACHE_MAX_SIZE: 32 KiB, an order-3 page. */
export const PAGE_FRAG_CACHE_MAX_SIZE = 32768;
const PAGE_FRAG_CACHE_MAX_ORDER = 3;
/** SMP_CACHE_BYTES on x86-64: netdev_alloc_frag rounds sizes to it (SKB_DATA_ALIGN). */
const SMP_CACHE_BYTES = 64;

/** The cache's private operations (set by PageFragCache's static block). */
let fragOps: {
  alloc(nc: PageFragCache, m: Machine, fragsz: number, gfp: gfp_t, alignMask: number): number | null;
  drain(nc: PageFragCache): void;
};

/** struct page_frag_cache: the page being carved, the next offset, and the references it still holds. */
export class PageFragCache {
  #machine: Machine | null = null;
  #page: Page | null = null;
  #order = 0;
  #offset = 0;
  #pagecntBias = 0;

  static {
    fragOps = {
      alloc: (nc, m, fragsz, gfp, alignMask) => nc.#alloc(m, fragsz, gfp, alignMask),
      drain: (nc) => nc.#drain(),
    };
  }

  /** The cache's page (null before the first fragment). */
  get page(): Page | null {
    return this.#page;
  }

  #refill(m: Machine, gfp: gfp_t): boolean {
    const g = (gfp & ~__GFP_DIRECT_RECLAIM) | __GFP_COMP | __GFP_NOWARN | __GFP_NORETRY | __GFP_NOMEMALLOC;
    let page = m.alloc_pages_node(NUMA_NO_NODE, g, PAGE_FRAG_CACHE_MAX_ORDER);
    let order = PAGE_FRAG_CACHE_MAX_ORDER;
    if (page === null) {
      page = m.alloc_pages_node(NUMA_NO_NODE, gfp, 0);
      order = 0;
    }
    if (page === null) return false;
    this.#machine = m;
    this.#page = page;
    this.#order = order;
    // page_ref_add(PAGE_FRAG_CACHE_MAX_SIZE): the cache holds a large bias and gives one up per fragment.
    ps.setRefcount(page, page.refcount + PAGE_FRAG_CACHE_MAX_SIZE);
    this.#pagecntBias = PAGE_FRAG_CACHE_MAX_SIZE + 1;
    this.#offset = 0;
    return true;
  }

  #alloc(m: Machine, fragsz: number, gfp: gfp_t, alignMask: number): number | null {
    if (this.#page !== null && this.#machine !== m) throw new TypeError(`page_frag_alloc: this cache carves pages of machine '${this.#machine!.name}', not '${m.name}'`);
    if (this.#page === null && !this.#refill(m, gfp)) return null;
    let size = PAGE_SIZE << this.#order;
    let offset = alignUp(this.#offset, alignMask);
    if (offset + fragsz > size) {
      if (fragsz > PAGE_SIZE) return null;
      const page = this.#page!;
      // page_ref_sub_and_test(pagecnt_bias): the fragments handed out still hold the rest.
      const left = page.refcount - this.#pagecntBias;
      if (left > 0) {
        ps.setRefcount(page, left);
        this.#page = null;
        if (!this.#refill(m, gfp)) return null;
      } else {
        // Every fragment was freed: reuse the page from the start.
        ps.setRefcount(page, PAGE_FRAG_CACHE_MAX_SIZE + 1);
        this.#pagecntBias = PAGE_FRAG_CACHE_MAX_SIZE + 1;
      }
      size = PAGE_SIZE << this.#order;
      offset = 0;
      if (fragsz > size) return null;
    }
    this.#pagecntBias--;
    this.#offset = offset + fragsz;
    return m.page_address(this.#page!) + offset;
  }

  /** page_frag_cache_drain: give back the cache's references (the page is freed once its fragments are). */
  #drain(): void {
    const page = this.#page;
    if (page === null || this.#machine === null || this.#machine.isDestroyed) {
      this.#page = null;
      return;
    }
    const left = page.refcount - this.#pagecntBias + 1;
    ps.setRefcount(page, left);
    this.#page = null;
    put_page(page);
  }
}

function alignUp(offset: number, alignMask: number): number {
  // __ALIGN_KERNEL_MASK(offset, ~align_mask): align_mask is ~(align - 1).
  const align = (~alignMask >>> 0) + 1;
  return Math.ceil(offset / align) * align;
}

function checkCache(fn: string, nc: unknown): asserts nc is PageFragCache {
  if (!(nc instanceof PageFragCache)) throw new TypeError(`${fn}: Expected a PageFragCache (new PageFragCache()) for nc but received ${describeValue(nc)}`);
}

/**
 * page_frag_alloc_align: `fragsz` bytes aligned to `align` (a power of two) from the cache, on
 * `machine` (the default machine when omitted); null when no page can be had or fragsz does not fit.
 */
export function page_frag_alloc_align(nc: PageFragCache, fragsz: number, gfp: gfp_t, align: number, machine?: Machine): number | null {
  const fn = 'page_frag_alloc_align';
  checkCache(fn, nc);
  checkInt(fn, 'fragsz', fragsz, 0, 2 ** 32 - 1);
  checkGfp(fn, gfp);
  checkInt(fn, 'align', align, 1, PAGE_SIZE);
  if ((align & (align - 1)) !== 0) throw new RangeError(`${fn}: Expected a power of two for align but received ${align}`);
  if (machine !== undefined && !(machine instanceof Machine)) throw new TypeError(`${fn}: Expected a Machine for machine but received ${describeValue(machine)}`);
  const m = machine ?? defaultMachine();
  m.assertAlive();
  return fragOps.alloc(nc, m, fragsz, gfp, ~(align - 1) >>> 0);
}

/** page_frag_alloc: page_frag_alloc_align with no alignment. */
export function page_frag_alloc(nc: PageFragCache, fragsz: number, gfp: gfp_t, machine?: Machine): number | null {
  return page_frag_alloc_align(nc, fragsz, gfp, 1, machine);
}

/** page_frag_cache_drain: the cache lets go of its page. */
export function page_frag_cache_drain(nc: PageFragCache): void {
  checkCache('page_frag_cache_drain', nc);
  fragOps.drain(nc);
}

/** page_frag_free: drops the fragment's reference to its page (the page goes once all are dropped). */
export function page_frag_free(addr: number): void {
  checkInt('page_frag_free', 'addr', addr, 0);
  const m = machineOfAddress(addr);
  if (m === null || !m.isLinearAddress(addr)) throw new RangeError(`page_frag_free: 0x${addr.toString(16)} is not a linear-map address of a live machine`);
  const page = m.virt_to_page(addr);
  // virt_to_folio: the compound head (order-3 blocks are naturally aligned).
  const headPfn = page.pfn - (page.pfn % (1 << PAGE_FRAG_CACHE_MAX_ORDER));
  const head = m.pfn_to_page(headPfn);
  put_page(head.allocOrder === PAGE_FRAG_CACHE_MAX_ORDER && page.pfn < headPfn + 8 ? head : page);
}

const netdevCaches = new WeakMap<Machine, PageFragCache>();

/** netdev_alloc_frag: a fragment of the machine's network cache (GFP_ATOMIC, SKB_DATA_ALIGN'ed size). */
export function netdev_alloc_frag(fragsz: number, machine?: Machine): number | null {
  checkInt('netdev_alloc_frag', 'fragsz', fragsz, 0, 2 ** 32 - 1);
  const m = machine ?? defaultMachine();
  if (!(m instanceof Machine)) throw new TypeError(`netdev_alloc_frag: Expected a Machine for machine but received ${describeValue(m)}`);
  let nc = netdevCaches.get(m);
  if (nc === undefined) netdevCaches.set(m, (nc = new PageFragCache()));
  const size = Math.ceil(fragsz / SMP_CACHE_BYTES) * SMP_CACHE_BYTES;
  return page_frag_alloc_align(nc, size, GFP_ATOMIC, 1, m);
}
