// `dmamem demo`, the non-coherent section: a device that does not snoop the CPU's caches (arm64,
// RISC-V) receives a packet. A driver that forgets dma_sync_single_for_cpu reads stale bytes, and
// its write into a buffer the device owns is caught by the ownership check at unmap; the fixed
// driver syncs and reads the packet. Played on a machine of its own, destroyed before returning.

import * as path from 'node:path';
import { Machine } from '../mm/machine';
import { GFP_KERNEL } from '../mm/gfp';
import { kfree } from '../mm/slab';
import { DMA_FROM_DEVICE } from '../dma/constants';
import '../dma/device';
import { dma_cache_stats } from '../dma/cache';
import { dma_map_single, dma_mapping_error, dma_unmap_single } from '../dma/mapping';
import { CHECK_CPU_WROTE_DEVICE_OWNED } from '../dma/ownership';
import { dma_sync_single_for_cpu } from '../dma/sync';
import { busMaster } from '../devices/bus_master';
import { MEMTX_OK } from '../devices/bus_engine';
import type { DemoStep } from './demo';

/** One Ethernet frame's payload. */
const LEN = 1500;
/** What the device writes: the packet. */
const PACKET = 0xc3;
/** What the buggy driver writes when it recycles the buffer (slab's POISON_FREE): it must differ
 *  from the zeroes already there, since the check sees a write by the bytes it changed. */
const RECYCLE = 0x6b;

export interface NoncoherentDemoReport {
  ok: boolean;
  device: { name: string; coherent: boolean; iommu: boolean; ownership: string };
  /** What the CPU read after the device wrote: the buggy path (no sync), then the fixed one. */
  reads: { withoutSync: string; withSync: string } | null;
  /**
   * The ownership check's report at the buggy unmap (check 40): its message, the first line of the
   * mapping's stack ("Mapped at") and the first frame outside lib/dma (the driver's call).
   */
  ownership: { check: number; message: string; mappedAt: string; calledFrom: string } | null;
  steps: DemoStep[];
  /** dma_cache_stats of the section's machine once both paths are done. */
  counters: { writtenBack: number; refilled: number; discarded: number } | null;
}

const hex = (v: number | bigint): string => `0x${v.toString(16)}`;

/** The bytes of `v` as '0x00' when all are equal, else 'mixed (first 0x.., last 0x..)'. */
function bytesSeen(v: Uint8Array): string {
  const first = v[0]!;
  return v.every((b) => b === first) ? `0x${first.toString(16).padStart(2, '0')}` : `mixed (first ${hex(first)}, last ${hex(v[v.length - 1]!)})`;
}

/** A stack frame with the package's own folder cut off, so that it fits the table. */
function shortFrame(frame: string): string {
  const root = path.resolve(__dirname, '..', '..', '..') + path.sep;
  return frame.split(root).join('');
}

