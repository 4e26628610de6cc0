// The DMA API through an IOMMU: drivers/iommu/dma-iommu.c. Each mapping gets an IOVA range below
// the device's mask (iova.ts) and PTEs in its domain's I/O page table (io_pgtable.ts); unmapping
// flushes the IOTLB before the IOVA is reused (strict) or queues it for the next flush (lazy).

import {
  GFP_KERNEL, MAX_PAGE_ORDER, PAGE_ALIGN, PAGE_SIZE, __GFP_COMP, __GFP_DMA, __GFP_DMA32, __GFP_HIGHMEM,
  __GFP_NORETRY, __GFP_NOWARN, __GFP_ZERO, get_order, gfpflags_allow_blocking, type gfp_t,
} from '../mm/gfp';
import { remap_pfn_range, vma_pages, type VmArea } from '../mm/vma';
import type { Page } from '../mm/page';
import { dma_mmap_from_dev_coherent, dma_mmap_range_ok } from './coherent';
import {
  DMA_ATTR_ALLOC_SINGLE_PAGES, DMA_ATTR_FORCE_CONTIGUOUS, DMA_ATTR_PRIVILEGED, DMA_ATTR_SKIP_CPU_SYNC, DMA_BIDIRECTIONAL, DMA_FROM_DEVICE,
  DMA_MAPPING_ERROR, DMA_TO_DEVICE, EINVAL, ENOMEM, ENXIO, EREMOTEIO, SIZE_MAX, type DmaDataDirection,
} from './constants';
import { dma_alloc_contiguous, dma_free_contiguous } from './contiguous';
import { dev_to_node, type Device } from './device';
import { arch_dma_prep_coherent, arch_sync_dma_for_cpu, arch_sync_dma_for_device } from './direct';
import {
  IOMMU_CACHE, IOMMU_MMIO, IOMMU_PRIV, IOMMU_READ, IOMMU_WRITE, iommu_get_dma_domain, iommu_iova_to_phys,
  iommu_unmap, type IommuDomain,
} from './iommu';
import { IOVA_32BIT_LAST_PFN } from './iova';
import { dma_pgprot } from './mapping';
import { dma_get_mask } from './mask';
import type { Box } from './ops';
import { dma_get_max_seg_size, dma_get_seg_boundary } from './dma_parms';
import { dma_common_find_pages, dma_common_free_remap, dma_common_pages_remap } from './remap';
import {
  SgTable, for_each_sg, sg_alloc_table, sg_free_table, sg_set_page, type Scatterlist,
} from './scatterlist';
import { sg_alloc_table_from_pages } from './sg_pages';

/** dma_info_to_prot: IOMMU_* bits for a direction; 0 for DMA_NONE. */
/** The largest IOVA a JS number holds exactly; made once (BigInt construction on every unmap costs). */
const MAX_SAFE_DMA_ADDR = BigInt(Number.MAX_SAFE_INTEGER);

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
 * iommu_dma_alloc_iova: `pages` IOVA pages below dma_limit (min_not_zero with bus_dma_limit,
 * clipped to the aperture). A PCI device still on pci_32bit_workaround tries below 4 GiB first,
 * without flushing the caches; the first time that fails the workaround is cleared for good, with
 * the kernel's notice, and from then on the device allocates top-down from its full limit.
 * Returns the first IOVA page, or 0.
 */
export function iommu_dma_alloc_iova(dev: Device, domain: IommuDomain, pages: number, dma_limit: bigint): number {
  const limitPfn = domain.limitPfn(dma_limit);
  if (limitPfn > IOVA_32BIT_LAST_PFN && domain.pci_32bit_workaround) {
    const pfn = domain.alloc_iova(pages, IOVA_32BIT_LAST_PFN, false);
    if (pfn !== 0) return pfn;
    domain.clear_pci_32bit_workaround();
    // bits_per(dma_limit), dma_limit being the last byte of the page limitPfn.
    dev.machine.warn(`${dev.name}: Using ${Math.ceil(Math.log2(limitPfn + 1)) + 12}-bit DMA addresses`);
  }
  return domain.alloc_iova(pages, limitPfn, true);
}

/**
 * iommu_dma_free_iova: free the IOVA at once (strict, or a gather that was not queued), or queue
 * it until the next IOTLB flush (lazy: queue_iova).
 */
export function iommu_dma_free_iova(domain: IommuDomain, iovaPfn: number, queued: boolean): void {
  if (queued) domain.queue_iova(iovaPfn);
  else domain.free_iova(iovaPfn);
}

