// struct device, as far as the DMA layer reads it: masks, NUMA node, ops, CMA area, coherent pool,
// IOMMU domain and the DMA-API debug tracker. `machine.createDevice()` makes one.

import type { Cma } from '../mm/cma';
import { Machine } from '../mm/machine';
import { NUMA_NO_NODE } from '../mm/gfp';
import type { HugepagePolicy } from '../os/backing';
import { dma_release_coherent_memory, type CoherentPool } from './coherent';
import { DMA_BIT_MASK } from './constants';
import { DmaDebug } from './debug';
import type { IommuDomain, IommuOptions } from './iommu';
import type { DmaMapOps } from './ops';

export interface DeviceOptions {
  /** Device name for messages (dev_name). Default dev0, dev1, ... in creation order on the machine. */
  name?: string;
  /** dev->numa_node. Default NUMA_NO_NODE (-1). */
  numaNode?: number;
  /** *dev->dma_mask. A number of bits or a bigint mask; null for a device with no dma_mask pointer. Default 32 bits. */
  dmaMask?: number | bigint | null;
  /** dev->coherent_dma_mask. Bits or a bigint mask. Default 32 bits. */
  coherentDmaMask?: number | bigint;
  /** dev_is_dma_coherent(). Default true (as on x86). */
  coherent?: boolean;
  /** A dma_map_ops table. Default none: dma-direct (or the IOMMU path when `iommu` is given). */
  ops?: DmaMapOps | null;
  /** Added to a physical address to give the bus address (dma_range_map offset). bigint. Default 0n. */
  busOffset?: bigint;
  /** dev->bus_dma_limit (0n = none). */
  busDmaLimit?: bigint;
  /** A per-device CMA area: its size in bytes (created on the machine, like a DT `shared-dma-pool`). */
  cma?: number | { size: number; hugepages?: HugepagePolicy };
  /** Put the device behind an IOMMU (use_dma_iommu). true for defaults. */
  iommu?: boolean | IommuOptions;
  /** DMA-API debug for this device: on/off, or strict (throw on misuse). Default: the machine's setting. */
  debug?: boolean | 'strict';
}

function toMask(v: number | bigint): bigint {
  if (typeof v === 'bigint') return BigInt.asUintN(64, v);
  if (!Number.isInteger(v) || v < 0 || v > 64) throw new RangeError(`Expected a number of bits from 0 to 64 or a bigint mask but received ${String(v)}`);
  return DMA_BIT_MASK(v);
}

/** Devices made per machine, for default names (dev0, dev1, ...). */
const devicesMade = new WeakMap<Machine, number>();
function nextDeviceNumber(machine: Machine): number {
  const n = devicesMade.get(machine) ?? 0;
  devicesMade.set(machine, n + 1);
  return n;
}

export class Device {
  readonly name: string;
  readonly machine: Machine;
  numa_node: number;
  /** *dev->dma_mask; null models a NULL dma_mask pointer. */
  dma_mask: bigint | null;
  coherent_dma_mask: bigint;
  bus_dma_limit: bigint;
  dma_coherent: boolean;
  dma_ops: DmaMapOps | null;
  busOffset: bigint;
  /** dev->cma_area (per-device CMA), or null. */
  cma_area: Cma | null = null;
  /** dev->dma_mem: the per-device coherent pool, or null. */
  dma_mem: CoherentPool | null = null;
  /** The IOMMU domain when the device is behind an IOMMU (use_dma_iommu). */
  iommu: IommuDomain | null = null;
  readonly debug: DmaDebug;
  private destroyed = false;

  constructor(machine: Machine, options: DeviceOptions = {}) {
    machine.assertAlive();
    this.machine = machine;
    this.name = options.name ?? `dev${nextDeviceNumber(machine)}`;
    this.numa_node = options.numaNode ?? NUMA_NO_NODE;
    this.dma_mask = options.dmaMask === null ? null : toMask(options.dmaMask ?? 32);
    this.coherent_dma_mask = toMask(options.coherentDmaMask ?? 32);
    this.bus_dma_limit = options.busDmaLimit ?? 0n;
    this.dma_coherent = options.coherent ?? true;
    this.dma_ops = options.ops ?? null;
    this.busOffset = options.busOffset ?? 0n;
    const dbg = options.debug ?? machine.dmaDebug;
    this.debug = new DmaDebug({ enabled: dbg !== false, strict: dbg === 'strict' });
    if (options.cma !== undefined) {
      const spec = typeof options.cma === 'number' ? { size: options.cma } : options.cma;
      const nid = this.numa_node === NUMA_NO_NODE ? 0 : this.numa_node;
      this.cma_area = machine.cma_declare(`dev-${this.name}`, spec.size, nid, spec.hugepages ?? 'auto');
    }
    if (options.iommu !== undefined && options.iommu !== false) {
      // Loaded lazily to keep the import graph acyclic (the IOMMU modules import device.ts).
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const { IommuDomain } = require('./iommu') as typeof import('./iommu');
      this.iommu = new IommuDomain(this, options.iommu === true ? {} : options.iommu);
    }
  }

  get isDestroyed(): boolean {
    return this.destroyed;
  }

  /**
   * Device teardown (driver unbind): DMA-API debug reports mappings still held; the coherent pool
   * is released. Idempotent.
   */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.debug.dma_debug_device_teardown(this);
    // The pool's memory belongs to the machine; the device lets go of it.
    dma_release_coherent_memory(this);
  }
}

declare module '../mm/machine' {
  interface Machine {
    /** Creates a device on this machine (see DeviceOptions). */
    createDevice(options?: DeviceOptions): Device;
  }
}

Machine.prototype.createDevice = function createDevice(this: Machine, options?: DeviceOptions): Device {
  return new Device(this, options);
};

/** dev_to_node: dev->numa_node. */
export function dev_to_node(dev: Device): number {
  return dev.numa_node;
}

/** get_dma_ops: dev->dma_ops (x86 has no arch ops), else null. */
export function get_dma_ops(dev: Device): DmaMapOps | null {
  return dev.dma_ops;
}

export function set_dma_ops(dev: Device, ops: DmaMapOps | null): void {
  dev.dma_ops = ops;
}

/** use_dma_iommu: the device is behind an IOMMU with DMA translation. */
export function use_dma_iommu(dev: Device): boolean {
  return dev.iommu !== null;
}
