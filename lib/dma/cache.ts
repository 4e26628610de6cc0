// The CPU's data cache as a non-coherent device experiences it (arm64, RISC-V): write-back, 64-byte
// lines, and a device that reads and writes RAM without looking in it. x86 (and this host) is
// coherent, so the difference is simulated, and only where it matters: a page enters the cache
// model when cache maintenance is done on it for a non-coherent device (arch_sync_dma_for_device,
// arch_sync_dma_for_cpu) or it is allocated non-coherent (dma_alloc_pages and its family).
//
// For such a page the machine's bytes (every CPU view) are the cache, and a shadow page in shared
// memory (lib/dma/cache_layout.ts) is RAM: the bus engine of a non-coherent device reads and writes
// the shadow. A line is dirty when the CPU wrote it since it was last filled or cleaned, which is
// seen by comparing it with a snapshot taken then. Maintenance does what arm64 does:
//   clean (dc cvac):        a dirty line is written back to RAM
//   invalidate (dc ivac):   the line is refilled from RAM (a dirty line's CPU writes are lost)
//   partial lines at the ends of an invalidate are cleaned first (dc civac), as dcache_inval_poc does
// Nothing is ever evicted on its own, so a missing sync always shows. The model holds CACHE_PAGES
// pages; past that the oldest page no device owns is written back and dropped (what a real cache
// does to a line it needs), which only hides bugs, never breaks a correct driver.

import { Buffer } from 'node:buffer';
import type { Machine } from '../mm/machine';
import type { Device } from './device';
import { segmentBytes } from '../mm/segment';
import { WARN_ONCE } from './bug';
import {
  CACHE_LINE, CM_COUNT, OWNERSHIP_OFF, OWNERSHIP_REPORT, OWNERSHIP_STRICT, CM_HASH_SIZE, CM_SEQ, CM_SLOTS, CM_VIO_HEAD, CM_VIO_SLOTS, CM_VIO_WORDS, LINES_PER_PAGE, PAGE,
  V_ADDR_HI, V_ADDR_LO, V_LENGTH, V_PFN, V_REFUSED, V_REQUESTER, V_WRITE, cacheInsert, cacheLayout, cacheRebuild, cacheRemove,
  type CacheLayout,
} from './cache_layout';

/** Pages the model holds at once (32 MiB of non-coherent buffers). */
export const CACHE_PAGES = 8192;

/** An access a device made to lines the CPU owned, as the bus recorded it. */
export interface CacheViolation {
  readonly requester: number;
  readonly addr: number;
  readonly length: number;
  readonly write: boolean;
  /** The bus refused it (ownership 'strict'). */
  readonly refused: boolean;
  readonly pfn: number;
}

/** How much maintenance the model did (the counters of dma_cache_maintenance come from here too). */
export interface DmaCacheStats {
  /** Pages held now. */
  readonly pages: number;
  /** Lines written back by clean operations. */
  readonly writtenBack: number;
  /** Lines refilled from RAM by invalidate operations. */
  readonly refilled: number;
  /** Dirty lines an invalidate threw away (CPU writes lost). */
  readonly discarded: number;
  /** Pages dropped to make room. */
  readonly evicted: number;
}

const PAGE_WORDS = PAGE / 4;
const LINE_WORDS = CACHE_LINE / 4;

/** The cache model of one machine. */
export class DmaCache {
  /** Published to the bus engines of non-coherent devices. */
  readonly table: SharedArrayBuffer;
  readonly #machine: Machine;
  readonly #t: Int32Array;
  readonly #l: CacheLayout;
  readonly #ram: Uint8Array;
  readonly #owners: Uint8Array;
  /** The CPU's bytes of each line when it was last filled or cleaned (dirty = differs). */
  readonly #snap: Uint8Array;
  readonly #snapWords: Int32Array;
  /** The PFN each slot holds, -1 when free. */
  readonly #slotPfn: Float64Array;
  readonly #bySlotFree: number[] = [];
  /** Slots in the order they were filled, with the fill's serial (an entry whose slot was refilled since is skipped). */
  #fifo: number[] = [];
  #fifoSerial: number[] = [];
  readonly #slotSerial: Float64Array;
  #serial = 0;
  readonly #where = new Map<number, number>();
  #vioSeen = 0;
  /** Devices by the number their bus engines put in violation records. */
  readonly #requesters = new Map<number, WeakRef<object>>();
  readonly #requesterIds = new WeakMap<object, number>();
  #writtenBack = 0;
  #refilled = 0;
  #discarded = 0;
  #evicted = 0;

