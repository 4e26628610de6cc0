// virtio-blk 4 KiB random reads against fs.readSync of the same offsets, in the same run: batches
// of 32 requests in flight, the device in a worker (or inline), direct and IOMMU, interrupt-driven
// and polled. Standalone for now (node dist/bench/virtio-blk.js [--quick]); not in bench/index.ts.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Machine } from '../lib/mm/machine';
import '../lib/dma/device';
import { GFP_KERNEL } from '../lib/mm/gfp';
import type { Page } from '../lib/mm/page';
import { type Scatterlist, sg_init_table, sg_set_page } from '../lib/dma/scatterlist';
import { createPciDevice } from '../lib/devices/pci_dev';
import { VIRTIO_BLK_S_OK, VIRTIO_BLK_T_IN, virtio_blk } from '../lib/devices/virtio/virtio_blk';
import { VirtioBlk, virtio_blk_probe } from '../lib/drivers/virtio_blk';

const MiB = 1024 * 1024;
const BLOCK = 4096;
const BATCH = 32;

const quick = process.argv.includes('--quick');
const FILE_SIZE = (quick ? 16 : 64) * MiB;
const ROUNDS = quick ? 5 : 11;
const BATCHES_PER_ROUND = quick ? 50 : 200;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/** Random 4 KiB-aligned offsets (in 512-byte sectors), the same for both sides. */
function offsets(n: number, seed: number): number[] {
  let a = seed >>> 0;
  const out: number[] = [];
  const blocks = FILE_SIZE / BLOCK;
  for (let i = 0; i < n; i++) {
    a = (Math.imul(a, 1664525) + 1013904223) >>> 0;
    out.push((a % blocks) * (BLOCK / 512));
  }
  return out;
}

/** Batches of 32 reads with fs.readSync (what an application does without the device). */
function fsSide(fd: number, offs: number[]): () => Promise<number> {
  const buf = Buffer.alloc(BLOCK * BATCH);
  let k = 0;
  return async () => {
    const t0 = process.hrtime.bigint();
    for (let b = 0; b < BATCHES_PER_ROUND; b++) {
      for (let i = 0; i < BATCH; i++) {
        const s = offs[k++ % offs.length]!;
        fs.readSync(fd, buf, i * BLOCK, BLOCK, s * 512);
      }
    }
    return Number(process.hrtime.bigint() - t0) / (BATCHES_PER_ROUND * BATCH);
  };
}

/** Batches of 32 VirtioBlk.read calls (pages allocated, mapped, copied out, freed per request). */
function apiSide(blk: VirtioBlk, offs: number[]): () => Promise<number> {
  let k = 0;
  return async () => {
    const t0 = process.hrtime.bigint();
    for (let b = 0; b < BATCHES_PER_ROUND; b++) {
      const ps: Promise<Uint8Array>[] = [];
      for (let i = 0; i < BATCH; i++) ps.push(blk.read(offs[k++ % offs.length]!, BLOCK / 512));
      await Promise.all(ps);
    }
    return Number(process.hrtime.bigint() - t0) / (BATCHES_PER_ROUND * BATCH);
  };
}

