// swiotlb (kernel/dma/swiotlb.c): the bounce-buffer pool the machine reserved below 4 GiB, its slot
// allocator (2 KiB slots in segments of 128), and the byte copies between a mapped buffer and its slots.

import type { Machine, SwiotlbReservation } from '../mm/machine';
import { PAGE_SIZE } from '../mm/gfp';
import { segmentBytes } from '../mm/segment';
import { WARN_ONCE } from './bug';
import { DMA_ATTR_NO_WARN, DMA_ATTR_SKIP_CPU_SYNC, DMA_BIDIRECTIONAL, DMA_FROM_DEVICE, DMA_MAPPING_ERROR, DMA_TO_DEVICE, type DmaDataDirection } from './constants';
import type { Device } from './device';
import { dma_get_min_align_mask, dma_get_seg_boundary } from './dma_parms';

/** IO_TLB_SHIFT / IO_TLB_SIZE: one slot is 2 KiB. */
export const IO_TLB_SHIFT = 11;
export const IO_TLB_SIZE = 1 << IO_TLB_SHIFT;
/** IO_TLB_SEGSIZE: no allocation spans more than 128 contiguous slots (256 KiB). */
export const IO_TLB_SEGSIZE = 128;
/** INVALID_PHYS_ADDR: a free slot's orig_addr. */
const INVALID_PHYS_ADDR = -1;

/** io_tlb_mem with its one io_tlb_pool (one area: the model has one CPU). */
interface IoTlbPool {
  readonly res: SwiotlbReservation;
  /** Physical start and end (exclusive) of the pool. */
  readonly start: number;
  readonly end: number;
  readonly nslabs: number;
  /** slots[i].list: free contiguous slots from i to the end of its segment (0 = in use). */
  readonly list: Int32Array;
  /** slots[i].orig_addr: the original buffer's physical address for this slot (or INVALID). */
  readonly orig: Float64Array;
  /** slots[i].alloc_size: bytes of the mapping from this slot on. */
  readonly allocSize: Float64Array;
  /** The area's search start (area->index). */
  index: number;
  /** The pool's bytes (the segment's internal view) and the machine. */
  readonly bytes: Uint8Array;
  readonly machine: Machine;
}

const pools = new WeakMap<Machine, IoTlbPool>();

/** The pool of a machine (swiotlb_init_io_tlb_pool on first use), or null without swiotlb. */
function poolOf(machine: Machine): IoTlbPool | null {
  const res = machine.swiotlb;
  if (res === null) return null;
  let pool = pools.get(machine);
  if (pool === undefined) {
    const seg = res.segment;
    const start = seg.startPfn * PAGE_SIZE;
    const nslabs = (seg.pages * PAGE_SIZE) >> IO_TLB_SHIFT;
    const list = new Int32Array(nslabs);
    for (let i = 0; i < nslabs; i++) list[i] = IO_TLB_SEGSIZE - (i % IO_TLB_SEGSIZE);
    pool = {
      res, start, end: start + nslabs * IO_TLB_SIZE, nslabs, list,
      orig: new Float64Array(nslabs).fill(INVALID_PHYS_ADDR), allocSize: new Float64Array(nslabs),
      index: 0, bytes: segmentBytes(seg), machine,
    };
    pools.set(machine, pool);
  }
  return pool;
}

/** is_swiotlb_active: the device's machine has a bounce pool. */
export function is_swiotlb_active(dev: Device): boolean {
  return dev.machine.swiotlb !== null;
}

/** is_swiotlb_force_bounce: swiotlb=force, every dma-direct streaming mapping bounces. */
export function is_swiotlb_force_bounce(dev: Device): boolean {
  return dev.machine.swiotlb?.force === true;
}

/** is_swiotlb_buffer: does physical address `paddr` lie in the device's bounce pool? */
export function is_swiotlb_buffer(dev: Device, paddr: bigint): boolean {
  const res = dev.machine.swiotlb;
  if (res === null) return false;
  const p = Number(paddr);
  const start = res.segment.startPfn * PAGE_SIZE;
  return p >= start && p < start + res.segment.pages * PAGE_SIZE;
}

/** Devices that have had a bounced mapping: dma_reset_need_sync cleared their dma_skip_sync for good. */
const bounced = new WeakSet<Device>();