  constructor(machine: Machine, slots = CACHE_PAGES) {
    this.#machine = machine;
    this.#l = cacheLayout(slots);
    this.table = new SharedArrayBuffer(this.#l.bytes);
    this.#t = new Int32Array(this.table);
    this.#t[CM_SLOTS] = slots;
    this.#t[CM_HASH_SIZE] = this.#l.hashSize;
    this.#ram = new Uint8Array(this.table, this.#l.ram, slots * PAGE);
    this.#owners = new Uint8Array(this.table, this.#l.owners, slots * LINES_PER_PAGE);
    this.#snap = new Uint8Array(slots * PAGE);
    this.#snapWords = new Int32Array(this.#snap.buffer);
    this.#slotPfn = new Float64Array(slots).fill(-1);
    this.#slotSerial = new Float64Array(slots);
    for (let i = slots - 1; i >= 0; i--) this.#bySlotFree.push(i);
  }

  /** The number naming `dev` in the bus's violation records. */
  requester(dev: object): number {
    let id = this.#requesterIds.get(dev);
    if (id === undefined) {
      id = this.#requesters.size + 1;
      this.#requesterIds.set(dev, id);
      this.#requesters.set(id, new WeakRef(dev));
    }
    return id;
  }

  /** The device a violation record names, if it is still alive. */
  requesterDevice(id: number): object | null {
    return this.#requesters.get(id)?.deref() ?? null;
  }

  stats(): DmaCacheStats {
    return { pages: this.#where.size, writtenBack: this.#writtenBack, refilled: this.#refilled, discarded: this.#discarded, evicted: this.#evicted };
  }

  /** Whether the page is held (a non-coherent device sees its RAM copy). */
  holds(pfn: number): boolean {
    return this.#where.has(pfn);
  }

  /** The CPU's 4 KiB of a page, or null when it is no longer memory of the machine. */
  #cpu(pfn: number): Uint8Array | null {
    return cpuBytes(this.#machine, pfn * PAGE, PAGE);
  }

  // ---- the hash (under the seqlock) ----
  // The table is shared with device models, which may scribble on it: every probe here is bounded,
  // and when the table does not hold what this side put there, it is rebuilt from #where (the
  // truth). Junk can then mislead only devices' accesses, never this side.

  /** Starts a change: the sequence goes odd (whatever a scribbler left in it), and back to even at #end. */
  #begin(): number {
    const seq = Atomics.load(this.#t, CM_SEQ) | 1;
    Atomics.store(this.#t, CM_SEQ, seq);
    return seq;
  }

  #end(seq: number): void {
    this.#t[CM_COUNT] = this.#where.size;
    Atomics.store(this.#t, CM_SEQ, (seq + 1) | 0);
  }

  #publish(pfn: number, slot: number): void {
    const seq = this.#begin();
    if (!cacheInsert(this.#t, this.#l, pfn, slot)) this.#rebuild();
    this.#end(seq);
  }

  /** Rewrites the hash from #where (the caller holds the seqlock). */
  #rebuild(): void {
    cacheRebuild(this.#t, this.#l, this.#where);
  }

  #unpublish(pfn: number): void {
    const seq = this.#begin();
    // Not where this side left it: the table was written by someone else.
    if (!cacheRemove(this.#t, this.#l, pfn)) this.#rebuild();
    this.#end(seq);
  }

  // ---- holding pages ----

  /**
   * The slot holding `pfn`, filled now if needed (RAM and snapshot = the CPU's bytes: the page
   * enters clean). -1 when the page is no memory or every slot holds lines a device owns.
   */
  #hold(pfn: number): number {
    const have = this.#where.get(pfn);
    if (have !== undefined) return have;
    const cpu = this.#cpu(pfn);
    if (cpu === null) return -1;
    let slot = this.#bySlotFree.pop();
    if (slot === undefined) slot = this.#evictOne();
    if (slot < 0) {
      WARN_ONCE(this.#machine, 'dma_cache_full', `WARNING: dmamem: the non-coherent cache model is full (${this.#l.slots} pages with lines devices own): pfn 0x${pfn.toString(16)} is left coherent`);
      return -1;
    }
    this.#ram.set(cpu, slot * PAGE);
    this.#snap.set(cpu, slot * PAGE);
    this.#owners.fill(0, slot * LINES_PER_PAGE, (slot + 1) * LINES_PER_PAGE);
    this.#slotPfn[slot] = pfn;
    this.#where.set(pfn, slot);
    this.#slotSerial[slot] = ++this.#serial;
    this.#fifo.push(slot);
    this.#fifoSerial.push(this.#serial);
    this.#publish(pfn, slot);
    return slot;
  }

  /** Frees the oldest slot no device owns a line of (written back and dropped first), or -1. */
  #evictOne(): number {
    for (let tries = this.#fifo.length; tries > 0; tries--) {
      const slot = this.#fifo.shift()!;
      const serial = this.#fifoSerial.shift()!;
      if (this.#slotPfn[slot]! < 0 || this.#slotSerial[slot] !== serial) continue;
      if (this.#owned(slot)) {
        this.#fifo.push(slot);
        this.#fifoSerial.push(serial);
        continue;
      }
      this.#drop(slot);
      this.#evicted++;
      return this.#bySlotFree.pop()!;
    }
    return -1;
  }

  #owned(slot: number): boolean {
    for (let i = slot * LINES_PER_PAGE, end = i + LINES_PER_PAGE; i < end; i++) if (this.#owners[i] !== 0) return true;
    return false;
  }

  /**
   * Leaves the page as memory would be once the cache let go of it: dirty lines written back (the
   * CPU keeps its bytes), clean lines read from RAM (the CPU sees what a device wrote), then the
   * slot is free and devices see the CPU's bytes again.
   */
  #drop(slot: number): void {
    const pfn = this.#slotPfn[slot]!;
    const cpu = this.#cpu(pfn);
    if (cpu !== null) {
      const base = slot * PAGE;
      const cw = words(cpu);
      for (let line = 0; line < LINES_PER_PAGE; line++) {
        const at = line * CACHE_LINE;
        if (!this.#dirty(cw, slot, line)) cpu.set(this.#ram.subarray(base + at, base + at + CACHE_LINE), at);
      }
    }
    this.#slotPfn[slot] = -1;
    this.#where.delete(pfn);
    this.#unpublish(pfn);
    this.#bySlotFree.push(slot);
  }

  #dirty(cpuWords: Int32Array, slot: number, line: number): boolean {
    const s = this.#snapWords;
    for (let w = line * LINE_WORDS, sw = slot * PAGE_WORDS + w, end = w + LINE_WORDS; w < end; w++, sw++) if (cpuWords[w] !== s[sw]) return true;
    return false;
  }

  /** Calls fn for each page of [phys, phys + size) rounded out to whole lines: its first and end line. */
  #eachPage(phys: number, size: number, fn: (pfn: number, first: number, end: number) => void): void {
    const start = Math.floor(phys / CACHE_LINE) * CACHE_LINE;
    const stop = Math.ceil((phys + Math.max(size, 1)) / CACHE_LINE) * CACHE_LINE;
    for (let at = start; at < stop;) {
      const pfn = Math.floor(at / PAGE);
      const pageEnd = Math.min(stop, (pfn + 1) * PAGE);
      fn(pfn, (at - pfn * PAGE) / CACHE_LINE, (pageEnd - pfn * PAGE) / CACHE_LINE);
      at = pageEnd;
    }
  }

  // ---- maintenance ----

  /** Clean (dcache_clean_poc): dirty lines of [phys, +size) are written back to RAM. */
  clean(phys: number, size: number): void {
    this.#eachPage(phys, size, (pfn, first, end) => {
      const slot = this.#hold(pfn);
      if (slot >= 0) this.#cleanLines(pfn, slot, first, end);
    });
  }

  #cleanLines(pfn: number, slot: number, first: number, end: number): void {
    const cpu = this.#cpu(pfn)!;
    const base = slot * PAGE;
    // Nothing dirty (the usual case): one compare of the range.
    if (Buffer.compare(cpu.subarray(first * CACHE_LINE, end * CACHE_LINE), this.#snap.subarray(base + first * CACHE_LINE, base + end * CACHE_LINE)) === 0) return;
    const cw = words(cpu);
    for (let line = first; line < end;) {
      if (!this.#dirty(cw, slot, line)) {
        line++;
        continue;
      }
      // A run of dirty lines goes back in one copy.
      let stop = line + 1;
      while (stop < end && this.#dirty(cw, slot, stop)) stop++;
      const bytes = cpu.subarray(line * CACHE_LINE, stop * CACHE_LINE);
      this.#ram.set(bytes, base + line * CACHE_LINE);
      this.#snap.set(bytes, base + line * CACHE_LINE);
      this.#writtenBack += stop - line;
      line = stop;
    }
  }

  /**
   * Invalidate (dcache_inval_poc): lines of [phys, +size) are refilled from RAM; a line the range
   * only partly covers is cleaned first (dc civac), so bytes outside the buffer that the CPU wrote
   * reach RAM before the refill (and whatever the device wrote to the rest of that line is lost).
   */
  invalidate(phys: number, size: number): void {
    const end = phys + size;
    if (phys % CACHE_LINE !== 0) this.clean(phys, 1);
    if (end % CACHE_LINE !== 0) this.clean(end - 1, 1);
    this.#eachPage(phys, size, (pfn, first, stop) => {
      const slot = this.#hold(pfn);
      if (slot < 0) return;
      const cpu = this.#cpu(pfn)!;
      const base = slot * PAGE;
      const from = base + first * CACHE_LINE;
      const to = base + stop * CACHE_LINE;
      if (Buffer.compare(cpu.subarray(first * CACHE_LINE, stop * CACHE_LINE), this.#snap.subarray(from, to)) !== 0) {
        const cw = words(cpu);
        for (let line = first; line < stop; line++) if (this.#dirty(cw, slot, line)) this.#discarded++;
      }
      cpu.set(this.#ram.subarray(from, to), first * CACHE_LINE);
      this.#snap.set(this.#ram.subarray(from, to), from);
      this.#refilled += stop - first;
    });
  }

  /**
   * arch_dma_prep_coherent (dcache_clean_inval_poc of the kernel alias): the pages leave the cache
   * for good, and from now on the CPU and devices see the same bytes (an uncached buffer).
   */
  release(phys: number, size: number): void {
    this.#eachPage(phys, size, (pfn) => {
      const slot = this.#where.get(pfn);
      if (slot !== undefined) this.#drop(slot);
    });
  }

  /**
   * A non-coherent allocation (dma_alloc_pages and its family): its pages enter the cache as they
   * are now, so what the CPU writes from here on is in the cache until cleaned.
   */
  hold(phys: number, size: number): void {
    this.#eachPage(phys, size, (pfn) => { this.#hold(pfn); });
  }

  /** Adds `delta` to the device-owner count of every line of [phys, +size) (holding the pages). */
  own(phys: number, size: number, delta: 1 | -1): void {
    this.#eachPage(phys, size, (pfn, first, end) => {
      const slot = delta > 0 ? this.#hold(pfn) : (this.#where.get(pfn) ?? -1);
      if (slot < 0) return;
      const o = this.#owners;
      for (let i = slot * LINES_PER_PAGE + first, stop = slot * LINES_PER_PAGE + end; i < stop; i++) {
        const v = o[i]! + delta;
        o[i] = v < 0 ? 0 : v > 255 ? 255 : v;
      }
    });
  }

