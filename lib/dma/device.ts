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
import { lockFields } from '../os/lock';
import { DmaDebug, DmaDebugView } from './debug';
import { dmaDebugPoolOf } from './debug_pool';
import { DeviceDmaParameters } from './device_dma_parameters';
import type { IommuDomain, IommuOptions } from './iommu';
import type { DmaMapOps } from './ops';

const U64_MAX = (1n << 64n) - 1n;

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
  /**
   * Buffer ownership checking (needs DMA-API debug, which it turns on): between map (or
   * sync_for_device) and unmap (or sync_for_cpu) the device owns a streaming buffer. A CPU write in
   * that window is reported at the next sync or unmap, and a device access to lines the CPU owns is
   * reported by the bus. 'strict' also throws at the sync or unmap and refuses the device access.
   * Default off.
   */
  ownership?: 'report' | 'strict';
  /** Whether the device has dev->dma_parms (PCI and platform devices do). Default true. */
  dmaParms?: boolean;
  /**
   * The bus the device sits on (dev_is_pci). Default 'pci': behind an IOMMU it gets IOVAs below
   * 4 GiB first (pci_32bit_workaround); a 'platform' device allocates below its full mask at once.
   */
  bus?: 'pci' | 'platform';
}

/** A u64 value (masks, limits, offsets). */
function checkU64(name: string, value: unknown): bigint {
  checkBigint('Device', name, value);
  if (value < 0n || value > U64_MAX) throw new RangeError(`Device: Expected a bigint from 0 to 2^64-1 for ${name} but received ${value}`);
  return value;
}

function toMask(name: string, v: unknown): bigint {
  if (typeof v === 'bigint') return BigInt.asUintN(64, v);
  if (typeof v !== 'number') throw new TypeError(`createDevice: Expected a number of bits from 0 to 64 or a bigint mask for ${name} but received ${describeValue(v)}`);
  checkInt('createDevice', name, v, 0, 64);
  return DMA_BIT_MASK(v);
}

