// kmalloc and friends (mm/slub.c, mm/slab_common.c) as drivers use them: size classes of 8 bytes to
// 8 KiB carved from slabs of buddy pages in the linear map (so DMA-mappable), larger sizes straight
// from the page allocator, ksize, krealloc, kcalloc's overflow check, and kfree by address.

import { MAX_PAGE_ORDER, NUMA_NO_NODE, PAGE_SIZE, __GFP_COMP, __GFP_NOWARN, __GFP_ZERO, get_order, type gfp_t } from './gfp';
import { defaultMachine } from './default';
import { Machine } from './machine';
import type { Page } from './page';
import { machineOfAddress } from './registry';
import { checkGfp, checkInt, checkSize, describeValue } from './validate';

/** The kmalloc size classes of SLUB with 4 KiB pages (kmalloc-8 ... kmalloc-8k). */
export const KMALLOC_SIZES: readonly number[] = Object.freeze([8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192]);
/** KMALLOC_MAX_CACHE_SIZE: above it, kmalloc takes whole pages (kmalloc_large). */
export const KMALLOC_MAX_CACHE_SIZE = 8192;
/** KMALLOC_MAX_SIZE: 2^(MAX_PAGE_ORDER + PAGE_SHIFT); larger requests fail (NULL, with a WARN). */
export const KMALLOC_MAX_SIZE = PAGE_SIZE << MAX_PAGE_ORDER;
/** ARCH_KMALLOC_MINALIGN on x86-64: __alignof__(unsigned long long). */
export const ARCH_KMALLOC_MINALIGN = 8;
/** ZERO_SIZE_PTR: what kmalloc(0) returns; kfree and ksize accept it. */
export const ZERO_SIZE_PTR = 16;

/** slub_min_objects for the modelled 2 CPUs: 4 * (fls(nr_cpu_ids) + 1). */
const MIN_OBJECTS = 12;
/** PAGE_ALLOC_COSTLY_ORDER: SLUB's slab order ceiling. */
const MAX_SLAB_ORDER = 3;

/** One slab: 2^order pages of one cache, its free objects (indices, last freed on top). */
interface Slab {
  readonly cache: KmemCache;
  readonly page: Page;
  readonly addr: number;
  readonly free: number[];
  readonly freeSet: Set<number>;
}

interface KmemCache {
  readonly name: string;
  readonly size: number;
  readonly order: number;
  readonly objects: number;
  /** Slabs with a free object, the one to use last. */
  readonly partial: Slab[];
}

interface SlabState {
  readonly caches: KmemCache[];
  /** Every page of every slab, by pfn. */
  readonly slabOfPfn: Map<number, Slab>;
  /** kmalloc_large allocations: head pfn -> order. */
  readonly large: Map<number, number>;
}

const states = new WeakMap<Machine, SlabState>();

function stateOf(m: Machine): SlabState {
  let st = states.get(m);
  if (st === undefined) {
    const caches = KMALLOC_SIZES.map((size) => {
      let order = 0;
      while (order < MAX_SLAB_ORDER && (PAGE_SIZE << order) / size < MIN_OBJECTS) order++;
      return { name: `kmalloc-${size >= 1024 ? `${size / 1024}k` : size}`, size, order, objects: Math.floor((PAGE_SIZE << order) / size), partial: [] };
    });
    st = { caches, slabOfPfn: new Map(), large: new Map() };
    states.set(m, st);
  }
  return st;
}

/** kmalloc_index: the size class a request lands in. */
function cacheFor(st: SlabState, size: number): KmemCache {
  for (const c of st.caches) if (size <= c.size) return c;
  throw new RangeError(`kmalloc: no cache for ${size} bytes`);
}

function warnOnce(m: Machine, message: string): void {
  if (!m.warnings.some((w) => w.message === message)) m.warn(message);
}

