// The virtio core, driver side (drivers/virtio/virtio.c, include/linux/virtio_config.h): struct
// virtio_device, the status helpers, feature tests, configuration reads with the generation retry,
// and breaking a device. A transport (virtio_pci_modern.ts) fills in the config ops.

import type { Device } from '../dma/device';
import type { PciDev } from '../devices/pci_dev';
import {
  VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_CONFIG_S_NEEDS_RESET,
} from '../devices/virtio/virtio_ring_layout';
import { __virtqueue_break, type Virtqueue, type VqCallback } from './virtio_ring';

/** One queue a driver asks for (struct virtqueue_info): its name and callback (null: none). */
export interface VirtqueueInfo {
  readonly name: string;
  readonly callback: VqCallback | null;
}

/** struct virtio_config_ops: what the transport does for the core. */
export interface VirtioConfigOps {
  get_status(vdev: VirtioDevice): number;
  set_status(vdev: VirtioDevice, status: number): void;
  /** Writes 0 and waits until the device reads back 0. */
  reset(vdev: VirtioDevice): void;
  /** The device's 64 feature bits. */
  get_features(vdev: VirtioDevice): bigint;
  /** Writes vdev.features to the device. */
  finalize_features(vdev: VirtioDevice): void;
  /** Reads `size` (1, 2, 4) bytes of device configuration at `offset`. */
  get(vdev: VirtioDevice, offset: number, size: number): number;
  set(vdev: VirtioDevice, offset: number, size: number, value: number): void;
  generation(vdev: VirtioDevice): number;
  /** Sets up the queues (sizes capped at maxSize when given): the queues, or a negative errno. */
  find_vqs(vdev: VirtioDevice, infos: readonly VirtqueueInfo[], maxSize?: number): Virtqueue[] | number;
  del_vqs(vdev: VirtioDevice): void;
}

/** struct virtio_device. */
export class VirtioDevice {
  readonly pdev: PciDev;
  /** The struct device for the DMA API (the PCI function's: dmamem devices always use the DMA API). */
  readonly dev: Device;
  /** The virtio device id (1 net, 2 block...) and the PCI vendor. */
  readonly id: { readonly device: number; readonly vendor: number };
  readonly config: VirtioConfigOps;
  /** The negotiated features (set before finalize_features, kept after FEATURES_OK). */
  features = 0n;
  /** The live queues, in index order. */
  vqs: Virtqueue[] = [];
  /** Set by virtio_break_device: the device asked for a reset or went away. */
  broken = false;
  /** The driver's config_changed hook (virtio_driver.config_changed). */
  config_changed: ((vdev: VirtioDevice) => void) | null = null;
  /** Configuration-change interrupts seen. */
  configChanges = 0;
  /** The driver's data (dev_set_drvdata). */
  priv: unknown = null;

  constructor(pdev: PciDev, id: { device: number; vendor: number }, config: VirtioConfigOps) {
    this.pdev = pdev;
    this.dev = pdev.dev;
    this.id = id;
    this.config = config;
  }
}

/** virtio_has_feature: whether feature bit `fbit` was negotiated. */
export function virtio_has_feature(vdev: VirtioDevice, fbit: number): boolean {
  return ((vdev.features >> BigInt(fbit)) & 1n) === 1n;
}

export function virtio_get_status(vdev: VirtioDevice): number {
  return vdev.config.get_status(vdev);
}

/** virtio_add_status: ORs `status` into the device status. */
export function virtio_add_status(vdev: VirtioDevice, status: number): void {
  vdev.config.set_status(vdev, vdev.config.get_status(vdev) | status);
}

/** virtio_reset_device: the device stops using the rings; after it, buffers may be detached. */
export function virtio_reset_device(vdev: VirtioDevice): void {
  vdev.config.reset(vdev);
}

/** virtio_device_ready: DRIVER_OK (after the queues exist and the receive buffers are in). */
export function virtio_device_ready(vdev: VirtioDevice): void {
  const status = vdev.config.get_status(vdev);
  if ((status & VIRTIO_CONFIG_S_DRIVER_OK) !== 0) throw new Error('kernel BUG at include/linux/virtio_config.h: virtio_device_ready: DRIVER_OK already set');
  vdev.config.set_status(vdev, status | VIRTIO_CONFIG_S_DRIVER_OK);
}

/** virtio_break_device: every queue is broken (nothing added or returned any more). */
export function virtio_break_device(vdev: VirtioDevice): void {
  vdev.broken = true;
  for (const vq of vdev.vqs) __virtqueue_break(vq);
}

/**
 * virtio_config_changed: the configuration interrupt. A device that set DEVICE_NEEDS_RESET is
 * broken here (its queues stop); then the driver's hook runs.
 */
