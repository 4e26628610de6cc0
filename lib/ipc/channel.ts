// A single-producer single-consumer channel over a shared Region: fixed-size slots or
// variable-length records in a ring, head and tail published with Atomics, a futex wake only when
// the other side sleeps, backpressure, and an error (never a hang) when the peer dies.

import type { HugepagePolicy } from '../os/backing';
import { DmamemError, errnoError } from '../os/errors';
import { Region } from '../os/region';
import type { ShareHandle } from '../os/region-share';
import * as v from '../os/validate';
import * as L from './channel-layout';
import { alive, self, type PeerId } from './peer';

/** Which end of a channel. */
export type ChannelRole = 'producer' | 'consumer';
const ROLES: readonly ChannelRole[] = ['producer', 'consumer'];

/** Options of Channel.create. */
export interface ChannelOptions {
  /** Ring bytes: a multiple of 8 (of slotSize with slots), at most 1 GiB. */
  capacity: number;
  /** Fixed-size slots of this many bytes (every message exactly this long); default: variable-length records. */
  slotSize?: number;
  /** Hugepage policy of the shared memory (default 'off'). */
  hugepages?: HugepagePolicy;
  /** How often a waiting side checks that its peer still lives, in ms (default 200). */
  livenessMs?: number;
}

/** What the other end needs to attach: plain data, structured-clonable (postMessage, JSON). */
export interface ChannelShare {
  region: ShareHandle;
}

const MAX_CAPACITY = 1 << 30;
/**
 * Loads of the peer's word before sleeping on it: at most about 10 µs (a futex sleep and wake
 * costs tens of them), at least a few hundred ns. The budget adapts per end (see #prepareSleep).
 */
const SPIN_MAX = 4000;
const SPIN_MIN = 64;

/** The constructor's key: only the factories make channels. */
const CHANNEL_KEY = Symbol('Channel');

/**
 * One end of an SPSC channel. The producer sends, the consumer receives; received messages are
 * views into the ring (no copy), valid until the next receive on that end.
 * @example
 * const tx = Channel.create('producer', { capacity: 1 << 20 });
 * worker.postMessage(tx.share());                  // worker: const rx = Channel.attach(share);
 * await tx.send(Buffer.from('hello'));              //          const msg = await rx.receive();
 */
export class Channel {
  readonly #r: Region;
  readonly #role: ChannelRole;
  readonly #h: Int32Array;
  readonly #data: Uint8Array;
  readonly #d32: Int32Array;
  readonly #cap: number;
  readonly #slot: number;
  readonly #livenessMs: number;
  /** The position this end owns (tail for the producer, head for the consumer), kept locally. */
  #pos: number;
  /** Consumer: where head goes when the last message handed out is released. */
  #next = -1;
  /** This end's current spin budget (loads), between SPIN_MIN and SPIN_MAX. */
  #spin = SPIN_MAX;
  /** Producer: where the reserved (not yet committed) message starts, or -1; its payload offset and length. */
  #resStart = -1;
  #resP = 0;
  #resLen = 0;
  #closed = false;

