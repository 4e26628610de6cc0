// The driver-facing DMA API: kernel/dma/mapping.c and include/linux/dma-mapping.h. Each entry point
// routes to dma-direct, the IOMMU layer or the device's dma_map_ops (route.ts), and calls its
// DMA-API debug hook. The sync calls (sync.ts) and the mask calls (mask.ts) are re-exported at the
// end, so that this module is the whole driver API.

import { is_vmalloc_addr, page_address, page_to_phys, virt_to_phys, vmalloc_to_page } from '../mm/kernel';
import { PAGE_ALIGN, PAGE_SIZE, __GFP_COMP, __GFP_DMA, __GFP_DMA32, __GFP_HIGHMEM, __GFP_NOWARN, get_order, type gfp_t } from '../mm/gfp';
import type { Page } from '../mm/page';
import { pgprot_dmacoherent, pgprot_writecombine } from '../mm/pgprot';
import { remap_pfn_range, vma_pages, type VmArea } from '../mm/vma';
import { WARN_ONCE } from './bug';
import { dma_cache } from './cache';
import { dma_owner_to_cpu, dma_owner_to_device } from './ownership';
import { dma_get_max_seg_size, dma_get_seg_boundary } from './dma_parms';
import { dma_alloc_from_dev_coherent, dma_mmap_range_ok, dma_release_from_dev_coherent } from './coherent';
import {
  DMA_ATTR_NO_WARN, DMA_ATTR_WRITE_COMBINE, DMA_MAPPING_ERROR, EINVAL, EIO, ENOMEM,
  ENXIO, EREMOTEIO, type DmaDataDirection,
} from './constants';
import { debugOf, get_dma_ops, use_dma_iommu, type Device } from './device';
import * as direct from './direct';
import * as dma_iommu from './dma_iommu';
import { dma_common_alloc_pages, dma_common_free_pages } from './ops_helpers';
import type { Box } from './ops';
import { WARN_ON_ONCE, dma_alloc_direct, dma_map_direct } from './route';
import { for_each_sg, type Scatterlist, type SgTable } from './scatterlist';
import { isBox, isDevice, isGfp, isLiveDevice, isPageOf, isSize } from './validate';
import { checkAttrs, checkCpuAddr, checkDevice, failCpuAddr, isCpuAddrOf, checkDirection, checkLiveDevice, checkPage, checkSg, checkSgTable, checkVma } from './validate';
import { checkBigint, checkBox, checkGfp, checkInt, checkSize } from '../mm/validate';

/** The checks of a streaming map call, before anything is mapped or tracked. */
function checkMapArgs(fn: string, dev: Device, page: Page, offset: number, size: number, dir: number, attrs: number): void {
  // One inlined test for the common case; the checks below only run to say what is wrong.
  if (isLiveDevice(dev) && isPageOf(page, dev.machine) && isSize(offset) && isSize(size) && isSize(attrs) && (dir === 0 || dir === 1 || dir === 2)) return;
  checkLiveDevice(fn, dev);
  checkPage(fn, 'page', page, dev.machine);
  checkSize(fn, 'offset', offset);
  checkSize(fn, 'size', size);
  checkAttrs(fn, attrs);
  checkDirection(dir, fn);
}

/** The checks of an unmap / sync by handle. */
function checkHandleArgs(fn: string, dev: Device, addr: bigint, size: number, dir: number): void {
  if (isDevice(dev) && typeof addr === 'bigint' && isSize(size) && (dir === 0 || dir === 1 || dir === 2)) return;
  checkDevice(fn, dev);
  checkBigint(fn, 'addr', addr);
  checkSize(fn, 'size', size);
  checkDirection(dir, fn);
}

// ---- page protection -----------------------------------------------------------------------

/**
 * dma_pgprot: the page protection for a user or kernel mapping of DMA memory. Coherent devices
 * keep `prot`; non-coherent ones get write-combine for DMA_ATTR_WRITE_COMBINE (the model has
 * CONFIG_ARCH_HAS_DMA_WRITE_COMBINE) and pgprot_dmacoherent (uncached) otherwise.
 * @example dma_pgprot(noncoherentDev, PAGE_SHARED, DMA_ATTR_WRITE_COMBINE) // WC bits set
 */
export function dma_pgprot(dev: Device, prot: number, attrs: number): number {
  checkDevice('dma_pgprot', dev);
  checkInt('dma_pgprot', 'prot', prot, 0);
  checkAttrs('dma_pgprot', attrs);
  if (dev.dma_coherent) return prot;
  if (attrs & DMA_ATTR_WRITE_COMBINE) return pgprot_writecombine(prot);
  return pgprot_dmacoherent(prot);
}

