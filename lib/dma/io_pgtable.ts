// The I/O page table of an IOMMU domain in the VT-d second-level format (drivers/iommu/intel/
// iommu.c, pfn_to_dma_pte and friends): tables of 512 little-endian 64-bit entries in pages the
// machine's page allocator hands out, walked by the hardware side (lib/devices) from the root PFN.

import { GFP_KERNEL, PAGE_SIZE } from '../mm/gfp';
import { Machine } from '../mm/machine';
import type { Page } from '../mm/page';
import { segmentBytes, type Segment } from '../mm/segment';
import type { Device } from './device';
import {
  PTES_PER_TABLE, REG_ROOT_PFN, SW_PROT_SHIFT_HI, SW_PTE_MAPPED, VTD_PTE_LARGE, VTD_PTE_READ,
  VTD_PTE_SNP, VTD_PTE_WRITE,
} from './iommu_regs';

const EEXIST = 17;
const ENOMEM = 12;
const EINVAL = 22;
/** IOMMU_READ / IOMMU_WRITE / IOMMU_CACHE (include/linux/iommu.h), repeated to keep this a leaf. */
const IOMMU_READ = 1;
const IOMMU_WRITE = 2;
const IOMMU_CACHE = 4;
/** 2^20: the split of a PFN between the entry's low word (bits 12..31) and high word. */
const HI_PFN = 0x100000;
/** PFNs a VT-d entry can hold (52-bit physical addresses). */
const MAX_PFN = 2 ** 40;

/** The counters of the owning IOMMU domain that the page table keeps up to date. */
export interface IoPgtableCounters {
  mappedPages: number;
  maps: number;
  unmaps: number;
  pageTables: number;
}

/**
 * A table: where its 512 entries sit in machine memory, and how many are present. The record stays
 * in its map when the table is retired (page null) and takes the next page made for the same place,
 * so that a map/unmap cycle on an emptied domain allocates no JS object.
 */
interface PtTable {
  page: Page | null;
  /** The 32-bit words of the segment holding the page (entry i: words[base + 2i], [base + 2i + 1]). */
  words: Uint32Array;
  base: number;
  readonly level: number;
  readonly key: number;
  used: number;
}

/** IOVA pages per table at each level (512^level), so no power is computed on a hot path. */
const TABLE_SPAN = [1, 512, 512 ** 2, 512 ** 3, 512 ** 4, 512 ** 5];
/** Retired table records kept per level before the map is pruned. */
const RETIRED_RECORDS_MAX = 4096;

/** Page-table pages per machine: the SecPageTables line of /proc/meminfo. */
const secPageTables = new WeakMap<Machine, number>();
/** The 32-bit words of each segment, made once (the segment's bytes are its memfd mapping). */
const segmentWords = new WeakMap<Segment, Uint32Array>();

function wordsOf(seg: Segment): Uint32Array {
  let w = segmentWords.get(seg);
  if (w === undefined) {
    const b = segmentBytes(seg);
    w = new Uint32Array(b.buffer, b.byteOffset, b.byteLength >>> 2);
    segmentWords.set(seg, w);
  }
  return w;
}

declare module '../mm/machine' {
  interface Machine {
    /** IOMMU page-table pages allocated from this machine now (meminfo's SecPageTables, in pages). */
    readonly secPageTables: number;
  }
}

Object.defineProperty(Machine.prototype, 'secPageTables', {
  get(this: Machine): number {
    return secPageTables.get(this) ?? 0;
  },
  configurable: true,
});

/**
 * The page table as the IOMMU driver keeps it: the entries live in machine memory (that is what
 * the hardware side walks); the driver's bookkeeping (which table covers which IOVA range, how many
 * entries each has) stays here, as the kernel keeps it in struct page and its domain.
 *
 * A table whose last entry goes is unlinked at once and freed after the next IOTLB invalidation
 * (`releaseRetired`), so that nothing cached can still lead into a page reused by someone else, and
 * a domain with nothing mapped holds no page. A 2 MiB run that is 2 MiB aligned on both sides is one
 * large-page entry at level 2; unmapping part of one splits it into a table of 512 entries first.
 */