/**
 * __iommu_dma_map: allocate IOVA for the pages under [phys, phys + size) below dma_mask and map
 * them. Returns the IOVA of phys, or DMA_MAPPING_ERROR. Numbers inside: IOVAs stay below 2^52.
 */
function __iommu_dma_map(dev: Device, phys: number, size: number, prot: number, dma_mask: bigint): bigint {
  const domain = iommu_get_dma_domain(dev);
  const iova_off = phys % PAGE_SIZE;
  // iova_align(size + iova_off); a zero-sized mapping has no IOVA to give.
  const pages = Math.ceil((size + iova_off) / PAGE_SIZE);
  if (pages === 0) return DMA_MAPPING_ERROR;
  const iovaPfn = iommu_dma_alloc_iova(dev, domain, pages, dma_mask);
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
  const domain = iommu_get_dma_domain(dev);
  const addr = Number(dma_addr);
  const iova_off = addr % PAGE_SIZE;
  const iovaPfn = (addr - iova_off) / PAGE_SIZE;
  const pages = Math.ceil((size + iova_off) / PAGE_SIZE);
  const unmapped = pages === 0 ? 0 : domain.unmapPages(iovaPfn, pages);
  if (unmapped !== pages) {
    dev.machine.warn(`WARNING: drivers/iommu/dma-iommu.c: __iommu_dma_unmap: ${dev.name}: unmapped ${unmapped * PAGE_SIZE} of ${pages * PAGE_SIZE} bytes at IOVA 0x${addr.toString(16)}`);
  }
  if (domain.strict && unmapped > 0) domain.iotlb_sync();
  iommu_dma_free_iova(domain, iovaPfn, !domain.strict);
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
  const domain = iommu_get_dma_domain(dev);
  const phys = dma_handle > MAX_SAFE_DMA_ADDR ? -1 : domain.translate(Number(dma_handle));
  if (phys <= 0) {
    dev.machine.warn(`WARNING: drivers/iommu/dma-iommu.c: iommu_dma_unmap_page: ${dev.name}: IOVA 0x${dma_handle.toString(16)} is not mapped`);
    return;
  }
  if (!(attrs & DMA_ATTR_SKIP_CPU_SYNC) && !dev.dma_coherent) arch_sync_dma_for_cpu(dev, BigInt(phys), size, dir);
  __iommu_dma_unmap(dev, dma_handle, size);
}

