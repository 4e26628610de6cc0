// A device's bus-master engine: the one way a device model touches memory. Built from a
// transferable description only (the machine's memory segments by fd or mapped bytes, the device's
// bus offset and limit, the IOMMU's shared register block), never from a Machine or Device, so the
// same code runs inline or in a worker. Through an IOMMU it walks the I/O page tables in memory.

import { Region } from '../os/region';
import { mapPrivate } from '../os/private-map';
import {
  MM_BYTES, MM_COUNT, MM_GEN, MM_SLOTS, MS_FD, MS_OFFSET_PAGES, MS_PAGES, MS_START_PFN, MS_STATE, MS_USERS, MS_WRITABLE,
  SLOT_PRESENT, slotBase,
} from '../mm/memory_map_layout';
import {
  F_FLAGS, F_IOVA_HI, F_IOVA_LO, F_REASON, F_SOURCE, F_VALID, FAULT_SLOT_WORDS, FAULT_SLOTS,
  DMAR_REASON_BEYOND_MGAW, DMAR_REASON_NEXT_PTR_INVALID, DMAR_REASON_PTE_READ, DMAR_REASON_PTE_WRITE,
  PTES_PER_TABLE, REG_APERTURE_BITS, REG_FAULT_BASE, REG_FAULT_HEAD, REG_FAULT_OVERFLOW, REG_GEN,
  REG_ROOT_PFN, VTD_PTE_LARGE, VTD_PTE_READ, VTD_PTE_WRITE,
} from '../dma/iommu_regs';
import {
  CACHE_LINE, CM_COUNT, CM_VIO_HEAD, CM_VIO_SLOTS, CM_VIO_WORDS, OWNERSHIP_OFF, OWNERSHIP_STRICT, V_ADDR_HI, V_ADDR_LO,
  V_LENGTH, V_PFN, V_REFUSED, V_REQUESTER, V_WRITE, cacheLayoutOf, cacheLookup, type CacheLayout,
} from '../dma/cache_layout';

/** MemTxResult (QEMU's name for a bus transaction's outcome): the access completed. */
export const MEMTX_OK = 0;
/** Nothing answers at that address: beyond the device's mask or bus limit, or not memory (a bus error). */
export const MEMTX_DECODE_ERROR = 2;
/**
 * The access was refused: the IOMMU blocked it (an IOMMU fault, recorded in the domain's fault
 * log), or it was a write into user memory pinned read-only (nothing recorded).
 */
export const MEMTX_ACCESS_ERROR = 4;

/** One segment of machine memory as the engine sees it: by PFN range, and its bytes or its memfd. */
export interface BusSegment {
  readonly startPfn: number;
  readonly pages: number;
  /** The segment's memfd: a worker maps it itself (the engine owns that mapping until close()). */
  readonly fd?: number;
  /** Where the segment starts in its memfd, in bytes (default 0). */
  readonly fileOffset?: number;
  /** False: user memory pinned read-only; a device write to it is refused (default true). */
  readonly writable?: boolean;
  /** The segment's bytes when already mapped in this thread (inline mode). */
  readonly bytes?: Uint8Array;
}

/** Everything an engine needs, all of it structured-cloneable (bytes aside, which stay in their thread). */
export interface BusDescription {
  readonly segments: readonly BusSegment[];
  /** Bus address = physical address + busOffset (the dma_range_map offset). */
  readonly busOffset: number;
  /** The highest bus address the device can drive (its DMA mask and the bus limit); -1: none. */
  readonly busLimit: number;
  /** The IOMMU's register block when the device is behind one, else null. */
  readonly iommu: { readonly regs: SharedArrayBuffer } | null;
  /** Which requester this engine is, in fault records. */
  readonly sourceId: number;
  /**
   * The machine's published memory map (lib/mm/memory_map_layout.ts): when given, the engine
   * follows it, so memory added or removed after the description was made is seen at the next access.
   */
  readonly memoryMap?: SharedArrayBuffer;
  /**
   * A non-coherent device: the machine's cache model (lib/dma/cache_layout.ts). Pages the CPU's
   * cache holds are read and written in their RAM copy, never in the CPU's bytes. `ownership`
   * (OWNERSHIP_*): an access to lines no live mapping gives the device is recorded, and refused
   * when strict. `requester` names the device in those records. `snoop`: a coherent device with
   * ownership checking (it checks owners but reads and writes the CPU's bytes).
   */
  readonly cache?: { readonly table: SharedArrayBuffer; readonly ownership: number; readonly requester: number; readonly snoop?: boolean };
}

export interface BusEngineOptions {
  /** Called after a fault was recorded (the IOMMU's fault interrupt); inline mode drains the log here. */
  onFault?: (() => void) | null;
  /**
   * Called after every access the bus let through (bus address, bytes, write), before it returns:
   * inline mode's DMA-API debug check. Not called when null (the default), which costs one test.
   */
  onAccess?: ((addr: number, length: number, write: boolean) => void) | null;
  /**
   * Inline mode: the bytes of the machine's segment starting at a PFN when it is mapped in this
   * thread (null: the engine maps its memfd itself). Used for memory the memory map adds.
   */
  segmentBytes?: ((startPfn: number) => Uint8Array | null) | null;
  /** Called after the bus recorded an ownership violation (inline mode reports it at once). */
  onOwnership?: (() => void) | null;
}

