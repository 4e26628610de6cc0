// struct pci_dev: a device model attached to a machine as a PCI function, inline (same thread,
// deterministic) or in a worker thread. It owns the shared control page and the BAR memory, the
// register path (direct calls inline, the ring to a worker), interrupt and IOMMU-fault delivery
// on the driver's event loop, and teardown (the device stops; later reads give all-ones).

import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { Region } from '../os/region';
import type { Machine } from '../mm/machine';
import { onMachineDestroy } from '../mm/machine-teardown';
import { Device, type DeviceOptions } from '../dma/device';
import { busDescription, inlineSegmentBytes } from './bus_master';
import { dma_owner_report_device_accesses } from '../dma/ownership';
import { dmaDebugAccessCheck } from './access_check';
import { BusEngine, type BusDescription } from './bus_engine';
import { DeviceHost, allOnes } from './device_host';
import type { DeviceWorkerData } from './device_worker';
import type { DeviceType, MmioValue } from './model';
import { RingPort } from './ring_port';
import {
  CONTROL_BYTES, W_ALIVE, W_BAD_COUNT, W_BAD_OFFSET, W_BAD_WHAT, W_FAULT_SEQ, W_IRQ_SEQ, W_IRQ_SLEEP, W_RING_HEAD, W_RING_TAIL, W_STOP,
  drainAccesses, recordBadAccess,
} from './pci_state';

/** A device type a worker can load: a module path and the name of its DeviceType export. */
export interface DeviceTypeRef {
  readonly module: string;
  readonly export: string;
}

export interface PciDeviceOptions {
  /** 'edu' (QEMU's edu device), a DeviceType (inline only) or a module reference. Default 'edu'. */
  type?: 'edu' | DeviceType | DeviceTypeRef;
  /** Run the model in a worker thread (default false: inline, in this thread). */
  worker?: boolean;
  /** Options given to the model (ctx.options); structured-cloned into a worker. */
  modelOptions?: Record<string, unknown>;
  /** The INTx interrupt number: give two devices the same one to share a line. Default: a new one. */
  intx?: number;
  /** The struct device options (dmaMask, iommu, debug, ...). Its name defaults to the PCI slot name. */
  device?: DeviceOptions;
}

/** One BAR as pci_resource_start / pci_resource_len give it. */
export interface PciResource {
  readonly start: bigint;
  readonly len: number;
}

/** A refused or out-of-range register access, as recorded. */
export interface BadAccess {
  readonly bar: number;
  readonly offset: number;
  readonly size: number;
  readonly write: boolean;
}

/** Live devices by BAR start (ioremap finds them here). */
const barMap = new Map<bigint, { pdev: PciDev; bar: number }>();
/** Next free MMIO address for BARs (above 4 GiB RAM holes are not modelled: a plain window). */
let nextBar = 0xfe00_0000_0n;
let nextSlot = 3;
let nextIntx = 16;
/** Every live device. */
const live = new Set<PciDev>();
/**
 * After an interrupt a worker device's wire is polled this long, a turn of the event loop at a time,
 * before the driver side sleeps in the kernel again (NAPI's busy polling): back-to-back doorbells and
 * interrupts then cost no thread wake-up on this side. Nothing blocks: each poll is one setImmediate.
 */
const IRQ_POLL_MS = 0.1;
/** Devices per machine (destroyed with it). */
const byMachine = new WeakMap<Machine, Set<PciDev>>();

function resolveType(t: PciDeviceOptions['type']): { type: DeviceType; ref: DeviceTypeRef | null } {
  if (t === undefined || t === 'edu') {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { edu } = require('./edu') as typeof import('./edu');
    return { type: edu, ref: { module: require.resolve('./edu'), export: 'edu' } };
  }
  if (typeof t === 'object' && t !== null && 'create' in t && typeof t.create === 'function') return { type: t, ref: null };
  if (typeof t === 'object' && t !== null && typeof (t as DeviceTypeRef).module === 'string' && typeof (t as DeviceTypeRef).export === 'string') {
    const ref = t as DeviceTypeRef;
    const mod = path.resolve(ref.module);
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const type = (require(mod) as Record<string, DeviceType | undefined>)[ref.export];
    if (type === undefined || typeof type.create !== 'function') throw new TypeError(`createPciDevice: ${mod} exports no DeviceType named '${ref.export}'`);
    return { type, ref: { module: mod, export: ref.export } };
  }
  throw new TypeError(`createPciDevice: Expected 'edu', a DeviceType or { module, export } for type but received ${String(t)}`);
}

