// Arena: real memory for many small and medium buffers. One memfd carved into power-of-two size
// classes in pre-populated chunks; each allocation is a Buffer over exactly its bytes, detached when
// freed, with a file offset that a worker or another process maps through one shared handle.

import { native } from '../native';
import { HUGE_2M, HUGEPAGE_POLICIES, type Backing, type HugepagePolicy } from './backing';
import { arenaBackstop, createArenaMemory, mapChunk, releaseArenaMemory, unmapChunk, type ArenaMemory } from './arena-memory';
import { ArenaPeer, type ArenaShareHandle } from './arena-share';
import { DmamemError, errnoError } from './errors';
import { sealAgainstShrinking } from './region-share';
import * as v from './validate';

/** Options of Arena.create. */
export interface ArenaOptions {
  /** The hard cap: bytes the arena may ever map (default 256 MiB; a multiple of chunkSize). ENOMEM beyond it. */
  capacity?: number;
  /** 'auto' (default): hugetlb chunks if the pool has room for the first one, else 4 KiB pages. */
  hugepages?: HugepagePolicy;
  /** Bytes mapped and pre-populated at a time, and the largest allocation (a power of two, default 2 MiB). */
  chunkSize?: number;
  /** The memfd's name (/proc/PID/maps shows memfd:NAME). Default 'dmamem:arena'. */
  name?: string;
}

/** One size class in stats(). */
export interface ArenaClassStats {
  /** Slot size in bytes (allocations of size/2+1 ..size land here). */
  size: number;
  chunks: number;
  live: number;
  /** Slots carved and free (not counting the untouched tail of a chunk). */
  free: number;
}

/** What stats() reports. */
export interface ArenaStats {
  backing: Backing;
  capacity: number;
  chunkSize: number;
  /** Chunks mapped now (each pre-populated), and their bytes. */
  chunks: number;
  mappedBytes: number;
  /** Mapped chunks holding no live allocation (trim() gives them back). */
  emptyChunks: number;
  live: number;
  /** Bytes asked for by the live allocations. */
  liveBytes: number;
  classes: ArenaClassStats[];
}

const MIN_SHIFT = 4; // the smallest slot: 16 bytes (Atomics-aligned)
const UNMAPPED = -1;
const EMPTY = -2; // mapped, no size class

/** Which arena each allocation came from: a buffer keeps its arena (and so its mapping) alive. */
const owners = new WeakMap<ArrayBuffer, Arena>();

const mib = (n: number): string => `${(n / 2 ** 20).toFixed(n % 2 ** 20 === 0 ? 0 : 2)} MiB`;

/** The constructor's key: only Arena.create makes arenas. */
const ARENA_KEY = Symbol('Arena');

/**
 * An arena of real memory for small and medium buffers.
 * @example
 * using arena = Arena.create({ capacity: 64 << 20 });
 * const b = arena.alloc(4096);        // zeroed Buffer over exactly 4096 real bytes
 * worker.postMessage({ share: arena.share() });  // once; then per buffer:
 * worker.postMessage({ offset: arena.offsetOf(b), length: b.length });
 * arena.free(b);                      // b.length === 0 from now on
 */
export class Arena {
  readonly #m: ArenaMemory;
  readonly #maxAlloc: number;
  /** Live allocations: their ArrayBuffer -> file offset of the slot. */
  readonly #live = new Map<ArrayBuffer, number>();
  /** Per size class: free slot offsets (a stack), and the chunk being carved (next..end). */
  readonly #free: number[][];
  readonly #bumpNext: number[];
  readonly #bumpEnd: number[];
  /** Per chunk: its size class, UNMAPPED or EMPTY; and its live allocations. */
  readonly #chunkClass: Int8Array;
  readonly #chunkLive: Int32Array;
  #liveBytes = 0;
  #nextChunk = 1; // chunks below are or were mapped; chunk 0 is mapped by create
  #shared = false;

  private constructor(key: symbol, m: ArenaMemory) {
    // Reachable as Arena itself: a forged ArenaMemory would let close() unmap and close anything.
    if (key !== ARENA_KEY) throw new TypeError('Arena is not constructible: use Arena.create()');
    this.#m = m;
    this.#maxAlloc = m.chunkSize;
    const classes = Math.log2(m.chunkSize) - MIN_SHIFT + 1;
    this.#free = Array.from({ length: classes }, () => []);
    this.#bumpNext = new Array<number>(classes).fill(0);
    this.#bumpEnd = new Array<number>(classes).fill(0);
    const chunks = m.capacity / m.chunkSize;
    this.#chunkClass = new Int8Array(chunks).fill(UNMAPPED);
    this.#chunkClass[0] = EMPTY;
    this.#chunkLive = new Int32Array(chunks);
    arenaBackstop.register(this, m, this);
  }

