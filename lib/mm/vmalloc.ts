// The vmalloc area (mm/vmalloc.c): order-0 pages from the buddy allocator, scattered in physical
// memory, made virtually contiguous with real MAP_FIXED mappings of the segments' memfds.

import { native, C } from '../native';
import { DmamemError, isErrno } from '../os/errors';
import { ViewSet } from '../os/views';
import { GFP_KERNEL, NUMA_NO_NODE, PAGE_ALIGN, PAGE_SIZE } from './gfp';
import type { Machine } from './machine';
import type { Page } from './page';
import { buildRuns, mapRuns, zapRange } from './remap';

/** Only this module constructs areas and spaces: an area's range is mapped memory of its machine. */
const token = Symbol('VmallocArea');

let releaseArea: (area: VmallocArea) => void;
/** First fit for `size` bytes plus a guard page: the address and the index to insert at, or null. */
let allocRange: (space: VmallocSpace, size: number) => { addr: number; index: number } | null;
let insertArea: (space: VmallocSpace, area: VmallocArea, index: number) => void;
let removeArea: (space: VmallocSpace, area: VmallocArea) => void;
let releaseAllAreas: (space: VmallocSpace) => void;


/**
 * A vm_struct: the pages behind [addr, addr+size), live until vfree / vunmap / machine teardown.
 * Reachable through machine.findVmallocArea(); only vmalloc()/vmap() create one (the constructor
 * refuses other callers), and its fields are frozen, so it never wraps an address it did not map.
 */
export class VmallocArea {
  readonly machine: Machine;
  readonly addr: number;
  readonly size: number;
  readonly pages: readonly Page[];
  /** vmalloc areas own their pages (vfree frees them); vmap areas do not. */
  readonly ownsPages: boolean;
  /** How many mmap calls mapping it took (one per physically consecutive run). */
  readonly mmapCalls: number;
  /** Mapped PROT_READ | PROT_WRITE; a read-only vmap() gives no views (writes would fault). */
  readonly writable: boolean;
  /** Views handed out over the area: exact ArrayBuffers, revoked when it is freed or unmapped. */
  readonly #views = new ViewSet();
  #released = false;

  static {
    releaseArea = (area) => {
      area.#released = true;
      area.#views.revoke();
    };
  }

  /** Not constructible from outside lib/mm/vmalloc.ts (see vmalloc, vmap). */
  constructor(key: symbol, machine: Machine, addr: number, size: number, pages: readonly Page[], ownsPages: boolean, mmapCalls: number, writable: boolean) {
    if (key !== token) throw new TypeError('VmallocArea is not constructible: vmalloc() and vmap() create areas');
    this.machine = machine;
    this.addr = addr;
    this.size = size;
    this.pages = Object.freeze(pages.slice());
    this.ownsPages = ownsPages;
    this.mmapCalls = mmapCalls;
    this.writable = writable;
    Object.freeze(this);
  }

  get nr_pages(): number {
    return this.pages.length;
  }

  /** True once the area was freed or unmapped (or its machine destroyed): it then gives no views. */
  get isReleased(): boolean {
    return this.#released;
  }

