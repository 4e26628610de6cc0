// The split virtqueue's memory layout (VIRTIO 1.2 §2.7, include/uapi/linux/virtio_ring.h): offsets,
// flags, feature and status bits, and vring_need_event. Constants and pure functions only, importing
// nothing, so that both a driver and a device model (in its worker) can load it.

// ---- Descriptor table: `size` entries of { addr: le64, len: le32, flags: le16, next: le16 } ----

/** sizeof(struct vring_desc). */
export const VRING_DESC_SIZE = 16;
export const VRING_DESC_ADDR = 0;
export const VRING_DESC_LEN = 8;
export const VRING_DESC_FLAGS = 12;
export const VRING_DESC_NEXT = 14;
/** The descriptor table's alignment. */
export const VRING_DESC_ALIGN = 16;

/** The buffer continues in the descriptor named by `next`. */
export const VRING_DESC_F_NEXT = 1;
/** The device writes this buffer (it is device-writable; otherwise device-readable). */
export const VRING_DESC_F_WRITE = 2;
/** The buffer is a table of descriptors (an indirect table), `len` bytes of 16-byte entries. */
export const VRING_DESC_F_INDIRECT = 4;

// ---- Available ring (driver -> device): { flags: le16, idx: le16, ring[size]: le16, used_event: le16 } ----

export const VRING_AVAIL_FLAGS = 0;
export const VRING_AVAIL_IDX = 2;
export const VRING_AVAIL_RING = 4;
export const VRING_AVAIL_ALIGN = 2;
/** avail.flags: the driver asks not to be interrupted (a hint; without EVENT_IDX only). */
export const VRING_AVAIL_F_NO_INTERRUPT = 1;

// ---- Used ring (device -> driver): { flags: le16, idx: le16, ring[size]: { id: le32, len: le32 }, avail_event: le16 } ----

export const VRING_USED_FLAGS = 0;
export const VRING_USED_IDX = 2;
export const VRING_USED_RING = 4;
/** sizeof(struct vring_used_elem). */
export const VRING_USED_ELEM_SIZE = 8;
export const VRING_USED_ELEM_ID = 0;
export const VRING_USED_ELEM_LEN = 4;
export const VRING_USED_ALIGN = 4;
/** used.flags: the device asks not to be notified (a hint; without EVENT_IDX only). */
export const VRING_USED_F_NO_NOTIFY = 1;

/** The largest queue size the split ring allows (sizes are powers of two). */
export const VRING_MAX_SIZE = 32768;

// ---- Feature bits (bit numbers, not masks) ----

export const VIRTIO_RING_F_INDIRECT_DESC = 28;
export const VIRTIO_RING_F_EVENT_IDX = 29;
export const VIRTIO_F_VERSION_1 = 32;
/** The device reaches memory through the platform's DMA translation (the IOMMU). */
export const VIRTIO_F_ACCESS_PLATFORM = 33;
export const VIRTIO_F_RING_PACKED = 34;
export const VIRTIO_F_IN_ORDER = 35;

/** Whether feature bit `bit` is set in a 64-bit feature word. */
export function virtio_has_feature(features: bigint, bit: number): boolean {
  return ((features >> BigInt(bit)) & 1n) === 1n;
}

// ---- Device status bits (include/uapi/linux/virtio_config.h) ----

export const VIRTIO_CONFIG_S_ACKNOWLEDGE = 1;
export const VIRTIO_CONFIG_S_DRIVER = 2;
export const VIRTIO_CONFIG_S_DRIVER_OK = 4;
export const VIRTIO_CONFIG_S_FEATURES_OK = 8;
export const VIRTIO_CONFIG_S_NEEDS_RESET = 0x40;
export const VIRTIO_CONFIG_S_FAILED = 0x80;

// ---- Sizes and offsets ----

/** Bytes of the descriptor table for `num` entries. */
export function vring_desc_size(num: number): number {
  return VRING_DESC_SIZE * num;
}
/** Bytes of the available ring for `num` entries, used_event included. */
export function vring_avail_size(num: number): number {
  return 6 + 2 * num;
}
/** Bytes of the used ring for `num` entries, avail_event included. */
export function vring_used_size(num: number): number {
  return 6 + VRING_USED_ELEM_SIZE * num;
}
/** Offset of used_event (the driver's interrupt threshold) in the available ring. */
export function vring_used_event_offset(num: number): number {
  return VRING_AVAIL_RING + 2 * num;
}
/** Offset of avail_event (the device's notification threshold) in the used ring. */
export function vring_avail_event_offset(num: number): number {
  return VRING_USED_RING + VRING_USED_ELEM_SIZE * num;
}
/** Whether `num` is a queue size the split ring allows: a power of two from 1 to 32768. */
export function vring_size_ok(num: number): boolean {
  return Number.isInteger(num) && num >= 1 && num <= VRING_MAX_SIZE && (num & (num - 1)) === 0;
}

/**
 * vring_need_event: with EVENT_IDX, whether moving an index from `old` to `new_idx` passed
 * `event_idx` (the other side asked to be told once entry `event_idx` is done). All three are
 * free-running 16-bit counters, so the comparison is modulo 2^16.
 */
export function vring_need_event(event_idx: number, new_idx: number, old: number): boolean {
  return ((new_idx - event_idx - 1) & 0xffff) < ((new_idx - old) & 0xffff);
}
