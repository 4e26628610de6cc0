// `dmamem demo`, the bounce-buffer section: a machine whose RAM lies above 4 GiB gets a swiotlb pool
// (pci_swiotlb_detect), and a 32-bit device without an IOMMU reaches a buffer only through it. The
// device reads and writes by DMA (busMaster), and the copies happen where the kernel makes them: at
// map for DMA_TO_DEVICE, at unmap for DMA_FROM_DEVICE.

import { Machine } from '../mm/machine';
import { GFP_KERNEL, PAGE_SIZE } from '../mm/gfp';
import { DMA_FROM_DEVICE, DMA_TO_DEVICE } from '../dma/constants';
import '../dma/device';
import { dma_map_single, dma_mapping_error, dma_unmap_single } from '../dma/mapping';
import { is_swiotlb_buffer } from '../dma/swiotlb';
import { busMaster } from '../devices/bus_master';
import { MEMTX_OK } from '../devices/bus_engine';
import type { DemoStep } from './demo';

const LEN = PAGE_SIZE;

export interface SwiotlbDemoReport {
  ok: boolean;
  machine: { physBase: string; poolStart: string; poolSlots: number };
  steps: DemoStep[];
  /** The machine's swiotlb counters after both transfers (machine.stats().swiotlb). */
  counters: { bounces: number; bytesBounced: number; maxUsed: number; usedAfter: number; mappedAfter: number } | null;
}

const hex = (v: number | bigint): string => `0x${v.toString(16)}`;

/** Plays the bounce-buffer section on a machine of its own, destroyed before it returns. */
export function playSwiotlbDemo(): SwiotlbDemoReport {
  const steps: DemoStep[] = [];
  const step = (name: string, call: string, result: string, ok: boolean): boolean => {
    steps.push({ step: name, call, result, ok });
    return ok;
  };
  const m = new Machine({ name: 'demo-high', physBase: 2 ** 32, ramPerNode: 4 << 20, cmaSize: 0, hugepages: 'off', swiotlbSize: 256 << 10, emitWarnings: false });
  const report: SwiotlbDemoReport = { ok: false, machine: { physBase: hex(m.physBase), poolStart: '', poolSlots: 0 }, steps, counters: null };
  try {
    const tlb = m.stats().swiotlb;
    if (!step('swiotlb pool', "new Machine({ physBase: 4 GiB, swiotlb: 'auto' })", tlb === null ? 'no pool' : `${tlb.nslabs} slots of 2 KiB at ${hex(tlb.physStart)}`, tlb !== null)) return report;
    report.machine.poolStart = hex(tlb!.physStart);
    report.machine.poolSlots = tlb!.nslabs;
    const dev = m.createDevice({ name: 'legacy-nic', dmaMask: 32 });
    const bus = busMaster(dev);
    const page = m.alloc_pages(GFP_KERNEL, 0)!;
    const buf = m.page_address(page);
    const cpu = m.view(buf, LEN);
    cpu.fill(0x5a);

    const tx = dma_map_single(dev, buf, LEN, DMA_TO_DEVICE);
    const bounced = dma_mapping_error(dev, tx) === 0 && tx + BigInt(LEN) <= 2n ** 32n && is_swiotlb_buffer(dev, tx);
    step('map to device', 'dma_map_single(dev, buf, 4096, DMA_TO_DEVICE)', `bus address ${hex(tx)} (buffer at phys ${hex(page.phys)})`, bounced);
    const seen = new Uint8Array(LEN);
    const read = bus.read(tx, seen);
    step('device reads', 'bus read of 4096 bytes at the bus address', read === MEMTX_OK ? `${seen.every((b) => b === 0x5a) ? 'the bytes written before the map (copied in at map)' : 'other bytes'}` : `MEMTX ${read}`,
      read === MEMTX_OK && seen.every((b) => b === 0x5a));
    dma_unmap_single(dev, tx, LEN, DMA_TO_DEVICE);

    const rx = dma_map_single(dev, buf, LEN, DMA_FROM_DEVICE);
    const wrote = dma_mapping_error(dev, rx) === 0 ? bus.fill(rx, 0xc3, LEN) : -1;
    const beforeUnmap = cpu[0];
    dma_unmap_single(dev, rx, LEN, DMA_FROM_DEVICE);
    const afterUnmap = cpu[0];
    step('device writes', 'bus fill of 0xc3, then dma_unmap_single(DMA_FROM_DEVICE)',
      `CPU reads ${hex(beforeUnmap!)} before the unmap, ${hex(afterUnmap!)} after (copied back at unmap)`,
      wrote === MEMTX_OK && beforeUnmap === 0x5a && afterUnmap === 0xc3);
    m.__free_pages(page, 0);
    dev.destroy();
    const s = m.stats().swiotlb!;
    report.counters = { bounces: s.bounces, bytesBounced: s.bytesBounced, maxUsed: s.maxUsed, usedAfter: s.used, mappedAfter: s.mapped };
    step('pool counters', 'machine.stats().swiotlb', `${s.bounces} copies of ${s.bytesBounced} bytes in all (in at each map, whatever the direction, as swiotlb_tbl_map_single does; out at the DMA_FROM_DEVICE unmap), at most ${s.maxUsed} slots in use, ${s.used} now`, s.used === 0 && s.mapped === 0 && s.bytesBounced >= 2 * LEN);
    report.ok = steps.every((x) => x.ok);
    return report;
  } finally {
    m.destroy();
  }
}

/** The section's lines for the demo's table. */
export function swiotlbDemoLines(r: SwiotlbDemoReport): string[] {
  const out = [`\nBounce buffers (swiotlb): RAM at ${r.machine.physBase}, above 4 GiB; a 32-bit device without an IOMMU`];
  if (r.machine.poolSlots > 0) out.push(`  pool of ${r.machine.poolSlots} slots of 2 KiB at ${r.machine.poolStart}, below 4 GiB`);
  out.push('  Steps');
  for (const s of r.steps) out.push(`    ${s.ok ? 'ok  ' : 'FAIL'} ${s.step.padEnd(28)} ${s.call}\n         -> ${s.result}`);
  return out;
}