function kmallocOn(m: Machine, size: number, gfp: gfp_t, node: number, fn: string): number | null {
  checkSize(fn, 'size', size);
  checkGfp(fn, gfp);
  checkInt(fn, 'node', node, NUMA_NO_NODE);
  m.assertAlive();
  if (size === 0) return ZERO_SIZE_PTR;
  const st = stateOf(m);
  let addr: number;
  let objSize: number;
  if (size > KMALLOC_MAX_CACHE_SIZE) {
    if (size > KMALLOC_MAX_SIZE) {
      if (!(gfp & __GFP_NOWARN)) warnOnce(m, `WARNING: mm/slub.c: ___kmalloc_large_node: ${fn}(${size}) is above KMALLOC_MAX_SIZE (${KMALLOC_MAX_SIZE})`);
      return null;
    }
    const order = get_order(size);
    const page = m.alloc_pages_node(node, (gfp & ~__GFP_ZERO) | __GFP_COMP, order);
    if (page === null) return null;
    st.large.set(page.pfn, order);
    addr = m.page_address(page);
    objSize = PAGE_SIZE << order;
  } else {
    const cache = cacheFor(st, size);
    let slab = cache.partial[cache.partial.length - 1];
    if (slab === undefined) {
      const page = m.alloc_pages_node(node, (gfp & ~__GFP_ZERO) | (cache.order > 0 ? __GFP_COMP : 0), cache.order);
      if (page === null) return null;
      const free = Array.from({ length: cache.objects }, (_, i) => cache.objects - 1 - i);
      slab = { cache, page, addr: m.page_address(page), free, freeSet: new Set(free) };
      for (let i = 0; i < 1 << cache.order; i++) st.slabOfPfn.set(page.pfn + i, slab);
      cache.partial.push(slab);
    }
    const idx = slab.free.pop()!;
    slab.freeSet.delete(idx);
    if (slab.free.length === 0) cache.partial.pop();
    addr = slab.addr + idx * cache.size;
    objSize = cache.size;
  }
  if (gfp & __GFP_ZERO) m.memset(addr, 0, objSize);
  return addr;
}

/** The machine an address handed out by kmalloc belongs to. */
function machineFor(fn: string, addr: number): Machine {
  const m = machineOfAddress(addr);
  if (m === null || !m.isLinearAddress(addr)) throw new RangeError(`${fn}: 0x${addr.toString(16)} is not a linear-map address of a live machine`);
  return m;
}

/** Where `addr` lives: a slab object (its slab and index), a large allocation, or neither. */
function lookup(m: Machine, addr: number): { slab: Slab; idx: number } | { large: number; page: Page } | null {
  const st = stateOf(m);
  const page = m.virt_to_page(addr);
  const slab = st.slabOfPfn.get(page.pfn);
  if (slab !== undefined) {
    const off = addr - slab.addr;
    if (off % slab.cache.size !== 0 || off / slab.cache.size >= slab.cache.objects) return null;
    return { slab, idx: off / slab.cache.size };
  }
  const order = st.large.get(page.pfn);
  if (order !== undefined && m.page_address(page) === addr) return { large: order, page };
  return null;
}

function kfreeOn(m: Machine, addr: number): void {
  const st = stateOf(m);
  const where = lookup(m, addr);
  if (where === null) {
    m.warn(`WARNING: mm/slub.c: kfree: 0x${addr.toString(16)} is not an object kmalloc handed out (not the start of a slab object or of a large kmalloc); nothing freed`);
    return;
  }
  if ('large' in where) {
    st.large.delete(where.page.pfn);
    m.__free_pages(where.page, where.large);
    return;
  }
  const { slab, idx } = where;
  if (slab.freeSet.has(idx)) {
    m.warn(`WARNING: mm/slub.c: kfree: double free of 0x${addr.toString(16)} in ${slab.cache.name}; nothing freed`);
    return;
  }
  const cache = slab.cache;
  if (slab.free.length === 0) cache.partial.push(slab);
  slab.free.push(idx);
  slab.freeSet.add(idx);
  if (slab.free.length === cache.objects) {
    // An empty slab goes back to the page allocator (SLUB keeps a few; here none, so frees show).
    cache.partial.splice(cache.partial.indexOf(slab), 1);
    for (let i = 0; i < 1 << cache.order; i++) st.slabOfPfn.delete(slab.page.pfn + i);
    m.__free_pages(slab.page, cache.order);
  }
}

