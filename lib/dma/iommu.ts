// The IOMMU core: drivers/iommu/iommu.c. An IOMMU domain per device (its IOVA allocator, its I/O
// page table, IOTLB flushes) and the core API over it: iommu_map, iommu_unmap, iommu_iova_to_phys.
//
// The IOMMU is simulated (a device here never issues real bus cycles), but the pages it maps are
// the machine's real pages, so iommu_iova_to_phys leads to bytes a test can read and write.
// The DMA API over it (iommu_dma_*) lives in dma_iommu.ts and is re-exported at the end.

import { lockFields } from '../os/lock';
import { onMachineDestroy } from '../mm/machine-teardown';
import { PAGE_SIZE } from '../mm/gfp';
import { DMA_BIT_MASK, EINVAL } from './constants';
import type { Device } from './device';
import { mask_bits, min_not_zero } from './direct';
import { IoPageTable } from './io_pgtable';
import { IOMMU_REGS_BYTES, REG_APERTURE_BITS, REG_GEN } from './iommu_regs';
import { drainFaults, type IommuFault, type iommu_fault_handler_t } from './iommu_fault';
import { IovaDomain } from './iova';
import { dma_get_mask } from './mask';
import { checkDevice } from './validate';
import { checkBigint, checkInt, checkSize } from '../mm/validate';
import { describeValue } from '../mm/validate';

/** A device behind an IOMMU or its domain (the core API takes either). */
function domainOf(fn: string, dev: unknown): IommuDomain {
  if (dev instanceof IommuDomain) {
    dev.dev.machine.assertAlive();
    return dev;
  }
  checkDevice(fn, dev);
  return iommu_get_dma_domain(dev);
}

function checkDomain(fn: string, domain: unknown): asserts domain is IommuDomain {
  if (!(domain instanceof IommuDomain)) throw new TypeError(`${fn}: Expected an IommuDomain (dev.iommu) for domain but received ${describeValue(domain)}`);
  domain.dev.machine.assertAlive();
}

/** IOMMU_* protection bits (include/linux/iommu.h). */
export const IOMMU_READ = 1 << 0;
export const IOMMU_WRITE = 1 << 1;
export const IOMMU_CACHE = 1 << 2;
export const IOMMU_NOEXEC = 1 << 3;
export const IOMMU_MMIO = 1 << 4;
export const IOMMU_PRIV = 1 << 5;

const EFAULT = 14;
/** Entries in the lazy-mode flush queue before it must flush the IOTLB (dma-iommu.c IOVA_DEFAULT_FQ_SIZE). */
export const IOVA_FQ_SIZE = 256;
/** Milliseconds after the first queued IOVA until the flush-queue timer flushes (IOVA_DEFAULT_FQ_TIMEOUT). */
export const IOVA_FQ_TIMEOUT = 10;

/** Types of reserved regions (enum iommu_resv_type, include/linux/iommu.h). */
export const IOMMU_RESV_DIRECT = 0;
export const IOMMU_RESV_DIRECT_RELAXABLE = 1;
export const IOMMU_RESV_RESERVED = 2;
export const IOMMU_RESV_MSI = 3;
export const IOMMU_RESV_SW_MSI = 4;
/** The x86 interrupt-message window every VT-d/AMD-Vi device has as an IOMMU_RESV_MSI region (IOAPIC_RANGE_START..END). */
export const X86_MSI_WINDOW_START = 0xfee0_0000n;
export const X86_MSI_WINDOW_LENGTH = 0x10_0000;

/** A reserved region of a device (struct iommu_resv_region): IOVAs [start, start + length) are never handed out. */
export interface IommuResvRegion {
  start: bigint;
  length: number;
  type: number;
}
const PAGE_MASK_LOW = PAGE_SIZE - 1;

export interface IommuOptions {
  /** Width of the IOVA space in bits (13..52). Default: the device's DMA mask width, at most 48 (VT-d's 4-level 48 bits). */
  apertureBits?: number;
  /**
   * Strict mode, as iommu.strict=1 (default false: lazy, the x86 default): every unmap flushes the
   * IOTLB before its IOVA can be reused. Lazy mode queues freed IOVAs and flushes once per
   * IOVA_FQ_SIZE unmaps, IOVA_FQ_TIMEOUT ms after the first queued one, or when space runs out:
   * faster, but the device may use stale translations in the meantime.
   */
  strict?: boolean;
  /**
   * Reserved regions of this device besides the MSI window (RMRRs and the like), as
   * iommu_get_resv_regions reports them: their IOVAs are never handed out (iova_reserve_iommu_regions).
   */
  reservedRegions?: { start: bigint; length: number }[];
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
  /**
   * Page-table pages (all levels) allocated from the machine now. A table whose last entry goes is
   * freed after the next IOTLB invalidation, so a domain with nothing mapped holds none.
   */
  pageTables: number;
}

