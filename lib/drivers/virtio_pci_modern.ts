// The virtio-pci modern transport, driver side (drivers/virtio/virtio_pci_modern.c and
// virtio_pci_common.c): maps BAR 0's regions (at the fixed offsets of lib/devices/virtio/virtio_pci.ts,
// as this PCI model has no capability list), features over the 32-bit select windows, status,
// queues from vring_create_virtqueue with their addresses written, and interrupts: MSI-X (vector 0
// configuration, vector 1 + i queue i), shared INTx reading the ISR, or none (polled).

import { DMA_BIT_MASK, ENOMEM } from '../dma/constants';
import { dma_set_mask_and_coherent } from '../dma/mapping';
import type { PciDev } from '../devices/pci_dev';
import { dmaDebugAccessCheck } from '../devices/access_check';
import { drainAccesses } from '../devices/pci_state';
import {
  PCI_VENDOR_ID_REDHAT_QUMRANET, VIRTIO_MSI_NO_VECTOR, VIRTIO_PCI_COMMON_CFGGENERATION, VIRTIO_PCI_COMMON_DF,
  VIRTIO_PCI_COMMON_DFSELECT, VIRTIO_PCI_COMMON_GF, VIRTIO_PCI_COMMON_GFSELECT, VIRTIO_PCI_COMMON_MSIX,
  VIRTIO_PCI_COMMON_NUMQ, VIRTIO_PCI_COMMON_OFFSET, VIRTIO_PCI_COMMON_Q_AVAILHI, VIRTIO_PCI_COMMON_Q_AVAILLO,
  VIRTIO_PCI_COMMON_Q_DESCHI, VIRTIO_PCI_COMMON_Q_DESCLO, VIRTIO_PCI_COMMON_Q_ENABLE, VIRTIO_PCI_COMMON_Q_MSIX,
  VIRTIO_PCI_COMMON_Q_NOFF, VIRTIO_PCI_COMMON_Q_SELECT, VIRTIO_PCI_COMMON_Q_SIZE, VIRTIO_PCI_COMMON_Q_USEDHI,
  VIRTIO_PCI_COMMON_Q_USEDLO, VIRTIO_PCI_COMMON_SIZE, VIRTIO_PCI_COMMON_STATUS, VIRTIO_PCI_DEVICE_MAX,
  VIRTIO_PCI_DEVICE_OFFSET, VIRTIO_PCI_ISR_CONFIG, VIRTIO_PCI_ISR_OFFSET, VIRTIO_PCI_ISR_QUEUE, VIRTIO_PCI_MODERN_DEVICE_BASE,
  VIRTIO_PCI_NOTIFY_OFF_MULTIPLIER, VIRTIO_PCI_NOTIFY_OFFSET,
} from '../devices/virtio/virtio_pci';
import {
  VIRTIO_F_ACCESS_PLATFORM, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC,
} from '../devices/virtio/virtio_ring_layout';
import { IoMem, ioread16, ioread32, ioread8, iowrite16, iowrite32, iowrite8, pci_iomap } from './io';
import {
  IRQF_SHARED, IRQ_HANDLED, IRQ_NONE, PCI_IRQ_INTX, PCI_IRQ_MSIX, free_irq, pci_alloc_irq_vectors, pci_free_irq_vectors,
  pci_irq_vector, request_irq,
} from './irq';
import { pci_disable_device, pci_enable_device, pci_set_master } from './pci';
import {
  VirtioDevice, virtio_config_changed, virtio_has_feature, virtio_negotiate, type VirtioConfigOps, type VirtqueueInfo,
} from './virtio';
import {
  type Virtqueue, virtqueue_get_avail_addr, virtqueue_get_desc_addr, virtqueue_get_used_addr, vring_create_virtqueue,
  vring_del_virtqueue, vring_interrupt,
} from './virtio_ring';

const ENODEV = 19;
const EINVAL = 22;
const EBUSY = 16;
const ENOENT = 2;

/** How the queues interrupt: MSI-X vectors, one shared INTx line, or not at all (the driver polls). */
export type VirtioIrqMode = 'msix' | 'intx' | 'poll';

export interface VirtioPciProbeOptions {
  /** Features the driver wants, beyond the transport's (VERSION_1, ACCESS_PLATFORM, EVENT_IDX, INDIRECT_DESC). */
  features?: bigint;
  /** Interrupts: 'msix' (default; INTx when the device has no MSI-X), 'intx' or 'poll'. */
  irq?: VirtioIrqMode;
  /** Leave these transport features out (e.g. EVENT_IDX to test the other suppression). */
  without?: bigint;
  /** A buggy driver: write exactly `features` (not ANDed with the device's). */
  exact?: boolean;
}

