// The 2 MiB hugetlb pool as /sys shows it: the huge page size and how many pages a new mapping
// could still reserve. A leaf module (it imports nothing of lib/os), so that the backing policy and
// the memory-limit checks can both read it without importing each other.

import { readFileSync } from 'node:fs';

/** One 2 MiB huge page. */
export const HUGE_2M = 2 * 1024 * 1024;

const POOL_DIR = '/sys/kernel/mm/hugepages';

/** A number from the pool's /sys directory (0 when unreadable). */
export function readPoolFile(sizeKiB: number, file: string): number {
  try {
    return Number.parseInt(readFileSync(`${POOL_DIR}/hugepages-${sizeKiB}kB/${file}`, 'utf8'), 10) || 0;
  } catch {
    return 0;
  }
}

/**
 * Huge pages of `sizeKiB` that a new mapping could still reserve now: free_hugepages minus
 * resv_hugepages (reserved pages are counted as free until faulted). Racy: only for messages and tests.
 * @example hugepagePoolFree() // 600
 */
export function hugepagePoolFree(sizeKiB = 2048): number {
  return Math.max(0, readPoolFile(sizeKiB, 'free_hugepages') - readPoolFile(sizeKiB, 'resv_hugepages'));
}

/**
 * The command that lets `pages` more 2 MiB pages be reserved now: nr_hugepages raised by what the
 * pool lacks for them (at least 1). The one place dmamem gives hugepage advice. `pool` (default:
 * the live one) is nr_hugepages and the pages a mapping could still reserve.
 * @example hugepageAdvice(32) // 'echo 632 | sudo tee /proc/sys/vm/nr_hugepages' with 600 reserved, 0 free
 */
export function hugepageAdvice(pages: number, pool = { total: readPoolFile(2048, 'nr_hugepages'), free: hugepagePoolFree(2048) }): string {
  const short = Math.max(pages - pool.free, 1);
  return `echo ${pool.total + short} | sudo tee /proc/sys/vm/nr_hugepages`;
}