function checkApertureBits(bits: number): number {
  if (!Number.isInteger(bits) || bits < 13 || bits > 52) {
    throw new RangeError(`Expected an integer from 13 to 52 for apertureBits but received ${String(bits)}`);
  }
  return bits;
}

/**
 * An IOMMU domain for one device (a DMA domain with its iova_cookie): the IOVA allocator
 * (iova.ts), the I/O page table (io_pgtable.ts) and, as dma-iommu's cookie holds it, the lazy-mode
 * flush queue. The methods below are the domain's face; the work is done by those two parts.
 */
export class IommuDomain {
  readonly dev: Device;
  readonly apertureBits: number;
  readonly strict: boolean;
  /**
   * dev->iommu->pci_32bit_workaround: a PCI device tries IOVAs below 4 GiB first; cleared for good
   * the first time that fails (iommu_dma_alloc_iova). Always false for a platform device.
   */
  #pci32 = false;
  /** iommu_get_resv_regions: the MSI window (inside the aperture) and the device's own regions. */
  readonly resvRegions: readonly IommuResvRegion[];
  #fqTimer: ReturnType<typeof setTimeout> | null = null;
  #unhook: () => void;
  /** First IOVA page handed out: 1, so that no handle is 0. */
  readonly startPfn = 1;
  /** Last IOVA page inside the aperture. */
  readonly endPfn: number;
  /** The live counters (read them with stats()). */
  readonly counters: IommuStats = Object.seal({ mappedPages: 0, iovaAllocated: 0, iotlbFlushes: 0, maps: 0, unmaps: 0, pageTables: 0 });

  // Real private fields: the domain is reachable through dev.iommu, its internals are not.
  readonly #iovad: IovaDomain;
  readonly #pgtable: IoPageTable;
  readonly #flushQueue: number[] = [];
  #limitKey = -1n;
  #busKey = -1n;
  #limitPfnCached = 0;
  /**
   * The IOMMU's register block (iommu_regs.ts): root-table pointer, invalidation generation and
   * fault-recording slots. Shared memory, so that a device in another thread sees what this side writes.
   */
  readonly #regsBuffer = new SharedArrayBuffer(IOMMU_REGS_BYTES);
  readonly #regs = new Int32Array(this.#regsBuffer);
  /** The fault log, oldest first (at most FAULT_LOG_MAX records). */
  readonly #faults: IommuFault[] = [];
  #faultHandler: iommu_fault_handler_t | null = null;
  #faultToken: unknown = undefined;

  /** @param pci dev_is_pci: sets pci_32bit_workaround (iommu_dma_set_pci_32bit_workaround at probe). */
  constructor(dev: Device, options: IommuOptions = {}, pci = true) {
    this.dev = dev;
    this.apertureBits = checkApertureBits(options.apertureBits ?? Math.max(13, Math.min(48, mask_bits(dma_get_mask(dev)))));
    this.strict = options.strict ?? false;
    this.#pci32 = pci;
    this.endPfn = 2 ** (this.apertureBits - 12) - 1;
    this.#regs[REG_APERTURE_BITS] = this.apertureBits;
    this.#iovad = new IovaDomain(this.startPfn, this.endPfn, this.counters, () => this.flush_iotlb_all());
    this.#pgtable = new IoPageTable(dev, this.counters, this.#regs, this.apertureBits);
    // iommu_dma_init_domain -> iova_reserve_iommu_regions: every reserved region but SW_MSI is
    // reserved in the IOVA domain. Intel's get_resv_regions reports the MSI window whatever the aperture.
    const regions: IommuResvRegion[] = [{ start: X86_MSI_WINDOW_START, length: X86_MSI_WINDOW_LENGTH, type: IOMMU_RESV_MSI }];
    for (const r of options.reservedRegions ?? []) regions.push({ start: r.start, length: r.length, type: IOMMU_RESV_RESERVED });
    for (const r of regions) {
      if (r.type === IOMMU_RESV_SW_MSI) continue;
      this.#iovad.reserve_iova(Number(r.start >> 12n), Number((r.start + BigInt(r.length) - 1n) >> 12n));
    }
    this.resvRegions = Object.freeze(regions.map((r) => Object.freeze(r)));
    // A machine going down takes its domains with it: what the flush queue holds is given back first.
    this.#unhook = onMachineDestroy(dev.machine, () => this.release());
    lockFields(this, 'dev', 'apertureBits', 'strict', 'startPfn', 'endPfn', 'counters', 'resvRegions');
  }

