// User mappings: a VMA reserved the way mmap(2) on a device file reserves one before the driver's
// mmap handler runs, and remap_pfn_range (mm/memory.c), done with real MAP_FIXED mappings.

import { native } from '../native';
import { DmamemError, isErrno } from '../os/errors';
import { ViewSet } from '../os/views';
import { PAGE_ALIGN, PAGE_SIZE } from './gfp';
import type { Machine } from './machine';
import { PAGE_READONLY, PAGE_SHARED, pgprot_cachemode, type CacheMode } from './pgprot';
import { mapRuns, type SpillBounds } from './remap';
import { HUGE_2M } from '../os/backing';
import { checkInt, describeValue } from './validate';
import { FrozenList } from '../os/lock';
import { allocCopy } from '../os/memory-limits';

// vm_flags (include/linux/mm.h)
export const VM_READ = 0x00000001;
export const VM_WRITE = 0x00000002;
export const VM_EXEC = 0x00000004;
export const VM_SHARED = 0x00000008;
export const VM_MAYREAD = 0x00000010;
export const VM_MAYWRITE = 0x00000020;
export const VM_MAYEXEC = 0x00000040;
export const VM_MAYSHARE = 0x00000080;
export const VM_PFNMAP = 0x00000400;
export const VM_LOCKED = 0x00002000;
export const VM_IO = 0x00004000;
export const VM_DONTEXPAND = 0x00040000;
export const VM_DONTDUMP = 0x04000000;

/** One 2 MiB huge page (the granule hugetlb memory is mapped in). */
const HUGE = HUGE_2M;
/** Guard space on each side of a VMA, so hugetlb pages can be mapped whole around it. */
const GUARD = 2 * HUGE;

export interface VmaOptions {
  /** vm_pgoff: the mmap offset in pages. Default 0. */
  pgoff?: number;
  /** 'readwrite' (default) or 'read', or mmap(2) PROT_* bits (PROT_READ, PROT_READ | PROT_WRITE). */
  prot?: 'read' | 'readwrite' | number;
  /** mmap(2) flags: MAP_SHARED (default) or MAP_PRIVATE. */
  flags?: number;
  /** Shorthand for flags: true = MAP_SHARED, false = MAP_PRIVATE. */
  shared?: boolean;
}

/** Reads VmaOptions the way mmap(2) reads its arguments: misuse is a TypeError / RangeError. */
function parseVmaOptions(options: VmaOptions): { pgoff: number; writable: boolean; shared: boolean } {
  const C = native.constants;
  const pgoff = options.pgoff ?? 0;
  if (!Number.isSafeInteger(pgoff) || pgoff < 0) {
    throw new RangeError(`Expected a non-negative integer for pgoff but received ${String(pgoff)}`);
  }
  const prot = options.prot ?? 'readwrite';
  let writable: boolean;
  if (prot === 'readwrite' || prot === 'read') writable = prot === 'readwrite';
  else if (typeof prot === 'number' && (prot === C.PROT_READ || prot === (C.PROT_READ | C.PROT_WRITE))) writable = (prot & C.PROT_WRITE) !== 0;
  else throw new TypeError(`Expected 'read', 'readwrite', PROT_READ or PROT_READ | PROT_WRITE for prot but received ${String(prot)}`);
  let shared = options.shared ?? true;
  if (options.flags !== undefined) {
    if (options.flags !== C.MAP_SHARED && options.flags !== C.MAP_PRIVATE) {
      throw new TypeError(`Expected MAP_SHARED or MAP_PRIVATE for flags but received ${String(options.flags)}`);
    }
    if (options.shared !== undefined && options.shared !== (options.flags === C.MAP_SHARED)) {
      throw new TypeError('flags and shared disagree');
    }
    shared = options.flags === C.MAP_SHARED;
  }
  return { pgoff, writable, shared };
}


/** Only Machine.createVma (through createVmArea) constructs a VMA: its constructor reserves memory. */
const token = Symbol('VmArea');

