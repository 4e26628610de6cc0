// Generic helpers for dma_map_ops tables: kernel/dma/ops_helpers.c (the five dma_common_*
// functions), a ready-made table built from them, and kernel/dma/dummy.c's always-failing table.

import { GFP_KERNEL, PAGE_ALIGN, PAGE_SIZE, get_order, type gfp_t } from '../mm/gfp';
import { is_vmalloc_addr, page_address, page_to_pfn, virt_to_page, vmalloc_to_page } from '../mm/kernel';
import type { Page } from '../mm/page';
import { remap_pfn_range, vma_pages, type VmArea } from '../mm/vma';
import { WARN_ONCE } from './bug';
import { dma_mmap_from_dev_coherent, dma_mmap_range_ok } from './coherent';
import {
  DMA_ATTR_SKIP_CPU_SYNC, DMA_MAPPING_ERROR, EINVAL, ENXIO, type DmaDataDirection,
} from './constants';
import { dma_alloc_contiguous, dma_free_contiguous } from './contiguous';
import { dev_to_node, get_dma_ops, use_dma_iommu, type Device } from './device';
import { dma_direct_map_page, dma_direct_map_sg, dma_direct_unmap_page, dma_direct_unmap_sg } from './direct';
import { iommu_dma_map_page, iommu_dma_unmap_page } from './dma_iommu';
import { dma_pgprot } from './mapping';
import type { Box, DmaMapOps } from './ops';
import { sg_alloc_table, sg_set_page, type Scatterlist, type SgTable } from './scatterlist';
import { checkAttrs, checkCpuAddr, checkDevice, checkDirection, checkLiveDevice, checkPage, checkSgTable, checkVma } from './validate';
import { checkBigint, checkBox, checkGfp, checkInt, checkSize } from '../mm/validate';

/**
 * dma_common_vaddr_to_page: vmalloc_to_page for a vmalloc address (null where nothing is mapped,
 * unchecked as in the kernel), else virt_to_page. The machine is found from the address.
 */
export function dma_common_vaddr_to_page(cpu_addr: number): Page | null {
  checkInt('dma_common_vaddr_to_page', 'cpu_addr', cpu_addr, 0);
  if (is_vmalloc_addr(cpu_addr)) return vmalloc_to_page(cpu_addr);
  return virt_to_page(cpu_addr);
}

/**
 * dma_common_get_sgtable: a one-entry table for a buffer assumed physically contiguous: the page of
 * cpu_addr, length PAGE_ALIGN(size) (an unsigned int: 4 GiB and more are truncated), offset 0,
 * DMA fields 0. `dev`, `dma_addr` and `attrs` are not used and the device pool is not consulted.
 * @returns 0, or -ENOMEM when the table cannot be allocated (sgt is left empty; a retry may help).
 */
export function dma_common_get_sgtable(
  dev: Device, sgt: SgTable, cpu_addr: number, dma_addr: bigint, size: number, attrs: number,
): number {
  const fn = 'dma_common_get_sgtable';
  checkDevice(fn, dev);
  checkSgTable(fn, sgt);
  checkCpuAddr(fn, 'cpu_addr', cpu_addr, dev.machine);
  checkBigint(fn, 'dma_addr', dma_addr);
  checkSize(fn, 'size', size);
  checkAttrs(fn, attrs);
  const page = dma_common_vaddr_to_page(cpu_addr);
  const ret = sg_alloc_table(sgt, 1, GFP_KERNEL);
  if (ret === 0) sg_set_page(sgt.sgl as Scatterlist, page, PAGE_ALIGN(size), 0);
  return ret;
}

