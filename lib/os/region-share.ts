// Sharing a memfd safely: sealing it against shrinking once it is shared (so no receiver, and no
// owner, can cut pages from under another's mapping: SIGBUS), and mapping a memfd that came from
// elsewhere (another process's fd, /proc/PID/fd/N, a worker's fd number): option checks done before
// any native call, the seal taken before the size is read, a size check that refuses pages past the
// end of the file, and everything undone on failure.

import { fstatSync } from 'node:fs';
import { C, native } from '../native';
import { HUGE_2M, type Backing } from './backing';
import { isErrno } from './errors';
import type { FromFdOptions, Protection } from './region-options';
import { protBits, roundUp, type MappingState } from './region-state';
import * as v from './validate';

/**
 * Seals the memfd behind `fd` against shrinking (F_SEAL_SHRINK, as udmabuf requires of memory it
 * shares) unless it already is. True when the seal is in force afterwards; false when it cannot be
 * had: not a memfd (EINVAL), a memfd created without MFD_ALLOW_SEALING or sealed with F_SEAL_SEAL,
 * or a descriptor opened read-only (EPERM). Growing stays possible.
 * @example if (!sealAgainstShrinking(fd)) console.warn('the other side could still truncate it');
 */
export function sealAgainstShrinking(fd: number): boolean {
  let seals: number;
  try {
    seals = native.getSeals(fd);
  } catch (err) {
    if (isErrno(err, 'EINVAL')) return false; // not a file that takes seals
    throw err;
  }
  if ((seals & C.F_SEAL_SHRINK) !== 0) return true;
  if ((seals & C.F_SEAL_SEAL) !== 0) return false;
  try {
    native.addSeals(fd, C.F_SEAL_SHRINK);
    return true;
  } catch (err) {
    if (isErrno(err, 'EPERM')) return false; // F_ADD_SEALS needs a descriptor open for writing
    throw err;
  }
}

/** FromFdOptions with defaults applied, checked. */
export type MapOptions = Required<FromFdOptions>;

/** Checks Region.fromFd/open options (TypeError/RangeError) and applies the defaults. */
export function readMapOptions(options: FromFdOptions | undefined): MapOptions {
  const o = v.assertOptions('options', options);
  const writable = o.writable ?? true;
  v.assertBoolean('writable', writable);
  const offset = o.offset ?? 0;
  v.assertPageAligned('offset', offset);
  const populate = o.populate ?? true;
  v.assertBoolean('populate', populate);
  return { writable, offset, populate };
}

/** What mapSharedFd mapped; the caller makes the Region. */
export interface SharedMapping {
  state: MappingState;
  prot: Protection;
  backing: Backing;
  reason: string;
  granule: number;
}

/**
 * Maps `length` bytes of `fd` MAP_SHARED at a fresh reservation. The mapping owns `fd` on success
 * (the caller passes a dup or an fd it opened); on failure nothing is mapped and `fd` is untouched.
 * @example const m = mapSharedFd(native.dup(3), 4096, readMapOptions(undefined));
 */
export function mapSharedFd(fd: number, length: number, o: MapOptions): SharedMapping {
  // Seal first, then read the size: once sealed, the size checked below can only grow, so no one
  // (the owner included, in another thread or process) can shrink the file under this mapping.
  // A memfd that cannot be sealed is still mapped: its owner must keep its size (dmamem's do).
  sealAgainstShrinking(fd);
  const st = fstatSync(fd); // st_blksize is the huge page size on hugetlbfs
  const huge = st.blksize === HUGE_2M;
  const granule = huge ? HUGE_2M : native.pageSize;
  const mapped = roundUp(length, granule);
  if (huge) v.assertPageAligned('offset', o.offset, HUGE_2M);
  if (o.offset + mapped > st.size) {
    throw new RangeError(`Expected offset + length of at most ${st.size} (the file's size) but received ${o.offset + mapped} of type number`);
  }
  const prot: Protection = o.writable ? 'readwrite' : 'read';
  // No aligned reservation: any mmap is page-aligned, and the kernel places a hugetlbfs file at a
  // huge-page boundary itself.
  const address = native.mmap(0, mapped, protBits(prot), C.MAP_SHARED, fd, o.offset);
  try {
    if (address % granule !== 0) throw new Error(`dmamem: the kernel placed a ${mapped}-byte mapping at 0x${address.toString(16)}, not ${granule}-aligned`);
    // Read faults map the pages the owner already has 16 at a time (fault-around), writable in a
    // shared writable mapping; write faults would take one fault per page. A hole is allocated either way.
    if (o.populate) native.madvise(address, mapped, C.MADV_POPULATE_READ);
  } catch (err) {
    native.munmap(address, mapped);
    throw err;
  }
  return {
    state: { address, mappedLength: mapped, fd, extraFds: [], closed: false },
    prot,
    backing: huge ? 'hugetlb-2M' : '4k',
    reason: `mapped from a shared fd (${huge ? 'hugetlbfs' : 'shmem'})`,
    granule,
  };
}

/** Options of Region.share. */
export interface ShareOptions {
  /** Hand out an O_RDONLY reopen: the receiver maps it read-only and cannot write (default false). */
  readOnly?: boolean;
  /** With readOnly: also seal F_SEAL_FUTURE_WRITE, so nobody else can ever write (default false). */
  enforce?: boolean;
}

/**
 * Everything another thread or process needs to map a Region: plain data, structured-clonable.
 * `fd` is a descriptor of the sender (process `pid`), owned by the sending Region.
 */
export interface ShareHandle {
  fd: number;
  /** Usable bytes. */
  length: number;
  /** File offset of the shared mapping. */
  offset: number;
  backing: Backing;
  /** True when `fd` is read-only: the receiver gets copies only. */
  readOnly: boolean;
  /** The process `fd` belongs to. */
  pid: number;
}

/** Checks Region.share options and applies the defaults. */
export function readShareOptions(options: ShareOptions | undefined): Required<ShareOptions> {
  const o = v.assertOptions('options', options);
  const readOnly = o.readOnly ?? false;
  v.assertBoolean('readOnly', readOnly);
  const enforce = o.enforce ?? false;
  v.assertBoolean('enforce', enforce);
  if (enforce && !readOnly) throw new TypeError('Expected readOnly: true with enforce: true for options but received readOnly: false');
  return { readOnly, enforce };
}

const BACKINGS: readonly Backing[] = ['hugetlb-2M', 'thp', '4k'];

/** Checks a ShareHandle received from elsewhere (TypeError/RangeError), field by field. */
export function checkShareHandle(handle: unknown): ShareHandle {
  if (handle === null || typeof handle !== 'object' || Array.isArray(handle)) {
    throw new TypeError(`Expected a share handle (from region.share()) for handle but received ${v.describeValue(handle)}`);
  }
  const h = handle as Partial<Record<keyof ShareHandle, unknown>>;
  v.assertInteger('handle.fd', h.fd);
  v.assertPositiveInteger('handle.length', h.length);
  v.assertPageAligned('handle.offset', h.offset);
  v.assertOneOf('handle.backing', h.backing, BACKINGS);
  v.assertBoolean('handle.readOnly', h.readOnly);
  v.assertPositiveInteger('handle.pid', h.pid);
  return { fd: h.fd, length: h.length, offset: h.offset, backing: h.backing, readOnly: h.readOnly, pid: h.pid };
}
