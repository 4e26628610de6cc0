// The layout of a machine's simulated CPU cache as non-coherent devices see it: a table in shared
// memory that says which pages are held in the cache (a PFN hash), "RAM" for those pages (what a
// device that does not snoop the cache reads and writes), per 64-byte line the number of live
// mappings the device owns, and a ring of ownership violations the bus recorded. The CPU side
// (lib/dma/cache.ts) keeps the cache; a bus engine, inline or in a worker, only looks things up.
// Constants and the hash's lookup and edits only: a device worker loads this without the kernel model.

export const CACHE_LINE = 64;
export const PAGE = 4096;
export const LINES_PER_PAGE = PAGE / CACHE_LINE;

/** Header words. */
export const CM_SEQ = 0; // odd while the CPU side changes the hash (a seqlock)
export const CM_COUNT = 1; // pages held; 0 lets a bus engine skip every lookup
export const CM_SLOTS = 2; // capacity in pages
export const CM_HASH_SIZE = 3; // entries in the hash (a power of two)
export const CM_VIO_HEAD = 4; // violations ever recorded (the ring index is head % CM_VIO_SLOTS)
export const CM_HEADER_WORDS = 16;

/** The ownership-violation ring: one record per device access to lines the CPU owns. */
export const CM_VIO_SLOTS = 64;
export const CM_VIO_WORDS = 8;
export const V_REQUESTER = 0;
export const V_ADDR_LO = 1;
export const V_ADDR_HI = 2;
export const V_LENGTH = 3;
export const V_WRITE = 4;
export const V_REFUSED = 5;
export const V_PFN = 6;

/** Ownership checking of a device, as its bus description carries it. */
export const OWNERSHIP_OFF = 0;
export const OWNERSHIP_REPORT = 1;
export const OWNERSHIP_STRICT = 2;

/** Where each part starts, for a cache of `slots` pages. */
export interface CacheLayout {
  readonly slots: number;
  readonly hashSize: number;
  /** Int32 index of the hash keys (PFN + 1; 0 = empty), then the values (slot) at keys + hashSize. */
  readonly keys: number;
  readonly vio: number;
  /** Byte offsets. */
  readonly owners: number;
  readonly ram: number;
  readonly bytes: number;
}

export function cacheLayout(slots: number): CacheLayout {
  let hashSize = 1;
  while (hashSize < 2 * slots) hashSize *= 2;
  const keys = CM_HEADER_WORDS;
  const vio = keys + 2 * hashSize;
  const owners = (vio + CM_VIO_SLOTS * CM_VIO_WORDS) * 4;
  const ram = Math.ceil((owners + slots * LINES_PER_PAGE) / PAGE) * PAGE;
  return { slots, hashSize, keys, vio, owners, ram, bytes: ram + slots * PAGE };
}

/** The layout of an existing table (its size fields), or null when they do not describe `bytes`. */
export function cacheLayoutOf(t: Int32Array): CacheLayout | null {
  // A junk slot count cannot match the table's size and hash size, except a negative one, whose
  // layout has a negative RAM size.
  const slots = t[CM_SLOTS]!;
  if (slots < 1) return null;
  const l = cacheLayout(slots);
  return l.hashSize === t[CM_HASH_SIZE] && l.bytes === t.byteLength ? l : null;
}

/** The hash's first probe for a PFN. */
export function cacheHash(pfn: number, hashSize: number): number {
  return (Math.imul(pfn, 0x9e3779b1) >>> 0) & (hashSize - 1);
}

/** One probe run for `pfn`: its slot, or -1. */
function probe(t: Int32Array, l: CacheLayout, pfn: number): number {
  const key = pfn + 1;
  for (let i = cacheHash(pfn, l.hashSize), n = 0; n < l.hashSize; i = (i + 1) & (l.hashSize - 1), n++) {
    const k = t[l.keys + i]!;
    if (k === 0) return -1;
    if (k === key) {
      const slot = t[l.keys + l.hashSize + i]!;
      return slot >= 0 && slot < l.slots ? slot : -1;
    }
  }
  return -1;
}

/**
 * The cache slot holding `pfn`, or -1. Linear probing under the CPU side's seqlock: a lookup that
 * overlapped a change is retried, so a reader never sees a half-moved entry. Bounded: after many
 * retries (a CPU side preempted mid-change for milliseconds, or a sequence someone scribbled odd)
 * one unlocked probe answers, so a junk table misleads a device but never hangs it.
 */
export function cacheLookup(t: Int32Array, l: CacheLayout, pfn: number): number {
  for (let tries = 0; tries < 100_000; tries++) {
    const seq = Atomics.load(t, CM_SEQ);
    if ((seq & 1) !== 0) continue;
    const slot = probe(t, l, pfn);
    if (Atomics.load(t, CM_SEQ) === seq) return slot;
  }
  return probe(t, l, pfn);
}

// ---- the writer's side (the CPU side, under its seqlock) ----
// Bounded everywhere: the table is shared with device models, which may have scribbled on it.

/** Puts pfn -> slot in the first free cell of its probe run. False when no cell is free. */
export function cacheInsert(t: Int32Array, l: CacheLayout, pfn: number, slot: number): boolean {
  const { keys, hashSize } = l;
  for (let i = cacheHash(pfn, hashSize), n = 0; n < hashSize; i = (i + 1) & (hashSize - 1), n++) {
    if (t[keys + i] !== 0) continue;
    t[keys + hashSize + i] = slot;
    t[keys + i] = pfn + 1;
    return true;
  }
  return false;
}

/**
 * Removes pfn, moving later members of its probe run back into the hole (backward-shift deletion),
 * so that every remaining key is still reached from its first probe. False when pfn is not there.
 */
export function cacheRemove(t: Int32Array, l: CacheLayout, pfn: number): boolean {
  const { keys, hashSize } = l;
  const mask = hashSize - 1;
  let i = cacheHash(pfn, hashSize);
  for (let n = 0; t[keys + i] !== pfn + 1; n++) {
    if (t[keys + i] === 0 || n === hashSize) return false;
    i = (i + 1) & mask;
  }
  t[keys + i] = 0;
  for (let j = (i + 1) & mask, k = 0; t[keys + j] !== 0 && k < hashSize; j = (j + 1) & mask, k++) {
    // The entry at j stays if its first probe h lies cyclically in (i, j]: it is reached before the hole.
    const h = cacheHash(t[keys + j]! - 1, hashSize);
    const reached = i <= j ? h > i && h <= j : h > i || h <= j;
    if (reached) continue;
    t[keys + i] = t[keys + j]!;
    t[keys + hashSize + i] = t[keys + hashSize + j]!;
    t[keys + j] = 0;
    i = j;
  }
  return true;
}

/** Clears the hash and puts every entry of `entries` (pfn -> slot) back. */
export function cacheRebuild(t: Int32Array, l: CacheLayout, entries: ReadonlyMap<number, number>): void {
  t.fill(0, l.keys, l.keys + 2 * l.hashSize);
  for (const [pfn, slot] of entries) cacheInsert(t, l, pfn, slot);
}
