// struct device_dma_parameters (include/linux/device.h): dev->dma_parms, the limits a device puts on
// DMA segments. Fields are checked on assignment, since the mapping paths read them.

import { checkBigint, checkInt } from '../mm/validate';

export const UINT_MAX = 2 ** 32 - 1;
/** ULONG_MAX: the default segment boundary (none). */
export const ULONG_MAX = 2n ** 64n - 1n;

/** dev->dma_parms. Fields are checked on assignment (the DMA paths read them). */
export class DeviceDmaParameters {
  #maxSegmentSize = 0;
  #minAlignMask = 0;
  #segmentBoundaryMask = 0n;

  /** unsigned int max_segment_size; 0 means "not set" (64 KiB). */
  get max_segment_size(): number {
    return this.#maxSegmentSize;
  }
  set max_segment_size(v: number) {
    checkInt('dma_parms', 'max_segment_size', v, 0, UINT_MAX);
    this.#maxSegmentSize = v;
  }

  /** unsigned int min_align_mask. */
  get min_align_mask(): number {
    return this.#minAlignMask;
  }
  set min_align_mask(v: number) {
    checkInt('dma_parms', 'min_align_mask', v, 0, UINT_MAX);
    this.#minAlignMask = v;
  }

  /** unsigned long segment_boundary_mask (a bigint); 0n means "not set" (ULONG_MAX). */
  get segment_boundary_mask(): bigint {
    return this.#segmentBoundaryMask;
  }
  set segment_boundary_mask(v: bigint) {
    checkBigint('dma_parms', 'segment_boundary_mask', v);
    if (v < 0n || v > ULONG_MAX) throw new RangeError(`dma_parms: Expected a bigint from 0 to 2^64-1 for segment_boundary_mask but received ${v}`);
    this.#segmentBoundaryMask = v;
  }
}
