// DMA through an IOMMU: drivers/iommu/dma-iommu.c over a small IOMMU of our own: an IOVA allocator
// (drivers/iommu/iova.c), an I/O page table and its IOTLB flushes (drivers/iommu/iommu.c).
//
// The IOMMU is simulated (a device here never issues real bus cycles), but the pages it maps are
// the machine's real pages, so iommu_iova_to_phys leads to bytes a test can read and write.

import { native } from '../native';
import { PAGE_ALIGN, PAGE_SIZE, get_order, GFP_KERNEL, type gfp_t } from '../mm/gfp';
import { remap_pfn_range, vma_pages, type VmArea } from '../mm/vma';
import type { Page } from '../mm/page';
import { dma_mmap_from_dev_coherent } from './coherent';
import {
  DMA_ATTR_PRIVILEGED, DMA_ATTR_SKIP_CPU_SYNC, DMA_BIDIRECTIONAL, DMA_BIT_MASK, DMA_FROM_DEVICE,
  DMA_MAPPING_ERROR, DMA_TO_DEVICE, EINVAL, ENOMEM, ENXIO, EREMOTEIO, type DmaDataDirection,
} from './constants';
import { dma_alloc_contiguous, dma_free_contiguous } from './contiguous';
import { dev_to_node, type Device } from './device';
import {
  arch_dma_prep_coherent, arch_sync_dma_for_cpu, arch_sync_dma_for_device, mask_bits, min_not_zero,
} from './direct';
import { SIZE_MAX, dma_pgprot } from './mapping';
import type { Box } from './ops';
import { for_each_sg, sg_alloc_table, sg_set_page, type Scatterlist, type SgTable } from './scatterlist';

/** IOMMU_* protection bits (include/linux/iommu.h). */
export const IOMMU_READ = 1 << 0;
export const IOMMU_WRITE = 1 << 1;
export const IOMMU_CACHE = 1 << 2;
export const IOMMU_NOEXEC = 1 << 3;
export const IOMMU_MMIO = 1 << 4;
export const IOMMU_PRIV = 1 << 5;
/** Our PTE "present" bit, so that a PTE with prot 0 still reads as mapped. */
const PTE_PRESENT = 0x80;

const EFAULT = 14;
const EEXIST = 17;
/** Sizes below 2^(6-1) pages are rounded up to a power of two so the caches can hold them (iova.c). */
const IOVA_RANGE_CACHE_MAX_SIZE = 6;
/** Entries in the lazy-mode flush queue before it must flush the IOTLB (dma-iommu.c IOVA_FQ_SIZE). */
export const IOVA_FQ_SIZE = 256;
/** dma_get_max_seg_size without dev->dma_parms. */
const DEFAULT_MAX_SEG_SIZE = 64 * 1024;
/** PTEs per page-table page: 4 KiB of 8-byte PTEs, like every x86 paging level. */
const PT_ENTRIES = 512;
const PAGE_MASK_LOW = PAGE_SIZE - 1;

export interface IommuOptions {
  /** Width of the IOVA space in bits (13..52). Default: the device's DMA mask width, at most 48 (VT-d's 4-level 48 bits). */
  apertureBits?: number;
  /**
   * Strict mode (default true): every unmap flushes the IOTLB before its IOVA can be reused. Lazy
   * mode queues freed IOVAs and flushes once per IOVA_FQ_SIZE unmaps (or when space runs out), as
   * iommu.strict=0 does: faster, but the device may use stale translations in the meantime.
   */
  strict?: boolean;
}

/** Counters of one IOMMU domain. */
export interface IommuStats {
  /** Pages with a present PTE now. */
  mappedPages: number;
  /** IOVA pages allocated now (rounded sizes; in lazy mode, queued frees count until the flush). */
  iovaAllocated: number;
  /** IOTLB flushes so far (strict: one per unmap; lazy: one per flush-queue drain). */
  iotlbFlushes: number;
  /** iommu_map operations so far (one per physically contiguous run). */
  maps: number;
  /** iommu_unmap operations so far. */
  unmaps: number;
  /** Page-table pages (leaf tables of 512 PTEs) allocated; like real IOMMU drivers, kept once made. */
  pageTables: number;
}

/** A leaf page table: 512 PTEs as struct-of-arrays (target pfn, prot | PTE_PRESENT). */
interface IoPtLeaf {
  readonly pfn: Float64Array;
  readonly prot: Uint8Array;
  used: number;
}