/** Module-private operations on a VMA's private state (set in the class body; see remap_pfn_range). */
let markMapped: (vma: VmArea, addr: number, pages: number) => void;
/** The remap log of a VMA, for remap_pfn_range (set in VmArea's static block). */
let remapsOf: (vma: VmArea) => FrozenList<VmaRemap>;
let placeFor: (vma: VmArea, addr: number, phys: number) => number;
let spillBoundsOf: (vma: VmArea) => SpillBounds;
let mapWritable: (vma: VmArea) => boolean;

/** Creates a VMA for machine.createVma (internal to lib/mm). */
export function createVmArea(machine: Machine, length: number, options: VmaOptions, forget: (vma: VmArea) => void): VmArea {
  return new VmArea(token, machine, length, options, forget);
}

/**
 * struct vm_area_struct, over a real reserved range of this process's address space. Where it
 * lies, what is mapped in it and how it was mapped (writable or not) are private: vm_start and
 * vm_end are read-only, and drivers may change vm_flags / vm_page_prot / vm_pgoff as in the
 * kernel without making a view reach memory that is not mapped writable.
 */
/** One remap_pfn_range as the PTEs record it. */
export interface VmaRemap {
  readonly addr: number;
  readonly pfn: number;
  readonly size: number;
  readonly prot: number;
  readonly cacheMode: CacheMode;
}

/**
 * struct vm_operations_struct (the part a driver's mmap sets): `open` runs when the kernel copies a
 * VMA (fork, split), which this model never does; `close` runs once at unmap (munmap, or the
 * machine's teardown), after the range is gone, as remove_vma calls it.
 */
export interface VmOperations {
  open?: (vma: VmArea) => void;
  close?: (vma: VmArea) => void;
}

export class VmArea {
  #pgoff = 0;
  #vmOps: VmOperations | null = null;
  /** vm_private_data: the driver's, untouched by the model. */
  vm_private_data: unknown = null;
  #flags = 0;
  #pageProt = 0;
  /** Every successful remap_pfn_range, in order: what the PTEs say (pfn, cache mode). */
  readonly #remaps = new FrozenList<VmaRemap>();
  readonly #machine: Machine;
  #start: number;
  #end: number;
  readonly #reservation: number;
  readonly #reservationLength: number;
  /** Mapped PROT_WRITE (fixed at mmap time, whatever vm_flags says later). */
  readonly #writable: boolean;
  /**
   * Mapped page runs [first, end) relative to vm_start, sorted and disjoint. A VMA usually holds
   * one run; a per-page map would cost an off-heap allocation per VMA.
   */
  readonly #runs: [number, number][] = [];
  /** Views handed out: exact ArrayBuffers, revoked when the VMA moves or is unmapped. */
  readonly #views = new ViewSet();
  #unmapped = false;
  /** The bounds hugetlb mappings may spill into, and the real mappings made so far (for remap.ts). */
  readonly #bounds: SpillBounds;
  readonly #forget: (vma: VmArea) => void;

