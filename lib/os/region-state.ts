// The OS resources behind a Region, kept apart from the Region object so that the GC backstop
// (a FinalizationRegistry) can release them without holding the Region alive.

import { C, native } from '../native';
import { HUGE_2M } from './backing';
import type { Protection } from './region-options';
import { trackExternalMemory } from './views';

/** What must be undone to release one mapping: the range, its fds, and the bytes reported to V8. */
export interface MappingState {
  address: number;
  mappedLength: number;
  fd: number;
  /** Extra fds owned by the mapping (read-only reopens handed to other processes). */
  extraFds: number[];
  closed: boolean;
}

/** `n` rounded up to a multiple of `to`. */
export const roundUp = (n: number, to: number): number => Math.ceil(n / to) * to;

/** The PROT_* bits of a Protection. */
export const protBits = (p: Protection): number =>
  p === 'none' ? C.PROT_NONE : p === 'read' ? C.PROT_READ : C.PROT_READ | C.PROT_WRITE;

/** Reserve address space aligned to 2 MiB when the length allows it (hugetlb needs it; it costs nothing). */
export function reserveFor(length: number): number {
  return native.reserve(length, length % HUGE_2M === 0 ? HUGE_2M : native.pageSize);
}

/** Unmaps, closes fds and takes the bytes back from V8's accounting. Idempotent. */
export function releaseMapping(s: MappingState): void {
  if (s.closed) return;
  s.closed = true;
  // Every step runs even when one fails; the first error is rethrown at the end.
  let first: unknown = null;
  try {
    native.munmap(s.address, s.mappedLength);
  } catch (err) {
    first = err;
  }
  first = closeAll(s.fd, s.extraFds, first);
  if (s.extraFds.length !== 0) s.extraFds = [];
  trackExternalMemory(-s.mappedLength);
  if (first !== null) throw first;
}

/** Closes `fd` and `more`, each even if another fails; returns `first`, else the first close error, else null. */
function closeAll(fd: number, more: readonly number[], first: unknown): unknown {
  try {
    native.close(fd);
  } catch (err) {
    first ??= err;
  }
  for (const other of more) {
    try {
      native.close(other);
    } catch (err) {
      first ??= err;
    }
  }
  return first;
}

/**
 * Backstop for Regions nobody closed: runs once the Region and every ArrayBuffer handed out over it
 * are unreachable (views keep their Region alive through a WeakMap in views.ts). Never the main path:
 * the GC is driven by heap pressure, not by mapped bytes, so it may run late or at exit not at all.
 */
export const backstop = new FinalizationRegistry<MappingState>((s) => {
  try {
    releaseMapping(s);
  } catch {
    // Nothing to report to: the owner is gone. The range stays unmapped or the fd closed as far as possible.
  }
});