const DEVICE_OPTION_KEYS = ['name', 'numaNode', 'dmaMask', 'coherentDmaMask', 'coherent', 'ops', 'busOffset', 'busDmaLimit', 'cma', 'iommu', 'debug', 'ownership', 'dmaParms', 'bus'] as const;
const CMA_OPTION_KEYS = ['size', 'hugepages'] as const;
const IOMMU_OPTION_KEYS = ['apertureBits', 'strict', 'reservedRegions'] as const;
const RESV_REGION_KEYS = ['start', 'length'] as const;

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
  if (o.dmaParms !== undefined) checkBool(fn, 'dmaParms', o.dmaParms);
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
    if (io.reservedRegions !== undefined) {
      if (!Array.isArray(io.reservedRegions)) throw new TypeError(`createDevice: Expected an array of { start, length } for iommu.reservedRegions but received ${describeValue(io.reservedRegions)}`);
      io.reservedRegions.forEach((r, i) => {
        const name = `iommu.reservedRegions[${i}]`;
        const rr = checkOptions<{ start: bigint; length: number }>(`DeviceOptions.${name}`, r, RESV_REGION_KEYS);
        checkBigint(fn, `${name}.start`, rr.start);
        checkInt(fn, `${name}.length`, rr.length, 1);
        if (rr.start < 0n || rr.start + BigInt(rr.length) - 1n > U64_MAX) {
          throw new RangeError(`createDevice: Expected ${name} to lie within 0..2^64-1 but received start 0x${rr.start.toString(16)}, length ${rr.length}`);
        }
      });
    }
  }
  if (o.bus !== undefined && o.bus !== 'pci' && o.bus !== 'platform') {
    throw new TypeError(`createDevice: Expected 'pci' or 'platform' for bus but received ${describeValue(o.bus)}`);
  }
  if (o.debug !== undefined && typeof o.debug !== 'boolean' && o.debug !== 'strict') {
    throw new TypeError(`createDevice: Expected true, false or 'strict' for debug but received ${describeValue(o.debug)}`);
  }
  if (o.ownership !== undefined && o.ownership !== 'report' && o.ownership !== 'strict') {
    throw new TypeError(`createDevice: Expected 'report' or 'strict' for ownership but received ${describeValue(o.ownership)}`);
  }
  if (o.ownership !== undefined && o.debug === false) {
    throw new TypeError('createDevice: ownership checking needs DMA-API debug, but debug is false');
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

let trackerOf: (dev: Device) => DmaDebug;
let devresOf: (dev: Device) => DevresEntry[];

/** One managed resource (drivers/base/devres.c): released at device teardown, newest first. */
interface DevresEntry {
  readonly release: () => void;
  /** What it manages (the pool of dmam_pool_create, ...), for devres_release's match. */
  readonly res: unknown;
}

/** devres_add: `release` runs when the device is destroyed (driver unbind), after newer entries. */
export function devres_add(dev: Device, res: unknown, release: () => void): void {
  devresOf(dev).push({ release, res });
}

/**
 * devres_destroy: removes the newest entry whose resource `match` accepts, without running its
 * release. Returns 0, or -ENOENT when none matches.
 */
export function devres_destroy(dev: Device, match: (res: unknown) => boolean): number {
  const list = devresOf(dev);
  for (let i = list.length - 1; i >= 0; i--) {
    if (!match(list[i]!.res)) continue;
    list.splice(i, 1);
    return 0;
  }
  return -2;
}

/**
 * devres_release: runs and removes the newest entry managing `res` now. Returns 0, or -ENOENT when
 * the device manages no such resource (the kernel's callers WARN on that).
 */
export function devres_release(dev: Device, res: unknown): number {
  const list = devresOf(dev);
  for (let i = list.length - 1; i >= 0; i--) {
    if (list[i]!.res !== res) continue;
    const [entry] = list.splice(i, 1);
    entry!.release();
    return 0;
  }
  return -2;
}

/** The device's DMA-API debug tracker, for the mapping layer's hooks (not part of the public API). */
export function debugOf(dev: Device): DmaDebug {
  return trackerOf(dev);
}

export class Device {
  readonly name: string;
  readonly machine: Machine;
  /** DMA-API debug of this device: switches, reports and counts (the hooks stay internal). */
  readonly debug: DmaDebugView;
  /** dev->dma_parms (see dma_set_max_seg_size and friends), null for a device without. */
  readonly dma_parms: DeviceDmaParameters | null;
  /** The bus the device sits on: dev_is_pci() is bus === 'pci'. */
  readonly bus: 'pci' | 'platform';
  readonly #tracker: DmaDebug;
  /** Managed resources (dmam_*), released newest first at teardown. */
  readonly #devres: DevresEntry[] = [];
  // The fields drivers and bus code set in the kernel are accessors here: each assignment is checked,
  // so that no value can reach the DMA paths that they could not handle.
  #numaNode: number;
  #dmaMask: bigint | null;
  #coherentDmaMask: bigint;
  #busDmaLimit: bigint;
  #dmaCoherent: boolean;
  #dmaOps: DmaMapOps | null;
  #busOffset: bigint;
  #cmaArea: Cma | null = null;
  #dmaMem: CoherentPool | null = null;
  #iommu: IommuDomain | null = null;
  #destroyed = false;
  /** Buffer ownership checking: 'off', 'report' or 'strict' (fixed at creation: bus engines carry it). */
  readonly ownership: 'off' | 'report' | 'strict';

  constructor(machine: Machine, opts?: DeviceOptions) {
    if (!(machine instanceof Machine)) throw new TypeError(`createDevice: Expected a Machine but received ${describeValue(machine)}`);
    machine.assertAlive();
    const options = checkDeviceOptions(machine, opts);
    const dmaMask = options.dmaMask === null ? null : toMask('dmaMask', options.dmaMask ?? 32);
    const coherentMask = toMask('coherentDmaMask', options.coherentDmaMask ?? 32);
    this.machine = machine;
    this.name = options.name ?? `dev${nextDeviceNumber(machine)}`;
    this.bus = options.bus ?? 'pci';
    this.#numaNode = options.numaNode ?? NUMA_NO_NODE;
    this.#dmaMask = dmaMask;
    this.#coherentDmaMask = coherentMask;
    this.#busDmaLimit = checkU64('busDmaLimit', options.busDmaLimit ?? 0n);
    this.#dmaCoherent = options.coherent ?? true;
    this.#dmaOps = options.ops ?? null;
    this.#busOffset = checkU64('busOffset', options.busOffset ?? 0n);
    this.ownership = options.ownership ?? 'off';
    const dbg = options.debug ?? (options.ownership !== undefined && machine.dmaDebug === false ? true : machine.dmaDebug);
    this.#tracker = new DmaDebug({ enabled: dbg !== false, strict: dbg === 'strict', pool: dmaDebugPoolOf(machine) });
    this.debug = new DmaDebugView(this.#tracker, this);
    this.dma_parms = options.dmaParms === false ? null : new DeviceDmaParameters();
    if (options.cma !== undefined) {
      const spec = typeof options.cma === 'number' ? { size: options.cma } : options.cma;
      const nid = this.numa_node === NUMA_NO_NODE ? 0 : this.numa_node;
      this.#cmaArea = machine.cma_declare(`dev-${this.name}`, spec.size, nid, spec.hugepages ?? 'auto');
    }
    if (options.iommu !== undefined && options.iommu !== false) {
      // Loaded lazily to keep the import graph acyclic (the IOMMU modules import device.ts).
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const { IommuDomain } = require('./iommu') as typeof import('./iommu');
      this.#iommu = new IommuDomain(this, options.iommu === true ? {} : options.iommu, this.bus === 'pci');
    }
    lockFields(this, 'name', 'machine', 'debug', 'dma_parms', 'bus', 'ownership');
  }

  /** dev->numa_node: NUMA_NO_NODE or a node of the machine. */
  get numa_node(): number {
    return this.#numaNode;
  }

  set numa_node(nid: number) {
    if (nid !== NUMA_NO_NODE) checkInt('numa_node', 'nid', nid, 0, this.machine.nodeCount - 1);
    this.#numaNode = nid;
  }

  /** *dev->dma_mask; null models a NULL dma_mask pointer. */
  get dma_mask(): bigint | null {
    return this.#dmaMask;
  }

  set dma_mask(mask: bigint | null) {
    this.#dmaMask = mask === null ? null : checkU64('dma_mask', mask);
  }

  get coherent_dma_mask(): bigint {
    return this.#coherentDmaMask;
  }

  set coherent_dma_mask(mask: bigint) {
    this.#coherentDmaMask = checkU64('coherent_dma_mask', mask);
  }

  /** dev->bus_dma_limit (0n = none). */
  get bus_dma_limit(): bigint {
    return this.#busDmaLimit;
  }

  set bus_dma_limit(limit: bigint) {
    this.#busDmaLimit = checkU64('bus_dma_limit', limit);
  }

  /** dev_is_dma_coherent(). */
  get dma_coherent(): boolean {
    return this.#dmaCoherent;
  }

  set dma_coherent(coherent: boolean) {
    checkBool('Device', 'dma_coherent', coherent);
    this.#dmaCoherent = coherent;
  }

  get dma_ops(): DmaMapOps | null {
    return this.#dmaOps;
  }

  set dma_ops(ops: DmaMapOps | null) {
    if (ops !== null && (typeof ops !== 'object' || Array.isArray(ops))) throw new TypeError(`Device: Expected a dma_map_ops object or null for dma_ops but received ${describeValue(ops)}`);
    this.#dmaOps = ops;
  }

  /** Added to a physical address to give the bus address (dma_range_map offset). */
  get busOffset(): bigint {
    return this.#busOffset;
  }

  set busOffset(offset: bigint) {
    this.#busOffset = checkU64('busOffset', offset);
  }

  /** dev->cma_area (per-device CMA), or null: one of the machine's CMA areas. */
  get cma_area(): Cma | null {
    return this.#cmaArea;
  }

  set cma_area(cma: Cma | null) {
    if (cma !== null && !this.machine.cmaAreas.includes(cma)) throw new TypeError(`Device: Expected null or a CMA area of ${this.machine.name} for cma_area but received ${describeValue(cma)}`);
    this.#cmaArea = cma;
  }

  /** dev->dma_mem: the per-device coherent pool, or null. */
  get dma_mem(): CoherentPool | null {
    return this.#dmaMem;
  }

  set dma_mem(pool: CoherentPool | null) {
    // Loaded lazily: coherent.ts imports this module through validate.ts.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { CoherentPool } = require('./coherent') as typeof import('./coherent');
    if (pool !== null && !(pool instanceof CoherentPool)) throw new TypeError(`Device: Expected null or a CoherentPool for dma_mem but received ${describeValue(pool)}`);
    this.#dmaMem = pool;
  }

  /** The IOMMU domain when the device is behind an IOMMU (use_dma_iommu); fixed at creation. */
  get iommu(): IommuDomain | null {
    return this.#iommu;
  }

  static {
    trackerOf = (dev) => dev.#tracker;
    devresOf = (dev) => dev.#devres;
  }

  get isDestroyed(): boolean {
    return this.#destroyed;
  }

  /**
   * Device teardown (driver unbind): DMA-API debug reports mappings still held; the coherent pool
   * is released. Idempotent.
   */
  destroy(): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    // devres_release_all runs before the bus notifier that lets DMA-API debug check for leaks:
    // what dmam_* allocated is gone by then.
    while (this.#devres.length > 0 && !this.machine.isDestroyed) this.#devres.pop()!.release();
    this.#devres.length = 0;
    this.#tracker.dma_debug_device_teardown(this);
    this.#iommu?.release();
    // The pool's memory belongs to the machine; the device lets go of it
    // (dma_release_coherent_memory, inlined so that device.ts needs nothing of coherent.ts).
    this.#dmaMem = null;
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
