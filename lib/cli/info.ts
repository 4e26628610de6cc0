// `dmamem info`: what this machine offers for real memory, and the exact command that enables each
// missing piece. Human-readable by default, `--json` for scripts.

import { explainMissing, systemInfo, type SystemInfo } from '../os/sysinfo';
import { parseCommand, type CommandSpec } from './args';

const INFO: CommandSpec = {
  command: 'info',
  summary: 'Explains page sizes, hugepage pools, THP, physical-address visibility, RLIMIT_MEMLOCK, NUMA and\nIOMMU, and prints the command that enables each missing piece.',
  options: { json: { type: 'boolean', help: 'print the facts as JSON' } },
};

function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${Number.isInteger(v) ? v : v.toFixed(1)} ${units[i]}`;
}

function human(info: SystemInfo): string {
  const yes = (b: boolean): string => (b ? 'yes' : 'no');
  const lines: string[] = [];
  lines.push('dmamem: memory facilities of this machine', '');
  lines.push(`Base page size:        ${bytes(info.pageSize)}`);
  lines.push('Hugepage pools:');
  if (info.hugepagePools.length === 0) lines.push('  (none: the kernel has no hugetlb support)');
  for (const p of info.hugepagePools) {
    lines.push(`  ${bytes(p.sizeKiB * 1024).padEnd(8)} ${p.free}/${p.total} free (reserved ${p.reserved}, surplus ${p.surplus})`);
  }
  lines.push(`hugetlbfs mounts:      ${info.hugetlbfsMounts.length ? info.hugetlbfsMounts.join(', ') : 'none (not needed: dmamem uses memfd_create(MFD_HUGETLB))'}`);
  lines.push(`THP (anonymous):       ${info.thp.anonymous ?? 'unavailable'}`);
  lines.push(`THP (shmem / memfd):   ${info.thp.shmem ?? 'unavailable'}`);
  lines.push(`Physical addresses:    ${info.pfnVisible ? 'visible (CAP_SYS_ADMIN)' : 'hidden (pagemap PFNs read as 0 without CAP_SYS_ADMIN)'}`);
  const lim = (n: number | null): string => (n === null ? 'unlimited' : bytes(n));
  lines.push(`RLIMIT_MEMLOCK:        soft ${lim(info.memlock.soft)}, hard ${lim(info.memlock.hard)}; CAP_IPC_LOCK: ${yes(info.capabilities.CAP_IPC_LOCK)}`);
  lines.push('NUMA nodes:');
  for (const n of info.numaNodes) lines.push(`  node ${n.id}: ${bytes(n.memTotal)} total, ${bytes(n.memFree)} free`);
  lines.push(`IOMMU groups (host):   ${info.iommuGroups}${info.iommuGroups === 0 ? ' (information only: dmamem\'s IOMMU is a model and needs no host IOMMU)' : ''}`);
  const missing = explainMissing(info);
  lines.push('');
  if (missing.length === 0) {
    lines.push('Nothing is missing.');
  } else {
    lines.push('Missing, and how to enable it:');
    for (const m of missing) lines.push(`  - ${m.what}: ${m.why}`, `      ${m.command}`);
  }
  return `${lines.join('\n')}\n`;
}

/**
 * Runs `dmamem info` with the arguments after `info`; returns the exit code (non-zero only on errors).
 * @example process.exitCode = runInfo(process.argv.slice(3));
 */
export function runInfo(args: string[]): number {
  const p = parseCommand(INFO, args);
  if ('exit' in p) return p.exit;
  const json = p.values.json === true;
  try {
    const info = systemInfo();
    if (json) process.stdout.write(`${JSON.stringify({ ...info, missing: explainMissing(info) }, null, 2)}\n`);
    else process.stdout.write(human(info));
    return 0;
  } catch (err) {
    process.stderr.write(`dmamem info: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
}