  static {
    remapsOf = (vma) => vma.#remaps;
    markMapped = (vma, addr, pages) => {
      const runs = vma.#runs;
      const a = (addr - vma.#start) / PAGE_SIZE;
      const b = a + pages;
      // Insert after every run that starts at or before `a` (the list stays sorted by start)...
      let i = 0;
      while (i < runs.length && runs[i]![0] <= a) i++;
      runs.splice(i, 0, [a, b]);
      // ...then merge it with touching neighbours, so that view checks stay one comparison per run.
      for (let j = Math.max(0, i - 1); j + 1 < runs.length;) {
        const cur = runs[j]!;
        const next = runs[j + 1]!;
        if (cur[1] >= next[0]) {
          cur[1] = Math.max(cur[1], next[1]);
          runs.splice(j + 1, 1);
        } else if (j >= i) {
          break;
        } else {
          j++;
        }
      }
    };
    // Moves an empty VMA inside its reservation so that `addr` (an address in it) becomes
    // congruent to `phys` modulo 2 MiB: what a driver's get_unmapped_area does for memory it can
    // only map in huge pages. Returns the new address of `addr`. Views handed out before (only
    // empty ones can exist: nothing is mapped yet) are revoked, so none can keep the old range.
    placeFor = (vma, addr, phys) => {
      if (vma.#runs.length !== 0) throw new Error('placeFor: only an empty VMA may move');
      vma.#views.revoke();
      const rel = addr - vma.#start;
      const delta = (((phys - rel) % HUGE) + HUGE) % HUGE;
      const start = vma.#reservation + GUARD - HUGE + delta;
      const shift = start - vma.#start;
      vma.#start += shift;
      vma.#end += shift;
      return addr + shift;
    };
    spillBoundsOf = (vma) => vma.#bounds;
    mapWritable = (vma) => vma.#writable;
  }

  /** Not constructible from outside lib/mm (see Machine.createVma). */
  constructor(key: symbol, machine: Machine, length: number, options: VmaOptions, forget: (vma: VmArea) => void) {
    if (key !== token) throw new TypeError('VmArea is not constructible: use machine.createVma()');
    if (!Number.isSafeInteger(length) || length <= 0 || length % PAGE_SIZE !== 0) {
      throw new RangeError(`Expected a positive multiple of ${PAGE_SIZE} for length but received ${String(length)}`);
    }
    const { pgoff, writable, shared } = parseVmaOptions(options);
    this.#machine = machine;
    this.#forget = forget;
    this.#writable = writable;
    // Reserve guard space on both sides; the VMA itself starts 2 MiB aligned, as Linux aligns
    // large mappings for huge pages.
    this.#reservationLength = length + 2 * GUARD;
    this.#reservation = native.reserve(this.#reservationLength, HUGE);
    this.#start = this.#reservation + GUARD;
    this.#end = this.#start + length;
    this.vm_pgoff = pgoff;
    this.vm_flags = VM_READ | VM_MAYREAD | VM_MAYWRITE | (writable ? VM_WRITE : 0) | (shared ? VM_SHARED | VM_MAYSHARE : 0);
    this.vm_page_prot = writable && shared ? PAGE_SHARED : PAGE_READONLY;
    this.#bounds = { lo: this.#reservation, hi: this.#reservation + this.#reservationLength, extents: [] };
  }

  /** vm_pgoff: the mmap offset in pages (an unsigned long: an integer from 0 to 2^64-1). */
  get vm_pgoff(): number {
    return this.#pgoff;
  }

  set vm_pgoff(pgoff: number) {
    if (typeof pgoff !== 'number' || !Number.isInteger(pgoff) || pgoff < 0 || pgoff > 2 ** 64) {
      throw new RangeError(`VmArea: Expected an integer from 0 to 2^64-1 for vm_pgoff but received ${describeValue(pgoff)}`);
    }
    this.#pgoff = pgoff;
  }

  /** vm_flags: VM_* bits (32 of them modelled; a driver's `|=` keeps working). */
  get vm_flags(): number {
    return this.#flags;
  }

  set vm_flags(flags: number) {
    checkInt('VmArea', 'vm_flags', flags, -(2 ** 31), 2 ** 32 - 1);
    this.#flags = flags >>> 0;
  }

  /** vm_page_prot: the PTE bits (_PAGE_*, including the cache mode bits). */
  get vm_page_prot(): number {
    return this.#pageProt;
  }

  set vm_page_prot(prot: number) {
    checkInt('VmArea', 'vm_page_prot', prot, 0, 2 ** 32 - 1);
    this.#pageProt = prot;
  }

  /** Every successful remap_pfn_range, in order: what the PTEs say (pfn, cache mode). */
  get remaps(): readonly VmaRemap[] {
    return this.#remaps.view;
  }

  /** The machine the VMA belongs to. */
  get machine(): Machine {
    return this.#machine;
  }

  get vm_start(): number {
    return this.#start;
  }

  get vm_end(): number {
    return this.#end;
  }

  get length(): number {
    return this.#end - this.#start;
  }

  /** Whether nothing has been mapped into the VMA yet. */
  get isEmpty(): boolean {
    return this.#runs.length === 0;
  }

  /** vm_ops: null, or an object with optional open / close functions (checked on assignment). */
  get vm_ops(): VmOperations | null {
    return this.#vmOps;
  }

  set vm_ops(ops: VmOperations | null) {
    if (ops !== null) {
      if (typeof ops !== 'object') throw new TypeError(`vm_ops: Expected null or an object with open / close functions but received ${describeValue(ops)}`);
      for (const k of ['open', 'close'] as const) {
        if (ops[k] !== undefined && typeof ops[k] !== 'function') throw new TypeError(`vm_ops: Expected a function for ${k} but received ${describeValue(ops[k])}`);
      }
    }
    this.#vmOps = ops;
  }

  get isUnmapped(): boolean {
    return this.#unmapped;
  }

  /** Pages of the VMA that are mapped. */
  mappedPages(): number {
    let n = 0;
    for (const [a, b] of this.#runs) n += b - a;
    return n;
  }

  /**
   * A Buffer over exactly [offset, offset+length) of the VMA's mapped, writable bytes (offset from
   * vm_start); its `.buffer` covers nothing more. It reads as length 0 once the VMA is unmapped.
   */
  view(offset = 0, length = this.length - offset): Buffer {
    this.#checkRange(offset, length);
    if (!this.#writable) throw new DmamemError('ERR_DMAMEM_READONLY', 'this VMA is not writable: a Buffer over it could fault; use read() for a copy');
    return this.#views.view(this.#start + offset, length);
  }

  /** A copy of mapped bytes of the VMA (works for read-only VMAs). */
  read(offset = 0, length = this.length - offset): Buffer {
    this.#checkRange(offset, length);
    const out = allocCopy(length, `vma.read(${offset}, ${length})`);
    if (length > 0) native.copyOut(this.#start + offset, length, out, 0);
    return out;
  }

  #checkRange(offset: number, length: number): void {
    if (this.#unmapped) throw new RangeError('this VMA has been unmapped');
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.length) {
      throw new RangeError(`Expected a range inside the VMA's ${this.length} bytes but received offset ${String(offset)}, length ${String(length)}`);
    }
    let page = Math.floor(offset / PAGE_SIZE);
    const last = Math.ceil((offset + length) / PAGE_SIZE);
    // Walk the sorted runs, requiring them to cover [page, last) without a gap.
    for (const [a, b] of this.#runs) {
      if (page >= last) break;
      if (b <= page) continue;
      if (a > page) break;
      page = b;
    }
    if (page < last) throw new RangeError(`page ${page} of the VMA at 0x${this.#start.toString(16)} is not mapped`);
  }

  /** Whether any page of [addr, addr + pages * PAGE_SIZE) is mapped. */
  isMapped(addr: number, pages: number): boolean {
    const from = (addr - this.#start) / PAGE_SIZE;
    const to = from + pages;
    for (const [a, b] of this.#runs) if (a < to && from < b) return true;
    return false;
  }

  /** munmap: detaches every view and releases the range. Idempotent. */
  unmap(): void {
    if (this.#unmapped) return;
    this.#unmapped = true;
    this.#views.revoke();
    native.munmap(this.#reservation, this.#reservationLength);
    this.#forget(this);
    const close = this.#vmOps?.close;
    if (close === undefined) return;
    // vm_ops->close returns nothing in the kernel: a throw is the driver's bug, reported as a WARN
    // so that an unmap (or the machine's teardown unmapping every VMA) always completes.
    try {
      close.call(this.#vmOps, this);
    } catch (err) {
      this.#machine.warn(`WARNING: mm/mmap.c: remove_vma: vm_ops->close threw: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  [Symbol.dispose](): void {
    this.unmap();
  }
}

/** vma_pages: (vm_end - vm_start) >> PAGE_SHIFT. */
export function vma_pages(vma: VmArea): number {
  return (vma.vm_end - vma.vm_start) / PAGE_SIZE;
}

function is_cow_mapping(flags: number): boolean {
  return (flags & (VM_SHARED | VM_MAYWRITE)) === VM_MAYWRITE;
}

/**
 * remap_pfn_range: maps `size` bytes (rounded up to pages) of physically consecutive memory from
 * `pfn` at `addr` of the VMA. Returns 0 or a negative errno:
 * -EINVAL for an unaligned address (with a WARN), for a private writable (COW) mapping that does not
 * cover the whole VMA, for a range outside the VMA, for PFNs that are not memory of the machine, and
 * for hugetlb memory that cannot be mapped in whole huge pages there or whose whole huge pages would
 * cover pages already mapped. -ENOMEM when the OS refuses the mapping for lack of memory (e.g. a
 * private mapping of hugetlb memory, which reserves pool pages for copy-on-write).
 * Size 0 is a kernel BUG: it throws. Remapping over already-mapped pages is a BUG too.
 * On success the VMA gets VM_IO | VM_PFNMAP | VM_DONTEXPAND | VM_DONTDUMP.
 */
export function remap_pfn_range(vma: VmArea, addr: number, pfn: number, size: number, prot: number): number {
  // Argument checks (lib/mm/validate.ts) before anything is touched.
  if (!(vma instanceof VmArea)) throw new TypeError(`remap_pfn_range: Expected a VMA (machine.createVma()) for vma but received ${describeValue(vma)}`);
  checkInt('remap_pfn_range', 'addr', addr, 0);
  checkInt('remap_pfn_range', 'pfn', pfn, 0);
  checkInt('remap_pfn_range', 'size', size, 0);
  checkInt('remap_pfn_range', 'prot', prot, 0);
  const m = vma.machine;
  m.assertAlive();
  if (vma.isUnmapped) throw new RangeError('remap_pfn_range: the VMA has been unmapped');
  const end = addr + PAGE_ALIGN(size);
  if (addr % PAGE_SIZE !== 0) {
    m.warn(`WARNING: mm/memory.c: remap_pfn_range_internal: unaligned address 0x${addr.toString(16)}`);
    return -22;
  }
  if (is_cow_mapping(vma.vm_flags)) {
    if (addr !== vma.vm_start || end !== vma.vm_end) return -22;
    vma.vm_pgoff = pfn;
  }
  vma.vm_flags |= VM_IO | VM_PFNMAP | VM_DONTEXPAND | VM_DONTDUMP;
  if (addr >= end) throw new Error('kernel BUG at mm/memory.c: remap_pfn_range_internal: addr >= end (size 0)');
  if (addr < vma.vm_start || end > vma.vm_end) return -22;
  const pages = (end - addr) / PAGE_SIZE;
  if (vma.isMapped(addr, pages)) throw new Error('kernel BUG at mm/memory.c: remap_pte_range: a PTE is already present');

  const seg = m.segmentOfPfn(pfn);
  if (seg !== null && seg.mapGranule > PAGE_SIZE && vma.isEmpty && (addr % seg.mapGranule) !== ((pfn * PAGE_SIZE) % seg.mapGranule)) {
    addr = placeFor(vma, addr, pfn * PAGE_SIZE);
  }
  const runs = [{ va: addr, pfn, pages }];
  const writable = mapWritable(vma);
  const mprot = (native.constants.PROT_READ) | (writable ? native.constants.PROT_WRITE : 0);
  let ret: number;
  try {
    ret = mapRuns(m, runs, mprot, (vma.vm_flags & VM_SHARED) !== 0, spillBoundsOf(vma));
  } catch (err) {
    if (!isErrno(err, 'ENOMEM')) throw err;
    m.warn(`remap_pfn_range: ${err.message}`);
    return -12;
  }
  if (ret !== 0) return ret;
  markMapped(vma, addr, pages);
  remapsOf(vma).push(Object.freeze({ addr, pfn, size: pages * PAGE_SIZE, prot, cacheMode: pgprot_cachemode(prot) }));
  return 0;
}
