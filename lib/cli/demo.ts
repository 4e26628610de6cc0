// `dmamem demo`: a small driver played end to end on the default machine: an IOMMU device with a
// 32-bit mask, a 1 MiB buffer from dma_alloc_pages, an sg table, dma_common_mmap into a user VMA,
// bytes checked both ways, then everything freed and checked for leaks; then QEMU's edu device in a
// worker behind the IOMMU (lib/cli/demo-edu.ts): a DMA round trip and a provoked IOMMU fault; then
// bounce buffers on a machine with RAM above 4 GiB (lib/cli/demo-swiotlb.ts); then a non-coherent
// device whose driver misses a sync, caught by the ownership check (lib/cli/demo-noncoherent.ts).

import * as fs from 'node:fs';
import { defaultMachine, destroyDefaultMachine } from '../mm/default';
import { GFP_KERNEL, PAGE_SIZE } from '../mm/gfp';
import type { Machine } from '../mm/machine';
import { pgprot_cachemode } from '../mm/pgprot';
import { PFN_HIDDEN, PFN_NOT_PRESENT } from '../os/pagemap';
import { DMA_BIDIRECTIONAL, DMA_MAPPING_ERROR } from '../dma/constants';
import '../dma/device';
import { iommu_iova_to_phys } from '../dma/iommu';
import { dma_alloc_pages, dma_free_pages } from '../dma/mapping';
import { dma_common_get_sgtable, dma_common_mmap } from '../dma/ops_helpers';
import { SgTable, sgIterate, sg_free_table, sg_page } from '../dma/scatterlist';

import { eduDemoLines, playEduDemo, type EduDemoReport } from './demo-edu';
import { playSwiotlbDemo, swiotlbDemoLines, type SwiotlbDemoReport } from './demo-swiotlb';
import { noncoherentDemoLines, playNoncoherentDemo, type NoncoherentDemoReport } from './demo-noncoherent';
import { parseCommand, wrap, type CommandSpec } from './args';

const SIZE = 1024 * 1024;

export interface DemoStep {
  step: string;
  call: string;
  result: string;
  ok: boolean;
}

export interface DemoReport {
  ok: boolean;
  machine: { segments: { name: string; backing: string; reason: string }[] };
  device: { name: string; dmaMask: string; coherentDmaMask: string; iommu: boolean };
  buffer: {
    size: number; cpuAddr: string; iova: string; firstPfn: number; phys: string;
    hostPhys: string | null; hostContiguous: boolean | null; from: string; backing: string;
  } | null;
  sg: { length: number; offset: number; pfn: number }[];
  vma: { vmStart: string; pages: number; cacheMode: string; placedFor: string } | null;
  steps: DemoStep[];
  fallbacks: string[];
  leaks: { what: string; before: number; after: number }[];
}

function hex(v: number | bigint): string {
  return `0x${v.toString(16)}`;
}

/**
 * Whether two virtual pages are backed by the same host frame, as the demo's "same physical
 * memory" step reports it. Both pages must have been touched: a page with no frame (not present)
 * fails the check rather than passing it, and hidden PFNs (no CAP_SYS_ADMIN) pass only as
 * "cannot compare", never as equal.
 * @example samePhysicalPage(machine, vma.vm_start + 4096, cpuAddr + 4096).ok
 */
export function samePhysicalPage(machine: Machine, a: number, b: number): { result: string; ok: boolean; hidden: boolean } {
  const pa = machine.hostPfns(a, 1)[0]!;
  const pb = machine.hostPfns(b, 1)[0]!;
  if (pa === PFN_NOT_PRESENT || pb === PFN_NOT_PRESENT) {
    return { result: `page at ${hex(pa === PFN_NOT_PRESENT ? a : b)} is not present (never touched): nothing to compare`, ok: false, hidden: false };
  }
  if (pa === PFN_HIDDEN || pb === PFN_HIDDEN) return { result: 'PFNs hidden (no CAP_SYS_ADMIN): cannot compare', ok: true, hidden: true };
  return { result: `${hex(pa)} ${pa === pb ? '==' : '!='} ${hex(pb)}`, ok: pa === pb, hidden: false };
}

