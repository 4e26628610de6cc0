// The layout of a machine's published memory map: a table in shared memory that lists every
// segment of the machine's "physical" memory (PFN range, memfd, file offset), so that a device's
// bus engine, in this thread or in a worker, sees memory added or removed after it was made
// (pinned user memory, a CMA area declared later), as firmware publishes a memory map to devices.
// Constants only: a device worker loads this without the kernel model.

/** Words before the first slot. */
export const MM_GEN = 0; // bumped (Atomics.add) after every change
export const MM_COUNT = 1; // slots ever used (readers scan [0, count))
export const MM_HEADER_WORDS = 4;

/** One slot per segment. */
export const MM_SLOT_WORDS = 8;
export const MS_STATE = 0;
export const MS_START_PFN = 1;
export const MS_PAGES = 2;
/** The table's own dup of the segment's memfd (a reader dups it again, under MS_USERS). */
export const MS_FD = 3;
/** File offset of the segment's first byte, in pages. */
export const MS_OFFSET_PAGES = 4;
/** 1: devices may write the memory; 0: pinned read-only (a device write is refused). */
export const MS_WRITABLE = 5;
/** Readers taking the fd right now: the owner closes a removed slot's fd only at zero. */
export const MS_USERS = 6;

export const SLOT_FREE = 0;
export const SLOT_PRESENT = 1;
/** Removed from the machine; its fd is still open because a reader was taking it. */
export const SLOT_REMOVED = 2;

/** Segments a machine can have at once (RAM per node, CMA areas, swiotlb, pinned Regions). */
export const MM_SLOTS = 1024;
export const MM_BYTES = (MM_HEADER_WORDS + MM_SLOTS * MM_SLOT_WORDS) * 4;

export function slotBase(i: number): number {
  return MM_HEADER_WORDS + i * MM_SLOT_WORDS;
}
