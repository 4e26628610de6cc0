// The device thread: a worker that maps the machine's memory by fd (through its bus description)
// and the device's control page and BARs by share handle, then serves the register ring and runs
// the model's timers, sleeping on the ring's futex when idle. If the model throws, the device
// marks itself dead first, so the driver reads all-ones instead of waiting.

import { parentPort, workerData } from 'node:worker_threads';
import { Region } from '../os/region';
import type { ShareHandle } from '../os/region-share';
import { self } from '../ipc/peer';
import { BusEngine, type BusDescription } from './bus_engine';
import { DeviceHost } from './device_host';
import type { DeviceType, MmioValue } from './model';
import {
  OP_READ, RING_SLOTS, RING_WORDS, W_ALIVE, W_DEV_SLEEP, W_DRV_SLEEP, W_FAULT_SEQ, W_IRQ_SEQ, W_IRQ_SLEEP, W_PEER_PID,
  W_PEER_START, W_PEER_TID, W_RESP_HI, W_RESP_LO, W_RING, W_RING_HEAD, W_RING_TAIL, W_STOP, logAccess,
} from './pci_state';

/** What the driver side hands the device thread (all structured-cloneable). */
export interface DeviceWorkerData {
  control: ShareHandle;
  bars: ShareHandle;
  barSizes: number[];
  bus: BusDescription;
  module: string;
  export: string;
  options: Record<string, unknown>;
  /** Log every access for the driver side's DMA-API debug check (the device's debug was on at creation). */
  debugAccesses: boolean;
}

/** How long the idle device spins before it sleeps (a doorbell right after an answer is common). */
const SPIN_MS = 0.05;
/** The longest sleep between checks of the stop word. */
const IDLE_MS = 100;

function main(d: DeviceWorkerData): void {
  const ctl = Region.fromShare(d.control);
  const w = new Int32Array(ctl.view().buffer, ctl.view().byteOffset, ctl.length >>> 2);
  const die = (): void => {
    Atomics.store(w, W_ALIVE, 0);
    Atomics.add(w, W_IRQ_SEQ, 1);
    ctl.notify(W_IRQ_SEQ * 4);
    ctl.notify(W_RING_HEAD * 4);
  };
  let barRegion: Region | null = null;
  let engine: BusEngine | null = null;
  try {
    barRegion = Region.fromShare(d.bars);
    const whole = barRegion.view();
    const bars: DataView[] = [];
    let at = 0;
    for (const size of d.barSizes) {
      bars.push(new DataView(whole.buffer, whole.byteOffset + at, size));
      at += size;
    }
    engine = new BusEngine(d.bus, {
      onFault: () => {
        Atomics.add(w, W_FAULT_SEQ, 1);
        Atomics.add(w, W_IRQ_SEQ, 1);
        ctl.notify(W_IRQ_SEQ * 4);
      },
      // DMA-API debug: the driver side checks the accesses against its live mappings when it wakes.
      onAccess: !d.debugAccesses ? null : (addr, length, write) => {
        if (!logAccess(w, addr, length, write)) return;
        Atomics.add(w, W_IRQ_SEQ, 1);
        ctl.notify(W_IRQ_SEQ * 4);
      },
    });
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const type = (require(d.module) as Record<string, DeviceType>)[d.export];
    if (type === undefined || typeof type.create !== 'function') throw new TypeError(`device worker: ${d.module} has no device type '${d.export}'`);
    const timers: { at: number; fn: () => void }[] = [];
    const host = new DeviceHost(type, w, bars, engine, d.options, {
      schedule(delayMs, fn) {
        const t = { at: performance.now() + delayMs, fn };
        let i = timers.length;
        while (i > 0 && timers[i - 1]!.at > t.at) i--;
        timers.splice(i, 0, t);
      },
      log(message) {
        parentPort?.postMessage({ log: message });
      },
      kick() {
        // Set W_IRQ_SEQ before this load, as the driver side sets W_IRQ_SLEEP before it loads W_IRQ_SEQ.
        if (Atomics.load(w, W_IRQ_SLEEP) !== 0) ctl.notify(W_IRQ_SEQ * 4);
      },
    });
    const me = self();
    Atomics.store(w, W_PEER_PID, me.pid);
    Atomics.store(w, W_PEER_START, me.start);
    Atomics.store(w, W_PEER_TID, me.tid);
    let head = Atomics.load(w, W_RING_HEAD);
    while (Atomics.load(w, W_STOP) === 0 && Atomics.load(w, W_ALIVE) === 1) {
      const tail = Atomics.load(w, W_RING_TAIL);
      if (tail !== head) {
        const s = W_RING + (head & (RING_SLOTS - 1)) * RING_WORDS;
        const op = w[s]!;
        const bar = (op >> 4) & 0xf;
        const size = (op >> 8) & 0xf;
        const offset = w[s + 1]! >>> 0;
        if ((op & 0xf) === OP_READ) {
          const v = host.read(bar, offset, size);
          if (typeof v === 'bigint') {
            w[W_RESP_LO] = Number(v & 0xffffffffn) | 0;
            w[W_RESP_HI] = Number((v >> 32n) & 0xffffffffn) | 0;
          } else {
            w[W_RESP_LO] = v | 0;
          }
        } else {
          const lo = w[s + 2]! >>> 0;
          const value: MmioValue = size === 8 ? (BigInt(w[s + 3]! >>> 0) << 32n) | BigInt(lo) : lo;
          host.write(bar, offset, size, value);
        }
        head = (head + 1) | 0;
        Atomics.store(w, W_RING_HEAD, head);
        if (Atomics.load(w, W_DRV_SLEEP) !== 0) ctl.notify(W_RING_HEAD * 4);
        continue;
      }
      const t = performance.now();
      if (timers.length > 0 && timers[0]!.at <= t) {
        timers.shift()!.fn();
        continue;
      }
      // Idle: spin a little, then sleep on the ring tail until a doorbell or the next timer.
      const until = t + SPIN_MS;
      while (Atomics.load(w, W_RING_TAIL) === head && performance.now() < until) { /* spin */ }
      if (Atomics.load(w, W_RING_TAIL) !== head) continue;
      Atomics.store(w, W_DEV_SLEEP, 1);
      if (Atomics.load(w, W_RING_TAIL) === head && Atomics.load(w, W_STOP) === 0) {
        const next = timers.length > 0 ? Math.max(0, timers[0]!.at - performance.now()) : IDLE_MS;
        ctl.wait(W_RING_TAIL * 4, head, Math.min(next, IDLE_MS));
      }
      Atomics.store(w, W_DEV_SLEEP, 0);
    }
    host.model.destroy?.();
  } catch (err) {
    die();
    throw err;
  } finally {
    engine?.close();
    barRegion?.close();
    ctl.close();
  }
}

main(workerData as DeviceWorkerData);