/** !dev->dma_skip_sync because of swiotlb: the device has bounced at least once. */
export function swiotlb_reset_need_sync(dev: Device): boolean {
  return bounced.has(dev);
}

/**
 * swiotlb_max_mapping_size: a mapping fits in one segment of 128 slots, less what min_align_mask
 * may offset it by (rounded up to whole slots): 256 KiB without min_align_mask.
 */
export function swiotlb_max_mapping_size(dev: Device): number {
  const min_align_mask = dma_get_min_align_mask(dev);
  const min_align = min_align_mask === 0 ? 0 : Math.ceil(min_align_mask / IO_TLB_SIZE) * IO_TLB_SIZE;
  return IO_TLB_SIZE * IO_TLB_SEGSIZE - min_align;
}

/** nr_slots: slots covering `bytes`. */
function nr_slots(bytes: number): number {
  return Math.ceil(bytes / IO_TLB_SIZE);
}

/** swiotlb_align_offset: the low bits of orig_addr (min_align_mask, within the alignment) kept in the slot. */
function swiotlb_align_offset(dev: Device, align_mask: number, addr: number): number {
  return andMask(addr, (dev.dma_parms?.min_align_mask ?? 0) & (align_mask | (IO_TLB_SIZE - 1)));
}

/** addr & mask for a physical address below 2^53 and a 32-bit mask (unsigned int), without BigInt. */
function andMask(addr: number, mask: number): number {
  return ((addr % 0x1_0000_0000) & mask) >>> 0;
}

/**
 * swiotlb_search_pool_area: the first run of nslots free slots, from the area's index on, whose
 * start honours alloc_align_mask (at least slot aligned; page aligned for mappings of a page or
 * more without other constraints), keeps orig_addr's bits under min_align_mask, and does not cross
 * the device's segment boundary. -1 when none.
 */
function swiotlb_search_pool_area(dev: Device, pool: IoTlbPool, orig_addr: number, alloc_size: number, alloc_align_mask: number, offset: number): number {
  const boundary_mask = dma_get_seg_boundary(dev);
  const tbl_dma_addr = BigInt(pool.start) + dev.busOffset;
  const max_slots = boundary_mask >= BigInt(Number.MAX_SAFE_INTEGER) ? Infinity : Number(boundary_mask >> BigInt(IO_TLB_SHIFT)) + 1;
  const nslots = nr_slots(alloc_size);
  let iotlb_align_mask = dma_get_min_align_mask(dev);
  if (alloc_align_mask === 0 && iotlb_align_mask === 0 && alloc_size >= PAGE_SIZE) alloc_align_mask = PAGE_SIZE - 1;
  alloc_align_mask |= IO_TLB_SIZE - 1;
  iotlb_align_mask &= ~alloc_align_mask;
  const stride = (Math.max(alloc_align_mask, iotlb_align_mask) >>> IO_TLB_SHIFT) + 1;
  const used = pool.res.counters.used;
  if (nslots > pool.nslabs - used) return -1;
  const boundaryBase = Number(tbl_dma_addr & boundary_mask) >> IO_TLB_SHIFT;
  let index = pool.index;
  for (let checked = 0; checked < pool.nslabs;) {
    const slot_index = index;
    const tlb_addr = pool.start + slot_index * IO_TLB_SIZE;
    if (andMask(tlb_addr, alloc_align_mask) !== 0
      || (orig_addr !== 0 && andMask(tlb_addr, iotlb_align_mask) !== andMask(orig_addr, iotlb_align_mask))) {
      index = (index + 1) % pool.nslabs;
      checked++;
      continue;
    }
    // iommu_is_span_boundary: the run may not cross a multiple of max_slots.
    const spans = max_slots !== Infinity && ((boundaryBase + slot_index) % max_slots) + nslots > max_slots;
    if (!spans && (pool.list[slot_index] ?? 0) >= nslots) {
      for (let i = slot_index; i < slot_index + nslots; i++) {
        pool.list[i] = 0;
        // From the mapping's first byte: the kept offset is not part of it.
        pool.allocSize[i] = alloc_size - (offset + (i - slot_index) * IO_TLB_SIZE);
      }
      // The free run before it now ends here.
      let count = 0;
      for (let i = slot_index - 1; i >= 0 && i % IO_TLB_SEGSIZE !== IO_TLB_SEGSIZE - 1 && (pool.list[i] ?? 0) !== 0; i--) pool.list[i] = ++count;
      pool.index = (slot_index + nslots) % pool.nslabs;
      const c = pool.res.counters;
      c.used += nslots;
      if (c.used > c.maxUsed) c.maxUsed = c.used;
      return slot_index;
    }
    index = (index + stride) % pool.nslabs;
    checked += stride;
  }
  return -1;
}