/** struct virtio_pci_device: the modern transport's state behind a VirtioDevice. */
interface VirtioPciState {
  readonly common: IoMem;
  readonly isr: IoMem;
  readonly device: IoMem;
  readonly notify: IoMem;
  readonly mode: VirtioIrqMode;
  /** Queue sizes the device offers, read at probe. */
  readonly numQueues: number;
  /** Linux irq numbers requested (with their dev_id), freed at del_vqs. */
  irqs: { irq: number; dev_id: unknown }[];
  vectorsAllocated: boolean;
}

const states = new WeakMap<VirtioDevice, VirtioPciState>();

/** Per worker device with DMA-API debug on: the check its logged accesses go through here. */
const accessChecks = new WeakMap<PciDev, (addr: number, length: number, write: boolean) => void>();

/**
 * Checks a worker device's logged bus accesses against the live mappings now (DMA-API debug), as the
 * PCI layer does before it delivers an interrupt. A driver that polls the used ring must do it
 * before it unmaps what the device returned, or the accesses are checked after the unmap and
 * reported as touching unmapped memory. Nothing to do inline (checked at the access) or with debug off.
 */
export function vp_sync_device_accesses(pdev: PciDev): void {
  if (!pdev.inWorker || !pdev.alive || !pdev.dev.debug.enabled) return;
  let check = accessChecks.get(pdev);
  if (check === undefined) {
    const c = dmaDebugAccessCheck(pdev.dev);
    if (c === null) return;
    accessChecks.set(pdev, check = c);
  }
  const lost = drainAccesses(pdev.controlWords, check);
  if (lost > 0) pdev.dev.machine.warn(`DMA-API: ${pdev.dev.name}: ${lost} device accesses were not checked (the access log was full)`);
}

function st(vdev: VirtioDevice): VirtioPciState {
  const s = states.get(vdev);
  if (s === undefined) throw new TypeError(`virtio_pci: ${vdev.dev.name} is not a virtio-pci modern device`);
  return s;
}

/** The transport features this driver always accepts (vp_transport_features). */
export const VIRTIO_PCI_DRIVER_FEATURES =
  (1n << BigInt(VIRTIO_F_VERSION_1)) | (1n << BigInt(VIRTIO_F_ACCESS_PLATFORM)) |
  (1n << BigInt(VIRTIO_RING_F_EVENT_IDX)) | (1n << BigInt(VIRTIO_RING_F_INDIRECT_DESC));

function vp_get_status(vdev: VirtioDevice): number {
  return ioread8(st(vdev).common, VIRTIO_PCI_COMMON_STATUS);
}

function vp_set_status(vdev: VirtioDevice, status: number): void {
  // Zero is reset: only vp_reset writes it.
  if (status === 0) throw new Error('kernel BUG at drivers/virtio/virtio_pci_modern.c: vp_set_status(0): use reset');
  iowrite8(status, st(vdev).common, VIRTIO_PCI_COMMON_STATUS);
}

function vp_reset(vdev: VirtioDevice): void {
  const s = st(vdev);
  iowrite8(0, s.common, VIRTIO_PCI_COMMON_STATUS);
  // The device must read back 0 once the reset is done (all-ones: the device is gone).
  for (let i = 0; i < 1000; i++) {
    const v = ioread8(s.common, VIRTIO_PCI_COMMON_STATUS);
    if (v === 0 || v === 0xff) {
      // The device stopped: what it did before is checked while the buffers are still mapped.
      vp_sync_device_accesses(vdev.pdev);
      return;
    }
  }
  vdev.dev.machine.warn(`virtio_pci ${vdev.dev.name}: reset did not complete`);
}

function vp_get_features(vdev: VirtioDevice): bigint {
  const c = st(vdev).common;
  iowrite32(0, c, VIRTIO_PCI_COMMON_DFSELECT);
  const lo = ioread32(c, VIRTIO_PCI_COMMON_DF);
  iowrite32(1, c, VIRTIO_PCI_COMMON_DFSELECT);
  const hi = ioread32(c, VIRTIO_PCI_COMMON_DF);
  return (BigInt(hi) << 32n) | BigInt(lo);
}

