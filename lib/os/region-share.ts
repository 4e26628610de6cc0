// Mapping a memfd that came from elsewhere (another process's fd, /proc/PID/fd/N, a worker's
// fd number): option checks done before any native call, a size check that refuses pages past
// the end of the file (touching them would be SIGBUS), and everything undone on failure.

import * as fs from 'node:fs';
import { C, native } from '../native';
import { HUGE_2M, type Backing } from './backing';
import type { FromFdOptions, Protection } from './region-options';
import { protBits, reserveFor, roundUp, type MappingState } from './region-state';
import * as v from './validate';

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
  const st = fs.fstatSync(fd); // st_blksize is the huge page size on hugetlbfs
  const huge = st.blksize === HUGE_2M;
  const granule = huge ? HUGE_2M : native.pageSize;
  const mapped = roundUp(length, granule);
  if (huge) v.assertPageAligned('offset', o.offset, HUGE_2M);
  if (o.offset + mapped > st.size) {
    throw new RangeError(`Expected offset + length of at most ${st.size} (the file's size) but received ${o.offset + mapped} of type number`);
  }
  const prot: Protection = o.writable ? 'readwrite' : 'read';
  const address = reserveFor(mapped);
  try {
    native.mmap(address, mapped, protBits(prot), C.MAP_SHARED | C.MAP_FIXED, fd, o.offset);
    if (o.populate) native.madvise(address, mapped, o.writable ? C.MADV_POPULATE_WRITE : C.MADV_POPULATE_READ);
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
