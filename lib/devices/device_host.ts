// The device side of a PCI device, the same in either thread: it owns the model, applies its
// access-size rules (all-ones / dropped and recorded), and drives the interrupt words of the shared
// control page. Inline, the driver calls read/write directly; in a worker, the ring loop does.

import type { BusEngine } from './bus_engine';
import { naturallyAligned, type DeviceContext, type DeviceModel, type DeviceType, type IrqLine, type MmioValue } from './model';
import { W_ALIVE, W_INTX_LEVEL, W_IRQ_MODE, W_IRQ_SEQ, W_MSI_PENDING, recordBadAccess } from './pci_state';

/** What the thread running the host provides. */
export interface HostHooks {
  schedule(delayMs: number, fn: () => void): void;
  log(message: string): void;
  /** The interrupt words changed: wake the driver side's interrupt delivery. */
  kick(): void;
}

/** All-ones of an access size. */
export function allOnes(size: number): MmioValue {
  return size === 8 ? 0xffff_ffff_ffff_ffffn : size === 4 ? 0xffffffff : size === 2 ? 0xffff : 0xff;
}

export class DeviceHost {
  readonly model: DeviceModel;
  readonly #w: Int32Array;
  readonly #bars: readonly number[];

  constructor(type: DeviceType, w: Int32Array, bars: DataView[], bus: BusEngine, options: Record<string, unknown>, hooks: HostHooks) {
    this.#w = w;
    this.#bars = type.identity.bars;
    const irq: IrqLine = {
      raise(vector = 0) {
        if (Atomics.load(w, W_IRQ_MODE) === 0) {
          if (Atomics.exchange(w, W_INTX_LEVEL, 1) === 1) return;
        } else {
          Atomics.or(w, W_MSI_PENDING, 1 << (vector & 31));
        }
        Atomics.add(w, W_IRQ_SEQ, 1);
        hooks.kick();
      },
      lower() {
        if (Atomics.load(w, W_IRQ_MODE) !== 0) return;
        if (Atomics.exchange(w, W_INTX_LEVEL, 0) === 0) return;
        Atomics.add(w, W_IRQ_SEQ, 1);
      },
      get mode() {
        return Atomics.load(w, W_IRQ_MODE);
      },
    };
    const ctx: DeviceContext = {
      bus, irq, bars, options,
      schedule: (delayMs, fn) => hooks.schedule(delayMs, () => {
        if (Atomics.load(w, W_ALIVE) === 1) fn();
      }),
      log: (m) => hooks.log(m),
    };
    this.model = type.create(ctx);
  }

  #accepted(bar: number, offset: number, size: number, write: boolean): boolean {
    const len = this.#bars[bar];
    if (len === undefined || offset + size > len) return false;
    const rule = this.model.accessOk;
    return rule === undefined ? naturallyAligned(offset, size) : rule.call(this.model, bar, offset, size, write);
  }

  /** A register read as the device answers it (all-ones, recorded, when refused). */
  read(bar: number, offset: number, size: number): MmioValue {
    if (!this.#accepted(bar, offset, size, false)) {
      recordBadAccess(this.#w, bar, offset, size, false);
      return allOnes(size);
    }
    return this.model.mmioRead(bar, offset, size);
  }

  /** A register write (dropped, recorded, when refused). */
  write(bar: number, offset: number, size: number, value: MmioValue): void {
    if (!this.#accepted(bar, offset, size, true)) {
      recordBadAccess(this.#w, bar, offset, size, true);
      return;
    }
    this.model.mmioWrite(bar, offset, size, value);
  }
}