/**
 * swiotlb_bounce: copies between the original buffer and the slots behind tlb_addr, in the
 * direction of `dir` (DMA_TO_DEVICE: original -> slot; DMA_FROM_DEVICE: slot -> original). A size
 * past the end of the allocation is cut to it with a WARN (the kernel's "Buffer overflow detected").
 */
function swiotlb_bounce(dev: Device, pool: IoTlbPool, tlb_addr: number, size: number, dir: DmaDataDirection): void {
  const index = (tlb_addr - pool.start) >> IO_TLB_SHIFT;
  let orig_addr = pool.orig[index] ?? INVALID_PHYS_ADDR;
  if (orig_addr === INVALID_PHYS_ADDR) return;
  let alloc_size = pool.allocSize[index] ?? 0;
  const tlb_offset = (tlb_addr & (IO_TLB_SIZE - 1)) - swiotlb_align_offset(dev, 0, orig_addr);
  orig_addr += tlb_offset;
  alloc_size -= tlb_offset;
  if (size > alloc_size) {
    WARN_ONCE(dev.machine, `swiotlb_bounce:${dev.name}`,
      `WARNING: kernel/dma/swiotlb.c: swiotlb_bounce: ${dev.name}: Buffer overflow detected. Allocation size: ${alloc_size}. Mapping size: ${size}.`);
    size = alloc_size;
  }
  if (size <= 0) return;
  const m = dev.machine;
  // The original may be any memory of the machine; copy through each segment's internal bytes.
  let slotOff = tlb_addr - pool.start;
  for (let done = 0; done < size;) {
    const phys = orig_addr + done;
    const seg = m.segmentOfPfn(Math.floor(phys / PAGE_SIZE));
    if (seg === null) throw new RangeError(`swiotlb_bounce: 0x${phys.toString(16)} is not memory of ${m.name}`);
    const segOff = phys - seg.startPfn * PAGE_SIZE;
    const n = Math.min(size - done, seg.pages * PAGE_SIZE - segOff);
    const orig = segmentBytes(seg).subarray(segOff, segOff + n);
    const slot = pool.bytes.subarray(slotOff, slotOff + n);
    if (dir === DMA_TO_DEVICE) slot.set(orig);
    else orig.set(slot);
    done += n;
    slotOff += n;
  }
  pool.res.counters.bounces++;
  pool.res.counters.bytesBounced += size;
}

/**
 * swiotlb_tbl_map_single: takes slots for [orig_addr, +mapping_size), remembers the original
 * address per slot, and copies the original into the slots whatever the direction (so that a
 * device writing only part of a DMA_FROM_DEVICE buffer leaves the rest as it was).
 * @returns the physical address in the pool, or DMA_MAPPING_ERROR with "swiotlb buffer is full".
 */
export function swiotlb_tbl_map_single(dev: Device, orig_addr: bigint, mapping_size: number, alloc_align_mask: number, dir: DmaDataDirection, attrs: number): bigint {
  void dir;
  const pool = poolOf(dev.machine);
  if (pool === null) {
    dev.machine.warn(`${dev.name}: Can not allocate SWIOTLB buffer earlier and can't now provide you with the DMA bounce buffer`);
    return DMA_MAPPING_ERROR;
  }
  const orig = Number(orig_addr);
  const offset = swiotlb_align_offset(dev, alloc_align_mask, orig);
  const index = mapping_size === 0 ? -1 : swiotlb_search_pool_area(dev, pool, orig, offset + mapping_size, alloc_align_mask, offset);
  if (index === -1) {
    pool.res.counters.full++;
    if (!(attrs & DMA_ATTR_NO_WARN)) {
      dev.machine.warn(`${dev.name}: swiotlb buffer is full (sz: ${mapping_size} bytes), total ${pool.nslabs} (slots), used ${pool.res.counters.used} (slots)`);
    }
    return DMA_MAPPING_ERROR;
  }
  bounced.add(dev);
  const n = nr_slots(offset + mapping_size);
  for (let i = 0; i < n; i++) pool.orig[index + i] = orig + i * IO_TLB_SIZE;
  pool.res.counters.mapped++;
  const tlb_addr = pool.start + index * IO_TLB_SIZE + offset;
  swiotlb_bounce(dev, pool, tlb_addr, mapping_size, DMA_TO_DEVICE);
  return BigInt(tlb_addr);
}

