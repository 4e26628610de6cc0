// The vocabulary of Region: its options, protections, madvise advice and memfd seals, as
// literal unions with the tables that turn them into Linux constants.

import type { HugepagePolicy } from './backing';

/** Options of Region.allocate. */
export interface AllocateOptions {
  /** 'auto' (default): hugetlb, else THP, else 4 KiB. 'require': hugetlb or ENOMEM. 'off': 4 KiB. */
  hugepages?: HugepagePolicy;
  /** Start at a 2 MiB boundary whatever the backing (default false; hugetlb and THP always are). */
  align2M?: boolean;
  /** Pre-fault the pages (fallocate + MAP_POPULATE, MADV_POPULATE_WRITE above 1 MiB), so a shortage fails here and not as SIGBUS later (default true). */
  populate?: boolean;
  /** memfd name, shown in /proc/PID/maps as /memfd:NAME (default 'dmamem'). */
  name?: string;
  /** Allow seal() (MFD_ALLOW_SEALING, default true). */
  sealing?: boolean;
}

/** Options of Region.fromFd and Region.open. */
export interface FromFdOptions {
  /** Map read/write (default true). A read-only fd needs false: mapping it writable fails with EACCES. */
  writable?: boolean;
  /** File offset of the mapping, a multiple of the page (or huge page) size (default 0). */
  offset?: number;
  /** Pre-fault the pages now (default true). */
  populate?: boolean;
}

/** Memory protection of a Region. */
export type Protection = 'none' | 'read' | 'readwrite';
export const PROTECTIONS: readonly Protection[] = ['none', 'read', 'readwrite'];

export const ADVICE = {
  hugepage: 'MADV_HUGEPAGE', nohugepage: 'MADV_NOHUGEPAGE', dontneed: 'MADV_DONTNEED', remove: 'MADV_REMOVE',
  willneed: 'MADV_WILLNEED', 'populate-read': 'MADV_POPULATE_READ', 'populate-write': 'MADV_POPULATE_WRITE',
  dontfork: 'MADV_DONTFORK', dofork: 'MADV_DOFORK', random: 'MADV_RANDOM', sequential: 'MADV_SEQUENTIAL', normal: 'MADV_NORMAL',
} as const;
/** madvise advice accepted by Region.advise. */
export type Advice = keyof typeof ADVICE;
export const ADVICES = Object.keys(ADVICE) as Advice[];

export const SEALS = { shrink: 'F_SEAL_SHRINK', grow: 'F_SEAL_GROW', write: 'F_SEAL_WRITE', 'future-write': 'F_SEAL_FUTURE_WRITE', seal: 'F_SEAL_SEAL' } as const;
/** memfd seals: 'shrink'/'grow' fix the size, 'write' forbids all writes (no writable mapping may exist),
 * 'future-write' forbids new writable mappings and write(2) but keeps existing ones, 'seal' forbids more seals. */
export type Seal = keyof typeof SEALS;
export const SEAL_NAMES = Object.keys(SEALS) as Seal[];

/** A read-only share of a Region: pass `fd` to a child (spawn stdio) or let it open `path`. */
export interface ReadOnlyShare {
  /** An O_RDONLY descriptor of the memfd, owned by the Region (closed by close()). */
  fd: number;
  /** /proc/<pid>/fd/<fd>: another process of the same user may open it O_RDONLY. */
  path: string;
}
