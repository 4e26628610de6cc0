// The questions a driver asks kernel/dma/mapping.c before it maps: which mask it needs, whether its
// mask limits it, the mapping size that stays fast, where segments merge, whether syncs and unmaps
// are needed at all, and whether coherent memory can be mmapped.

import { PAGE_SIZE } from '../mm/gfp';
import { DMA_BIT_MASK, SIZE_MAX } from './constants';
import { get_dma_ops, use_dma_iommu, type Device } from './device';
import * as direct from './direct';
import { dma_get_mask, dma_max_mapping_size } from './mask';
import { dma_alloc_direct, dma_map_direct } from './route';
import { swiotlb_reset_need_sync } from './swiotlb';
import { checkDevice } from './validate';
import { checkBigint } from '../mm/validate';

/** IOVA_RANGE_CACHE_MAX_SIZE (drivers/iommu/iova.c): sizes up to 2^5 pages come from the rcache. */
const IOVA_RANGE_CACHE_MAX_SIZE = 6;

/** dma_get_required_mask: the mask that reaches all of RAM (dma-direct), else 32 bits (IOMMU, ops). */
export function dma_get_required_mask(dev: Device): bigint {
  checkDevice('dma_get_required_mask', dev);
  const ops = get_dma_ops(dev);
  if (dma_alloc_direct(dev, ops)) return direct.dma_direct_get_required_mask(dev);
  if (use_dma_iommu(dev)) return DMA_BIT_MASK(32);
  if (ops?.get_required_mask !== undefined) return ops.get_required_mask(dev);
  return DMA_BIT_MASK(32);
}

/**
 * dma_addressing_limited: whether min_not_zero(mask, bus_dma_limit) is below the required mask;
 * for dma-direct also whether some RAM is outside the bus ranges (never here: one offset covers all).
 */
export function dma_addressing_limited(dev: Device): boolean {
  checkDevice('dma_addressing_limited', dev);
  if (direct.min_not_zero(dma_get_mask(dev), dev.bus_dma_limit) < dma_get_required_mask(dev)) return true;
  return false;
}

/**
 * dma_opt_mapping_size: the largest mapping that is not slower than smaller ones: through the IOMMU
 * the IOVA rcache's range (128 KiB), else SIZE_MAX; never above dma_max_mapping_size.
 */
export function dma_opt_mapping_size(dev: Device): number {
  checkDevice('dma_opt_mapping_size', dev);
  const ops = get_dma_ops(dev);
  let size = SIZE_MAX;
  if (use_dma_iommu(dev)) size = PAGE_SIZE * 2 ** (IOVA_RANGE_CACHE_MAX_SIZE - 1);
  else if (ops?.opt_mapping_size !== undefined) size = ops.opt_mapping_size();
  return Math.min(dma_max_mapping_size(dev), size);
}

/**
 * dma_get_merge_boundary: the mask below which the IOMMU can merge segments (its smallest page
 * minus one: 4095); 0 ("can't merge") for dma-direct and ops without get_merge_boundary.
 */
export function dma_get_merge_boundary(dev: Device): number {
  checkDevice('dma_get_merge_boundary', dev);
  if (use_dma_iommu(dev)) return PAGE_SIZE - 1;
  const ops = get_dma_ops(dev);
  return ops?.get_merge_boundary?.(dev) ?? 0;
}

/**
 * dev->dma_skip_sync as dma_setup_need_sync leaves it: dma-direct and the IOMMU path skip syncs on
 * coherent devices until their first swiotlb bounce (dma_reset_need_sync); ops without any sync
 * callback cannot sync.
 */
function dma_skip_sync(dev: Device): boolean {
  const ops = get_dma_ops(dev);
  if (dma_map_direct(dev, ops) || use_dma_iommu(dev)) return dev.dma_coherent && !swiotlb_reset_need_sync(dev);
  return ops?.sync_single_for_cpu === undefined && ops?.sync_single_for_device === undefined
    && ops?.sync_sg_for_cpu === undefined && ops?.sync_sg_for_device === undefined;
}

/** IS_ENABLED(CONFIG_DMA_API_DEBUG), per device: its DMA-API debug being on. */
function dmaApiDebug(dev: Device): boolean {
  return dev.debug.enabled;
}

/**
 * dma_need_sync: whether dma_sync_* calls for this mapping do anything, so a driver may skip
 * them: false on coherent devices that never bounced; otherwise dma-direct answers per address
 * (non-coherent, or a swiotlb buffer: is_swiotlb_buffer) and the IOMMU path says true.
 */
export function dma_need_sync(dev: Device, dma_addr: bigint): boolean {
  checkDevice('dma_need_sync', dev);
  checkBigint('dma_need_sync', 'dma_addr', dma_addr);
  if (dma_skip_sync(dev) && !dmaApiDebug(dev)) return false;
  if (dma_map_direct(dev, get_dma_ops(dev))) return direct.dma_direct_need_sync(dev, dma_addr);
  return true;
}

/** dma_need_unmap: whether the driver must keep the address and length to unmap (DEFINE_DMA_UNMAP_*). */
export function dma_need_unmap(dev: Device): boolean {
  checkDevice('dma_need_unmap', dev);
  if (!dma_map_direct(dev, get_dma_ops(dev))) return true;
  if (!dma_skip_sync(dev)) return true;
  return dmaApiDebug(dev);
}

/**
 * dma_can_mmap: whether dma_mmap_attrs can work: always through the IOMMU; dma-direct maps coherent
 * devices' memory and, as arm64 does (DMA_NONCOHERENT_MMAP), non-coherent ones'; ops need mmap.
 */
export function dma_can_mmap(dev: Device): boolean {
  checkDevice('dma_can_mmap', dev);
  if (use_dma_iommu(dev)) return true;
  const ops = get_dma_ops(dev);
  if (dma_alloc_direct(dev, ops)) return true;
  return ops?.mmap !== undefined;
}

/** dma_get_cache_alignment: ARCH_DMA_MINALIGN where the architecture has one; x86 has none, so 1. */
export function dma_get_cache_alignment(): number {
  return 1;
}