function vp_finalize_features(vdev: VirtioDevice): void {
  const c = st(vdev).common;
  const f = BigInt.asUintN(64, vdev.features);
  iowrite32(0, c, VIRTIO_PCI_COMMON_GFSELECT);
  iowrite32(Number(f & 0xffffffffn), c, VIRTIO_PCI_COMMON_GF);
  iowrite32(1, c, VIRTIO_PCI_COMMON_GFSELECT);
  iowrite32(Number(f >> 32n), c, VIRTIO_PCI_COMMON_GF);
}

function vp_get(vdev: VirtioDevice, offset: number, size: number): number {
  const d = st(vdev).device;
  return size === 1 ? ioread8(d, offset) : size === 2 ? ioread16(d, offset) : ioread32(d, offset);
}

function vp_set(vdev: VirtioDevice, offset: number, size: number, value: number): void {
  const d = st(vdev).device;
  if (size === 1) iowrite8(value, d, offset);
  else if (size === 2) iowrite16(value, d, offset);
  else iowrite32(value, d, offset);
}

function vp_generation(vdev: VirtioDevice): number {
  return ioread8(st(vdev).common, VIRTIO_PCI_COMMON_CFGGENERATION);
}

/** vp_interrupt: the shared INTx handler. Reading the ISR acknowledges it. */
function vp_interrupt(_irq: number, dev_id: unknown): number {
  const vdev = dev_id as VirtioDevice;
  const isr = ioread8(st(vdev).isr, 0);
  if (isr === 0 || isr === 0xff) return IRQ_NONE;
  if ((isr & VIRTIO_PCI_ISR_CONFIG) !== 0) virtio_config_changed(vdev);
  if ((isr & VIRTIO_PCI_ISR_QUEUE) !== 0) for (const vq of vdev.vqs) vring_interrupt(_irq, vq);
  return IRQ_HANDLED;
}

function vp_config_changed(_irq: number, dev_id: unknown): number {
  virtio_config_changed(dev_id as VirtioDevice);
  return IRQ_HANDLED;
}

function vp_vring_interrupt(irq: number, dev_id: unknown): number {
  return vring_interrupt(irq, dev_id as Virtqueue);
}

/** setup_vq: one queue, its rings written to the device (not yet enabled). */
function setup_vq(vdev: VirtioDevice, s: VirtioPciState, index: number, info: VirtqueueInfo, vector: number, maxSize: number): Virtqueue | number {
  const c = s.common;
  iowrite16(index, c, VIRTIO_PCI_COMMON_Q_SELECT);
  const max = ioread16(c, VIRTIO_PCI_COMMON_Q_SIZE);
  if (max === 0 || max === 0xffff || ioread16(c, VIRTIO_PCI_COMMON_Q_ENABLE) !== 0) return -ENOENT;
  let num = max;
  while (num > maxSize) num >>>= 1;
  const noff = ioread16(c, VIRTIO_PCI_COMMON_Q_NOFF);
  const notifyAt = noff * VIRTIO_PCI_NOTIFY_OFF_MULTIPLIER;
  const notify = s.notify;
  const pdev = vdev.pdev;
  const vq = vring_create_virtqueue(vdev.dev, num, (q) => {
    // vp_notify: the queue index to its doorbell; false once the device is gone.
    iowrite16(q.index, notify, notifyAt);
    return pdev.alive;
  }, info.name, {
    eventIdx: virtio_has_feature(vdev, VIRTIO_RING_F_EVENT_IDX),
    indirect: virtio_has_feature(vdev, VIRTIO_RING_F_INDIRECT_DESC),
    callback: s.mode === 'poll' ? null : info.callback,
    index,
    sync: pdev.inWorker && vdev.dev.debug.enabled ? () => vp_sync_device_accesses(pdev) : null,
  });
  if (vq === null) return -ENOMEM;
  iowrite16(num, c, VIRTIO_PCI_COMMON_Q_SIZE);
  const w64 = (lo: number, hi: number, v: bigint): void => {
    iowrite32(Number(v & 0xffffffffn), c, lo);
    iowrite32(Number(v >> 32n), c, hi);
  };
  w64(VIRTIO_PCI_COMMON_Q_DESCLO, VIRTIO_PCI_COMMON_Q_DESCHI, virtqueue_get_desc_addr(vq));
  w64(VIRTIO_PCI_COMMON_Q_AVAILLO, VIRTIO_PCI_COMMON_Q_AVAILHI, virtqueue_get_avail_addr(vq));
  w64(VIRTIO_PCI_COMMON_Q_USEDLO, VIRTIO_PCI_COMMON_Q_USEDHI, virtqueue_get_used_addr(vq));
  if (vector !== VIRTIO_MSI_NO_VECTOR) {
    iowrite16(vector, c, VIRTIO_PCI_COMMON_Q_MSIX);
    if (ioread16(c, VIRTIO_PCI_COMMON_Q_MSIX) !== vector) {
      vring_del_virtqueue(vq);
      return -EBUSY;
    }
  }
  return vq;
}