// ---- map / unmap of pages and single buffers --------------------------------------------------

function __dma_map_page(dev: Device, page: Page, offset: number, size: number, dir: DmaDataDirection, attrs: number, isSingle: boolean): bigint {
  const ops = get_dma_ops(dev);
  if (WARN_ON_ONCE(dev, dev.dma_mask === null, 'dma_map_page_attrs: !dev->dma_mask')) return DMA_MAPPING_ERROR;
  let addr: bigint;
  if (dma_map_direct(dev, ops)) addr = direct.dma_direct_map_page(dev, page, offset, size, dir, attrs);
  else if (use_dma_iommu(dev)) addr = dma_iommu.iommu_dma_map_page(dev, page, offset, size, dir, attrs);
  // A table without map_page would oops in 6.17; later kernels return DMA_MAPPING_ERROR.
  else addr = ops?.map_page?.(dev, page, offset, size, dir, attrs) ?? DMA_MAPPING_ERROR;
  debugOf(dev).debug_dma_map_page(dev, page, offset, size, dir, addr, isSingle, attrs);
  if (addr !== DMA_MAPPING_ERROR) dma_owner_to_device(dev, addr, size);
  return addr;
}

/**
 * dma_map_page_attrs: map `size` bytes at `offset` in `page` for the device.
 * @returns the bus address, or DMA_MAPPING_ERROR (check it with dma_mapping_error): no dma_mask
 *   (a WARN), an address beyond the mask without bounce buffering, an IOMMU out of space.
 * @throws Error "kernel BUG ..." for an invalid direction.
 */
export function dma_map_page_attrs(dev: Device, page: Page, offset: number, size: number, dir: DmaDataDirection, attrs: number): bigint {
  checkMapArgs('dma_map_page_attrs', dev, page, offset, size, dir, attrs);
  return __dma_map_page(dev, page, offset, size, dir, attrs, false);
}

/** dma_map_page: dma_map_page_attrs with attrs 0. */
export function dma_map_page(dev: Device, page: Page, offset: number, size: number, dir: DmaDataDirection): bigint {
  return dma_map_page_attrs(dev, page, offset, size, dir, 0);
}

/**
 * dma_unmap_page_attrs: undo dma_map_page_attrs (or dma_map_single_attrs; 6.17 no longer tells
 * them apart). The debug checks (never mapped, size, direction, error not checked) run after.
 * @throws Error "kernel BUG ..." for an invalid direction.
 */
export function dma_unmap_page_attrs(dev: Device, addr: bigint, size: number, dir: DmaDataDirection, attrs: number): void {
  checkHandleArgs('dma_unmap_page_attrs', dev, addr, size, dir);
  checkAttrs('dma_unmap_page_attrs', attrs);
  const ops = get_dma_ops(dev);
  const owned = dma_owner_to_cpu(dev, addr, size, 'dma_unmap_page');
  if (dma_map_direct(dev, ops)) direct.dma_direct_unmap_page(dev, addr, size, dir, attrs);
  else if (use_dma_iommu(dev)) dma_iommu.iommu_dma_unmap_page(dev, addr, size, dir, attrs);
  else ops?.unmap_page?.(dev, addr, size, dir, attrs);
  debugOf(dev).debug_dma_unmap_page(dev, addr, size, dir);
  if (owned !== null) throw owned;
}

/** dma_unmap_page: dma_unmap_page_attrs with attrs 0. */
export function dma_unmap_page(dev: Device, addr: bigint, size: number, dir: DmaDataDirection): void {
  dma_unmap_page_attrs(dev, addr, size, dir, 0);
}

/**
 * dma_map_single_attrs: map a linear-map (kernel) address: virt_to_page + offset_in_page.
 * @returns the bus address, or DMA_MAPPING_ERROR; a vmalloc address is refused with a WARN (once
 *   per machine: "rejecting DMA map of vmalloc memory"), as the kernel does, since its pages are
 *   scattered; nothing is mapped or tracked then.
 * @throws RangeError for an address that is not memory of the device's machine (the kernel would
 *   map a wild page); Error "kernel BUG ..." for an invalid direction.
 */