  /**
   * Creates an arena: a memfd of `capacity` bytes (sparse), its address range reserved, and one
   * chunk mapped and pre-populated. Throws ENOMEM (hugepages 'require' and the pool is short, or the
   * machine cannot back a chunk) before anything is left behind.
   * @example const arena = Arena.create({ hugepages: 'off', capacity: 16 << 20 });
   */
  static create(options?: ArenaOptions): Arena {
    const o = v.assertOptions('options', options);
    const policy = o.hugepages ?? 'auto';
    v.assertOneOf('hugepages', policy, HUGEPAGE_POLICIES);
    const chunkSize = o.chunkSize ?? HUGE_2M;
    v.assertPageAligned('chunkSize', chunkSize);
    if (chunkSize === 0 || (chunkSize & (chunkSize - 1)) !== 0 || chunkSize > 2 ** 30) {
      throw new RangeError(`Expected a power of two between ${native.pageSize} and ${2 ** 30} for chunkSize but received ${chunkSize} of type number`);
    }
    if (policy === 'require' && chunkSize % HUGE_2M !== 0) {
      throw new RangeError(`Expected a multiple of ${HUGE_2M} for chunkSize with hugepages 'require' but received ${chunkSize} of type number`);
    }
    const capacity = o.capacity ?? 256 * 2 ** 20;
    v.assertPositiveInteger('capacity', capacity);
    v.assertPageAligned('capacity', capacity, chunkSize);
    if (capacity / chunkSize > 2 ** 24) throw new RangeError(`Expected at most ${2 ** 24} chunks (capacity / chunkSize) but received ${capacity / chunkSize} of type number`);
    const name = o.name ?? 'dmamem:arena';
    v.assertString('name', name);
    if (name.length > 200) throw new RangeError(`Expected a name of at most 200 characters for name but received one of ${name.length}`);
    return new Arena(ARENA_KEY, createArenaMemory(name, capacity, chunkSize, chunkSize, policy));
  }

  /**
   * Maps an arena shared with share() (in a worker, or another process: see Region.fromShare for
   * `fd`). The peer reads and writes allocations by offset; only the owner allocates and frees.
   * @example const peer = Arena.attach(handle); const b = peer.view(msg.offset, msg.length);
   */
  static attach(handle: ArenaShareHandle, options?: { fd?: number }): ArenaPeer {
    return ArenaPeer.attach(handle, options);
  }

  /** The backing obtained: 'hugetlb-2M' or '4k'. */
  get backing(): Backing {
    return this.#m.backing;
  }
  /** Why this backing (what was tried). */
  get backingReason(): string {
    return this.#m.reason;
  }
  /** The hard cap in bytes. */
  get capacity(): number {
    return this.#m.capacity;
  }
  /** Bytes mapped at a time, and the largest allocation. */
  get chunkSize(): number {
    return this.#m.chunkSize;
  }
  /** True once close() ran. */
  get closed(): boolean {
    return this.#m.closed;
  }

  /**
   * A zeroed Buffer over exactly `size` bytes of real memory (no other byte reachable through it).
   * Sizes above chunkSize, or past the cap, are ENOMEM with the figures.
   * @example const b = arena.alloc(100); b.length === 100; b.buffer.byteLength === 100;
   */
  alloc(size: number): Buffer {
    return this.allocUnsafe(size).fill(0);
  }

  /**
   * alloc() without zeroing: the bytes are whatever the slot's last user left (of this process).
   * @example const b = arena.allocUnsafe(4096); socket.read(b);
   */
  allocUnsafe(size: number): Buffer {
    if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 1 || size > this.#maxAlloc) this.#badSize(size);
    const m = this.#m;
    if (m.closed) throw closedError();
    const c = size <= 16 ? 0 : 28 - Math.clz32(size - 1);
    const stack = this.#free[c]!;
    const off = stack.length > 0 ? stack.pop()! : this.#carve(c);
    const b = native.arenaBuffer(m.base + off, size);
    const ab = b.buffer as ArrayBuffer;
    this.#live.set(ab, off);
    owners.set(ab, this);
    this.#chunkLive[Math.floor(off / m.chunkSize)]!++;
    this.#liveBytes += size;
    return b;
  }

