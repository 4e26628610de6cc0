// JS access to mapped bytes: every view is an external ArrayBuffer over exactly the bytes asked for,
// tracked by the object that owns the memory, so that one revoke() detaches all of them (every view
// then has length 0) before the memory is unmapped, moved, shrunk, loses write permission or is freed.

import { native } from '../native';
import { assertInteger } from './validate';

/** A base class whose constructor returns its argument, so a subclass can add private fields to any object. */
const Stamp = class {
  constructor(target: object) {
    return target;
  }
} as new (target: object) => object;

/**
 * Which object owns the memory under an ArrayBuffer: a private field stamped on the ArrayBuffer
 * keeps the owner (and so its mapping) alive for as long as the ArrayBuffer is reachable, so the
 * GC backstop of the owner cannot unmap memory that JS can still see. Invisible to JS and cannot be
 * deleted; a WeakMap did the same at 1-3 us per view (its ephemeron table grows until a full GC).
 */
class OwnedBy extends Stamp {
  /** The strong edge from the ArrayBuffer to its owner (the field is what matters, not reads of it). */
  readonly #owner: object;
  constructor(buffer: ArrayBuffer, owner: object) {
    super(buffer);
    this.#owner = owner;
  }

  /** The owner (for debugging: nothing needs to read it). */
  get owner(): object {
    return this.#owner;
  }
}

let trackedBytes = 0;

/**
 * Tells V8 that `deltaBytes` of memory outside its heap became (positive) or stopped being
 * (negative) reachable from JS, so that GC pressure reflects mapped memory.
 * @example trackExternalMemory(+region.length); ... trackExternalMemory(-region.length);
 */
export function trackExternalMemory(deltaBytes: number): number {
  trackedBytes += deltaBytes;
  return native.adjustExternalMemory(deltaBytes);
}

/** Bytes this module has reported with trackExternalMemory and not yet taken back (this thread). */
export function trackedExternalMemory(): number {
  return trackedBytes;
}

/**
 * One handed-out ArrayBuffer and its range. The first few of a set are held strongly (a WeakRef
 * costs about as much as the ArrayBuffer itself, and most sets are short-lived allocations with one
 * or two views); the rest weakly (a view JS dropped needs no detach), so they cannot pile up.
 */
interface Entry {
  readonly strong: ArrayBuffer | null;
  readonly ref: WeakRef<ArrayBuffer> | null;
  readonly lo: number;
  readonly hi: number;
}

/** How many entries of a set hold their ArrayBuffer strongly. */
const STRONG = 8;

function deref(e: Entry): ArrayBuffer | undefined {
  return e.strong ?? e.ref?.deref();
}

/**
 * The views handed out over one owner's memory. Each is an external ArrayBuffer over exactly
 * [address, address+length), so a Buffer's `.buffer` never reaches a byte it was not given.
 * revoke() detaches the ones over a range (or all). Past the first few, entries are weak: a program
 * that makes a view per message and drops it does not grow the set (collected entries are pruned
 * as it grows).
 * @example
 * const set = new ViewSet(owner);
 * const b = set.view(addr, 16); b[0] = 1;
 * set.revoke(); b.length === 0;
 */
export class ViewSet {
  #entries: Entry[] = [];
  #pruneAt = 32;
  /** The last range wrapped: asking for the same range again reuses its ArrayBuffer. */
  #last: Entry | null = null;
  readonly #owner: object | undefined;

  /** @param owner object kept alive while any ArrayBuffer of this set is reachable */
  constructor(owner?: object) {
    this.#owner = owner;
  }

  /** Handed-out ArrayBuffers still tracked (some may have been collected since the last prune). */
  get size(): number {
    return this.#entries.length;
  }

  /**
   * An ArrayBuffer over exactly [address, address+length) (a plain empty one for length 0).
   * The caller guarantees the range is mapped readable and writable until it calls revoke().
   */
  arrayBuffer(address: number, length: number): ArrayBuffer {
    if (length === 0) return new ArrayBuffer(0);
    const last = this.#last;
    if (last !== null && last.lo === address && last.hi === address + length) {
      const ab = deref(last);
      if (ab !== undefined && ab.byteLength === length) return ab;
    }
    const ab = native.viewArrayBuffer(address, length);
    if (this.#owner !== undefined) new OwnedBy(ab, this.#owner);
    this.#last = this.#track(ab, address, length);
    return ab;
  }

  /**
   * Tracks an ArrayBuffer another set made over [address, address+length) here too, so that
   * revoking either set detaches it (a view over memory two owners free separately).
   */
  adopt(buffer: ArrayBuffer, address: number, length: number): void {
    if (length !== 0) this.#track(buffer, address, length);
  }

  #track(ab: ArrayBuffer, address: number, length: number): Entry {
    if (this.#entries.length >= this.#pruneAt) this.#prune();
    const strong = this.#entries.length < STRONG;
    const entry: Entry = { strong: strong ? ab : null, ref: strong ? null : new WeakRef(ab), lo: address, hi: address + length };
    this.#entries.push(entry);
    return entry;
  }

  /** A Buffer over exactly [address, address+length), tracked. See arrayBuffer(). */
  view(address: number, length: number): Buffer {
    return Buffer.from(this.arrayBuffer(address, length));
  }

  /**
   * Detaches every tracked ArrayBuffer overlapping [lo, hi) (default: all) and forgets it: those
   * views read as length 0 from now on. Others stay. Cheap when nothing was handed out.
   */
  revoke(lo = -Infinity, hi = Infinity): void {
    const entries = this.#entries;
    if (entries.length === 0) return;
    const kept: Entry[] = [];
    for (const e of entries) {
      if (e.lo < hi && lo < e.hi) {
        const ab = deref(e);
        if (ab !== undefined && ab.byteLength > 0) native.detach(ab);
      } else {
        kept.push(e);
      }
    }
    this.#entries = kept;
    if (this.#last !== null && this.#last.lo < hi && lo < this.#last.hi) this.#last = null;
  }

  /** Drops entries whose ArrayBuffer was collected or detached; the next prune waits for twice as many. */
  #prune(): void {
    this.#entries = this.#entries.filter((e) => {
      const ab = deref(e);
      return ab !== undefined && ab.byteLength > 0;
    });
    this.#pruneAt = Math.max(32, 2 * this.#entries.length);
  }
}

/**
 * An untracked ArrayBuffer over [address, address+length), for internal fast paths (memset, read)
 * that never hand it out; the caller detaches it with detachInternal() before the range goes.
 */
export function internalArrayBuffer(address: number, length: number): ArrayBuffer {
  assertInteger('address', address);
  assertInteger('length', length);
  return length === 0 ? new ArrayBuffer(0) : native.externalArrayBuffer(address, length);
}

/** Detaches an ArrayBuffer from internalArrayBuffer() (idempotent). */
export function detachInternal(buffer: ArrayBuffer): void {
  if (buffer.byteLength > 0) native.detach(buffer);
}

/**
 * The real virtual address of a view's first byte (0 for a detached or empty one).
 * @example viewAddress(region.view(4096)) === region.address + 4096
 */
export function viewAddress(view: ArrayBufferView): number {
  if (!ArrayBuffer.isView(view)) throw new TypeError(`Expected an ArrayBuffer view for view but received ${typeof view}`);
  const base = native.addressOf(view.buffer);
  return base === 0 ? 0 : base + view.byteOffset;
}