function dmamemMappings(): number {
  return fs.readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l.includes('memfd:dmamem') && !l.includes('dmamem:reserved')).length;
}

/** Plays the demo driver on `machine` and returns what happened. Frees everything it allocated. */
export function playDemo(machine: Machine): DemoReport {
  const steps: DemoStep[] = [];
  const step = (name: string, call: string, result: string, ok: boolean): boolean => {
    steps.push({ step: name, call, result, ok });
    return ok;
  };
  const fallbacks: string[] = [];
  for (const s of machine.stats().segments) {
    if (s.backing !== 'hugetlb-2M') fallbacks.push(`${s.name}: ${s.backing} (${s.reason})`);
  }
  const cma = machine.dma_contiguous_default_area;
  const before = {
    cma: cma?.available ?? 0,
    buddy: machine.stats().nodes.reduce((n, x) => n + x.freePages, 0),
    vmas: machine.stats().vmas,
  };

  const dev = machine.createDevice({ name: 'demo-nic', dmaMask: 32, coherentDmaMask: 32, iommu: true, debug: true });
  const report: DemoReport = {
    ok: false,
    machine: { segments: machine.stats().segments.map((s) => ({ name: s.name, backing: s.backing, reason: s.reason })) },
    device: { name: dev.name, dmaMask: hex(dev.dma_mask ?? 0n), coherentDmaMask: hex(dev.coherent_dma_mask), iommu: dev.iommu !== null },
    buffer: null, sg: [], vma: null, steps, fallbacks, leaks: [],
  };

  const handle = { value: 0n };
  const page = dma_alloc_pages(dev, SIZE, handle, DMA_BIDIRECTIONAL, GFP_KERNEL);
  if (!step('allocate', `dma_alloc_pages(dev, ${SIZE}, &handle, DMA_BIDIRECTIONAL, GFP_KERNEL)`,
    page === null ? 'NULL' : `page pfn ${hex(page.pfn)}, iova ${hex(handle.value)}`, page !== null && handle.value !== DMA_MAPPING_ERROR)) {
    dev.destroy();
    return report;
  }
  const cpuAddr = machine.page_address(page!);
  const seg = machine.segmentOfPfn(page!.pfn)!;
  if (seg.kind !== 'cma') fallbacks.push(`the buffer came from the buddy allocator, not CMA`);
  const hostPhys = machine.hostPhysAddr(page!);
  report.buffer = {
    size: SIZE, cpuAddr: hex(cpuAddr), iova: hex(handle.value), firstPfn: page!.pfn,
    phys: hex(BigInt(page!.pfn) * BigInt(PAGE_SIZE)), hostPhys: hostPhys === null ? null : hex(hostPhys),
    hostContiguous: machine.isHostContiguous(page!, SIZE / PAGE_SIZE), from: seg.name, backing: seg.backing,
  };
  if (hostPhys === null) fallbacks.push('host physical addresses are hidden (no CAP_SYS_ADMIN): PFNs not shown');

  const translated = iommu_iova_to_phys(dev, handle.value + 5000n);
  step('iommu', `iommu_iova_to_phys(dev, iova + 5000)`, hex(translated), translated === BigInt(page!.pfn) * BigInt(PAGE_SIZE) + 5000n);
  step('iommu mask', 'iova + size - 1 <= DMA_BIT_MASK(32)', hex(handle.value + BigInt(SIZE) - 1n), handle.value + BigInt(SIZE) - 1n <= 0xffffffffn);

  const sgt = new SgTable();
  const sgRet = dma_common_get_sgtable(dev, sgt, cpuAddr, handle.value, SIZE, 0);
  for (const [sg] of sgIterate(sgt.sgl, sgt.orig_nents)) report.sg.push({ length: sg.length, offset: sg.offset, pfn: sg_page(sg)?.pfn ?? -1 });
  step('sg table', `dma_common_get_sgtable(dev, &sgt, cpu_addr, iova, ${SIZE}, 0)`, `${sgRet}, ${sgt.orig_nents} entry of ${report.sg[0]?.length ?? 0} bytes`, sgRet === 0 && sgt.orig_nents === 1);

  const vma = machine.createVma(SIZE);
  const mmapRet = dma_common_mmap(dev, vma, cpuAddr, handle.value, SIZE, 0);
  report.vma = { vmStart: hex(vma.vm_start), pages: SIZE / PAGE_SIZE, cacheMode: pgprot_cachemode(vma.vm_page_prot), placedFor: seg.mapGranule > PAGE_SIZE ? 'hugetlb: placed congruent with the buffer, mapped in whole 2 MiB pages' : '4 KiB pages' };
  if (step('user mapping', `dma_common_mmap(dev, vma, cpu_addr, iova, ${SIZE}, 0)`, String(mmapRet), mmapRet === 0)) {
    const user = vma.view();
    const kernel = machine.view(cpuAddr, SIZE);
    user.write('hello from user space', 4096, 'latin1');
    const back = kernel.toString('latin1', 4096, 4096 + 21);
    step('write through VMA', 'read back through the kernel address', JSON.stringify(back), back === 'hello from user space');
    kernel[SIZE - 1] = 0xa5;
    step('write through kernel address', 'read back through the VMA', hex(user[SIZE - 1]!), user[SIZE - 1] === 0xa5);
    // Compare the pages the bytes above went through (both touched, so both have a frame).
    const first = samePhysicalPage(machine, vma.vm_start + PAGE_SIZE, cpuAddr + PAGE_SIZE);
    const last = samePhysicalPage(machine, vma.vm_start + SIZE - PAGE_SIZE, cpuAddr + SIZE - PAGE_SIZE);
    step('same physical memory', 'pagemap PFN of VMA pages 1 and 255 == of cpu_addr pages 1 and 255',
      `${first.result}; ${last.result}`, first.ok && last.ok);
    if (first.hidden) fallbacks.push('the same-physical-memory step could not compare PFNs (hidden without CAP_SYS_ADMIN)');
  }

  vma.unmap();
  sg_free_table(sgt);
  dma_free_pages(dev, SIZE, page!, handle.value, DMA_BIDIRECTIONAL);
  const pending = dev.debug.activeEntries();
  dev.destroy();
  step('free', 'vma.unmap(); sg_free_table(); dma_free_pages(); device teardown', `${pending} DMA-API debug entries pending, ${dev.debug.errorCount} misuse reports`, pending === 0 && dev.debug.errorCount === 0);

  const after = {
    cma: cma?.available ?? 0,
    buddy: machine.stats().nodes.reduce((n, x) => n + x.freePages, 0),
    vmas: machine.stats().vmas,
  };
  report.leaks = [
    { what: 'CMA pages available', before: before.cma, after: after.cma },
    { what: 'buddy pages free', before: before.buddy, after: after.buddy },
    { what: 'user VMAs', before: before.vmas, after: after.vmas },
    { what: 'IOMMU pages mapped', before: 0, after: dev.iommu?.stats().mappedPages ?? 0 },
  ];
  step('no leaks', 'allocator and IOMMU counters back to their start', report.leaks.every((l) => l.before === l.after) ? 'all equal' : 'DIFFERENT', report.leaks.every((l) => l.before === l.after));
  report.ok = steps.every((s) => s.ok);
  return report;
}

