// Remapped DMA buffers: kernel/dma/remap.c. A buffer built from scattered pages gets a virtually
// contiguous CPU address (vmap); only areas made here count as DMA buffers (VM_DMA_COHERENT).

import { PAGE_ALIGN, PAGE_SIZE } from '../mm/gfp';
import type { Machine } from '../mm/machine';
import type { Page } from '../mm/page';
import type { VmallocArea } from '../mm/vmalloc';

/** The areas dma_common_pages_remap made: the model's VM_DMA_COHERENT flag. */
const dmaCoherentAreas = new WeakSet<VmallocArea>();

/**
 * dma_common_pages_remap: vmap PAGE_ALIGN(size) / PAGE_SIZE of `pages` and mark the area as a
 * DMA buffer. @returns the CPU address, or null when the vmalloc space (or the OS) refuses.
 */
export function dma_common_pages_remap(m: Machine, pages: readonly Page[], size: number): number | null {
  const addr = m.vmap(pages, PAGE_ALIGN(size) / PAGE_SIZE);
  if (addr === null) return null;
  const area = m.findVmallocArea(addr);
  if (area !== null) dmaCoherentAreas.add(area);
  return addr;
}

/** find_vm_area + the VM_DMA_COHERENT check: the area of a remapped DMA buffer, or null. */
function dmaArea(m: Machine, cpu_addr: number): VmallocArea | null {
  const area = m.findVmallocArea(cpu_addr);
  return area !== null && dmaCoherentAreas.has(area) ? area : null;
}

/** dma_common_find_pages: the pages behind a remapped DMA buffer (the vm_struct's), or null. */
export function dma_common_find_pages(m: Machine, cpu_addr: number): readonly Page[] | null {
  return dmaArea(m, cpu_addr)?.pages ?? null;
}

/**
 * dma_common_free_remap: vunmap a remapped DMA buffer (the pages stay the caller's). An address
 * that is not one is the kernel's WARN "trying to free invalid coherent area", and nothing happens.
 */
export function dma_common_free_remap(m: Machine, cpu_addr: number, size: number): void {
  void size;
  const area = dmaArea(m, cpu_addr);
  if (area === null) {
    m.warn(`WARNING: kernel/dma/remap.c: dma_common_free_remap: trying to free invalid coherent area: 0x${cpu_addr.toString(16)}`);
    return;
  }
  dmaCoherentAreas.delete(area);
  m.vunmap(area.addr);
}