  /** The device accesses the bus recorded since the last call (at most the ring's size; older ones are counted). */
  drainViolations(): { records: CacheViolation[]; lost: number } {
    const t = this.#t;
    const head = Atomics.load(t, CM_VIO_HEAD);
    const records: CacheViolation[] = [];
    let from = this.#vioSeen;
    let lost = 0;
    if (head - from > CM_VIO_SLOTS) {
      lost = head - from - CM_VIO_SLOTS;
      from = head - CM_VIO_SLOTS;
    }
    for (let i = from; i < head; i++) {
      const b = this.#l.vio + (i % CM_VIO_SLOTS) * CM_VIO_WORDS;
      records.push({
        requester: t[b + V_REQUESTER]!, addr: (t[b + V_ADDR_HI]! >>> 0) * 2 ** 32 + (t[b + V_ADDR_LO]! >>> 0),
        length: t[b + V_LENGTH]!, write: t[b + V_WRITE] !== 0, refused: t[b + V_REFUSED] !== 0, pfn: t[b + V_PFN]!,
      });
    }
    this.#vioSeen = head;
    return { records, lost };
  }
}

/** The CPU's bytes of [phys, +size) when one segment of the machine holds them all, else null. */
export function cpuBytes(machine: Machine, phys: number, size: number): Uint8Array | null {
  const seg = machine.segmentOfPfn(Math.floor(phys / PAGE));
  if (seg === null) return null;
  const off = phys - seg.startPfn * PAGE;
  if (off + size > seg.pages * PAGE) return null;
  return segmentBytes(seg).subarray(off, off + size);
}