export function virtio_config_changed(vdev: VirtioDevice): void {
  vdev.configChanges++;
  const status = vdev.config.get_status(vdev);
  if (status === 0xff || (status & VIRTIO_CONFIG_S_NEEDS_RESET) !== 0) virtio_break_device(vdev);
  vdev.config_changed?.(vdev);
}

/** virtio_needs_reset: whether the device asked for a reset (polled drivers call it). */
export function virtio_needs_reset(vdev: VirtioDevice): boolean {
  const status = vdev.config.get_status(vdev);
  return status === 0xff || (status & VIRTIO_CONFIG_S_NEEDS_RESET) !== 0;
}

/**
 * The start of virtio_dev_probe: reset, ACKNOWLEDGE, DRIVER, then the features: the device's ANDed
 * with `wanted` (unless `exact`, a buggy driver that writes what it likes), FEATURES_OK, and the
 * re-read that tells whether the device took them.
 * @returns 0, or -ENODEV when the device refused the features (status FAILED is set then).
 */
export function virtio_negotiate(vdev: VirtioDevice, wanted: bigint, exact = false): number {
  virtio_reset_device(vdev);
  virtio_add_status(vdev, VIRTIO_CONFIG_S_ACKNOWLEDGE);
  virtio_add_status(vdev, VIRTIO_CONFIG_S_DRIVER);
  const offered = vdev.config.get_features(vdev);
  vdev.features = exact ? wanted : offered & wanted;
  vdev.config.finalize_features(vdev);
  return virtio_features_ok(vdev);
}

/** virtio_features_ok: sets FEATURES_OK and reads it back. 0, or -ENODEV (and FAILED) when refused. */
export function virtio_features_ok(vdev: VirtioDevice): number {
  virtio_add_status(vdev, VIRTIO_CONFIG_S_FEATURES_OK);
  if ((vdev.config.get_status(vdev) & VIRTIO_CONFIG_S_FEATURES_OK) === 0) {
    vdev.dev.machine.warn(`virtio ${vdev.dev.name}: device refuses features: 0x${vdev.features.toString(16)}`);
    virtio_add_status(vdev, 0x80); // VIRTIO_CONFIG_S_FAILED
    return -19;
  }
  return 0;
}

/** virtio_find_vqs: the transport sets up one queue per info. The queues, or a negative errno. */
export function virtio_find_vqs(vdev: VirtioDevice, infos: readonly VirtqueueInfo[], maxSize?: number): Virtqueue[] | number {
  return vdev.config.find_vqs(vdev, infos, maxSize);
}

/** virtio_del_vqs (vdev->config->del_vqs): interrupts freed, rings freed. After virtio_reset_device. */
export function virtio_del_vqs(vdev: VirtioDevice): void {
  vdev.config.del_vqs(vdev);
}

/** virtio_cread8/16/32: one configuration field (a single access is atomic: no generation check). */
export function virtio_cread8(vdev: VirtioDevice, offset: number): number {
  return vdev.config.get(vdev, offset, 1);
}
export function virtio_cread16(vdev: VirtioDevice, offset: number): number {
  return vdev.config.get(vdev, offset, 2);
}
export function virtio_cread32(vdev: VirtioDevice, offset: number): number {
  return vdev.config.get(vdev, offset, 4);
}
/** virtio_cread64: two 32-bit reads, retried until config_generation did not move between them. */
export function virtio_cread64(vdev: VirtioDevice, offset: number): bigint {
  for (;;) {
    const gen = vdev.config.generation(vdev);
    const lo = vdev.config.get(vdev, offset, 4);
    const hi = vdev.config.get(vdev, offset + 4, 4);
    if (vdev.config.generation(vdev) === gen) return (BigInt(hi) << 32n) | BigInt(lo);
  }
}
/** virtio_cread_bytes: `len` bytes, byte by byte, retried until the generation held still. */
export function virtio_cread_bytes(vdev: VirtioDevice, offset: number, len: number): Uint8Array {
  const out = new Uint8Array(len);
  for (;;) {
    const gen = vdev.config.generation(vdev);
    for (let i = 0; i < len; i++) out[i] = vdev.config.get(vdev, offset + i, 1);
    if (vdev.config.generation(vdev) === gen) return out;
  }
}
export function virtio_cwrite8(vdev: VirtioDevice, offset: number, value: number): void {
  vdev.config.set(vdev, offset, 1, value);
}
export function virtio_cwrite16(vdev: VirtioDevice, offset: number, value: number): void {
  vdev.config.set(vdev, offset, 2, value);
}
export function virtio_cwrite32(vdev: VirtioDevice, offset: number, value: number): void {
  vdev.config.set(vdev, offset, 4, value);
}
