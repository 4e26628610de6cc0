// virtio-net: frames through TX -> the loopback device in a worker -> RX, batches of 32, the driver
// polling its used rings (no interrupts), on a direct device and through the IOMMU; 64-byte frames
// in packets per second and 1500-byte ones in Gbit/s, each against a postMessage of the same batch
// to a worker and back, measured in the same run.

import { Worker } from 'node:worker_threads';
import { createPciDevice } from '../lib/devices/pci_dev';
import { VirtioNet } from '../lib/drivers/virtio_net';
import { Machine } from '../lib/mm/machine';
import { makeResult, yieldToLoop, type BenchContext, type BenchGroup, type BenchResult } from './harness';

/** An absolute target on the dmamem side's median (higher is better). */
const atLeast = (x: number, text: string) => (r: BenchResult) => ({ text, met: r.a.median >= x });

const MiB = 1024 * 1024;
const BATCH = 32;
const ECHO = "const { parentPort } = require('node:worker_threads'); parentPort.on('message', (m) => { if (m === 'close') process.exit(0); parentPort.postMessage(m); });";

/** Frames in flight at most: 7 batches in the 256-entry rings, so the device always has work. */
const IN_FLIGHT = 7 * BATCH;

/**
 * Sends `batches` batches of 32 (keeping up to IN_FLIGHT frames in flight) and takes every frame
 * back, spinning on the used ring; ns per frame.
 */
function virtioRun(net: VirtioNet, frames: Uint8Array[], batches: number): number {
  let got = 0;
  net.onPacket(() => { got++; });
  const total = batches * BATCH;
  let sent = 0;
  const t0 = process.hrtime.bigint();
  for (let spins = 0; got < total; spins++) {
    if (sent < total && sent - got + BATCH <= IN_FLIGHT) sent += net.sendBatch(frames);
    net.poll();
    if (spins > 100_000_000) throw new Error('bench: virtio-net frames did not come back');
  }
  const ns = Number(process.hrtime.bigint() - t0);
  net.onPacket(null);
  return ns / total;
}

/** The same batch of frames to a worker by postMessage and back; ns per frame. */
async function postRun(echo: Worker, frames: Uint8Array[], batches: number): Promise<number> {
  const t0 = process.hrtime.bigint();
  for (let b = 0; b < batches; b++) {
    await new Promise<void>((resolve) => {
      echo.once('message', () => resolve());
      echo.postMessage(frames);
    });
  }
  return Number(process.hrtime.bigint() - t0) / (batches * BATCH);
}

export const virtio: BenchGroup = {
  name: 'virtio',
  steps: () => 3,
  async run(ctx: BenchContext): Promise<void> {
    const echo = new Worker(ECHO, { eval: true });
    const echoed = new Promise<void>((r) => echo.once('exit', () => r()));
    const m = new Machine({ name: 'bench-virtio', ramPerNode: 16 * MiB, cmaSize: 0, hugepages: 'off', emitWarnings: false });
    const type = { module: require.resolve('../lib/devices/virtio/virtio_net'), export: 'virtio_net' };
    try {
      const batches = ctx.quick ? 50 : 1000;
      const rows: [string, boolean, number][] = [['64-byte frames, direct', false, 64], ['64-byte frames, IOMMU', true, 64], ['1500-byte frames, direct', false, 1500]];
      for (const [name, iommu, len] of rows) {
        ctx.progress.step(`virtio-net ${name}`);
        const pdev = createPciDevice(m, { type, worker: true, device: { iommu: iommu ? { strict: false } : false } });
        const net = VirtioNet.probe(pdev, { irq: 'poll' });
        try {
          const frames = Array.from({ length: BATCH }, (_, i) => new Uint8Array(len).fill(i));
          virtioRun(net, frames, Math.max(5, batches >> 2));
          await postRun(echo, frames, Math.max(5, batches >> 4));
          const as: number[] = [];
          const bs: number[] = [];
          for (let r = 0; r < ctx.rounds; r++) {
            if (r % 2 === 1) bs.push(await postRun(echo, frames, Math.max(5, batches >> 3)));
            as.push(virtioRun(net, frames, batches));
            if (r % 2 === 0) bs.push(await postRun(echo, frames, Math.max(5, batches >> 3)));
            await yieldToLoop();
          }
          const gbit = len >= 1000;
          // ns per frame -> Mpps, or -> Gbit/s of frame payload.
          const unit = (ns: number): number => (gbit ? (len * 8) / ns : 1000 / ns);
          ctx.results.push(makeResult({
            group: 'virtio', name: `virtio-net TX -> worker device -> RX, ${name}`, unit: gbit ? 'Gbit/s' : 'Mpps', better: 'higher',
            aLabel: 'VirtioNet.sendBatch(32) + polled RX', bLabel: 'postMessage of the 32 frames to a worker and back',
            target: gbit ? atLeast(10, '>= 10 Gbit/s') : atLeast(5, '>= 5 Mpps (ixy.js: 4.95)'),
            note: `loopback device in a worker; both rings 256 entries, EVENT_IDX, DMA-API debug off; batches of ${BATCH}, up to ${IN_FLIGHT} frames in flight`,
          }, as.map(unit), bs.map(unit)));
        } finally {
          net.close();
          await pdev.destroy();
        }
      }
    } finally {
      echo.postMessage('close');
      await echoed;
      m.destroy();
    }
  },
};