  /**
   * The domain goes away with its device (iommu_put_dma_cookie -> iommu_dma_free_fq): IOVAs still
   * in the flush queue are flushed and freed, so unmapped memory is not reported as held. Idempotent.
   */
  release(): void {
    this.#unhook();
    if (!this.dev.machine.isDestroyed) this.flush_iotlb_all();
    else if (this.#fqTimer !== null) clearTimeout(this.#fqTimer);
  }

  /** dev->iommu->pci_32bit_workaround (see iommu_dma_alloc_iova). */
  get pci_32bit_workaround(): boolean {
    return this.#pci32;
  }

  /** The 32-bit attempt failed: from now on this device allocates below its full limit only. */
  clear_pci_32bit_workaround(): void {
    this.#pci32 = false;
  }

  /**
   * The register block as shared memory: what a bus engine (lib/devices) needs besides the
   * machine's memory to walk this domain's tables, in this thread or another.
   */
  get regs(): SharedArrayBuffer {
    return this.#regsBuffer;
  }

  /** Levels of the I/O page table (4; 5 for apertures above 48 bits). */
  get levels(): number {
    return this.#pgtable.levels;
  }

  /** The fault log, oldest first: every IOMMU fault a device of this domain took (a copy). */
  get faults(): IommuFault[] {
    this.processFaults();
    return this.#faults.slice();
  }

  /**
   * Reads the fault-recording slots the hardware side filled, as the DMAR fault interrupt handler
   * does: each fault is logged, given to the handler set with iommu_set_fault_handler, and printed
   * like the kernel's DMAR line when no handler takes it. Returns the number of new faults.
   */
  processFaults(): number {
    return drainFaults(this.#regs, this.dev, this, this.#faults, this.#faultHandler, this.#faultToken);
  }

  /** iommu_set_fault_handler's storage. */
  setFaultHandler(handler: iommu_fault_handler_t | null, token: unknown): void {
    this.#faultHandler = handler;
    this.#faultToken = token;
  }

  /**
   * An IOTLB invalidation (iommu_iotlb_sync / flush_iotlb_all): bumps the generation every IOTLB
   * of this domain checks, then frees the page-table pages that were waiting for it.
   */
  iotlb_sync(): void {
    this.counters.iotlbFlushes++;
    Atomics.add(this.#regs, REG_GEN, 1);
    this.#pgtable.releaseRetired();
  }

  /** Whether the PTE over an IOVA page is a 2 MiB large-page entry. */
  isLargePage(iovaPfn: number): boolean {
    checkInt('IommuDomain.isLargePage', 'iovaPfn', iovaPfn);
    return this.#pgtable.isLargePage(iovaPfn);
  }

  /** Page-table pages by level now (index 1 = leaf tables). */
  tablesPerLevel(): number[] {
    return this.#pgtable.tablesPerLevel();
  }

  /** A snapshot of the counters. @example dev.iommu!.stats().mappedPages // 0 once all is unmapped */
  stats(): IommuStats {
    return { ...this.counters };
  }

  /** domain->geometry: the IOVA range the hardware translates. */
  get geometry(): { aperture_start: bigint; aperture_end: bigint; force_aperture: boolean } {
    return { aperture_start: 0n, aperture_end: DMA_BIT_MASK(this.apertureBits), force_aperture: true };
  }

  // ---- IOVA space (iova.ts) ----

  /**
   * The highest IOVA page a mapping for `dma_limit` may use: min_not_zero(limit, bus_dma_limit),
   * clipped to the aperture (iommu_dma_alloc_iova). Cached: masks rarely change.
   */
  limitPfn(dma_limit: bigint): number {
    checkBigint('IommuDomain.limitPfn', 'dma_limit', dma_limit);
    const bus = this.dev.bus_dma_limit;
    if (dma_limit !== this.#limitKey || bus !== this.#busKey) {
      const limit = min_not_zero(dma_limit, bus);
      this.#limitPfnCached = Math.min(this.endPfn, Number(limit >> 12n));
      this.#limitKey = dma_limit;
      this.#busKey = bus;
    }
    return this.#limitPfnCached;
  }

  /**
   * alloc_iova_fast: `pages` IOVA pages ending at or below limitPfn, aligned to their size rounded
   * up to a power of two. Returns the first IOVA page, or 0 when the space is exhausted.
   */
  alloc_iova(pages: number, limitPfn: number, flushRcache = true): number {
    checkInt('IommuDomain.alloc_iova', 'pages', pages, 1);
    checkInt('IommuDomain.alloc_iova', 'limitPfn', limitPfn);
    return this.#iovad.alloc_iova(pages, limitPfn, flushRcache === true);
  }

  /** Reserved IOVA ranges (reserve_iova) as [first page, last page], highest first. */
  reservedRanges(): [number, number][] {
    return this.#iovad.reservedRanges();
  }

  /** IOVAs waiting in the flush queue for the next IOTLB flush (lazy mode). */
  get queuedIovas(): number {
    return this.#flushQueue.length;
  }

  /** free_iova_fast: false when `pfn` starts no allocated range (the kernel ignores such frees). */
  free_iova(pfn: number): boolean {
    checkInt('IommuDomain.free_iova', 'pfn', pfn);
    return this.#iovad.free_iova(pfn);
  }

  /** queue_iova (lazy mode): the IOVA is reused only after the next IOTLB flush. */
  queue_iova(pfn: number): void {
    checkInt('IommuDomain.queue_iova', 'pfn', pfn);
    this.#flushQueue.push(pfn);
    if (this.#flushQueue.length >= IOVA_FQ_SIZE) this.flush_iotlb_all();
    // fq_flush_timeout: queued IOVAs do not wait for ever. Unref'd: it keeps no program alive.
    else if (this.#fqTimer === null) {
      this.#fqTimer = setTimeout(() => {
        this.#fqTimer = null;
        if (!this.dev.machine.isDestroyed) this.flush_iotlb_all();
      }, IOVA_FQ_TIMEOUT);
      this.#fqTimer.unref();
    }
  }

  /**
   * iommu_flush_iotlb_all, and the flush queue's drain: invalidates the IOTLB, then frees the
   * queued IOVAs (lazy mode). Also what the flush-queue timer would do after 10 ms.
   */
  flush_iotlb_all(): void {
    if (this.#fqTimer !== null) {
      clearTimeout(this.#fqTimer);
      this.#fqTimer = null;
    }
    if (this.#flushQueue.length === 0) return;
    this.iotlb_sync();
    for (const pfn of this.#flushQueue) this.#iovad.free_iova(pfn);
    this.#flushQueue.length = 0;
  }

  /** IOVA ranges allocated now (queued frees included), as [first page, pages]. */
  allocatedRanges(): [number, number][] {
    return this.#iovad.allocatedRanges();
  }

  // ---- I/O page table (io_pgtable.ts) ----

  /**
   * Maps `pages` IOVA pages from iovaPfn to physical pages from pfn. All-or-nothing: a PTE that is
   * already present is a WARN and -EEXIST, as io-pgtable does, with nothing changed.
   */
  mapPages(iovaPfn: number, pfn: number, pages: number, prot: number): number {
    checkPageRun('IommuDomain.mapPages', iovaPfn, pages, this.endPfn);
    checkInt('IommuDomain.mapPages', 'pfn', pfn);
    checkInt('IommuDomain.mapPages', 'prot', prot, 0, 0x7f);
    return this.#pgtable.mapPages(iovaPfn, pfn, pages, prot);
  }

  /**
   * Clears PTEs from iovaPfn on, stopping at the first page that is not mapped (a WARN, as
   * io-pgtable does). Returns the number of pages unmapped.
   */
  unmapPages(iovaPfn: number, pages: number): number {
    checkPageRun('IommuDomain.unmapPages', iovaPfn, pages, this.endPfn);
    return this.#pgtable.unmapPages(iovaPfn, pages);
  }

  /** The PTE of an IOVA page: target pfn and prot, or null when not present. */
  lookupPfn(iovaPfn: number): { pfn: number; prot: number } | null {
    checkInt('IommuDomain.lookupPfn', 'iovaPfn', iovaPfn);
    return this.#pgtable.lookupPfn(iovaPfn);
  }

  /** Physical address behind an IOVA, as a number; -1 when unmapped. */
  translate(iova: number): number {
    checkInt('IommuDomain.translate', 'iova', iova);
    return this.#pgtable.translate(iova);
  }
}

/**
 * The checks of the domain's page-level methods, which the DMA layer calls on hot paths and a
 * program can reach through dev.iommu: whole pages inside the aperture, so that no loop over them
 * can run on a string or NaN (which never ends) or build tables past the aperture.
 */
function checkPageRun(fn: string, iovaPfn: number, pages: number, endPfn: number): void {
  checkInt(fn, 'iovaPfn', iovaPfn, 0, endPfn);
  checkInt(fn, 'pages', pages, 0, endPfn + 1 - iovaPfn);
}

// ---- iommu core API ----------------------------------------------------------------------------

/**
 * iommu_get_dma_domain: the domain a device's DMA API calls go through.
 * @throws TypeError when the device is not behind an IOMMU (callers check use_dma_iommu first).
 */
export function iommu_get_dma_domain(dev: Device): IommuDomain {
  checkDevice('iommu_get_dma_domain', dev);
  const d = dev.iommu;
  if (d === null) throw new TypeError(`${dev.name} is not behind an IOMMU (use_dma_iommu is false)`);
  return d;
}

/**
 * iommu_iova_to_phys: the physical address an IOVA translates to, or 0n when nothing is mapped
 * there. Takes the device or its domain.
 */
export function iommu_iova_to_phys(dev: Device | IommuDomain, iova: bigint): bigint {
  const domain = domainOf('iommu_iova_to_phys', dev);
  checkBigint('iommu_iova_to_phys', 'iova', iova);
  if (iova < 0n || iova > BigInt(Number.MAX_SAFE_INTEGER)) return 0n;
  const phys = domain.translate(Number(iova));
  return phys < 0 ? 0n : BigInt(phys);
}

/** The IOMMU_* prot of the PTE behind an IOVA, or null when nothing is mapped there. */
export function iommu_iova_to_prot(dev: Device | IommuDomain, iova: bigint): number | null {
  const domain = domainOf('iommu_iova_to_prot', dev);
  checkBigint('iommu_iova_to_prot', 'iova', iova);
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
  checkDomain('iommu_map', domain);
  checkBigint('iommu_map', 'iova', iova);
  checkBigint('iommu_map', 'paddr', paddr);
  checkSize('iommu_map', 'size', size);
  checkInt('iommu_map', 'prot', prot, 0, 0xffffffff);
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
  checkDomain('iommu_unmap', domain);
  checkBigint('iommu_unmap', 'iova', iova);
  checkSize('iommu_unmap', 'size', size);
  if (iova & BigInt(PAGE_MASK_LOW) || size % PAGE_SIZE !== 0 || iova < 0n) return 0;
  if (size === 0) return 0;
  const unmapped = domain.unmapPages(Number(iova >> 12n), size / PAGE_SIZE);
  if (unmapped > 0) domain.iotlb_sync();
  return unmapped * PAGE_SIZE;
}

/** iommu_get_resv_regions: the device's reserved regions (the MSI window and those given at creation). */
export function iommu_get_resv_regions(dev: Device): IommuResvRegion[] {
  return iommu_get_dma_domain(dev).resvRegions.map((r) => ({ ...r }));
}

/**
 * iommu_set_fault_handler: `handler(domain, dev, iova, flags, token)` is called for every IOMMU
 * fault of the domain (flags: IOMMU_FAULT_READ or IOMMU_FAULT_WRITE). Returning 0 means handled;
 * anything else (by convention -ENOSYS) lets the DMAR line be printed too. null removes it.
 * @example iommu_set_fault_handler(dev.iommu!, (d, dev, iova, flags) => { seen.push(iova); return 0; }, null)
 */
export function iommu_set_fault_handler(domain: IommuDomain, handler: iommu_fault_handler_t | null, token?: unknown): void {
  checkDomain('iommu_set_fault_handler', domain);
  if (handler !== null && typeof handler !== 'function') {
    throw new TypeError(`iommu_set_fault_handler: Expected a function or null for handler but received ${describeValue(handler)}`);
  }
  domain.setFaultHandler(handler, token);
}

// Importers of './iommu' (device.ts, demo, bench) get the DMA API too; new code imports './dma_iommu'.
export { dma_info_to_prot, iommu_dma_alloc, iommu_dma_free, iommu_dma_get_sgtable, iommu_dma_map_page, iommu_dma_map_resource, iommu_dma_map_sg, iommu_dma_max_mapping_size, iommu_dma_mmap, iommu_dma_supported, iommu_dma_sync_sg_for_cpu, iommu_dma_sync_sg_for_device, iommu_dma_sync_single_for_cpu, iommu_dma_sync_single_for_device, iommu_dma_unmap_page, iommu_dma_unmap_resource, iommu_dma_unmap_sg } from './dma_iommu';
export { FAULT_LOG_MAX, IOMMU_FAULT_READ, IOMMU_FAULT_WRITE, dmarFaultLine, type IommuFault, type iommu_fault_handler_t } from './iommu_fault';
