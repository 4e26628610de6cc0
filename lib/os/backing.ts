// Choosing and obtaining the backing of a memfd: hugetlb 2 MiB pages, shmem THP, or 4 KiB pages,
// mapped MAP_SHARED read/write and pre-faulted, with everything undone on failure before the next
// backing is tried. The pool is never trusted: mmap of a hugetlb memfd reserves its pages and fails
// with ENOMEM when the pool is short, so we try and fall back (and never use MAP_NORESERVE, which
// would turn a shortage into SIGBUS on first touch).

import { onFirstUse } from '../lazy';
import { C, native } from '../native';
import { errnoError, isErrno, type ErrnoError } from './errors';
import { HUGE_2M, hugepageAdvice, hugepagePoolFree } from './hugetlb-pool';
import { assertBackable } from './memory-limits';
import { assertBoolean, assertOneOf, assertPageAligned, assertPositiveInteger, assertString } from './validate';

export { HUGE_2M, hugepagePoolFree };

// Needed only for THP (2 MiB and up) and fixed addresses: loaded then, not to allocate a small Region.
/* eslint-disable @typescript-eslint/no-require-imports */
const pagemap = onFirstUse(() => require('./pagemap') as typeof import('./pagemap'));
const procmaps = onFirstUse(() => require('./procmaps') as typeof import('./procmaps'));
const sysinfo = onFirstUse(() => require('./sysinfo') as typeof import('./sysinfo'));
/* eslint-enable @typescript-eslint/no-require-imports */

/** 'auto': hugetlb if the pool has room, else THP where allowed, else 4 KiB. 'require': hugetlb or ENOMEM. 'off': 4 KiB. */
export type HugepagePolicy = 'auto' | 'require' | 'off';
/** The backing actually obtained. */
export type Backing = 'hugetlb-2M' | 'thp' | '4k';

export const HUGEPAGE_POLICIES: readonly HugepagePolicy[] = ['auto', 'require', 'off'];

/** Options of createBackedMemfd. */
export interface BackingOptions {
  /**
   * Map at this (page-, or for hugetlb 2 MiB-) aligned address with MAP_FIXED. The whole range must
   * be a dmamem reservation (native.reserve): anything else is refused with a RangeError before any
   * side effect, because MAP_FIXED replaces whatever is mapped there (even node's own code).
   */
  fixedAddress?: number;
  /** Pre-fault (default true): fallocate + MAP_POPULATE for small shmem, else MADV_POPULATE_WRITE; hugetlb by MAP_POPULATE. */
  populate?: boolean;
  /** Create the memfd with MFD_ALLOW_SEALING (default true). */
  sealing?: boolean;
}

/** What createBackedMemfd obtained. The caller owns `fd` and the mapping at `address`. */
export interface BackedMemfd {
  fd: number;
  address: number;
  backing: Backing;
  /** Why this backing: what was tried and why it was not taken. */
  reason: string;
  /** The unit the memory can be mapped, advised and resized in: 2 MiB for hugetlb, else 4096. */
  granule: number;
}

const mib = (n: number): string => `${n / (1024 * 1024)} MiB`;

/** Put a caller's reserved range back to PROT_NONE so no hole is left for others to map into. */
function rereserve(address: number, length: number): void {
  native.reserveFixed(address, length);
}

/** Up to this size, shmem is allocated with fallocate before it is mapped (see fallocateSmall). */
const FALLOCATE_MAX = 1024 * 1024;

/**
 * Sizes and allocates a new shmem memfd's pages in one call (fallocate, mode 0), so a shortage fails
 * here with ENOMEM. False, with nothing done, when `length` is large or the call was interrupted:
 * shmem's fallocate gives up on any pending signal (EINTR, its pages freed again, the size unchanged),
 * which a long call under a profiler's SIGPROF would hit every time, so only small sizes use it and the
 * caller then sizes with ftruncate and populates with MADV_POPULATE_WRITE instead.
 */
function fallocateSmall(fd: number, length: number): boolean {
  if (length > FALLOCATE_MAX) return false;
  try {
    native.fallocate(fd, 0, 0, length);
    return true;
  } catch (err) {
    if (isErrno(err, 'EINTR')) return false;
    throw err;
  }
}

/**
 * One attempt: memfd + ftruncate + mmap (+ populate). On failure nothing is left behind (fd closed,
 * our reservation unmapped, the caller's re-reserved) and the error is rethrown.
 */