function ksizeOn(m: Machine, addr: number): number {
  const where = lookup(m, addr);
  if (where === null) return 0;
  return 'large' in where ? PAGE_SIZE << where.large : where.slab.cache.size;
}

function checkAddr(fn: string, addr: unknown): asserts addr is number | null {
  if (addr !== null && (typeof addr !== 'number' || !Number.isSafeInteger(addr) || addr < 0)) {
    throw new TypeError(`${fn}: Expected a kmalloc address or null for objp but received ${describeValue(addr)}`);
  }
}

// ---- The kernel's names: on the default machine (kmalloc) or by address (kfree, ksize, krealloc) ----

/** kmalloc: `size` bytes of linear-map memory (ZERO_SIZE_PTR for 0, null when out of memory). */
export function kmalloc(size: number, gfp: gfp_t): number | null {
  return kmallocOn(defaultMachine(), size, gfp, NUMA_NO_NODE, 'kmalloc');
}

/** kmalloc_node: kmalloc preferring node `node`. */
export function kmalloc_node(size: number, gfp: gfp_t, node: number): number | null {
  return kmallocOn(defaultMachine(), size, gfp, node, 'kmalloc_node');
}

/** kzalloc: kmalloc with __GFP_ZERO. */
export function kzalloc(size: number, gfp: gfp_t): number | null {
  checkGfp('kzalloc', gfp);
  return kmallocOn(defaultMachine(), size, gfp | __GFP_ZERO, NUMA_NO_NODE, 'kzalloc');
}

/** kmalloc_array: n * size bytes, null when the product overflows size_t. */
export function kmalloc_array(n: number, size: number, gfp: gfp_t): number | null {
  return kmallocArrayOn(defaultMachine(), n, size, gfp, 'kmalloc_array');
}

/** kcalloc: kmalloc_array, zeroed. */
export function kcalloc(n: number, size: number, gfp: gfp_t): number | null {
  checkGfp('kcalloc', gfp);
  return kmallocArrayOn(defaultMachine(), n, size, gfp | __GFP_ZERO, 'kcalloc');
}

function kmallocArrayOn(m: Machine, n: number, size: number, gfp: gfp_t, fn: string): number | null {
  checkSize(fn, 'n', n);
  checkSize(fn, 'size', size);
  const bytes = BigInt(n) * BigInt(size);
  if (bytes > 2n ** 64n - 1n) return null; // check_mul_overflow
  if (bytes > BigInt(Number.MAX_SAFE_INTEGER)) return kmallocOn(m, KMALLOC_MAX_SIZE + 1, gfp, NUMA_NO_NODE, fn);
  return kmallocOn(m, Number(bytes), gfp, NUMA_NO_NODE, fn);
}

/** kfree: gives back what kmalloc handed out; null and ZERO_SIZE_PTR are no-ops. */
export function kfree(objp: number | null): void {
  checkAddr('kfree', objp);
  if (objp === null || objp <= ZERO_SIZE_PTR) return;
  kfreeOn(machineFor('kfree', objp), objp);
}

/** ksize: the usable size of a kmalloc object (its size class, or the pages of a large one); 0 for null. */
export function ksize(objp: number | null): number {
  checkAddr('ksize', objp);
  if (objp === null || objp <= ZERO_SIZE_PTR) return 0;
  return ksizeOn(machineFor('ksize', objp), objp);
}