export function dma_map_single_attrs(dev: Device, ptr: number, size: number, dir: DmaDataDirection, attrs: number): bigint {
  const fn = 'dma_map_single_attrs';
  checkLiveDevice(fn, dev);
  const m = dev.machine;
  const valid = isCpuAddrOf(fn, 'ptr', ptr, m);
  checkSize(fn, 'size', size);
  checkAttrs(fn, attrs);
  checkDirection(dir, fn);
  if (!valid) {
    // Memory of no machine: the kernel's debug_dma_map_single reports it and the kernel then maps
    // whatever virt_to_page made of it; the model cannot, so the mapping fails (DMA_MAPPING_ERROR).
    // Without DMA-API debug nobody would report it: a RangeError says what is wrong.
    const dbg = debugOf(dev);
    if (!dbg.enabled) failCpuAddr(fn, 'ptr', ptr, m);
    dbg.debug_dma_map_single(dev, ptr, size);
    return DMA_MAPPING_ERROR;
  }
  // DMA must never operate on areas that might be remapped (dev_WARN_ONCE).
  if (m.is_vmalloc_addr(ptr)) {
    WARN_ONCE(m, 'dma_map_single_attrs: vmalloc',
      `WARNING: include/linux/dma-mapping.h: ${dev.name}: rejecting DMA map of vmalloc memory [addr=0x${ptr.toString(16)}]`);
    return DMA_MAPPING_ERROR;
  }
  return __dma_map_page(dev, m.virt_to_page(ptr), ptr % PAGE_SIZE, size, dir, attrs, true);
}

/** dma_map_single: dma_map_single_attrs with attrs 0. */
export function dma_map_single(dev: Device, ptr: number, size: number, dir: DmaDataDirection): bigint {
  return dma_map_single_attrs(dev, ptr, size, dir, 0);
}

/** dma_unmap_single_attrs: dma_unmap_page_attrs. */
export function dma_unmap_single_attrs(dev: Device, addr: bigint, size: number, dir: DmaDataDirection, attrs: number): void {
  dma_unmap_page_attrs(dev, addr, size, dir, attrs);
}

/** dma_unmap_single: dma_unmap_page_attrs with attrs 0. */
export function dma_unmap_single(dev: Device, addr: bigint, size: number, dir: DmaDataDirection): void {
  dma_unmap_page_attrs(dev, addr, size, dir, 0);
}

/**
 * dma_map_resource: map MMIO (or any physical range without struct pages) for the device.
 * @returns the bus address, or DMA_MAPPING_ERROR (no dma_mask, a table without map_resource, ...).
 */
export function dma_map_resource(dev: Device, phys_addr: bigint, size: number, dir: DmaDataDirection, attrs: number): bigint {
  const fn = 'dma_map_resource';
  checkLiveDevice(fn, dev);
  checkBigint(fn, 'phys_addr', phys_addr);
  checkSize(fn, 'size', size);
  checkAttrs(fn, attrs);
  checkDirection(dir, fn);
  const ops = get_dma_ops(dev);
  if (WARN_ON_ONCE(dev, dev.dma_mask === null, 'dma_map_resource: !dev->dma_mask')) return DMA_MAPPING_ERROR;
  let addr = DMA_MAPPING_ERROR;
  if (dma_map_direct(dev, ops)) addr = direct.dma_direct_map_resource(dev, phys_addr, size, dir, attrs);
  else if (use_dma_iommu(dev)) addr = dma_iommu.iommu_dma_map_resource(dev, phys_addr, size, dir, attrs);
  else if (ops?.map_resource !== undefined) addr = ops.map_resource(dev, phys_addr, size, dir, attrs);
  debugOf(dev).debug_dma_map_phys(dev, phys_addr, size, dir, addr, attrs);
  return addr;
}

/** dma_unmap_resource: dma-direct has nothing to undo (no cache maintenance, no bounce). */
export function dma_unmap_resource(dev: Device, addr: bigint, size: number, dir: DmaDataDirection, attrs: number): void {
  checkHandleArgs('dma_unmap_resource', dev, addr, size, dir);
  checkAttrs('dma_unmap_resource', attrs);
  const ops = get_dma_ops(dev);
  if (dma_map_direct(dev, ops)) {
    // Nothing to do.
  } else if (use_dma_iommu(dev)) dma_iommu.iommu_dma_unmap_resource(dev, addr, size, dir, attrs);
  else ops?.unmap_resource?.(dev, addr, size, dir, attrs);
  debugOf(dev).debug_dma_unmap_phys(dev, addr, size, dir);
}

// ---- scatter-gather ---------------------------------------------------------------------------

