// mm/dmapool.c: small blocks of coherent DMA memory for one device (descriptors, PRP lists,
// command slots), carved out of dma_alloc_coherent allocations of at least a page, with the kernel's
// size, alignment and boundary rules, LIFO reuse, the device's `pools` file, and the checks of
// `dmapool_debug` (on with the machine's dmaDebug): poison, "corrupted", "bad dma", "already free",
// "busy".

import { PAGE_SIZE, __GFP_ZERO, NUMA_NO_NODE, type gfp_t } from '../mm/gfp';
import { checkBigint, checkBox, checkGfp, checkInt, checkSize, checkString, describeValue } from '../mm/validate';
import { devres_add, devres_release, type Device } from './device';
import { dma_alloc_coherent, dma_free_coherent } from './mapping';
import type { Box } from './ops';
import { checkDevice } from './validate';

/** include/linux/poison.h: a freed block (debug), and one just handed out without __GFP_ZERO. */
export const POOL_POISON_FREED = 0xa7;
export const POOL_POISON_ALLOCATED = 0xa9;

/** sizeof(struct dma_block): the free-list link and the block's dma address. The smallest block. */
const DMA_BLOCK_SIZE = 16;
const INT_MAX = 2 ** 31 - 1;

/** struct dma_page: one dma_alloc_coherent allocation of `allocation` bytes. */
interface DmaPage {
  readonly vaddr: number;
  readonly dma: bigint;
}

/** The pools of each device (dev->dma_pools), newest first as list_add leaves them. */
const poolsOf = new WeakMap<Device, DmaPool[]>();

let poolToken: symbol | null = Symbol('DmaPool');
const token = poolToken;
poolToken = null;

/** The pool's private operations, for the functions below (set by DmaPool's static block). */
let poolOps: {
  alloc(pool: DmaPool, gfp: gfp_t): [number, bigint] | null;
  free(pool: DmaPool, vaddr: number, dma: bigint): void;
  destroy(pool: DmaPool): void;
  live(pool: DmaPool, fn: string): void;
};

/** struct dma_pool. Made by dma_pool_create; its fields are read-only figures. */
export class DmaPool {
  readonly #name: string;
  readonly #dev: Device;
  readonly #size: number;
  readonly #allocation: number;
  readonly #boundary: number;
  readonly #node: number;
  /** page_list: newest first. */
  readonly #pages: DmaPage[] = [];
  /**
   * The free blocks, by CPU address; the top (the end) is pool->next_block. The kernel links them
   * through their own first 16 bytes; here the links live outside the blocks, so a driver's write
   * into a freed block cannot corrupt the pool (with debug on it is reported instead).
   */
  readonly #free: number[] = [];
  readonly #freeSet = new Set<number>();
  #nrBlocks = 0;
  #nrActive = 0;
  #destroyed = false;

  /** Not constructible: use dma_pool_create. */
  constructor(key: symbol, name: string, dev: Device, size: number, allocation: number, boundary: number, node: number) {
    if (key !== token) throw new TypeError('DmaPool is not constructible: use dma_pool_create()');
    // strscpy into char name[32].
    this.#name = name.slice(0, 31);
    this.#dev = dev;
    this.#size = size;
    this.#allocation = allocation;
    this.#boundary = boundary;
    this.#node = node;
  }