function printTable(r: DemoReport, mappingsLeft: number, edu: EduDemoReport | null, tlb: SwiotlbDemoReport | null, nc: NoncoherentDemoReport | null): void {
  const out: string[] = [];
  out.push('dmamem demo: a driver on the default machine\n');
  out.push('Machine memory');
  // A fallback's reason is printed once, under "Fallbacks taken".
  for (const s of r.machine.segments) out.push(`  ${s.name.padEnd(24)} ${s.backing.padEnd(11)} ${s.backing === 'hugetlb-2M' ? s.reason : '(a fallback: see below)'}`);
  out.push(`\nDevice ${r.device.name}: dma_mask ${r.device.dmaMask}, coherent_dma_mask ${r.device.coherentDmaMask}, behind an IOMMU: ${r.device.iommu ? 'yes' : 'no'}`);
  if (r.buffer !== null) {
    const b = r.buffer;
    out.push(`\nBuffer: ${b.size} bytes from ${b.from} (${b.backing})`);
    out.push(`  kernel address ${b.cpuAddr}   IOVA ${b.iova}   first PFN ${hex(b.firstPfn)} (phys ${b.phys})`);
    out.push(`  host physical ${b.hostPhys ?? 'hidden (needs CAP_SYS_ADMIN)'}   host-contiguous: ${b.hostContiguous === null ? 'unknown' : b.hostContiguous ? 'yes' : 'no'}`);
  }
  if (r.sg.length > 0) out.push(`  sg table: ${r.sg.map((e) => `[pfn ${hex(e.pfn)} +${e.offset}, ${e.length} bytes]`).join(' ')}`);
  if (r.vma !== null) out.push(`  user VMA at ${r.vma.vmStart}, ${r.vma.pages} pages, cache mode ${r.vma.cacheMode}, ${r.vma.placedFor}`);
  out.push('\nSteps');
  for (const s of r.steps) out.push(`  ${s.ok ? 'ok  ' : 'FAIL'} ${s.step.padEnd(30)} ${s.call}\n       -> ${s.result}`);
  if (edu !== null) out.push(...eduDemoLines(edu));
  if (tlb !== null) out.push(...swiotlbDemoLines(tlb));
  if (nc !== null) out.push(...noncoherentDemoLines(nc));
  out.push('\nFallbacks taken');
  if (r.fallbacks.length === 0) out.push('  none');
  for (const f of r.fallbacks) out.push(`  ${f}`);
  out.push('\nLeak check');
  for (const l of r.leaks) out.push(`  ${l.what.padEnd(22)} before ${String(l.before).padStart(6)}  after ${String(l.after).padStart(6)}`);
  out.push(`  dmamem mappings after machine teardown: ${mappingsLeft}`);
  out.push(`\n${r.ok && (edu?.ok ?? false) && (tlb?.ok ?? false) && (nc?.ok ?? false) ? 'All steps passed.' : 'Some steps FAILED.'}`);
  // At most 100 columns: a longer line continues, indented, on the next.
  const lines = out.join('\n').split('\n').flatMap((l) => wrap(l, 100, `${/^ */.exec(l)![0]}    `));
  process.stdout.write(lines.join('\n') + '\n');
}