function attempt(name: string, length: number, memfdFlags: number, align: number, opts: Required<Omit<BackingOptions, 'fixedAddress'>> & BackingOptions, before?: (addr: number) => void): { fd: number; address: number } {
  let fd = -1;
  let address = -1;
  let ownReservation = false;
  try {
    fd = native.memfdCreate(name, memfdFlags | (opts.sealing ? C.MFD_ALLOW_SEALING : 0));
    const huge = (memfdFlags & C.MFD_HUGETLB) !== 0;
    if (opts.fixedAddress === undefined && before === undefined && (align === native.pageSize || huge)) {
      // The natural alignment suffices: any mmap is page-aligned, and the kernel places a hugetlbfs
      // file at a huge-page boundary itself. No reservation to make and trim (three syscalls fewer).
      // Hugetlb pages are reserved by this mmap, so MAP_POPULATE cannot run short of them. Small
      // shmem is allocated by fallocate, which reports a shortage, and then only mapped by
      // MAP_POPULATE (which would ignore one): one syscall fewer than ftruncate + madvise.
      const allocated = opts.populate && !huge && fallocateSmall(fd, length);
      if (!allocated) native.ftruncate(fd, length);
      const populate = opts.populate && (huge || allocated) ? C.MAP_POPULATE : 0;
      address = native.mmap(0, length, C.PROT_READ | C.PROT_WRITE, C.MAP_SHARED | populate, fd, 0);
      ownReservation = true;
      if (address % align !== 0) throw new Error(`dmamem: the kernel placed a ${length}-byte mapping at 0x${address.toString(16)}, not ${align}-aligned`);
      if (opts.populate && !huge && !allocated) native.madvise(address, length, C.MADV_POPULATE_WRITE);
      return { fd, address };
    }
    native.ftruncate(fd, length);
    if (opts.fixedAddress !== undefined) {
      address = opts.fixedAddress;
    } else {
      address = native.reserve(length, align);
      ownReservation = true;
    }
    native.mmap(address, length, C.PROT_READ | C.PROT_WRITE, C.MAP_SHARED | C.MAP_FIXED, fd, 0);
    if (before) before(address);
    if (opts.populate) native.madvise(address, length, C.MADV_POPULATE_WRITE);
    return { fd, address };
  } catch (err) {
    if (address !== -1) {
      if (ownReservation) native.munmap(address, length);
      else rereserve(address, length);
    }
    if (fd !== -1) native.close(fd);
    throw err;
  }
}

/** True if the kernel confirms (kpageflags) that the first page is a THP; null if it cannot tell. */
function confirmThp(address: number): boolean | null {
  const { readPagemap, readKpageflags, KPF_THP } = pagemap();
  const info = readPagemap(address, 1)[0];
  if (info === undefined || info.pfn === null) return null;
  const flags = readKpageflags(info.pfn, 1);
  if (flags === null || flags[0] === undefined) return null;
  return (flags[0] & (1n << BigInt(KPF_THP))) !== 0n;
}

/**
 * Creates a memfd of `length` bytes with the best backing `policy` allows and maps it MAP_SHARED
 * read/write; see BackingOptions. Throws an ENOMEM Error (syscall 'mmap') saying how to reserve
 * pages when policy is 'require' and hugetlb cannot be had.
 * @example
 * const m = createBackedMemfd('dma', 4 << 20, 'auto');
 * m.backing // 'hugetlb-2M' | 'thp' | '4k'
 */
