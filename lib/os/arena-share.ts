// The other side of a shared Arena: a worker or another process maps the arena's memfd from one
// handle (a Region ShareHandle plus the chunk size) and reads and writes allocations by
// (offset, length). Chunks are mapped on first use, so a peer costs only what it touches.

import { C, native } from '../native';
import { HUGE_2M } from './backing';
import { arenaBackstop, mapChunk, releaseArenaMemory, type ArenaMemory } from './arena-memory';
import { DmamemError } from './errors';
import { checkShareHandle, type ShareHandle } from './region-share';
import { ViewSet } from './views';
import * as v from './validate';

/** Arena.share(): a Region ShareHandle over the whole memfd (length = capacity) plus the chunk size. */
export interface ArenaShareHandle extends ShareHandle {
  chunkSize: number;
}

/** The memfd behind a handle, as an fd of this process (dup'ed or opened: the caller owns it). */
function acquireFd(h: ShareHandle, fd: number | undefined): number {
  if (fd !== undefined) return native.dup(fd);
  if (h.pid === process.pid) return native.dup(h.fd);
  return native.open(`/proc/${h.pid}/fd/${h.fd}`, C.O_RDWR);
}

/** The constructor's key: only Arena.attach makes peers. */
const PEER_KEY = Symbol('ArenaPeer');

/**
 * A peer's mapping of a shared arena. Views are Buffers over exactly the bytes asked for, detached
 * by close(). It never allocates or frees: the owner does, and tells the peer (offset, length).
 * @example const peer = Arena.attach(handle); peer.view(offset, length).toString()
 */
export class ArenaPeer {
  readonly #m: ArenaMemory;
  readonly #mapped: Uint8Array;
  readonly #views = new ViewSet(this);

  private constructor(key: symbol, m: ArenaMemory) {
    if (key !== PEER_KEY) throw new TypeError('ArenaPeer is not constructible: use Arena.attach()');
    this.#m = m;
    this.#mapped = new Uint8Array(m.capacity / m.chunkSize);
    arenaBackstop.register(this, m, this);
  }

  /** See Arena.attach. */
  static attach(handle: ArenaShareHandle, options?: { fd?: number }): ArenaPeer {
    const h = checkShareHandle(handle);
    if (h.readOnly) throw new TypeError('Expected a writable arena handle for handle but received readOnly: true');
    if (h.offset !== 0) throw new RangeError(`Expected 0 for handle.offset but received ${h.offset} of type number`);
    const chunkSize = (handle as { chunkSize?: unknown }).chunkSize;
    v.assertPageAligned('handle.chunkSize', chunkSize);
    if (chunkSize === 0 || h.length % chunkSize !== 0) throw new RangeError(`Expected a divisor of handle.length (${h.length}) for handle.chunkSize but received ${chunkSize} of type number`);
    const huge = h.backing === 'hugetlb-2M';
    if (huge) v.assertPageAligned('handle.chunkSize', chunkSize, HUGE_2M);
    const o = v.assertOptions('options', options);
    if (o.fd !== undefined) v.assertInteger('fd', o.fd);
    const fd = acquireFd(h, o.fd);
    let base = -1;
    try {
      // Pages past the end of the file would be SIGBUS: the file must cover the whole arena (it is
      // sealed against shrinking by share()).
      const size = native.fstatSize(fd);
      if (size < h.length) throw new RangeError(`Expected a memfd of at least ${h.length} bytes (handle.length) but the file has ${size}`);
      base = native.reserve(h.length, huge ? HUGE_2M : chunkSize);
      const m: ArenaMemory = { fd, base, capacity: h.length, chunkSize, backing: huge ? 'hugetlb-2M' : '4k', reason: 'attached to a shared arena', mapped: 0, closed: false };
      return new ArenaPeer(PEER_KEY, m);
    } catch (err) {
      if (base !== -1) native.munmap(base, h.length);
      native.close(fd);
      throw err;
    }
  }

  /** The arena's capacity (the range of valid offsets). */
  get capacity(): number {
    return this.#m.capacity;
  }
  get closed(): boolean {
    return this.#m.closed;
  }

  /**
   * A Buffer over [offset, offset+length) of the shared arena (mapping the chunks it spans first).
   * @example const b = peer.view(msg.offset, msg.length);
   */
  view(offset: number, length: number): Buffer {
    const m = this.#m;
    v.assertInteger('offset', offset, 0, m.capacity);
    v.assertInteger('length', length, 0, m.capacity - offset);
    if (m.closed) throw new DmamemError('ERR_DMAMEM_CLOSED', 'the arena peer was closed');
    if (length > 0) {
      const last = Math.floor((offset + length - 1) / m.chunkSize);
      for (let i = Math.floor(offset / m.chunkSize); i <= last; i++) {
        if (this.#mapped[i] === 0) {
          mapChunk(m, i, false);
          this.#mapped[i] = 1;
        }
      }
    }
    return this.#views.view(m.base + offset, length);
  }

  /** Detaches every view, unmaps and closes the fd. Safe to call twice. */
  close(): void {
    if (this.#m.closed) return;
    arenaBackstop.unregister(this);
    this.#views.revoke();
    releaseArenaMemory(this.#m);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
