// What this machine offers for real memory, read from /proc and /sys (plus the page size and
// RLIMIT_MEMLOCK from the addon), and the exact command that enables each missing capability.

import { readFileSync, readdirSync } from 'node:fs';
import type { Native } from '../native';
import { effectiveCapabilities, pfnVisible } from './capabilities';
import { hugepageAdvice } from './hugetlb-pool';

/** What `dmamem demo` needs of the pool: the default machine's 64 MiB CMA area in 2 MiB pages. */
export const DEFAULT_HUGEPAGES_WANTED = 32;

/** One hugetlb pool (/sys/kernel/mm/hugepages/hugepages-<size>kB). */
export interface HugepagePool {
  sizeKiB: number;
  total: number;
  free: number;
  reserved: number;
  surplus: number;
}

/** One NUMA node's memory in bytes. */
export interface NumaNode {
  id: number;
  memTotal: number;
  memFree: number;
}

export interface SystemInfo {
  pageSize: number;
  hugepagePools: HugepagePool[];
  /** The selected THP mode (the bracketed word), null where THP is absent. */
  thp: { anonymous: string | null; shmem: string | null };
  /** RLIMIT_MEMLOCK in bytes; null = unlimited. */
  memlock: { soft: number | null; hard: number | null };
  pfnVisible: boolean;
  capabilities: { CAP_IPC_LOCK: boolean; CAP_SYS_ADMIN: boolean };
  numaNodes: NumaNode[];
  /** Number of entries in /sys/kernel/iommu_groups (0: no IOMMU, or it is off). */
  iommuGroups: number;
  /** Mount points of hugetlbfs. */
  hugetlbfsMounts: string[];
}

/** A capability the program may want, missing here, and how to get it. */
export interface MissingCapability {
  what: string;
  why: string;
  command: string;
}

function read(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null;
  }
}

function readInt(path: string): number {
  return Number.parseInt(read(path) ?? '0', 10) || 0;
}

/**
 * The selected mode of anonymous ('enabled') or shmem ('shmem_enabled') THP, e.g. 'madvise'.
 * @example thpMode('shmem') // 'never'
 */
export function thpMode(kind: 'anonymous' | 'shmem'): string | null {
  const text = read(`/sys/kernel/mm/transparent_hugepage/${kind === 'anonymous' ? 'enabled' : 'shmem_enabled'}`);
  return text === null ? null : (/\[([^\]]+)\]/.exec(text)?.[1] ?? null);
}

function hugepagePools(): HugepagePool[] {
  const dir = '/sys/kernel/mm/hugepages';
  let names: string[] = [];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  return names
    .map((n) => /^hugepages-(\d+)kB$/.exec(n))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => {
      const p = `${dir}/${m[0]}`;
      return {
        sizeKiB: Number(m[1]),
        total: readInt(`${p}/nr_hugepages`),
        free: readInt(`${p}/free_hugepages`),
        reserved: readInt(`${p}/resv_hugepages`),
        surplus: readInt(`${p}/surplus_hugepages`),
      };
    })
    .sort((a, b) => a.sizeKiB - b.sizeKiB);
}

function meminfoKiB(text: string, key: string): number {
  const m = new RegExp(`${key}:\\s+(\\d+) kB`).exec(text);
  return m?.[1] ? Number(m[1]) * 1024 : 0;
}

function numaNodes(): NumaNode[] {
  const dir = '/sys/devices/system/node';
  let ids: number[] = [];
  try {
    ids = readdirSync(dir).flatMap((n) => (/^node(\d+)$/.exec(n) ? [Number(n.slice(4))] : []));
  } catch {
    ids = [];
  }
  if (ids.length === 0) {
    // No NUMA sysfs (CONFIG_NUMA off): the whole machine is node 0.
    const text = read('/proc/meminfo') ?? '';
    return [{ id: 0, memTotal: meminfoKiB(text, 'MemTotal'), memFree: meminfoKiB(text, 'MemFree') }];
  }
  return ids
    .sort((a, b) => a - b)
    .map((id) => {
      const text = read(`${dir}/node${id}/meminfo`) ?? '';
      return { id, memTotal: meminfoKiB(text, `Node ${id} MemTotal`), memFree: meminfoKiB(text, `Node ${id} MemFree`) };
    });
}

function countEntries(dir: string): number {
  try {
    return readdirSync(dir).length;
  } catch {
    return 0;
  }
}

function hugetlbfsMounts(): string[] {
  return (read('/proc/self/mounts') ?? '')
    .split('\n')
    .map((l) => l.split(' '))
    .filter((f) => f[2] === 'hugetlbfs' && f[1] !== undefined)
    .map((f) => f[1]!);
}

/** The base page size on x86-64 (dmamem's one architecture), when the addon cannot say. */
const X86_64_PAGE_SIZE = 4096;

