// The I/O page table of an IOMMU domain: drivers/iommu/io-pgtable.c and its formats
// (io-pgtable-arm.c and the like). PTEs from IOVA pages to physical pages, with their IOMMU_* prot.

import { PAGE_SIZE } from '../mm/gfp';
import type { Device } from './device';

/** Our PTE "present" bit, so that a PTE with prot 0 still reads as mapped. */
const PTE_PRESENT = 0x80;
/** PTEs per page-table page: 4 KiB of 8-byte PTEs, like every x86 paging level. */
const PT_ENTRIES = 512;
const EEXIST = 17;

/** A leaf page table: 512 PTEs as struct-of-arrays (target pfn, prot | PTE_PRESENT). */
interface IoPtLeaf {
  readonly pfn: Float64Array;
  readonly prot: Uint8Array;
  used: number;
}

/** The counters of the owning IOMMU domain that the page table keeps up to date. */
export interface IoPgtableCounters {
  mappedPages: number;
  maps: number;
  unmaps: number;
  pageTables: number;
}

/**
 * Leaf tables of 512 PTEs keyed by IOVA pfn / 512, typed arrays inside, so a 1024-page mapping is
 * two table look-ups and two tight loops; exact for any iommu_map/iommu_unmap range, including
 * partial unmaps. Leaf tables are kept once made, as VT-d keeps its tables.
 */
export class IoPageTable {
  private readonly tables = new Map<number, IoPtLeaf>();

  /** `dev` names the device in WARNs; `counters` are the owning domain's live counters. */
  constructor(private readonly dev: Device, private readonly counters: IoPgtableCounters) {}

  /**
   * Maps `pages` IOVA pages from iovaPfn to physical pages from pfn. All-or-nothing: a PTE that is
   * already present is a WARN and -EEXIST, as io-pgtable does, with nothing changed.
   */
  mapPages(iovaPfn: number, pfn: number, pages: number, prot: number): number {
    for (let done = 0; done < pages;) {
      const idx = iovaPfn + done;
      const t = Math.floor(idx / PT_ENTRIES);
      const o = idx - t * PT_ENTRIES;
      const n = Math.min(PT_ENTRIES - o, pages - done);
      const leaf = this.tables.get(t);
      if (leaf !== undefined && leaf.used > 0) {
        const p = leaf.prot;
        for (let i = o; i < o + n; i++) {
          if (p[i] !== 0) {
            this.dev.machine.warn(`WARNING: drivers/iommu/io-pgtable: ${this.dev.name}: PTE for IOVA 0x${((idx + i - o) * PAGE_SIZE).toString(16)} already present`);
            return -EEXIST;
          }
        }
      }
      done += n;
    }
    const pte = prot | PTE_PRESENT;
    for (let done = 0; done < pages;) {
      const idx = iovaPfn + done;
      const t = Math.floor(idx / PT_ENTRIES);
      const o = idx - t * PT_ENTRIES;
      const n = Math.min(PT_ENTRIES - o, pages - done);
      let leaf = this.tables.get(t);
      if (leaf === undefined) {
        leaf = { pfn: new Float64Array(PT_ENTRIES), prot: new Uint8Array(PT_ENTRIES), used: 0 };
        this.tables.set(t, leaf);
        this.counters.pageTables++;
      }
      const base = pfn + done - o;
      const lp = leaf.pfn;
      for (let i = o; i < o + n; i++) lp[i] = base + i;
      if (n === 1) leaf.prot[o] = pte;
      else leaf.prot.fill(pte, o, o + n);
      leaf.used += n;
      done += n;
    }
    this.counters.mappedPages += pages;
    this.counters.maps++;
    return 0;
  }

  /**
   * Clears PTEs from iovaPfn on, stopping at the first page that is not mapped (a WARN, as
   * io-pgtable does). Returns the number of pages unmapped.
   */
  unmapPages(iovaPfn: number, pages: number): number {
    let done = 0;
    while (done < pages) {
      const idx = iovaPfn + done;
      const t = Math.floor(idx / PT_ENTRIES);
      const o = idx - t * PT_ENTRIES;
      const n = Math.min(PT_ENTRIES - o, pages - done);
      const leaf = this.tables.get(t);
      let k = 0;
      if (leaf !== undefined) {
        const p = leaf.prot;
        while (k < n && p[o + k] !== 0) k++;
        if (k === 1) p[o] = 0;
        else if (k > 0) p.fill(0, o, o + k);
        leaf.used -= k;
      }
      done += k;
      if (k < n) {
        this.dev.machine.warn(`WARNING: drivers/iommu/iommu.c: __iommu_unmap: ${this.dev.name}: IOVA 0x${((idx + k) * PAGE_SIZE).toString(16)} is not mapped`);
        break;
      }
    }
    this.counters.mappedPages -= done;
    this.counters.unmaps++;
    return done;
  }

  /** The PTE of an IOVA page: target pfn and prot, or null when not present. */
  lookupPfn(iovaPfn: number): { pfn: number; prot: number } | null {
    const t = Math.floor(iovaPfn / PT_ENTRIES);
    const leaf = this.tables.get(t);
    if (leaf === undefined) return null;
    const o = iovaPfn - t * PT_ENTRIES;
    const p = leaf.prot[o]!;
    return p === 0 ? null : { pfn: leaf.pfn[o]!, prot: p & ~PTE_PRESENT };
  }

  /** iova_to_phys: the physical address behind an IOVA, as a number; -1 when unmapped. */
  translate(iova: number): number {
    const iovaPfn = Math.floor(iova / PAGE_SIZE);
    const t = Math.floor(iovaPfn / PT_ENTRIES);
    const leaf = this.tables.get(t);
    if (leaf === undefined) return -1;
    const o = iovaPfn - t * PT_ENTRIES;
    if (leaf.prot[o] === 0) return -1;
    return leaf.pfn[o]! * PAGE_SIZE + (iova - iovaPfn * PAGE_SIZE);
  }
}