/** iommu_dma_map_resource: MMIO through the IOMMU (IOMMU_MMIO, never cacheable). */
export function iommu_dma_map_resource(dev: Device, phys: bigint, size: number, dir: DmaDataDirection, attrs: number): bigint {
  if (phys < 0n || phys > MAX_SAFE_DMA_ADDR) return DMA_MAPPING_ERROR;
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
 * Linux has it in iommu.c; it stays here, private, because it takes the list as iommu_dma_map_sg
 * has just rewritten it (page-aligned entries), not a caller's scatterlist.
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
 * and fill in the DMA segments, merging entries that continue the previous one at a page boundary,
 * unless the merged segment would cross the device's segment boundary or exceed its max segment
 * size (dma_parms; 64 KiB when unset). Returns the number of DMA segments.
 */
function __finalise_sg(dev: Device, list: Scatterlist[], dma_addr: number): number {
  const seg_mask = dma_get_seg_boundary(dev);
  const max_len = dma_get_max_seg_size(dev);
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
    // Merge when: a segment to append to, this entry starts on a page, its address is not on a
    // segment boundary, and the result stays within max_len.
    if (cur_len !== 0 && s_iova_off === 0 && (BigInt(dma_addr) & seg_mask) !== 0n && max_len - cur_len >= s_length) {
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
  const domain = iommu_get_dma_domain(dev);
  const prot = dma_info_to_prot(dir, dev.dma_coherent, attrs);
  if (!(attrs & DMA_ATTR_SKIP_CPU_SYNC)) iommu_dma_sync_sg_for_device(dev, sgl, nents, dir);
  const list = sgList(sgl, nents);
  // Stash each entry's sub-page offset and length in its DMA fields and align it to pages
  // (reversibly, as the kernel does in place).
  // The IOVA range is allocated size-aligned, so when the boundary is smaller than the range, the
  // range starts on one: an entry that would cross the next boundary is pushed onto it by padding
  // the entry before it (whose IOVA then maps a little more, as in the kernel).
  const mask = dma_get_seg_boundary(dev);
  let iova_len = 0;
  let prev: Scatterlist | null = null;
  for (const s of list) {
    const s_iova_off = s.offset % PAGE_SIZE;
    const s_length = s.length;
    const pad_len = Number((mask - BigInt(iova_len) + 1n) & mask);
    s.dma_address = BigInt(s_iova_off);
    s.dma_length = s_length;
    s.offset -= s_iova_off;
    const aligned = PAGE_ALIGN(s_length + s_iova_off);
    s.length = aligned;
    if (prev !== null && pad_len !== 0 && pad_len < aligned - 1) {
      prev.length += pad_len;
      iova_len += pad_len;
    }
    iova_len += aligned;
    prev = s;
  }
  if (iova_len === 0) return __finalise_sg(dev, list, 0);
  if (prot === 0) {
    __invalidate_sg(list);
    return -EINVAL;
  }
  const iovaPfn = iommu_dma_alloc_iova(dev, domain, iova_len / PAGE_SIZE, dma_get_mask(dev));
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
  return __finalise_sg(dev, list, iovaPfn * PAGE_SIZE);
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
 * The domain's pgsize_bitmap: VT-d second-level tables map 4 KiB pages and 2 MiB / 1 GiB
 * superpages (io_pgtable.ts makes the 2 MiB ones). The remap path takes its high orders from it.
 */
export const IOMMU_PGSIZE_BITMAP = 0x1000 | 0x200000 | 0x40000000;

/** __fls: index of the most significant set bit of a positive 32-bit value. */
function __fls(x: number): number {
  return 31 - Math.clz32(x);
}

/** GENMASK(h, 0) for an order mask, clipped to the orders the buddy allocator has. */
function orderMaskUpTo(h: number): number {
  return h >= MAX_PAGE_ORDER ? (1 << (MAX_PAGE_ORDER + 1)) - 1 : (2 << h) - 1;
}

/**
 * __iommu_dma_free_pages: give back the pages of a scattered buffer. The kernel split_page()s
 * every high-order chunk and frees page by page; the model's buddy has no split_page, so each
 * chunk goes back whole through its head page (the same pages, merged as the buddy would).
 */
function __iommu_dma_free_pages(dev: Device, pages: readonly Page[], count: number): void {
  const m = dev.machine;
  for (let i = 0; i < Math.min(count, pages.length);) {
    const page = pages[i]!;
    const order = Math.max(page.allocOrder, 0);
    m.__free_pages(page, order);
    i += 2 ** order;
  }
}

/**
 * __iommu_dma_alloc_pages: `count` pages from the buddy allocator, highest allowed order first.
 * A high order that fails is dropped for the rest of the buffer; orders above the lowest one in
 * the mask are tried with __GFP_NORETRY (a convenience, not a necessity). Every allocation adds
 * __GFP_NOWARN | __GFP_HIGHMEM (the IOMMU can reach any page).
 * @returns the pages in buffer order, or null with nothing left allocated.
 */
function __iommu_dma_alloc_pages(dev: Device, count: number, order_mask: number, gfp: gfp_t): Page[] | null {
  const m = dev.machine;
  const nid = dev_to_node(dev);
  order_mask &= orderMaskUpTo(MAX_PAGE_ORDER);
  if (order_mask === 0) return null;
  const pages: Page[] = [];
  gfp |= __GFP_NOWARN | __GFP_HIGHMEM;
  while (count > 0) {
    let page: Page | null = null;
    let order_size = 0;
    for (order_mask &= orderMaskUpTo(__fls(Math.min(count, 2 ** 31))); order_mask !== 0; order_mask &= ~order_size) {
      const order = __fls(order_mask);
      order_size = 1 << order;
      const alloc_flags = order_mask > order_size ? gfp | __GFP_NORETRY : gfp;
      page = m.alloc_pages_node(nid, alloc_flags, order);
      if (page !== null) break;
    }
    if (page === null) {
      __iommu_dma_free_pages(dev, pages, pages.length);
      return null;
    }
    count -= order_size;
    for (let k = 0; k < order_size; k++) pages.push(k === 0 ? page : m.pfn_to_page(page.pfn + k));
  }
  return pages;
}

/**
 * __iommu_dma_alloc_noncontiguous: scattered pages (ALLOC_SINGLE_PAGES: order 0 only) under one
 * IOVA range below coherent_dma_mask, described by `sgt` (one entry per physically contiguous
 * run; the first entry's DMA fields hold the IOVA and the whole length). Mapped BIDIRECTIONAL.
 * @returns the pages, or null with every page, IOVA and table entry given back.
 */
function __iommu_dma_alloc_noncontiguous(dev: Device, size: number, sgt: SgTable, gfp: gfp_t, attrs: number): Page[] | null {
  const domain = iommu_get_dma_domain(dev);
  const ioprot = dma_info_to_prot(DMA_BIDIRECTIONAL, dev.dma_coherent, attrs);
  let alloc_sizes = IOMMU_PGSIZE_BITMAP;
  const min_size = alloc_sizes & -alloc_sizes;
  // min_size is PAGE_SIZE here, so the kernel's ALIGN(size, min_size) is PAGE_ALIGN.
  size = PAGE_ALIGN(size);
  if (attrs & DMA_ATTR_ALLOC_SINGLE_PAGES) alloc_sizes = min_size;
  const count = size / PAGE_SIZE;
  // A zero-sized buffer has no IOVA to give (the kernel's alloc_iova of 0 pages fails too).
  if (count === 0) return null;
  const pages = __iommu_dma_alloc_pages(dev, count, alloc_sizes / PAGE_SIZE, gfp);
  if (pages === null) return null;
  const iovaPfn = domain.alloc_iova(count, domain.limitPfn(dev.coherent_dma_mask));
  if (iovaPfn === 0) {
    __iommu_dma_free_pages(dev, pages, count);
    return null;
  }
  gfp &= ~(__GFP_DMA | __GFP_DMA32 | __GFP_HIGHMEM | __GFP_COMP);
  if (sg_alloc_table_from_pages(sgt, pages, count, 0, size, gfp) !== 0 || sgt.sgl === null) {
    domain.free_iova(iovaPfn);
    __iommu_dma_free_pages(dev, pages, count);
    return null;
  }
  const list = sgList(sgt.sgl, sgt.orig_nents);
  if (!(ioprot & IOMMU_CACHE)) for (const sg of list) arch_dma_prep_coherent(dev, sg.page_link!, sg.length);
  const ret = iommu_map_sg(domain, iovaPfn, list, ioprot);
  if (ret < 0 || ret < size) {
    sg_free_table(sgt);
    domain.free_iova(iovaPfn);
    __iommu_dma_free_pages(dev, pages, count);
    return null;
  }
  sgt.sgl.dma_address = BigInt(iovaPfn * PAGE_SIZE);
  sgt.sgl.dma_length = size;
  return pages;
}

/**
 * iommu_dma_alloc_remap: the blocking path of iommu_dma_alloc. Scattered pages under one IOVA
 * range, made virtually contiguous for the CPU (a vmalloc address). If the vmap fails the IOVA is
 * unmapped and the pages freed.
 */
function iommu_dma_alloc_remap(dev: Device, size: number, dma_handle: Box<bigint>, gfp: gfp_t, attrs: number): number | null {
  const sgt = new SgTable();
  const pages = __iommu_dma_alloc_noncontiguous(dev, size, sgt, gfp, attrs);
  if (pages === null || sgt.sgl === null) return null;
  dma_handle.value = sgt.sgl.dma_address;
  sg_free_table(sgt);
  const vaddr = dma_common_pages_remap(dev.machine, pages, size);
  if (vaddr === null) {
    __iommu_dma_unmap(dev, dma_handle.value, size);
    __iommu_dma_free_pages(dev, pages, pages.length);
    return null;
  }
  return vaddr;
}

/**
 * iommu_dma_alloc: a zeroed coherent buffer mapped BIDIRECTIONAL below coherent_dma_mask. A
 * blocking request without DMA_ATTR_FORCE_CONTIGUOUS takes the remap path (scattered pages, high
 * orders first, under one IOVA range, vmalloc CPU address: 8 MiB succeeds with no CMA and no
 * contiguous memory); otherwise physically contiguous pages (CMA, then the buddy allocator) at
 * their linear address. Returns the CPU address and sets dma_handle, or null.
 */
export function iommu_dma_alloc(dev: Device, size: number, dma_handle: Box<bigint>, gfp: gfp_t, attrs: number): number | null {
  if (gfpflags_allow_blocking(gfp) && !(attrs & DMA_ATTR_FORCE_CONTIGUOUS)) {
    return iommu_dma_alloc_remap(dev, size, dma_handle, gfp | __GFP_ZERO, attrs);
  }
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
  dev.machine.memset(cpu_addr, 0, alloc_size);
  dma_handle.value = __iommu_dma_map(dev, page.pfn * PAGE_SIZE, size, ioprot, dev.coherent_dma_mask);
  if (dma_handle.value === DMA_MAPPING_ERROR) {
    dma_free_contiguous(dev, page, alloc_size);
    return null;
  }
  return cpu_addr;
}

/**
 * __iommu_dma_free: a remapped buffer (vmalloc address of a DMA area) is vunmapped and its pages
 * freed; any other vmalloc address gives back the contiguous pages behind it, and a linear
 * address its own (CMA or buddy).
 */
function __iommu_dma_free(dev: Device, size: number, cpu_addr: number): void {
  const m = dev.machine;
  const alloc_size = PAGE_ALIGN(size);
  let page: Page | null = null;
  let pages: readonly Page[] | null = null;
  if (m.is_vmalloc_addr(cpu_addr)) {
    pages = dma_common_find_pages(m, cpu_addr);
    if (pages === null) page = m.vmalloc_to_page(cpu_addr);
    dma_common_free_remap(m, cpu_addr, alloc_size);
  } else {
    page = m.virt_to_page(cpu_addr);
  }
  if (pages !== null) __iommu_dma_free_pages(dev, pages, alloc_size / PAGE_SIZE);
  if (page !== null) dma_free_contiguous(dev, page, alloc_size);
}

/** iommu_dma_free: unmap the IOVA first (the device loses access), then free the memory. */
export function iommu_dma_free(dev: Device, size: number, cpu_addr: number, dma_handle: bigint, attrs: number): void {
  void attrs;
  __iommu_dma_unmap(dev, dma_handle, size);
  __iommu_dma_free(dev, size, cpu_addr);
}

/** The page behind a CPU address of a contiguous coherent buffer (vmalloc or linear). */
function cpuAddrToPage(dev: Device, cpu_addr: number): Page | null {
  const m = dev.machine;
  return m.is_vmalloc_addr(cpu_addr) ? m.vmalloc_to_page(cpu_addr) : m.virt_to_page(cpu_addr);
}

/**
 * iommu_dma_get_sgtable: a remapped buffer is described from its pages (one entry per
 * physically contiguous run); a contiguous one by one entry of PAGE_ALIGN(size).
 * @returns 0, -EINVAL or -ENOMEM.
 */
export function iommu_dma_get_sgtable(dev: Device, sgt: SgTable, cpu_addr: number, dma_addr: bigint, size: number, attrs: number): number {
  void dma_addr; void attrs;
  const m = dev.machine;
  if (m.is_vmalloc_addr(cpu_addr)) {
    const pages = dma_common_find_pages(m, cpu_addr);
    if (pages !== null) return sg_alloc_table_from_pages(sgt, pages, PAGE_ALIGN(size) / PAGE_SIZE, 0, size, GFP_KERNEL);
  }
  const page = cpuAddrToPage(dev, cpu_addr);
  const ret = sg_alloc_table(sgt, 1, GFP_KERNEL);
  if (ret === 0 && sgt.sgl !== null) sg_set_page(sgt.sgl, page, PAGE_ALIGN(size), 0);
  return ret;
}

/**
 * vm_map_pages (mm/memory.c): map `num` pages into the VMA one page at a time, starting at page
 * vm_pgoff of the array. The kernel inserts each page (vm_insert_page, VM_MIXEDMAP); lib/mm has
 * remap_pfn_range, so each page is a one-page remap (the VMA gets VM_PFNMAP instead).
 * @returns 0, -ENXIO when the VMA leaves the pages, or the first failing remap's errno.
 */
function vm_map_pages(vma: VmArea, pages: readonly Page[], num: number): number {
  const offset = vma.vm_pgoff;
  const count = vma_pages(vma);
  if (!dma_mmap_range_ok(offset, num, count)) return -ENXIO;
  let uaddr = vma.vm_start;
  for (let i = 0; i < count; i++) {
    const ret = remap_pfn_range(vma, uaddr, pages[offset + i]!.pfn, PAGE_SIZE, vma.vm_page_prot);
    if (ret < 0) return ret;
    uaddr += PAGE_SIZE;
  }
  return 0;
}

/**
 * iommu_dma_mmap: dma_pgprot first (even on failure), the device pool, the -ENXIO bounds check,
 * then the pages of a remapped buffer one by one from vm_pgoff, or remap_pfn_range of a
 * contiguous buffer's pages from vm_pgoff.
 */
export function iommu_dma_mmap(dev: Device, vma: VmArea, cpu_addr: number, dma_addr: bigint, size: number, attrs: number): number {
  void dma_addr;
  const m = dev.machine;
  const nr_pages = PAGE_ALIGN(size) / PAGE_SIZE;
  const off = vma.vm_pgoff;
  const ret: Box<number> = { value: -ENXIO };
  vma.vm_page_prot = dma_pgprot(dev, vma.vm_page_prot, attrs);
  if (dma_mmap_from_dev_coherent(dev, vma, cpu_addr, size, ret)) return ret.value;
  if (!dma_mmap_range_ok(off, nr_pages, vma_pages(vma))) return -ENXIO;
  if (m.is_vmalloc_addr(cpu_addr)) {
    const pages = dma_common_find_pages(m, cpu_addr);
    if (pages !== null) return vm_map_pages(vma, pages, Math.min(nr_pages, pages.length));
  }
  const page = cpuAddrToPage(dev, cpu_addr);
  if (page === null) return -ENXIO;
  return remap_pfn_range(vma, vma.vm_start, page.pfn + off, vma.vm_end - vma.vm_start, vma.vm_page_prot);
}

// ---- the noncontiguous API's IOMMU half (struct dma_sgt_handle) ----------------------------

/** The pages behind each table iommu_dma_alloc_noncontiguous handed out (dma_sgt_handle.pages). */
const sgtPages = new WeakMap<SgTable, readonly Page[]>();

/** sgt_handle(sgt)->pages, or null for a table iommu_dma_alloc_noncontiguous did not make (or freed). */
export function iommu_dma_sgt_pages(sgt: SgTable): readonly Page[] | null {
  return sgtPages.get(sgt) ?? null;
}

/**
 * iommu_dma_alloc_noncontiguous: a table over scattered pages mapped under one IOVA range (the
 * first entry's DMA address and length cover it all). `dir` does not restrict the mapping: it is
 * BIDIRECTIONAL, as in the kernel. @returns the table, or null with nothing left allocated.
 */
export function iommu_dma_alloc_noncontiguous(dev: Device, size: number, dir: DmaDataDirection, gfp: gfp_t, attrs: number): SgTable | null {
  void dir;
  const sgt = new SgTable();
  const pages = __iommu_dma_alloc_noncontiguous(dev, size, sgt, gfp, attrs);
  if (pages === null) return null;
  sgtPages.set(sgt, Object.freeze(pages));
  return sgt;
}

/** iommu_dma_free_noncontiguous: unmap the IOVA range, free the pages, free the table. */
export function iommu_dma_free_noncontiguous(dev: Device, size: number, sgt: SgTable, dir: DmaDataDirection): void {
  void dir;
  const pages = sgtPages.get(sgt);
  if (pages === undefined || sgt.sgl === null) return;
  __iommu_dma_unmap(dev, sgt.sgl.dma_address, size);
  __iommu_dma_free_pages(dev, pages, PAGE_ALIGN(size) / PAGE_SIZE);
  sg_free_table(sgt);
  sgtPages.delete(sgt);
}

/** iommu_dma_vmap_noncontiguous: vmap of the table's pages; null when the vmalloc space is full. */
export function iommu_dma_vmap_noncontiguous(dev: Device, size: number, sgt: SgTable): number | null {
  const pages = sgtPages.get(sgt);
  if (pages === undefined) return null;
  return dev.machine.vmap(pages, Math.min(PAGE_ALIGN(size) / PAGE_SIZE, pages.length));
}

/** iommu_dma_vunmap_noncontiguous: vunmap (the pages stay the table's). */
export function iommu_dma_vunmap_noncontiguous(dev: Device, vaddr: number): void {
  dev.machine.vunmap(vaddr);
}

/** iommu_dma_mmap_noncontiguous: -ENXIO outside the buffer, else its pages one by one from vm_pgoff. */
export function iommu_dma_mmap_noncontiguous(dev: Device, vma: VmArea, size: number, sgt: SgTable): number {
  void dev;
  const count = PAGE_ALIGN(size) / PAGE_SIZE;
  const pages = sgtPages.get(sgt);
  if (pages === undefined) return -ENXIO;
  if (!dma_mmap_range_ok(vma.vm_pgoff, count, vma_pages(vma))) return -ENXIO;
  return vm_map_pages(vma, pages, Math.min(count, pages.length));
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