function release_irqs(s: VirtioPciState, vdev: VirtioDevice): void {
  for (const { irq, dev_id } of s.irqs.splice(0)) free_irq(irq, dev_id);
  if (s.vectorsAllocated) {
    pci_free_irq_vectors(vdev.pdev);
    s.vectorsAllocated = false;
  }
}

/** vp_find_vqs: the interrupts for the chosen mode, then each queue, then all enabled at once. */
function vp_find_vqs(vdev: VirtioDevice, infos: readonly VirtqueueInfo[], maxSize = 32768): Virtqueue[] | number {
  const s = st(vdev);
  if (vdev.vqs.length > 0) return -EBUSY;
  if (infos.length > s.numQueues) return -ENOENT;
  const name = vdev.dev.name;
  let msix = false;
  if (s.mode === 'msix') {
    const want = infos.length + 1;
    if (pci_alloc_irq_vectors(vdev.pdev, want, want, PCI_IRQ_MSIX) === want) {
      msix = true;
      s.vectorsAllocated = true;
    }
  }
  if (!msix && s.mode !== 'poll') {
    if (pci_alloc_irq_vectors(vdev.pdev, 1, 1, PCI_IRQ_INTX) !== 1) return -EINVAL;
    s.vectorsAllocated = true;
    if (request_irq(vdev.pdev.irq, vp_interrupt, IRQF_SHARED, `virtio-${name}`, vdev) !== 0) {
      release_irqs(s, vdev);
      return -EBUSY;
    }
    s.irqs.push({ irq: vdev.pdev.irq, dev_id: vdev });
  }
  const fail = (err: number): number => {
    for (const vq of vdev.vqs.splice(0)) vring_del_virtqueue(vq);
    release_irqs(s, vdev);
    iowrite16(VIRTIO_MSI_NO_VECTOR, s.common, VIRTIO_PCI_COMMON_MSIX);
    return err;
  };
  if (msix) {
    const irq = pci_irq_vector(vdev.pdev, 0);
    if (request_irq(irq, vp_config_changed, 0, `virtio-${name}-config`, vdev) !== 0) return fail(-EBUSY);
    s.irqs.push({ irq, dev_id: vdev });
    iowrite16(0, s.common, VIRTIO_PCI_COMMON_MSIX);
    if (ioread16(s.common, VIRTIO_PCI_COMMON_MSIX) !== 0) return fail(-EBUSY);
  }
  for (let i = 0; i < infos.length; i++) {
    const info = infos[i]!;
    const vq = setup_vq(vdev, s, i, info, msix ? i + 1 : VIRTIO_MSI_NO_VECTOR, maxSize);
    if (typeof vq === 'number') return fail(vq);
    vdev.vqs.push(vq);
    if (msix && info.callback !== null) {
      const irq = pci_irq_vector(vdev.pdev, i + 1);
      if (request_irq(irq, vp_vring_interrupt, 0, `virtio-${name}-${info.name}`, vq) !== 0) return fail(-EBUSY);
      s.irqs.push({ irq, dev_id: vq });
    }
  }
  // Select and activate all queues: once done there is no way back except reset.
  for (const vq of vdev.vqs) {
    iowrite16(vq.index, s.common, VIRTIO_PCI_COMMON_Q_SELECT);
    iowrite16(1, s.common, VIRTIO_PCI_COMMON_Q_ENABLE);
  }
  return [...vdev.vqs];
}

/** vp_del_vqs: interrupts and vectors freed, rings freed (reset the device first). */
function vp_del_vqs(vdev: VirtioDevice): void {
  const s = st(vdev);
  release_irqs(s, vdev);
  for (const vq of vdev.vqs.splice(0)) vring_del_virtqueue(vq);
}