export function createBackedMemfd(name: string, length: number, policy: HugepagePolicy, opts: BackingOptions = {}): BackedMemfd {
  assertString('name', name);
  assertPageAligned('length', length);
  assertPositiveInteger('length', length);
  assertOneOf('policy', policy, HUGEPAGE_POLICIES);
  if (opts.fixedAddress !== undefined) {
    assertPageAligned('fixedAddress', opts.fixedAddress);
    if (!procmaps().isReservedRange(opts.fixedAddress, length)) {
      throw new RangeError(
        `Expected fixedAddress to start ${length} bytes of address space reserved by dmamem but received 0x${opts.fixedAddress.toString(16)}: ` +
          'mapping there with MAP_FIXED would replace memory that is not dmamem\'s own',
      );
    }
  }
  if (opts.populate !== undefined) assertBoolean('populate', opts.populate);
  if (opts.sealing !== undefined) assertBoolean('sealing', opts.sealing);
  const o = { fixedAddress: opts.fixedAddress, populate: opts.populate ?? true, sealing: opts.sealing ?? true };
  const page = native.pageSize;

  if (policy === 'off') {
    const { fd, address } = attempt(name, length, 0, page, o);
    return { fd, address, backing: '4k', reason: "hugepages: 'off' was requested", granule: page };
  }
  const notes: string[] = [];

  // 1. hugetlb 2 MiB pages.
  const pages = Math.ceil(length / HUGE_2M);
  let hugeSkip: string | null = null;
  let hugeCode = 'EINVAL'; // a shape that hugetlb cannot take; ENOMEM once the pool was asked
  let hugeSyscall = 'mmap';
  if (length % HUGE_2M !== 0) hugeSkip = `hugetlb: length ${length} is not a multiple of 2 MiB`;
  else if (o.fixedAddress !== undefined && o.fixedAddress % HUGE_2M !== 0) hugeSkip = `hugetlb: fixedAddress 0x${o.fixedAddress.toString(16)} is not 2 MiB-aligned`;
  if (hugeSkip === null) {
    try {
      const { fd, address } = attempt(name, length, C.MFD_HUGETLB | C.MFD_HUGE_2MB, HUGE_2M, o);
      return { fd, address, backing: 'hugetlb-2M', reason: `hugetlb: ${pages} x 2 MiB pages reserved from the pool`, granule: HUGE_2M };
    } catch (err) {
      if (isErrno(err, 'ENOMEM')) {
        hugeCode = 'ENOMEM';
        hugeSkip =
          `hugetlb: the 2 MiB pool cannot supply ${pages} page${pages === 1 ? '' : 's'} (${mib(length)}) ` +
          `(mmap ENOMEM; ${hugepagePoolFree()} free); reserve more with: ${hugepageAdvice(pages)}`;
      } else if (err instanceof Error && (err as Partial<ErrnoError>).syscall === 'memfd_create') {
        // A kernel without CONFIG_HUGETLBFS (or without 2 MiB pages) refuses MFD_HUGETLB: fall back.
        hugeCode = (err as ErrnoError).code;
        hugeSyscall = 'memfd_create';
        hugeSkip = `hugetlb: this kernel cannot create 2 MiB hugetlb memfds (memfd_create ${hugeCode})`;
      } else {
        throw err;
      }
    }
  }
  if (policy === 'require') {
    const why = hugeSkip.replace(/^hugetlb: /, '');
    const advice = hugeCode === 'EINVAL' && hugeSyscall === 'mmap' ? ' (hugetlb memory comes in whole, aligned 2 MiB pages)' : '';
    throw errnoError(hugeCode, hugeSyscall, `hugepages 'require' cannot be met: ${why}${advice}`);
  }
  notes.push(hugeSkip);
  // The caller's size check may have counted on the pool (which another process can empty between
  // that check and this attempt): what falls back to ordinary pages is checked as such.
  if (hugeCode === 'ENOMEM') assertBackable(length, `${name}: ${length} bytes on ordinary pages after the hugetlb pool fell short`, 'never');

  // 2. shmem THP: only where the kernel allows it for memfds (shmem_enabled).
  // Read only when it can matter: below 2 MiB there is no huge page to get (four syscalls saved).
  const shmem = length < HUGE_2M ? null : sysinfo().thpMode('shmem');
  const enable = 'echo advise | sudo tee /sys/kernel/mm/transparent_hugepage/shmem_enabled';
  if (length < HUGE_2M) {
    notes.push(`thp: length ${length} is below one 2 MiB huge page`);
  } else if (shmem === null || shmem === 'never' || shmem === 'deny') {
    notes.push(`thp: shmem THP is '${shmem ?? 'unavailable'}' (/sys/kernel/mm/transparent_hugepage/shmem_enabled), so memfds get no THP; enable with: ${enable}`);
  } else {
    // 'advise' needs MADV_HUGEPAGE before the first fault; the others give THP on their own.
    const adviseFirst = (addr: number): void => native.madvise(addr, length, C.MADV_HUGEPAGE);
    const { fd, address } = attempt(name, length, 0, HUGE_2M, o, adviseFirst);
    const confirmed = o.populate ? confirmThp(address) : null;
    if (confirmed === false) {
      notes.push(`thp: shmem THP is '${shmem}' and MADV_HUGEPAGE was applied, but the kernel gave 4 KiB pages (kpageflags)`);
      return { fd, address, backing: '4k', reason: notes.join('; '), granule: page };
    }
    notes.push(`thp: shmem THP is '${shmem}'${confirmed ? ', confirmed by kpageflags' : ', MADV_HUGEPAGE applied (not verifiable here)'}`);
    return { fd, address, backing: 'thp', reason: notes.join('; '), granule: page };
  }

  // 3. 4 KiB pages.
  const { fd, address } = attempt(name, length, 0, page, o);
  notes.push('using 4 KiB pages');
  return { fd, address, backing: '4k', reason: notes.join('; '), granule: page };
}
