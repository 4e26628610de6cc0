// The two-step IOVA API (drivers/iommu/dma-iommu.c, include/linux/dma-mapping.h): a driver
// allocates one IOVA range for a whole transfer, links physical ranges into it one by one, syncs
// once, and unlinks/destroys it in one go. Only for devices behind an IOMMU (dma_use_iova).

import { PAGE_SIZE } from '../mm/gfp';
import { checkBigint, checkInt, checkSize, describeValue } from '../mm/validate';
import { WARN_ONCE } from './bug';
import { DMA_ATTR_SKIP_CPU_SYNC, EIO, type DmaDataDirection } from './constants';
import { use_dma_iommu, type Device } from './device';
import { arch_sync_dma_for_cpu, arch_sync_dma_for_device } from './direct';
import { dma_info_to_prot, iommu_dma_alloc_iova, iommu_dma_free_iova } from './dma_iommu';
import { iommu_get_dma_domain, iommu_map } from './iommu';
import { dma_get_mask } from './mask';
import { checkDevice, checkDirection } from './validate';

/**
 * struct dma_iova_state: the IOVA of a transfer (addr, with the first range's offset in its page)
 * and its size. A size of 0 means dma_iova_try_alloc did not allocate: use the page/sg API instead.
 */
export class DmaIovaState {
  addr = 0n;
  /** __size (this model never bounces through swiotlb here, so no DMA_IOVA_USE_SWIOTLB bit). */
  size = 0;
}

function checkState(fn: string, state: unknown): asserts state is DmaIovaState {
  if (!(state instanceof DmaIovaState)) throw new TypeError(`${fn}: Expected a DmaIovaState for state but received ${describeValue(state)}`);
}

function checkAttrs(fn: string, attrs: number): void {
  checkInt(fn, 'attrs', attrs, 0, 0xffffffff);
}

/** dma_use_iova: whether the state holds an IOVA range (dma_iova_try_alloc succeeded). */
export function dma_use_iova(state: DmaIovaState): boolean {
  checkState('dma_use_iova', state);
  return state.size !== 0;
}

/** dma_iova_size: the size the range was allocated for. */
export function dma_iova_size(state: DmaIovaState): number {
  checkState('dma_iova_size', state);
  return state.size;
}

/**
 * dma_iova_try_alloc: zero the state, then allocate an IOVA range for `size` bytes starting at
 * phys's offset in its page (iommu_dma_alloc_iova: 32-bit first for a PCI device). false for a
 * device not behind an IOMMU, a size of 0 (WARN_ON_ONCE) or when the IOVA space is full.
 */
export function dma_iova_try_alloc(dev: Device, state: DmaIovaState, phys: bigint, size: number): boolean {
  checkDevice('dma_iova_try_alloc', dev);
  checkState('dma_iova_try_alloc', state);
  checkBigint('dma_iova_try_alloc', 'phys', phys);
  checkSize('dma_iova_try_alloc', 'size', size);
  if (phys < 0n) throw new RangeError(`dma_iova_try_alloc: Expected a non-negative phys but received ${phys}`);
  state.addr = 0n;
  state.size = 0;
  if (!use_dma_iommu(dev)) return false;
  if (size === 0) {
    WARN_ONCE(dev.machine, 'dma_iova_try_alloc', `WARNING: drivers/iommu/dma-iommu.c: dma_iova_try_alloc: size 0 [device=${dev.name}]`);
    return false;
  }
  const domain = iommu_get_dma_domain(dev);
  const iova_off = Number(phys % BigInt(PAGE_SIZE));
  const pfn = iommu_dma_alloc_iova(dev, domain, Math.ceil((size + iova_off) / PAGE_SIZE), dma_get_mask(dev));
  if (pfn === 0) return false;
  state.addr = BigInt(pfn * PAGE_SIZE + iova_off);
  state.size = size;
  return true;
}

/**
 * dma_iova_free: give the IOVA range back at once, without touching the page table (for a range
 * with nothing linked, or everything unlinked already).
 */
export function dma_iova_free(dev: Device, state: DmaIovaState): void {
  checkDevice('dma_iova_free', dev);
  checkState('dma_iova_free', state);
  const domain = iommu_get_dma_domain(dev);
  const pad = Number(state.addr % BigInt(PAGE_SIZE));
  iommu_dma_free_iova(domain, (Number(state.addr) - pad) / PAGE_SIZE, false);
}

/**
 * dma_iova_link: map [phys, phys + size) at state->addr + offset, with the direction's
 * permission (CPU caches written back first for a non-coherent device). An unaligned phys is
 * only allowed at offset 0 (WARN_ON_ONCE and -EIO). @returns 0 or iommu_map's errno (-EEXIST
 * when the IOVA is mapped already, -EINVAL for DMA_NONE or a misaligned IOVA).
 */
