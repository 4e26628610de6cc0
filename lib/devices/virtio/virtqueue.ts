// The device side of a split virtqueue, in the shape of QEMU's hw/virtio/virtio.c (virtqueue_pop,
// virtqueue_fill/flush/push, virtio_queue_set_notification, virtio_should_notify): it reaches the
// rings and the buffers only through the device's BusEngine. A malformed ring or a failed access
// breaks the queue (QEMU's virtio_error) with the reason recorded; nothing here throws on ring data.

import { MEMTX_OK, type BusEngine } from '../bus_engine';
import {
  VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC, VRING_AVAIL_F_NO_INTERRUPT, VRING_AVAIL_FLAGS, VRING_AVAIL_IDX,
  VRING_AVAIL_RING, VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, VRING_DESC_SIZE, VRING_USED_F_NO_NOTIFY,
  VRING_USED_FLAGS, VRING_USED_IDX, VRING_USED_RING, VRING_USED_ELEM_SIZE, VRING_MAX_SIZE, virtio_has_feature,
  vring_avail_event_offset, vring_need_event, vring_size_ok, vring_used_event_offset,
} from './virtio_ring_layout';

/**
 * smp_mb for the device's thread. A sequentially consistent read-modify-write on shared memory is a
 * full fence in V8 (a LOCK-prefixed instruction on x86); lib/drivers/barriers.ts is the driver's.
 */
const fenceWord = new Int32Array(new SharedArrayBuffer(4));
function smp_mb(): void {
  Atomics.add(fenceWord, 0, 0);
}

const TWO_32 = 4294967296;
/** A descriptor's high address word at or above this puts it past 2^53, beyond any bus address. */
const ADDR_HI_LIMIT = 0x200000;

/** How a device model configures one queue (what the transport learns from the driver). */
export interface VirtQueueConfig {
  /** Entries: a power of two from 1 to 32768. */
  readonly size: number;
  /** Bus addresses of the descriptor table, the available ring and the used ring. */
  readonly desc: number | bigint;
  readonly avail: number | bigint;
  readonly used: number | bigint;
  /** The negotiated features (VIRTIO_RING_F_EVENT_IDX and VIRTIO_RING_F_INDIRECT_DESC matter here). Default none. */
  readonly features?: bigint;
  /** Raises the queue's interrupt; called by notify() when the driver wants one. */
  readonly onNotify?: (() => void) | null;
  /** Called once, with the reason, when the queue breaks (the transport sets DEVICE_NEEDS_RESET). It must not throw. */
  readonly onError?: ((reason: string) => void) | null;
}

/**
 * One popped descriptor chain: its head (the id the used ring gives back) and its buffers as bus
 * address / length pairs, the device-readable (out) ones first, then the device-writable (in) ones.
 * A queue's pop() fills the same element each time, so it is valid until the next pop into it.
 */
export class VirtQueueElement {
  /** The head descriptor's index. */
  index = 0;
  /** Device-readable segments: addr[0 .. outNum - 1]. */
  outNum = 0;
  /** Device-writable segments: addr[outNum .. outNum + inNum - 1]. */
  inNum = 0;
  /** Total bytes of the out and of the in segments. */
  outBytes = 0;
  inBytes = 0;
  /** Bus address of each segment. */
  readonly addr: Float64Array;
  /** Length of each segment (never 0). */
  readonly len: Uint32Array;

  constructor(capacity: number) {
    this.addr = new Float64Array(capacity);
    this.len = new Uint32Array(capacity);
  }
}

function ringAddress(name: string, v: unknown): number {
  if (typeof v === 'bigint' && v >= 0n) return v > BigInt(Number.MAX_SAFE_INTEGER) ? -1 : Number(v);
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return v;
  throw new TypeError(`VirtQueue: Expected a non-negative integer or bigint for ${name} but received ${String(v)} of type ${typeof v}`);
}

const hex = (v: number): string => `0x${v.toString(16)}`;