/** Plays the non-coherent section on a machine of its own, destroyed before it returns. */
export function playNoncoherentDemo(): NoncoherentDemoReport {
  const steps: DemoStep[] = [];
  const step = (name: string, call: string, result: string, ok: boolean): boolean => {
    steps.push({ step: name, call, result, ok });
    return ok;
  };
  const m = new Machine({ name: 'demo-noncoherent', ramPerNode: 4 << 20, cmaSize: 0, hugepages: 'off', emitWarnings: false });
  try {
    const dev = m.createDevice({ name: 'arm-nic', dmaMask: 64, coherent: false, ownership: 'report' });
    dev.debug.maxPrinted = 0; // the report is shown in the table, not as a process warning
    const report: NoncoherentDemoReport = {
      ok: false, device: { name: dev.name, coherent: dev.dma_coherent, iommu: dev.iommu !== null, ownership: dev.ownership },
      reads: null, ownership: null, steps, counters: null,
    };
    const bus = busMaster(dev);
    const buf = m.kmalloc(LEN, GFP_KERNEL);
    if (!step('allocate', `kmalloc(${LEN}, GFP_KERNEL), zeroed by the CPU`, buf === null ? 'NULL' : `buf at ${hex(buf)}`, buf !== null)) {
      dev.destroy();
      return report;
    }
    try {
      const cpu = m.view(buf!, LEN);
      cpu.fill(0);

      // The buggy RX path.
      const h1 = dma_map_single(dev, buf!, LEN, DMA_FROM_DEVICE);
      if (!step('map (buggy path)', `dma_map_single(dev, buf, ${LEN}, DMA_FROM_DEVICE)`, `bus address ${hex(h1)}`, dma_mapping_error(dev, h1) === 0)) return report;
      const wrote1 = bus.fill(h1, PACKET, LEN);
      const stale = bytesSeen(cpu);
      step('no sync_for_cpu: stale read', `device writes ${hex(PACKET)} (bus fill); the driver reads without a sync`,
        `CPU reads ${stale}: its cache, not what the device wrote to RAM (as on arm64)`, wrote1 === MEMTX_OK && stale === '0x00');
      cpu.fill(RECYCLE);
      const before = dev.debug.reports.length;
      dma_unmap_single(dev, h1, LEN, DMA_FROM_DEVICE);
      const found = dev.debug.reports.slice(before);
      const r = found[0];
      const frames = r?.entry?.stack.split('\n') ?? [];
      const frame = frames[0] ?? '';
      const dmaLayer = path.resolve(__dirname, '..', 'dma') + path.sep;
      const caller = frames.find((f) => !f.includes(dmaLayer)) ?? '';
      if (r !== undefined) report.ownership = { check: r.check, message: r.message, mappedAt: frame, calledFrom: caller };
      step('recycled, device owns it', `memset(buf, ${hex(RECYCLE)}, ${LEN}); dma_unmap_single(FROM_DEVICE)`,
        r === undefined ? 'no report' : `check ${r.check}: ${r.message}\n         Mapped at: ${shortFrame(frame)}` +
          `\n                    ... ${shortFrame(caller)}`,
        found.length === 1 && r!.check === CHECK_CPU_WROTE_DEVICE_OWNED && frame !== '');

      // The fixed RX path: the CPU owns the buffer again, so it may clear it.
      cpu.fill(0);
      const h2 = dma_map_single(dev, buf!, LEN, DMA_FROM_DEVICE);
      const mapped2 = dma_mapping_error(dev, h2) === 0;
      const wrote2 = mapped2 ? bus.fill(h2, PACKET, LEN) : -1;
      if (mapped2) dma_sync_single_for_cpu(dev, h2, LEN, DMA_FROM_DEVICE);
      const fresh = bytesSeen(cpu);
      step('sync_for_cpu: the packet', `map; device writes ${hex(PACKET)}; dma_sync_single_for_cpu; read`,
        `CPU reads ${fresh}`, wrote2 === MEMTX_OK && fresh === `0x${PACKET.toString(16)}`);
      if (mapped2) dma_unmap_single(dev, h2, LEN, DMA_FROM_DEVICE);
      const later = dev.debug.reports.length - before - found.length;
      step('unmap, no new report', `dma_unmap_single(dev, handle, ${LEN}, DMA_FROM_DEVICE)`, `${later} new DMA-API reports`, mapped2 && later === 0);
      report.reads = { withoutSync: stale, withSync: fresh };
    } finally {
      kfree(buf!);
      dev.destroy();
    }
    const s = dma_cache_stats(m);
    report.counters = { writtenBack: s.writtenBack, refilled: s.refilled, discarded: s.discarded };
    step('cache counters', 'dma_cache_stats(machine)',
      `${s.writtenBack} lines written back (map: clean), ${s.refilled} refilled (sync_for_cpu, unmap: invalidate), ` +
      `${s.discarded} dirty lines discarded (the recycling write, lost at the buggy unmap)`,
      s.refilled > 0 && s.writtenBack > 0 && s.discarded > 0);
    report.ok = steps.every((x) => x.ok);
    return report;
  } finally {
    m.destroy();
  }
}

/** The section's lines for the demo's table. */
export function noncoherentDemoLines(r: NoncoherentDemoReport): string[] {
  const out = [`\nNon-coherent device ${r.device.name}: no IOMMU, CPU caches not snooped, ownership checking '${r.device.ownership}'`];
  out.push('  Steps');
  for (const s of r.steps) out.push(`    ${s.ok ? 'ok  ' : 'FAIL'} ${s.step.padEnd(28)} ${s.call}\n         -> ${s.result}`);
  return out;
}
