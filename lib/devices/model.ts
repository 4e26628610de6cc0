// The device-model interface: what a device is to dmamem (BARs, register reads and writes with
// their access-size rules) and what it is given (its bus engine, its interrupt line, its own
// thread's timers, its BAR memory). The same model code runs inline or in a worker thread.

import type { BusEngine } from './bus_engine';

/** A register value: a number for 1-, 2- and 4-byte accesses, a bigint for 8-byte ones. */
export type MmioValue = number | bigint;

/** A device model. Every method runs in the device's thread (the driver's, inline). */
export interface DeviceModel {
  /**
   * Whether the device accepts an access of `size` bytes at `offset` of BAR `bar` (its access-size
   * rules). A refused read gives all-ones and a refused write is dropped; both are recorded.
   * Default: any naturally aligned 1, 2, 4 or 8-byte access.
   */
  accessOk?(bar: number, offset: number, size: number, write: boolean): boolean;
  /** What a read returns (number for sizes 1..4, bigint for 8). May have side effects. */
  mmioRead(bar: number, offset: number, size: number): MmioValue;
  /** A register write (a doorbell, a command...): number for sizes 1..4, bigint for 8. */
  mmioWrite(bar: number, offset: number, size: number, value: MmioValue): void;
  /** Called once when the device is removed (stop timers, drop state). */
  destroy?(): void;
}

/** The device's interrupt pin or message: how a model signals the driver. */
export interface IrqLine {
  /** INTx: assert the level-triggered line. MSI/MSI-X (when the driver enabled them): send vector `vector`'s message. */
  raise(vector?: number): void;
  /** INTx: deassert the line. MSI/MSI-X: nothing (messages are edges). */
  lower(vector?: number): void;
  /** 0: INTx, 1: MSI, 2: MSI-X, as the driver set it up with pci_alloc_irq_vectors. */
  readonly mode: number;
}

/** Everything a model is given. */
export interface DeviceContext {
  /** Bus mastering: the one way the model touches memory (MEMTX_* results, faults recorded). */
  readonly bus: BusEngine;
  readonly irq: IrqLine;
  /** The BARs' shared memory, where the model may keep its register file. */
  readonly bars: readonly DataView[];
  /** Runs `fn` in the device's own thread after `delayMs` (0: as soon as it is idle). */
  schedule(delayMs: number, fn: () => void): void;
  /** A guest-error log line (QEMU's LOG_GUEST_ERROR): shown as a machine warning on the driver side. */
  log(message: string): void;
  /** The model's options as given at creation (structured-cloned into a worker). */
  readonly options: Readonly<Record<string, unknown>>;
}

/** PCI identity and resources a model declares. */
export interface DeviceIdentity {
  readonly vendor: number;
  readonly device: number;
  readonly revision: number;
  /** 24-bit class code (class, subclass, prog-if). */
  readonly classCode: number;
  /** BAR sizes in bytes (powers of two, at least 4 KiB). */
  readonly bars: readonly number[];
  /** MSI vectors the device supports (0: none). */
  readonly msiVectors: number;
  /** MSI-X vectors (0: none). */
  readonly msixVectors: number;
}

/**
 * What a device module exports for a kind of device: its identity and a factory. A worker loads
 * it by module path and export name, so it must be a plain module-level object.
 */
export interface DeviceType {
  readonly name: string;
  readonly identity: DeviceIdentity;
  create(ctx: DeviceContext): DeviceModel;
}

/** The default access rule: naturally aligned 1, 2, 4 or 8 bytes. */
export function naturallyAligned(offset: number, size: number): boolean {
  return (size === 1 || size === 2 || size === 4 || size === 8) && offset % size === 0;
}
