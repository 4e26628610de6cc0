// The owner's side of a machine's published memory map (see memory_map_layout.ts): one slot per
// segment, written before it is marked present, and a generation bumped after every change. The
// table holds its own dup of each memfd. A reader (a bus engine in a worker) takes an fd by raising
// the slot's user count, checking the slot is still present, and dup'ing it; the owner closes a
// removed slot's fd only when no reader is inside, so a reader never dups a number that was
// closed and reused for another file.

import { native } from '../native';
import { PAGE_SIZE } from './gfp';
import {
  MM_BYTES, MM_COUNT, MM_GEN, MM_SLOTS, MS_FD, MS_OFFSET_PAGES, MS_PAGES, MS_START_PFN, MS_STATE,
  MS_USERS, MS_WRITABLE, SLOT_FREE, SLOT_PRESENT, SLOT_REMOVED, slotBase,
} from './memory_map_layout';

/** A hot-add found every slot of the memory map taken (gup turns it into -ENOMEM). */
export class MemoryMapFullError extends Error {
  readonly code = 'ENOMEM';
}

export interface PublishedSegment {
  readonly startPfn: number;
  readonly pages: number;
  readonly fd: number;
  /** File offset of the first byte (a multiple of the page size). */
  readonly fileOffset: number;
  readonly writable: boolean;
}

export class MemoryMapTable {
  readonly buffer = new SharedArrayBuffer(MM_BYTES);
  readonly #t = new Int32Array(this.buffer);
  /**
   * The owner's own record of each slot: what it published and the fd it owns. The shared table
   * is only a publication (anyone holding a bus description can write it), so no decision and no
   * close() ever takes a number from it; only the readers' count is read back.
   */
  readonly #slots: ({ startPfn: number; fd: number; removed: boolean } | null)[] = [];
  #closed = false;

  /** Publishes a segment; false when every slot is taken (the caller fails the hot-add). */
  add(seg: PublishedSegment): boolean {
    this.#reap();
    let i = this.#slots.indexOf(null);
    if (i < 0) {
      if (this.#slots.length === MM_SLOTS) return false;
      i = this.#slots.length;
    }
    const fd = native.dup(seg.fd);
    this.#slots[i] = { startPfn: seg.startPfn, fd, removed: false };
    const t = this.#t;
    const b = slotBase(i);
    t[b + MS_START_PFN] = seg.startPfn;
    t[b + MS_PAGES] = seg.pages;
    t[b + MS_OFFSET_PAGES] = seg.fileOffset / PAGE_SIZE;
    t[b + MS_WRITABLE] = seg.writable ? 1 : 0;
    Atomics.store(t, b + MS_FD, fd);
    Atomics.store(t, b + MS_STATE, SLOT_PRESENT);
    Atomics.store(t, MM_COUNT, this.#slots.length);
    Atomics.add(t, MM_GEN, 1);
    return true;
  }

  /** Withdraws the segment at `startPfn` (no-op when not published). */
  remove(startPfn: number): void {
    const i = this.#slots.findIndex((e) => e !== null && !e.removed && e.startPfn === startPfn);
    if (i < 0) return;
    this.#slots[i]!.removed = true;
    Atomics.store(this.#t, slotBase(i) + MS_STATE, SLOT_REMOVED);
    Atomics.add(this.#t, MM_GEN, 1);
    this.#reap();
  }

  /** Machine teardown: every slot withdrawn and every fd closed (a reader still inside is a worker being stopped). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const t = this.#t;
    this.#slots.forEach((e, i) => {
      if (e === null) return;
      Atomics.store(t, slotBase(i) + MS_STATE, SLOT_FREE);
      Atomics.store(t, slotBase(i) + MS_FD, -1);
      native.close(e.fd);
    });
    this.#slots.length = 0;
    Atomics.add(t, MM_GEN, 1);
  }

  /** Closes the fds of removed slots no reader is taking, and frees those slots. */
  #reap(): void {
    const t = this.#t;
    this.#slots.forEach((e, i) => {
      if (e === null || !e.removed || Atomics.load(t, slotBase(i) + MS_USERS) !== 0) return;
      Atomics.store(t, slotBase(i) + MS_FD, -1);
      Atomics.store(t, slotBase(i) + MS_STATE, SLOT_FREE);
      native.close(e.fd);
      this.#slots[i] = null;
    });
  }
}