/** swiotlb_release_slots: gives the slots back, merging with the free run after and before them. */
function swiotlb_release_slots(dev: Device, pool: IoTlbPool, tlb_addr: number): void {
  const offset = swiotlb_align_offset(dev, 0, tlb_addr);
  const index = (tlb_addr - offset - pool.start) >> IO_TLB_SHIFT;
  const allocSize = pool.allocSize[index] ?? 0;
  if ((pool.list[index] ?? 0) !== 0 || allocSize === 0) {
    WARN_ONCE(dev.machine, 'swiotlb_release_slots',
      `WARNING: kernel/dma/swiotlb.c: swiotlb_release_slots: ${dev.name}: 0x${tlb_addr.toString(16)} is not a mapped swiotlb buffer`);
    return;
  }
  const nslots = nr_slots(allocSize + offset);
  let count = index + nslots < Math.ceil((index + 1) / IO_TLB_SEGSIZE) * IO_TLB_SEGSIZE ? (pool.list[index + nslots] ?? 0) : 0;
  for (let i = index + nslots - 1; i >= index; i--) {
    pool.list[i] = ++count;
    pool.orig[i] = INVALID_PHYS_ADDR;
    pool.allocSize[i] = 0;
  }
  for (let i = index - 1; i >= 0 && i % IO_TLB_SEGSIZE !== IO_TLB_SEGSIZE - 1 && (pool.list[i] ?? 0) !== 0; i--) pool.list[i] = ++count;
  const c = pool.res.counters;
  c.used -= nslots;
  c.mapped--;
}

/**
 * swiotlb_tbl_unmap_single: copies the slots back for DMA_FROM_DEVICE / DMA_BIDIRECTIONAL (unless
 * DMA_ATTR_SKIP_CPU_SYNC), then frees them. A no-op for an address outside the pool.
 */
export function swiotlb_tbl_unmap_single(dev: Device, tlb_addr: bigint, mapping_size: number, dir: DmaDataDirection, attrs: number): void {
  if (!is_swiotlb_buffer(dev, tlb_addr)) return;
  const pool = poolOf(dev.machine);
  if (pool === null) return;
  const addr = Number(tlb_addr);
  if (!(attrs & DMA_ATTR_SKIP_CPU_SYNC) && (dir === DMA_FROM_DEVICE || dir === DMA_BIDIRECTIONAL)) {
    swiotlb_bounce(dev, pool, addr, mapping_size, DMA_FROM_DEVICE);
  }
  swiotlb_release_slots(dev, pool, addr);
}

/** swiotlb_sync_single_for_device: slot <- original for DMA_TO_DEVICE / DMA_BIDIRECTIONAL. */
export function swiotlb_sync_single_for_device(dev: Device, tlb_addr: bigint, size: number, dir: DmaDataDirection): void {
  if (!is_swiotlb_buffer(dev, tlb_addr)) return;
  const pool = poolOf(dev.machine);
  if (pool !== null && (dir === DMA_TO_DEVICE || dir === DMA_BIDIRECTIONAL)) swiotlb_bounce(dev, pool, Number(tlb_addr), size, DMA_TO_DEVICE);
}

/** swiotlb_sync_single_for_cpu: original <- slot for DMA_FROM_DEVICE / DMA_BIDIRECTIONAL. */
export function swiotlb_sync_single_for_cpu(dev: Device, tlb_addr: bigint, size: number, dir: DmaDataDirection): void {
  if (!is_swiotlb_buffer(dev, tlb_addr)) return;
  const pool = poolOf(dev.machine);
  if (pool !== null && (dir === DMA_FROM_DEVICE || dir === DMA_BIDIRECTIONAL)) swiotlb_bounce(dev, pool, Number(tlb_addr), size, DMA_FROM_DEVICE);
}