const vp_modern_config_ops: VirtioConfigOps = {
  get_status: vp_get_status, set_status: vp_set_status, reset: vp_reset, get_features: vp_get_features,
  finalize_features: vp_finalize_features, get: vp_get, set: vp_set, generation: vp_generation,
  find_vqs: vp_find_vqs, del_vqs: vp_del_vqs,
};

/** Whether `pdev` is a virtio-pci modern function (1af4:1040..107f, revision 1 or above). */
export function virtio_pci_is_modern(pdev: PciDev): boolean {
  return pdev.vendor === PCI_VENDOR_ID_REDHAT_QUMRANET && pdev.device >= VIRTIO_PCI_MODERN_DEVICE_BASE && pdev.device <= 0x107f && pdev.revision >= 1;
}

/**
 * virtio_pci_probe + the start of virtio_dev_probe: enables the function, bus mastering, a 64-bit
 * DMA mask, maps BAR 0's regions, resets the device, ACKNOWLEDGE, DRIVER, and negotiates features
 * (the driver's `features` plus the transport's, ANDed with the device's), FEATURES_OK re-read.
 * Next: virtio_find_vqs, fill receive rings, virtio_device_ready; at the end virtio_pci_remove.
 * @returns the device, or a negative errno: -ENODEV (not virtio-pci modern, dead, or features
 *   refused: status FAILED is set), -EIO (no 64-bit DMA).
 */
export function virtio_pci_probe(pdev: PciDev, options: VirtioPciProbeOptions = {}): VirtioDevice | number {
  if (!virtio_pci_is_modern(pdev)) return -ENODEV;
  const mode = options.irq ?? 'msix';
  if (mode !== 'msix' && mode !== 'intx' && mode !== 'poll') throw new TypeError(`virtio_pci_probe: Expected 'msix', 'intx' or 'poll' for irq but received ${String(mode)}`);
  let ret = pci_enable_device(pdev);
  if (ret !== 0) return ret;
  pci_set_master(pdev);
  ret = dma_set_mask_and_coherent(pdev.dev, DMA_BIT_MASK(64));
  if (ret !== 0) {
    pci_disable_device(pdev);
    return ret;
  }
  const common = pci_iomap(pdev, 0, 0);
  if (common === null) {
    pci_disable_device(pdev);
    return -ENODEV;
  }
  const s: VirtioPciState = {
    common: new IoMem(pdev, 0, VIRTIO_PCI_COMMON_OFFSET, VIRTIO_PCI_COMMON_SIZE),
    isr: new IoMem(pdev, 0, VIRTIO_PCI_ISR_OFFSET, 1),
    device: new IoMem(pdev, 0, VIRTIO_PCI_DEVICE_OFFSET, VIRTIO_PCI_DEVICE_MAX),
    notify: new IoMem(pdev, 0, VIRTIO_PCI_NOTIFY_OFFSET, common.length - VIRTIO_PCI_NOTIFY_OFFSET),
    mode,
    numQueues: 0,
    irqs: [],
    vectorsAllocated: false,
  };
  common.unmap();
  const vdev = new VirtioDevice(pdev, { device: pdev.device - VIRTIO_PCI_MODERN_DEVICE_BASE, vendor: pdev.vendor }, vp_modern_config_ops);
  states.set(vdev, { ...s, numQueues: ioread16(s.common, VIRTIO_PCI_COMMON_NUMQ) });
  const wanted = options.exact === true ? (options.features ?? 0n) : (VIRTIO_PCI_DRIVER_FEATURES | (options.features ?? 0n)) & ~(options.without ?? 0n);
  ret = virtio_negotiate(vdev, wanted, options.exact === true);
  if (ret === 0 && !virtio_has_feature(vdev, VIRTIO_F_VERSION_1)) ret = -ENODEV; // a modern device without VERSION_1 refused it already
  if (ret !== 0) {
    virtio_pci_remove(vdev);
    return ret;
  }
  return vdev;
}

/**
 * virtio_pci_remove: the end of a virtio driver's remove after its own teardown: reset (if not
 * done), queues and interrupts released if still there, the BAR windows unmapped, the function disabled.
 * A second call does nothing.
 */
export function virtio_pci_remove(vdev: VirtioDevice): void {
  const s = states.get(vdev);
  if (s === undefined) return;
  if (vdev.pdev.alive) vp_reset(vdev);
  vp_del_vqs(vdev);
  states.delete(vdev);
  for (const io of [s.common, s.isr, s.device, s.notify]) io.unmap();
  pci_disable_device(vdev.pdev);
}
