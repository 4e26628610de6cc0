// The virtio-pci modern transport, device side (QEMU's hw/virtio/virtio-pci.c, modern only): one
// BAR with the common configuration, ISR, device configuration and notify regions, feature
// negotiation, the status sequence, queue setup onto VirtQueues on the device's bus, and interrupts
// (INTx with the ISR, or MSI-X vectors). A backend (virtio_net.ts, ...) does the device's own work.
//
// This PCI model has no configuration-space capability list, so the four regions sit at fixed
// offsets of BAR 0 (VIRTIO_PCI_*_OFFSET below) instead of being found through vendor capabilities.

import type { DeviceContext, DeviceModel, DeviceType, MmioValue } from '../model';
import { VirtQueue } from './virtqueue';
import {
  VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET, VIRTIO_F_ACCESS_PLATFORM, VIRTIO_F_VERSION_1,
  VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC, VRING_MAX_SIZE, virtio_has_feature, vring_size_ok,
} from './virtio_ring_layout';

// ---- BAR 0 layout (fixed here; a real device names them with capabilities) ----

/** struct virtio_pci_common_cfg. */
export const VIRTIO_PCI_COMMON_OFFSET = 0x0000;
/** The ISR status byte: bit 0 queue interrupt, bit 1 configuration change; a read clears it. */
export const VIRTIO_PCI_ISR_OFFSET = 0x1000;
/** The device-specific configuration (virtio_net_config, virtio_blk_config...). */
export const VIRTIO_PCI_DEVICE_OFFSET = 0x2000;
/** Notify region: queue q's doorbell is at VIRTIO_PCI_NOTIFY_OFFSET + queue_notify_off(q) * multiplier. */
export const VIRTIO_PCI_NOTIFY_OFFSET = 0x3000;
export const VIRTIO_PCI_NOTIFY_OFF_MULTIPLIER = 4;
/** Bytes of BAR 0. */
export const VIRTIO_PCI_BAR_SIZE = 0x4000;
/** Largest device configuration, and most queues (one notify slot of 4 bytes each in 4 KiB). */
export const VIRTIO_PCI_DEVICE_MAX = 0x1000;
export const VIRTIO_PCI_QUEUE_MAX = 31;

// ---- struct virtio_pci_common_cfg offsets (include/uapi/linux/virtio_pci.h) ----
export const VIRTIO_PCI_COMMON_DFSELECT = 0x00;
export const VIRTIO_PCI_COMMON_DF = 0x04;
export const VIRTIO_PCI_COMMON_GFSELECT = 0x08;
export const VIRTIO_PCI_COMMON_GF = 0x0c;
export const VIRTIO_PCI_COMMON_MSIX = 0x10;
export const VIRTIO_PCI_COMMON_NUMQ = 0x12;
export const VIRTIO_PCI_COMMON_STATUS = 0x14;
export const VIRTIO_PCI_COMMON_CFGGENERATION = 0x15;
export const VIRTIO_PCI_COMMON_Q_SELECT = 0x16;
export const VIRTIO_PCI_COMMON_Q_SIZE = 0x18;
export const VIRTIO_PCI_COMMON_Q_MSIX = 0x1a;
export const VIRTIO_PCI_COMMON_Q_ENABLE = 0x1c;
export const VIRTIO_PCI_COMMON_Q_NOFF = 0x1e;
export const VIRTIO_PCI_COMMON_Q_DESCLO = 0x20;
export const VIRTIO_PCI_COMMON_Q_DESCHI = 0x24;
export const VIRTIO_PCI_COMMON_Q_AVAILLO = 0x28;
export const VIRTIO_PCI_COMMON_Q_AVAILHI = 0x2c;
export const VIRTIO_PCI_COMMON_Q_USEDLO = 0x30;
export const VIRTIO_PCI_COMMON_Q_USEDHI = 0x34;
/** Bytes of the common configuration. */
export const VIRTIO_PCI_COMMON_SIZE = 0x38;