const PAGE = 4096;
const IOTLB_ENTRIES = 64;
const HI_PFN = 0x100000;
/** IOVA pages per entry at each level (entry i of a level-L table covers 512^(L-1) pages). */
const ENTRY_SPAN = [0, 1, 512, 512 ** 2, 512 ** 3, 512 ** 4];

function describe(v: unknown): string {
  return v === null ? 'null' : typeof v === 'object' ? (v.constructor?.name ?? 'object') : `${String(v)} of type ${typeof v}`;
}

function checkDescription(d: unknown): asserts d is BusDescription {
  const fail = (what: string, v: unknown): never => {
    throw new TypeError(`BusEngine: Expected ${what} but received ${describe(v)}`);
  };
  if (typeof d !== 'object' || d === null) fail('a BusDescription object for description', d);
  const o = d as Record<string, unknown>;
  if (!Array.isArray(o.segments)) fail('an array for segments', o.segments);
  for (const s of o.segments as unknown[]) {
    const g = s as Record<string, unknown> | null;
    if (typeof g !== 'object' || g === null) fail('a segment object in segments', s);
    const seg = g as Record<string, unknown>;
    if (!Number.isSafeInteger(seg.startPfn) || (seg.startPfn as number) < 0) fail('a non-negative integer for segments[].startPfn', seg.startPfn);
    if (!Number.isSafeInteger(seg.pages) || (seg.pages as number) <= 0) fail('a positive integer for segments[].pages', seg.pages);
    if (seg.bytes === undefined && seg.fd === undefined) fail('bytes or fd in every segment', s);
    if (seg.bytes !== undefined && !(seg.bytes instanceof Uint8Array)) fail('a Uint8Array for segments[].bytes', seg.bytes);
    if (seg.bytes instanceof Uint8Array && seg.bytes.byteOffset % 8 !== 0) fail('segments[].bytes starting 8-byte aligned (page tables are read as 64-bit entries)', `byteOffset ${seg.bytes.byteOffset}`);
    if (seg.fd !== undefined && !Number.isInteger(seg.fd)) fail('an integer for segments[].fd', seg.fd);
    if (seg.writable !== undefined && typeof seg.writable !== 'boolean') fail('a boolean for segments[].writable', seg.writable);
    if (seg.fileOffset !== undefined && (!Number.isSafeInteger(seg.fileOffset) || (seg.fileOffset as number) < 0 || (seg.fileOffset as number) % PAGE !== 0)) {
      fail('a non-negative multiple of 4096 for segments[].fileOffset', seg.fileOffset);
    }
  }
  if (typeof o.busOffset !== 'number' || !Number.isSafeInteger(o.busOffset)) fail('a safe integer for busOffset', o.busOffset);
  if (typeof o.busLimit !== 'number' || Number.isNaN(o.busLimit)) fail('a number for busLimit', o.busLimit);
  if (!Number.isSafeInteger(o.sourceId)) fail('an integer for sourceId', o.sourceId);
  if (o.memoryMap !== undefined && !(o.memoryMap instanceof SharedArrayBuffer && o.memoryMap.byteLength === MM_BYTES)) {
    fail(`a SharedArrayBuffer of ${MM_BYTES} bytes (a machine's memory map) for memoryMap`, o.memoryMap);
  }
  if (o.cache !== undefined) {
    const c = o.cache as Record<string, unknown> | null;
    if (typeof c !== 'object' || c === null || !(c.table instanceof SharedArrayBuffer) || cacheLayoutOf(new Int32Array(c.table)) === null) {
      fail('{ table: a machine\'s cache table, ownership, requester } for cache', c);
    }
    if (!Number.isInteger(c!.ownership) || (c!.ownership as number) < OWNERSHIP_OFF || (c!.ownership as number) > OWNERSHIP_STRICT) fail('0, 1 or 2 for cache.ownership', c!.ownership);
    if (!Number.isInteger(c!.requester)) fail('an integer for cache.requester', c!.requester);
    if (c!.snoop !== undefined && typeof c!.snoop !== 'boolean') fail('a boolean for cache.snoop', c!.snoop);
  }
  if (o.iommu !== null) {
    const io = o.iommu as Record<string, unknown> | undefined;
    if (typeof io !== 'object' || io === null || !(io.regs instanceof SharedArrayBuffer)) fail('null or { regs: SharedArrayBuffer } for iommu', o.iommu);
  }
}

interface Closable {
  close(): void;
}

/** A segment as the engine holds it. */
interface SegmentEntry {
  readonly startPfn: number;
  readonly pages: number;
  readonly bytes: Uint8Array;
  readonly own: Closable | null;
  readonly writable: boolean;
}

/**
 * Maps a segment's memfd in this thread: shared, or for read-only user memory private (it is
 * never written through; copy-on-write keeps the file safe whatever happens).
 */
function mapSegment(fd: number, startPfn: number, pages: number, fileOffset: number, writable: boolean): SegmentEntry {
  if (writable) {
    const r = Region.fromFd(fd, pages * PAGE, { offset: fileOffset });
    return { startPfn, pages, bytes: r.view(), own: r, writable };
  }
  const p = mapPrivate(fd, pages * PAGE, fileOffset);
  return { startPfn, pages, bytes: p.bytes, own: p, writable };
}