/**
 * The device's view of one split virtqueue.
 * @example
 * const vq = new VirtQueue(ctx.bus, { size: 256, desc, avail, used, features, onNotify: () => ctx.irq.raise(0) });
 * for (let e = vq.pop(); e !== null; e = vq.pop()) { ...vq.readOut(e, 0, buf)...; vq.push(e.index, written); }
 * vq.notify();
 */
export class VirtQueue {
  readonly size: number;
  #broken = false;
  #error: string | null = null;
  readonly #bus: BusEngine;
  readonly #mask: number;
  readonly #desc: number;
  readonly #avail: number;
  readonly #used: number;
  readonly #eventIdx: boolean;
  readonly #indirect: boolean;
  readonly #onNotify: (() => void) | null;
  readonly #onError: ((reason: string) => void) | null;
  readonly #elem: VirtQueueElement;
  #lastAvailIdx = 0;
  #shadowAvailIdx = 0;
  #usedIdx = 0;
  #inuse = 0;
  #signalledUsed = 0;
  #signalledUsedValid = false;
  #notification = true;
  #usedFlags = 0;
  /** The last indirect table read (grown as needed, up to size * 16 bytes). */
  #table = new Uint8Array(0);
  #tableView = new DataView(this.#table.buffer);

  constructor(bus: BusEngine, config: VirtQueueConfig) {
    if (typeof bus !== 'object' || bus === null || typeof bus.read16 !== 'function') {
      throw new TypeError(`VirtQueue: Expected a BusEngine for bus but received ${String(bus)}`);
    }
    if (typeof config !== 'object' || config === null) throw new TypeError(`VirtQueue: Expected a VirtQueueConfig object but received ${String(config)}`);
    if (typeof config.size !== 'number') throw new TypeError(`VirtQueue: Expected a number for size but received ${String(config.size)} of type ${typeof config.size}`);
    if (!vring_size_ok(config.size)) {
      throw new RangeError(`VirtQueue: Expected a power of two from 1 to ${VRING_MAX_SIZE} for size but received ${String(config.size)}`);
    }
    for (const k of ['onNotify', 'onError'] as const) {
      const f = config[k];
      if (f !== undefined && f !== null && typeof f !== 'function') throw new TypeError(`VirtQueue: Expected a function or null for ${k} but received ${String(f)}`);
    }
    const features = config.features ?? 0n;
    if (typeof features !== 'bigint') throw new TypeError(`VirtQueue: Expected a bigint for features but received ${String(features)} of type ${typeof features}`);
    this.#bus = bus;
    this.size = config.size;
    this.#mask = config.size - 1;
    this.#desc = ringAddress('desc', config.desc);
    this.#avail = ringAddress('avail', config.avail);
    this.#used = ringAddress('used', config.used);
    this.#eventIdx = virtio_has_feature(features, VIRTIO_RING_F_EVENT_IDX);
    this.#indirect = virtio_has_feature(features, VIRTIO_RING_F_INDIRECT_DESC);
    this.#onNotify = config.onNotify ?? null;
    this.#onError = config.onError ?? null;
    this.#elem = new VirtQueueElement(config.size);
    if (this.#desc < 0 || this.#avail < 0 || this.#used < 0) this.markBroken('virtio: a ring address is beyond 2^53, past any bus address');
  }

  /** An element for pop(elem) when a device holds several chains at once (one per chain in flight). */
  createElement(): VirtQueueElement {
    return new VirtQueueElement(this.size);
  }

  /** The next avail ring entry the device will take (free-running, 16 bits). */
  get lastAvailIdx(): number {
    return this.#lastAvailIdx;
  }

  /** The used index the device has published (free-running, 16 bits). */
  get usedIdx(): number {
    return this.#usedIdx;
  }

  /** Chains popped and not yet pushed. */
  get inuse(): number {
    return this.#inuse;
  }

  /** True once the ring was found malformed or an access failed: pop() gives null from then on. */
  get broken(): boolean {
    return this.#broken;
  }

  /** Why the queue broke (QEMU's virtio_error message), or null. */
  get error(): string | null {
    return this.#error;
  }

  /**
   * virtio_error: the queue is broken from now on (the first reason is kept; the transport's
   * onError sets DEVICE_NEEDS_RESET). Device models call it too, e.g. for a request they cannot parse.
   */
  markBroken(reason: string): void {
    if (this.#broken) return;
    this.#broken = true;
    this.#error = String(reason);
    this.#onError?.(this.#error);
  }

  /** markBroken, as a null return for pop(). */
  #fail(reason: string): null {
    this.markBroken(reason);
    return null;
  }

  /** markBroken, as a false return for the boolean steps. */
  #stop(reason: string): false {
    this.markBroken(reason);
    return false;
  }

