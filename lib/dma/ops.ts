// struct dma_map_ops (include/linux/dma-map-ops.h): the table a bus or IOMMU driver installs on a
// device, with the kernel's field names. Every field is optional, as in the kernel.

import type { Page } from '../mm/page';
import type { VmArea } from '../mm/vma';
import type { Device } from './device';
import type { DmaDataDirection } from './constants';
import type { Scatterlist, SgTable } from './scatterlist';

/** A kernel out-parameter: the callee writes `value`. */
export interface Box<T> {
  value: T;
}

export interface DmaMapOps {
  /** Optional name for messages. */
  readonly name?: string;
  /** Returns the CPU address (or null) and sets handle.value. */
  alloc?(dev: Device, size: number, dma_handle: Box<bigint>, gfp: number, attrs: number): number | null;
  free?(dev: Device, size: number, vaddr: number, dma_handle: bigint, attrs: number): void;
  alloc_pages_op?(dev: Device, size: number, dma_handle: Box<bigint>, dir: DmaDataDirection, gfp: number): Page | null;
  free_pages?(dev: Device, size: number, vaddr: Page, dma_handle: bigint, dir: DmaDataDirection): void;
  mmap?(dev: Device, vma: VmArea, cpu_addr: number, dma_addr: bigint, size: number, attrs: number): number;
  get_sgtable?(dev: Device, sgt: SgTable, cpu_addr: number, dma_addr: bigint, size: number, attrs: number): number;
  map_page?(dev: Device, page: Page, offset: number, size: number, dir: DmaDataDirection, attrs: number): bigint;
  unmap_page?(dev: Device, dma_handle: bigint, size: number, dir: DmaDataDirection, attrs: number): void;
  /** Returns the number of mapped entries, or a negative errno (-EINVAL, -ENOMEM, -EIO, -EREMOTEIO). */
  map_sg?(dev: Device, sg: Scatterlist, nents: number, dir: DmaDataDirection, attrs: number): number;
  unmap_sg?(dev: Device, sg: Scatterlist, nents: number, dir: DmaDataDirection, attrs: number): void;
  map_resource?(dev: Device, phys_addr: bigint, size: number, dir: DmaDataDirection, attrs: number): bigint;
  unmap_resource?(dev: Device, dma_handle: bigint, size: number, dir: DmaDataDirection, attrs: number): void;
  sync_single_for_cpu?(dev: Device, dma_handle: bigint, size: number, dir: DmaDataDirection): void;
  sync_single_for_device?(dev: Device, dma_handle: bigint, size: number, dir: DmaDataDirection): void;
  sync_sg_for_cpu?(dev: Device, sg: Scatterlist, nents: number, dir: DmaDataDirection): void;
  sync_sg_for_device?(dev: Device, sg: Scatterlist, nents: number, dir: DmaDataDirection): void;
  /** Returns non-zero if the mask is supported. */
  dma_supported?(dev: Device, mask: bigint): number;
  get_required_mask?(dev: Device): bigint;
  max_mapping_size?(dev: Device): number;
  opt_mapping_size?(): number;
  get_merge_boundary?(dev: Device): number;
}
