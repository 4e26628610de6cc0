// dma-direct: the DMA mapping of a device that sees physical memory through a fixed bus offset, no
// IOMMU (kernel/dma/direct.c, kernel/dma/direct.h, include/linux/dma-direct.h), bouncing through
// swiotlb (lib/dma/swiotlb.ts) what the device cannot reach or when swiotlb=force.

import { GFP_DMA, GFP_DMA32, GFP_KERNEL, PAGE_ALIGN, PAGE_SHIFT, PAGE_SIZE, __GFP_NOWARN, __GFP_ZERO, fls64, get_order, type gfp_t } from '../mm/gfp';
import type { Machine } from '../mm/machine';
import type { Page } from '../mm/page';
import { remap_pfn_range, vma_pages, type VmArea } from '../mm/vma';
import { WARN_ONCE } from './bug';
import { dma_cache, dma_cache_if_any } from './cache';
import { dma_mmap_from_dev_coherent, dma_mmap_range_ok } from './coherent';
import {
  DMA_ATTR_NO_KERNEL_MAPPING, DMA_ATTR_NO_WARN, DMA_ATTR_SKIP_CPU_SYNC, DMA_BIT_MASK, DMA_MAPPING_ERROR, DMA_TO_DEVICE,
  EIO, ENXIO, SIZE_MAX, type DmaDataDirection,
} from './constants';
import { dma_alloc_contiguous, dma_free_contiguous } from './contiguous';
import { dev_to_node, type Device } from './device';
import { dma_pgprot } from './mapping';
import type { Box } from './ops';
import { for_each_sg, sg_alloc_table, sg_set_page, type Scatterlist, type SgTable } from './scatterlist';
import {
  is_swiotlb_active, is_swiotlb_buffer, is_swiotlb_force_bounce, swiotlb_max_mapping_size, swiotlb_sync_single_for_cpu,
  swiotlb_sync_single_for_device, swiotlb_tbl_map_single, swiotlb_tbl_unmap_single,
} from './swiotlb';

const PAGE_SHIFT_N = BigInt(PAGE_SHIFT);
const U64 = (v: bigint): bigint => BigInt.asUintN(64, v);
/** zone_dma_limit: the top of ZONE_DMA on x86-64 (16 MiB). */
export const zone_dma_limit = DMA_BIT_MASK(24);

/** min_not_zero (include/linux/minmax.h) over 64-bit values. */
export function min_not_zero(a: bigint, b: bigint): bigint {
  if (a === 0n) return b;
  if (b === 0n) return a;
  return a < b ? a : b;
}

/** phys_to_dma: the bus address of a physical address (dev->dma_range_map as one offset). */
export function phys_to_dma(dev: Device, phys: bigint): bigint {
  return U64(phys + dev.busOffset);
}

/** dma_to_phys: the inverse of phys_to_dma. */
export function dma_to_phys(dev: Device, dma: bigint): bigint {
  return U64(dma - dev.busOffset);
}

/** dma_direct_to_page: the struct page behind a dma-direct bus address. */
function dma_direct_to_page(dev: Device, dma: bigint): Page {
  return dev.machine.pfn_to_page(Number(dma_to_phys(dev, dma) >> PAGE_SHIFT_N));
}

/**
 * dma_capable: can the device reach [addr, addr + size)? The end must lie at or below
 * min_not_zero(*dma_mask, bus_dma_limit). A NULL dma_mask reads as 0 (the kernel would oops;
 * dma_map_page_attrs rejects such devices first). `is_ram` only matters on 32-bit dma_addr_t.
 */
export function dma_capable(dev: Device, addr: bigint, size: number, is_ram: boolean): boolean {
  void is_ram;
  if (addr === DMA_MAPPING_ERROR) return false;
  const end = U64(addr + BigInt(size) - 1n);
  return end <= min_not_zero(dev.dma_mask ?? 0n, dev.bus_dma_limit);
}

// ---- cache maintenance ----------------------------------------------------------------------

/** The cache maintenance non-coherent devices of a machine caused (per machine). */
export interface DmaCacheMaintenance {
  /** arch_sync_dma_for_device calls (clean: dirty lines written back before the device reads). */
  forDevice: number;
  /** arch_sync_dma_for_cpu calls (invalidate before the CPU reads what the device wrote). */
  forCpu: number;
  /** arch_dma_prep_coherent calls (clean and invalidate of a fresh coherent buffer's kernel alias). */
  prepCoherent: number;
  /** Bytes covered by all of the above. */
  bytes: number;
}