function roundup_pow_of_two(n: number): number {
  if (n <= 1) return 1;
  if (n <= 2 ** 30) return 2 ** (32 - Math.clz32(n - 1));
  return 2 ** Math.ceil(Math.log2(n));
}

function checkApertureBits(bits: number): number {
  if (!Number.isInteger(bits) || bits < 13 || bits > 52) {
    throw new RangeError(`Expected an integer from 13 to 52 for apertureBits but received ${String(bits)}`);
  }
  return bits;
}

/** dma_get_mask: *dma_mask, or 32 bits when it is unset or zero. */
function dma_get_mask(dev: Device): bigint {
  const m = dev.dma_mask;
  return m === null || m === 0n ? DMA_BIT_MASK(32) : m;
}

/**
 * An IOMMU domain for one device (a DMA domain with its iova_cookie).
 *
 * IOVA allocator (design): everything below `bump` is free, and allocations carve top-down from
 * it, size-aligned like alloc_iova(size_aligned=true); IOVA page 0 is never handed out. Freed
 * ranges go back to `bump` when they sit right on it (LIFO use costs nothing) and otherwise onto a
 * per-size stack, the equivalent of Linux's per-CPU rcaches: the next request of that size takes
 * it in O(1) if it lies under the request's limit. When neither works, the slow path drains the
 * flush queue, drops the caches and searches the gaps between live ranges top-down (what
 * alloc_iova's rbtree walk does), then resets `bump` to the lowest live range, which is how freed
 * space coalesces again. Map + unmap of a granule is then a few Map operations.
 *
 * I/O page table: leaf tables of 512 PTEs keyed by IOVA pfn / 512, typed arrays inside, so a
 * 1024-page mapping is two table look-ups and two tight loops; exact for any iommu_map/iommu_unmap
 * range, including partial unmaps. Leaf tables are kept once made, as VT-d keeps its tables.
 */
export class IommuDomain {
  readonly dev: Device;
  readonly apertureBits: number;
  readonly strict: boolean;
  /** First IOVA page handed out: 1, so that no handle is 0. */
  readonly startPfn = 1;
  /** Last IOVA page inside the aperture. */
  readonly endPfn: number;
  /** The live counters (read them with stats()). */
  readonly counters: IommuStats = { mappedPages: 0, iovaAllocated: 0, iotlbFlushes: 0, maps: 0, unmaps: 0, pageTables: 0 };

  private bump: number;
  private readonly live = new Map<number, number>();
  private readonly rcache = new Map<number, number[]>();
  private readonly flushQueue: number[] = [];
  private readonly tables = new Map<number, IoPtLeaf>();
  private limitKey = -1n;
  private busKey = -1n;
  private limitPfnCached = 0;

  constructor(dev: Device, options: IommuOptions = {}) {
    this.dev = dev;
    this.apertureBits = checkApertureBits(options.apertureBits ?? Math.max(13, Math.min(48, mask_bits(dma_get_mask(dev)))));
    this.strict = options.strict ?? true;
    this.endPfn = 2 ** (this.apertureBits - 12) - 1;
    this.bump = this.endPfn + 1;
  }

  /** A snapshot of the counters. @example dev.iommu!.stats().mappedPages // 0 once all is unmapped */
  stats(): IommuStats {
    return { ...this.counters };
  }

  /** domain->geometry: the IOVA range the hardware translates. */
  get geometry(): { aperture_start: bigint; aperture_end: bigint; force_aperture: boolean } {
    return { aperture_start: 0n, aperture_end: DMA_BIT_MASK(this.apertureBits), force_aperture: true };
  }

  // ---- IOVA allocator (drivers/iommu/iova.c) ----

  /**
   * The highest IOVA page a mapping for `dma_limit` may use: min_not_zero(limit, bus_dma_limit),
   * clipped to the aperture (iommu_dma_alloc_iova). Cached: masks rarely change.
   */
  limitPfn(dma_limit: bigint): number {
    const bus = this.dev.bus_dma_limit;
    if (dma_limit !== this.limitKey || bus !== this.busKey) {
      const limit = min_not_zero(dma_limit, bus);
      this.limitPfnCached = Math.min(this.endPfn, Number(limit >> 12n));
      this.limitKey = dma_limit;
      this.busKey = bus;
    }
    return this.limitPfnCached;
  }