  private constructor(key: symbol, r: Region, role: ChannelRole, livenessMs: number) {
    if (key !== CHANNEL_KEY) throw new TypeError('Channel is not constructible: use Channel.create() or Channel.fromShare()');
    this.#r = r;
    this.#role = role;
    this.#h = new Int32Array(r.view(0, L.HEADER).buffer);
    this.#cap = this.#h[L.I_CAPACITY]!;
    this.#slot = this.#h[L.I_SLOT]!;
    const ab = r.view(L.HEADER, this.#cap).buffer;
    this.#data = new Uint8Array(ab);
    this.#d32 = new Int32Array(ab);
    this.#livenessMs = livenessMs;
    this.#pos = Atomics.load(this.#h, role === 'producer' ? L.I_TAIL : L.I_HEAD);
  }

  /**
   * Allocates the shared memory and takes one end; give share() to the other side.
   * @example const rx = Channel.create('consumer', { capacity: 1 << 16, slotSize: 64 });
   */
  static create(role: ChannelRole, options: ChannelOptions): Channel {
    v.assertOneOf('role', role, ROLES);
    const o = v.assertOptions('options', options);
    v.assertPositiveInteger('capacity', o.capacity, MAX_CAPACITY);
    const slot = o.slotSize ?? 0;
    if (o.slotSize !== undefined) v.assertPositiveInteger('slotSize', slot, o.capacity);
    const unit = slot === 0 ? 8 : slot;
    if (o.capacity % unit !== 0 || o.capacity % 8 !== 0) {
      throw new RangeError(`Expected a multiple of ${slot === 0 ? 8 : `8 and of slotSize (${slot})`} for capacity but received ${v.describeValue(o.capacity)}`);
    }
    const livenessMs = readLiveness(o.livenessMs);
    const r = Region.allocate(L.HEADER + o.capacity, { hugepages: o.hugepages ?? 'off', name: 'dmamem-channel' });
    try {
      const h = new Int32Array(r.view(0, L.HEADER).buffer);
      h[L.I_VERSION] = L.VERSION;
      h[L.I_CAPACITY] = o.capacity;
      h[L.I_SLOT] = slot;
      Atomics.store(h, L.I_MAGIC, L.MAGIC);
      claim(h, role);
      return new Channel(CHANNEL_KEY, r, role, livenessMs);
    } catch (err) {
      r.close();
      throw err;
    }
  }

  /**
   * Takes the free end of a channel another thread or process created (one attach per end).
   * `fd`: the descriptor's number here when it came as stdio (see Region.fromShare).
   * @example const tx = Channel.attach(JSON.parse(process.env.CHANNEL!), { fd: 3 });
   */
  static attach(share: ChannelShare, options?: { fd?: number; livenessMs?: number }): Channel {
    if (share === null || typeof share !== 'object') throw new TypeError(`Expected a channel share (from channel.share()) for share but received ${v.describeValue(share)}`);
    const o = v.assertOptions('options', options);
    const livenessMs = readLiveness(o.livenessMs);
    const r = Region.fromShare(share.region, o.fd === undefined ? undefined : { fd: o.fd });
    try {
      if (!r.writable) throw new TypeError('Expected a read-write share for share.region but received a read-only one: both ends write the header');
      if (r.length < L.HEADER + 8) throw new RangeError(`Expected a channel's memory for share.region but received ${r.length} bytes`);
      const h = new Int32Array(r.view(0, L.HEADER).buffer);
      const cap = h[L.I_CAPACITY]!;
      if (Atomics.load(h, L.I_MAGIC) !== L.MAGIC || h[L.I_VERSION] !== L.VERSION || cap !== r.length - L.HEADER) {
        throw new TypeError('Expected a channel share for share but the memory holds no channel of this version');
      }
      const free = ROLES.find((role) => Atomics.load(h, base(role) + L.P_STATE) === L.STATE_FREE);
      if (free === undefined) throw new DmamemError('ERR_DMAMEM_BUSY', 'both ends of this channel are taken');
      claim(h, free);
      return new Channel(CHANNEL_KEY, r, free, livenessMs);
    } catch (err) {
      r.close();
      throw err;
    }
  }

  /** The handle the other end attaches with. @example worker.postMessage(ch.share()) */
  share(): ChannelShare {
    this.#live();
    return { region: this.#r.share() };
  }

  /** This end's role. @example ch.role === 'producer' */
  get role(): ChannelRole {
    return this.#role;
  }
  /** Ring bytes. @example ch.capacity */
  get capacity(): number {
    return this.#cap;
  }
  /** Slot size, or 0 for variable-length records. @example ch.slotSize */
  get slotSize(): number {
    return this.#slot;
  }
  /** The largest message: slotSize, or half the ring less a record header. @example ch.maxMessage */
  get maxMessage(): number {
    return this.#slot !== 0 ? this.#slot : this.#cap / 2 - L.RECORD_HEADER;
  }
  /** True once close() ran. @example if (!ch.closed) ch.close() */
  get closed(): boolean {
    return this.#closed;
  }

  // ---- producer ----

  /**
   * Copies `data` into the ring if there is room; false when full (backpressure). Wakes the
   * consumer only if it sleeps. Throws ERR_DMAMEM_PEER_CLOSED once the consumer closed.
   * @example if (!tx.trySend(msg)) await tx.send(msg);
   */
  trySend(data: Uint8Array): boolean {
    this.#checkMessage(data);
    return this.#trySend(data);
  }

  /** Sends, waiting (without blocking the loop) while the ring is full. @example await tx.send(buf) */
  async send(data: Uint8Array, timeoutMs?: number): Promise<void> {
    this.#checkMessage(data);
    await this.#waitForRoom(() => this.#trySend(data), readDeadline(timeoutMs));
  }

  /** send() that blocks the thread (for workers). @example tx.sendSync(buf) */
  sendSync(data: Uint8Array, timeoutMs?: number): void {
    this.#checkMessage(data);
    const deadline = readDeadline(timeoutMs);
    while (!this.#trySend(data)) {
      this.#peerCheck(false);
      const seen = Atomics.load(this.#h, L.I_HEAD);
      if (this.#prepareSleep(L.I_PRODUCER_SLEEPS, L.I_HEAD, seen)) {
        this.#afterSleep(this.#r.wait(L.HEAD_OFFSET, seen, this.#slice(deadline)), deadline);
      }
    }
  }

  /**
   * Zero-copy send: room for one message of `length` bytes (slotSize with slots, the default), as
   * a writable view into the ring, or null when full. Fill it, then commit(). Nothing is visible to
   * the consumer before commit(); one reservation at a time.
   * @example const v = tx.reserve(n); if (v) { fs.readSync(fd, v); tx.commit(); }
   */
  reserve(length?: number): Buffer | null {
    const len = this.#checkReserve(length);
    return this.#reserve(len);
  }

  /** reserve() that waits (without blocking the loop) while the ring is full. @example const v = await tx.reserveAsync(4096) */
  async reserveAsync(length?: number, timeoutMs?: number): Promise<Buffer> {
    const len = this.#checkReserve(length);
    let view: Buffer | null = null;
    await this.#waitForRoom(() => (view = this.#reserve(len)) !== null, readDeadline(timeoutMs));
    return view!;
  }

  /**
   * Publishes the reserved message, `length` bytes of it (default: all it reserved; records may be
   * shorter, slots not), and wakes the consumer if it sleeps.
   * @example tx.commit(bytesRead)
   */
  commit(length?: number): void {
    this.#assertRole('producer');
    this.#live();
    if (this.#resStart < 0) throw new TypeError('Expected a reservation (reserve()) before commit() but there is none');
    let len = this.#resLen;
    if (length !== undefined) {
      if (this.#slot !== 0) {
        if (length !== this.#slot) throw new RangeError(`Expected exactly ${this.#slot} bytes (the slot size) for length but received ${v.describeValue(length)}`);
      } else {
        v.assertInteger('length', length, 0, this.#resLen);
        len = length;
        this.#d32[(this.#resP - L.RECORD_HEADER) >> 2] = len; // the record says how long it really is
      }
    }
    this.#publish(len);
  }

  // ---- consumer ----

  /**
   * The next message as a view into the ring (valid until the next receive on this end), or null
   * when the ring is empty (see `ended` for a producer that closed).
   * @example for (let m; (m = rx.tryReceive()) !== null; ) handle(m);
   */
  tryReceive(): Buffer | null {
    this.#assertRole('consumer');
    this.#live();
    return this.#tryReceive();
  }

  /** True when the producer closed and every message was received. @example if (rx.ended) rx.close() */
  get ended(): boolean {
    this.#live();
    return Atomics.load(this.#h, base('producer') + L.P_STATE) === L.STATE_CLOSED && Atomics.load(this.#h, L.I_TAIL) === (this.#next >= 0 ? this.#next : this.#pos);
  }

  /** The next message, waiting without blocking the loop; null once the producer closed and all was read. */
  async receive(timeoutMs?: number): Promise<Buffer | null> {
    this.#assertRole('consumer');
    this.#live();
    const deadline = readDeadline(timeoutMs);
    for (;;) {
      const m = this.#tryReceive();
      if (m !== null) return m;
      if (this.#peerCheck(true)) return null;
      const seen = Atomics.load(this.#h, L.I_TAIL);
      if (this.#prepareSleep(L.I_CONSUMER_SLEEPS, L.I_TAIL, seen)) {
        const res = await this.#r.waitAsync(L.TAIL_OFFSET, seen, this.#slice(deadline));
        this.#afterSleep(res, deadline);
      }
    }
  }

  /** receive() that blocks the thread (for workers). @example const m = rx.receiveSync(); */
  receiveSync(timeoutMs?: number): Buffer | null {
    this.#assertRole('consumer');
    this.#live();
    const deadline = readDeadline(timeoutMs);
    for (;;) {
      const m = this.#tryReceive();
      if (m !== null) return m;
      if (this.#peerCheck(true)) return null;
      const seen = Atomics.load(this.#h, L.I_TAIL);
      if (this.#prepareSleep(L.I_CONSUMER_SLEEPS, L.I_TAIL, seen)) {
        this.#afterSleep(this.#r.wait(L.TAIL_OFFSET, seen, this.#slice(deadline)), deadline);
      }
    }
  }

  /**
   * Marks this end closed, wakes the peer (a consumer then drains what is left and ends; a producer
   * gets ERR_DMAMEM_PEER_CLOSED), rejects this end's pending waits, and unmaps. Safe to call twice.
   * @example ch.close()
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    Atomics.store(this.#h, base(this.#role) + L.P_STATE, L.STATE_CLOSED);
    this.#r.notify(L.TAIL_OFFSET);
    this.#r.notify(L.HEAD_OFFSET);
    this.#r.close();
  }

  /** close(), for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  // ---- internals ----

  #checkMessage(data: Uint8Array): void {
    this.#assertRole('producer');
    v.assertUint8Array('data', data);
    if (this.#slot !== 0 ? data.length !== this.#slot : data.length > this.maxMessage) {
      throw new RangeError(`Expected ${this.#slot !== 0 ? `exactly ${this.#slot} bytes (the slot size)` : `at most ${this.maxMessage} bytes`} for data but received ${data.length} bytes`);
    }
    this.#live();
  }

  #trySend(data: Uint8Array): boolean {
    if (this.#resStart >= 0) throw new TypeError('Expected commit() of the reserved message before another send');
    const p = this.#place(data.length);
    if (p < 0) return false;
    this.#data.set(data, p);
    this.#publish(data.length);
    return true;
  }

  #checkReserve(length: unknown): number {
    this.#assertRole('producer');
    let len: number;
    if (this.#slot !== 0) {
      if (length !== undefined && length !== this.#slot) throw new RangeError(`Expected exactly ${this.#slot} bytes (the slot size) for length but received ${v.describeValue(length)}`);
      len = this.#slot;
    } else {
      v.assertInteger('length', length, 0, this.maxMessage);
      len = length as number;
    }
    this.#live();
    if (this.#resStart >= 0) throw new TypeError('Expected commit() of the reserved message before another reserve()');
    return len;
  }

  #reserve(len: number): Buffer | null {
    const p = this.#place(len);
    if (p < 0) return null;
    this.#resP = p;
    this.#resLen = len;
    return Buffer.from(this.#data.buffer, p, len);
  }

  /**
   * Finds room at the tail for a message of `len` bytes: the payload's byte offset in the ring, or
   * -1 when full. Writes the record's length (and a wrap marker) past the tail, where the consumer
   * does not look yet; #resStart is where the message starts. Publishes nothing.
   */
  #place(len: number): number {
    const h = this.#h;
    if (Atomics.load(h, L.I_CONSUMER + L.P_STATE) === L.STATE_CLOSED) this.#full();
    const cap = this.#cap;
    let tail = this.#pos;
    const head = Atomics.load(h, L.I_HEAD);
    const free = cap - ((tail - head + 2 * cap) % (2 * cap));
    let p = tail >= cap ? tail - cap : tail;
    if (this.#slot !== 0) {
      if (free < this.#slot) {
        this.#full();
        return -1;
      }
      this.#resStart = tail;
      return p;
    }
    const need = L.RECORD_HEADER + L.pad8(len);
    const skip = p + need > cap ? cap - p : 0;
    if (free < skip + need) {
      this.#full();
      return -1;
    }
    if (skip !== 0) {
      this.#d32[p >> 2] = L.WRAP;
      tail += skip;
      if (tail >= 2 * cap) tail -= 2 * cap;
      p = 0;
    }
    this.#d32[p >> 2] = len;
    this.#resStart = tail;
    return p + L.RECORD_HEADER;
  }

  /** Publishes the placed message of `len` bytes: tail moves past it; wakes the consumer only if it sleeps. */
  #publish(len: number): void {
    const h = this.#h;
    let tail = this.#resStart + (this.#slot !== 0 ? this.#slot : L.RECORD_HEADER + L.pad8(len));
    if (tail >= 2 * this.#cap) tail -= 2 * this.#cap;
    this.#resStart = -1;
    this.#pos = tail;
    Atomics.store(h, L.I_TAIL, tail);
    if (Atomics.load(h, L.I_CONSUMER_SLEEPS) !== 0) {
      Atomics.store(h, L.I_CONSUMER_SLEEPS, 0);
      this.#r.notify(L.TAIL_OFFSET);
    }
  }

  /** Retries `attempt` until it finds room, sleeping on head (without blocking the loop) in between. */
  async #waitForRoom(attempt: () => boolean, deadline: number): Promise<void> {
    while (!attempt()) {
      this.#peerCheck(false);
      const seen = Atomics.load(this.#h, L.I_HEAD);
      if (this.#prepareSleep(L.I_PRODUCER_SLEEPS, L.I_HEAD, seen)) {
        const res = await this.#r.waitAsync(L.HEAD_OFFSET, seen, this.#slice(deadline));
        this.#afterSleep(res, deadline);
      }
    }
  }

  #full(): false {
    if (Atomics.load(this.#h, base('consumer') + L.P_STATE) === L.STATE_CLOSED) {
      throw new DmamemError('ERR_DMAMEM_PEER_CLOSED', 'the consumer closed the channel');
    }
    return false;
  }

  #tryReceive(): Buffer | null {
    const h = this.#h;
    const cap = this.#cap;
    if (this.#next >= 0) {
      // Release the message handed out last: the producer may now overwrite it.
      this.#pos = this.#next;
      this.#next = -1;
      Atomics.store(h, L.I_HEAD, this.#pos);
      // A producer asleep on a full ring is woken once half of it is free, not for every message
      // released: it then refills in a burst instead of both sides waking each other per message.
      if (Atomics.load(h, L.I_PRODUCER_SLEEPS) !== 0 && (Atomics.load(h, L.I_TAIL) - this.#pos + 2 * cap) % (2 * cap) <= cap / 2) {
        Atomics.store(h, L.I_PRODUCER_SLEEPS, 0);
        this.#r.notify(L.HEAD_OFFSET);
      }
    }
    let head = this.#pos;
    if (Atomics.load(h, L.I_TAIL) === head) return null;
    let p = head >= cap ? head - cap : head;
    let len: number;
    if (this.#slot !== 0) {
      len = this.#slot;
      head += len;
    } else {
      len = this.#d32[p >> 2]!;
      if (len === L.WRAP) {
        head += cap - p;
        p = 0;
        len = this.#d32[0]!;
      }
      head += L.RECORD_HEADER + L.pad8(len);
      p += L.RECORD_HEADER;
    }
    if (head >= 2 * cap) head -= 2 * cap;
    this.#next = head;
    return Buffer.from(this.#data.buffer, p, len);
  }

  /**
   * Spins briefly on the word (a peer in full flow moves it within microseconds, and a futex
   * sleep costs tens of them), then raises this end's sleep flag and re-checks: false when the
   * word moved meanwhile (no sleep). The budget doubles after a spin that saw the word move and
   * halves after one that did not: when the peer is not running at the same time (fewer free
   * CPUs than threads), spinning only takes the CPU it needs, so the spin shrinks to almost none.
   */
  #prepareSleep(flag: number, word: number, seen: number): boolean {
    const n = this.#spin;
    for (let i = 0; i < n; i++) {
      if (Atomics.load(this.#h, word) !== seen) {
        this.#spin = n >= SPIN_MAX / 2 ? SPIN_MAX : n * 2;
        return false;
      }
    }
    this.#spin = n <= SPIN_MIN * 2 ? SPIN_MIN : n >> 1;
    Atomics.store(this.#h, flag, 1);
    if (Atomics.load(this.#h, word) !== seen) {
      Atomics.store(this.#h, flag, 0);
      return false;
    }
    return true;
  }

  #slice(deadline: number): number {
    return deadline === Infinity ? this.#livenessMs : Math.max(0, Math.min(this.#livenessMs, deadline - Date.now()));
  }

  /** After a wait: on a timeout, checks the deadline and whether the peer still lives. */
  #afterSleep(res: string, deadline: number): void {
    if (res !== 'timed-out') return;
    if (Date.now() >= deadline) throw errnoError('ETIMEDOUT', 'futex', `the channel's ${this.#role === 'producer' ? 'consumer made no room' : 'producer sent nothing'} in time`);
    this.#peerCheck(this.#role === 'consumer', true);
  }

  /**
   * Throws when the peer closed (producer side) or died; true for a consumer whose producer closed
   * (end of messages). Liveness (a /proc read) only when `liveness` is set: after a timed-out wait.
   */
  #peerCheck(endIsOk: boolean, liveness = false): boolean {
    this.#live();
    const other: ChannelRole = this.#role === 'producer' ? 'consumer' : 'producer';
    const b = base(other);
    const state = Atomics.load(this.#h, b + L.P_STATE);
    if (state === L.STATE_CLOSED) {
      if (endIsOk) return Atomics.load(this.#h, L.I_TAIL) === this.#pos;
      throw new DmamemError('ERR_DMAMEM_PEER_CLOSED', `the ${other} closed the channel`);
    }
    if (liveness && state === L.STATE_ATTACHED) {
      const id: PeerId = { pid: this.#h[b + L.P_PID]!, tid: this.#h[b + L.P_TID]!, start: this.#h[b + L.P_START]! };
      if (!alive(id)) throw new DmamemError('ERR_DMAMEM_PEER_DEAD', `the ${other} (pid ${id.pid}, thread ${id.tid}) died without closing the channel`);
    }
    return false;
  }

  #assertRole(role: ChannelRole): void {
    if (this.#role !== role) throw new TypeError(`Expected the ${role} end of the channel for this call but this is the ${this.#role}`);
  }

  #live(): void {
    if (this.#closed) throw new DmamemError('ERR_DMAMEM_CLOSED', 'the channel was closed');
  }
}

const base = (role: ChannelRole): number => (role === 'producer' ? L.I_PRODUCER : L.I_CONSUMER);

/** Takes `role` in the header: state ATTACHED (atomically, so two attaches cannot both win), identity. */
function claim(h: Int32Array, role: ChannelRole): void {
  const b = base(role);
  if (Atomics.compareExchange(h, b + L.P_STATE, L.STATE_FREE, L.STATE_CLAIMING) !== L.STATE_FREE) {
    throw new DmamemError('ERR_DMAMEM_BUSY', `the ${role} end of this channel is taken`);
  }
  const me = self();
  h[b + L.P_PID] = me.pid;
  h[b + L.P_TID] = me.tid;
  h[b + L.P_START] = me.start;
  Atomics.store(h, b + L.P_STATE, L.STATE_ATTACHED); // the identity is complete before anyone checks it
}

function readLiveness(ms: unknown): number {
  if (ms === undefined) return 200;
  v.assertPositiveInteger('livenessMs', ms, 60000);
  return ms;
}

function readDeadline(timeoutMs: unknown): number {
  if (timeoutMs === undefined || timeoutMs === Infinity) return Infinity;
  if (typeof timeoutMs !== 'number') throw new TypeError(`Expected a non-negative number of milliseconds for timeoutMs but received ${v.describeValue(timeoutMs)}`);
  if (!(timeoutMs >= 0)) throw new RangeError(`Expected a non-negative number of milliseconds for timeoutMs but received ${v.describeValue(timeoutMs)}`);
  return Date.now() + timeoutMs;
}