export class PciDev {
  /** The struct device for the DMA API (dma_map_*, dma_set_mask...). */
  readonly dev: Device;
  readonly vendor: number;
  readonly device: number;
  readonly revision: number;
  /** The 24-bit class code. */
  readonly class: number;
  /** The INTx interrupt number (pdev->irq). */
  readonly irq: number;
  readonly resources: readonly PciResource[];
  /** Whether the model runs in a worker thread. */
  readonly inWorker: boolean;
  readonly msiVectors: number;
  readonly msixVectors: number;
  /** Set by the interrupt layer: called on the event loop when the interrupt words changed. */
  interruptSink: ((pdev: PciDev) => void) | null = null;
  /** Called once at teardown (the interrupt layer frees its vectors). */
  readonly teardownHooks: (() => void)[] = [];
  readonly #ctl: Region;
  readonly #w: Int32Array;
  readonly #barRegion: Region;
  readonly #host: DeviceHost | null = null;
  readonly #engine: BusEngine | null = null;
  readonly #port: RingPort | null = null;
  readonly #timers = new Set<NodeJS.Timeout>();
  #worker: Worker | null = null;
  #workerGone: Promise<void> = Promise.resolve();
  readonly #abort = new AbortController();
  #kicked = false;
  #faultSeq = 0;
  #destroyed = false;
  #badAtTeardown: { count: number; last: BadAccess | null } = { count: 0, last: null };
  #unhook: () => void = () => {};
  /** A worker device's DMA-API debug check, run on the accesses it logged (null: debug off at creation). */
  #accessCheck: ((addr: number, length: number, write: boolean) => void) | null = null;

