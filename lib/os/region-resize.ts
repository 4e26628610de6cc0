// Resizing a Region's mapping: shrink in place (and truncate the memfd it owns), grow with mremap
// (4 KiB pages in one piece) or a fresh mapping of the memfd (hugetlb, or a mapping that advice or
// locking on part of it split into several VMAs, which mremap cannot move). Views are detached before the memory under them
// moves or goes, and a failed step leaves the old mapping, file size and accounting as they were.

import { C, native } from '../native';
import { HUGE_2M } from './backing';
import { DmamemError, isErrno } from './errors';
import { mappingsOfFile } from './procmaps';
import type { Protection } from './region-options';
import { protBits, reserveFor, type MappingState } from './region-state';
import { trackExternalMemory } from './views';

/** What resizing needs to know about a Region. */
export interface Resizable {
  readonly s: MappingState;
  /** 2 MiB for hugetlb memory, else the page size. */
  readonly granule: number;
  /** File offset of the mapping. */
  readonly fileOffset: number;
  /** True for the Region that created the memfd: only it changes the file's size. */
  readonly ownsFile: boolean;
  readonly prot: Protection;
  /** mlock2 flags of the last lock() (0 or MLOCK_ONFAULT), null when not locked: a fresh mapping is locked again. */
  readonly lockFlags: number | null;
  /** True once the fd was handed out (Region.fd, shareReadOnly): the file's size may only grow. */
  readonly shared: boolean;
  /** Detaches every view of this Region. */
  detachViews(): void;
}

/**
 * Refuses to truncate the memfd to `newSize` while another mapping of it in this process (an alias,
 * a Region.fromFd of the same fd, a worker's mapping) reaches past `newSize`: its next touch there
 * would be SIGBUS. Other processes cannot be seen: they protect themselves with seal(['shrink']).
 */
function assertNoMappingPast(t: Resizable, newSize: number): void {
  const own = t.s;
  for (const m of mappingsOfFile(own.fd)) {
    if (m.start >= own.address && m.end <= own.address + own.mappedLength) continue;
    if (m.offset + (m.end - m.start) > newSize) {
      throw new DmamemError(
        'ERR_DMAMEM_BUSY',
        `cannot shrink: another mapping of this memfd at 0x${m.start.toString(16)} reaches file offset ${m.offset + (m.end - m.start)} and would fault (SIGBUS) past the new end ${newSize}; close it first`,
      );
    }
  }
}

function sealedError(newSize: number): DmamemError {
  return new DmamemError(
    'ERR_DMAMEM_SEALED',
    `cannot shrink to ${newSize} bytes: the memfd is sealed against shrinking (F_SEAL_SHRINK), as it is once shared (Region.fd, shareReadOnly, fromFd) or after seal(['shrink']), so no mapping of it can lose pages under it; its size may only grow`,
  );
}

/** Shrinks the mapping in place to `newMapped` bytes (a multiple of the granule). */
export function shrinkMapping(t: Resizable, newMapped: number): void {
  const s = t.s;
  if (t.ownsFile) {
    if ((native.getSeals(s.fd) & C.F_SEAL_SHRINK) !== 0) throw sealedError(newMapped);
    if (t.shared) {
      throw new DmamemError(
        'ERR_DMAMEM_SEALED',
        `cannot shrink to ${newMapped} bytes: the fd was handed out, and this memfd (created with sealing: false) cannot be sealed, so a receiver's mapping past the new end would fault (SIGBUS); its size may only grow`,
      );
    }
    assertNoMappingPast(t, newMapped);
  }
  t.detachViews();
  // Truncate first: if it fails (a receiver sealed the fd meanwhile) nothing has changed yet. Our
  // own tail is past the new end for a moment, but no view can reach it any more.
  if (t.ownsFile) {
    try {
      native.ftruncate(s.fd, newMapped);
    } catch (err) {
      throw isErrno(err, 'EPERM') ? sealedError(newMapped) : err;
    }
  }
  native.mremap(s.address, s.mappedLength, newMapped, 0, 0); // shrinking in place never moves
  trackExternalMemory(newMapped - s.mappedLength);
  s.mappedLength = newMapped;
}

/**
 * Grows the mapping to `newMapped` bytes; it may move. Hugetlb memory is pre-faulted here (its
 * new pool pages are reserved by mmap anyway); 4 KiB memory is left for the caller to populate.
 */
export function growMapping(t: Resizable, newMapped: number): void {
  const s = t.s;
  const huge = t.granule === HUGE_2M;
  const fileEnd = t.fileOffset + newMapped;
  const oldSize = native.fstatSize(s.fd);
  if (fileEnd > oldSize) {
    if (!t.ownsFile) throw new RangeError(`Expected newLength within the shared file's size ${oldSize - t.fileOffset} but received ${newMapped} of type number`);
    native.ftruncate(s.fd, fileEnd);
  }
  let target = -1;
  let fresh = huge;
  try {
    target = reserveFor(newMapped);
    if (!huge) {
      // Detach before the move: after mremap the old views would point at unmapped memory.
      t.detachViews();
      try {
        native.mremap(s.address, s.mappedLength, newMapped, C.MREMAP_MAYMOVE | C.MREMAP_FIXED, target);
      } catch (err) {
        // EFAULT: the old range is several VMAs (advise() or lock() on part of it split it) and
        // mremap moves one VMA only. Nothing moved; map the memfd afresh instead.
        if (!isErrno(err, 'EFAULT')) throw err;
        fresh = true;
      }
    }
    if (fresh) {
      // A fresh MAP_SHARED mapping of the same memfd shows the same pages (hugetlb cannot be grown
      // by mremap at all; its new pool pages are reserved here, ENOMEM if short). The old mapping
      // is dropped only once the new one stands. Advice on part of the old mapping is not carried
      // over; a lock is.
      native.mmap(target, newMapped, protBits(t.prot), C.MAP_SHARED | C.MAP_FIXED, s.fd, t.fileOffset);
      if (huge && t.prot === 'readwrite') native.madvise(target + s.mappedLength, newMapped - s.mappedLength, C.MADV_POPULATE_WRITE);
      if (t.lockFlags !== null) native.mlock(target, newMapped, t.lockFlags);
    }
  } catch (err) {
    // The old mapping is intact: mmap, populate or mremap failed before anything moved.
    if (target !== -1) native.munmap(target, newMapped);
    // Once shared, the size only grows: a receiver may already map the new part.
    if (fileEnd > oldSize && !t.shared) {
      try {
        native.ftruncate(s.fd, oldSize);
      } catch (undo) {
        // Sealed against shrinking meanwhile (shared): the file stays larger, which harms no one.
        if (!isErrno(undo, 'EPERM')) throw undo;
      }
    }
    throw err;
  }
  t.detachViews();
  if (fresh) native.munmap(s.address, s.mappedLength);
  trackExternalMemory(newMapped - s.mappedLength);
  s.address = target;
  s.mappedLength = newMapped;
}
