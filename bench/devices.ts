// Devices: a device's 64 KiB DMA transfer through the bus-master engine (direct, and through the
// IOMMU's tables in memory) against memcpy of the same bytes, the cost of a translation that hits
// the engine's IOTLB, and a doorbell -> device in a worker -> interrupt -> handler round trip against
// a worker postMessage round trip.

import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { native } from '../lib/native';
import { createPciDevice } from '../lib/devices/pci_dev';
import { EDU_REG_IRQ_ACK, EDU_REG_IRQ_RAISE, EDU_REG_IRQ_STATUS } from '../lib/devices/edu';
import { ioread32, iowrite32, pci_iomap, writel } from '../lib/drivers/io';
import { IRQ_HANDLED, IRQ_NONE, free_irq, request_irq } from '../lib/drivers/irq';
import { Machine } from '../lib/mm/machine';
import { BusEngine, MEMTX_OK } from '../lib/devices/bus_engine';
import { busMaster } from '../lib/devices/bus_master';
import {
  compare, consume, countNativeCalls, gbPerSecond, makeResult, record, targets, yieldToLoop,
  type BenchContext, type BenchGroup,
} from './harness';
import { loadDma } from './dma';

const KiB = 1024;
const MiB = 1024 * KiB;
const SIZE = 64 * KiB;

export const devices: BenchGroup = {
  name: 'devices',
  steps: () => 4,
  async run(ctx: BenchContext): Promise<void> {
    const dma = loadDma();
    const { dma_map_page, dma_unmap_page } = dma.mapping;
    const { DMA_BIDIRECTIONAL } = dma.constants;
    const m = new Machine({ name: 'bench-dev', ramPerNode: 8 * MiB, cmaSize: 0, emitWarnings: false });
    try {
      const direct = m.createDevice({ name: 'bench-dev-direct', dmaMask: 64 });
      const iommu = m.createDevice({ name: 'bench-dev-iommu', dmaMask: 64, iommu: true });
      const page = m.alloc_pages(0xcc0, 4)!; // 64 KiB
      const hd = dma_map_page(direct, page, 0, SIZE, DMA_BIDIRECTIONAL);
      const hi = dma_map_page(iommu, page, 0, SIZE, DMA_BIDIRECTIONAL);
      const cpu = m.page_address(page);
      // The device's own buffer (what a NIC's FIFO or edu's 4 KiB buffer would be).
      const devBuf = new Uint8Array(SIZE).fill(0x5a);
      const other = m.alloc_pages(0xcc0, 4)!;
      const cpu2 = m.page_address(other);
      const rounds = ctx.rounds;
      const ops = ctx.quick ? 2_000 : 10_000;
      const scale = gbPerSecond(2 * SIZE); // a device write then a device read: 2 x 64 KiB moved
      const memcpy2 = {
        label: 'native memcpy, 2 x 64 KiB',
        run(n: number): void {
          for (let i = 0; i < n; i++) {
            native.memcpy(cpu2, cpu, SIZE);
            native.memcpy(cpu, cpu2, SIZE);
          }
        },
      };
      for (const [dev, h, kind, target] of [[direct, hd, 'direct', 0.5], [iommu, hi, 'IOMMU', 0.3]] as const) {
        const bus = busMaster(dev);
        if (bus.write(h, devBuf) !== MEMTX_OK || bus.read(h, devBuf) !== MEMTX_OK) throw new Error(`bench: ${kind} bus transfer failed`);
        record(ctx, `device DMA ${kind}`, () => compare({
          group: 'devices', name: `64 KiB device DMA (write + read), ${kind}`, rounds, ops,
          a: {
            label: `bus write + read, ${kind}`,
            run(n: number): void {
              for (let i = 0; i < n; i++) {
                bus.write(h, devBuf);
                bus.read(h, devBuf);
              }
            },
          },
          b: memcpy2,
          unit: 'GB/s', better: 'higher', scale,
          target: targets.ratioAtLeast(target, `>= ${target * 100}% of memcpy`),
          note: 'bytes moved between the device model\'s buffer and a mapped 64 KiB buffer; baseline: native memcpy of the same bytes there and back',
        }));
        await yieldToLoop();
      }
      // IOTLB hit: the same 16 pages translated over and over (they stay in the 64-entry IOTLB).
      const engine: BusEngine = busMaster(iommu);
      const base = Number(hi);
      engine.translate(base);
      const calls = countNativeCalls(native, () => engine.translate(base + 4096));
      const lookups = ctx.quick ? 200_000 : 2_000_000;
      record(ctx, 'IOTLB hit', () => compare({
        group: 'devices', name: 'IOMMU translation, IOTLB hit', rounds, ops: lookups,
        a: {
          label: 'engine.translate (IOTLB hit)',
          run(n: number): void {
            let acc = 0;
            for (let i = 0; i < n; i++) acc += engine.translate(base + ((i & 15) << 12) + (i & 0xff8));
            consume(acc);
          },
        },
        target: (r) => ({ text: `< 50 ns, no native call (${calls} made)`, met: r.a.median < 50 && calls === 0 }),
        note: '16 pages of a mapping, cycled; includes the invalidation-generation check',
      }));
      dma_unmap_page(direct, hd, SIZE, DMA_BIDIRECTIONAL);
      dma_unmap_page(iommu, hi, SIZE, DMA_BIDIRECTIONAL);
      m.__free_pages(page, 4);
      m.__free_pages(other, 4);
      direct.destroy();
      iommu.destroy();
    } finally {
      m.destroy();
    }
    await doorbellRoundTrip(ctx);
  },
};

