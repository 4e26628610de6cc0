// Per-device coherent memory pools: kernel/dma/coherent.c. One pool per device, carved out of
// memory declared for it, handed out in power-of-two runs through a bitmap.

import { PAGE_ALIGN, PAGE_SHIFT, PAGE_SIZE, get_order } from '../mm/gfp';
import { remap_pfn_range, vma_pages, type VmArea } from '../mm/vma';
import { EBUSY, EINVAL, ENODEV, ENXIO } from './constants';
import type { Device } from './device';
import type { Box } from './ops';
import { checkDevice, checkLiveDevice } from './validate';
import { checkBigint, checkSize } from '../mm/validate';

/** struct dma_coherent_mem. */
export class CoherentPool {
  /** Bitmap of `size` pages, one byte per page: 1 = handed out. */
  readonly bitmap: Uint8Array;

  constructor(
    /** CPU address of the pool's first byte (memremap of phys). */
    readonly virt_base: number,
    /** Bus address of the pool's first byte, as declared. */
    readonly device_base: bigint,
    /** PFN of the pool's first page (PFN_DOWN(phys)). */
    readonly pfn_base: number,
    /** Pages in the pool (size >> PAGE_SHIFT). */
    readonly size: number,
    /** DT and global pools: bus addresses come from phys_to_dma(pfn_base), not device_base. */
    readonly use_dev_dma_pfn_offset = false,
  ) {
    this.bitmap = new Uint8Array(size);
  }

  /** Pages handed out. */
  get used(): number {
    let n = 0;
    for (const b of this.bitmap) n += b;
    return n;
  }
}

/** dma_get_device_base. phys_to_dma is phys + the device's bus offset in this model. */
function dma_get_device_base(dev: Device, mem: CoherentPool): bigint {
  if (mem.use_dev_dma_pfn_offset) return (BigInt(mem.pfn_base) << BigInt(PAGE_SHIFT)) + dev.busOffset;
  return mem.device_base;
}

/** dev_get_coherent_memory. */
function dev_get_coherent_memory(dev: Device | null): CoherentPool | null {
  return dev?.dma_mem ?? null;
}

/**
 * dma_declare_coherent_memory: give `dev` a pool of `size` bytes of memory at `phys_addr`, which
 * the device sees at `device_addr`. Here memremap succeeds only for memory of the device's
 * machine (the whole range inside one segment), and its result is the linear-map address.
 * @returns 0; -EINVAL for size 0 or a range memremap refuses; -ENODEV for a null device (checked
 *   after the size: without a device there is no machine to memremap on); -EBUSY when the device
 *   already has a pool (one pool per device; the new one is dropped). No retry helps.
 * @example dma_declare_coherent_memory(dev, page_to_phys(page), 0x8000_0000n, 16 * 4096) // 0
 */
export function dma_declare_coherent_memory(dev: Device | null, phys_addr: bigint, device_addr: bigint, size: number): number {
  const fn = 'dma_declare_coherent_memory';
  if (dev !== null) checkLiveDevice(fn, dev);
  checkBigint(fn, 'phys_addr', phys_addr);
  checkBigint(fn, 'device_addr', device_addr);
  checkSize(fn, 'size', size);
  if (size === 0) return -EINVAL;
  if (dev === null) return -ENODEV;
  const m = dev.machine;
  // memremap(MEMREMAP_WC): only this machine's memory can be mapped, and only within one
  // segment, since segments need not be adjacent in the linear map.
  if (phys_addr < 0n || !Number.isSafeInteger(size) || size < 0) return -EINVAL;
  const pfn = Number(phys_addr >> BigInt(PAGE_SHIFT));
  const seg = m.segmentOfPfn(pfn);
  const end = phys_addr + BigInt(size);
  if (seg === null || end > BigInt(seg.startPfn + seg.pages) << BigInt(PAGE_SHIFT)) return -EINVAL;
  const mem = new CoherentPool(m.phys_to_virt(phys_addr), device_addr, pfn, Math.floor(size / PAGE_SIZE));
  if (dev.dma_mem !== null) return -EBUSY;
  dev.dma_mem = mem;
  return 0;
}

/** dma_release_coherent_memory: drop the device's pool (allocations from it become invalid). */
export function dma_release_coherent_memory(dev: Device | null): void {
  if (dev !== null) checkDevice('dma_release_coherent_memory', dev);
  if (dev !== null) dev.dma_mem = null;
}

/**
 * bitmap_find_free_region: the first run of 2^order free bits that starts on a multiple of
 * 2^order, marked used. Returns its first bit, or -1 (the kernel's -ENOMEM).
 */