/** __dma_map_sg_attrs: the count of mapped entries, or a negative errno from the allowed set. */
function __dma_map_sg_attrs(dev: Device, sg: Scatterlist | null, nents: number, dir: DmaDataDirection, attrs: number, fn: string): number {
  checkLiveDevice(fn, dev);
  checkSg(fn, sg, dev.machine, true);
  checkInt(fn, 'nents', nents, 0, 0x7fffffff);
  checkAttrs(fn, attrs);
  checkDirection(dir, fn);
  const ops = get_dma_ops(dev);
  if (WARN_ON_ONCE(dev, dev.dma_mask === null, 'dma_map_sg_attrs: !dev->dma_mask')) return 0;
  let ents: number;
  if (sg === null) ents = -EINVAL; // the kernel would dereference NULL
  else if (dma_map_direct(dev, ops)) ents = direct.dma_direct_map_sg(dev, sg, nents, dir, attrs);
  else if (use_dma_iommu(dev)) ents = dma_iommu.iommu_dma_map_sg(dev, sg, nents, dir, attrs);
  // A table without map_sg would oops; fail cleanly instead, as dma_dummy_ops does.
  else ents = ops?.map_sg?.(dev, sg, nents, dir, attrs) ?? -EINVAL;
  if (ents > 0) {
    debugOf(dev).debug_dma_map_sg(dev, sg, nents, ents, dir, attrs, { maxSegSize: dma_get_max_seg_size(dev), segBoundary: dma_get_seg_boundary(dev) });
    for_each_sg(sg, ents, (s) => dma_owner_to_device(dev, s.dma_address, s.dma_length));
  } else if (WARN_ON_ONCE(dev, ents !== -EINVAL && ents !== -ENOMEM && ents !== -EIO && ents !== -EREMOTEIO,
    `dma_map_sg_attrs: unexpected map_sg result ${ents}`)) {
    return -EIO;
  }
  return ents;
}

/**
 * dma_map_sg_attrs: map `nents` entries of a scatterlist.
 * @returns the number of mapped (possibly merged) entries, or 0 on any error.
 */
export function dma_map_sg_attrs(dev: Device, sg: Scatterlist | null, nents: number, dir: DmaDataDirection, attrs: number): number {
  const ret = __dma_map_sg_attrs(dev, sg, nents, dir, attrs, 'dma_map_sg_attrs');
  return ret < 0 ? 0 : ret;
}

/** dma_map_sg: dma_map_sg_attrs with attrs 0. */
export function dma_map_sg(dev: Device, sg: Scatterlist | null, nents: number, dir: DmaDataDirection): number {
  return dma_map_sg_attrs(dev, sg, nents, dir, 0);
}

/**
 * dma_map_sgtable: map the table's orig_nents CPU entries and set sgt.nents.
 * @returns 0; or -EINVAL (bad arguments), -ENOMEM (out of IOVA or bounce space: a retry may help),
 *   -EIO (any other failure, WARNed), -EREMOTEIO (P2P not possible), leaving nents unchanged.
 *   Note: with no dma_mask the kernel's helper returns 0 (after a WARN), so nents becomes 0.
 */
export function dma_map_sgtable(dev: Device, sgt: SgTable, dir: DmaDataDirection, attrs: number): number {
  checkSgTable('dma_map_sgtable', sgt);
  const nents = __dma_map_sg_attrs(dev, sgt.sgl, sgt.orig_nents, dir, attrs, 'dma_map_sgtable');
  if (nents < 0) return nents;
  sgt.nents = nents;
  return 0;
}

/**
 * dma_unmap_sg_attrs: undo dma_map_sg_attrs; `nents` is what was passed to map, not what it
 * returned. The debug check runs first, as in the kernel; the unmap happens even if it throws.
 */
export function dma_unmap_sg_attrs(dev: Device, sg: Scatterlist | null, nents: number, dir: DmaDataDirection, attrs: number): void {
  const fn = 'dma_unmap_sg_attrs';
  checkDevice(fn, dev);
  checkSg(fn, sg, dev.machine, true);
  checkInt(fn, 'nents', nents, 0, 0x7fffffff);
  checkAttrs(fn, attrs);
  checkDirection(dir, fn);
  const ops = get_dma_ops(dev);
  let owned: Error | null = null;
  for_each_sg(sg, nents, (s) => {
    const e = s.dma_length > 0 ? dma_owner_to_cpu(dev, s.dma_address, s.dma_length, 'dma_unmap_sg') : null;
    owned ??= e;
  });
  try {
    debugOf(dev).debug_dma_unmap_sg(dev, sg, nents, dir);
    if (owned !== null) throw owned;
  } finally {
    if (sg !== null) {
      if (dma_map_direct(dev, ops)) direct.dma_direct_unmap_sg(dev, sg, nents, dir, attrs);
      else if (use_dma_iommu(dev)) dma_iommu.iommu_dma_unmap_sg(dev, sg, nents, dir, attrs);
      else ops?.unmap_sg?.(dev, sg, nents, dir, attrs);
    }
  }
}