/**
 * edu in a worker: the driver writes the interrupt-raise register (a posted write on the shared
 * ring), the device thread raises INTx (futex wake), the handler reads and acknowledges the status;
 * against a postMessage ping-pong with a worker. Interleaved rounds, per-op microseconds.
 */
async function doorbellRoundTrip(ctx: BenchContext): Promise<void> {
  ctx.progress.step('doorbell round trip');
  const m = new Machine({ name: 'bench-doorbell', ramPerNode: 8 * MiB, cmaSize: 0, hugepages: 'off', emitWarnings: false });
  const pdev = createPciDevice(m, { type: 'edu', worker: true });
  const echo = new Worker(path.join(__dirname, 'channel-peer.js'));
  const echoed = new Promise<void>((r) => echo.once('exit', () => r()));
  try {
    const io = pci_iomap(pdev, 0, 0)!;
    let pending: (() => void) | null = null;
    const id = {};
    if (request_irq(pdev.irq, () => {
      const st = ioread32(io, EDU_REG_IRQ_STATUS);
      if (st === 0 || st === 0xffffffff) return IRQ_NONE;
      iowrite32(st, io, EDU_REG_IRQ_ACK);
      const p = pending;
      pending = null;
      p?.();
      return IRQ_HANDLED;
    }, 0, 'bench-doorbell', id) !== 0) throw new Error('bench: request_irq failed');
    const n = ctx.quick ? 300 : 2000;
    const doorbell = async (): Promise<number> => {
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < n; i++) {
        await new Promise<void>((resolve) => {
          pending = resolve;
          writel(1, io, EDU_REG_IRQ_RAISE);
        });
      }
      return Number(process.hrtime.bigint() - t0) / n;
    };
    const post = async (): Promise<number> => {
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < n; i++) {
        await new Promise<void>((resolve) => {
          echo.once('message', () => resolve());
          echo.postMessage({ cmd: 'ping' });
        });
      }
      return Number(process.hrtime.bigint() - t0) / n;
    };
    await doorbell();
    await post();
    const as: number[] = [];
    const bs: number[] = [];
    for (let i = 0; i < ctx.rounds; i++) {
      if (i % 2 === 1) bs.push(await post());
      as.push(await doorbell());
      if (i % 2 === 0) bs.push(await post());
      await yieldToLoop();
    }
    ctx.results.push(makeResult({
      group: 'devices', name: 'doorbell -> worker device -> interrupt -> handler', unit: 'µs', better: 'lower',
      aLabel: 'writel doorbell, INTx, handler reads + acks status', bLabel: 'worker postMessage ping-pong',
      target: targets.ratioAtLeast(3, '>= 3x faster than postMessage'),
      note: 'edu in a worker thread: a posted register write on the shared ring, the interrupt by futex wake; the handler\'s status read waits for the device',
    }, as.map((ns) => ns / 1000), bs.map((ns) => ns / 1000)));
    free_irq(pdev.irq, id);
  } finally {
    echo.postMessage({ cmd: 'close' });
    await echoed;
    await pdev.destroy();
    m.destroy();
  }
}
