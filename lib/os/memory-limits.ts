// What this process can back with memory: physical memory (/proc/meminfo), the memory cgroup's
// limit (v1 hierarchical_memory_limit, v2 memory.max up the tree) and RLIMIT_AS. Checked before a
// request populates anything, so an absurd size is ENOMEM at once instead of pre-faulting until the
// OOM killer runs (and kills unrelated processes too).

import { readFileSync } from 'node:fs';
import { errnoError } from './errors';
import { hugepagePoolFree, HUGE_2M } from './hugetlb-pool';

/** The memory cgroup this process is charged to, when it has a limit. */
export interface CgroupMemory {
  version: 1 | 2;
  /** The cgroup's directory (under /sys/fs/cgroup). */
  dir: string;
  /** The effective limit in bytes (the smallest along the path to the root). */
  limit: number;
  /** Charged now (memory.usage_in_bytes / memory.current). */
  usage: number;
  /** Inactive page cache inside `usage` that reclaim can give back before the OOM killer runs. */
  reclaimable: number;
}

/** The figures a request is checked against, all in bytes. */
export interface MemoryLimits {
  /** MemTotal: physical memory (the hugetlb pool included). */
  memTotal: number;
  /** MemAvailable: what new 4 KiB / THP memory can get without swapping. */
  memAvailable: number;
  /** Free 2 MiB hugetlb pool memory a new mapping could reserve (not part of memAvailable). */
  hugetlbFree: number;
  /** null when the process is in no memory cgroup with a limit. */
  cgroup: CgroupMemory | null;
  /** RLIMIT_AS and the address space in use (VmSize); null when unlimited. */
  addressSpace: { limit: number; used: number } | null;
}

/**
 * Which memory a request may come from. Hugetlb pages are neither in MemAvailable nor charged to the
 * memory cgroup: 'only' is checked against MemTotal and RLIMIT_AS alone (the pool itself refuses
 * with ENOMEM), 'maybe' (hugetlb, else 4 KiB pages) like 'never' unless the pool can take it whole.
 */
export type HugetlbUse = 'never' | 'maybe' | 'only';

const NO_LIMIT = 2 ** 60; // cgroup v1 reports "no limit" as PAGE_COUNTER_MAX pages (~2^63)

function readText(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null;
  }
}

function meminfoBytes(text: string, key: string): number {
  const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text);
  return m ? Number(m[1]) * 1024 : 0;
}

