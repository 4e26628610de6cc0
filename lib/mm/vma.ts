// User mappings: a VMA reserved the way mmap(2) on a device file reserves one before the driver's
// mmap handler runs, and remap_pfn_range (mm/memory.c), done with real MAP_FIXED mappings.

import { native } from '../native';
import { DmamemError, isErrno } from '../os/errors';
import { ViewWindow } from '../os/views';
import { PAGE_ALIGN, PAGE_SIZE } from './gfp';
import type { Machine } from './machine';
import { PAGE_READONLY, PAGE_SHARED, pgprot_cachemode, type CacheMode } from './pgprot';
import { mapRuns, type SpillBounds } from './remap';
import { HUGE_2M } from '../os/backing';
import { checkInt, describeValue } from './validate';

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


/** struct vm_area_struct, over a real reserved range of this process's address space. */
export class VmArea {
  vm_start: number;
  vm_end: number;
  vm_pgoff: number;
  vm_flags: number;
  vm_page_prot: number;
  /** Every successful remap_pfn_range, in order: what the PTEs say (pfn, cache mode). */
  readonly remaps: { addr: number; pfn: number; size: number; prot: number; cacheMode: CacheMode }[] = [];
  private readonly reservation: number;
  private readonly reservationLength: number;
  /**
   * Mapped page runs [first, end) relative to vm_start, sorted and disjoint. A VMA usually holds
   * one run; a per-page map would cost an off-heap allocation per VMA.
   */
  private readonly runs: [number, number][] = [];
  private window: ViewWindow | null = null;
  private unmapped = false;
  /** The bounds hugetlb mappings may spill into, and the real mappings made so far (for remap.ts). */
  private readonly bounds: SpillBounds;

  constructor(readonly machine: Machine, length: number, options: VmaOptions) {
    if (!Number.isSafeInteger(length) || length <= 0 || length % PAGE_SIZE !== 0) {
      throw new RangeError(`Expected a positive multiple of ${PAGE_SIZE} for length but received ${String(length)}`);
    }
    const { pgoff, writable, shared } = parseVmaOptions(options);
    // Reserve guard space on both sides; the VMA itself starts 2 MiB aligned, as Linux aligns
    // large mappings for huge pages.
    this.reservationLength = length + 2 * GUARD;
    this.reservation = native.reserve(this.reservationLength, HUGE);
    this.vm_start = this.reservation + GUARD;
    this.vm_end = this.vm_start + length;
    this.vm_pgoff = pgoff;
    this.vm_flags = VM_READ | VM_MAYREAD | VM_MAYWRITE | (writable ? VM_WRITE : 0) | (shared ? VM_SHARED | VM_MAYSHARE : 0);
    this.vm_page_prot = writable && shared ? PAGE_SHARED : PAGE_READONLY;
    this.bounds = { lo: this.reservation, hi: this.reservation + this.reservationLength, extents: [] };
  }

  get length(): number {
    return this.vm_end - this.vm_start;
  }

  /** Whether nothing has been mapped into the VMA yet. */
  get isEmpty(): boolean {
    return this.runs.length === 0;
  }

  get isUnmapped(): boolean {
    return this.unmapped;
  }

  /** Pages of the VMA that are mapped. */
  mappedPages(): number {
    let n = 0;
    for (const [a, b] of this.runs) n += b - a;
    return n;
  }

  /**
   * Moves an empty VMA inside its reservation so that `addr` (an address in it) becomes congruent
   * to `phys` modulo 2 MiB: what a driver's get_unmapped_area does for memory it can only map in
   * huge pages. Returns the new address of `addr`.
   */
  placeFor(addr: number, phys: number): number {
    const rel = addr - this.vm_start;
    const delta = (((phys - rel) % HUGE) + HUGE) % HUGE;
    const start = this.reservation + GUARD - HUGE + delta;
    const shift = start - this.vm_start;
    this.vm_start += shift;
    this.vm_end += shift;
    return addr + shift;
  }

