// DMA addressing limits (kernel/dma/mapping.c, include/linux/dma-mapping.h): which masks a device
// can use, setting and reading its masks, and the largest single mapping it can take.

import { DMA_BIT_MASK, EIO, SIZE_MAX } from './constants';
import { get_dma_ops, use_dma_iommu, type Device } from './device';
import * as direct from './direct';
import * as dma_iommu from './dma_iommu';
import { dma_map_direct } from './route';
import { checkDevice } from './validate';
import { checkBigint } from '../mm/validate';

/**
 * dma_supported: can the device address `mask`? Behind an IOMMU always (a WARN and false if the
 * device also has ops); with ops, ops.dma_supported or true; dma-direct: dma_direct_supported.
 */
export function dma_supported(dev: Device, mask: bigint): boolean {
  checkDevice('dma_supported', dev);
  checkBigint('dma_supported', 'mask', mask);
  const ops = get_dma_ops(dev);
  if (use_dma_iommu(dev)) {
    if (ops !== null) {
      dev.machine.warn(`WARNING: kernel/dma/mapping.c: dma_supported: ${dev.name} is behind an IOMMU and has dma_map_ops`);
      return false;
    }
    return true;
  }
  if (ops === null) return direct.dma_direct_supported(dev, mask) !== 0;
  if (ops.dma_supported === undefined) return true;
  return ops.dma_supported(dev, mask) !== 0;
}

/**
 * dma_set_mask: set *dev->dma_mask (truncated to 64 bits).
 * @returns 0, or -EIO when the device has no dma_mask pointer or the mask is not supported.
 */
export function dma_set_mask(dev: Device, mask: bigint): number {
  checkDevice('dma_set_mask', dev);
  checkBigint('dma_set_mask', 'mask', mask);
  mask = BigInt.asUintN(64, mask);
  if (dev.dma_mask === null || !dma_supported(dev, mask)) return -EIO;
  dev.dma_mask = mask;
  return 0;
}

/** dma_set_coherent_mask: 0, or -EIO when the mask is not supported. */
export function dma_set_coherent_mask(dev: Device, mask: bigint): number {
  checkDevice('dma_set_coherent_mask', dev);
  checkBigint('dma_set_coherent_mask', 'mask', mask);
  mask = BigInt.asUintN(64, mask);
  if (!dma_supported(dev, mask)) return -EIO;
  dev.coherent_dma_mask = mask;
  return 0;
}

/** dma_set_mask_and_coherent: dma_set_mask, then (only if it worked) dma_set_coherent_mask. */
export function dma_set_mask_and_coherent(dev: Device, mask: bigint): number {
  checkDevice('dma_set_mask_and_coherent', dev);
  checkBigint('dma_set_mask_and_coherent', 'mask', mask);
  const rc = dma_set_mask(dev, mask);
  if (rc === 0) dma_set_coherent_mask(dev, mask);
  return rc;
}

/** dma_get_mask: *dev->dma_mask, or DMA_BIT_MASK(32) when unset or zero. */
export function dma_get_mask(dev: Device): bigint {
  checkDevice('dma_get_mask', dev);
  if (dev.dma_mask !== null && dev.dma_mask !== 0n) return dev.dma_mask;
  return DMA_BIT_MASK(32);
}

/** dma_max_mapping_size: the largest single mapping; SIZE_MAX (here 2^53 - 1) when unlimited. */
export function dma_max_mapping_size(dev: Device): number {
  checkDevice('dma_max_mapping_size', dev);
  const ops = get_dma_ops(dev);
  if (dma_map_direct(dev, ops)) return direct.dma_direct_max_mapping_size(dev);
  if (use_dma_iommu(dev)) return dma_iommu.iommu_dma_max_mapping_size(dev);
  if (ops?.max_mapping_size !== undefined) return ops.max_mapping_size(dev);
  return SIZE_MAX;
}
