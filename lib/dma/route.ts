// How kernel/dma/mapping.c picks an implementation for a device (kernel-semantics.md §0): dma-direct,
// the IOMMU layer or the device's dma_map_ops; and the WARN checks its entry points start with
// (the argument checks and the direction BUG are in validate.ts).

import { WARN_ONCE } from './bug';
import { use_dma_iommu, type Device } from './device';
import type { DmaMapOps } from './ops';

/**
 * dma_go_direct: never behind an IOMMU; always without ops. CONFIG_DMA_OPS_BYPASS is off in this
 * model, so a device with ops always uses them (the mask does not matter).
 */
function dma_go_direct(dev: Device, _mask: bigint, ops: DmaMapOps | null): boolean {
  if (use_dma_iommu(dev)) return false;
  return ops === null;
}

/** dma_alloc_direct: routing of allocations (tests coherent_dma_mask). */
export function dma_alloc_direct(dev: Device, ops: DmaMapOps | null): boolean {
  return dma_go_direct(dev, dev.coherent_dma_mask, ops);
}

/** dma_map_direct: routing of mappings and syncs (tests *dma_mask). */
export function dma_map_direct(dev: Device, ops: DmaMapOps | null): boolean {
  return dma_go_direct(dev, dev.dma_mask ?? 0n, ops);
}

/** WARN_ON_ONCE at a mapping.c call site: warns once per machine and site; returns `cond`, like the macro. */
export function WARN_ON_ONCE(dev: Device, cond: boolean, site: string): boolean {
  if (cond) WARN_ONCE(dev.machine, site, `WARNING: kernel/dma/mapping.c: ${site} [device=${dev.name}]`);
  return cond;
}