/** dma_unmap_sg: dma_unmap_sg_attrs with attrs 0. */
export function dma_unmap_sg(dev: Device, sg: Scatterlist | null, nents: number, dir: DmaDataDirection): void {
  dma_unmap_sg_attrs(dev, sg, nents, dir, 0);
}

/** dma_unmap_sgtable: unmap the table's orig_nents entries. */
export function dma_unmap_sgtable(dev: Device, sgt: SgTable, dir: DmaDataDirection, attrs: number): void {
  checkSgTable('dma_unmap_sgtable', sgt);
  dma_unmap_sg_attrs(dev, sgt.sgl, sgt.orig_nents, dir, attrs);
}

// ---- error check ------------------------------------------------------------------------------

/**
 * dma_mapping_error: tells DMA-API debug the handle was checked.
 * @returns -ENOMEM for DMA_MAPPING_ERROR, else 0.
 */
export function dma_mapping_error(dev: Device, dma_addr: bigint): number {
  checkDevice('dma_mapping_error', dev);
  checkBigint('dma_mapping_error', 'dma_addr', dma_addr);
  debugOf(dev).debug_dma_mapping_error(dev, dma_addr);
  return dma_addr === DMA_MAPPING_ERROR ? -ENOMEM : 0;
}

// ---- allocations ------------------------------------------------------------------------------

/** The checks of dma_alloc_pages and dma_alloc_noncoherent: all before anything is allocated. */
function checkAllocPagesArgs(fn: string, dev: Device, size: number, dma_handle: Box<bigint>, dir: number, gfp: gfp_t): void {
  if (isLiveDevice(dev) && isSize(size) && isBox(dma_handle) && isGfp(gfp) && (dir === 0 || dir === 1 || dir === 2)) return;
  checkLiveDevice(fn, dev);
  checkSize(fn, 'size', size);
  checkBox(fn, 'dma_handle', dma_handle);
  checkGfp(fn, gfp);
  checkDirection(dir, fn);
}

/** __dma_alloc_pages: dma_alloc_pages without the debug hook (dma_alloc_noncontiguous uses it too). */
export function __dma_alloc_pages(dev: Device, size: number, dma_handle: Box<bigint>, dir: DmaDataDirection, gfp: gfp_t): Page | null {
  const ops = get_dma_ops(dev);
  if (WARN_ON_ONCE(dev, dev.coherent_dma_mask === 0n, 'dma_alloc_pages: !dev->coherent_dma_mask')) return null;
  if (WARN_ON_ONCE(dev, (gfp & (__GFP_DMA | __GFP_DMA32 | __GFP_HIGHMEM)) !== 0, 'dma_alloc_pages: zone modifier in gfp')) return null;
  if (WARN_ON_ONCE(dev, (gfp & __GFP_COMP) !== 0, 'dma_alloc_pages: __GFP_COMP')) return null;
  size = PAGE_ALIGN(size);
  if (dma_alloc_direct(dev, ops)) return direct.dma_direct_alloc_pages(dev, size, dma_handle, dir, gfp);
  if (use_dma_iommu(dev)) return dma_common_alloc_pages(dev, size, dma_handle, dir, gfp);
  if (ops?.alloc_pages_op === undefined) return null;
  return ops.alloc_pages_op(dev, size, dma_handle, dir, gfp);
}

/**
 * dma_alloc_pages: PAGE_ALIGN(size) bytes of pages mapped for the device (non-coherent DMA
 * memory: sync it). Never from the device's coherent pool.
 * @returns the first page (dma_handle.value set), or null: no coherent_dma_mask, gfp with a zone
 *   modifier or __GFP_COMP (each WARNs once), no memory, or a table without alloc_pages_op.
 */
export function dma_alloc_pages(dev: Device, size: number, dma_handle: Box<bigint>, dir: DmaDataDirection, gfp: gfp_t): Page | null {
  checkAllocPagesArgs('dma_alloc_pages', dev, size, dma_handle, dir, gfp);
  const page = __dma_alloc_pages(dev, size, dma_handle, dir, gfp);
  if (page === null) return null;
  // Non-coherent memory is cached: the CPU's writes from here on stay in its cache until a sync.
  if (!dev.dma_coherent) dma_cache(dev.machine).hold(Number(page.phys), PAGE_ALIGN(size));
  debugOf(dev).debug_dma_alloc_pages(dev, page, size, dir, dma_handle.value);
  return page;
}