  /**
   * alloc_iova_fast: `pages` IOVA pages ending at or below limitPfn, aligned to their size rounded
   * up to a power of two. Returns the first IOVA page, or 0 when the space is exhausted.
   */
  alloc_iova(pages: number, limitPfn: number): number {
    let size = pages;
    if (size < 1 << (IOVA_RANGE_CACHE_MAX_SIZE - 1)) size = roundup_pow_of_two(size);
    const cached = this.rcache.get(size);
    if (cached !== undefined && cached.length > 0) {
      const pfn = cached[cached.length - 1]!;
      if (pfn + size - 1 <= limitPfn) {
        cached.pop();
        return this.insert(pfn, size);
      }
    }
    const align = roundup_pow_of_two(size);
    const top = Math.min(this.bump, limitPfn + 1);
    const pfn = Math.floor((top - size) / align) * align;
    if (pfn >= this.startPfn) {
      this.bump = pfn;
      return this.insert(pfn, size);
    }
    return this.allocSlow(size, align, limitPfn);
  }

  private insert(pfn: number, size: number): number {
    this.live.set(pfn, size);
    this.counters.iovaAllocated += size;
    return pfn;
  }

  /** Flush everything that holds IOVAs back, then search the gaps between live ranges top-down. */
  private allocSlow(size: number, align: number, limitPfn: number): number {
    this.flush_iotlb_all();
    this.rcache.clear();
    const blocks = [...this.live].sort((a, b) => b[0] - a[0]);
    let found = 0;
    let cursor = limitPfn + 1;
    for (const [lo, sz] of blocks) {
      const hi = lo + sz;
      if (hi < cursor) {
        const pfn = Math.floor((cursor - size) / align) * align;
        if (pfn >= hi && pfn >= this.startPfn) {
          found = pfn;
          break;
        }
      }
      if (lo < cursor) cursor = lo;
      if (cursor <= this.startPfn) break;
    }
    if (found === 0 && cursor > this.startPfn) {
      const pfn = Math.floor((cursor - size) / align) * align;
      if (pfn >= this.startPfn) found = pfn;
    }
    // The caches are empty now, so everything below the lowest live range is free.
    const lowest = blocks.length > 0 ? blocks[blocks.length - 1]![0] : this.endPfn + 1;
    this.bump = found === 0 ? lowest : Math.min(lowest, found);
    return found === 0 ? 0 : this.insert(found, size);
  }

  /** free_iova_fast: false when `pfn` starts no allocated range (the kernel ignores such frees). */
  free_iova(pfn: number): boolean {
    const size = this.live.get(pfn);
    if (size === undefined) return false;
    this.live.delete(pfn);
    this.counters.iovaAllocated -= size;
    if (pfn === this.bump) {
      this.bump = pfn + size;
      return true;
    }
    let stack = this.rcache.get(size);
    if (stack === undefined) this.rcache.set(size, (stack = []));
    stack.push(pfn);
    return true;
  }

  /** queue_iova (lazy mode): the IOVA is reused only after the next IOTLB flush. */
  queue_iova(pfn: number): void {
    this.flushQueue.push(pfn);
    if (this.flushQueue.length >= IOVA_FQ_SIZE) this.flush_iotlb_all();
  }

  /**
   * iommu_flush_iotlb_all, and the flush queue's drain: invalidates the IOTLB, then frees the
   * queued IOVAs (lazy mode). Also what the flush-queue timer would do after 10 ms.
   */
  flush_iotlb_all(): void {
    if (this.flushQueue.length === 0) return;
    this.counters.iotlbFlushes++;
    for (const pfn of this.flushQueue) this.free_iova(pfn);
    this.flushQueue.length = 0;
  }

  /** IOVA ranges allocated now (queued frees included), as [first page, pages]. */
  allocatedRanges(): [number, number][] {
    return [...this.live];
  }

  // ---- I/O page table ----

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

