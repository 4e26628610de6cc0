// JS access to mapped bytes: one lazily created external ArrayBuffer per mapped range, handed out as
// Buffer slices, and detached (every slice then has length 0) before the range is unmapped,
// moved, shrunk or loses write permission. One ArrayBuffer per mapping, because wrapping the same
// pages twice and re-using addresses is what tripped V8's backing-store registry in the past.

import { native } from '../native';
import { assertInteger } from './validate';

/**
 * Which object owns the memory under an ArrayBuffer. A WeakMap entry keeps the owner (and so its
 * mapping) alive for as long as any ArrayBuffer handed out over it is reachable, so the GC backstop
 * of the owner cannot unmap memory that JS can still see.
 */
const owners = new WeakMap<ArrayBuffer, object>();

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
 * A window onto [address, address+length) of mapped memory. The external ArrayBuffer is made on
 * first use; `slice()` hands out Buffers over it; `detach()` revokes all of them at once.
 * @example
 * const w = new ViewWindow(addr, 4096);
 * const b = w.slice(0, 16); b[0] = 1;
 * w.detach(); b.length === 0;
 */
export class ViewWindow {
  #buffer: ArrayBuffer | null = null;
  #detached = false;

  /**
   * @param address first byte (mapped readable and writable for as long as the window is live)
   * @param length bytes in the window (0 allowed: slices are then empty)
   * @param owner object kept alive while any ArrayBuffer of this window is reachable
   */
  constructor(
    readonly address: number,
    readonly length: number,
    private readonly owner?: object,
  ) {
    assertInteger('address', address);
    assertInteger('length', length);
  }

  /** True once detach() ran; the window then gives no more slices. */
  get detached(): boolean {
    return this.#detached;
  }

  /**
   * The window's ArrayBuffer (created on first call).
   * @example new Uint32Array(window.arrayBuffer())
   */
  arrayBuffer(): ArrayBuffer {
    if (this.#detached) throw new RangeError(`the view window at 0x${this.address.toString(16)} was detached`);
    if (this.#buffer === null) {
      // A zero-length external buffer is pointless and some V8 builds reject it: use a plain one.
      this.#buffer = this.length === 0 ? new ArrayBuffer(0) : native.externalArrayBuffer(this.address, this.length);
      if (this.owner !== undefined) owners.set(this.#buffer, this.owner);
    }
    return this.#buffer;
  }

  /**
   * A Buffer over [offset, offset+length) of the window; no copy.
   * @example window.slice(4096, 4096).fill(0)
   */
  slice(offset: number, length: number): Buffer {
    if (this.#detached) throw new RangeError(`the view window at 0x${this.address.toString(16)} was detached`);
    // Checked inline: slices are cut on hot paths (one per DMA buffer).
    if (!(Number.isSafeInteger(offset) && offset >= 0 && offset <= this.length)) assertInteger('offset', offset, 0, this.length);
    if (!(Number.isSafeInteger(length) && length >= 0 && length <= this.length - offset)) assertInteger('length', length, 0, this.length - offset);
    return Buffer.from(this.arrayBuffer(), offset, length);
  }

  /**
   * Detaches the ArrayBuffer (if one was made): it and every view over it report length 0 and
   * read as undefined from now on. Idempotent. Call before the range stops being writable memory.
   */
  detach(): void {
    if (this.#detached) return;
    this.#detached = true;
    const buffer = this.#buffer;
    this.#buffer = null;
    if (buffer !== null && buffer.byteLength > 0) native.detach(buffer);
  }
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
