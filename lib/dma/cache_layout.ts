// The layout of a machine's simulated CPU cache as non-coherent devices see it: a table in shared
// memory that says which pages are held in the cache (a PFN hash), "RAM" for those pages (what a
// device that does not snoop the cache reads and writes), per 64-byte line the number of live
// mappings the device owns, and a ring of ownership violations the bus recorded. The CPU side
// (lib/dma/cache.ts) keeps the cache; a bus engine, inline or in a worker, only looks things up.
// Constants and lookups only: a device worker loads this without the kernel model.

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
  const slots = t[CM_SLOTS]!;
  if (!Number.isInteger(slots) || slots <= 0 || slots > 1 << 20) return null;
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