const maintenance = new WeakMap<Machine, DmaCacheMaintenance>();

/**
 * The cache maintenance that non-coherent devices of this machine caused. It is real on the
 * machine's simulated CPU cache (lib/dma/cache.ts): a device that does not snoop sees RAM, the CPU
 * sees its cache, and these calls are what moves bytes between them.
 */
export function dma_cache_maintenance(machine: Machine): DmaCacheMaintenance {
  let m = maintenance.get(machine);
  if (m === undefined) maintenance.set(machine, (m = { forDevice: 0, forCpu: 0, prepCoherent: 0, bytes: 0 }));
  return m;
}

/** arch_sync_dma_for_device (arch/arm64/mm/dma-mapping.c): clean, whatever the direction. */
export function arch_sync_dma_for_device(dev: Device, phys: bigint, size: number, dir: DmaDataDirection): void {
  void dir;
  const m = dma_cache_maintenance(dev.machine);
  m.forDevice++;
  m.bytes += size;
  dma_cache(dev.machine).clean(Number(phys), size);
}

/** arch_sync_dma_for_cpu (arm64): nothing for DMA_TO_DEVICE, else invalidate (partial end lines cleaned first). */
export function arch_sync_dma_for_cpu(dev: Device, phys: bigint, size: number, dir: DmaDataDirection): void {
  const m = dma_cache_maintenance(dev.machine);
  m.forCpu++;
  m.bytes += size;
  if (dir === DMA_TO_DEVICE) return;
  dma_cache(dev.machine).invalidate(Number(phys), size);
}

/** arch_dma_prep_coherent: the buffer leaves the CPU cache (clean + invalidate) and is uncached from now on. */
export function arch_dma_prep_coherent(dev: Device, page: Page, size: number): void {
  const m = dma_cache_maintenance(dev.machine);
  m.prepCoherent++;
  m.bytes += size;
  dma_cache_if_any(dev.machine)?.release(Number(page.phys), size);
}

function hex(v: bigint): string {
  return `0x${v.toString(16)}`;
}

// ---- streaming mappings ---------------------------------------------------------------------

/**
 * swiotlb_map (kernel/dma/swiotlb.c): bounce [phys, +size) through swiotlb slots. A slot the device
 * still cannot reach (a mask below the pool) is given back: dev_WARN_ONCE and DMA_MAPPING_ERROR.
 */
function swiotlb_map(dev: Device, phys: bigint, size: number, dir: DmaDataDirection, attrs: number): bigint {
  const swiotlb_addr = swiotlb_tbl_map_single(dev, phys, size, 0, dir, attrs);
  if (swiotlb_addr === DMA_MAPPING_ERROR) return DMA_MAPPING_ERROR;
  const dma_addr = phys_to_dma(dev, swiotlb_addr);
  if (!dma_capable(dev, dma_addr, size, true)) {
    swiotlb_tbl_unmap_single(dev, swiotlb_addr, size, dir, attrs | DMA_ATTR_SKIP_CPU_SYNC);
    WARN_ONCE(dev.machine, `swiotlb_map:${dev.name}`,
      `WARNING: kernel/dma/swiotlb.c: swiotlb_map: ${dev.name}: swiotlb addr ${hex(dma_addr)}+${size} overflow ` +
      `(mask ${(dev.dma_mask ?? 0n).toString(16)}, bus limit ${dev.bus_dma_limit.toString(16)}).`);
    return DMA_MAPPING_ERROR;
  }
  if (!dev.dma_coherent && !(attrs & DMA_ATTR_SKIP_CPU_SYNC)) arch_sync_dma_for_device(dev, swiotlb_addr, size, dir);
  return dma_addr;
}

/**
 * dma_direct_map_page: bus address of page + offset. With swiotlb=force, or beyond
 * min_not_zero(*dma_mask, bus_dma_limit) while the machine has a swiotlb pool, the buffer bounces
 * (swiotlb_map). Beyond the mask without swiotlb: dev_WARN_ONCE and DMA_MAPPING_ERROR (a retry
 * cannot help; the driver needs a larger mask or an IOMMU). A non-coherent device syncs for the
 * device unless DMA_ATTR_SKIP_CPU_SYNC.
 */
