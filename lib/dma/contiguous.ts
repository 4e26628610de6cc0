// Contiguous DMA memory from CMA areas: kernel/dma/contiguous.c (dma_alloc_contiguous,
// dma_free_contiguous), with CONFIG_DMA_CMA and CONFIG_DMA_NUMA_CMA on.

import { cma_alloc_aligned, cma_release } from '../mm/cma';
import {
  GFP_DMA, GFP_DMA32, NUMA_NO_NODE, PAGE_ALIGN, PAGE_SIZE, __GFP_NOWARN,
  get_order, gfpflags_allow_blocking, type gfp_t,
} from '../mm/gfp';
import type { Page } from '../mm/page';
import { dev_to_node, type Device } from './device';
import { checkDevice, checkLiveDevice, checkPage } from './validate';
import { checkGfp, checkSize } from '../mm/validate';


/**
 * dma_alloc_contiguous: `size` bytes of physically contiguous pages from a CMA area, or null.
 * Order of areas: the device's own area (first and final, even for one page); otherwise nothing
 * for size <= PAGE_SIZE; then, when the device has a node and gfp asks for no DMA zone, the node's
 * `cma_pernuma=` and `numa_cma=` areas; then the default area. Atomic (non-blocking) requests
 * never touch CMA, because CMA allocation may have to migrate pages and so sleep.
 * @returns the first page, or null (the caller falls back to the buddy allocator).
 * @example dma_alloc_contiguous(dev, 3 * 4096, GFP_KERNEL) // 3 pages aligned to 4 pages, or null
 */
export function dma_alloc_contiguous(dev: Device, size: number, gfp: gfp_t): Page | null {
  checkLiveDevice('dma_alloc_contiguous', dev);
  checkSize('dma_alloc_contiguous', 'size', size);
  checkGfp('dma_alloc_contiguous', gfp);
  if (!gfpflags_allow_blocking(gfp)) return null;
  const m = dev.machine;
  if (dev.cma_area !== null) return cma_alloc_aligned(dev.cma_area, size, gfp, m.cmaAlignment);
  if (size <= PAGE_SIZE) return null;

  const nid = dev_to_node(dev);
  if (nid !== NUMA_NO_NODE && (gfp & (GFP_DMA | GFP_DMA32)) === 0) {
    const pernuma = m.pernumaCmaAreas[nid] ?? null;
    if (pernuma !== null) {
      const page = cma_alloc_aligned(pernuma, size, gfp, m.cmaAlignment);
      if (page !== null) return page;
    }
    const numa = m.numaCmaAreas[nid] ?? null;
    if (numa !== null) {
      const page = cma_alloc_aligned(numa, size, gfp, m.cmaAlignment);
      if (page !== null) return page;
    }
  }
  const area = m.dma_contiguous_default_area;
  if (area === null) return null;
  return cma_alloc_aligned(area, size, gfp, m.cmaAlignment);
}

/**
 * dma_free_contiguous: give back pages from dma_alloc_contiguous, or from the buddy allocator
 * after a CMA miss. PAGE_ALIGN(size) >> PAGE_SHIFT pages go back to the device's own area if it
 * has one (and only there); else to the pernuma, numa, then default area of the page's node;
 * whatever no area takes goes to __free_pages(page, get_order(size)).
 */
export function dma_free_contiguous(dev: Device, page: Page, size: number): void {
  checkDevice('dma_free_contiguous', dev);
  checkPage('dma_free_contiguous', 'page', page, dev.machine);
  checkSize('dma_free_contiguous', 'size', size);
  // An unsigned int in C, hence the truncation.
  const count = (PAGE_ALIGN(size) / PAGE_SIZE) >>> 0;
  const m = dev.machine;
  if (dev.cma_area !== null) {
    if (cma_release(dev.cma_area, page, count)) return;
  } else {
    const nid = page.nid;
    if (cma_release(m.pernumaCmaAreas[nid] ?? null, page, count)) return;
    if (cma_release(m.numaCmaAreas[nid] ?? null, page, count)) return;
    if (cma_release(m.dma_contiguous_default_area, page, count)) return;
  }
  // Not from any CMA area: it came from the buddy allocator.
  m.__free_pages(page, get_order(size));
}