export class IoPageTable {
  readonly #dev: Device;
  readonly #counters: IoPgtableCounters;
  readonly #regs: Int32Array;
  /** Levels of the table: 4 (48-bit), or 5 for apertures above 48 bits. */
  readonly levels: number;
  /** Tables by level (index 1..levels), keyed by IOVA pfn / 512^level. */
  readonly #tables: Map<number, PtTable>[] = [];
  /** Unlinked tables waiting for an IOTLB invalidation before their pages go back. */
  readonly #retired: Page[] = [];

  /** `dev` names the device in WARNs; `counters` are the domain's; `regs` its register block. */
  constructor(dev: Device, counters: IoPgtableCounters, regs: Int32Array, apertureBits: number) {
    this.#dev = dev;
    this.#counters = counters;
    this.#regs = regs;
    this.levels = apertureBits > 48 ? 5 : 4;
    for (let l = 0; l <= this.levels; l++) this.#tables.push(new Map());
  }

  /** Reads entry `i` of a table: [low word, high word]. */
  static #lo(t: PtTable, i: number): number {
    return t.words[t.base + 2 * i]!;
  }

  /** The live table at `level` covering iovaPfn, or undefined. */
  #find(level: number, iovaPfn: number): PtTable | undefined {
    const t = this.#tables[level]!.get(Math.floor(iovaPfn / TABLE_SPAN[level]!));
    return t === undefined || t.page === null ? undefined : t;
  }

  /** A zeroed page for a table, counted in the domain and machine; null when memory is short. */
  #allocTablePage(): { page: Page; words: Uint32Array; base: number } | null {
    const m = this.#dev.machine;
    const page = m.alloc_pages_node(this.#dev.numa_node, GFP_KERNEL, 0);
    if (page === null) return null;
    const seg = page.segment as Segment;
    const words = wordsOf(seg);
    const base = (page.pfn - seg.startPfn) * (PAGE_SIZE / 4);
    words.fill(0, base, base + PAGE_SIZE / 4);
    this.#counters.pageTables++;
    secPageTables.set(m, (secPageTables.get(m) ?? 0) + 1);
    return { page, words, base };
  }

  /** The table at `level` covering iovaPfn, made (with its parents) when missing; null on ENOMEM. */
  #ensure(level: number, iovaPfn: number): PtTable | null {
    const key = Math.floor(iovaPfn / TABLE_SPAN[level]!);
    const map = this.#tables[level]!;
    let t = map.get(key);
    if (t !== undefined && t.page !== null) return t;
    let parent: PtTable | null = null;
    if (level < this.levels) {
      parent = this.#ensure(level + 1, iovaPfn);
      if (parent === null) return null;
    }
    const mem = this.#allocTablePage();
    if (mem === null) {
      if (parent !== null && parent.used === 0) this.#retire(parent, true);
      return null;
    }
    if (t === undefined) {
      if (map.size >= RETIRED_RECORDS_MAX) this.#prune(map);
      t = { page: mem.page, words: mem.words, base: mem.base, level, key, used: 0 };
      map.set(key, t);
    } else {
      t.page = mem.page;
      t.words = mem.words;
      t.base = mem.base;
      t.used = 0;
    }
    if (parent === null) {
      Atomics.store(this.#regs, REG_ROOT_PFN, mem.page.pfn);
    } else {
      // A next-table pointer allows read and write; the leaf decides.
      const i = key % PTES_PER_TABLE;
      parent.words[parent.base + 2 * i + 1] = Math.floor(mem.page.pfn / HI_PFN);
      parent.words[parent.base + 2 * i] = mem.page.pfn * PAGE_SIZE + (VTD_PTE_READ | VTD_PTE_WRITE | SW_PTE_MAPPED);
      parent.used++;
    }
    return t;
  }

  /**
   * Unlinks an empty table from its parent (and the parent too if it empties). Its page waits for
   * the next invalidation, unless `now` (a table no translation ever went through).
   */
  #retire(t: PtTable, now: boolean): void {
    const page = t.page!;
    t.page = null;
    if (now) this.#freeTablePage(page);
    else this.#retired.push(page);
    if (t.level === this.levels) {
      Atomics.store(this.#regs, REG_ROOT_PFN, 0);
      return;
    }
    const parent = this.#tables[t.level + 1]!.get(Math.floor(t.key / PTES_PER_TABLE));
    if (parent === undefined || parent.page === null) return;
    const i = t.key % PTES_PER_TABLE;
    parent.words[parent.base + 2 * i] = 0;
    parent.words[parent.base + 2 * i + 1] = 0;
    if (--parent.used === 0) this.#retire(parent, now);
  }

  /** Drops the records of retired tables from a map that has grown large. */
  #prune(map: Map<number, PtTable>): void {
    for (const [key, t] of map) if (t.page === null) map.delete(key);
  }

  #freeTablePage(page: Page): void {
    const m = this.#dev.machine;
    this.#counters.pageTables--;
    secPageTables.set(m, (secPageTables.get(m) ?? 1) - 1);
    if (!m.isDestroyed) m.__free_pages(page, 0);
  }

  /** After an IOTLB invalidation: the retired tables' pages go back to the page allocator. */
  releaseRetired(): void {
    if (this.#retired.length === 0) return;
    for (const page of this.#retired.splice(0)) this.#freeTablePage(page);
  }

  /** Whether any entry in [o, o + n) of the leaf covering idx, or a large page over it, is present. */
  #anyPresent(idx: number, o: number, n: number): boolean {
    const leaf = this.#find(1, idx);
    if (leaf !== undefined) {
      const w = leaf.words;
      for (let i = leaf.base + 2 * o, end = leaf.base + 2 * (o + n); i < end; i += 2) if (w[i] !== 0) return true;
      return false;
    }
    const l2 = this.#find(2, idx);
    return l2 !== undefined && (IoPageTable.#lo(l2, Math.floor(idx / PTES_PER_TABLE) % PTES_PER_TABLE) & VTD_PTE_LARGE) !== 0;
  }

  /**
   * Maps `pages` IOVA pages from iovaPfn to physical pages from pfn. All-or-nothing: a PTE that is
   * already present is a WARN and -EEXIST, as io-pgtable does; no page for a table is -ENOMEM;
   * a PFN a VT-d entry cannot hold is -EINVAL. Nothing is changed on failure.
   */
  mapPages(iovaPfn: number, pfn: number, pages: number, prot: number): number {
    if (pfn + pages > MAX_PFN) return -EINVAL;
    for (let done = 0; done < pages;) {
      const idx = iovaPfn + done;
      const o = idx % PTES_PER_TABLE;
      const n = Math.min(PTES_PER_TABLE - o, pages - done);
      if (this.#anyPresent(idx, o, n)) {
        let at = idx;
        while (!this.#anyPresent(at, at % PTES_PER_TABLE, 1)) at++;
        this.#dev.machine.warn(`WARNING: drivers/iommu/io-pgtable: ${this.#dev.name}: PTE for IOVA 0x${(at * PAGE_SIZE).toString(16)} already present`);
        return -EEXIST;
      }
      done += n;
    }
    const bits = (prot & IOMMU_READ ? VTD_PTE_READ : 0) | (prot & IOMMU_WRITE ? VTD_PTE_WRITE : 0) |
      (prot & IOMMU_CACHE ? VTD_PTE_SNP : 0) | SW_PTE_MAPPED;
    const protHi = (prot & 0x7f) * 2 ** SW_PROT_SHIFT_HI;
    for (let done = 0; done < pages;) {
      const idx = iovaPfn + done;
      const o = idx % PTES_PER_TABLE;
      const n = Math.min(PTES_PER_TABLE - o, pages - done);
      const p0 = pfn + done;
      if (n === PTES_PER_TABLE && p0 % PTES_PER_TABLE === 0 && this.#find(1, idx) === undefined) {
        // 2 MiB aligned and contiguous: one large-page entry at level 2.
        const l2 = this.#ensure(2, idx);
        if (l2 === null) return this.#undoMap(iovaPfn, done);
        const i = l2.base + 2 * (Math.floor(idx / PTES_PER_TABLE) % PTES_PER_TABLE);
        l2.words[i + 1] = Math.floor(p0 / HI_PFN) + protHi;
        l2.words[i] = p0 * PAGE_SIZE + (bits | VTD_PTE_LARGE);
        l2.used++;
      } else {
        const leaf = this.#ensure(1, idx);
        if (leaf === null) return this.#undoMap(iovaPfn, done);
        const w = leaf.words;
        let j = leaf.base + 2 * o;
        for (let p = p0, end = p0 + n; p < end; p++, j += 2) {
          w[j + 1] = Math.floor(p / HI_PFN) + protHi;
          w[j] = p * PAGE_SIZE + bits; // the store keeps the low 32 bits
        }
        leaf.used += n;
      }
      done += n;
    }
    this.#counters.mappedPages += pages;
    this.#counters.maps++;
    return 0;
  }

  /** A failed map: clears what it wrote and frees the tables it made; -ENOMEM. */
  #undoMap(iovaPfn: number, done: number): number {
    if (done > 0) this.#clear(iovaPfn, done, true);
    return -ENOMEM;
  }

  /**
   * Clears PTEs from iovaPfn on, stopping at the first page that is not mapped (a WARN, as
   * io-pgtable does). Returns the number of pages unmapped. Emptied tables wait for the caller's
   * IOTLB invalidation (releaseRetired).
   */
  unmapPages(iovaPfn: number, pages: number): number {
    const done = this.#clear(iovaPfn, pages, false);
    this.#counters.mappedPages -= done;
    this.#counters.unmaps++;
    return done;
  }

  #clear(iovaPfn: number, pages: number, now: boolean): number {
    let done = 0;
    while (done < pages) {
      const idx = iovaPfn + done;
      const o = idx % PTES_PER_TABLE;
      const n = Math.min(PTES_PER_TABLE - o, pages - done);
      let leaf = this.#find(1, idx);
      if (leaf === undefined) {
        const l2 = this.#find(2, idx);
        const i = Math.floor(idx / PTES_PER_TABLE) % PTES_PER_TABLE;
        if (l2 !== undefined && IoPageTable.#lo(l2, i) & VTD_PTE_LARGE) {
          if (o === 0 && n === PTES_PER_TABLE) {
            l2.words[l2.base + 2 * i] = 0;
            l2.words[l2.base + 2 * i + 1] = 0;
            done += n;
            if (--l2.used === 0) this.#retire(l2, now);
            continue;
          }
          const split = this.#split(l2, i, idx);
          if (split === null) {
            this.#dev.machine.warn(`WARNING: drivers/iommu/io-pgtable: ${this.#dev.name}: no memory to split the large page at IOVA 0x${(idx * PAGE_SIZE).toString(16)}`);
            break;
          }
          leaf = split;
        }
      }
      let k = 0;
      if (leaf !== undefined) {
        const w = leaf.words;
        const b = leaf.base + 2 * o;
        while (k < n && w[b + 2 * k] !== 0) k++;
        w.fill(0, b, b + 2 * k);
        leaf.used -= k;
        if (leaf.used === 0) this.#retire(leaf, now);
      }
      done += k;
      if (k < n) {
        if (!now) this.#dev.machine.warn(`WARNING: drivers/iommu/iommu.c: __iommu_unmap: ${this.#dev.name}: IOVA 0x${((idx + k) * PAGE_SIZE).toString(16)} is not mapped`);
        break;
      }
    }
    return done;
  }

  /** Replaces large entry i of an L2 table by a table of 512 entries with the same target and bits. */
  #split(l2: PtTable, i: number, idx: number): PtTable | null {
    const lo = IoPageTable.#lo(l2, i);
    const hi = l2.words[l2.base + 2 * i + 1]!;
    const mem = this.#allocTablePage();
    if (mem === null) return null;
    const pfn0 = (hi % HI_PFN) * HI_PFN + Math.floor(lo / PAGE_SIZE);
    const protHi = hi - (hi % HI_PFN);
    const bits = (lo % PAGE_SIZE) & ~VTD_PTE_LARGE;
    const key = Math.floor(idx / PTES_PER_TABLE);
    let leaf = this.#tables[1]!.get(key);
    if (leaf === undefined) {
      leaf = { page: mem.page, words: mem.words, base: mem.base, level: 1, key, used: PTES_PER_TABLE };
      this.#tables[1]!.set(key, leaf);
    } else {
      leaf.page = mem.page;
      leaf.words = mem.words;
      leaf.base = mem.base;
      leaf.used = PTES_PER_TABLE;
    }
    for (let k = 0, j = mem.base; k < PTES_PER_TABLE; k++, j += 2) {
      mem.words[j + 1] = Math.floor((pfn0 + k) / HI_PFN) + protHi;
      mem.words[j] = (pfn0 + k) * PAGE_SIZE + bits;
    }
    l2.words[l2.base + 2 * i + 1] = Math.floor(mem.page.pfn / HI_PFN);
    l2.words[l2.base + 2 * i] = mem.page.pfn * PAGE_SIZE + (VTD_PTE_READ | VTD_PTE_WRITE | SW_PTE_MAPPED);
    return leaf;
  }

  /** The entry behind an IOVA page as [low word, high word, target pfn], or null when not present. */
  #entry(iovaPfn: number): { lo: number; hi: number; pfn: number } | null {
    const leaf = this.#find(1, iovaPfn);
    let lo: number;
    let hi: number;
    let extra = 0;
    if (leaf !== undefined) {
      const j = leaf.base + 2 * (iovaPfn % PTES_PER_TABLE);
      lo = leaf.words[j]!;
      hi = leaf.words[j + 1]!;
    } else {
      const l2 = this.#find(2, iovaPfn);
      if (l2 === undefined) return null;
      const j = l2.base + 2 * (Math.floor(iovaPfn / PTES_PER_TABLE) % PTES_PER_TABLE);
      lo = l2.words[j]!;
      if (!(lo & VTD_PTE_LARGE)) return null;
      hi = l2.words[j + 1]!;
      extra = iovaPfn % PTES_PER_TABLE;
    }
    if (lo === 0) return null;
    return { lo, hi, pfn: (hi % HI_PFN) * HI_PFN + Math.floor(lo / PAGE_SIZE) + extra };
  }

  /** The PTE of an IOVA page (read from memory): target pfn and IOMMU_* prot, or null when not present. */
  lookupPfn(iovaPfn: number): { pfn: number; prot: number } | null {
    const e = this.#entry(iovaPfn);
    return e === null ? null : { pfn: e.pfn, prot: Math.floor(e.hi / 2 ** SW_PROT_SHIFT_HI) & 0x7f };
  }

  /** iova_to_phys (read from memory): the physical address behind an IOVA; -1 when unmapped. */
  translate(iova: number): number {
    const iovaPfn = Math.floor(iova / PAGE_SIZE);
    const e = this.#entry(iovaPfn);
    return e === null ? -1 : e.pfn * PAGE_SIZE + (iova - iovaPfn * PAGE_SIZE);
  }

  /** Whether the table maps a 2 MiB large page at level 2 over this IOVA page. */
  isLargePage(iovaPfn: number): boolean {
    return this.#find(1, iovaPfn) === undefined && this.#entry(iovaPfn) !== null;
  }

  /** Table pages by level now (index 1 = leaf tables), for tests and stats. */
  tablesPerLevel(): number[] {
    return this.#tables.map((m) => {
      let n = 0;
      for (const t of m.values()) if (t.page !== null) n++;
      return n;
    });
  }

  /** Domain teardown: every table goes back at once (the caller has invalidated). */
  freeAll(): void {
    for (let l = 1; l <= this.levels; l++) {
      for (const t of this.#tables[l]!.values()) if (t.page !== null) this.#freeTablePage(t.page);
      this.#tables[l]!.clear();
    }
    this.releaseRetired();
    Atomics.store(this.#regs, REG_ROOT_PFN, 0);
  }
}