  constructor(machine: Machine, options: PciDeviceOptions = {}) {
    if (typeof options !== 'object' || options === null) throw new TypeError(`createPciDevice: Expected an options object but received ${String(options)}`);
    for (const k of Object.keys(options)) {
      if (!['type', 'worker', 'modelOptions', 'intx', 'device'].includes(k)) throw new TypeError(`createPciDevice: Unknown option '${k}' (expected type, worker, modelOptions, intx, device)`);
    }
    if (options.worker !== undefined && typeof options.worker !== 'boolean') throw new TypeError(`createPciDevice: Expected a boolean for worker but received ${String(options.worker)}`);
    if (options.intx !== undefined && (!Number.isInteger(options.intx) || options.intx < 1)) throw new RangeError(`createPciDevice: Expected a positive integer for intx but received ${String(options.intx)}`);
    if (options.modelOptions !== undefined && (typeof options.modelOptions !== 'object' || options.modelOptions === null)) throw new TypeError('createPciDevice: Expected an object for modelOptions');
    const { type, ref } = resolveType(options.type);
    const worker = options.worker === true;
    if (worker && ref === null) throw new TypeError('createPciDevice: a worker device needs a type a worker can load: \'edu\' or { module, export }');
    const id = type.identity;
    for (const b of id.bars) if (!Number.isInteger(b) || b < 4096 || (b & (b - 1)) !== 0) throw new RangeError(`createPciDevice: BAR sizes must be powers of two of at least 4096 bytes (got ${b})`);
    const slot = nextSlot++;
    this.dev = new Device(machine, { name: `0000:00:${slot.toString(16).padStart(2, '0')}.0`, ...options.device });
    this.vendor = id.vendor;
    this.device = id.device;
    this.revision = id.revision;
    this.class = id.classCode;
    this.msiVectors = id.msiVectors;
    this.msixVectors = id.msixVectors;
    this.irq = options.intx ?? nextIntx++;
    this.inWorker = worker;
    const res: PciResource[] = [];
    for (const len of id.bars) {
      nextBar = (nextBar + BigInt(len) - 1n) & ~(BigInt(len) - 1n);
      res.push({ start: nextBar, len });
      nextBar += BigInt(len);
    }
    this.resources = res;
    const barBytes = id.bars.reduce((a, b) => a + b, 0);
    this.#ctl = Region.allocate(CONTROL_BYTES, { hugepages: 'off' });
    this.#barRegion = Region.allocate(Math.max(4096, barBytes), { hugepages: 'off' });
    const v = this.#ctl.view();
    this.#w = new Int32Array(v.buffer, v.byteOffset, CONTROL_BYTES >>> 2);
    Atomics.store(this.#w, W_ALIVE, 1);
    // The device's address lines are 64 bits wide: its own dma_mask property (edu's) clamps inside the model.
    const hwLimit = this.dev.bus_dma_limit === 0n ? Number.MAX_SAFE_INTEGER : Number(this.dev.bus_dma_limit);
    const mkDesc = (fdOnly: boolean): BusDescription => ({ ...busDescription(this.dev, { fdOnly }), busLimit: hwLimit });
    const modelOptions = { ...(options.modelOptions ?? {}) };
    try {
      if (!worker) {
        const whole = this.#barRegion.view();
        const bars: DataView[] = [];
        let at = 0;
        for (const len of id.bars) {
          bars.push(new DataView(whole.buffer, whole.byteOffset + at, len));
          at += len;
        }
        const domain = this.dev.iommu;
        this.#engine = new BusEngine(mkDesc(false), {
          onFault: domain === null ? null : () => { domain.processFaults(); },
          onAccess: dmaDebugAccessCheck(this.dev),
          segmentBytes: inlineSegmentBytes(machine),
          onOwnership: () => { dma_owner_report_device_accesses(machine); },
        });
        this.#host = new DeviceHost(type, this.#w, bars, this.#engine, modelOptions, {
          schedule: (delayMs, fn) => {
            const t = setTimeout(() => {
              this.#timers.delete(t);
              if (!this.#destroyed && !machine.isDestroyed) this.#guard(fn);
            }, delayMs);
            this.#timers.add(t);
          },
          log: (m) => machine.warn(`${this.dev.name}: ${m}`),
          kick: () => this.#kick(),
        });
      } else {
        const data: DeviceWorkerData = {
          control: this.#ctl.share(), bars: this.#barRegion.share(), barSizes: [...id.bars],
          bus: mkDesc(true), module: ref!.module, export: ref!.export, options: modelOptions,
          debugAccesses: this.dev.debug.enabled,
        };
        this.#accessCheck = dmaDebugAccessCheck(this.dev);
        this.#port = new RingPort(this.#ctl, this.#w, () => this.#markDead());
        const wk = new Worker(path.join(__dirname, 'device_worker.js'), { workerData: data });
        this.#worker = wk;
        wk.on('message', (msg: { log?: string }) => {
          if (typeof msg?.log === 'string') machine.warn(`${this.dev.name}: ${msg.log}`);
        });
        wk.on('error', (err) => {
          if (!this.#destroyed) machine.warn(`${this.dev.name}: device worker died: ${err instanceof Error ? err.message : String(err)}`);
        });
        this.#workerGone = new Promise((resolve) => {
          wk.once('exit', () => {
            this.#markDead();
            this.#worker = null;
            resolve();
          });
        });
        void this.#watch();
      }
    } catch (err) {
      this.#ctl.close();
      this.#barRegion.close();
      this.dev.destroy();
      throw err;
    }
    res.forEach((r, bar) => barMap.set(r.start, { pdev: this, bar }));
    let set = byMachine.get(machine);
    if (set === undefined) byMachine.set(machine, set = new Set());
    set.add(this);
    live.add(this);
    // machine.destroy() removes the device first: its worker stops before the machine's memory goes.
    this.#unhook = onMachineDestroy(machine, () => { void this.destroy(); });
  }

  /** False once the device was removed or its thread died: reads give all-ones. */
  get alive(): boolean {
    return !this.#destroyed && Atomics.load(this.#w, W_ALIVE) === 1;
  }

  get isDestroyed(): boolean {
    return this.#destroyed;
  }

  /** The control page's words (the interrupt layer reads the INTx level and MSI bits there). */
  get controlWords(): Int32Array {
    return this.#w;
  }

  /** A register read of `size` bytes at `offset` of BAR `bar` (already bounds-checked by the caller). */
  mmioRead(bar: number, offset: number, size: number): MmioValue {
    if (this.#destroyed || Atomics.load(this.#w, W_ALIVE) === 0) return allOnes(size);
    if (this.#host !== null) {
      const host = this.#host;
      let v: MmioValue = allOnes(size);
      this.#guard(() => { v = host.read(bar, offset, size); });
      return Atomics.load(this.#w, W_ALIVE) === 0 ? allOnes(size) : v;
    }
    return this.#port!.read(bar, offset, size);
  }

  mmioWrite(bar: number, offset: number, size: number, value: MmioValue): void {
    if (this.#destroyed || Atomics.load(this.#w, W_ALIVE) === 0) return;
    if (this.#host !== null) {
      const host = this.#host;
      this.#guard(() => host.write(bar, offset, size, value));
    }
    else this.#port!.write(bar, offset, size, value);
  }

  /**
   * Inline: runs model code; a model that throws is a device that died (as a worker that throws):
   * it is marked dead (reads give all-ones from now on) and the error becomes a machine warning,
   * never an exception in the driver's register access.
   */
  #guard(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.#markDead();
      const m = this.dev.machine;
      if (!m.isDestroyed) m.warn(`${this.dev.name}: device model died: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  /** Waits until a worker device took every posted write (inline: nothing to wait for). */
  flushPosted(): void {
    if (this.#port !== null) this.#port.flush();
  }

  /** Records an access the driver side refused (outside the BAR). */
  recordBadAccess(bar: number, offset: number, size: number, write: boolean): void {
    if (!this.#ctl.closed) recordBadAccess(this.#w, bar, offset, size, write);
  }

  /** Refused or out-of-range register accesses so far, and the last one. */
  badAccesses(): { count: number; last: BadAccess | null } {
    if (this.#ctl.closed) return this.#badAtTeardown;
    const w = this.#w;
    const count = Atomics.load(w, W_BAD_COUNT);
    if (count === 0) return { count, last: null };
    const what = w[W_BAD_WHAT]!;
    return { count, last: { bar: what >>> 16, offset: w[W_BAD_OFFSET]! >>> 0, size: (what >> 1) & 0x7fff, write: (what & 1) === 1 } };
  }

  /** Inline: one delivery on a later turn of the loop (never inside the register access that raised it). */
  #kick(): void {
    if (this.#kicked || this.#destroyed) return;
    this.#kicked = true;
    setImmediate(() => {
      this.#kicked = false;
      this.#deliver();
    });
  }

  #deliver(): void {
    if (this.#destroyed) return;
    const f = Atomics.load(this.#w, W_FAULT_SEQ);
    if (f !== this.#faultSeq) {
      this.#faultSeq = f;
      if (!this.dev.machine.isDestroyed) this.dev.iommu?.processFaults();
    }
    // Before the interrupt that may follow them: a worker device's accesses, checked by DMA-API debug.
    if (this.#accessCheck !== null) {
      const lost = drainAccesses(this.#w, this.#accessCheck);
      if (lost > 0 && !this.dev.machine.isDestroyed) this.dev.machine.warn(`DMA-API: ${this.dev.name}: ${lost} device accesses were not checked (the access log was full)`);
    }
    this.interruptSink?.(this);
  }

  /** Worker: the interrupt and fault "wire" -- an asynchronous futex wait on the sequence word. */
  async #watch(): Promise<void> {
    const w = this.#w;
    const signal = this.#abort.signal;
    while (!this.#destroyed) {
      const seen = Atomics.load(w, W_IRQ_SEQ);
      this.#deliver();
      if (this.#destroyed || Atomics.load(w, W_ALIVE) === 0) return;
      if (await this.#poll(seen)) continue;
      // Sleep: the device side wakes this wait from now on (W_IRQ_SLEEP before the last look).
      Atomics.store(w, W_IRQ_SLEEP, 1);
      try {
        if (Atomics.load(w, W_IRQ_SEQ) === seen) await this.#ctl.waitAsync(W_IRQ_SEQ * 4, seen, Infinity, { signal });
      } catch {
        return; // aborted or closed: the device is being torn down
      }
      if (!this.#ctl.closed) Atomics.store(w, W_IRQ_SLEEP, 0);
    }
  }

  /** Polls the interrupt word for IRQ_POLL_MS, one loop turn at a time: true when it moved (or the device went). */
  #poll(seen: number): Promise<boolean> {
    const until = performance.now() + IRQ_POLL_MS;
    return new Promise((resolve) => {
      const step = (): void => {
        if (this.#destroyed || Atomics.load(this.#w, W_IRQ_SEQ) !== seen) resolve(true);
        else if (performance.now() >= until) resolve(false);
        else setImmediate(step);
      };
      setImmediate(step);
    });
  }

  /** Re-run interrupt delivery on a later turn (after enable_irq, or a level still asserted). */
  requestDelivery(): void {
    if (this.#host !== null) {
      this.#kick();
      return;
    }
    if (this.#kicked || this.#destroyed) return;
    this.#kicked = true;
    setImmediate(() => {
      this.#kicked = false;
      this.#deliver();
    });
  }

  #markDead(): void {
    if (this.#ctl.closed) return;
    if (Atomics.exchange(this.#w, W_ALIVE, 0) === 1) {
      Atomics.add(this.#w, W_IRQ_SEQ, 1);
      if (!this.#ctl.closed) this.#ctl.notify(W_IRQ_SEQ * 4);
    }
  }

  /** Ends the worker thread abruptly (a test of surprise removal): the device reads as all-ones after. */
  terminateWorker(): Promise<void> {
    const wk = this.#worker;
    if (wk === null) return this.#workerGone;
    void wk.terminate();
    return this.#workerGone;
  }

  /**
   * Removes the device: no interrupt handler runs after this returns, the device stops (its worker
   * ends: asked first, terminated if it does not within a second), register reads give all-ones,
   * and the struct device is torn down. The promise settles once the worker has exited.
   */
  destroy(): Promise<void> {
    if (this.#destroyed) return this.#workerGone;
    this.#destroyed = true;
    this.#unhook();
    for (const hook of this.teardownHooks.splice(0)) hook();
    this.interruptSink = null;
    const w = this.#w;
    Atomics.store(w, W_STOP, 1);
    Atomics.store(w, W_ALIVE, 0);
    this.#abort.abort();
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
    if (this.#host !== null) this.#host.model.destroy?.();
    this.#engine?.close();
    this.#ctl.notify(W_RING_TAIL * 4);
    this.#ctl.notify(W_RING_HEAD * 4);
    for (const r of this.resources) barMap.delete(r.start);
    byMachine.get(this.dev.machine)?.delete(this);
    live.delete(this);
    const wk = this.#worker;
    let done: Promise<void>;
    if (wk !== null) {
      const timer = setTimeout(() => { void wk.terminate(); }, 1000);
      done = this.#workerGone.then(() => clearTimeout(timer));
    } else {
      done = Promise.resolve();
    }
    this.#badAtTeardown = this.badAccesses();
    // Our mappings can go now: the worker maps the same memfds itself.
    this.#ctl.close();
    this.#barRegion.close();
    if (!this.dev.machine.isDestroyed) this.dev.destroy();
    this.#workerGone = done;
    return done;
  }
}

/** Creates a PCI device on `machine` (see PciDeviceOptions). */
export function createPciDevice(machine: Machine, options?: PciDeviceOptions): PciDev {
  return new PciDev(machine, options);
}

/** The live device and BAR at a bus address range (ioremap's lookup), or null. */
export function findBar(phys: bigint, size: number): { pdev: PciDev; bar: number; offset: number } | null {
  for (const [start, e] of barMap) {
    const len = BigInt(e.pdev.resources[e.bar]!.len);
    if (phys >= start && phys + BigInt(size) <= start + len) return { pdev: e.pdev, bar: e.bar, offset: Number(phys - start) };
  }
  return null;
}

/** Every live PCI device of a machine. */
export function pciDevicesOf(machine: Machine): PciDev[] {
  return [...(byMachine.get(machine) ?? [])];
}

/** Every live PCI device (the interrupt layer finds the devices on an INTx line here). */
export function livePciDevices(): PciDev[] {
  return [...live];
}