function checkFreePagesArgs(fn: string, dev: Device, size: number, page: Page, dma_handle: bigint, dir: number): void {
  checkDevice(fn, dev);
  checkSize(fn, 'size', size);
  checkPage(fn, 'page', page, dev.machine);
  checkBigint(fn, 'dma_handle', dma_handle);
  checkDirection(dir, fn);
}

/** dma_free_pages: free what dma_alloc_pages returned (same size, handle and direction). */
export function dma_free_pages(dev: Device, size: number, page: Page, dma_handle: bigint, dir: DmaDataDirection): void {
  const fn = 'dma_free_pages';
  if (!(isDevice(dev) && isSize(size) && isPageOf(page, dev.machine) && typeof dma_handle === 'bigint' && (dir === 0 || dir === 1 || dir === 2))) checkFreePagesArgs(fn, dev, size, page, dma_handle, dir);
  const owned = dma_owner_to_cpu(dev, dma_handle, size, 'dma_free_pages');
  try {
    debugOf(dev).debug_dma_free_pages(dev, page, size, dir, dma_handle);
    if (owned !== null) throw owned;
  } finally {
    __dma_free_pages(dev, size, page, dma_handle, dir);
  }
}

/** __dma_free_pages: dma_free_pages without the checks and the debug hook. */
export function __dma_free_pages(dev: Device, size: number, page: Page, dma_handle: bigint, dir: DmaDataDirection): void {
  const ops = get_dma_ops(dev);
  size = PAGE_ALIGN(size);
  if (dma_alloc_direct(dev, ops)) direct.dma_direct_free_pages(dev, size, page, dma_handle, dir);
  else if (use_dma_iommu(dev)) dma_common_free_pages(dev, size, page, dma_handle, dir);
  else ops?.free_pages?.(dev, size, page, dma_handle, dir);
}

/**
 * dma_mmap_pages: map pages from dma_alloc_pages into a user VMA. No dma_pgprot (the caller's
 * vm_page_prot stays), no device pool; `dev` is unused.
 * @returns 0; -ENXIO when vm_pgoff / the VMA length fall outside the pages; else remap_pfn_range's result.
 */
export function dma_mmap_pages(dev: Device, vma: VmArea, size: number, page: Page): number {
  const fn = 'dma_mmap_pages';
  checkDevice(fn, dev);
  checkVma(fn, vma, dev.machine);
  checkSize(fn, 'size', size);
  checkPage(fn, 'page', page, dev.machine);
  const count = PAGE_ALIGN(size) / PAGE_SIZE;
  if (!dma_mmap_range_ok(vma.vm_pgoff, count, vma_pages(vma))) return -ENXIO;
  return remap_pfn_range(vma, vma.vm_start, page.pfn + vma.vm_pgoff, vma_pages(vma) * PAGE_SIZE, vma.vm_page_prot);
}

/** dma_alloc_noncoherent: page_address(dma_alloc_pages(...)), or null. */
export function dma_alloc_noncoherent(dev: Device, size: number, dma_handle: Box<bigint>, dir: DmaDataDirection, gfp: gfp_t): number | null {
  checkAllocPagesArgs('dma_alloc_noncoherent', dev, size, dma_handle, dir, gfp);
  const page = dma_alloc_pages(dev, size, dma_handle, dir, gfp);
  return page === null ? null : page_address(page);
}

/** dma_free_noncoherent: dma_free_pages(virt_to_page(vaddr)). */
export function dma_free_noncoherent(dev: Device, size: number, vaddr: number, dma_handle: bigint, dir: DmaDataDirection): void {
  checkDevice('dma_free_noncoherent', dev);
  checkCpuAddr('dma_free_noncoherent', 'vaddr', vaddr, dev.machine);
  dma_free_pages(dev, size, dev.machine.virt_to_page(vaddr), dma_handle, dir);
}

/**
 * dma_alloc_attrs: coherent DMA memory. The device's coherent pool goes first and decides alone
 * (a full pool gives null, with no fallback); then dma-direct, the IOMMU layer or ops.alloc.
 * @returns the CPU address (dma_handle.value set), or null: __GFP_COMP (WARN), pool exhausted,
 *   no memory, a table without alloc, or (with ops) no coherent_dma_mask.
 */