/**
 * krealloc: the same object when it already holds `new_size` (with __GFP_ZERO the bytes past the
 * new size are zeroed), else a new one with the old bytes copied and the old one freed; 0 frees and
 * gives ZERO_SIZE_PTR; null when the new allocation fails (the old object stays).
 */
export function krealloc(p: number | null, new_size: number, gfp: gfp_t): number | null {
  checkAddr('krealloc', p);
  checkSize('krealloc', 'new_size', new_size);
  checkGfp('krealloc', gfp);
  if (p === null || p <= ZERO_SIZE_PTR) return kmalloc(new_size, gfp);
  const m = machineFor('krealloc', p);
  if (new_size === 0) {
    kfreeOn(m, p);
    return ZERO_SIZE_PTR;
  }
  const ks = ksizeOn(m, p);
  if (ks === 0) throw new RangeError(`krealloc: 0x${p.toString(16)} is not an object kmalloc handed out`);
  if (ks >= new_size) {
    if (gfp & __GFP_ZERO) m.memset(p + new_size, 0, ks - new_size);
    return p;
  }
  const q = kmallocOn(m, new_size, gfp, NUMA_NO_NODE, 'krealloc');
  if (q === null) return null;
  m.view(q, ks).set(m.view(p, ks));
  kfreeOn(m, p);
  return q;
}

// ---- Machine methods: the same on a given machine ----

declare module './machine' {
  interface Machine {
    /** kmalloc on this machine. */
    kmalloc(size: number, gfp: gfp_t): number | null;
    /** kmalloc_node on this machine. */
    kmalloc_node(size: number, gfp: gfp_t, node: number): number | null;
    /** kzalloc on this machine. */
    kzalloc(size: number, gfp: gfp_t): number | null;
    /** kcalloc on this machine. */
    kcalloc(n: number, size: number, gfp: gfp_t): number | null;
    /** kmalloc_array on this machine. */
    kmalloc_array(n: number, size: number, gfp: gfp_t): number | null;
  }
}

Machine.prototype.kmalloc = function (this: Machine, size: number, gfp: gfp_t) { return kmallocOn(this, size, gfp, NUMA_NO_NODE, 'kmalloc'); };
Machine.prototype.kmalloc_node = function (this: Machine, size: number, gfp: gfp_t, node: number) { return kmallocOn(this, size, gfp, node, 'kmalloc_node'); };
Machine.prototype.kzalloc = function (this: Machine, size: number, gfp: gfp_t) {
  checkGfp('kzalloc', gfp);
  return kmallocOn(this, size, gfp | __GFP_ZERO, NUMA_NO_NODE, 'kzalloc');
};
Machine.prototype.kcalloc = function (this: Machine, n: number, size: number, gfp: gfp_t) {
  checkGfp('kcalloc', gfp);
  return kmallocArrayOn(this, n, size, gfp | __GFP_ZERO, 'kcalloc');
};
Machine.prototype.kmalloc_array = function (this: Machine, n: number, size: number, gfp: gfp_t) { return kmallocArrayOn(this, n, size, gfp, 'kmalloc_array'); };

/** Slab figures of a machine: per cache, slabs and objects in use (like /proc/slabinfo's columns). */
export function kmalloc_stats(m: Machine): { name: string; size: number; order: number; objperslab: number; slabs: number; active: number }[] {
  if (!(m instanceof Machine)) throw new TypeError(`kmalloc_stats: Expected a Machine but received ${describeValue(m)}`);
  const st = stateOf(m);
  const slabs = new Map<KmemCache, Set<Slab>>();
  for (const slab of st.slabOfPfn.values()) {
    let set = slabs.get(slab.cache);
    if (set === undefined) slabs.set(slab.cache, (set = new Set()));
    set.add(slab);
  }
  return st.caches.map((c) => {
    const set = slabs.get(c) ?? new Set<Slab>();
    let active = 0;
    for (const s of set) active += c.objects - s.free.length;
    return { name: c.name, size: c.size, order: c.order, objperslab: c.objects, slabs: set.size, active };
  });
}