  /** A Buffer over mapped, writable bytes of the VMA (offset from vm_start). */
  view(offset = 0, length = this.length - offset): Buffer {
    this.checkRange(offset, length);
    if (!(this.vm_flags & VM_WRITE)) throw new DmamemError('ERR_DMAMEM_READONLY', 'this VMA is not writable: a Buffer over it could fault; use read() for a copy');
    this.window ??= new ViewWindow(this.vm_start, this.length);
    return this.window.slice(offset, length);
  }

  /** A copy of mapped bytes of the VMA (works for read-only VMAs). */
  read(offset = 0, length = this.length - offset): Buffer {
    this.checkRange(offset, length);
    const out = Buffer.alloc(length);
    native.copyOut(this.vm_start + offset, length, out, 0);
    return out;
  }

  private checkRange(offset: number, length: number): void {
    if (this.unmapped) throw new RangeError('this VMA has been unmapped');
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.length) {
      throw new RangeError(`Expected a range inside the VMA's ${this.length} bytes but received offset ${String(offset)}, length ${String(length)}`);
    }
    let page = Math.floor(offset / PAGE_SIZE);
    const last = Math.ceil((offset + length) / PAGE_SIZE);
    // Walk the sorted runs, requiring them to cover [page, last) without a gap.
    for (const [a, b] of this.runs) {
      if (page >= last) break;
      if (b <= page) continue;
      if (a > page) break;
      page = b;
    }
    if (page < last) throw new RangeError(`page ${page} of the VMA at 0x${this.vm_start.toString(16)} is not mapped`);
  }

  /** Records pages as mapped (used by remap_pfn_range, after checking isMapped). */
  markMapped(addr: number, pages: number): void {
    const a = (addr - this.vm_start) / PAGE_SIZE;
    const b = a + pages;
    let i = 0;
    while (i < this.runs.length && this.runs[i]![1] < a) i++;
    this.runs.splice(i, 0, [a, b]);
    // Merge with touching neighbours so that view checks stay one comparison per run.
    for (let j = Math.max(0, i - 1); j + 1 < this.runs.length;) {
      const cur = this.runs[j]!;
      const next = this.runs[j + 1]!;
      if (cur[1] >= next[0]) {
        cur[1] = Math.max(cur[1], next[1]);
        this.runs.splice(j + 1, 1);
      } else if (j > i) {
        break;
      } else {
        j++;
      }
    }
  }

  isMapped(addr: number, pages: number): boolean {
    const from = (addr - this.vm_start) / PAGE_SIZE;
    const to = from + pages;
    for (const [a, b] of this.runs) if (a < to && from < b) return true;
    return false;
  }

  /** The reservation around the VMA, within which hugetlb pages may be mapped whole, and what is mapped there. */
  get spillBounds(): SpillBounds {
    return this.bounds;
  }

  /** munmap: detaches every view and releases the range. Idempotent. */
  unmap(): void {
    if (this.unmapped) return;
    this.unmapped = true;
    this.window?.detach();
    this.window = null;
    native.munmap(this.reservation, this.reservationLength);
    this.machine.forgetVma(this);
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
    addr = vma.placeFor(addr, pfn * PAGE_SIZE);
  }
  const runs = [{ va: addr, pfn, pages }];
  const writable = (vma.vm_flags & VM_WRITE) !== 0;
  const mprot = (native.constants.PROT_READ) | (writable ? native.constants.PROT_WRITE : 0);
  let ret: number;
  try {
    ret = mapRuns(m, runs, mprot, (vma.vm_flags & VM_SHARED) !== 0, vma.spillBounds);
  } catch (err) {
    if (!isErrno(err, 'ENOMEM')) throw err;
    m.warn(`remap_pfn_range: ${err.message}`);
    return -12;
  }
  if (ret !== 0) return ret;
  vma.markMapped(addr, pages);
  vma.remaps.push({ addr, pfn, size: pages * PAGE_SIZE, prot, cacheMode: pgprot_cachemode(prot) });
  return 0;
}