/**
 * dma_common_mmap: map a buffer into a user VMA. vm_page_prot becomes dma_pgprot(...) first and
 * unconditionally. The device pool, when it claims cpu_addr..cpu_addr+size, decides alone. Else
 * the whole VMA maps pages page_to_pfn(page of cpu_addr) + vm_pgoff onwards: the buffer is assumed
 * physically contiguous, even for a vmalloc address.
 *
 * vm_pgoff is a number; values past 2^53 (ULONG_MAX and the like) are compared exactly enough
 * with the page count (at most 2^41) to give -ENXIO, never a wrapped offset.
 * @returns 0; -ENXIO when vm_pgoff >= count or the VMA is longer than count - vm_pgoff pages
 *   (count = PAGE_ALIGN(size) / PAGE_SIZE, so size 0 always fails); -EINVAL (and a WARN) for an
 *   unmapped vmalloc address, where the kernel would compute a wild PFN; else remap_pfn_range's
 *   result (-EINVAL for a private writable VMA it cannot cover, ...). No retry helps.
 */
export function dma_common_mmap(
  dev: Device, vma: VmArea, cpu_addr: number, dma_addr: bigint, size: number, attrs: number,
): number {
  const fn = 'dma_common_mmap';
  checkDevice(fn, dev);
  checkVma(fn, vma, dev.machine);
  checkCpuAddr(fn, 'cpu_addr', cpu_addr, dev.machine);
  checkBigint(fn, 'dma_addr', dma_addr);
  checkSize(fn, 'size', size);
  checkAttrs(fn, attrs);
  const user_count = vma_pages(vma);
  const count = PAGE_ALIGN(size) / PAGE_SIZE;
  const off = vma.vm_pgoff;
  const page = dma_common_vaddr_to_page(cpu_addr);
  const ret: Box<number> = { value: -ENXIO };

  vma.vm_page_prot = dma_pgprot(dev, vma.vm_page_prot, attrs);
  if (dma_mmap_from_dev_coherent(dev, vma, cpu_addr, size, ret)) return ret.value;
  if (!dma_mmap_range_ok(off, count, user_count)) return -ENXIO;
  if (page === null) {
    dev.machine.warn(`dma_common_mmap: nothing is mapped at vmalloc address 0x${cpu_addr.toString(16)}`);
    return -EINVAL;
  }
  return remap_pfn_range(vma, vma.vm_start, page_to_pfn(page) + vma.vm_pgoff, user_count * PAGE_SIZE, vma.vm_page_prot);
}

/**
 * dma_common_alloc_pages: pages for dma_alloc_pages on IOMMU devices and on tables that install
 * it. CMA first (dma_alloc_contiguous), else the buddy allocator on the device's node; the pages
 * are mapped for the device (iommu_dma_map_page, else ops.map_page; a table without map_page
 * gives DMA_MAPPING_ERROR, as newer kernels do) with DMA_ATTR_SKIP_CPU_SYNC, and then exactly
 * `size` bytes are zeroed.
 * @returns the first page with dma_handle.value set; null when no memory is left (dma_handle
 *   untouched) or the mapping failed (pages given back, dma_handle.value = DMA_MAPPING_ERROR).
 */
export function dma_common_alloc_pages(
  dev: Device, size: number, dma_handle: Box<bigint>, dir: DmaDataDirection, gfp: gfp_t,
): Page | null {
  const fn = 'dma_common_alloc_pages';
  checkLiveDevice(fn, dev);
  checkSize(fn, 'size', size);
  checkBox(fn, 'dma_handle', dma_handle);
  checkGfp(fn, gfp);
  checkDirection(dir, fn);
  const ops = get_dma_ops(dev);
  let page = dma_alloc_contiguous(dev, size, gfp);
  if (page === null) page = dev.machine.alloc_pages_node(dev_to_node(dev), gfp, get_order(size));
  if (page === null) return null;

  if (use_dma_iommu(dev)) {
    dma_handle.value = iommu_dma_map_page(dev, page, 0, size, dir, DMA_ATTR_SKIP_CPU_SYNC);
  } else if (ops?.map_page !== undefined) {
    dma_handle.value = ops.map_page(dev, page, 0, size, dir, DMA_ATTR_SKIP_CPU_SYNC);
  } else {
    dma_handle.value = DMA_MAPPING_ERROR;
  }
  if (dma_handle.value === DMA_MAPPING_ERROR) {
    dma_free_contiguous(dev, page, size);
    return null;
  }
  // Zeroed after mapping, and only `size` bytes (not the whole 2^order block).
  dev.machine.memset(page_address(page), 0, size);
  return page;
}