export function dma_direct_map_page(dev: Device, page: Page, offset: number, size: number, dir: DmaDataDirection, attrs: number): bigint {
  const phys = offset === 0 ? page.phys : page.phys + BigInt(offset);
  const dma_addr = phys_to_dma(dev, phys);
  if (dev.machine.swiotlb !== null && is_swiotlb_force_bounce(dev)) return swiotlb_map(dev, phys, size, dir, attrs);
  if (!dma_capable(dev, dma_addr, size, true)) {
    if (is_swiotlb_active(dev)) return swiotlb_map(dev, phys, size, dir, attrs);
    WARN_ONCE(dev.machine, 'dma_direct_map_page',
      `WARNING: kernel/dma/direct.h: dma_direct_map_page: ${dev.name}: DMA addr ${hex(dma_addr)} + size ${hex(BigInt(size))} overflow ` +
      `(mask ${(dev.dma_mask ?? 0n).toString(16)}, bus limit ${dev.bus_dma_limit.toString(16)})`);
    return DMA_MAPPING_ERROR;
  }
  if (!dev.dma_coherent && !(attrs & DMA_ATTR_SKIP_CPU_SYNC)) arch_sync_dma_for_device(dev, phys, size, dir);
  return dma_addr;
}

/**
 * dma_direct_unmap_page: syncs for the CPU unless SKIP_CPU_SYNC (which copies a bounced
 * FROM_DEVICE/BIDIRECTIONAL buffer back), then frees the swiotlb slots of a bounced mapping.
 */
export function dma_direct_unmap_page(dev: Device, addr: bigint, size: number, dir: DmaDataDirection, attrs: number): void {
  if (!(attrs & DMA_ATTR_SKIP_CPU_SYNC)) dma_direct_sync_single_for_cpu(dev, addr, size, dir);
  if (dev.machine.swiotlb !== null) swiotlb_tbl_unmap_single(dev, dma_to_phys(dev, addr), size, dir, attrs | DMA_ATTR_SKIP_CPU_SYNC);
}

/**
 * dma_direct_map_sg: maps every entry on its own (dma_address, dma_length = length).
 * @returns nents, or -EIO when an entry is beyond the mask: the entries mapped so far are unmapped
 *   (with SKIP_CPU_SYNC) first. -EIO is final for this device and list.
 */
export function dma_direct_map_sg(dev: Device, sgl: Scatterlist, nents: number, dir: DmaDataDirection, attrs: number): number {
  let failedAt = -1;
  for_each_sg(sgl, nents, (sg, i) => {
    if (failedAt >= 0) return;
    const page = sg.page_link;
    if (page === null) throw new TypeError('dma_direct_map_sg: scatterlist entry has no page');
    sg.dma_address = dma_direct_map_page(dev, page, sg.offset, sg.length, dir, attrs);
    if (sg.dma_address === DMA_MAPPING_ERROR) {
      failedAt = i;
      return;
    }
    sg.dma_length = sg.length;
  });
  if (failedAt < 0) return nents;
  dma_direct_unmap_sg(dev, sgl, failedAt, dir, attrs | DMA_ATTR_SKIP_CPU_SYNC);
  return -EIO;
}

/** dma_direct_unmap_sg: unmaps the first nents entries. */
export function dma_direct_unmap_sg(dev: Device, sgl: Scatterlist, nents: number, dir: DmaDataDirection, attrs: number): void {
  for_each_sg(sgl, nents, (sg) => dma_direct_unmap_page(dev, sg.dma_address, sg.dma_length, dir, attrs));
}

/**
 * dma_direct_sync_single_for_cpu: cache maintenance for a non-coherent device, then a bounced
 * FROM_DEVICE/BIDIRECTIONAL buffer is copied back from its swiotlb slots.
 */
export function dma_direct_sync_single_for_cpu(dev: Device, addr: bigint, size: number, dir: DmaDataDirection): void {
  const phys = dma_to_phys(dev, addr);
  if (!dev.dma_coherent) arch_sync_dma_for_cpu(dev, phys, size, dir);
  if (dev.machine.swiotlb !== null) swiotlb_sync_single_for_cpu(dev, phys, size, dir);
}

