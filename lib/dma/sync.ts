// The streaming-DMA sync calls of kernel/dma/mapping.c: hand a mapped buffer to the CPU (after the
// device wrote it) or to the device (after the CPU wrote it). Each routes like the map calls, then
// runs its DMA-API debug check (sync outside the mapping, wrong direction, wrong nents).

import { debugOf, use_dma_iommu, get_dma_ops, type Device } from './device';
import type { DmaDataDirection } from './constants';
import * as direct from './direct';
import * as dma_iommu from './dma_iommu';
import { dma_owner_to_cpu, dma_owner_to_device } from './ownership';
import { dma_map_direct } from './route';
import { for_each_sg, type Scatterlist, type SgTable } from './scatterlist';
import { checkDevice, checkDirection, checkSg, checkSgTable } from './validate';
import { checkBigint, checkInt, checkSize } from '../mm/validate';

/** The checks of a sync by handle. */
function checkSingle(fn: string, dev: Device, addr: bigint, size: number, dir: number): void {
  checkDevice(fn, dev);
  checkBigint(fn, 'addr', addr);
  checkSize(fn, 'size', size);
  checkDirection(dir, fn);
}

/** The checks of an sg sync. */
function checkSgSync(fn: string, dev: Device, sg: Scatterlist | null, nelems: number, dir: number): void {
  checkDevice(fn, dev);
  checkSg(fn, sg, dev.machine, true);
  checkInt(fn, 'nelems', nelems, 0, 0x7fffffff);
  checkDirection(dir, fn);
}

/** dma_sync_single_for_cpu: hand a mapped range back to the CPU (after the device wrote it). */
export function dma_sync_single_for_cpu(dev: Device, addr: bigint, size: number, dir: DmaDataDirection): void {
  checkSingle('dma_sync_single_for_cpu', dev, addr, size, dir);
  const owned = dma_owner_to_cpu(dev, addr, size, 'dma_sync_single_for_cpu');
  const ops = get_dma_ops(dev);
  if (dma_map_direct(dev, ops)) direct.dma_direct_sync_single_for_cpu(dev, addr, size, dir);
  else if (use_dma_iommu(dev)) dma_iommu.iommu_dma_sync_single_for_cpu(dev, addr, size, dir);
  else ops?.sync_single_for_cpu?.(dev, addr, size, dir);
  debugOf(dev).debug_dma_sync_single_for_cpu(dev, addr, size, dir);
  if (owned !== null) throw owned;
}

/** dma_sync_single_for_device: hand a mapped range to the device (after the CPU wrote it). */
export function dma_sync_single_for_device(dev: Device, addr: bigint, size: number, dir: DmaDataDirection): void {
  checkSingle('dma_sync_single_for_device', dev, addr, size, dir);
  const ops = get_dma_ops(dev);
  if (dma_map_direct(dev, ops)) direct.dma_direct_sync_single_for_device(dev, addr, size, dir);
  else if (use_dma_iommu(dev)) dma_iommu.iommu_dma_sync_single_for_device(dev, addr, size, dir);
  else ops?.sync_single_for_device?.(dev, addr, size, dir);
  debugOf(dev).debug_dma_sync_single_for_device(dev, addr, size, dir);
  dma_owner_to_device(dev, addr, size);
}

/** dma_sync_single_range_for_cpu: dma_sync_single_for_cpu of [addr + offset, +size). */
export function dma_sync_single_range_for_cpu(dev: Device, addr: bigint, offset: number, size: number, dir: DmaDataDirection): void {
  checkBigint('dma_sync_single_range_for_cpu', 'addr', addr);
  checkSize('dma_sync_single_range_for_cpu', 'offset', offset);
  dma_sync_single_for_cpu(dev, addr + BigInt(offset), size, dir);
}

/** dma_sync_single_range_for_device: dma_sync_single_for_device of [addr + offset, +size). */
export function dma_sync_single_range_for_device(dev: Device, addr: bigint, offset: number, size: number, dir: DmaDataDirection): void {
  checkBigint('dma_sync_single_range_for_device', 'addr', addr);
  checkSize('dma_sync_single_range_for_device', 'offset', offset);
  dma_sync_single_for_device(dev, addr + BigInt(offset), size, dir);
}

/** dma_sync_sg_for_cpu: `nelems` is the count passed to dma_map_sg. */
export function dma_sync_sg_for_cpu(dev: Device, sg: Scatterlist | null, nelems: number, dir: DmaDataDirection): void {
  checkSgSync('dma_sync_sg_for_cpu', dev, sg, nelems, dir);
  let owned: Error | null = null;
  for_each_sg(sg, nelems, (s) => {
    const e = s.dma_length > 0 ? dma_owner_to_cpu(dev, s.dma_address, s.dma_length, 'dma_sync_sg_for_cpu') : null;
    owned ??= e;
  });
  const ops = get_dma_ops(dev);
  if (sg !== null) {
    if (dma_map_direct(dev, ops)) direct.dma_direct_sync_sg_for_cpu(dev, sg, nelems, dir);
    else if (use_dma_iommu(dev)) dma_iommu.iommu_dma_sync_sg_for_cpu(dev, sg, nelems, dir);
    else ops?.sync_sg_for_cpu?.(dev, sg, nelems, dir);
  }
  debugOf(dev).debug_dma_sync_sg_for_cpu(dev, sg, nelems, dir);
  if (owned !== null) throw owned;
}

/** dma_sync_sg_for_device: `nelems` is the count passed to dma_map_sg. */
export function dma_sync_sg_for_device(dev: Device, sg: Scatterlist | null, nelems: number, dir: DmaDataDirection): void {
  checkSgSync('dma_sync_sg_for_device', dev, sg, nelems, dir);
  const ops = get_dma_ops(dev);
  if (sg !== null) {
    if (dma_map_direct(dev, ops)) direct.dma_direct_sync_sg_for_device(dev, sg, nelems, dir);
    else if (use_dma_iommu(dev)) dma_iommu.iommu_dma_sync_sg_for_device(dev, sg, nelems, dir);
    else ops?.sync_sg_for_device?.(dev, sg, nelems, dir);
  }
  debugOf(dev).debug_dma_sync_sg_for_device(dev, sg, nelems, dir);
  for_each_sg(sg, nelems, (s) => { if (s.dma_length > 0) dma_owner_to_device(dev, s.dma_address, s.dma_length); });
}

/** dma_sync_sgtable_for_cpu: sync the table's orig_nents entries. */
export function dma_sync_sgtable_for_cpu(dev: Device, sgt: SgTable, dir: DmaDataDirection): void {
  checkSgTable('dma_sync_sgtable_for_cpu', sgt);
  dma_sync_sg_for_cpu(dev, sgt.sgl, sgt.orig_nents, dir);
}

/** dma_sync_sgtable_for_device: sync the table's orig_nents entries. */
export function dma_sync_sgtable_for_device(dev: Device, sgt: SgTable, dir: DmaDataDirection): void {
  checkSgTable('dma_sync_sgtable_for_device', sgt);
  dma_sync_sg_for_device(dev, sgt.sgl, sgt.orig_nents, dir);
}
