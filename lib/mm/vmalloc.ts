// The vmalloc area (mm/vmalloc.c): order-0 pages from the buddy allocator, scattered in physical
// memory, made virtually contiguous with real MAP_FIXED mappings of the segments' memfds.

import { native, C } from '../native';
import { ViewWindow } from '../os/views';
import { GFP_KERNEL, NUMA_NO_NODE, PAGE_ALIGN, PAGE_SIZE } from './gfp';
import type { Machine } from './machine';
import type { Page } from './page';
import { buildRuns, mapRuns, zapRange } from './remap';

/** A live vm_struct: the pages behind [addr, addr+size). */
export class VmallocArea {
  private window: ViewWindow | null = null;

  constructor(
    readonly machine: Machine,
    readonly addr: number,
    readonly size: number,
    readonly pages: readonly Page[],
    /** vmalloc areas own their pages (vfree frees them); vmap areas do not. */
    readonly ownsPages: boolean,
    /** How many mmap calls mapping it took (one per physically consecutive run). */
    readonly mmapCalls: number,
    /** Mapped PROT_READ | PROT_WRITE; a read-only vmap() gives no views (writes would fault). */
    readonly writable: boolean,
  ) {}

  get nr_pages(): number {
    return this.pages.length;
  }

  pageAt(addr: number): Page | null {
    return this.pages[Math.floor((addr - this.addr) / PAGE_SIZE)] ?? null;
  }

  view(addr: number, length: number): Buffer {
    if (!this.writable) {
      const err = new Error(`the vmap() area at 0x${this.addr.toString(16)} is read-only: a Buffer over it could fault on write`) as Error & { code: string };
      err.code = 'ERR_DMAMEM_READONLY';
      throw err;
    }
    const off = addr - this.addr;
    if (off + length > this.size) {
      throw new RangeError(`view of ${length} bytes at 0x${addr.toString(16)} leaves the vmalloc area at 0x${this.addr.toString(16)} (${this.size} bytes)`);
    }
    this.window ??= new ViewWindow(this.addr, this.size);
    return this.window.slice(off, length);
  }

  detachViews(): void {
    this.window?.detach();
    this.window = null;
  }
}

/** Maps `pages` back to back into fresh vmalloc address space. Returns the area, or null. */
function mapArea(m: Machine, pages: readonly Page[], ownsPages: boolean, prot: number): VmallocArea | null {
  const size = pages.length * PAGE_SIZE;
  const range = m.allocVmallocRange(size);
  if (range === null) return null;
  const runs = buildRuns(range.addr, pages.map((p) => p.pfn));
  const before = m.counters.mmapCalls;
  if (mapRuns(m, runs, prot, true, null) !== 0) return null;
  const area = new VmallocArea(m, range.addr, size, pages, ownsPages, m.counters.mmapCalls - before, (prot & C.PROT_WRITE) !== 0);
  m.insertVmallocArea(area, range.index);
  return area;
}

/**
 * vmalloc: `size` bytes (rounded up to pages) of virtually contiguous memory from order-0 pages.
 * Returns the address, or null (kernel NULL) when pages or address space run out.
 */
export function vmalloc(m: Machine, size: number, gfp: number = GFP_KERNEL): number | null {
  m.assertAlive();
  if (!Number.isSafeInteger(size) || size < 0) throw new RangeError(`Expected a non-negative integer for size but received ${String(size)}`);
  if (size === 0) return null;
  const count = PAGE_ALIGN(size) / PAGE_SIZE;
  const pages: Page[] = [];
  for (let i = 0; i < count; i++) {
    const page = m.alloc_pages_node(NUMA_NO_NODE, gfp, 0);
    if (page === null) {
      for (const p of pages) m.__free_pages(p, 0);
      m.warn(`vmalloc error: size ${size}, failed to allocate pages`);
      return null;
    }
    pages.push(page);
  }
  const area = mapArea(m, pages, true, C.PROT_READ | C.PROT_WRITE);
  if (area === null) {
    for (const p of pages) m.__free_pages(p, 0);
    m.warn(`vmalloc error: size ${size}, vm_struct allocation failed`);
    return null;
  }
  return area.addr;
}

/** vzalloc: vmalloc, zeroed. */
export function vzalloc(m: Machine, size: number): number | null {
  const addr = vmalloc(m, size);
  if (addr !== null) native.memset(addr, 0, PAGE_ALIGN(size));
  return addr;
}

function takeArea(m: Machine, addr: number, fn: string): VmallocArea | null {
  const area = m.findVmallocArea(addr);
  if (area === null || area.addr !== addr) {
    m.warn(`Trying to ${fn}() nonexistent vm area (0x${addr.toString(16)})`);
    return null;
  }
  area.detachViews();
  zapRange(area.addr, area.size);
  m.removeVmallocArea(area);
  return area;
}

/** vfree: unmaps and frees a vmalloc area. null/0 is a no-op, as in the kernel. */
export function vfree(m: Machine, addr: number | null): void {
  if (addr === null || addr === 0 || m.isDestroyed) return;
  const area = takeArea(m, addr, 'vfree');
  if (area === null) return;
  if (!area.ownsPages) {
    m.warn(`vfree: 0x${addr.toString(16)} was made by vmap(); use vunmap()`);
    return;
  }
  for (const p of area.pages) m.__free_pages(p, 0);
}

/** vmap: maps `count` existing pages virtually contiguously. Returns the address or null. */
export function vmap(m: Machine, pages: readonly Page[], count: number, _flags = 0, prot: 'readwrite' | 'read' = 'readwrite'): number | null {
  m.assertAlive();
  if (!Number.isSafeInteger(count) || count < 0 || count > pages.length) {
    throw new RangeError(`Expected an integer from 0 to ${pages.length} for count but received ${String(count)}`);
  }
  if (count === 0) return null;
  const area = mapArea(m, pages.slice(0, count), false, prot === 'read' ? C.PROT_READ : C.PROT_READ | C.PROT_WRITE);
  return area === null ? null : area.addr;
}

/** vunmap: removes a vmap() mapping; the pages stay allocated. */
export function vunmap(m: Machine, addr: number | null): void {
  if (addr === null || addr === 0 || m.isDestroyed) return;
  takeArea(m, addr, 'vunmap');
}