/**
 * dma_direct_sync_single_for_device: a bounced TO_DEVICE/BIDIRECTIONAL buffer is copied into its
 * swiotlb slots first, then cache maintenance for a non-coherent device.
 */
export function dma_direct_sync_single_for_device(dev: Device, addr: bigint, size: number, dir: DmaDataDirection): void {
  const phys = dma_to_phys(dev, addr);
  if (dev.machine.swiotlb !== null) swiotlb_sync_single_for_device(dev, phys, size, dir);
  if (!dev.dma_coherent) arch_sync_dma_for_device(dev, phys, size, dir);
}

/** dma_direct_sync_sg_for_cpu: per entry, by its bus address and CPU length. */
export function dma_direct_sync_sg_for_cpu(dev: Device, sgl: Scatterlist, nents: number, dir: DmaDataDirection): void {
  if (dev.dma_coherent && dev.machine.swiotlb === null) return;
  for_each_sg(sgl, nents, (sg) => dma_direct_sync_single_for_cpu(dev, sg.dma_address, sg.length, dir));
}

/** dma_direct_sync_sg_for_device: per entry, by its bus address and CPU length. */
export function dma_direct_sync_sg_for_device(dev: Device, sgl: Scatterlist, nents: number, dir: DmaDataDirection): void {
  if (dev.dma_coherent && dev.machine.swiotlb === null) return;
  for_each_sg(sgl, nents, (sg) => dma_direct_sync_single_for_device(dev, sg.dma_address, sg.length, dir));
}

/** dma_direct_need_sync: a non-coherent device, or a mapping bounced through swiotlb. */
export function dma_direct_need_sync(dev: Device, dma_addr: bigint): boolean {
  return !dev.dma_coherent || is_swiotlb_buffer(dev, dma_to_phys(dev, dma_addr));
}

/**
 * dma_direct_map_resource: MMIO is not translated by dma_range_map, so the bus address is the
 * physical address. Beyond the mask: WARN_ON_ONCE and DMA_MAPPING_ERROR.
 */
export function dma_direct_map_resource(dev: Device, paddr: bigint, size: number, dir: DmaDataDirection, attrs: number): bigint {
  void dir; void attrs;
  const dma_addr = paddr;
  if (!dma_capable(dev, dma_addr, size, false)) {
    WARN_ONCE(dev.machine, 'dma_direct_map_resource',
      `WARNING: kernel/dma/direct.c: dma_direct_map_resource: ${dev.name}: DMA addr ${hex(dma_addr)} + size ${hex(BigInt(size))} overflow ` +
      `(mask ${(dev.dma_mask ?? 0n).toString(16)}, bus limit ${dev.bus_dma_limit.toString(16)})`);
    return DMA_MAPPING_ERROR;
  }
  return dma_addr;
}

/**
 * dma_direct_max_mapping_size: swiotlb_max_mapping_size (256 KiB less min_align_mask's slots) for a
 * device that may bounce: swiotlb=force, or a mask that does not reach all of RAM
 * (dma_addressing_limited); otherwise unlimited.
 */
export function dma_direct_max_mapping_size(dev: Device): number {
  if (is_swiotlb_active(dev)
    && (min_not_zero(dev.dma_mask ?? 0n, dev.bus_dma_limit) < dma_direct_get_required_mask(dev) || is_swiotlb_force_bounce(dev))) {
    return swiotlb_max_mapping_size(dev);
  }
  return SIZE_MAX;
}

// ---- masks ----------------------------------------------------------------------------------

/** max_pfn: one past the highest page frame of the machine's memory. */
function max_pfn(machine: Machine): number {
  let top = 0;
  for (const seg of machine.segments) top = Math.max(top, seg.startPfn + seg.pages);
  return top;
}

/**
 * dma_direct_supported: masks of 32 bits or more always work (ZONE_DMA32 exists). A smaller mask
 * must reach min(top of RAM, zone_dma_limit) so that GFP_DMA memory is addressable.
 * @returns 1 if supported, else 0.
 * @example dma_direct_supported(dev, DMA_BIT_MASK(16)) // 0; 24 bits -> 1
 */
export function dma_direct_supported(dev: Device, mask: bigint): number {
  if (mask >= DMA_BIT_MASK(32)) return 1;
  let min_mask = BigInt(max_pfn(dev.machine) - 1) << PAGE_SHIFT_N;
  if (zone_dma_limit < min_mask) min_mask = zone_dma_limit;
  return mask >= phys_to_dma(dev, min_mask) ? 1 : 0;
}