  get name(): string { return this.#name; }
  get dev(): Device { return this.#dev; }
  /** Block size: the requested size, at least 16, rounded up to the alignment. */
  get size(): number { return this.#size; }
  /** Bytes of each coherent allocation the blocks are carved from: max(size, PAGE_SIZE). */
  get allocation(): number { return this.#allocation; }
  /** No block crosses a multiple of this (at most `allocation`). */
  get boundary(): number { return this.#boundary; }
  get node(): number { return this.#node; }
  get nr_blocks(): number { return this.#nrBlocks; }
  get nr_active(): number { return this.#nrActive; }
  get nr_pages(): number { return this.#pages.length; }
  get isDestroyed(): boolean { return this.#destroyed; }

  static {
    poolOps = {
      alloc: (pool, gfp) => pool.#alloc(gfp),
      free: (pool, vaddr, dma) => pool.#freeBlock(vaddr, dma),
      destroy: (pool) => pool.#destroy(),
      live: (pool, fn) => {
        if (pool.#destroyed) throw new TypeError(`${fn}: the pool '${pool.#name}' was destroyed (dma_pool_destroy)`);
      },
    };
  }

  get #debug(): boolean {
    return this.#dev.machine.dmaDebug !== false;
  }

  #err(message: string): void {
    this.#dev.machine.warn(`${this.#dev.name}: ${message}`);
  }

  /** pool_alloc_page + pool_initialise_page: one more coherent allocation, carved into blocks. */
  #grow(gfp: gfp_t): boolean {
    const handle: Box<bigint> = { value: 0n };
    const vaddr = dma_alloc_coherent(this.#dev, this.#allocation, handle, gfp & ~__GFP_ZERO);
    if (vaddr === null) return false;
    const page: DmaPage = { vaddr, dma: handle.value };
    if (this.#debug) this.#dev.machine.view(vaddr, this.#allocation).fill(POOL_POISON_FREED);
    // Blocks in address order, skipping any that would cross a boundary; the first ends on top.
    const blocks: number[] = [];
    for (let offset = 0, next = this.#boundary; offset + this.#size <= this.#allocation;) {
      if (offset + this.#size > next) {
        offset = next;
        next += this.#boundary;
        continue;
      }
      blocks.push(vaddr + offset);
      offset += this.#size;
    }
    for (let i = blocks.length - 1; i >= 0; i--) this.#push(blocks[i]!);
    this.#nrBlocks += blocks.length;
    this.#pages.unshift(page);
    return true;
  }

  #push(vaddr: number): void {
    this.#free.push(vaddr);
    this.#freeSet.add(vaddr);
  }

  /** The page a dma address lies in (pool_find_page), null when none. */
  #pageOfDma(dma: bigint): DmaPage | null {
    for (const page of this.#pages) {
      if (dma < page.dma) continue;
      if (dma - page.dma < BigInt(this.#allocation)) return page;
    }
    return null;
  }

  #alloc(gfp: gfp_t): [number, bigint] | null {
    if (this.#free.length === 0 && !this.#grow(gfp)) return null;
    const vaddr = this.#free.pop()!;
    this.#freeSet.delete(vaddr);
    this.#nrActive++;
    const page = this.#pageOfVaddr(vaddr)!;
    const dma = page.dma + BigInt(vaddr - page.vaddr);
    if (this.#debug) {
      // pool_check_block. The kernel skips the 16 bytes its free-list link occupies; here no link
      // lives in the block, so a write anywhere in a freed block shows.
      const bytes = this.#dev.machine.view(vaddr, this.#size);
      const bad = bytes.findIndex((b) => b !== POOL_POISON_FREED);
      if (bad >= 0) {
        this.#err(`pool_check_block ${this.#name}, 0x${vaddr.toString(16)} (corrupted): byte ${bad} is 0x${bytes[bad]!.toString(16).padStart(2, '0')}, not the free poison 0x${POOL_POISON_FREED.toString(16)}\n${hexDump(bytes)}`);
      }
      if (!(gfp & __GFP_ZERO)) bytes.fill(POOL_POISON_ALLOCATED);
    }
    if (gfp & __GFP_ZERO) this.#dev.machine.view(vaddr, this.#size).fill(0);
    return [vaddr, dma];
  }

  #pageOfVaddr(vaddr: number): DmaPage | null {
    for (const page of this.#pages) if (vaddr >= page.vaddr && vaddr < page.vaddr + this.#allocation) return page;
    return null;
  }

  /**
   * dma_pool_free. With debug on: "bad dma" for an address in no page of the pool and "already
   * free" for a block on the free list (the kernel's reports; the block is not put back). With
   * debug off the kernel trusts the caller; here an address pair that is not a block of this pool
   * is still refused (with a WARN), because putting it on the free list would hand out memory the
   * pool does not own. A double free with debug off is the kernel's: the block goes on the list
   * twice and is handed out twice.
   */
  #freeBlock(vaddr: number, dma: bigint): void {
    const page = this.#pageOfDma(dma);
    if (this.#debug) {
      if (page === null) {
        this.#err(`dma_pool_free ${this.#name}, 0x${vaddr.toString(16)}/0x${dma.toString(16).padStart(16, '0')} (bad dma)`);
        return;
      }
      if (this.#freeSet.has(vaddr)) {
        this.#err(`dma_pool_free ${this.#name}, dma 0x${dma.toString(16).padStart(16, '0')} already free`);
        return;
      }
    }
    if (page === null || !this.#isBlock(page, vaddr, dma)) {
      this.#err(`WARNING: dma_pool_free ${this.#name}: 0x${vaddr.toString(16)}/0x${dma.toString(16).padStart(16, '0')} is not a block of this pool; not put back`);
      return;
    }
    if (this.#debug) this.#dev.machine.view(vaddr, this.#size).fill(POOL_POISON_FREED);
    this.#push(vaddr);
    this.#nrActive--;
  }

  /** Whether (vaddr, dma) is the start of a block of `page`: same offset in both, on the block grid. */
  #isBlock(page: DmaPage, vaddr: number, dma: bigint): boolean {
    const offset = vaddr - page.vaddr;
    if (offset < 0 || offset >= this.#allocation || BigInt(offset) !== dma - page.dma) return false;
    // Blocks start at k * size within each boundary-sized stretch.
    const within = offset % this.#boundary;
    return within % this.#size === 0 && within + this.#size <= this.#boundary;
  }

  /** dma_pool_destroy: "busy" when blocks are still out, and then the pages are left allocated. */
  #destroy(): void {
    this.#destroyed = true;
    const list = poolsOf.get(this.#dev);
    if (list !== undefined) list.splice(list.indexOf(this), 1);
    const busy = this.#nrActive !== 0;
    if (busy) this.#err(`dma_pool_destroy ${this.#name} busy`);
    if (!busy && !this.#dev.machine.isDestroyed) {
      for (const page of this.#pages) dma_free_coherent(this.#dev, this.#allocation, page.vaddr, page.dma);
    }
    this.#pages.length = 0;
    this.#free.length = 0;
    this.#freeSet.clear();
  }
}

/** 16 bytes a line, offsets first, as print_hex_dump(DUMP_PREFIX_OFFSET, 16, 1) (at most 4 lines). */
function hexDump(bytes: Uint8Array): string {
  const lines: string[] = [];
  for (let off = 0; off < Math.min(bytes.length, 64); off += 16) {
    const row = [...bytes.subarray(off, off + 16)].map((b) => b.toString(16).padStart(2, '0')).join(' ');
    lines.push(`${off.toString(16).padStart(8, '0')}: ${row}`);
  }
  return lines.join('\n');
}

function checkPool(fn: string, pool: unknown): asserts pool is DmaPool {
  if (!(pool instanceof DmaPool)) throw new TypeError(`${fn}: Expected a DmaPool (dma_pool_create()) for pool but received ${describeValue(pool)}`);
  poolOps.live(pool, fn);
}

/**
 * dma_pool_create_node: a pool of `size`-byte blocks, aligned to `align` (a power of two; 0 is 1),
 * none crossing a multiple of `boundary` (a power of two at least `size`; 0 is none). Returns null
 * as the kernel does: no device, `align` or `boundary` not a power of two, size 0 or above INT_MAX,
 * boundary below the (rounded) size. Misuse (not a device, not integers) is a TypeError/RangeError.
 * @example const pool = dma_pool_create_node('prp', dev, 4096, 4096, 0, NUMA_NO_NODE);
 */
export function dma_pool_create_node(name: string, dev: Device | null, size: number, align: number, boundary: number, node: number): DmaPool | null {
  const fn = 'dma_pool_create';
  checkString(fn, 'name', name);
  if (dev !== null) checkDevice(fn, dev);
  checkSize(fn, 'size', size);
  checkSize(fn, 'align', align);
  checkSize(fn, 'boundary', boundary);
  checkInt(fn, 'node', node, NUMA_NO_NODE);
  if (dev === null) return null;
  if (align === 0) align = 1;
  else if (!isPowerOfTwo(align)) return null;
  if (size === 0 || size > INT_MAX) return null;
  size = Math.max(size, DMA_BLOCK_SIZE);
  size = Math.ceil(size / align) * align;
  const allocation = Math.max(size, PAGE_SIZE);
  if (boundary === 0) boundary = allocation;
  else if (boundary < size || !isPowerOfTwo(boundary)) return null;
  boundary = Math.min(boundary, allocation);
  const pool = new DmaPool(token, name, dev, size, allocation, boundary, node);
  let list = poolsOf.get(dev);
  if (list === undefined) poolsOf.set(dev, (list = []));
  list.unshift(pool);
  return pool;
}

/** dma_pool_create: dma_pool_create_node on NUMA_NO_NODE. */
export function dma_pool_create(name: string, dev: Device | null, size: number, align: number, boundary: number): DmaPool | null {
  return dma_pool_create_node(name, dev, size, align, boundary, NUMA_NO_NODE);
}

function isPowerOfTwo(n: number): boolean {
  return n > 0 && 2 ** Math.round(Math.log2(n)) === n;
}

/**
 * dma_pool_alloc: a block's CPU address (its dma address in `handle.value`), or null when a new
 * coherent allocation fails. Without __GFP_ZERO the bytes are whatever the block last held (with
 * dmapool debug: POOL_POISON_ALLOCATED).
 * @example const h = { value: 0n }; const prp = dma_pool_alloc(pool, GFP_KERNEL, h);
 */
export function dma_pool_alloc(pool: DmaPool, gfp: gfp_t, handle: Box<bigint>): number | null {
  const fn = 'dma_pool_alloc';
  checkPool(fn, pool);
  checkGfp(fn, gfp);
  checkBox(fn, 'handle', handle);
  const got = poolOps.alloc(pool, gfp);
  if (got === null) return null;
  handle.value = got[1];
  return got[0];
}

/** dma_pool_zalloc: dma_pool_alloc with __GFP_ZERO. */
export function dma_pool_zalloc(pool: DmaPool, gfp: gfp_t, handle: Box<bigint>): number | null {
  checkGfp('dma_pool_zalloc', gfp);
  return dma_pool_alloc(pool, gfp | __GFP_ZERO, handle);
}

/** dma_pool_free: gives a block back (see DmaPool's free rules for bad and repeated frees). */
export function dma_pool_free(pool: DmaPool, vaddr: number, dma: bigint): void {
  const fn = 'dma_pool_free';
  checkPool(fn, pool);
  checkSize(fn, 'vaddr', vaddr);
  checkBigint(fn, 'dma', dma);
  poolOps.free(pool, vaddr, dma);
}

/**
 * dma_pool_destroy: frees the pool's coherent memory, or, with blocks still allocated, reports
 * "busy" and leaves it allocated (the kernel's choice: the device may still use it). null is a no-op.
 */
export function dma_pool_destroy(pool: DmaPool | null): void {
  if (pool === null) return;
  checkPool('dma_pool_destroy', pool);
  poolOps.destroy(pool);
}

/** dmam_pool_create: dma_pool_create, destroyed when the device is (driver unbind). */
export function dmam_pool_create(name: string, dev: Device | null, size: number, align: number, allocation: number): DmaPool | null {
  const pool = dma_pool_create(name, dev, size, align, allocation);
  if (pool !== null) devres_add(pool.dev, pool, () => dma_pool_destroy(pool));
  return pool;
}

/** dmam_pool_destroy: destroys a managed pool now; a WARN when the pool was not made by dmam_pool_create. */
export function dmam_pool_destroy(pool: DmaPool): void {
  checkPool('dmam_pool_destroy', pool);
  if (devres_release(pool.dev, pool) !== 0) pool.dev.machine.warn(`WARNING: mm/dmapool.c: dmam_pool_destroy: ${pool.name} is not a managed pool of ${pool.dev.name}`);
}

/**
 * The device's `pools` sysfs file (pools_show): a header line, then per pool, newest first, its
 * name, blocks in use, blocks in all, block size and pages.
 * @example pools_show(dev) // 'poolinfo - 0.1\nprp                 3   32  128  1\n'
 */
export function pools_show(dev: Device): string {
  checkDevice('pools_show', dev);
  let out = 'poolinfo - 0.1\n';
  for (const p of poolsOf.get(dev) ?? []) {
    out += `${p.name.padEnd(16)} ${String(p.nr_active).padStart(4)} ${String(p.nr_blocks).padStart(4)} ${String(p.size).padStart(4)} ${String(p.nr_pages).padStart(2)}\n`;
  }
  return out;
}