/** 32 requests always in flight on 32 preallocated pages through submit() (the driver path, no page allocation or copy). */
function submitSide(blk: VirtioBlk, m: Machine, offs: number[]): { run: () => Promise<number>; free: () => void } {
  const pages: Page[] = [];
  const sgs: Scatterlist[] = [];
  for (let i = 0; i < BATCH; i++) {
    const p = m.alloc_pages(GFP_KERNEL, 0)!;
    pages.push(p);
    const t: Scatterlist[] = [];
    sg_init_table(t, 1);
    sg_set_page(t[0]!, p, BLOCK, 0);
    sgs.push(t[0]!);
  }
  let k = 0;
  // A window of 32: each completion submits the next request (queue depth 32, as fio's iodepth=32).
  const run = (): Promise<number> => new Promise((resolve, reject) => {
    const total = BATCHES_PER_ROUND * BATCH;
    let issued = 0;
    let done = 0;
    const t0 = process.hrtime.bigint();
    const go = (i: number): void => {
      if (issued >= total) return;
      issued++;
      blk.submit({
        type: VIRTIO_BLK_T_IN, sector: offs[k++ % offs.length]!, data: sgs[i]!,
        done: (st) => {
          if (st !== VIRTIO_BLK_S_OK) reject(new Error(`status ${st}`));
          else if (++done === total) resolve(Number(process.hrtime.bigint() - t0) / total);
          else go(i);
        },
      });
    };
    for (let i = 0; i < BATCH; i++) go(i);
  });
  return { run, free: () => pages.forEach((p) => m.__free_pages(p, 0)) };
}

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmamem-vblk-bench-'));
  const file = path.join(dir, 'disk.img');
  const chunk = Buffer.alloc(MiB);
  const fd0 = fs.openSync(file, 'w');
  for (let i = 0; i < FILE_SIZE / MiB; i++) {
    for (let j = 0; j < MiB; j += 4) chunk.writeUInt32LE((i * MiB + j) >>> 0, j);
    fs.writeSync(fd0, chunk);
  }
  fs.closeSync(fd0);
  const fd = fs.openSync(file, 'r');
  const offs = offsets(BATCH * BATCHES_PER_ROUND * 4, 7);
  const blkModule = require.resolve('../lib/devices/virtio/virtio_blk');
  const rows: string[] = [];
  try {
    for (const [kind, iommu] of [['direct', false], ['IOMMU', true]] as const) {
      for (const [where, worker] of [['worker', true], ['inline', false]] as const) {
        for (const irq of ['msix', 'poll'] as const) {
          const m = new Machine({ name: 'bench-vblk', ramPerNode: 32 * MiB, cmaSize: 0, hugepages: 'off', emitWarnings: false });
          const pdev = createPciDevice(m, {
            type: worker ? { module: blkModule, export: 'virtio_blk' } : virtio_blk, worker, modelOptions: { path: file },
            device: { iommu: iommu ? { strict: false } : false, debug: false },
          });
          const blk = virtio_blk_probe(pdev, { irq, num: 128 });
          if (typeof blk === 'number') throw new Error(`probe: ${blk}`);
          const sub = submitSide(blk, m, offs);
          const sides = { fs: fsSide(fd, offs), read: apiSide(blk, offs), submit: sub.run };
          await sides.read(); // warm up (JIT, page cache, IOTLB)
          await sides.submit();
          const t: Record<keyof typeof sides, number[]> = { fs: [], read: [], submit: [] };
          for (let r = 0; r < ROUNDS; r++) {
            for (const k of ['fs', 'read', 'submit'] as const) t[k].push(await sides[k]());
          }
          sub.free();
          await blk.remove();
          await pdev.destroy();
          m.destroy();
          const f = median(t.fs);
          const a = median(t.read);
          const s = median(t.submit);
          rows.push(`${kind.padEnd(6)} ${where.padEnd(6)} ${irq.padEnd(5)}  fs.readSync ${f.toFixed(0).padStart(6)} ns  VirtioBlk.read ${a.toFixed(0).padStart(6)} ns (x${(f / a).toFixed(2)})  submit (window 32) ${s.toFixed(0).padStart(6)} ns (x${(f / s).toFixed(2)})`);
          process.stderr.write(`${rows[rows.length - 1]!}\n`);
        }
      }
    }
  } finally {
    fs.closeSync(fd);
    fs.rmSync(dir, { recursive: true, force: true });
  }
  console.log(`virtio-blk 4 KiB random reads, ${BATCH} in flight, ${FILE_SIZE / MiB} MiB file (page cache), median of ${ROUNDS} rounds of ${BATCHES_PER_ROUND * BATCH} reads; x = fs.readSync time / virtio-blk time (above 1: virtio-blk faster)`);
  for (const r of rows) console.log(r);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