  #badSize(size: unknown): never {
    v.assertPositiveInteger('size', size);
    throw errnoError('ENOMEM', 'mmap', `an arena allocation of ${size} bytes (${mib(size)}) is larger than the arena's chunkSize ${this.#maxAlloc} (${mib(this.#maxAlloc)}); use Region.allocate for it, or create the arena with a larger chunkSize`);
  }

  /** The next slot of class `c` from the chunk being carved, taking a new chunk when it is used up. */
  #carve(c: number): number {
    if (this.#bumpNext[c]! >= this.#bumpEnd[c]!) {
      const chunk = this.#takeChunk(c);
      this.#bumpNext[c] = chunk * this.#m.chunkSize;
      this.#bumpEnd[c] = (chunk + 1) * this.#m.chunkSize;
    }
    const off = this.#bumpNext[c]!;
    this.#bumpNext[c] = off + (1 << (c + MIN_SHIFT));
    return off;
  }

  /** A mapped chunk for class `c`: an empty one, else a new one mapped (growth), else ENOMEM. */
  #takeChunk(c: number): number {
    let chunk = this.#chunkClass.indexOf(EMPTY);
    if (chunk === -1) {
      // Empty chunks of other classes serve before the arena grows.
      if (this.#reclaimEmpty(false) > 0) chunk = this.#chunkClass.indexOf(EMPTY);
    }
    if (chunk === -1) {
      chunk = this.#nextChunk < this.#chunkClass.length ? this.#nextChunk : this.#chunkClass.indexOf(UNMAPPED);
      if (chunk === -1) {
        const m = this.#m;
        throw errnoError('ENOMEM', 'mmap', `the arena is full: ${this.#chunkClass.length} chunks of ${mib(m.chunkSize)} (capacity ${m.capacity} bytes = ${mib(m.capacity)}) are mapped, ${this.#live.size} allocations of ${this.#liveBytes} bytes live; free some or create the arena with a larger capacity`);
      }
      mapChunk(this.#m, chunk);
      if (chunk === this.#nextChunk) this.#nextChunk++;
    }
    this.#chunkClass[chunk] = c;
    return chunk;
  }

  /**
   * Takes every chunk without live allocations out of its size class (its free slots forgotten);
   * with `unmap`, gives its pages back too. Returns how many chunks were taken.
   */
  #reclaimEmpty(unmap: boolean): number {
    const cls = this.#chunkClass;
    const size = this.#m.chunkSize;
    const taken = new Set<number>();
    for (let i = 0; i < cls.length; i++) {
      const c = cls[i]!;
      if (c === UNMAPPED || this.#chunkLive[i] !== 0) continue;
      if (c >= 0) {
        taken.add(c);
        // The chunk being carved: its untouched tail goes with it.
        if (this.#bumpEnd[c] === (i + 1) * size) this.#bumpNext[c] = this.#bumpEnd[c] = 0;
      }
      cls[i] = EMPTY;
    }
    let n = 0;
    for (let i = 0; i < cls.length; i++) if (cls[i] === EMPTY) n++;
    for (const c of taken) this.#free[c] = this.#free[c]!.filter((off) => cls[Math.floor(off / size)] === c);
    if (unmap) {
      // A shared hugetlb arena keeps its pages: a peer's later fault in a punched chunk could find
      // the pool empty (SIGBUS in the peer).
      if (this.#shared && this.#m.backing === 'hugetlb-2M') return 0;
      for (let i = 0; i < cls.length; i++) {
        if (cls[i] !== EMPTY) continue;
        unmapChunk(this.#m, i);
        cls[i] = UNMAPPED;
      }
    }
    return n;
  }

  /**
   * Gives back the pages of every chunk that holds no live allocation (hole punched in the memfd,
   * range unmapped); returns the bytes released. A shared hugetlb arena releases nothing (a peer
   * could otherwise fault on pages the pool no longer has).
   * @example arena.trim() // 4194304
   */
  trim(): number {
    this.#open();
    const before = this.#m.mapped;
    this.#reclaimEmpty(true);
    return before - this.#m.mapped;
  }

  /**
   * Frees an allocation (pass its Buffer or any view of it): every view over it is detached (length
   * 0) before the slot can be handed out again. A second free, or a buffer the arena did not
   * allocate, is a TypeError.
   * @example arena.free(b); b.length === 0
   */
  free(buffer: ArrayBufferView): void {
    if (!ArrayBuffer.isView(buffer)) throw new TypeError(`Expected a Buffer from arena.alloc() for buffer but received ${v.describeValue(buffer)}`);
    const ab = buffer.buffer as ArrayBuffer;
    const off = this.#live.get(ab);
    if (off === undefined) throw this.#notLive(ab);
    const size = ab.byteLength;
    this.#live.delete(ab);
    native.detach(ab);
    this.#free[size <= 16 ? 0 : 28 - Math.clz32(size - 1)]!.push(off);
    this.#chunkLive[Math.floor(off / this.#m.chunkSize)]!--;
    this.#liveBytes -= size;
  }

  #notLive(ab: ArrayBufferLike): TypeError {
    if (owners.get(ab as ArrayBuffer) === this) return new TypeError('Expected a live allocation of this arena for buffer but received one already freed (double free)');
    if (this.#m.closed) return new TypeError('Expected a live allocation of this arena for buffer but the arena is closed (every allocation was freed by close())');
    return new TypeError(`Expected a live allocation of this arena for buffer but received ${owners.has(ab as ArrayBuffer) ? "another arena's allocation" : 'a buffer this arena did not allocate'}`);
  }

  /**
   * The allocation's offset in the arena's memfd: with share() given once, a peer maps the bytes
   * from (offset, length) alone. TypeError for anything but a live allocation.
   * @example worker.postMessage({ offset: arena.offsetOf(b), length: b.length })
   */
  offsetOf(buffer: ArrayBufferView): number {
    if (!ArrayBuffer.isView(buffer)) throw new TypeError(`Expected a Buffer from arena.alloc() for buffer but received ${v.describeValue(buffer)}`);
    const off = this.#live.get(buffer.buffer as ArrayBuffer);
    if (off === undefined) throw this.#notLive(buffer.buffer);
    return off + buffer.byteOffset;
  }

  /** The figures: backing, cap, chunks mapped and empty, live allocations, per size class. */
  stats(): ArenaStats {
    const m = this.#m;
    const classes: ArenaClassStats[] = this.#free.map((stack, c) => {
      const size = 1 << (c + MIN_SHIFT);
      let chunks = 0;
      let live = 0;
      for (let i = 0; i < this.#chunkClass.length; i++) {
        if (this.#chunkClass[i] === c) {
          chunks++;
          live += this.#chunkLive[i]!;
        }
      }
      return { size, chunks, live, free: stack.length };
    });
    let chunks = 0;
    let empty = 0;
    for (let i = 0; i < this.#chunkClass.length; i++) {
      if (this.#chunkClass[i] === UNMAPPED) continue;
      chunks++;
      if (this.#chunkLive[i] === 0) empty++;
    }
    return { backing: m.backing, capacity: m.capacity, chunkSize: m.chunkSize, chunks, mappedBytes: m.mapped, emptyChunks: empty, live: this.#live.size, liveBytes: this.#liveBytes, classes };
  }

  /**
   * One plain, structured-clonable handle for the whole arena (a Region ShareHandle plus the chunk
   * size): share it once, then send (offset, length) per buffer. The memfd is sealed against
   * shrinking first. A peer sees the owner's bytes, not its frees: the protocol above decides when
   * a peer may still use a buffer.
   * @example worker.postMessage(arena.share());
   */
  share(): ArenaShareHandle {
    this.#open();
    sealAgainstShrinking(this.#m.fd);
    this.#shared = true;
    const m = this.#m;
    return { fd: m.fd, length: m.capacity, offset: 0, backing: m.backing, readOnly: false, pid: process.pid, chunkSize: m.chunkSize };
  }

  #open(): void {
    if (this.#m.closed) throw closedError();
  }

  /**
   * Frees every live allocation (detaching their views), unmaps the arena and closes the memfd.
   * Safe to call twice.
   * @example arena.close(); arena.closed === true
   */
  close(): void {
    if (this.#m.closed) return;
    arenaBackstop.unregister(this);
    for (const ab of this.#live.keys()) native.detach(ab);
    this.#live.clear();
    this.#liveBytes = 0;
    releaseArenaMemory(this.#m);
  }

  /** close(), for `using arena = Arena.create()`. */
  [Symbol.dispose](): void {
    this.close();
  }
}

function closedError(): DmamemError {
  return new DmamemError('ERR_DMAMEM_CLOSED', 'the arena was closed');
}
