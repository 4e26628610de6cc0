// The noncontiguous DMA API (kernel/dma/mapping.c): dma_alloc_noncontiguous hands out an sg_table
// of pages that need not be physically contiguous but are one DMA segment (an IOVA range through
// the IOMMU; one contiguous allocation, alloc_single_sgt, without one), plus vmap, mmap and free.

import { page_address } from '../mm/kernel';
import { PAGE_ALIGN, __GFP_COMP, type gfp_t } from '../mm/gfp';
import type { VmArea } from '../mm/vma';
import { dma_cache } from './cache';
import { DMA_ATTR_ALLOC_SINGLE_PAGES, type DmaDataDirection } from './constants';
import { debugOf, use_dma_iommu, type Device } from './device';
import * as dma_iommu from './dma_iommu';
import { __dma_alloc_pages, __dma_free_pages, dma_mmap_pages } from './mapping';
import { WARN_ON_ONCE } from './route';
import { SgTable, for_each_sg, sg_alloc_table, sg_free_table, sg_phys, sg_set_page } from './scatterlist';
import { checkAttrs, checkDevice, checkDirection, checkLiveDevice, checkSgTable, checkVma } from './validate';
import { checkGfp, checkInt, checkSize } from '../mm/validate';

/** The tables dma_alloc_noncontiguous handed out and not yet freed: their device and size. */
const live = new WeakMap<SgTable, { readonly dev: Device; readonly size: number }>();

/**
 * A table of this device from dma_alloc_noncontiguous, still allocated, used with at most the
 * size it was allocated with (PAGE_ALIGNed): the kernel would walk freed or foreign memory.
 */
function checkNoncontigTable(fn: string, dev: Device, sgt: unknown, size: number): asserts sgt is SgTable {
  checkSgTable(fn, sgt);
  const info = live.get(sgt);
  if (info === undefined) throw new TypeError(`${fn}: sgt is not a live table from dma_alloc_noncontiguous (never allocated there, or already freed)`);
  if (info.dev !== dev) throw new TypeError(`${fn}: sgt was allocated for device ${info.dev.name}, not ${dev.name}`);
  if (PAGE_ALIGN(size) > PAGE_ALIGN(info.size)) {
    throw new RangeError(`${fn}: size ${size} exceeds the ${info.size} bytes the table was allocated with`);
  }
}

/**
 * alloc_single_sgt: without an IOMMU the buffer is one dma_alloc_pages allocation (physically
 * contiguous) in a one-entry table whose DMA length is the page-aligned size.
 */
function alloc_single_sgt(dev: Device, size: number, dir: DmaDataDirection, gfp: gfp_t): SgTable | null {
  const sgt = new SgTable();
  if (sg_alloc_table(sgt, 1, gfp) !== 0 || sgt.sgl === null) return null;
  const handle = { value: 0n };
  const page = __dma_alloc_pages(dev, size, handle, dir, gfp);
  if (page === null) {
    sg_free_table(sgt);
    return null;
  }
  sgt.sgl.dma_address = handle.value;
  sg_set_page(sgt.sgl, page, PAGE_ALIGN(size), 0);
  sgt.sgl.dma_length = sgt.sgl.length;
  return sgt;
}

/**
 * dma_alloc_noncontiguous: `size` bytes for the device as an sg_table mapped as ONE DMA segment
 * (sgt.nents is 1; sg_dma_address(sgt.sgl) and sg_dma_len cover the buffer), its CPU entries one per
 * physically contiguous run. Through the IOMMU the pages come high order first (order 0 only with
 * DMA_ATTR_ALLOC_SINGLE_PAGES) under one IOVA range; without one, a single dma_alloc_pages.
 * @returns the table, or null: attrs other than DMA_ATTR_ALLOC_SINGLE_PAGES or gfp with __GFP_COMP
 *   (each a WARN once), no memory or IOVA space (nothing stays allocated).
 * @throws TypeError / RangeError for bad arguments, before anything is allocated.
 */
