// The memory under an Arena: one memfd (hugetlb where the pool allows it, else 4 KiB pages) sized to
// the arena's cap once, a PROT_NONE reservation of the cap, and chunks mapped into it (MAP_FIXED,
// pre-populated) as the arena grows and put back to the reservation, their pages punched out of the
// file, when it trims. A chunk is mapped before anything is handed out in it and unmapped only once
// every view over it has been detached.

import { C, native } from '../native';
import { HUGE_2M, type Backing, type HugepagePolicy } from './backing';
import { errnoError, isErrno } from './errors';
import { hugepagePoolFree } from './hugetlb-pool';
import { assertBackable } from './memory-limits';
import { trackExternalMemory } from './views';

/** What must be undone to release an arena's memory (kept apart from the Arena for the GC backstop). */
export interface ArenaMemory {
  fd: number;
  /** Start of the reservation of `capacity` bytes; chunk i lives at base + i * chunkSize. */
  base: number;
  capacity: number;
  chunkSize: number;
  backing: Backing;
  /** Why this backing (what was tried). */
  reason: string;
  /** Bytes mapped (reported to V8 as external memory). */
  mapped: number;
  closed: boolean;
}

const mib = (n: number): string => `${(n / 2 ** 20).toFixed(n % 2 ** 20 === 0 ? 0 : 2)} MiB`;

/**
 * Creates the memfd (sized to `capacity`, which costs nothing until pages are touched) and the
 * reservation, and maps chunk 0 (pre-populated). With 'auto', a hugetlb memfd is kept only if its
 * first chunk could be reserved from the pool; else the arena uses 4 KiB pages.
 */
export function createArenaMemory(name: string, capacity: number, chunkSize: number, chunkSize4k: number, policy: HugepagePolicy): ArenaMemory {
  const notes: string[] = [];
  if (policy !== 'off') {
    if (chunkSize % HUGE_2M !== 0) {
      notes.push(`hugetlb: chunkSize ${chunkSize} is not a multiple of 2 MiB`);
    } else {
      try {
        return open(name, capacity, chunkSize, true, `hugetlb: ${mib(chunkSize)} chunks from the 2 MiB pool`);
      } catch (err) {
        if (policy === 'require' || !(isErrno(err, 'ENOMEM') || (err as { syscall?: string }).syscall === 'memfd_create')) throw err;
        notes.push(`hugetlb: ${(err as Error).message}`);
      }
    }
    if (policy === 'require') throw errnoError('EINVAL', 'mmap', `hugepages 'require' cannot be met: ${notes.join('; ')}`);
  } else {
    notes.push("hugepages: 'off' was requested");
  }
  notes.push('using 4 KiB pages');
  return open(name, capacity, chunkSize4k, false, notes.join('; '));
}

function open(name: string, capacity: number, chunkSize: number, huge: boolean, reason: string): ArenaMemory {
  const fd = native.memfdCreate(name, C.MFD_ALLOW_SEALING | (huge ? C.MFD_HUGETLB | C.MFD_HUGE_2MB : 0));
  let base = -1;
  try {
    native.ftruncate(fd, capacity);
    base = native.reserve(capacity, huge ? HUGE_2M : chunkSize);
    const m: ArenaMemory = { fd, base, capacity, chunkSize, backing: huge ? 'hugetlb-2M' : '4k', reason, mapped: 0, closed: false };
    mapChunk(m, 0);
    return m;
  } catch (err) {
    if (base !== -1) native.munmap(base, capacity);
    native.close(fd);
    throw err;
  }
}

/**
 * Maps chunk `index` read/write and pre-faults it. The size is checked against what the machine can
 * back first (ENOMEM, not the OOM killer); a hugetlb chunk is reserved from the pool by mmap itself
 * (ENOMEM when the pool is short, never SIGBUS later). On failure the range is a reservation again.
 */
export function mapChunk(m: ArenaMemory, index: number, owner = true): void {
  const addr = m.base + index * m.chunkSize;
  const huge = m.backing === 'hugetlb-2M';
  assertBackable(m.chunkSize, `arena chunk ${index} (${mib(m.chunkSize)})`, huge ? 'only' : 'never');
  try {
    native.mmap(addr, m.chunkSize, C.PROT_READ | C.PROT_WRITE, C.MAP_SHARED | C.MAP_FIXED, m.fd, index * m.chunkSize);
  } catch (err) {
    native.reserveFixed(addr, m.chunkSize);
    if (huge && isErrno(err, 'ENOMEM')) {
      throw errnoError('ENOMEM', 'mmap', `the 2 MiB hugetlb pool cannot supply another ${mib(m.chunkSize)} arena chunk (${hugepagePoolFree()} pages free; the arena has ${mib(m.mapped)} mapped)`);
    }
    throw err;
  }
  try {
    native.madvise(addr, m.chunkSize, C.MADV_POPULATE_WRITE);
  } catch (err) {
    native.reserveFixed(addr, m.chunkSize);
    // Only the owner gives pages back: a peer's chunk may hold the owner's live allocations.
    if (owner) native.fallocate(m.fd, C.FALLOC_FL_PUNCH_HOLE | C.FALLOC_FL_KEEP_SIZE, index * m.chunkSize, m.chunkSize);
    throw err;
  }
  m.mapped += m.chunkSize;
  trackExternalMemory(m.chunkSize);
}

/**
 * Gives chunk `index` back: the range becomes a reservation again and its pages are punched out of
 * the file (returned to the system or the pool). The caller detached every view over it.
 */
export function unmapChunk(m: ArenaMemory, index: number): void {
  native.reserveFixed(m.base + index * m.chunkSize, m.chunkSize);
  m.mapped -= m.chunkSize;
  trackExternalMemory(-m.chunkSize);
  native.fallocate(m.fd, C.FALLOC_FL_PUNCH_HOLE | C.FALLOC_FL_KEEP_SIZE, index * m.chunkSize, m.chunkSize);
}

/** Unmaps the whole reservation and closes the memfd. Idempotent. */
export function releaseArenaMemory(m: ArenaMemory): void {
  if (m.closed) return;
  m.closed = true;
  let first: unknown = null;
  try {
    native.munmap(m.base, m.capacity);
  } catch (err) {
    first = err;
  }
  try {
    native.close(m.fd);
  } catch (err) {
    first ??= err;
  }
  trackExternalMemory(-m.mapped);
  m.mapped = 0;
  if (first !== null) throw first;
}

/** Backstop for arenas nobody closed: runs once the Arena and every allocation's buffer are unreachable. */
export const arenaBackstop = new FinalizationRegistry<ArenaMemory>((m) => {
  try {
    releaseArenaMemory(m);
  } catch {
    // The owner is gone: nothing to report to.
  }
});