  /** The page mapped at addr, or null outside the area or once it was released. */
  pageAt(addr: number): Page | null {
    if (this.#released || !(addr >= this.addr)) return null;
    return this.pages[Math.floor((addr - this.addr) / PAGE_SIZE)] ?? null;
  }

  /**
   * A Buffer over exactly [addr, addr+length) of the area (its `.buffer` covers nothing more).
   * RangeError once the area was released (its range is no longer memory) or when the range
   * leaves the area; ERR_DMAMEM_READONLY for a read-only vmap() (a write would fault). The view
   * reads as length 0 once the area is freed or unmapped.
   */
  view(addr: number, length: number): Buffer {
    if (this.#released) throw new RangeError(`the vmalloc area at 0x${this.addr.toString(16)} has been freed`);
    if (!this.writable) {
      throw new DmamemError('ERR_DMAMEM_READONLY', `the vmap() area at 0x${this.addr.toString(16)} is read-only: a Buffer over it could fault on write`);
    }
    const off = addr - this.addr;
    if (!Number.isSafeInteger(off) || !Number.isSafeInteger(length) || off < 0 || length < 0 || off + length > this.size) {
      throw new RangeError(`view of ${String(length)} bytes at 0x${Number(addr).toString(16)} leaves the vmalloc area at 0x${this.addr.toString(16)} (${this.size} bytes)`);
    }
    return this.#views.view(addr, length);
  }
}

/**
 * The vmalloc address range of a machine (VMALLOC_START..VMALLOC_END) and the live areas in it,
 * sorted by address, each followed by one guard page as in mm/vmalloc.c. Reachable as
 * machine.vmallocSpace for reading; what changes it is module-private.
 */
export class VmallocSpace {
  readonly #areas: VmallocArea[] = [];

  constructor(readonly base: number, readonly length: number) {
    Object.freeze(this);
  }

  get count(): number {
    return this.#areas.length;
  }

  /** The live areas, in address order (a copy). */
  areas(): VmallocArea[] {
    return this.#areas.slice();
  }

  contains(addr: number): boolean {
    return addr >= this.base && addr < this.base + this.length;
  }

  /** The live area holding addr (binary search), or null. */
  find(addr: number): VmallocArea | null {
    if (!this.contains(addr)) return null;
    const areas = this.#areas;
    let lo = 0;
    let hi = areas.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const a = areas[mid]!;
      if (addr < a.addr) hi = mid - 1;
      else if (addr >= a.addr + a.size) lo = mid + 1;
      else return a;
    }
    return null;
  }

  static {
    allocRange = (space, size) => {
      const need = size + PAGE_SIZE;
      let cursor = space.base;
      let index = 0;
      for (const a of space.#areas) {
        if (a.addr - cursor >= need) break;
        cursor = a.addr + a.size + PAGE_SIZE;
        index++;
      }
      if (cursor + need > space.base + space.length) return null;
      return { addr: cursor, index };
    };
    insertArea = (space, area, index) => {
      space.#areas.splice(index, 0, area);
    };
    removeArea = (space, area) => {
      const i = space.#areas.indexOf(area);
      if (i >= 0) space.#areas.splice(i, 1);
    };
    releaseAllAreas = (space) => {
      for (const area of space.#areas) releaseArea(area);
      space.#areas.length = 0;
    };
  }
}

/** Machine teardown: releases every area, detaching its views (the caller unmaps the whole range after). */
export function releaseVmallocSpace(space: VmallocSpace): void {
  releaseAllAreas(space);
}

/**
 * Maps `pages` back to back into fresh vmalloc address space. Returns the area, or null when the
 * space is full, a page is not memory of the machine, or the OS refuses the mapping with ENOMEM
 * (what it mapped is undone; the pages stay the caller's).
 */
function mapArea(m: Machine, pages: readonly Page[], ownsPages: boolean, prot: number): VmallocArea | null {
  const size = pages.length * PAGE_SIZE;
  const range = allocRange(m.vmallocSpace, size);
  if (range === null) return null;
  const runs = buildRuns(range.addr, pages.map((p) => p.pfn));
  const before = m.counters.mmapCalls;
  try {
    if (mapRuns(m, runs, prot, true, null) !== 0) return null;
  } catch (err) {
    if (isErrno(err, 'ENOMEM')) return null;
    throw err;
  }
  const area = new VmallocArea(token, m, range.addr, size, pages, ownsPages, m.counters.mmapCalls - before, (prot & C.PROT_WRITE) !== 0);
  insertArea(m.vmallocSpace, area, range.index);
  return area;
}

/** Undo of vmalloc's page loop: frees in reverse order, so the pcp list hands them out as before. */
function freePagesReverse(m: Machine, pages: readonly Page[]): void {
  for (let i = pages.length - 1; i >= 0; i--) m.__free_pages(pages[i]!, 0);
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
      freePagesReverse(m, pages);
      m.warn(`vmalloc error: size ${size}, failed to allocate pages`);
      return null;
    }
    pages.push(page);
  }
  let area: VmallocArea | null;
  try {
    area = mapArea(m, pages, true, C.PROT_READ | C.PROT_WRITE);
  } catch (err) {
    freePagesReverse(m, pages);
    throw err;
  }
  if (area === null) {
    freePagesReverse(m, pages);
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
  const area = m.vmallocSpace.find(addr);
  if (area === null || area.addr !== addr) {
    m.warn(`Trying to ${fn}() nonexistent vm area (0x${addr.toString(16)})`);
    return null;
  }
  releaseArea(area);
  zapRange(area.addr, area.size);
  removeArea(m.vmallocSpace, area);
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