const DEMO: CommandSpec = {
  command: 'demo',
  summary: 'Plays a small driver end to end on the default machine (IOMMU device, dma_alloc_pages, sg table,\nuser mapping), then QEMU\'s edu device in a worker, swiotlb bouncing, and a non-coherent device\nwhose driver misses a sync (caught by the ownership check); checks every step and leaks.',
  options: { json: { type: 'boolean', help: 'print the report as JSON' } },
};

export async function runDemo(args: string[]): Promise<number> {
  const p = parseCommand(DEMO, args);
  if ('exit' in p) return p.exit;
  const json = p.values.json === true;
  let report: DemoReport;
  let edu: EduDemoReport | null = null;
  try {
    report = playDemo(defaultMachine());
    edu = await playEduDemo(defaultMachine());
  } finally {
    destroyDefaultMachine(); // also when a step throws: the error is reported with nothing left mapped
  }
  const swiotlb = playSwiotlbDemo();
  const noncoherent = playNoncoherentDemo();
  const mappingsLeft = dmamemMappings();
  const ok = report.ok && edu.ok && swiotlb.ok && noncoherent.ok && mappingsLeft === 0;
  if (json) process.stdout.write(JSON.stringify({ ...report, ok, edu, swiotlb, noncoherent, mappingsLeftAfterTeardown: mappingsLeft }, null, 2) + '\n');
  else printTable(report, mappingsLeft, edu, swiotlb, noncoherent);
  return ok ? 0 : 1;
}