  #busFail(what: string, addr: number): false {
    return this.#stop(`virtio: bus error (MEMTX ${this.#bus.status}) ${what} at ${hex(addr)}`);
  }

  /**
   * Reads avail.idx into the shadow. False when there is nothing new or it broke the queue: the
   * driver may not be more than `size` entries ahead (QEMU's virtqueue_num_heads check).
   */
  #fetchAvailIdx(): boolean {
    const bus = this.#bus;
    const at = this.#avail + VRING_AVAIL_IDX;
    const idx = bus.read16(at);
    if (bus.status !== MEMTX_OK) return this.#busFail('reading avail.idx', at);
    const heads = (idx - this.#lastAvailIdx) & 0xffff;
    if (heads > this.size) {
      this.markBroken(`Guest moved avail index from ${this.#lastAvailIdx} to ${idx} (more than the queue size ${this.size} ahead)`);
      return false;
    }
    this.#shadowAvailIdx = idx;
    return heads !== 0;
  }

  /** virtio_queue_empty: nothing available (re-reads avail.idx when the shadow says so). A broken queue is empty. */
  isEmpty(): boolean {
    if (this.#broken) return true;
    if (this.#shadowAvailIdx !== this.#lastAvailIdx) return false;
    return !this.#fetchAvailIdx();
  }

  /**
   * virtqueue_pop: takes the next available chain into `elem` (default: the queue's own element,
   * overwritten by the next pop). Null when the ring is empty or broken; a malformed chain breaks
   * the queue and gives null. Costs four 32-bit bus reads per direct descriptor and one bus read
   * per indirect table; allocates nothing.
   */
  pop(elem: VirtQueueElement = this.#elem): VirtQueueElement | null {
    if (!(elem instanceof VirtQueueElement) || elem.addr.length < this.size) {
      throw new TypeError(`VirtQueue.pop: Expected an element of this queue's createElement() but received ${String(elem)}`);
    }
    if (this.#broken) return null;
    if (this.#shadowAvailIdx === this.#lastAvailIdx && !this.#fetchAvailIdx()) return null;
    smp_mb(); // the ring entry is read after avail.idx (smp_rmb)
    if (this.#inuse >= this.size) return this.#fail('Virtqueue size exceeded');
    const bus = this.#bus;
    const slot = this.#avail + VRING_AVAIL_RING + 2 * (this.#lastAvailIdx & this.#mask);
    const head = bus.read16(slot);
    if (bus.status !== MEMTX_OK) {
      this.#busFail('reading the avail ring', slot);
      return null;
    }
    if (head >= this.size) return this.#fail(`Guest says index ${head} is available`);
    this.#lastAvailIdx = (this.#lastAvailIdx + 1) & 0xffff;
    if (this.#eventIdx && this.#notification) {
      // vring_set_avail_event: notify me when you make the next entry available.
      const at = this.#used + vring_avail_event_offset(this.size);
      if (bus.write16(at, this.#lastAvailIdx) !== MEMTX_OK) {
        this.#busFail('writing avail_event', at);
        return null;
      }
    }
    if (!this.#readChain(head, elem)) return null;
    this.#inuse++;
    return elem;
  }

  /**
   * Walks the chain from `head` into `elem` (QEMU's virtqueue_split_pop loop). Bounded: at most
   * `size` descriptors of the table, and an indirect table of at most what is left of `size`.
   */
  #readChain(head: number, elem: VirtQueueElement): boolean {
    const bus = this.#bus;
    const addrs = elem.addr;
    const lens = elem.len;
    const size = this.size;
    let i = head;
    let max = size;
    let inTable = false;
    let visited = 0;
    let count = 0;
    let inNum = 0;
    let outBytes = 0;
    let inBytes = 0;
    for (;;) {
      let lo: number;
      let hi: number;
      let len: number;
      let fn: number;
      if (inTable) {
        const dv = this.#tableView;
        const at = i * VRING_DESC_SIZE;
        lo = dv.getUint32(at, true);
        hi = dv.getUint32(at + 4, true);
        len = dv.getUint32(at + 8, true);
        fn = dv.getUint32(at + 12, true);
      } else {
        const at = this.#desc + i * VRING_DESC_SIZE;
        lo = bus.read32(at);
        if (bus.status !== MEMTX_OK) return this.#busFail(`reading descriptor ${i}`, at);
        hi = bus.read32(at + 4);
        if (bus.status !== MEMTX_OK) return this.#busFail(`reading descriptor ${i}`, at + 4);
        len = bus.read32(at + 8);
        if (bus.status !== MEMTX_OK) return this.#busFail(`reading descriptor ${i}`, at + 8);
        fn = bus.read32(at + 12); // flags | next << 16
        if (bus.status !== MEMTX_OK) return this.#busFail(`reading descriptor ${i}`, at + 12);
      }
      const flags = fn & 0xffff;
      if (++visited > max) return this.#stop('Looped descriptor');
      if (flags & VRING_DESC_F_INDIRECT) {
        if (inTable) return this.#stop(`Nested indirect descriptor (entry ${i} of the indirect table)`);
        if (!this.#indirect) return this.#stop(`Indirect descriptor ${i} but VIRTIO_RING_F_INDIRECT_DESC was not negotiated`);
        if (flags & VRING_DESC_F_NEXT) return this.#stop(`Indirect descriptor ${i} has VRING_DESC_F_NEXT set`);
        if (len === 0 || len % VRING_DESC_SIZE !== 0) return this.#stop(`Invalid size for indirect buffer table (${len} bytes)`);
        const entries = len / VRING_DESC_SIZE;
        if (count + entries > size) return this.#stop(`Looped descriptor (an indirect table of ${entries} makes the chain longer than the queue size ${size})`);
        if (hi >= ADDR_HI_LIMIT) return this.#stop('Cannot map indirect buffer (address beyond 2^53)');
        const at = lo + hi * TWO_32;
        if (this.#table.length < len) {
          let n = Math.max(256, this.#table.length);
          while (n < len) n *= 2;
          this.#table = new Uint8Array(n);
          this.#tableView = new DataView(this.#table.buffer);
        }
        if (bus.read(at, this.#table, 0, len) !== MEMTX_OK) return this.#stop(`Cannot map indirect buffer (bus error MEMTX ${bus.status} at ${hex(at)})`);
        inTable = true;
        max = entries;
        visited = 0;
        i = 0;
        continue;
      }
      if (len === 0) return this.#stop('virtio: zero sized buffers are not allowed');
      if (hi >= ADDR_HI_LIMIT) return this.#stop('virtio: bogus descriptor or out of resources (address beyond 2^53)');
      if (count >= size) return this.#stop('Looped descriptor');
      addrs[count] = lo + hi * TWO_32;
      lens[count] = len;
      count++;
      if (flags & VRING_DESC_F_WRITE) {
        inNum++;
        inBytes += len;
      } else {
        if (inNum !== 0) return this.#stop('Incorrect order for descriptors');
        outBytes += len;
      }
      if ((flags & VRING_DESC_F_NEXT) === 0) break;
      const next = fn >>> 16;
      if (next >= max) return this.#stop(`Desc next is ${next}`);
      i = next;
    }
    elem.index = head;
    elem.outNum = count - inNum;
    elem.inNum = inNum;
    elem.outBytes = outBytes;
    elem.inBytes = inBytes;
    return true;
  }

  /**
   * virtqueue_fill: writes used ring entry `idx` places after the published used index: chain
   * `head` with `len` bytes written into its in buffers. Published by flush(). Nothing on a broken queue.
   */
  fill(head: number, len: number, idx = 0): void {
    if (!(head >= 0 && head < this.size && Number.isInteger(head))) throw new RangeError(`VirtQueue.fill: Expected an integer from 0 to ${this.size - 1} for head but received ${String(head)}`);
    if (!(len >= 0 && len <= 0xffffffff && Number.isInteger(len))) throw new RangeError(`VirtQueue.fill: Expected a 32-bit unsigned integer for len but received ${String(len)}`);
    if (!(idx >= 0 && idx < this.size && Number.isInteger(idx))) throw new RangeError(`VirtQueue.fill: Expected an integer from 0 to ${this.size - 1} for idx but received ${String(idx)}`);
    if (this.#broken) return;
    const bus = this.#bus;
    const at = this.#used + VRING_USED_RING + VRING_USED_ELEM_SIZE * ((this.#usedIdx + idx) & this.#mask);
    if (bus.write32(at, head) !== MEMTX_OK || bus.write32(at + 4, len) !== MEMTX_OK) this.#busFail('writing the used ring', at);
  }

  /**
   * virtqueue_flush: publishes `count` filled entries (the entries are written before the index).
   * On a broken queue only the in-use count drops.
   */
  flush(count: number): void {
    if (!(count >= 0 && count <= this.size && Number.isInteger(count))) throw new RangeError(`VirtQueue.flush: Expected an integer from 0 to ${this.size} for count but received ${String(count)}`);
    this.#inuse = Math.max(0, this.#inuse - count);
    if (this.#broken) return;
    smp_mb(); // smp_wmb: the used entries before the index
    const old = this.#usedIdx;
    const now = (old + count) & 0xffff;
    const at = this.#used + VRING_USED_IDX;
    if (this.#bus.write16(at, now) !== MEMTX_OK) {
      this.#busFail('writing used.idx', at);
      return;
    }
    this.#usedIdx = now;
    // The index passed what we last signalled: the next notify must look again (QEMU's check).
    if ((((now - this.#signalledUsed) << 16) >> 16) < ((now - old) & 0xffff)) this.#signalledUsedValid = false;
  }

  /** virtqueue_push: fill(head, len) and flush(1). */
  push(head: number, len: number): void {
    this.fill(head, len, 0);
    this.flush(1);
  }

  /**
   * virtio_queue_set_notification: whether the device wants doorbells. Without EVENT_IDX it sets or
   * clears used.flags NO_NOTIFY; with it, enabling writes avail_event = avail.idx (disabling just
   * stops pop() from moving avail_event on). Call isEmpty() after enabling: a buffer may have come
   * in before the driver saw the change.
   */
  setNotification(enable: boolean): void {
    if (this.#broken) return;
    this.#notification = enable === true;
    const bus = this.#bus;
    if (this.#eventIdx) {
      if (this.#notification) {
        const idx = bus.read16(this.#avail + VRING_AVAIL_IDX);
        if (bus.status !== MEMTX_OK) {
          this.#busFail('reading avail.idx', this.#avail + VRING_AVAIL_IDX);
          return;
        }
        const at = this.#used + vring_avail_event_offset(this.size);
        if (bus.write16(at, idx) !== MEMTX_OK) {
          this.#busFail('writing avail_event', at);
          return;
        }
      }
    } else {
      this.#usedFlags = this.#notification ? this.#usedFlags & ~VRING_USED_F_NO_NOTIFY : this.#usedFlags | VRING_USED_F_NO_NOTIFY;
      const at = this.#used + VRING_USED_FLAGS;
      if (bus.write16(at, this.#usedFlags) !== MEMTX_OK) {
        this.#busFail('writing used.flags', at);
        return;
      }
    }
    if (this.#notification) smp_mb(); // expose the change before the caller re-checks avail.idx
  }

  /**
   * virtio_should_notify: whether the driver wants an interrupt for what was flushed since the last
   * one: without EVENT_IDX unless avail.flags has NO_INTERRUPT; with it, when the used index passed
   * the driver's used_event. False on a broken queue.
   */
  shouldNotify(): boolean {
    if (this.#broken) return false;
    smp_mb(); // the used entries are visible before the driver's threshold is read
    const bus = this.#bus;
    if (!this.#eventIdx) {
      const flags = bus.read16(this.#avail + VRING_AVAIL_FLAGS);
      if (bus.status !== MEMTX_OK) return this.#busFail('reading avail.flags', this.#avail);
      return (flags & VRING_AVAIL_F_NO_INTERRUPT) === 0;
    }
    const at = this.#avail + vring_used_event_offset(this.size);
    const event = bus.read16(at);
    if (bus.status !== MEMTX_OK) return this.#busFail('reading used_event', at);
    const valid = this.#signalledUsedValid;
    const old = this.#signalledUsed;
    this.#signalledUsedValid = true;
    this.#signalledUsed = this.#usedIdx;
    return !valid || vring_need_event(event, this.#usedIdx, old);
  }

  /** virtio_notify: raises the interrupt (the config's onNotify) when shouldNotify() says so. @returns whether it did. */
  notify(): boolean {
    if (!this.shouldNotify()) return false;
    this.#onNotify?.();
    return true;
  }

  /**
   * iov_to_buf over the element's out segments: copies up to `length` bytes of the chain's readable
   * data from byte `offset` on into dst[dstOffset..]. @returns bytes copied (fewer when the data
   * ends first), or -1 when a bus access failed, which breaks the queue.
   */
  readOut(elem: VirtQueueElement, offset: number, dst: Uint8Array, dstOffset = 0, length = dst.length - dstOffset): number {
    return this.#copy(elem, 0, elem.outNum, offset, dst, dstOffset, length, false);
  }

  /**
   * iov_from_buf over the element's in segments: copies up to `length` bytes of src[srcOffset..]
   * into the chain's writable buffers from byte `offset` on. @returns bytes copied, or -1 when a bus
   * access failed, which breaks the queue (no byte of that access changed).
   */
  writeIn(elem: VirtQueueElement, offset: number, src: Uint8Array, srcOffset = 0, length = src.length - srcOffset): number {
    return this.#copy(elem, elem.outNum, elem.outNum + elem.inNum, offset, src, srcOffset, length, true);
  }

  #copy(elem: VirtQueueElement, from: number, to: number, offset: number, buf: Uint8Array, bufOffset: number, length: number, write: boolean): number {
    if (!Number.isSafeInteger(offset) || offset < 0) throw new RangeError(`VirtQueue: Expected a non-negative integer for offset but received ${String(offset)}`);
    const bus = this.#bus;
    let done = 0;
    let skip = offset;
    for (let s = from; s < to && done < length; s++) {
      const segLen = elem.len[s]!;
      if (skip >= segLen) {
        skip -= segLen;
        continue;
      }
      const n = Math.min(segLen - skip, length - done);
      const at = elem.addr[s]! + skip;
      const r = write ? bus.write(at, buf, bufOffset + done, n) : bus.read(at, buf, bufOffset + done, n);
      if (r !== MEMTX_OK) {
        this.#busFail(write ? 'writing a buffer' : 'reading a buffer', at);
        return -1;
      }
      done += n;
      skip = 0;
    }
    return done;
  }
}