function words(bytes: Uint8Array): Int32Array {
  return new Int32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >>> 2);
}

const caches = new WeakMap<Machine, DmaCache>();

/** The machine's cache model, made on first use. */
export function dma_cache(machine: Machine): DmaCache {
  let c = caches.get(machine);
  if (c === undefined) caches.set(machine, (c = new DmaCache(machine)));
  return c;
}

/**
 * What the simulated CPU cache of non-coherent devices did on this machine: pages held now, lines
 * written back, refilled and thrown away (dirty lines an invalidate discarded), pages evicted.
 * @example dma_cache_stats(machine).discarded > 0 // some CPU write was lost to an invalidate
 */
export function dma_cache_stats(machine: Machine): DmaCacheStats {
  return caches.get(machine)?.stats() ?? { pages: 0, writtenBack: 0, refilled: 0, discarded: 0, evicted: 0 };
}

/** The machine's cache model if one was made (no model: nothing was ever cached). */
export function dma_cache_if_any(machine: Machine): DmaCache | null {
  return caches.get(machine) ?? null;
}

/**
 * What a device's bus engine needs of the cache model: present for a non-coherent device (its
 * accesses go to RAM for pages the cache holds) and for a device with ownership checking (the
 * bus checks line owners; a coherent one snoops, so it keeps reading the CPU's bytes).
 */
export function busCacheDescription(dev: Device): { table: SharedArrayBuffer; ownership: number; requester: number; snoop: boolean } | undefined {
  if (dev.dma_coherent && dev.ownership === 'off') return undefined;
  const cache = dma_cache(dev.machine);
  const ownership = dev.ownership === 'strict' ? OWNERSHIP_STRICT : dev.ownership === 'report' ? OWNERSHIP_REPORT : OWNERSHIP_OFF;
  return { table: cache.table, ownership, requester: cache.requester(dev), snoop: dev.dma_coherent };
}