/**
 * dma_common_free_pages: undo dma_common_alloc_pages. The mapping goes first (iommu_dma_unmap_page,
 * else ops.unmap_page if the table has one), with DMA_ATTR_SKIP_CPU_SYNC, then the pages.
 */
export function dma_common_free_pages(
  dev: Device, size: number, page: Page, dma_handle: bigint, dir: DmaDataDirection,
): void {
  const fn = 'dma_common_free_pages';
  checkDevice(fn, dev);
  checkSize(fn, 'size', size);
  checkPage(fn, 'page', page, dev.machine);
  checkBigint(fn, 'dma_handle', dma_handle);
  checkDirection(dir, fn);
  const ops = get_dma_ops(dev);
  if (use_dma_iommu(dev)) {
    iommu_dma_unmap_page(dev, dma_handle, size, dir, DMA_ATTR_SKIP_CPU_SYNC);
  } else if (ops?.unmap_page !== undefined) {
    ops.unmap_page(dev, dma_handle, size, dir, DMA_ATTR_SKIP_CPU_SYNC);
  }
  dma_free_contiguous(dev, page, size);
}

/**
 * A table built like drivers/xen/swiotlb-xen.c's and the PS3 bus's: the dma_common_* helpers for
 * page allocation, mmap and get_sgtable, and dma-direct translation (phys + bus offset, checked
 * against the mask) for map/unmap. Install it with `ops: dma_common_ops` on a device.
 * The direct functions are called through closures so that import order never matters.
 */
export const dma_common_ops: DmaMapOps = Object.freeze({
  name: 'dma_common_ops',
  alloc_pages_op: dma_common_alloc_pages,
  free_pages: dma_common_free_pages,
  mmap: dma_common_mmap,
  get_sgtable: dma_common_get_sgtable,
  map_page: (dev: Device, page: Page, offset: number, size: number, dir: DmaDataDirection, attrs: number): bigint =>
    dma_direct_map_page(dev, page, offset, size, dir, attrs),
  unmap_page: (dev: Device, addr: bigint, size: number, dir: DmaDataDirection, attrs: number): void =>
    dma_direct_unmap_page(dev, addr, size, dir, attrs),
  map_sg: (dev: Device, sg: Scatterlist, nents: number, dir: DmaDataDirection, attrs: number): number =>
    dma_direct_map_sg(dev, sg, nents, dir, attrs),
  unmap_sg: (dev: Device, sg: Scatterlist, nents: number, dir: DmaDataDirection, attrs: number): void =>
    dma_direct_unmap_sg(dev, sg, nents, dir, attrs),
});

/** WARN_ON_ONCE: an unmap of what dma_dummy_ops could never have mapped. */
function dummyUnmapWarn(dev: Device, what: string): void {
  WARN_ONCE(dev.machine, what, `WARNING: kernel/dma/dummy.c: ${what}: dma_dummy_ops cannot map, so nothing can be unmapped`);
}

/**
 * kernel/dma/dummy.c: for devices that must not do DMA. Every operation fails cleanly: mmap
 * -ENXIO, map_page DMA_MAPPING_ERROR, map_sg -EINVAL, dma_supported 0; an unmap (of what could
 * never have been mapped) WARNs once.
 */
export const dma_dummy_ops: DmaMapOps = Object.freeze({
  name: 'dma_dummy_ops',
  mmap: (): number => -ENXIO,
  map_page: (): bigint => DMA_MAPPING_ERROR,
  unmap_page: (dev: Device): void => dummyUnmapWarn(dev, 'dma_dummy_unmap_page'),
  map_sg: (): number => -EINVAL,
  unmap_sg: (dev: Device): void => dummyUnmapWarn(dev, 'dma_dummy_unmap_sg'),
  dma_supported: (): number => 0,
});