/** ISR bits. */
export const VIRTIO_PCI_ISR_QUEUE = 0x1;
export const VIRTIO_PCI_ISR_CONFIG = 0x2;
/** No MSI-X vector for this source. */
export const VIRTIO_MSI_NO_VECTOR = 0xffff;

/** PCI IDs: vendor 0x1af4, device 0x1040 + virtio device id, revision 1 (modern only). */
export const PCI_VENDOR_ID_REDHAT_QUMRANET = 0x1af4;
export const VIRTIO_PCI_MODERN_DEVICE_BASE = 0x1040;

/** What the transport offers for every device: the ring and platform features. */
export const VIRTIO_TRANSPORT_FEATURES =
  (1n << BigInt(VIRTIO_F_VERSION_1)) | (1n << BigInt(VIRTIO_F_ACCESS_PLATFORM)) |
  (1n << BigInt(VIRTIO_RING_F_EVENT_IDX)) | (1n << BigInt(VIRTIO_RING_F_INDIRECT_DESC));

/** What the transport gives a backend. */
export interface VirtioTransport {
  readonly ctx: DeviceContext;
  /** The negotiated features (meaningful once FEATURES_OK was accepted). */
  readonly features: bigint;
  /** The device-specific configuration window (VIRTIO_PCI_DEVICE_OFFSET of BAR 0, configSize bytes). */
  readonly config: DataView;
  /** Queue `n` if the driver enabled it and it is not broken; null otherwise. */
  queue(n: number): VirtQueue | null;
  /** The backend changed its configuration: bumps config_generation and raises the config interrupt. */
  configChanged(): void;
  /** The device cannot go on (virtio_error): DEVICE_NEEDS_RESET and the config interrupt. */
  needsReset(reason: string): void;
}

/** The device's own work, one per device instance (made at create and after nothing else). */
export interface VirtioBackend {
  /** The driver rang queue `n`'s doorbell (the queue is enabled and DRIVER_OK is set). */
  handleOutput(n: number): void;
  /** After DRIVER_OK was set (the queues are live): a backend with pending work may start it. */
  ready?(): void;
  /** The device was reset (status 0): drop in-flight state; the queues are already gone. */
  reset?(): void;
  /** The driver wrote the device configuration (bytes already stored in `config`). */
  configWrite?(offset: number, size: number): void;
  destroy?(): void;
}

/** A concrete virtio device: what virtio_pci_device() turns into a DeviceType. */
export interface VirtioDeviceSpec {
  /** The DeviceType's name ('virtio-net'). */
  readonly name: string;
  /** The virtio device id (1 net, 2 block...). */
  readonly deviceId: number;
  /** The 24-bit PCI class code (0x020000 Ethernet, 0x018000 other mass storage...). */
  readonly classCode: number;
  /** Number of queues. */
  readonly numQueues: number;
  /** Largest size of each queue (a power of two): the queue_size the driver reads first. */
  readonly queueMax: number;
  /** Device feature bits beyond the transport's. */
  readonly features: bigint;
  /** Bytes of device configuration. */
  readonly configSize: number;
  /** Makes the backend; it fills t.config with its initial configuration. */
  create(t: VirtioTransport): VirtioBackend;
}

interface QueueState {
  size: number;
  vector: number;
  enabled: boolean;
  desc: bigint;
  driver: bigint;
  device: bigint;
  vq: VirtQueue | null;
}

const M64 = 0xffff_ffff_ffff_ffffn;

/** The transport: common configuration in BAR memory, state machine, interrupts. */
class VirtioPciDevice implements DeviceModel, VirtioTransport {
  readonly ctx: DeviceContext;
  readonly config: DataView;
  readonly #spec: VirtioDeviceSpec;
  readonly #r: DataView;
  readonly #offered: bigint;
  readonly #backend: VirtioBackend;
  readonly #queues: QueueState[] = [];
  #dfselect = 0;
  #gfselect = 0;
  #guest = 0n;
  #features = 0n;
  #status = 0;
  #generation = 0;
  #isr = 0;
  #configVector = VIRTIO_MSI_NO_VECTOR;
  #qsel = 0;