  /** Physical address behind an IOVA, as a number; -1 when unmapped. */
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

// ---- iommu core API (drivers/iommu/iommu.c) -------------------------------------------------

function domainOf(dev: Device): IommuDomain {
  const d = dev.iommu;
  if (d === null) throw new TypeError(`${dev.name} is not behind an IOMMU (use_dma_iommu is false)`);
  return d;
}

/**
 * iommu_iova_to_phys: the physical address an IOVA translates to, or 0n when nothing is mapped
 * there. Takes the device or its domain.
 */
export function iommu_iova_to_phys(dev: Device | IommuDomain, iova: bigint): bigint {
  const domain = dev instanceof IommuDomain ? dev : domainOf(dev);
  if (iova < 0n || iova > BigInt(Number.MAX_SAFE_INTEGER)) return 0n;
  const phys = domain.translate(Number(iova));
  return phys < 0 ? 0n : BigInt(phys);
}

/** The IOMMU_* prot of the PTE behind an IOVA, or null when nothing is mapped there. */
export function iommu_iova_to_prot(dev: Device | IommuDomain, iova: bigint): number | null {
  const domain = dev instanceof IommuDomain ? dev : domainOf(dev);
  if (iova < 0n || iova > BigInt(Number.MAX_SAFE_INTEGER)) return null;
  return domain.lookupPfn(Math.floor(Number(iova) / PAGE_SIZE))?.prot ?? null;
}

/**
 * iommu_map: map [iova, iova + size) to [paddr, ...). iova, paddr and size must be page aligned
 * (-EINVAL), prot must allow READ or WRITE (-EINVAL, as VT-d), the range must lie inside the
 * aperture (-EFAULT, as VT-d); a present PTE is a WARN and -EEXIST. Nothing is mapped on failure.
 * The IOTLB needs no flush for new mappings.
 */
export function iommu_map(domain: IommuDomain, iova: bigint, paddr: bigint, size: number, prot: number): number {
  if ((iova | paddr) & BigInt(PAGE_MASK_LOW) || size % PAGE_SIZE !== 0 || iova < 0n || paddr < 0n) return -EINVAL;
  if (!(prot & (IOMMU_READ | IOMMU_WRITE))) return -EINVAL;
  if (size === 0) return 0;
  const iovaPfn = Number(iova >> 12n);
  const pages = size / PAGE_SIZE;
  if (iovaPfn + pages - 1 > domain.endPfn) return -EFAULT;
  return domain.mapPages(iovaPfn, Number(paddr >> 12n), pages, prot);
}

/**
 * iommu_unmap: unmap [iova, iova + size) and flush the IOTLB. Stops at the first page that is not
 * mapped, with a WARN. @returns the bytes unmapped (0 for an unaligned request).
 */
export function iommu_unmap(domain: IommuDomain, iova: bigint, size: number): number {
  if (iova & BigInt(PAGE_MASK_LOW) || size % PAGE_SIZE !== 0 || iova < 0n) return 0;
  if (size === 0) return 0;
  const unmapped = domain.unmapPages(Number(iova >> 12n), size / PAGE_SIZE);
  if (unmapped > 0) domain.counters.iotlbFlushes++;
  return unmapped * PAGE_SIZE;
}

// ---- dma-iommu (drivers/iommu/dma-iommu.c) --------------------------------------------------

/** dma_info_to_prot: IOMMU_* bits for a direction; 0 for DMA_NONE. */
export function dma_info_to_prot(dir: DmaDataDirection, coherent: boolean, attrs: number): number {
  let prot = coherent ? IOMMU_CACHE : 0;
  if (attrs & DMA_ATTR_PRIVILEGED) prot |= IOMMU_PRIV;
  switch (dir) {
    case DMA_BIDIRECTIONAL: return prot | IOMMU_READ | IOMMU_WRITE;
    case DMA_TO_DEVICE: return prot | IOMMU_READ;
    case DMA_FROM_DEVICE: return prot | IOMMU_WRITE;
    default: return 0;
  }
}

/**
 * __iommu_dma_map: allocate IOVA for the pages under [phys, phys + size) below dma_mask and map
 * them. Returns the IOVA of phys, or DMA_MAPPING_ERROR. Numbers inside: IOVAs stay below 2^52.
 */
function __iommu_dma_map(dev: Device, phys: number, size: number, prot: number, dma_mask: bigint): bigint {
  const domain = domainOf(dev);
  const iova_off = phys % PAGE_SIZE;
  // iova_align(size + iova_off); a zero-sized mapping has no IOVA to give.
  const pages = Math.ceil((size + iova_off) / PAGE_SIZE);
  if (pages === 0) return DMA_MAPPING_ERROR;
  const iovaPfn = domain.alloc_iova(pages, domain.limitPfn(dma_mask));
  if (iovaPfn === 0) return DMA_MAPPING_ERROR;
  if (prot === 0 || domain.mapPages(iovaPfn, (phys - iova_off) / PAGE_SIZE, pages, prot) !== 0) {
    domain.free_iova(iovaPfn);
    return DMA_MAPPING_ERROR;
  }
  return BigInt(iovaPfn * PAGE_SIZE + iova_off);
}

/**
 * __iommu_dma_unmap: clear the PTEs of [dma_addr, dma_addr + size) (WARN if fewer were mapped),
 * then flush the IOTLB and free the IOVA (strict), or queue the IOVA for the next flush (lazy).
 */
function __iommu_dma_unmap(dev: Device, dma_addr: bigint, size: number): void {
  const domain = domainOf(dev);
  const addr = Number(dma_addr);
  const iova_off = addr % PAGE_SIZE;
  const iovaPfn = (addr - iova_off) / PAGE_SIZE;
  const pages = Math.ceil((size + iova_off) / PAGE_SIZE);
  const unmapped = pages === 0 ? 0 : domain.unmapPages(iovaPfn, pages);
  if (unmapped !== pages) {
    dev.machine.warn(`WARNING: drivers/iommu/dma-iommu.c: __iommu_dma_unmap: ${dev.name}: unmapped ${unmapped * PAGE_SIZE} of ${pages * PAGE_SIZE} bytes at IOVA 0x${addr.toString(16)}`);
  }
  if (domain.strict) {
    if (unmapped > 0) domain.counters.iotlbFlushes++;
    domain.free_iova(iovaPfn);
  } else {
    domain.queue_iova(iovaPfn);
  }
}

/**
 * iommu_dma_map_page: an IOVA below *dma_mask for page + offset, mapped with the direction's
 * permission. @returns the IOVA, or DMA_MAPPING_ERROR when the IOVA space below the mask is full
 * (a retry after unmaps can help).
 */
export function iommu_dma_map_page(dev: Device, page: Page, offset: number, size: number, dir: DmaDataDirection, attrs: number): bigint {
  const coherent = dev.dma_coherent;
  const prot = dma_info_to_prot(dir, coherent, attrs);
  const phys = page.pfn * PAGE_SIZE + offset;
  if (!coherent && !(attrs & DMA_ATTR_SKIP_CPU_SYNC)) arch_sync_dma_for_device(dev, BigInt(phys), size, dir);
  return __iommu_dma_map(dev, phys, size, prot, dma_get_mask(dev));
}

/** iommu_dma_unmap_page: WARN and do nothing when the handle translates to nothing. */
export function iommu_dma_unmap_page(dev: Device, dma_handle: bigint, size: number, dir: DmaDataDirection, attrs: number): void {
  const domain = domainOf(dev);
  const phys = dma_handle > BigInt(Number.MAX_SAFE_INTEGER) ? -1 : domain.translate(Number(dma_handle));
  if (phys <= 0) {
    dev.machine.warn(`WARNING: drivers/iommu/dma-iommu.c: iommu_dma_unmap_page: ${dev.name}: IOVA 0x${dma_handle.toString(16)} is not mapped`);
    return;
  }
  if (!(attrs & DMA_ATTR_SKIP_CPU_SYNC) && !dev.dma_coherent) arch_sync_dma_for_cpu(dev, BigInt(phys), size, dir);
  __iommu_dma_unmap(dev, dma_handle, size);
}

/** iommu_dma_map_resource: MMIO through the IOMMU (IOMMU_MMIO, never cacheable). */
export function iommu_dma_map_resource(dev: Device, phys: bigint, size: number, dir: DmaDataDirection, attrs: number): bigint {
  if (phys < 0n || phys > BigInt(Number.MAX_SAFE_INTEGER)) return DMA_MAPPING_ERROR;
  return __iommu_dma_map(dev, Number(phys), size, dma_info_to_prot(dir, false, attrs) | IOMMU_MMIO, dma_get_mask(dev));
}

/** iommu_dma_unmap_resource. */
export function iommu_dma_unmap_resource(dev: Device, dma_handle: bigint, size: number, dir: DmaDataDirection, attrs: number): void {
  void dir; void attrs;
  __iommu_dma_unmap(dev, dma_handle, size);
}

function sgList(sgl: Scatterlist, nents: number): Scatterlist[] {
  const list: Scatterlist[] = [];
  for_each_sg(sgl, nents, (sg) => list.push(sg));
  return list;
}

function sgPhys(sg: Scatterlist): number {
  const page = sg.page_link;
  if (page === null) throw new TypeError('iommu_dma_map_sg: scatterlist entry has no page');
  return page.pfn * PAGE_SIZE + sg.offset;
}

/**
 * iommu_map_sg: map the (now page-aligned) entries at consecutive IOVAs, one iommu_map per
 * physically contiguous run. @returns bytes mapped, or a negative errno with everything undone.
 */
function iommu_map_sg(domain: IommuDomain, iovaPfn: number, list: Scatterlist[], prot: number): number {
  let mapped = 0;
  let len = 0;
  let start = 0;
  const flush = (): number => {
    const ret = domain.mapPages(iovaPfn + mapped / PAGE_SIZE, start / PAGE_SIZE, len / PAGE_SIZE, prot);
    if (ret === 0) {
      mapped += len;
      len = 0;
    }
    return ret;
  };
  for (const s of list) {
    const s_phys = sgPhys(s);
    if (len !== 0 && s_phys !== start + len) {
      const ret = flush();
      if (ret !== 0) return undoMapSg(domain, iovaPfn, mapped, ret);
    }
    if (len !== 0) len += s.length;
    else {
      len = s.length;
      start = s_phys;
    }
  }
  if (len !== 0) {
    const ret = flush();
    if (ret !== 0) return undoMapSg(domain, iovaPfn, mapped, ret);
  }
  return mapped;
}

function undoMapSg(domain: IommuDomain, iovaPfn: number, mapped: number, ret: number): number {
  if (mapped > 0) iommu_unmap(domain, BigInt(iovaPfn * PAGE_SIZE), mapped);
  return ret;
}

/**
 * __finalise_sg: restore each entry's offset and length from the values stashed in its DMA fields
 * and fill in the DMA segments, merging entries that continue the previous one at a page boundary
 * (up to the 64 KiB default max segment size). Returns the number of DMA segments.
 */
function __finalise_sg(list: Scatterlist[], dma_addr: number): number {
  const max_len = DEFAULT_MAX_SEG_SIZE;
  let cur = 0;
  let cur_len = 0;
  let count = 0;
  for (let i = 0; i < list.length; i++) {
    const s = list[i]!;
    const s_iova_off = Number(s.dma_address);
    const s_length = s.dma_length;
    const s_iova_len = s.length;
    s.dma_address = DMA_MAPPING_ERROR;
    s.dma_length = 0;
    s.offset += s_iova_off;
    s.length = s_length;
    // The segment boundary is ULONG_MAX (no dma_parms), so only address 0 is "at a boundary".
    if (cur_len !== 0 && s_iova_off === 0 && dma_addr !== 0 && max_len - cur_len >= s_length) {
      cur_len += s_length;
    } else {
      if (i > 0) cur++;
      cur_len = s_length;
      count++;
      list[cur]!.dma_address = BigInt(dma_addr + s_iova_off);
    }
    list[cur]!.dma_length = cur_len;
    dma_addr += s_iova_len;
    if (s_length + s_iova_off < s_iova_len) cur_len = 0;
  }
  return count;
}

/** __invalidate_sg: undo the stash after a failure; every entry reads as unmapped. */
function __invalidate_sg(list: Scatterlist[]): void {
  for (const s of list) {
    if (s.dma_address !== DMA_MAPPING_ERROR) s.offset += Number(s.dma_address);
    if (s.dma_length !== 0) s.length = s.dma_length;
    s.dma_address = DMA_MAPPING_ERROR;
    s.dma_length = 0;
  }
}

/**
 * iommu_dma_map_sg: one IOVA range for the whole list, each entry padded to whole pages, so the
 * device sees one contiguous buffer however scattered the pages are.
 * @returns the number of DMA segments (entries merged where possible), or -ENOMEM when IOVA space
 *   is exhausted (a retry after unmaps can help) or -EINVAL when mapping failed.
 */
export function iommu_dma_map_sg(dev: Device, sgl: Scatterlist, nents: number, dir: DmaDataDirection, attrs: number): number {
  const domain = domainOf(dev);
  const prot = dma_info_to_prot(dir, dev.dma_coherent, attrs);
  if (!(attrs & DMA_ATTR_SKIP_CPU_SYNC)) iommu_dma_sync_sg_for_device(dev, sgl, nents, dir);
  const list = sgList(sgl, nents);
  // Stash each entry's sub-page offset and length in its DMA fields and align it to pages
  // (reversibly, as the kernel does in place).
  let iova_len = 0;
  for (const s of list) {
    const s_iova_off = s.offset % PAGE_SIZE;
    const s_length = s.length;
    s.dma_address = BigInt(s_iova_off);
    s.dma_length = s_length;
    s.offset -= s_iova_off;
    const aligned = PAGE_ALIGN(s_length + s_iova_off);
    s.length = aligned;
    iova_len += aligned;
  }
  if (iova_len === 0) return __finalise_sg(list, 0);
  if (prot === 0) {
    __invalidate_sg(list);
    return -EINVAL;
  }
  const iovaPfn = domain.alloc_iova(iova_len / PAGE_SIZE, domain.limitPfn(dma_get_mask(dev)));
  if (iovaPfn === 0) {
    __invalidate_sg(list);
    return -ENOMEM;
  }
  const ret = iommu_map_sg(domain, iovaPfn, list, prot);
  if (ret < 0 || ret < iova_len) {
    domain.free_iova(iovaPfn);
    __invalidate_sg(list);
    return ret === -ENOMEM || ret === -EREMOTEIO ? ret : -EINVAL;
  }
  return __finalise_sg(list, iovaPfn * PAGE_SIZE);
}

/**
 * iommu_dma_unmap_sg: the list was mapped as one IOVA range, so unmap from the first segment's
 * address to the end of the last segment with a length.
 */
export function iommu_dma_unmap_sg(dev: Device, sgl: Scatterlist, nents: number, dir: DmaDataDirection, attrs: number): void {
  if (!(attrs & DMA_ATTR_SKIP_CPU_SYNC)) iommu_dma_sync_sg_for_cpu(dev, sgl, nents, dir);
  let start = -1;
  let end = 0;
  let stopped = false;
  for_each_sg(sgl, nents, (sg, i) => {
    if (stopped) return;
    if (sg.dma_length === 0) {
      stopped = true;
      return;
    }
    if (i === 0) start = Number(sg.dma_address);
    end = Number(sg.dma_address) + sg.dma_length;
  });
  if (start >= 0 && end !== 0) __iommu_dma_unmap(dev, BigInt(start), end - start);
}

/** iommu_dma_sync_single_for_cpu: nothing for a coherent device. */
export function iommu_dma_sync_single_for_cpu(dev: Device, dma_handle: bigint, size: number, dir: DmaDataDirection): void {
  if (dev.dma_coherent) return;
  arch_sync_dma_for_cpu(dev, iommu_iova_to_phys(dev, dma_handle), size, dir);
}

/** iommu_dma_sync_single_for_device: nothing for a coherent device. */
export function iommu_dma_sync_single_for_device(dev: Device, dma_handle: bigint, size: number, dir: DmaDataDirection): void {
  if (dev.dma_coherent) return;
  arch_sync_dma_for_device(dev, iommu_iova_to_phys(dev, dma_handle), size, dir);
}

/** iommu_dma_sync_sg_for_cpu: per entry by its CPU address; nothing for a coherent device. */
export function iommu_dma_sync_sg_for_cpu(dev: Device, sgl: Scatterlist, nents: number, dir: DmaDataDirection): void {
  if (dev.dma_coherent) return;
  for_each_sg(sgl, nents, (sg) => arch_sync_dma_for_cpu(dev, BigInt(sgPhys(sg)), sg.length, dir));
}

/** iommu_dma_sync_sg_for_device: per entry by its CPU address; nothing for a coherent device. */
export function iommu_dma_sync_sg_for_device(dev: Device, sgl: Scatterlist, nents: number, dir: DmaDataDirection): void {
  if (dev.dma_coherent) return;
  for_each_sg(sgl, nents, (sg) => arch_sync_dma_for_device(dev, BigInt(sgPhys(sg)), sg.length, dir));
}

/**
 * iommu_dma_alloc: a coherent buffer of physically contiguous pages (CMA, then the buddy
 * allocator), zeroed, mapped BIDIRECTIONAL below coherent_dma_mask. Returns its linear address and
 * sets dma_handle, or null (dma_handle then DMA_MAPPING_ERROR if the mapping failed).
 * The kernel takes the remap path (scattered pages + vmap) for blocking requests without
 * DMA_ATTR_FORCE_CONTIGUOUS; this model always takes the contiguous path.
 */
export function iommu_dma_alloc(dev: Device, size: number, dma_handle: Box<bigint>, gfp: gfp_t, attrs: number): number | null {
  const m = dev.machine;
  const coherent = dev.dma_coherent;
  const ioprot = dma_info_to_prot(DMA_BIDIRECTIONAL, coherent, attrs);
  const alloc_size = PAGE_ALIGN(size);
  // The kernel adds __GFP_ZERO and memsets too; one memset is enough.
  let page = dma_alloc_contiguous(dev, alloc_size, gfp);
  page ??= m.alloc_pages_node(dev_to_node(dev), gfp, get_order(alloc_size));
  if (page === null) return null;
  const cpu_addr = m.page_address(page);
  if (!coherent) arch_dma_prep_coherent(dev, page, size);
  if (alloc_size > 0) native.memset(cpu_addr, 0, alloc_size);
  dma_handle.value = __iommu_dma_map(dev, page.pfn * PAGE_SIZE, size, ioprot, dev.coherent_dma_mask);
  if (dma_handle.value === DMA_MAPPING_ERROR) {
    dma_free_contiguous(dev, page, alloc_size);
    return null;
  }
  return cpu_addr;
}

/** The page behind a CPU address of a coherent buffer (vmalloc or linear). */
function cpuAddrToPage(dev: Device, cpu_addr: number): Page | null {
  const m = dev.machine;
  return m.is_vmalloc_addr(cpu_addr) ? m.vmalloc_to_page(cpu_addr) : m.virt_to_page(cpu_addr);
}

/** iommu_dma_free: unmap, then give the pages back (CMA or buddy). */
export function iommu_dma_free(dev: Device, size: number, cpu_addr: number, dma_handle: bigint, attrs: number): void {
  void attrs;
  __iommu_dma_unmap(dev, dma_handle, size);
  const page = cpuAddrToPage(dev, cpu_addr);
  if (page !== null) dma_free_contiguous(dev, page, PAGE_ALIGN(size));
}

/**
 * iommu_dma_get_sgtable: one entry of PAGE_ALIGN(size) for the (contiguous) buffer's first page.
 * @returns 0 or -ENOMEM.
 */
export function iommu_dma_get_sgtable(dev: Device, sgt: SgTable, cpu_addr: number, dma_addr: bigint, size: number, attrs: number): number {
  void dma_addr; void attrs;
  const page = cpuAddrToPage(dev, cpu_addr);
  const ret = sg_alloc_table(sgt, 1, GFP_KERNEL);
  if (ret === 0 && sgt.sgl !== null) sg_set_page(sgt.sgl, page, PAGE_ALIGN(size), 0);
  return ret;
}

/**
 * iommu_dma_mmap: dma_pgprot first (even on failure), the device pool, the -ENXIO bounds check,
 * then remap_pfn_range of the buffer's pages from vm_pgoff.
 */
export function iommu_dma_mmap(dev: Device, vma: VmArea, cpu_addr: number, dma_addr: bigint, size: number, attrs: number): number {
  void dma_addr;
  const nr_pages = PAGE_ALIGN(size) / PAGE_SIZE;
  const off = vma.vm_pgoff;
  const ret: Box<number> = { value: -ENXIO };
  vma.vm_page_prot = dma_pgprot(dev, vma.vm_page_prot, attrs);
  if (dma_mmap_from_dev_coherent(dev, vma, cpu_addr, size, ret)) return ret.value;
  if (off >= nr_pages || vma_pages(vma) > nr_pages - off) return -ENXIO;
  const page = cpuAddrToPage(dev, cpu_addr);
  if (page === null) return -ENXIO;
  return remap_pfn_range(vma, vma.vm_start, page.pfn + off, vma.vm_end - vma.vm_start, vma.vm_page_prot);
}

/** iommu_dma_supported: any mask works; the IOVA allocator honours it. */
export function iommu_dma_supported(dev: Device, mask: bigint): boolean {
  void dev; void mask;
  return true;
}

/** iommu_dma_max_mapping_size: no limit (no untrusted-device bouncing here). */
export function iommu_dma_max_mapping_size(dev: Device): number {
  void dev;
  return SIZE_MAX;
}
