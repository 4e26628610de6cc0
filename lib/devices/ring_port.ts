// The driver side of a worker device's register path: posted writes and non-posted reads queued
// in order on the control page's ring (a read waits for the device's answer, so it also flushes
// every write before it, as a PCI read does). No native call unless a thread sleeps: the device is
// woken only when it sleeps, and the driver spins briefly before it sleeps itself.

import type { Region } from '../os/region';
import { alive, type PeerId } from '../ipc/peer';
import { allOnes } from './device_host';
import type { MmioValue } from './model';
import {
  OP_READ, OP_WRITE, RING_SLOTS, RING_WORDS, W_ALIVE, W_DEV_SLEEP, W_DRV_SLEEP, W_PEER_PID, W_PEER_START,
  W_PEER_TID, W_RESP_HI, W_RESP_LO, W_RING, W_RING_HEAD, W_RING_TAIL, recordBadAccess,
} from './pci_state';

/** How long a read waits for its answer before it completes with all-ones (PCIe completion timeout). */
export const COMPLETION_TIMEOUT_MS = 1000;
/** How long the driver spins before it sleeps on the ring head (a device answers in microseconds). */
const SPIN_MS = 0.2;
/** Sleep slices while waiting, between checks that the device thread still lives. */
const SLICE_MS = 5;

const now = (): number => performance.now();

export class RingPort {
  readonly #w: Int32Array;
  readonly #ctl: Region;
  /** Set when the thread is known gone (the exit event, or found dead while waiting). */
  #onDead: () => void;

  constructor(ctl: Region, w: Int32Array, onDead: () => void) {
    this.#ctl = ctl;
    this.#w = w;
    this.#onDead = onDead;
  }

  #enqueue(kind: number, bar: number, offset: number, size: number, value: MmioValue): number {
    const w = this.#w;
    const tail = w[W_RING_TAIL]!;
    if (((tail - Atomics.load(w, W_RING_HEAD)) | 0) >= RING_SLOTS && !this.#waitHead((tail - RING_SLOTS + 1) | 0)) return -1;
    const s = W_RING + (tail & (RING_SLOTS - 1)) * RING_WORDS;
    w[s] = kind | (bar << 4) | (size << 8);
    w[s + 1] = offset;
    if (typeof value === 'bigint') {
      w[s + 2] = Number(value & 0xffffffffn) | 0;
      w[s + 3] = Number(value >> 32n) | 0;
    } else {
      w[s + 2] = value | 0;
      w[s + 3] = 0;
    }
    Atomics.store(w, W_RING_TAIL, (tail + 1) | 0);
    if (Atomics.load(w, W_DEV_SLEEP) !== 0) this.#ctl.notify(W_RING_TAIL * 4);
    return (tail + 1) | 0;
  }

  /** Waits until the device completed entry `target` - 1; false when it died or timed out. */
  #waitHead(target: number): boolean {
    const w = this.#w;
    const done = (): boolean => ((Atomics.load(w, W_RING_HEAD) - target) | 0) >= 0;
    const t0 = now();
    for (let i = 0; ; i++) {
      if (done()) return true;
      if (Atomics.load(w, W_ALIVE) === 0) return false;
      if ((i & 63) === 63 && now() - t0 > SPIN_MS) break;
    }
    Atomics.store(w, W_DRV_SLEEP, 1);
    try {
      for (;;) {
        const head = Atomics.load(w, W_RING_HEAD);
        if (((head - target) | 0) >= 0) return true;
        if (Atomics.load(w, W_ALIVE) === 0) return false;
        this.#ctl.wait(W_RING_HEAD * 4, head, SLICE_MS);
        if (done()) return true;
        const tid = Atomics.load(w, W_PEER_TID);
        if (tid !== 0 && !alive(this.#peer())) {
          this.#onDead();
          return false;
        }
        // Before the device thread has started, its start-up does not count against the timeout.
        if (tid !== 0 && now() - t0 > COMPLETION_TIMEOUT_MS) return false;
        if (tid === 0 && now() - t0 > 20 * COMPLETION_TIMEOUT_MS) return false;
      }
    } finally {
      Atomics.store(w, W_DRV_SLEEP, 0);
    }
  }

  #peer(): PeerId {
    const w = this.#w;
    return { pid: Atomics.load(w, W_PEER_PID), tid: Atomics.load(w, W_PEER_TID), start: Atomics.load(w, W_PEER_START) };
  }

  read(bar: number, offset: number, size: number): MmioValue {
    const w = this.#w;
    if (Atomics.load(w, W_ALIVE) === 0) return allOnes(size);
    const t = this.#enqueue(OP_READ, bar, offset, size, 0);
    if (t < 0 || !this.#waitHead(t)) {
      if (Atomics.load(w, W_ALIVE) !== 0) recordBadAccess(w, bar, offset, size, false); // completion timeout
      return allOnes(size);
    }
    const lo = Atomics.load(w, W_RESP_LO) >>> 0;
    if (size !== 8) return lo;
    return (BigInt(Atomics.load(w, W_RESP_HI) >>> 0) << 32n) | BigInt(lo);
  }

  write(bar: number, offset: number, size: number, value: MmioValue): void {
    if (Atomics.load(this.#w, W_ALIVE) === 0) return;
    this.#enqueue(OP_WRITE, bar, offset, size, value);
  }

  /** Waits until the device has taken every queued write (false when it died or timed out). */
  flush(): boolean {
    const w = this.#w;
    if (Atomics.load(w, W_ALIVE) === 0) return false;
    return this.#waitHead(w[W_RING_TAIL]!);
  }
}
