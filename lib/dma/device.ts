// struct device, as far as the DMA layer reads it: masks, NUMA node, ops, CMA area, coherent pool,
// IOMMU domain and the DMA-API debug tracker. `machine.createDevice()` makes one.

import type { Cma } from '../mm/cma';
import { Machine } from '../mm/machine';
import { NUMA_NO_NODE } from '../mm/gfp';
import type { HugepagePolicy } from '../os/backing';
import { HUGEPAGE_POLICIES } from '../os/backing';
import { checkBigint, checkBool, checkInt, checkOptions, checkSize, checkString, describeValue } from '../mm/validate';
import type { CoherentPool } from './coherent';
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

function toMask(name: string, v: unknown): bigint {
  if (typeof v === 'bigint') return BigInt.asUintN(64, v);
  if (typeof v !== 'number') throw new TypeError(`createDevice: Expected a number of bits from 0 to 64 or a bigint mask for ${name} but received ${describeValue(v)}`);
  checkInt('createDevice', name, v, 0, 64);
  return DMA_BIT_MASK(v);
}

const DEVICE_OPTION_KEYS = ['name', 'numaNode', 'dmaMask', 'coherentDmaMask', 'coherent', 'ops', 'busOffset', 'busDmaLimit', 'cma', 'iommu', 'debug'] as const;
const CMA_OPTION_KEYS = ['size', 'hugepages'] as const;
const IOMMU_OPTION_KEYS = ['apertureBits', 'strict'] as const;

/**
 * Checks every DeviceOptions field before anything is created (a per-device CMA area is a memfd
 * segment): unknown keys name the closest valid one; numaNode is NUMA_NO_NODE or a node of the machine.
 */
function checkDeviceOptions(machine: Machine, options: DeviceOptions | undefined): DeviceOptions {
  const o = checkOptions<DeviceOptions>('DeviceOptions', options, DEVICE_OPTION_KEYS);
  const fn = 'createDevice';
  if (o.name !== undefined) checkString(fn, 'name', o.name);
  if (o.numaNode !== undefined && o.numaNode !== NUMA_NO_NODE) checkInt(fn, 'numaNode', o.numaNode, 0, machine.nodeCount - 1);
  if (o.coherent !== undefined) checkBool(fn, 'coherent', o.coherent);
  if (o.ops !== undefined && o.ops !== null && (typeof o.ops !== 'object' || Array.isArray(o.ops))) {
    throw new TypeError(`createDevice: Expected a dma_map_ops object or null for ops but received ${describeValue(o.ops)}`);
  }
  if (o.busOffset !== undefined) checkBigint(fn, 'busOffset', o.busOffset);
  if (o.busDmaLimit !== undefined) checkBigint(fn, 'busDmaLimit', o.busDmaLimit);
  if (o.cma !== undefined) {
    if (typeof o.cma === 'number') checkSize(fn, 'cma', o.cma);
    else {
      const c = checkOptions<{ size: number; hugepages?: HugepagePolicy }>('DeviceOptions.cma', o.cma, CMA_OPTION_KEYS);
      checkSize(fn, 'cma.size', c.size);
      if (c.hugepages !== undefined && !HUGEPAGE_POLICIES.includes(c.hugepages)) {
        throw new TypeError(`createDevice: Expected one of 'auto', 'require', 'off' for cma.hugepages but received ${describeValue(c.hugepages)}`);
      }
    }
  }
  if (o.iommu !== undefined && typeof o.iommu !== 'boolean') {
    const io = checkOptions<IommuOptions>('DeviceOptions.iommu', o.iommu, IOMMU_OPTION_KEYS);
    if (io.apertureBits !== undefined) checkInt(fn, 'iommu.apertureBits', io.apertureBits, 13, 52);
    if (io.strict !== undefined) checkBool(fn, 'iommu.strict', io.strict);
  }
  if (o.debug !== undefined && typeof o.debug !== 'boolean' && o.debug !== 'strict') {
    throw new TypeError(`createDevice: Expected true, false or 'strict' for debug but received ${describeValue(o.debug)}`);
  }
  return o;
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

  constructor(machine: Machine, opts?: DeviceOptions) {
    if (!(machine instanceof Machine)) throw new TypeError(`createDevice: Expected a Machine but received ${describeValue(machine)}`);
    machine.assertAlive();
    const options = checkDeviceOptions(machine, opts);
    const dmaMask = options.dmaMask === null ? null : toMask('dmaMask', options.dmaMask ?? 32);
    const coherentMask = toMask('coherentDmaMask', options.coherentDmaMask ?? 32);
    this.machine = machine;
    this.name = options.name ?? `dev${nextDeviceNumber(machine)}`;
    this.numa_node = options.numaNode ?? NUMA_NO_NODE;
    this.dma_mask = dmaMask;
    this.coherent_dma_mask = coherentMask;
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
    // The pool's memory belongs to the machine; the device lets go of it
    // (dma_release_coherent_memory, inlined so that device.ts needs nothing of coherent.ts).
    this.dma_mem = null;
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
  if (!(dev instanceof Device)) throw new TypeError(`dev_to_node: Expected a Device for dev but received ${describeValue(dev)}`);
  return dev.numa_node;
}

/** get_dma_ops: dev->dma_ops (x86 has no arch ops), else null. */
export function get_dma_ops(dev: Device): DmaMapOps | null {
  if (!(dev instanceof Device)) throw new TypeError(`get_dma_ops: Expected a Device for dev but received ${describeValue(dev)}`);
  return dev.dma_ops;
}

export function set_dma_ops(dev: Device, ops: DmaMapOps | null): void {
  if (!(dev instanceof Device)) throw new TypeError(`set_dma_ops: Expected a Device for dev but received ${describeValue(dev)}`);
  if (ops !== null && (typeof ops !== 'object' || Array.isArray(ops))) throw new TypeError(`set_dma_ops: Expected a dma_map_ops object or null for ops but received ${describeValue(ops)}`);
  dev.dma_ops = ops;
}

/** use_dma_iommu: the device is behind an IOMMU with DMA translation. */
export function use_dma_iommu(dev: Device): boolean {
  if (!(dev instanceof Device)) throw new TypeError(`use_dma_iommu: Expected a Device for dev but received ${describeValue(dev)}`);
  return dev.iommu !== null;
}