/** dma_direct_get_required_mask: the smallest all-ones mask that reaches the top of RAM. */
export function dma_direct_get_required_mask(dev: Device): bigint {
  const max_dma = phys_to_dma(dev, BigInt(max_pfn(dev.machine) - 1) << PAGE_SHIFT_N);
  const bits = max_dma === 0n ? 0 : max_dma.toString(2).length;
  return DMA_BIT_MASK(Math.max(bits, 1));
}

// ---- coherent and page allocations ----------------------------------------------------------

/** dma_coherent_ok: the whole buffer lies below min_not_zero(coherent_dma_mask, bus_dma_limit). */
function dma_coherent_ok(dev: Device, phys: bigint, size: number): boolean {
  const dma_addr = phys_to_dma(dev, phys);
  if (dma_addr === DMA_MAPPING_ERROR) return false;
  return U64(dma_addr + BigInt(size) - 1n) <= min_not_zero(dev.coherent_dma_mask, dev.bus_dma_limit);
}

/**
 * dma_direct_optimal_gfp_mask: start in the zone the coherent limit falls into (GFP_DMA up to
 * 16 MiB, GFP_DMA32 up to 4 GiB). Returns the zone flags and the physical limit.
 */
function dma_direct_optimal_gfp_mask(dev: Device): { gfp: gfp_t; phys_limit: bigint } {
  const phys_limit = dma_to_phys(dev, min_not_zero(dev.coherent_dma_mask, dev.bus_dma_limit));
  if (phys_limit <= zone_dma_limit) return { gfp: GFP_DMA, phys_limit };
  if (phys_limit <= DMA_BIT_MASK(32)) return { gfp: GFP_DMA32, phys_limit };
  return { gfp: 0, phys_limit };
}

/**
 * __dma_direct_alloc_pages: CMA first (dropped if the device cannot reach it), then the buddy
 * allocator on dev_to_node in the zone the mask asks for; memory the device cannot reach is freed
 * and the allocation retried in ZONE_DMA32, then ZONE_DMA. null when nothing reachable is free.
 */
function __dma_direct_alloc_pages(dev: Device, size: number, gfp: gfp_t): Page | null {
  const m = dev.machine;
  const node = dev_to_node(dev);
  if (size % PAGE_SIZE !== 0) WARN_ONCE(m, '__dma_direct_alloc_pages', `WARNING: kernel/dma/direct.c: __dma_direct_alloc_pages: size ${size} is not page aligned`);
  const zone = dma_direct_optimal_gfp_mask(dev);
  gfp |= zone.gfp;
  let page = dma_alloc_contiguous(dev, size, gfp);
  if (page !== null && !dma_coherent_ok(dev, page.phys, size)) {
    dma_free_contiguous(dev, page, size);
    page = null;
  }
  const order = get_order(size);
  for (;;) {
    if (page === null) page = m.alloc_pages_node(node, gfp, order);
    if (page === null || dma_coherent_ok(dev, page.phys, size)) return page;
    m.__free_pages(page, order);
    page = null;
    if (zone.phys_limit < DMA_BIT_MASK(64) && !(gfp & (GFP_DMA32 | GFP_DMA))) {
      gfp |= GFP_DMA32;
      continue;
    }
    if (!(gfp & GFP_DMA)) {
      gfp = (gfp & ~GFP_DMA32) | GFP_DMA;
      continue;
    }
    return null;
  }
}


/**
 * dma_direct_alloc_pages: pages the device can reach, zeroed over `size` bytes, with their bus
 * address in dma_handle. `size` should already be page aligned (dma_alloc_pages aligns it).
 * @returns the first page, or null (dma_handle untouched) when no reachable memory is free.
 */
export function dma_direct_alloc_pages(dev: Device, size: number, dma_handle: Box<bigint>, dir: DmaDataDirection, gfp: gfp_t): Page | null {
  void dir;
  const page = __dma_direct_alloc_pages(dev, size, gfp);
  if (page === null) return null;
  dev.machine.memset(dev.machine.page_address(page), 0, size);
  dma_handle.value = phys_to_dma(dev, page.phys);
  return page;
}