export function dma_alloc_attrs(dev: Device, size: number, dma_handle: Box<bigint>, gfp: gfp_t, attrs: number): number | null {
  const fn = 'dma_alloc_attrs';
  checkLiveDevice(fn, dev);
  checkSize(fn, 'size', size);
  checkBox(fn, 'dma_handle', dma_handle);
  checkGfp(fn, gfp);
  checkAttrs(fn, attrs);
  const ops = get_dma_ops(dev);
  WARN_ON_ONCE(dev, dev.coherent_dma_mask === 0n, 'dma_alloc_attrs: !dev->coherent_dma_mask');
  if (WARN_ON_ONCE(dev, (gfp & __GFP_COMP) !== 0, 'dma_alloc_attrs: __GFP_COMP')) return null;
  const cpu: Box<number | null> = { value: null };
  if (dma_alloc_from_dev_coherent(dev, size, dma_handle, cpu)) return cpu.value;

  // Let the implementation pick the zone.
  gfp &= ~(__GFP_DMA | __GFP_DMA32 | __GFP_HIGHMEM);
  let cpu_addr: number | null;
  if (dma_alloc_direct(dev, ops)) cpu_addr = direct.dma_direct_alloc(dev, size, dma_handle, gfp, attrs);
  else if (use_dma_iommu(dev)) cpu_addr = dma_iommu.iommu_dma_alloc(dev, size, dma_handle, gfp, attrs);
  // A zero coherent_dma_mask was WARNed above; the ops still get the call, as in the kernel.
  else if (ops?.alloc !== undefined) cpu_addr = ops.alloc(dev, size, dma_handle, gfp, attrs);
  else return null;
  debugOf(dev).debug_dma_alloc_coherent(dev, size, dma_handle.value, cpu_addr, cpu_addr === null ? null : cpuPhys(cpu_addr), attrs);
  return cpu_addr;
}

/** dma_alloc_coherent: dma_alloc_attrs, with DMA_ATTR_NO_WARN when gfp has __GFP_NOWARN. */
export function dma_alloc_coherent(dev: Device, size: number, dma_handle: Box<bigint>, gfp: gfp_t): number | null {
  checkGfp('dma_alloc_coherent', gfp);
  return dma_alloc_attrs(dev, size, dma_handle, gfp, gfp & __GFP_NOWARN ? DMA_ATTR_NO_WARN : 0);
}

/** dma_alloc_wc: coherent memory the CPU maps write-combined (DMA_ATTR_WRITE_COMBINE). */
export function dma_alloc_wc(dev: Device, size: number, dma_addr: Box<bigint>, gfp: gfp_t): number | null {
  checkGfp('dma_alloc_wc', gfp);
  return dma_alloc_attrs(dev, size, dma_addr, gfp, DMA_ATTR_WRITE_COMBINE | (gfp & __GFP_NOWARN ? DMA_ATTR_NO_WARN : 0));
}

/**
 * The physical address behind a coherent buffer's CPU address, as debug_dma_alloc_coherent takes its
 * pfn and offset (vmalloc_to_pfn for a remapped buffer); null for memory that is not the machine's.
 */
function cpuPhys(cpu: number): bigint | null {
  try {
    if (!is_vmalloc_addr(cpu)) return virt_to_phys(cpu);
    const page = vmalloc_to_page(cpu);
    return page === null ? null : page_to_phys(page) + BigInt(cpu % PAGE_SIZE);
  } catch {
    return null;
  }
}

/**
 * dma_free_attrs: free coherent memory. Pool memory goes back to the pool (2^get_order(size)
 * pages) and nothing else runs; a null cpu_addr is a no-op.
 */
export function dma_free_attrs(dev: Device, size: number, cpu_addr: number | null, dma_handle: bigint, attrs: number): void {
  const fn = 'dma_free_attrs';
  checkDevice(fn, dev);
  checkSize(fn, 'size', size);
  if (cpu_addr !== null) checkCpuAddr(fn, 'cpu_addr', cpu_addr, dev.machine);
  checkBigint(fn, 'dma_handle', dma_handle);
  checkAttrs(fn, attrs);
  const ops = get_dma_ops(dev);
  if (dma_release_from_dev_coherent(dev, get_order(size), cpu_addr)) return;
  if (cpu_addr === null) return;
  try {
    debugOf(dev).debug_dma_free_coherent(dev, size, cpu_addr, dma_handle);
  } finally {
    if (dma_alloc_direct(dev, ops)) direct.dma_direct_free(dev, size, cpu_addr, dma_handle, attrs);
    else if (use_dma_iommu(dev)) dma_iommu.iommu_dma_free(dev, size, cpu_addr, dma_handle, attrs);
    else ops?.free?.(dev, size, cpu_addr, dma_handle, attrs);
  }
}