function statValue(text: string, key: string): number {
  const m = new RegExp(`^${key} (\\d+)$`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

function cgroupV1(path: string): CgroupMemory | null {
  const dir = `/sys/fs/cgroup/memory${path === '/' ? '' : path}`;
  const stat = readText(`${dir}/memory.stat`);
  const usage = readText(`${dir}/memory.usage_in_bytes`);
  if (stat === null || usage === null) return null;
  // hierarchical_memory_limit is the smallest memory.limit_in_bytes from here to the root.
  const limit = statValue(stat, 'hierarchical_memory_limit');
  if (limit === 0 || limit >= NO_LIMIT) return null;
  return { version: 1, dir, limit, usage: Number(usage.trim()), reclaimable: statValue(stat, 'total_inactive_file') };
}

function cgroupV2(path: string): CgroupMemory | null {
  for (const root of ['/sys/fs/cgroup', '/sys/fs/cgroup/unified']) {
    const dir = `${root}${path === '/' ? '' : path}`;
    const current = readText(`${dir}/memory.current`);
    if (current === null) continue;
    // memory.max limits the cgroup and all below it: the effective limit is the smallest on the path.
    let limit = Infinity;
    for (let d = dir; d.length >= root.length; d = d.slice(0, d.lastIndexOf('/'))) {
      const max = readText(`${d}/memory.max`)?.trim();
      if (max !== undefined && max !== 'max') limit = Math.min(limit, Number(max));
      if (d === root) break;
    }
    if (limit === Infinity) return null;
    const stat = readText(`${dir}/memory.stat`) ?? '';
    return { version: 2, dir, limit, usage: Number(current.trim()), reclaimable: statValue(stat, 'inactive_file') };
  }
  return null;
}

/** The memory cgroup of this process (v1 memory controller, else v2), null when unlimited. */
function cgroupMemory(): CgroupMemory | null {
  const text = readText('/proc/self/cgroup') ?? '';
  const v1 = /^\d+:(?:[^:]*,)?memory(?:,[^:]*)?:(.*)$/m.exec(text);
  if (v1?.[1] !== undefined) return cgroupV1(v1[1]);
  const v2 = /^0::(.*)$/m.exec(text);
  return v2?.[1] !== undefined ? cgroupV2(v2[1]) : null;
}

function addressSpace(): { limit: number; used: number } | null {
  const m = /^Max address space\s+(\S+)/m.exec(readText('/proc/self/limits') ?? '');
  if (m?.[1] === undefined || m[1] === 'unlimited') return null;
  const vm = /^VmSize:\s+(\d+) kB/m.exec(readText('/proc/self/status') ?? '');
  return { limit: Number(m[1]), used: vm?.[1] === undefined ? 0 : Number(vm[1]) * 1024 };
}

/**
 * Reads the figures now (a few small /proc and /sys files).
 * @example const l = memoryLimits(); console.log(l.memAvailable, l.cgroup?.limit)
 */
export function memoryLimits(): MemoryLimits {
  const meminfo = readText('/proc/meminfo') ?? '';
  return {
    memTotal: meminfoBytes(meminfo, 'MemTotal'),
    memAvailable: meminfoBytes(meminfo, 'MemAvailable'),
    hugetlbFree: hugepagePoolFree(HUGE_2M / 1024) * HUGE_2M,
    cgroup: cgroupMemory(),
    addressSpace: addressSpace(),
  };
}

const mib = (n: number): string => `${(n / 2 ** 20).toFixed(n % 2 ** 20 === 0 ? 0 : 1)} MiB`;

/**
 * The first limit `bytes` exceeds, as a sentence naming the figures; null when it fits. The room
 * left under every limit is returned too (for the allocation budget below).
 */
function exceeded(bytes: number, l: MemoryLimits, hugetlb: HugetlbUse): { why: string | null; room: number } {
  const rooms: [number, string][] = [[l.memTotal, `physical memory (MemTotal ${mib(l.memTotal)})`]];
  // 'maybe' falls back to 4 KiB pages only when the pool cannot take the request whole.
  if (hugetlb === 'never' || (hugetlb === 'maybe' && bytes > l.hugetlbFree)) {
    rooms.push([l.memAvailable, `the memory available now (MemAvailable ${mib(l.memAvailable)}${hugetlb === 'maybe' ? `; the 2 MiB hugetlb pool has ${mib(l.hugetlbFree)} free` : ''})`]);
    const c = l.cgroup;
    if (c !== null) {
      const left = Math.max(0, c.limit - c.usage + c.reclaimable);
      const file = c.version === 1 ? 'memory.limit_in_bytes' : 'memory.max';
      rooms.push([left, `the memory cgroup's limit (${c.dir}: ${file} ${c.limit} = ${mib(c.limit)}, ${mib(c.usage)} in use, ${mib(c.reclaimable)} reclaimable: ${mib(left)} left)`]);
    }
  }
  if (l.addressSpace !== null) {
    const a = l.addressSpace;
    rooms.push([Math.max(0, a.limit - a.used), `RLIMIT_AS (${a.limit} = ${mib(a.limit)}, ${mib(a.used)} of address space in use: ${mib(Math.max(0, a.limit - a.used))} left)`]);
  }
  const room = Math.min(...rooms.map(([r]) => r));
  const hit = rooms.find(([r]) => bytes > r);
  return { why: hit === undefined ? null : hit[1], room };
}

// Requests since the figures were last read may use up to half of the room then left without
// reading them again: small allocations stay cheap, and a large one always re-reads.
let budget = 0;

/**
 * Throws ENOMEM (an errno-style error, syscall 'mmap') when `bytes` more memory cannot be backed:
 * more than physical memory, than is available now, than the memory cgroup allows, or than
 * RLIMIT_AS leaves. Called before anything is created or populated.
 * @example assertBackable(2 ** 46, 'Region.allocate(70368744177664)', 'maybe') // throws ENOMEM
 */
export function assertBackable(bytes: number, what: string, hugetlb: HugetlbUse): void {
  if (bytes <= budget) {
    budget -= bytes;
    return;
  }
  const limits = memoryLimits();
  const { why } = exceeded(bytes, limits, hugetlb);
  if (why !== null) {
    budget = 0;
    throw errnoError('ENOMEM', 'mmap', `${what} needs ${bytes} bytes (${mib(bytes)}), more than ${why}; nothing was allocated`);
  }
  // The budget is taken from the tightest room (no hugetlb), so any later request fits in it.
  budget = Math.max(0, Math.floor((exceeded(0, limits, 'never').room - bytes) / 2));
}

/**
 * A new Buffer of `length` bytes for a copy out of mapped memory, after checking that memory can back
 * it (ENOMEM before anything is allocated): a copy of a hugetlb Region or of a machine's RAM is
 * ordinary memory, which MemAvailable and the memory cgroup must have room for. Not from Node's
 * shared pool, so the copy's .buffer covers exactly `length` bytes.
 * @example const out = allocCopy(4096, 'region.read(0, 4096)');
 */
export function allocCopy(length: number, what: string): Buffer {
  assertBackable(length, what, 'never');
  return Buffer.allocUnsafeSlow(length);
}

/** Forgets the budget, so the next request re-reads the figures (for tests). */
export function resetMemoryBudget(): void {
  budget = 0;
}
