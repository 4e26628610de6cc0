// The accessors of dev->dma_parms in dma-mapping.h: the largest DMA segment a device takes, the
// boundary no segment may cross, and the low address bits a bounce buffer must keep. PCI and platform devices have them; a device made with dmaParms: false
// has none, and the setters WARN as the kernel's WARN_ON_ONCE(!dev->dma_parms) does.

import { checkBigint, checkInt } from '../mm/validate';
import { WARN_ONCE } from './bug';
import type { Device } from './device';
import { ULONG_MAX, UINT_MAX, type DeviceDmaParameters } from './device_dma_parameters';
import { checkDevice } from './validate';

/** SZ_64K: dma_get_max_seg_size when nothing was set. */
export const DEFAULT_MAX_SEG_SIZE = 64 * 1024;

function parmsOrWarn(fn: string, dev: Device): DeviceDmaParameters | null {
  if (dev.dma_parms === null) WARN_ONCE(dev.machine, fn, `WARNING: include/linux/dma-mapping.h: ${fn}: ${dev.name} has no dma_parms`);
  return dev.dma_parms;
}

/** dma_get_max_seg_size: dev->dma_parms->max_segment_size when set, else 64 KiB. */
export function dma_get_max_seg_size(dev: Device): number {
  checkDevice('dma_get_max_seg_size', dev);
  return dev.dma_parms?.max_segment_size || DEFAULT_MAX_SEG_SIZE;
}

/** dma_set_max_seg_size (void since Linux 6.11): WARNs once for a device without dma_parms. */
export function dma_set_max_seg_size(dev: Device, size: number): void {
  checkDevice('dma_set_max_seg_size', dev);
  checkInt('dma_set_max_seg_size', 'size', size, 0, UINT_MAX);
  const p = parmsOrWarn('dma_set_max_seg_size', dev);
  if (p !== null) p.max_segment_size = size;
}

/** dma_get_seg_boundary: the mask no DMA segment may cross (ULONG_MAX when none was set). */
export function dma_get_seg_boundary(dev: Device): bigint {
  checkDevice('dma_get_seg_boundary', dev);
  return dev.dma_parms?.segment_boundary_mask || ULONG_MAX;
}

/** dma_get_seg_boundary_nr_pages: the boundary in pages of 2^page_shift; null dev: U32_MAX's. */
export function dma_get_seg_boundary_nr_pages(dev: Device | null, page_shift: number): bigint {
  checkInt('dma_get_seg_boundary_nr_pages', 'page_shift', page_shift, 0, 63);
  if (dev === null) return (BigInt(UINT_MAX) >> BigInt(page_shift)) + 1n;
  return (dma_get_seg_boundary(dev) >> BigInt(page_shift)) + 1n;
}

/** dma_set_seg_boundary (void): WARNs once for a device without dma_parms. */
export function dma_set_seg_boundary(dev: Device, mask: bigint): void {
  checkDevice('dma_set_seg_boundary', dev);
  checkBigint('dma_set_seg_boundary', 'mask', mask);
  if (mask < 0n || mask > ULONG_MAX) throw new RangeError(`dma_set_seg_boundary: Expected a bigint from 0 to 2^64-1 for mask but received ${mask}`);
  const p = parmsOrWarn('dma_set_seg_boundary', dev);
  if (p !== null) p.segment_boundary_mask = mask;
}

/** dma_get_min_align_mask: 0 without dma_parms. */
export function dma_get_min_align_mask(dev: Device): number {
  checkDevice('dma_get_min_align_mask', dev);
  return dev.dma_parms?.min_align_mask ?? 0;
}

/** dma_set_min_align_mask (void): WARNs once for a device without dma_parms. */
export function dma_set_min_align_mask(dev: Device, min_align_mask: number): void {
  checkDevice('dma_set_min_align_mask', dev);
  checkInt('dma_set_min_align_mask', 'min_align_mask', min_align_mask, 0, UINT_MAX);
  const p = parmsOrWarn('dma_set_min_align_mask', dev);
  if (p !== null) p.min_align_mask = min_align_mask;
}