/** dma_free_wc: dma_free_attrs with DMA_ATTR_WRITE_COMBINE. */
export function dma_free_wc(dev: Device, size: number, cpu_addr: number | null, dma_addr: bigint): void {
  dma_free_attrs(dev, size, cpu_addr, dma_addr, DMA_ATTR_WRITE_COMBINE);
}

/** dma_free_coherent: dma_free_attrs with attrs 0. */
export function dma_free_coherent(dev: Device, size: number, cpu_addr: number | null, dma_handle: bigint): void {
  dma_free_attrs(dev, size, cpu_addr, dma_handle, 0);
}

// ---- sg tables and user mappings of coherent memory -------------------------------------------

/** The checks shared by the get_sgtable and mmap calls on coherent memory. */
function checkCoherentArgs(fn: string, dev: Device, cpu_addr: number, dma_addr: bigint, size: number, attrs: number): void {
  checkDevice(fn, dev);
  checkCpuAddr(fn, 'cpu_addr', cpu_addr, dev.machine);
  checkBigint(fn, 'dma_addr', dma_addr);
  checkSize(fn, 'size', size);
  checkAttrs(fn, attrs);
}

/**
 * dma_get_sgtable_attrs: describe coherent memory as an sg table.
 * @returns 0; -ENXIO for a table without get_sgtable; else the implementation's errno (-ENOMEM ...).
 */
export function dma_get_sgtable_attrs(dev: Device, sgt: SgTable, cpu_addr: number, dma_addr: bigint, size: number, attrs: number): number {
  checkCoherentArgs('dma_get_sgtable_attrs', dev, cpu_addr, dma_addr, size, attrs);
  checkSgTable('dma_get_sgtable_attrs', sgt);
  const ops = get_dma_ops(dev);
  if (dma_alloc_direct(dev, ops)) return direct.dma_direct_get_sgtable(dev, sgt, cpu_addr, dma_addr, size, attrs);
  if (use_dma_iommu(dev)) return dma_iommu.iommu_dma_get_sgtable(dev, sgt, cpu_addr, dma_addr, size, attrs);
  if (ops?.get_sgtable === undefined) return -ENXIO;
  return ops.get_sgtable(dev, sgt, cpu_addr, dma_addr, size, attrs);
}

/** dma_get_sgtable: dma_get_sgtable_attrs with attrs 0. */
export function dma_get_sgtable(dev: Device, sgt: SgTable, cpu_addr: number, dma_addr: bigint, size: number): number {
  return dma_get_sgtable_attrs(dev, sgt, cpu_addr, dma_addr, size, 0);
}

/**
 * dma_mmap_attrs: map coherent memory into a user VMA.
 * @returns 0; -ENXIO for a table without mmap or a range outside the buffer; else the
 *   implementation's errno.
 */
export function dma_mmap_attrs(dev: Device, vma: VmArea, cpu_addr: number, dma_addr: bigint, size: number, attrs: number): number {
  checkCoherentArgs('dma_mmap_attrs', dev, cpu_addr, dma_addr, size, attrs);
  checkVma('dma_mmap_attrs', vma, dev.machine);
  const ops = get_dma_ops(dev);
  if (dma_alloc_direct(dev, ops)) return direct.dma_direct_mmap(dev, vma, cpu_addr, dma_addr, size, attrs);
  if (use_dma_iommu(dev)) return dma_iommu.iommu_dma_mmap(dev, vma, cpu_addr, dma_addr, size, attrs);
  if (ops?.mmap === undefined) return -ENXIO;
  return ops.mmap(dev, vma, cpu_addr, dma_addr, size, attrs);
}

/** dma_mmap_coherent: dma_mmap_attrs with attrs 0. */
export function dma_mmap_coherent(dev: Device, vma: VmArea, cpu_addr: number, dma_addr: bigint, size: number): number {
  return dma_mmap_attrs(dev, vma, cpu_addr, dma_addr, size, 0);
}

/** dma_mmap_wc: dma_mmap_attrs with DMA_ATTR_WRITE_COMBINE. */
export function dma_mmap_wc(dev: Device, vma: VmArea, cpu_addr: number, dma_addr: bigint, size: number): number {
  return dma_mmap_attrs(dev, vma, cpu_addr, dma_addr, size, DMA_ATTR_WRITE_COMBINE);
}

// ---- the rest of mapping.c ------------------------------------------------------------------

export * from './sync';
export * from './mask';