/** dma_direct_free_pages: back to CMA or the buddy allocator (dma_free_contiguous decides). */
export function dma_direct_free_pages(dev: Device, size: number, page: Page, dma_addr: bigint, dir: DmaDataDirection): void {
  void dma_addr; void dir;
  dma_free_contiguous(dev, page, size);
}

/**
 * dma_direct_alloc: a coherent buffer; returns its linear-map address (or null) and sets dma_handle.
 * With DMA_ATTR_NO_KERNEL_MAPPING the kernel returns the struct page as an opaque cookie; here the
 * cookie is the page's linear address, which dma_direct_free accepts the same way.
 * A non-coherent device would get an uncached remap on arm64; here the pages leave the simulated
 * CPU cache for good (arch_dma_prep_coherent), so CPU and device see the same bytes at the linear address.
 */
export function dma_direct_alloc(dev: Device, size: number, dma_handle: Box<bigint>, gfp: gfp_t, attrs: number): number | null {
  size = PAGE_ALIGN(size);
  if (attrs & DMA_ATTR_NO_WARN) gfp |= __GFP_NOWARN;
  // We always zero by hand once done, as the kernel does.
  const page = __dma_direct_alloc_pages(dev, size, gfp & ~__GFP_ZERO);
  if (page === null) return null;
  const addr = dev.machine.page_address(page);
  if (!dev.dma_coherent) arch_dma_prep_coherent(dev, page, size);
  if (!(attrs & DMA_ATTR_NO_KERNEL_MAPPING)) dev.machine.memset(addr, 0, size);
  dma_handle.value = phys_to_dma(dev, page.phys);
  return addr;
}

/** dma_direct_free: the pages are found from dma_addr, as in the kernel. */
export function dma_direct_free(dev: Device, size: number, cpu_addr: number, dma_addr: bigint, attrs: number): void {
  if (attrs & DMA_ATTR_NO_KERNEL_MAPPING) {
    // cpu_addr is the page cookie.
    dma_free_contiguous(dev, dev.machine.virt_to_page(cpu_addr), size);
    return;
  }
  dma_free_contiguous(dev, dma_direct_to_page(dev, dma_addr), size);
}

/**
 * dma_direct_get_sgtable: one entry of PAGE_ALIGN(size) bytes for the page behind dma_addr
 * (cpu_addr is not used). @returns 0, or -ENOMEM from sg_alloc_table.
 */
export function dma_direct_get_sgtable(dev: Device, sgt: SgTable, cpu_addr: number, dma_addr: bigint, size: number, attrs: number): number {
  void cpu_addr; void attrs;
  const page = dma_direct_to_page(dev, dma_addr);
  const ret = sg_alloc_table(sgt, 1, GFP_KERNEL);
  if (ret === 0 && sgt.sgl !== null) sg_set_page(sgt.sgl, page, PAGE_ALIGN(size), 0);
  return ret;
}

/**
 * dma_direct_mmap: vm_page_prot from dma_pgprot (always, even on failure), then the device's
 * coherent pool (x86 has no global pool), then the bounds check (-ENXIO), then remap_pfn_range of
 * the pfn behind dma_addr + vm_pgoff over the whole VMA.
 * @returns 0, -ENXIO, or remap_pfn_range's errno.
 */
export function dma_direct_mmap(dev: Device, vma: VmArea, cpu_addr: number, dma_addr: bigint, size: number, attrs: number): number {
  const user_count = vma_pages(vma);
  const count = PAGE_ALIGN(size) / PAGE_SIZE;
  const pfn = Number(dma_to_phys(dev, dma_addr) >> PAGE_SHIFT_N);
  const ret: Box<number> = { value: -ENXIO };
  vma.vm_page_prot = dma_pgprot(dev, vma.vm_page_prot, attrs);
  if (dma_mmap_from_dev_coherent(dev, vma, cpu_addr, size, ret)) return ret.value;
  if (!dma_mmap_range_ok(vma.vm_pgoff, count, user_count)) return -ENXIO;
  return remap_pfn_range(vma, vma.vm_start, pfn + vma.vm_pgoff, user_count * PAGE_SIZE, vma.vm_page_prot);
}

/** fls64 over a bigint mask, for messages and aperture sizes. */
export function mask_bits(mask: bigint): number {
  return mask === 0n ? 0 : mask > BigInt(Number.MAX_SAFE_INTEGER) ? mask.toString(2).length : fls64(Number(mask));
}