function bitmap_find_free_region(bitmap: Uint8Array, bits: number, order: number): number {
  const len = 2 ** order;
  for (let pos = 0; pos + len <= bits; pos += len) {
    let free = true;
    for (let i = pos; i < pos + len; i++) {
      if (bitmap[i] !== 0) {
        free = false;
        break;
      }
    }
    if (!free) continue;
    bitmap.fill(1, pos, pos + len);
    return pos;
  }
  return -1;
}

/**
 * dma_alloc_from_dev_coherent: allocate from the device's pool.
 * @returns 0 when the device has no pool (ret and dma_handle untouched); otherwise 1, even on
 *   failure, with ret.value = the CPU address or null (size larger than the pool, or no free
 *   aligned run of 2^get_order(size) pages). The caller must not fall back on another allocator
 *   once the pool has claimed the request. Only `size` bytes are zeroed.
 */
export function dma_alloc_from_dev_coherent(dev: Device | null, size: number, dma_handle: Box<bigint>, ret: Box<number | null>): number {
  const mem = dev_get_coherent_memory(dev);
  if (dev === null || mem === null) return 0;
  ret.value = null;
  if (size > mem.size * PAGE_SIZE) return 1;
  const pageno = bitmap_find_free_region(mem.bitmap, mem.size, get_order(size));
  if (pageno < 0) return 1;
  dma_handle.value = dma_get_device_base(dev, mem) + (BigInt(pageno) << BigInt(PAGE_SHIFT));
  const vaddr = mem.virt_base + pageno * PAGE_SIZE;
  dev.machine.memset(vaddr, 0, size);
  ret.value = vaddr;
  return 1;
}

/**
 * dma_release_from_dev_coherent: if `vaddr` lies in the device's pool, release the 2^order pages
 * at its page (bitmap_release_region) and return 1; otherwise return 0 (not pool memory).
 */
export function dma_release_from_dev_coherent(dev: Device | null, order: number, vaddr: number | null): number {
  const mem = dev_get_coherent_memory(dev);
  if (mem === null || vaddr === null) return 0;
  if (vaddr < mem.virt_base || vaddr >= mem.virt_base + mem.size * PAGE_SIZE) return 0;
  const page = Math.floor((vaddr - mem.virt_base) / PAGE_SIZE);
  // bitmap_clear(pos, BIT(order)); clipped to the pool where C would write past the bitmap.
  mem.bitmap.fill(0, page, Math.min(mem.size, page + 2 ** order));
  return 1;
}

/**
 * True when pages [off, off + user_count) lie inside a buffer of `count` pages, written so that it
 * cannot overflow: `off >= count || user_count > count - off` fails. `off` is vm_pgoff, which may
 * exceed 2^53 (ULONG_MAX, say): a number that large is still compared correctly with count
 * (at most 2^41), and a bigint is accepted too.
 */
export function dma_mmap_range_ok(off: number | bigint, count: number, user_count: number): boolean {
  if (typeof off === 'bigint') {
    if (off < 0n || off >= BigInt(count)) return false;
    off = Number(off);
  }
  if (!(off >= 0) || off >= count) return false;
  return user_count <= count - off;
}

/**
 * dma_mmap_from_dev_coherent: map pool memory into a user VMA. The pool claims the request when
 * [vaddr, vaddr + size) (raw size, not page-aligned) lies inside it.
 * @returns 0 when there is no pool or the range is not pool memory (ret untouched); otherwise 1,
 *   with ret.value = -ENXIO when pgoff / the VMA length fall outside the buffer's pages, else
 *   remap_pfn_range's result (0, or -EINVAL ...). The caller must not fall back once claimed.
 */
export function dma_mmap_from_dev_coherent(dev: Device | null, vma: VmArea, vaddr: number, size: number, ret: Box<number>): number {
  const mem = dev_get_coherent_memory(dev);
  if (mem === null) return 0;
  if (!(vaddr >= mem.virt_base && vaddr + size <= mem.virt_base + mem.size * PAGE_SIZE)) return 0;
  const off = vma.vm_pgoff;
  const start = Math.floor((vaddr - mem.virt_base) / PAGE_SIZE);
  const user_count = vma_pages(vma);
  const count = PAGE_ALIGN(size) / PAGE_SIZE;
  ret.value = -ENXIO;
  if (dma_mmap_range_ok(off, count, user_count)) {
    ret.value = remap_pfn_range(vma, vma.vm_start, mem.pfn_base + start + off, user_count * PAGE_SIZE, vma.vm_page_prot);
  }
  return 1;
}