export function dma_alloc_noncontiguous(dev: Device, size: number, dir: DmaDataDirection, gfp: gfp_t, attrs: number): SgTable | null {
  const fn = 'dma_alloc_noncontiguous';
  checkLiveDevice(fn, dev);
  checkSize(fn, 'size', size);
  checkDirection(dir, fn);
  checkGfp(fn, gfp);
  checkAttrs(fn, attrs);
  if (WARN_ON_ONCE(dev, (attrs & ~DMA_ATTR_ALLOC_SINGLE_PAGES) !== 0, 'dma_alloc_noncontiguous: attrs & ~DMA_ATTR_ALLOC_SINGLE_PAGES')) return null;
  if (WARN_ON_ONCE(dev, (gfp & __GFP_COMP) !== 0, 'dma_alloc_noncontiguous: __GFP_COMP')) return null;
  const sgt = use_dma_iommu(dev)
    ? dma_iommu.iommu_dma_alloc_noncontiguous(dev, size, dir, gfp, attrs)
    : alloc_single_sgt(dev, size, dir, gfp);
  if (sgt !== null) {
    if (!dev.dma_coherent) for_each_sg(sgt.sgl, sgt.orig_nents, (sg) => { dma_cache(dev.machine).hold(Number(sg_phys(sg)), sg.length); });
    sgt.nents = 1;
    live.set(sgt, Object.freeze({ dev, size }));
    debugOf(dev).debug_dma_map_sg(dev, sgt.sgl, sgt.orig_nents, 1, dir);
  }
  return sgt;
}

/**
 * dma_free_noncontiguous: free what dma_alloc_noncontiguous returned (same device, size and
 * direction): the IOVA range is unmapped first, then the pages and the table go. The debug check
 * runs first, as in the kernel; the free happens even if it throws.
 */
export function dma_free_noncontiguous(dev: Device, size: number, sgt: SgTable, dir: DmaDataDirection): void {
  const fn = 'dma_free_noncontiguous';
  checkDevice(fn, dev);
  checkSize(fn, 'size', size);
  checkNoncontigTable(fn, dev, sgt, size);
  checkDirection(dir, fn);
  live.delete(sgt);
  try {
    debugOf(dev).debug_dma_unmap_sg(dev, sgt.sgl, sgt.orig_nents, dir);
  } finally {
    if (use_dma_iommu(dev)) {
      dma_iommu.iommu_dma_free_noncontiguous(dev, size, sgt, dir);
    } else if (sgt.sgl !== null && sgt.sgl.page_link !== null) {
      // free_single_sgt
      __dma_free_pages(dev, size, sgt.sgl.page_link, sgt.sgl.dma_address, dir);
      sg_free_table(sgt);
    }
  }
}

/**
 * dma_vmap_noncontiguous: a contiguous kernel address for the buffer: a vmap of its pages through
 * the IOMMU, the linear address of its (contiguous) pages without one.
 * @returns the address, or null when the vmalloc space is full.
 */
export function dma_vmap_noncontiguous(dev: Device, size: number, sgt: SgTable): number | null {
  const fn = 'dma_vmap_noncontiguous';
  checkLiveDevice(fn, dev);
  checkSize(fn, 'size', size);
  checkNoncontigTable(fn, dev, sgt, size);
  if (use_dma_iommu(dev)) return dma_iommu.iommu_dma_vmap_noncontiguous(dev, size, sgt);
  return sgt.sgl?.page_link ? page_address(sgt.sgl.page_link) : null;
}

/** dma_vunmap_noncontiguous: undo dma_vmap_noncontiguous (nothing to do without an IOMMU). */
export function dma_vunmap_noncontiguous(dev: Device, vaddr: number): void {
  const fn = 'dma_vunmap_noncontiguous';
  checkDevice(fn, dev);
  checkInt(fn, 'vaddr', vaddr, 0);
  if (use_dma_iommu(dev)) dma_iommu.iommu_dma_vunmap_noncontiguous(dev, vaddr);
}

/**
 * dma_mmap_noncontiguous: map the buffer into a user VMA from page vm_pgoff: page by page through
 * the IOMMU, dma_mmap_pages without one. The caller's vm_page_prot is kept (no dma_pgprot).
 * @returns 0; -ENXIO when vm_pgoff / the VMA length fall outside the buffer; else the remap's errno.
 */
export function dma_mmap_noncontiguous(dev: Device, vma: VmArea, size: number, sgt: SgTable): number {
  const fn = 'dma_mmap_noncontiguous';
  checkDevice(fn, dev);
  checkVma(fn, vma, dev.machine);
  checkSize(fn, 'size', size);
  checkNoncontigTable(fn, dev, sgt, size);
  if (use_dma_iommu(dev)) return dma_iommu.iommu_dma_mmap_noncontiguous(dev, vma, size, sgt);
  return dma_mmap_pages(dev, vma, size, sgt.sgl!.page_link!);
}