export function dma_iova_link(dev: Device, state: DmaIovaState, phys: bigint, offset: number, size: number, dir: DmaDataDirection, attrs = 0): number {
  const fn = 'dma_iova_link';
  checkDevice(fn, dev);
  checkState(fn, state);
  checkBigint(fn, 'phys', phys);
  checkSize(fn, 'offset', offset);
  checkSize(fn, 'size', size);
  checkDirection(dir, fn);
  checkAttrs(fn, attrs);
  if (phys < 0n) throw new RangeError(`${fn}: Expected a non-negative phys but received ${phys}`);
  const domain = iommu_get_dma_domain(dev);
  const pad = Number(phys % BigInt(PAGE_SIZE));
  if (pad !== 0 && offset > 0) {
    WARN_ONCE(dev.machine, fn, `WARNING: drivers/iommu/dma-iommu.c: dma_iova_link: unaligned phys 0x${phys.toString(16)} at offset ${offset} [device=${dev.name}]`);
    return -EIO;
  }
  const coherent = dev.dma_coherent;
  const len = Math.ceil((size + pad) / PAGE_SIZE) * PAGE_SIZE;
  const prot = dma_info_to_prot(dir, coherent, attrs);
  const iova = state.addr + BigInt(offset - pad);
  const paddr = phys - BigInt(pad);
  if (!coherent && !(attrs & DMA_ATTR_SKIP_CPU_SYNC)) arch_sync_dma_for_device(dev, paddr, len, dir);
  return iommu_map(domain, iova, paddr, len, prot);
}

/**
 * dma_iova_sync: make the links of [offset, offset + size) visible to the device
 * (iommu_sync_map). New PTEs need no IOTLB flush on this IOMMU, so it only checks and returns 0.
 */
export function dma_iova_sync(dev: Device, state: DmaIovaState, offset: number, size: number): number {
  checkDevice('dma_iova_sync', dev);
  checkState('dma_iova_sync', state);
  checkSize('dma_iova_sync', 'offset', offset);
  checkSize('dma_iova_sync', 'size', size);
  iommu_get_dma_domain(dev);
  return 0;
}

/**
 * __iommu_dma_iova_unlink: CPU caches synced per page for a non-coherent device, PTEs cleared
 * (WARN when fewer were mapped); the IOTLB is flushed now unless the IOVA is freed through the
 * flush queue (lazy destroy), which flushes later.
 */
function iova_unlink(fn: string, dev: Device, state: DmaIovaState, offset: number, size: number, dir: DmaDataDirection, attrs: number, free: boolean): void {
  const domain = iommu_get_dma_domain(dev);
  const addr = Number(state.addr) + offset;
  const pad = addr % PAGE_SIZE;
  if (!dev.dma_coherent && !(attrs & DMA_ATTR_SKIP_CPU_SYNC)) {
    // iommu_dma_iova_unlink_range_slow: each page by the physical address it maps.
    for (let done = 0; done < size;) {
      const a = addr + done;
      const len = Math.min(size - done, PAGE_SIZE - (a % PAGE_SIZE));
      const phys = domain.translate(a);
      if (phys >= 0) arch_sync_dma_for_cpu(dev, BigInt(phys), len, dir);
      done += len;
    }
  }
  const first = (addr - pad) / PAGE_SIZE;
  const pages = Math.ceil((size + pad) / PAGE_SIZE);
  const queued = free && !domain.strict;
  const unmapped = pages === 0 ? 0 : domain.unmapPages(first, pages);
  if (unmapped !== pages) {
    dev.machine.warn(`WARNING: drivers/iommu/dma-iommu.c: ${fn}: ${dev.name}: unmapped ${unmapped * PAGE_SIZE} of ${pages * PAGE_SIZE} bytes at IOVA 0x${(addr - pad).toString(16)}`);
  }
  if (!queued) domain.iotlb_sync();
  if (free) iommu_dma_free_iova(domain, first, queued);
}

function checkUnlink(fn: string, dev: Device, state: DmaIovaState, offset: number, size: number, dir: DmaDataDirection, attrs: number): void {
  checkDevice(fn, dev);
  checkState(fn, state);
  checkSize(fn, 'offset', offset);
  checkSize(fn, 'size', size);
  checkDirection(dir, fn);
  checkAttrs(fn, attrs);
  iommu_get_dma_domain(dev);
}

/** dma_iova_unlink: unmap [offset, offset + size) of the range and flush the IOTLB; the IOVA stays allocated. */
export function dma_iova_unlink(dev: Device, state: DmaIovaState, offset: number, size: number, dir: DmaDataDirection, attrs = 0): void {
  checkUnlink('dma_iova_unlink', dev, state, offset, size, dir, attrs);
  iova_unlink('dma_iova_unlink', dev, state, offset, size, dir, attrs, false);
}

/**
 * dma_iova_destroy: unlink the first mapped_len bytes and free the IOVA (queued until the next
 * flush in lazy mode); with mapped_len 0 (the first link failed) just dma_iova_free.
 */
export function dma_iova_destroy(dev: Device, state: DmaIovaState, mapped_len: number, dir: DmaDataDirection, attrs = 0): void {
  checkUnlink('dma_iova_destroy', dev, state, 0, mapped_len, dir, attrs);
  if (mapped_len === 0) dma_iova_free(dev, state);
  else iova_unlink('dma_iova_destroy', dev, state, 0, mapped_len, dir, attrs, true);
}