/**
 * The bus side of one device. Every access is checked whole before a byte moves: a transfer that
 * would fault on its last page changes nothing. Errors are return values (MemTxResult), loads of
 * a failed access give all-ones, and `status` holds the last result; nothing here throws for an
 * address, however wrong (only for misuse: a non-integer address, a negative length).
 * @example const bus = busMaster(dev); if (bus.write(handle, data) !== MEMTX_OK) setErrorStatus();
 */
export class BusEngine {
  /** The result of the last access (MEMTX_*). */
  status = MEMTX_OK;
  // The segments, sorted by PFN: replaced whole when the memory map changes.
  #segStart = new Float64Array(0);
  #segEnd = new Float64Array(0);
  #bytes: Uint8Array[] = [];
  #words: Uint32Array[] = [];
  #dv: DataView[] = [];
  /** 1 where devices may not write (user memory pinned read-only). */
  #readOnly = new Uint8Array(0);
  /** The mapping the engine made for each segment given by fd (null: bytes given). */
  #own: (Closable | null)[] = [];
  readonly #map: Int32Array | null;
  #mapGen = -1;
  readonly #segmentBytes: ((startPfn: number) => Uint8Array | null) | null;
  readonly #busOffset: number;
  readonly #busLimit: number;
  readonly #regs: Int32Array | null;
  readonly #levels: number;
  readonly #apertureEnd: number;
  readonly #sourceId: number;
  readonly #onFault: (() => void) | null;
  readonly #onAccess: ((addr: number, length: number, write: boolean) => void) | null;
  #gen = -1;
  /** IOTLB: direct-mapped by IOVA page; tag -1 = empty. */
  readonly #tlbTag = new Float64Array(IOTLB_ENTRIES).fill(-1);
  readonly #tlbPfn = new Float64Array(IOTLB_ENTRIES);
  readonly #tlbPerm = new Uint8Array(IOTLB_ENTRIES);
  readonly #tlbSeg = new Int32Array(IOTLB_ENTRIES);
  readonly #tlbOff = new Float64Array(IOTLB_ENTRIES);
  /** Runs of the access being resolved: segment index, offset, length (reused, grown as needed). */
  #runs = new Float64Array(3 * 16);
  #lastSeg = 0;
  /** Out values of #walk and #xlate (no object per access). */
  #walkPerm = 0;
  #seg = 0;
  #closed = false;
  // The cache model (non-coherent devices): its table, layout, line owners and the segment index of its RAM.
  readonly #cache: Int32Array | null = null;
  readonly #cacheLayout: CacheLayout | null = null;
  readonly #cacheRam: Uint8Array | null = null;
  readonly #owners: Uint8Array | null = null;
  readonly #ownership: number = OWNERSHIP_OFF;
  readonly #requester: number = 0;
  readonly #snoop: boolean = false;
  readonly #onOwnership: (() => void) | null;
  #shadow = -1;
  /** The physical PFN of the last fast-path access that went to the cache's RAM. */
  #xPfn = 0;

  constructor(description: BusDescription, options: BusEngineOptions = {}) {
    checkDescription(description);
    if (description.cache !== undefined) {
      const table = description.cache.table;
      this.#cache = new Int32Array(table);
      this.#cacheLayout = cacheLayoutOf(this.#cache)!;
      this.#cacheRam = new Uint8Array(table, this.#cacheLayout.ram, this.#cacheLayout.slots * PAGE);
      this.#owners = new Uint8Array(table, this.#cacheLayout.owners, this.#cacheLayout.slots * (PAGE / CACHE_LINE));
      this.#ownership = description.cache.ownership;
      this.#requester = description.cache.requester;
      this.#snoop = description.cache.snoop === true;
    }
    this.#onOwnership = options.onOwnership ?? null;
    const segs: SegmentEntry[] = [];
    try {
      for (const s of description.segments) {
        const writable = s.writable !== false;
        if (s.bytes !== undefined) segs.push({ startPfn: s.startPfn, pages: s.pages, bytes: s.bytes, own: null, writable });
        else segs.push(mapSegment(s.fd!, s.startPfn, s.pages, s.fileOffset ?? 0, writable));
      }
    } catch (err) {
      for (const e of segs) e.own?.close();
      throw err;
    }
    this.#setSegments(segs);
    this.#map = description.memoryMap === undefined ? null : new Int32Array(description.memoryMap);
    this.#segmentBytes = options.segmentBytes ?? null;
    this.#busOffset = description.busOffset;
    this.#busLimit = description.busLimit;
    this.#sourceId = description.sourceId;
    this.#regs = description.iommu === null ? null : new Int32Array(description.iommu.regs);
    const bits = this.#regs === null ? 64 : Atomics.load(this.#regs, REG_APERTURE_BITS);
    this.#levels = bits > 48 ? 5 : 4;
    this.#apertureEnd = 2 ** bits;
    this.#onFault = options.onFault ?? null;
    this.#onAccess = options.onAccess ?? null;
  }

