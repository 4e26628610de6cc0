// Non-coherent devices (issue 13): what the simulated CPU cache costs a driver. A 64 KiB
// dma_sync_single_for_device (clean) and dma_sync_single_for_cpu (invalidate) against memcpy of the
// same 64 KiB, and what buffer ownership checking adds to dma_map_single + dma_unmap_single.

import { native } from '../lib/native';
import { Machine } from '../lib/mm/machine';
import { GFP_KERNEL } from '../lib/mm/gfp';
import { kfree } from '../lib/mm/slab';
import type { Device } from '../lib/dma/device';
import { dma_sync_single_for_cpu, dma_sync_single_for_device } from '../lib/dma/sync';
import { dma_cache_stats } from '../lib/dma/cache';
import { compare, record, sizeName, targets, yieldToLoop, type BenchContext, type BenchGroup, type Side } from './harness';
import { loadDma } from './dma';

const KiB = 1024;
const MiB = 1024 * KiB;
const SYNC_SIZE = 64 * KiB;
/** Map + unmap sizes: one Ethernet frame, and a 64 KiB buffer. */
const MAP_SIZES = [1500, 64 * KiB] as const;

const us = (nsPerOp: number): number => nsPerOp / 1000;

export const noncoherent: BenchGroup = {
  name: 'noncoherent',
  steps: () => 3 + MAP_SIZES.length,
  async run(ctx: BenchContext): Promise<void> {
    const { mapping, constants } = loadDma();
    const { DMA_BIDIRECTIONAL, DMA_TO_DEVICE } = constants;
    const m = new Machine({ name: 'bench-nc', ramPerNode: 8 * MiB, cmaSize: 0, hugepages: 'off', emitWarnings: false });
    try {
      // (a) syncs of a 64 KiB buffer: the cache model alone (no DMA-API debug).
      const dev = m.createDevice({ name: 'bench-nc-sync', dmaMask: 64, coherent: false, debug: false });
      const page = m.alloc_pages(GFP_KERNEL, 4)!; // 64 KiB
      const cpu = m.page_address(page);
      const view = m.view(cpu, SYNC_SIZE);
      const other = m.alloc_pages(GFP_KERNEL, 4)!;
      const cpu2 = m.page_address(other);
      const h = mapping.dma_map_page(dev, page, 0, SYNC_SIZE, DMA_BIDIRECTIONAL);
      if (mapping.dma_mapping_error(dev, h) !== 0) throw new Error('bench: dma_map_page of 64 KiB failed');
      const ops = ctx.quick ? 200 : 1000;
      let flip = 0;
      const dirtyAll = (): void => void view.fill((flip ^= 1) === 1 ? 0x55 : 0xaa); // every line differs from the last clean
      const memcpy: Side = { label: 'native memcpy 64 KiB', run: (n) => { for (let i = 0; i < n; i++) native.memcpy(cpu2, cpu, SYNC_SIZE); } };
      const before = dma_cache_stats(m);
      record(ctx, 'noncoherent: clean 64 KiB', () => compare({
        group: 'noncoherent', name: '64 KiB dma_sync_single_for_device, every line dirty (clean)', rounds: ctx.rounds, ops,
        a: { label: 'view.fill + dma_sync_single_for_device', run: (n) => { for (let i = 0; i < n; i++) { dirtyAll(); dma_sync_single_for_device(dev, h, SYNC_SIZE, DMA_BIDIRECTIONAL); } } },
        b: { label: 'view.fill + native memcpy 64 KiB', run: (n) => { for (let i = 0; i < n; i++) { dirtyAll(); native.memcpy(cpu2, cpu, SYNC_SIZE); } } },
        unit: 'us/sync', scale: us,
        note: 'the CPU rewrites the whole 64 KiB before each sync (on both sides), so the clean writes back all 1024 lines',
      }));
      const cleaned = dma_cache_stats(m).writtenBack - before.writtenBack;
      await yieldToLoop();
      record(ctx, 'noncoherent: invalidate 64 KiB', () => compare({
        group: 'noncoherent', name: '64 KiB dma_sync_single_for_cpu (invalidate)', rounds: ctx.rounds, ops,
        a: { label: 'dma_sync_single_for_cpu', run: (n) => { for (let i = 0; i < n; i++) dma_sync_single_for_cpu(dev, h, SYNC_SIZE, DMA_BIDIRECTIONAL); } },
        b: memcpy, unit: 'us/sync', scale: us,
        note: 'every one of the 1024 lines is refilled from RAM',
      }));
      await yieldToLoop();
      record(ctx, 'noncoherent: clean, nothing dirty', () => compare({
        group: 'noncoherent', name: '64 KiB dma_sync_single_for_device, nothing dirty', rounds: ctx.rounds, ops,
        a: { label: 'dma_sync_single_for_device', run: (n) => { for (let i = 0; i < n; i++) dma_sync_single_for_device(dev, h, SYNC_SIZE, DMA_BIDIRECTIONAL); } },
        b: memcpy, unit: 'us/sync', scale: us,
        note: 'informative: one compare per page finds no dirty line',
      }));
      if (cleaned === 0) ctx.notes.push('noncoherent: the clean benchmark wrote back no line (the model did not see the CPU writes)');
      mapping.dma_unmap_page(dev, h, SYNC_SIZE, DMA_BIDIRECTIONAL);
      m.__free_pages(page, 4);
      m.__free_pages(other, 4);
      dev.destroy();
      await yieldToLoop();

      // (b) map + unmap with and without ownership checking; DMA-API debug on in both.
      const owned = m.createDevice({ name: 'bench-nc-own', dmaMask: 64, coherent: false, debug: true, ownership: 'report' });
      const plain = m.createDevice({ name: 'bench-nc-plain', dmaMask: 64, coherent: false, debug: true });
      for (const size of MAP_SIZES) {
        const buf = m.kmalloc(size, GFP_KERNEL);
        if (buf === null) throw new Error(`bench: kmalloc(${size}) failed`);
        m.view(buf, size).fill(0x11);
        const side = (d: Device, label: string): Side => ({
          label,
          run(n: number): void {
            for (let i = 0; i < n; i++) {
              const a = mapping.dma_map_single(d, buf, size, DMA_TO_DEVICE);
              if (mapping.dma_mapping_error(d, a) !== 0) throw new Error(`bench: dma_map_single(${size}) failed`);
              mapping.dma_unmap_single(d, a, size, DMA_TO_DEVICE);
            }
          },
        });
        record(ctx, `noncoherent: map + unmap ${sizeName(size)}`, () => compare({
          group: 'noncoherent', name: `dma_map_single + dma_unmap_single ${sizeName(size)}, ownership 'report' vs off`,
          rounds: ctx.rounds, ops: ctx.quick ? 500 : 2000,
          a: side(owned, "ownership 'report'"), b: side(plain, 'no ownership checking'),
          unit: 'us/map+unmap', scale: us,
          target: targets.ratioAtLeast(0.5, 'at most 2x slower (ratio >= 0.5)'),
          note: 'non-coherent device, no IOMMU, DMA-API debug on in both, DMA_TO_DEVICE (the map cleans, the unmap has no cache work)',
        }));
        kfree(buf);
        await yieldToLoop();
      }
      // A report would make its side slower (a stack, a warning): the comparison needs none.
      const reports = [...owned.debug.reports, ...plain.debug.reports];
      if (reports.length > 0) ctx.notes.push(`noncoherent: ${reports.length} unexpected DMA-API reports, the first: ${reports[0]!.message}`);
      owned.destroy();
      plain.destroy();
    } finally {
      m.destroy();
    }
  },
};