  constructor(ctx: DeviceContext, spec: VirtioDeviceSpec) {
    this.ctx = ctx;
    this.#spec = spec;
    this.#r = ctx.bars[0]!;
    this.config = new DataView(this.#r.buffer, this.#r.byteOffset + VIRTIO_PCI_DEVICE_OFFSET, spec.configSize);
    this.#offered = VIRTIO_TRANSPORT_FEATURES | spec.features;
    for (let i = 0; i < spec.numQueues; i++) {
      this.#queues.push({ size: spec.queueMax, vector: VIRTIO_MSI_NO_VECTOR, enabled: false, desc: 0n, driver: 0n, device: 0n, vq: null });
    }
    this.#backend = spec.create(this);
    this.#refresh();
  }

  get features(): bigint {
    return this.#features;
  }

  queue(n: number): VirtQueue | null {
    const q = this.#queues[n];
    return q === undefined || q.vq === null || q.vq.broken ? null : q.vq;
  }

  configChanged(): void {
    this.#generation = (this.#generation + 1) & 0xff;
    this.#refresh();
    this.#configInterrupt();
  }

  needsReset(reason: string): void {
    this.ctx.log(`virtio: ${this.#spec.name}: ${reason}`);
    if ((this.#status & VIRTIO_CONFIG_S_NEEDS_RESET) !== 0) return;
    this.#status |= VIRTIO_CONFIG_S_NEEDS_RESET;
    this.#refresh();
    this.#configInterrupt();
  }

  #configInterrupt(): void {
    if (this.ctx.irq.mode === 0) {
      this.#isr |= VIRTIO_PCI_ISR_CONFIG;
      this.ctx.irq.raise(0);
    } else if (this.#configVector !== VIRTIO_MSI_NO_VECTOR) {
      this.ctx.irq.raise(this.#configVector);
    }
  }

  #queueInterrupt(n: number): void {
    if (this.ctx.irq.mode === 0) {
      this.#isr |= VIRTIO_PCI_ISR_QUEUE;
      this.ctx.irq.raise(0);
    } else {
      const v = this.#queues[n]!.vector;
      if (v !== VIRTIO_MSI_NO_VECTOR) this.ctx.irq.raise(v);
    }
  }

  /** Writes every readable field of the common configuration into BAR memory. */
  #refresh(): void {
    const r = this.#r;
    const c = VIRTIO_PCI_COMMON_OFFSET;
    r.setUint32(c + VIRTIO_PCI_COMMON_DFSELECT, this.#dfselect, true);
    const df = this.#dfselect < 2 ? Number((this.#offered >> BigInt(32 * this.#dfselect)) & 0xffffffffn) : 0;
    r.setUint32(c + VIRTIO_PCI_COMMON_DF, df, true);
    r.setUint32(c + VIRTIO_PCI_COMMON_GFSELECT, this.#gfselect, true);
    const gf = this.#gfselect < 2 ? Number((this.#guest >> BigInt(32 * this.#gfselect)) & 0xffffffffn) : 0;
    r.setUint32(c + VIRTIO_PCI_COMMON_GF, gf, true);
    r.setUint16(c + VIRTIO_PCI_COMMON_MSIX, this.#configVector, true);
    r.setUint16(c + VIRTIO_PCI_COMMON_NUMQ, this.#spec.numQueues, true);
    r.setUint8(c + VIRTIO_PCI_COMMON_STATUS, this.#status);
    r.setUint8(c + VIRTIO_PCI_COMMON_CFGGENERATION, this.#generation);
    r.setUint16(c + VIRTIO_PCI_COMMON_Q_SELECT, this.#qsel, true);
    const q = this.#queues[this.#qsel];
    r.setUint16(c + VIRTIO_PCI_COMMON_Q_SIZE, q === undefined ? 0 : q.size, true);
    r.setUint16(c + VIRTIO_PCI_COMMON_Q_MSIX, q === undefined ? VIRTIO_MSI_NO_VECTOR : q.vector, true);
    r.setUint16(c + VIRTIO_PCI_COMMON_Q_ENABLE, q?.enabled === true ? 1 : 0, true);
    r.setUint16(c + VIRTIO_PCI_COMMON_Q_NOFF, q === undefined ? 0 : this.#qsel, true);
    r.setBigUint64(c + VIRTIO_PCI_COMMON_Q_DESCLO, q?.desc ?? 0n, true);
    r.setBigUint64(c + VIRTIO_PCI_COMMON_Q_AVAILLO, q?.driver ?? 0n, true);
    r.setBigUint64(c + VIRTIO_PCI_COMMON_Q_USEDLO, q?.device ?? 0n, true);
  }

  /** Accesses: naturally aligned 1, 2 or 4 bytes anywhere, 8 bytes at the queue address fields. */
  accessOk(_bar: number, offset: number, size: number): boolean {
    if (offset % size !== 0) return false;
    if (size === 8) return offset >= VIRTIO_PCI_COMMON_Q_DESCLO && offset < VIRTIO_PCI_COMMON_SIZE;
    return size === 1 || size === 2 || size === 4;
  }

  mmioRead(_bar: number, offset: number, size: number): MmioValue {
    if (offset === VIRTIO_PCI_ISR_OFFSET) {
      // Reading the ISR acknowledges it and deasserts INTx.
      const v = this.#isr;
      this.#isr = 0;
      if (this.ctx.irq.mode === 0) this.ctx.irq.lower(0);
      return v;
    }
    const inCommon = offset < VIRTIO_PCI_COMMON_SIZE;
    const inDevice = offset >= VIRTIO_PCI_DEVICE_OFFSET && offset + size <= VIRTIO_PCI_DEVICE_OFFSET + this.#spec.configSize;
    if (!inCommon && !inDevice) return size === 8 ? 0n : 0;
    const r = this.#r;
    switch (size) {
      case 1: return r.getUint8(offset);
      case 2: return r.getUint16(offset, true);
      case 4: return r.getUint32(offset, true);
      default: return r.getBigUint64(offset, true);
    }
  }

  mmioWrite(_bar: number, offset: number, size: number, value: MmioValue): void {
    try {
      if (offset >= VIRTIO_PCI_NOTIFY_OFFSET) {
        this.#notify((offset - VIRTIO_PCI_NOTIFY_OFFSET) / VIRTIO_PCI_NOTIFY_OFF_MULTIPLIER);
      } else if (offset >= VIRTIO_PCI_DEVICE_OFFSET) {
        if (offset + size > VIRTIO_PCI_DEVICE_OFFSET + this.#spec.configSize) return;
        this.#store(offset, size, value);
        this.#backend.configWrite?.(offset - VIRTIO_PCI_DEVICE_OFFSET, size);
      } else if (offset + size <= VIRTIO_PCI_COMMON_SIZE) {
        this.#commonWrite(offset, size, value);
      }
    } catch (err) {
      // A backend bug must not kill the model: the device asks for a reset instead.
      this.needsReset(`device error: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  #store(offset: number, size: number, value: MmioValue): void {
    const r = this.#r;
    if (size === 8) r.setBigUint64(offset, BigInt.asUintN(64, BigInt(value)), true);
    else if (size === 4) r.setUint32(offset, Number(value) >>> 0, true);
    else if (size === 2) r.setUint16(offset, Number(value) & 0xffff, true);
    else r.setUint8(offset, Number(value) & 0xff);
  }

  #commonWrite(offset: number, size: number, value: MmioValue): void {
    const r = this.#r;
    // Stored first, then the whole field is read back: partial writes of a field work as on hardware.
    this.#store(offset, size, value);
    const c = VIRTIO_PCI_COMMON_OFFSET;
    const q = this.#queues[this.#qsel];
    const queueLocked = q === undefined || q.enabled;
    for (let at = offset; at < offset + size;) {
      switch (at) {
        case VIRTIO_PCI_COMMON_DFSELECT: this.#dfselect = r.getUint32(c + at, true); at += 4; break;
        case VIRTIO_PCI_COMMON_GFSELECT: this.#gfselect = r.getUint32(c + at, true); at += 4; break;
        case VIRTIO_PCI_COMMON_GF: {
          if (this.#gfselect < 2 && (this.#status & VIRTIO_CONFIG_S_FEATURES_OK) === 0) {
            const shift = BigInt(32 * this.#gfselect);
            this.#guest = (this.#guest & ~(0xffffffffn << shift)) | (BigInt(r.getUint32(c + at, true)) << shift);
          }
          at += 4;
          break;
        }
        case VIRTIO_PCI_COMMON_MSIX: this.#configVector = this.#vectorOk(r.getUint16(c + at, true)); at += 2; break;
        case VIRTIO_PCI_COMMON_STATUS: this.#setStatus(r.getUint8(c + at)); at += 1; break;
        case VIRTIO_PCI_COMMON_Q_SELECT: this.#qsel = r.getUint16(c + at, true); at += 2; break;
        case VIRTIO_PCI_COMMON_Q_SIZE: {
          const n = r.getUint16(c + at, true);
          // A size that is no power of two, or above the device's, is ignored (the old one stays).
          if (!queueLocked && vring_size_ok(n) && n <= this.#spec.queueMax && n <= VRING_MAX_SIZE) q.size = n;
          at += 2;
          break;
        }
        case VIRTIO_PCI_COMMON_Q_MSIX: if (q !== undefined) q.vector = this.#vectorOk(r.getUint16(c + at, true)); at += 2; break;
        case VIRTIO_PCI_COMMON_Q_ENABLE: if (!queueLocked && r.getUint16(c + at, true) === 1) this.#enable(this.#qsel); at += 2; break;
        case VIRTIO_PCI_COMMON_Q_DESCLO: case VIRTIO_PCI_COMMON_Q_DESCHI:
        case VIRTIO_PCI_COMMON_Q_AVAILLO: case VIRTIO_PCI_COMMON_Q_AVAILHI:
        case VIRTIO_PCI_COMMON_Q_USEDLO: case VIRTIO_PCI_COMMON_Q_USEDHI: {
          const base = at & ~7;
          if (!queueLocked) {
            const v = r.getBigUint64(c + base, true);
            if (base === VIRTIO_PCI_COMMON_Q_DESCLO) q.desc = v;
            else if (base === VIRTIO_PCI_COMMON_Q_AVAILLO) q.driver = v;
            else q.device = v;
          }
          at += 4;
          break;
        }
        default: at += 1; break; // read-only fields (device_feature, num_queues, generation, notify_off)
      }
    }
    this.#refresh();
  }

  /** An MSI-X vector the device has, or NO_VECTOR (the driver reads it back to see). */
  #vectorOk(v: number): number {
    return v < this.#msixVectors() ? v : VIRTIO_MSI_NO_VECTOR;
  }

  #msixVectors(): number {
    return this.#spec.numQueues + 1;
  }

  #setStatus(v: number): void {
    if (v === 0) {
      this.#reset();
      return;
    }
    const old = this.#status;
    let next = v | (old & VIRTIO_CONFIG_S_NEEDS_RESET);
    if ((v & VIRTIO_CONFIG_S_FEATURES_OK) !== 0 && (old & VIRTIO_CONFIG_S_FEATURES_OK) === 0) {
      // virtio_set_features: only offered features, and a modern device needs VERSION_1.
      const ok = (this.#guest & ~this.#offered) === 0n && virtio_has_feature(this.#guest, VIRTIO_F_VERSION_1);
      if (ok) this.#features = this.#guest;
      else {
        next &= ~VIRTIO_CONFIG_S_FEATURES_OK;
        this.ctx.log(`virtio: ${this.#spec.name}: driver features 0x${this.#guest.toString(16)} refused (offered 0x${this.#offered.toString(16)})`);
      }
    }
    this.#status = next & 0xff;
    if ((next & 4) !== 0 && (old & 4) === 0) this.#backend.ready?.();
  }

  #reset(): void {
    for (const q of this.#queues) {
      q.size = this.#spec.queueMax;
      q.vector = VIRTIO_MSI_NO_VECTOR;
      q.enabled = false;
      q.desc = q.driver = q.device = 0n;
      q.vq = null;
    }
    this.#dfselect = this.#gfselect = this.#qsel = 0;
    this.#guest = this.#features = 0n;
    this.#status = 0;
    this.#configVector = VIRTIO_MSI_NO_VECTOR;
    this.#isr = 0;
    if (this.ctx.irq.mode === 0) this.ctx.irq.lower(0);
    this.#backend.reset?.();
  }

  #enable(n: number): void {
    const q = this.#queues[n]!;
    q.enabled = true;
    q.vq = new VirtQueue(this.ctx.bus, {
      size: q.size, desc: q.desc, avail: q.driver, used: q.device, features: this.#features,
      onNotify: () => this.#queueInterrupt(n),
      onError: (reason) => this.needsReset(`queue ${n}: ${reason}`),
    });
  }

  #notify(n: number): void {
    if (!Number.isInteger(n)) return;
    const q = this.#queues[n];
    if (q === undefined || q.vq === null || q.vq.broken) return;
    if ((this.#status & 4) === 0 || (this.#status & VIRTIO_CONFIG_S_NEEDS_RESET) !== 0) return;
    this.#backend.handleOutput(n);
  }

  destroy(): void {
    this.#backend.destroy?.();
  }
}

/**
 * The DeviceType of a virtio-pci modern device: PCI 1af4:(1040 + deviceId) revision 1, BAR 0 of
 * VIRTIO_PCI_BAR_SIZE bytes laid out as above, numQueues + 1 MSI-X vectors, no MSI.
 * @example export const virtio_net: DeviceType = virtio_pci_device({ name: 'virtio-net', deviceId: 1, ... });
 */
export function virtio_pci_device(spec: VirtioDeviceSpec): DeviceType {
  if (!Number.isInteger(spec.numQueues) || spec.numQueues < 1 || spec.numQueues > VIRTIO_PCI_QUEUE_MAX) {
    throw new RangeError(`virtio_pci_device: Expected 1 to ${VIRTIO_PCI_QUEUE_MAX} for numQueues but received ${String(spec.numQueues)}`);
  }
  if (!vring_size_ok(spec.queueMax)) throw new RangeError(`virtio_pci_device: Expected a power of two up to ${VRING_MAX_SIZE} for queueMax but received ${String(spec.queueMax)}`);
  if (!Number.isInteger(spec.configSize) || spec.configSize < 0 || spec.configSize > VIRTIO_PCI_DEVICE_MAX) {
    throw new RangeError(`virtio_pci_device: Expected 0 to ${VIRTIO_PCI_DEVICE_MAX} for configSize but received ${String(spec.configSize)}`);
  }
  if (typeof spec.features !== 'bigint' || spec.features < 0n || spec.features > M64) throw new TypeError('virtio_pci_device: Expected a 64-bit bigint for features');
  return {
    name: spec.name,
    identity: {
      vendor: PCI_VENDOR_ID_REDHAT_QUMRANET, device: VIRTIO_PCI_MODERN_DEVICE_BASE + spec.deviceId, revision: 1,
      classCode: spec.classCode, bars: [VIRTIO_PCI_BAR_SIZE], msiVectors: 0, msixVectors: spec.numQueues + 1,
    },
    create: (ctx) => new VirtioPciDevice(ctx, spec),
  };
}
