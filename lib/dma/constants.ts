// DMA constants: directions (include/linux/dma-direction.h), DMA_ATTR_* bits, DMA_MAPPING_ERROR and
// DMA_BIT_MASK (include/linux/dma-mapping.h), and the errno values the DMA layer returns (negated).

/** enum dma_data_direction. */
export const DMA_BIDIRECTIONAL = 0;
export const DMA_TO_DEVICE = 1;
export const DMA_FROM_DEVICE = 2;
export const DMA_NONE = 3;

/** A value of enum dma_data_direction. */
export type DmaDataDirection =
  | typeof DMA_BIDIRECTIONAL
  | typeof DMA_TO_DEVICE
  | typeof DMA_FROM_DEVICE
  | typeof DMA_NONE;

/**
 * valid_dma_direction: true for BIDIRECTIONAL, TO_DEVICE and FROM_DEVICE. DMA_NONE is a debugging
 * value that no mapping may use, so it is not valid.
 * @example valid_dma_direction(DMA_TO_DEVICE) // true
 */
export function valid_dma_direction(dir: number): dir is 0 | 1 | 2 {
  return dir === DMA_BIDIRECTIONAL || dir === DMA_TO_DEVICE || dir === DMA_FROM_DEVICE;
}

const DIRECTION_NAMES = ['DMA_BIDIRECTIONAL', 'DMA_TO_DEVICE', 'DMA_FROM_DEVICE', 'DMA_NONE'] as const;

/**
 * The enum name of a direction, for messages (kernel/dma/debug.c dir2name).
 * @example dma_direction_name(DMA_FROM_DEVICE) // 'DMA_FROM_DEVICE'
 */
export function dma_direction_name(dir: number): string {
  return DIRECTION_NAMES[dir] ?? `invalid direction ${dir}`;
}

/** DMA_ATTR_* bits of Linux 6.17. Bits 0 and 3 are unused. */
export const DMA_ATTR_WEAK_ORDERING = 1 << 1; // 0x2
export const DMA_ATTR_WRITE_COMBINE = 1 << 2; // 0x4
export const DMA_ATTR_NO_KERNEL_MAPPING = 1 << 4; // 0x10
export const DMA_ATTR_SKIP_CPU_SYNC = 1 << 5; // 0x20
export const DMA_ATTR_FORCE_CONTIGUOUS = 1 << 6; // 0x40
export const DMA_ATTR_ALLOC_SINGLE_PAGES = 1 << 7; // 0x80
export const DMA_ATTR_NO_WARN = 1 << 8; // 0x100
export const DMA_ATTR_PRIVILEGED = 1 << 9; // 0x200
/** Newer kernels only (after 6.17): the physical address is MMIO, not RAM. */
export const DMA_ATTR_MMIO = 1 << 10; // 0x400

/** ~(dma_addr_t)0: the handle a failed mapping returns (64-bit dma_addr_t). */
export const DMA_MAPPING_ERROR = 0xffff_ffff_ffff_ffffn;

/** DMA_BIT_MASK(0..64), computed once: masks are read on hot paths and BigInt shifts are not free. */
const BIT_MASKS: readonly bigint[] = Array.from({ length: 65 }, (_, n) => (n === 64 ? 0xffffffffffffffffn : (1n << BigInt(n)) - 1n));

/**
 * DMA_BIT_MASK(n): 2^n - 1 as a 64-bit mask; DMA_BIT_MASK(64) is all ones. A shift of 64 is
 * undefined in C, which is why the kernel macro special-cases it.
 * @throws RangeError unless n is an integer in 0..64.
 * @example DMA_BIT_MASK(32) // 0xffffffffn
 */
export function DMA_BIT_MASK(n: number): bigint {
  const mask = BIT_MASKS[n];
  if (mask === undefined || !Number.isInteger(n)) {
    throw new RangeError(`Expected an integer in 0..64 for n but received ${String(n)}`);
  }
  return mask;
}

/**
 * errno values (include/uapi/asm-generic/errno-base.h, errno.h). Positive, like the C macros:
 * kernel-style functions return them negated, e.g. `return -ENXIO`.
 */
export const EIO = 5;
export const ENXIO = 6;
export const ENOMEM = 12;
export const EACCES = 13;
export const EBUSY = 16;
export const ENODEV = 19;
export const EINVAL = 22;
export const ENOSYS = 38;
export const EOPNOTSUPP = 95;
export const EREMOTEIO = 121;

/** SIZE_MAX as the largest size a number holds exactly: "no limit" for dma_max_mapping_size. */
export const SIZE_MAX = Number.MAX_SAFE_INTEGER;