/** The addon if it loads; null if not, so that `dmamem info` works without it (it reads /proc and /sys). */
function loadedAddon(): Native | null {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return (require('../native') as typeof import('../native')).native;
  } catch {
    return null;
  }
}

/** RLIMIT_MEMLOCK [soft, hard] from /proc/self/limits, -1 for unlimited (as the addon reports it). */
function memlockFromProc(): [number, number] {
  try {
    const m = /^Max locked memory\s+(\S+)\s+(\S+)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    const value = (v: string | undefined): number => (v === undefined || v === 'unlimited' ? -1 : Number(v));
    return [value(m?.[1]), value(m?.[2])];
  } catch {
    return [-1, -1];
  }
}

/**
 * A snapshot of the memory facilities of this machine and process.
 * @example const info = systemInfo(); info.hugepagePools[0]?.free
 */
export function systemInfo(): SystemInfo {
  const caps = effectiveCapabilities();
  const addon = loadedAddon();
  const [soft, hard] = addon?.memlockLimit() ?? memlockFromProc();
  return {
    pageSize: addon?.pageSize ?? X86_64_PAGE_SIZE,
    hugepagePools: hugepagePools(),
    thp: { anonymous: thpMode('anonymous'), shmem: thpMode('shmem') },
    memlock: { soft: soft < 0 ? null : soft, hard: hard < 0 ? null : hard },
    pfnVisible: pfnVisible(),
    capabilities: { CAP_IPC_LOCK: (caps & (1n << 14n)) !== 0n, CAP_SYS_ADMIN: (caps & (1n << 21n)) !== 0n },
    numaNodes: numaNodes(),
    iommuGroups: countEntries('/sys/kernel/iommu_groups'),
    hugetlbfsMounts: hugetlbfsMounts(),
  };
}

/**
 * For each facility dmamem can use but this machine lacks: what it is, why it matters, and the
 * exact command that enables it.
 * @example for (const m of explainMissing(systemInfo())) console.log(m.command)
 */
export function explainMissing(info: SystemInfo, hugepagesWanted = DEFAULT_HUGEPAGES_WANTED): MissingCapability[] {
  const out: MissingCapability[] = [];
  const pool2M = info.hugepagePools.find((p) => p.sizeKiB === 2048);
  const room = pool2M === undefined ? 0 : pool2M.free - pool2M.reserved;
  if (pool2M === undefined) {
    out.push({ what: '2 MiB hugetlb pages', why: 'the kernel has no 2 MiB hugetlb pool (CONFIG_HUGETLBFS off?)', command: 'boot a kernel with CONFIG_HUGETLBFS=y' });
  } else if (room < hugepagesWanted) {
    out.push({
      what: '2 MiB hugetlb pages',
      why: `the pool can reserve ${Math.max(room, 0)} pages (${pool2M.free} free, ${pool2M.reserved} reserved of ${pool2M.total}), ` +
        `${hugepagesWanted} wanted; hugepages 'auto' falls back to 4 KiB pages, 'require' fails`,
      command: hugepageAdvice(hugepagesWanted, { total: pool2M.total, free: Math.max(room, 0) }),
    });
  }
  if (info.thp.shmem !== null && ['never', 'deny'].includes(info.thp.shmem)) {
    out.push({
      what: 'THP for memfd (shmem) memory',
      why: `shmem_enabled is '${info.thp.shmem}', so memfd regions never get transparent huge pages`,
      command: 'echo advise | sudo tee /sys/kernel/mm/transparent_hugepage/shmem_enabled',
    });
  }
  if (info.thp.anonymous === 'never') {
    out.push({ what: 'THP for anonymous memory', why: "enabled is 'never'", command: 'echo madvise | sudo tee /sys/kernel/mm/transparent_hugepage/enabled' });
  }
  if (!info.pfnVisible) {
    out.push({
      what: 'physical addresses (PFNs)',
      why: 'pagemap hides PFNs without CAP_SYS_ADMIN. Run the one program as root, or give the capability to a ' +
        'copy of node kept for it: never to the system node binary, which would give CAP_SYS_ADMIN to every script it runs',
      command: 'cp "$(command -v node)" ./node-pfn && sudo setcap cap_sys_admin+ep ./node-pfn   # then: ./node-pfn app.js',
    });
  }
  const lockable = info.memlock.soft === null || info.capabilities.CAP_IPC_LOCK;
  if (!lockable && (info.memlock.soft ?? 0) < 64 * 1024 * 1024) {
    out.push({
      what: 'locking memory (mlock)',
      why: `RLIMIT_MEMLOCK is ${info.memlock.soft} bytes and CAP_IPC_LOCK is missing`,
      command: 'ulimit -l unlimited   # as root, or set memlock in /etc/security/limits.conf',
    });
  }
  // The host's IOMMU is information, not something missing: dmamem's IOMMU is a model in the
  // machine's own memory and needs none (dmamem info shows the group count).
  return out;
}