  /** Unmaps what the engine mapped itself (segments given by fd). Idempotent; later accesses are bus errors. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const r of this.#own) r?.close();
    this.#setSegments([]);
  }

  /** Installs a sorted copy of `segs` (the IOTLB, which names segments by index, is flushed). */
  #setSegments(list: SegmentEntry[]): void {
    const segs = [...list].sort((a, b) => a.startPfn - b.startPfn);
    this.#segStart = new Float64Array(segs.length);
    this.#segEnd = new Float64Array(segs.length);
    this.#bytes = [];
    this.#words = [];
    this.#dv = [];
    this.#own = [];
    this.#readOnly = new Uint8Array(segs.length);
    segs.forEach((s, i) => {
      this.#readOnly[i] = s.writable ? 0 : 1;
      const bytes = s.bytes;
      this.#segStart[i] = s.startPfn;
      this.#segEnd[i] = s.startPfn + Math.min(s.pages, Math.floor(bytes.byteLength / PAGE));
      this.#bytes.push(bytes);
      this.#words.push(new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >>> 2));
      this.#dv.push(new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength));
      this.#own.push(s.own);
    });
    // The cache's RAM is one more "segment" past the sorted ones (#segOf never returns it).
    this.#shadow = -1;
    if (this.#cacheRam !== null) {
      const r = this.#cacheRam;
      this.#shadow = segs.length;
      this.#bytes.push(r);
      this.#words.push(new Uint32Array(r.buffer, r.byteOffset, r.byteLength >>> 2));
      this.#dv.push(new DataView(r.buffer, r.byteOffset, r.byteLength));
      this.#own.push(null);
    }
    this.#tlbTag.fill(-1);
    this.#lastSeg = 0;
  }

  /** A write into segment `s` is refused when it is user memory pinned read-only (status set). */
  #refusesWrite(s: number): boolean {
    if (this.#readOnly[s] !== 1) return false;
    this.status = MEMTX_ACCESS_ERROR;
    return true;
  }

  /** Follows the memory map when it changed since the last look (one load when it did not). */
  #syncMap(): void {
    const t = this.#map;
    if (t === null || this.#closed) return;
    const g = Atomics.load(t, MM_GEN);
    if (g === this.#mapGen) return;
    this.#mapGen = g;
    const present = new Map<number, number>();
    const count = Math.min(Atomics.load(t, MM_COUNT), MM_SLOTS);
    for (let i = 0; i < count; i++) {
      if (Atomics.load(t, slotBase(i) + MS_STATE) === SLOT_PRESENT) present.set(t[slotBase(i) + MS_START_PFN]!, i);
    }
    const keep: SegmentEntry[] = [];
    const known = new Set<number>();
    for (let k = 0; k < this.#segStart.length; k++) {
      const startPfn = this.#segStart[k]!;
      if (present.has(startPfn)) {
        keep.push({ startPfn, pages: this.#segEnd[k]! - startPfn, bytes: this.#bytes[k]!, own: this.#own[k]!, writable: this.#readOnly[k] === 0 });
        known.add(startPfn);
      } else {
        this.#own[k]?.close(); // withdrawn: its PFNs are no memory from now on
      }
    }
    for (const [startPfn, i] of present) {
      if (known.has(startPfn)) continue;
      const e = this.#takeSlot(t, i, startPfn);
      if (e !== null) keep.push(e);
    }
    this.#setSegments(keep);
  }

  /**
   * A segment the memory map added: its bytes in this thread, else a mapping of its memfd, taken
   * with the slot's user count raised so the owner cannot close the fd meanwhile. Null when the
   * slot went away or cannot be mapped (the PFNs then stay no memory, as a bus error says).
   */
  #takeSlot(t: Int32Array, i: number, startPfn: number): SegmentEntry | null {
    const b = slotBase(i);
    const pages = t[b + MS_PAGES]!;
    const writable = t[b + MS_WRITABLE] !== 0;
    const bytes = this.#segmentBytes?.(startPfn) ?? null;
    if (bytes !== null) return { startPfn, pages, bytes, own: null, writable };
    Atomics.add(t, b + MS_USERS, 1);
    try {
      if (Atomics.load(t, b + MS_STATE) !== SLOT_PRESENT || t[b + MS_START_PFN] !== startPfn) return null;
      return mapSegment(Atomics.load(t, b + MS_FD), startPfn, pages, t[b + MS_OFFSET_PAGES]! * PAGE, writable);
    } catch {
      return null;
    } finally {
      Atomics.sub(t, b + MS_USERS, 1);
    }
  }

  /** Whether the cache model holds any page now (one load; false for a coherent device). */
  #cacheActive(): boolean {
    return this.#cache !== null && this.#cache[CM_COUNT] !== 0;
  }

  /**
   * [inPage, inPage + len) of a physical page as a non-coherent device reaches it: -1 when the CPU
   * cache does not hold the page (the bytes are the machine's), -2 when ownership is strict and the
   * device does not own every line (status set), else the offset in the cache's RAM.
   */
  #cached(physPfn: number, inPage: number, len: number, write: boolean, addr: number): number {
    const slot = cacheLookup(this.#cache!, this.#cacheLayout!, physPfn);
    if (slot < 0) return -1;
    if (this.#ownership !== OWNERSHIP_OFF) {
      const o = this.#owners!;
      const base = slot * (PAGE / CACHE_LINE);
      const end = base + Math.ceil((inPage + Math.max(len, 1)) / CACHE_LINE);
      for (let i = base + Math.floor(inPage / CACHE_LINE); i < end; i++) {
        if (o[i] !== 0) continue;
        const strict = this.#ownership === OWNERSHIP_STRICT;
        this.#recordViolation(addr, len, write, strict, physPfn);
        if (strict) {
          this.status = MEMTX_ACCESS_ERROR;
          return -2;
        }
        break;
      }
    }
    if (this.#snoop) return -1;
    this.#xPfn = physPfn;
    return slot * PAGE + inPage;
  }

  #recordViolation(addr: number, len: number, write: boolean, refused: boolean, pfn: number): void {
    const t = this.#cache!;
    const i = Atomics.add(t, CM_VIO_HEAD, 1);
    const b = this.#cacheLayout!.vio + (i % CM_VIO_SLOTS) * CM_VIO_WORDS;
    t[b + V_REQUESTER] = this.#requester;
    t[b + V_ADDR_LO] = addr % 2 ** 32;
    t[b + V_ADDR_HI] = Math.floor(addr / 2 ** 32);
    t[b + V_LENGTH] = len;
    t[b + V_WRITE] = write ? 1 : 0;
    t[b + V_REFUSED] = refused ? 1 : 0;
    t[b + V_PFN] = pfn;
    this.#onOwnership?.();
  }

  /** Whether the device sits behind an IOMMU. */
  get translated(): boolean {
    return this.#regs !== null;
  }

  // ---- address translation ----

  /** The segment holding pfn, or -1. */
  #segOf(pfn: number): number {
    const i = this.#lastSeg;
    if (pfn >= this.#segStart[i]! && pfn < this.#segEnd[i]!) return i;
    for (let k = 0; k < this.#segStart.length; k++) {
      if (pfn >= this.#segStart[k]! && pfn < this.#segEnd[k]!) {
        this.#lastSeg = k;
        return k;
      }
    }
    return -1;
  }

  /** Records a fault in the first free slot of the register block and raises the fault "interrupt". */
  #fault(iovaPfn: number, write: boolean, reason: number): void {
    const regs = this.#regs!;
    const seq = ((Atomics.add(regs, REG_FAULT_HEAD, 1) + 1) & 0x7fffffff) || 1;
    const b = REG_FAULT_BASE + ((seq - 1) % FAULT_SLOTS) * FAULT_SLOT_WORDS;
    if (Atomics.load(regs, b + F_VALID) !== 0) {
      Atomics.add(regs, REG_FAULT_OVERFLOW, 1);
    } else {
      const iova = iovaPfn * PAGE;
      regs[b + F_FLAGS] = write ? 1 : 0;
      regs[b + F_REASON] = reason;
      regs[b + F_SOURCE] = this.#sourceId;
      regs[b + F_IOVA_LO] = iova % 2 ** 32;
      regs[b + F_IOVA_HI] = Math.floor(iova / 2 ** 32);
      Atomics.store(regs, b + F_VALID, seq);
    }
    this.status = MEMTX_ACCESS_ERROR;
    if (this.#onFault !== null) this.#onFault();
  }

  /**
   * The second-level walk from the root pointer: the target PFN, or -reason. Non-leaf entries need
   * the access's permission too, as on VT-d; a 2 MiB entry at level 2 ends the walk.
   */
  #walk(iovaPfn: number, write: boolean): number {
    const regs = this.#regs!;
    const need = write ? VTD_PTE_WRITE : VTD_PTE_READ;
    const denied = write ? DMAR_REASON_PTE_WRITE : DMAR_REASON_PTE_READ;
    let table = Atomics.load(regs, REG_ROOT_PFN);
    if (table === 0) return -denied;
    for (let level = this.#levels; level >= 1; level--) {
      const s = this.#segOf(table);
      if (s < 0) return -DMAR_REASON_NEXT_PTR_INVALID;
      const j = (table - this.#segStart[s]!) * (PAGE / 4) + 2 * (Math.floor(iovaPfn / ENTRY_SPAN[level]!) % PTES_PER_TABLE);
      const w = this.#words[s]!;
      const lo = w[j]!;
      if ((lo & need) === 0) return -denied;
      const target = (w[j + 1]! % HI_PFN) * HI_PFN + Math.floor(lo / PAGE);
      if (level === 1) {
        this.#walkPerm = lo & (VTD_PTE_READ | VTD_PTE_WRITE);
        return target;
      }
      if (level === 2 && (lo & VTD_PTE_LARGE) !== 0) {
        this.#walkPerm = lo & (VTD_PTE_READ | VTD_PTE_WRITE);
        return target + (iovaPfn % PTES_PER_TABLE);
      }
      table = target;
    }
    return -DMAR_REASON_NEXT_PTR_INVALID;
  }

  /** Drops every IOTLB entry when the driver side invalidated since the last look. */
  #syncIotlb(): void {
    const g = Atomics.load(this.#regs!, REG_GEN);
    if (g !== this.#gen) {
      this.#gen = g;
      this.#tlbTag.fill(-1);
    }
  }

  /**
   * The physical PFN behind a bus page for an access, or -1 after recording a fault / -2 for a
   * bus error (status set either way). An IOTLB hit is three typed-array reads.
   */
  #xlatePage(busPfn: number, write: boolean): number {
    if (busPfn * PAGE >= this.#apertureEnd) {
      this.#fault(busPfn, write, DMAR_REASON_BEYOND_MGAW);
      return -1;
    }
    const e = (busPfn | 0) & (IOTLB_ENTRIES - 1);
    if (this.#tlbTag[e] === busPfn && (this.#tlbPerm[e]! & (write ? VTD_PTE_WRITE : VTD_PTE_READ)) !== 0) return this.#tlbPfn[e]!;
    const pfn = this.#walk(busPfn, write);
    if (pfn < 0) {
      this.#fault(busPfn, write, -pfn);
      return -1;
    }
    // Only translations to memory are cached (with where they land), so a hit needs no lookup.
    const s = this.#segOf(pfn);
    if (s >= 0) {
      this.#tlbTag[e] = busPfn;
      this.#tlbPfn[e] = pfn;
      this.#tlbPerm[e] = this.#walkPerm;
      this.#tlbSeg[e] = s;
      this.#tlbOff[e] = (pfn - this.#segStart[s]!) * PAGE;
    }
    return pfn;
  }

  /**
   * Resolves [addr, addr + len) for one access into runs of segment bytes (this.#runs), checking
   * every page first. Returns the number of runs, or -1 (status set) when any page fails.
   */
  #resolve(addr: number, len: number, write: boolean): number {
    if (this.#map !== null && Atomics.load(this.#map, MM_GEN) !== this.#mapGen) this.#syncMap();
    if (this.#regs !== null) this.#syncIotlb();
    if (len === 0) return 0;
    if (!(addr + len - 1 <= this.#busLimit)) {
      this.status = MEMTX_DECODE_ERROR;
      return -1;
    }
    let n = 0;
    let pos = addr;
    const end = addr + len;
    while (pos < end) {
      const busPfn = Math.floor(pos / PAGE);
      let physPfn: number;
      let chunk: number;
      let inPage: number;
      if (this.#regs === null) {
        // Direct: one translation for the whole rest of the range, cut at segment ends below.
        const phys = pos - this.#busOffset;
        physPfn = phys < 0 ? -2 : Math.floor(phys / PAGE);
        inPage = phys - physPfn * PAGE;
        chunk = end - pos;
      } else {
        physPfn = this.#xlatePage(busPfn, write);
        if (physPfn === -1) return -1;
        inPage = pos - busPfn * PAGE;
        chunk = Math.min(end - pos, (busPfn + 1) * PAGE - pos);
      }
      const s = physPfn < 0 ? -1 : this.#segOf(physPfn);
      if (s < 0) {
        this.status = MEMTX_DECODE_ERROR;
        return -1;
      }
      if (write && this.#refusesWrite(s)) return -1;
      let off = (physPfn - this.#segStart[s]!) * PAGE + inPage;
      const room = (this.#segEnd[s]! - this.#segStart[s]!) * PAGE - off;
      if (chunk > room) chunk = room;
      let seg = s;
      if (this.#cacheActive()) {
        // Page by page: each page is either in the CPU cache (its RAM copy) or not.
        if (chunk > PAGE - inPage) chunk = PAGE - inPage;
        const at = this.#cached(physPfn, inPage, chunk, write, pos);
        if (at === -2) return -1;
        if (at >= 0) {
          seg = this.#shadow;
          off = at;
        }
      }
      const runs = this.#runs;
      if (n > 0 && runs[3 * n - 3] === seg && runs[3 * n - 2]! + runs[3 * n - 1]! === off) {
        runs[3 * n - 1] = runs[3 * n - 1]! + chunk;
      } else {
        if (3 * n + 3 > runs.length) {
          const grown = new Float64Array(runs.length * 2);
          grown.set(runs);
          this.#runs = grown;
        }
        this.#runs[3 * n] = seg;
        this.#runs[3 * n + 1] = off;
        this.#runs[3 * n + 2] = chunk;
        n++;
      }
      pos += chunk;
    }
    this.status = MEMTX_OK;
    return n;
  }

  /**
   * One access of `size` bytes inside one page: the offset in segment this.#seg, or -1 (status
   * set). The fast path of the 8/16/32/64-bit accessors and translate(): through the IOMMU, an
   * IOTLB hit is a generation check and three typed-array reads (the entry keeps the segment).
   */
  #xlate(addr: number, size: number, write: boolean): number {
    // floor, not %: a double modulo is a C call in V8, and bus addresses are doubles above 2^31.
    const busPfn = Math.floor(addr / PAGE);
    const inPage = addr - busPfn * PAGE;
    if (inPage > PAGE - size) return this.#xlateSlow(addr, size, write);
    if (!(addr + size - 1 <= this.#busLimit)) {
      this.status = MEMTX_DECODE_ERROR;
      return -1;
    }
    if (this.#map !== null && Atomics.load(this.#map, MM_GEN) !== this.#mapGen) this.#syncMap();
    const regs = this.#regs;
    if (regs === null) return this.#xlateDirect(addr, size, write);
    const g = Atomics.load(regs, REG_GEN);
    if (g !== this.#gen) {
      this.#gen = g;
      this.#tlbTag.fill(-1);
    }
    const e = (busPfn | 0) & (IOTLB_ENTRIES - 1);
    if (this.#tlbTag[e] !== busPfn || (this.#tlbPerm[e]! & (write ? VTD_PTE_WRITE : VTD_PTE_READ)) === 0) {
      if (this.#xlatePage(busPfn, write) < 0) return -1;
      if (this.#tlbTag[e] !== busPfn) {
        this.status = MEMTX_DECODE_ERROR; // translated to no memory
        return -1;
      }
    }
    const s = this.#tlbSeg[e]!;
    if (write && this.#refusesWrite(s)) return -1;
    this.status = MEMTX_OK;
    if (this.#cacheActive()) {
      const at = this.#cached(this.#tlbPfn[e]!, inPage, size, write, addr);
      if (at === -2) return -1;
      if (at >= 0) {
        this.#seg = this.#shadow;
        return at;
      }
    }
    this.#seg = s;
    return this.#tlbOff[e]! + inPage;
  }

  /** #xlate, then the access hook (DMA-API debug) when one is set. */
  #xlateChecked(addr: number, size: number, write: boolean): number {
    const off = this.#xlate(addr, size, write);
    if (off >= 0 && this.#onAccess !== null) this.#onAccess(addr, size, write);
    return off;
  }

  /** #xlate for a direct device: bus offset, then the segment (a word may continue into the next page of it). */
  #xlateDirect(addr: number, size: number, write: boolean): number {
    const phys = addr - this.#busOffset;
    const physPfn = phys < 0 ? -2 : Math.floor(phys / PAGE);
    const s = physPfn < 0 ? -1 : this.#segOf(physPfn);
    const inPage = phys - physPfn * PAGE;
    if (s < 0 || (inPage > PAGE - size && physPfn + 1 >= this.#segEnd[s]!)) {
      this.status = MEMTX_DECODE_ERROR;
      return -1;
    }
    if (write && this.#refusesWrite(s)) return -1;
    this.status = MEMTX_OK;
    if (this.#cacheActive()) {
      if (inPage > PAGE - size) return this.#xlateSlow(addr, size, write);
      const at = this.#cached(physPfn, inPage, size, write, addr);
      if (at === -2) return -1;
      if (at >= 0) {
        this.#seg = this.#shadow;
        return at;
      }
    }
    this.#seg = s;
    return (physPfn - this.#segStart[s]!) * PAGE + inPage;
  }

  /** A word across a page boundary: the general path, which must find one run. */
  #xlateSlow(addr: number, size: number, write: boolean): number {
    const n = this.#resolve(addr, size, write);
    if (n !== 1) {
      if (n > 1) this.status = MEMTX_DECODE_ERROR; // split over two segments: no device does that in one beat
      return -1;
    }
    this.#seg = this.#runs[0]!;
    return this.#runs[1]!;
  }

  // ---- the accessors ----

  /**
   * Copies `length` bytes at bus address `addr` into dst[dstOffset..] (device reads memory).
   * @returns MEMTX_OK, or the error with dst unchanged.
   */
  read(addr: number | bigint, dst: Uint8Array, dstOffset = 0, length = dst.length - dstOffset): number {
    const a = busAddr('read', addr);
    checkBuffer('read', dst, dstOffset, length);
    const n = this.#resolve(a, length, false);
    if (n < 0) return this.status;
    if (this.#onAccess !== null && length > 0) this.#onAccess(a, length, false);
    const runs = this.#runs;
    for (let i = 0, at = dstOffset; i < n; i++) {
      const s = runs[3 * i]!;
      const off = runs[3 * i + 1]!;
      const len = runs[3 * i + 2]!;
      dst.set(this.#bytes[s]!.subarray(off, off + len), at);
      at += len;
    }
    return MEMTX_OK;
  }

  /**
   * Copies `length` bytes of src[srcOffset..] to bus address `addr` (device writes memory).
   * @returns MEMTX_OK, or the error with no byte of memory changed.
   */
  write(addr: number | bigint, src: Uint8Array, srcOffset = 0, length = src.length - srcOffset): number {
    const a = busAddr('write', addr);
    checkBuffer('write', src, srcOffset, length);
    const n = this.#resolve(a, length, true);
    if (n < 0) return this.status;
    if (this.#onAccess !== null && length > 0) this.#onAccess(a, length, true);
    const runs = this.#runs;
    for (let i = 0, at = srcOffset; i < n; i++) {
      const s = runs[3 * i]!;
      const len = runs[3 * i + 2]!;
      this.#bytes[s]!.set(len === src.length ? src : src.subarray(at, at + len), runs[3 * i + 1]!);
      at += len;
    }
    return MEMTX_OK;
  }

  /** Sets `length` bytes at `addr` to `byte` (dma_memory_set). @returns MEMTX_*. */
  fill(addr: number | bigint, byte: number, length: number): number {
    const a = busAddr('fill', addr);
    if (!Number.isInteger(byte) || byte < 0 || byte > 255) throw new RangeError(`BusEngine.fill: Expected an integer from 0 to 255 for byte but received ${String(byte)}`);
    checkLength('fill', length);
    const n = this.#resolve(a, length, true);
    if (n < 0) return this.status;
    if (this.#onAccess !== null && length > 0) this.#onAccess(a, length, true);
    const runs = this.#runs;
    for (let i = 0; i < n; i++) this.#bytes[runs[3 * i]!]!.fill(byte, runs[3 * i + 1]!, runs[3 * i + 1]! + runs[3 * i + 2]!);
    return MEMTX_OK;
  }

  /** An 8-bit load; 0xff when the access fails (status tells). */
  read8(addr: number | bigint): number {
    const off = this.#xlateChecked(busAddr('read8', addr), 1, false);
    return off < 0 ? 0xff : this.#bytes[this.#seg]![off]!;
  }

  /** A little-endian 16-bit load; 0xffff when the access fails. */
  read16(addr: number | bigint): number {
    const off = this.#xlateChecked(busAddr('read16', addr), 2, false);
    return off < 0 ? 0xffff : this.#dv[this.#seg]!.getUint16(off, true);
  }

  /** A little-endian 32-bit load; 0xffffffff when the access fails. */
  read32(addr: number | bigint): number {
    const off = this.#xlateChecked(busAddr('read32', addr), 4, false);
    return off < 0 ? 0xffffffff : this.#dv[this.#seg]!.getUint32(off, true);
  }

  /** A little-endian 64-bit load; all-ones when the access fails. */
  read64(addr: number | bigint): bigint {
    const off = this.#xlateChecked(busAddr('read64', addr), 8, false);
    return off < 0 ? 0xffff_ffff_ffff_ffffn : this.#dv[this.#seg]!.getBigUint64(off, true);
  }

  /** An 8-bit store. @returns MEMTX_*. */
  write8(addr: number | bigint, value: number): number {
    const a = busAddr('write8', addr);
    checkValue('write8', value, 0xff);
    const off = this.#xlateChecked(a, 1, true);
    if (off >= 0) this.#bytes[this.#seg]![off] = value;
    return this.status;
  }

  /** A little-endian 16-bit store. @returns MEMTX_*. */
  write16(addr: number | bigint, value: number): number {
    const a = busAddr('write16', addr);
    checkValue('write16', value, 0xffff);
    const off = this.#xlateChecked(a, 2, true);
    if (off >= 0) this.#dv[this.#seg]!.setUint16(off, value, true);
    return this.status;
  }

  /** A little-endian 32-bit store. @returns MEMTX_*. */
  write32(addr: number | bigint, value: number): number {
    const a = busAddr('write32', addr);
    checkValue('write32', value, 0xffffffff);
    const off = this.#xlateChecked(a, 4, true);
    if (off >= 0) this.#dv[this.#seg]!.setUint32(off, value, true);
    return this.status;
  }

  /** A little-endian 64-bit store. @returns MEMTX_*. */
  write64(addr: number | bigint, value: bigint): number {
    const a = busAddr('write64', addr);
    if (typeof value !== 'bigint') throw new TypeError(`BusEngine.write64: Expected a bigint for value but received ${describe(value)}`);
    const off = this.#xlateChecked(a, 8, true);
    if (off >= 0) this.#dv[this.#seg]!.setBigUint64(off, BigInt.asUintN(64, value), true);
    return this.status;
  }

  /**
   * The physical address an access at `addr` would reach, or -1 (status says why; a fault is
   * recorded, as the access would record it). Through the IOMMU an IOTLB hit is the fast path.
   */
  translate(addr: number | bigint, write = false): number {
    const a = busAddr('translate', addr);
    const off = this.#xlate(a, 1, write === true);
    if (off < 0) return -1;
    return this.#seg === this.#shadow ? this.#xPfn * PAGE + (off % PAGE) : this.#segStart[this.#seg]! * PAGE + off;
  }
}

/** A bus address as a number: a non-negative integer or bigint (above 2^53 it is past any memory anyway). */
function busAddr(fn: string, addr: unknown): number {
  if (typeof addr === 'number') {
    if (Number.isInteger(addr) && addr >= 0) return addr;
    throw new RangeError(`BusEngine.${fn}: Expected a non-negative integer for addr but received ${String(addr)}`);
  }
  if (typeof addr === 'bigint') {
    if (addr >= 0n) return Number(addr);
    throw new RangeError(`BusEngine.${fn}: Expected a non-negative bigint for addr but received ${addr}`);
  }
  throw new TypeError(`BusEngine.${fn}: Expected a number or bigint for addr but received ${describe(addr)}`);
}

function checkLength(fn: string, length: unknown): void {
  if (typeof length !== 'number' || !Number.isSafeInteger(length) || length < 0) {
    throw new RangeError(`BusEngine.${fn}: Expected a non-negative integer for length but received ${describe(length)}`);
  }
}

function checkBuffer(fn: string, buf: unknown, offset: unknown, length: unknown): void {
  if (!(buf instanceof Uint8Array)) throw new TypeError(`BusEngine.${fn}: Expected a Uint8Array for the buffer but received ${describe(buf)}`);
  if (typeof offset !== 'number' || !Number.isSafeInteger(offset) || offset < 0 || offset > buf.length) {
    throw new RangeError(`BusEngine.${fn}: Expected an integer from 0 to ${buf.length} for the buffer offset but received ${describe(offset)}`);
  }
  checkLength(fn, length);
  if ((offset) + (length as number) > buf.length) {
    throw new RangeError(`BusEngine.${fn}: ${String(length)} bytes from offset ${offset} leave the ${buf.length}-byte buffer`);
  }
}

function checkValue(fn: string, value: unknown, max: number): void {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > max) {
    throw new RangeError(`BusEngine.${fn}: Expected an integer from 0 to 0x${max.toString(16)} for value but received ${describe(value)}`);
  }
}
