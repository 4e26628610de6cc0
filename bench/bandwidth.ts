// Bandwidth: writing and reading a DMA buffer through its JS view against native memset/memcpy of
// the same memory, and the first-touch cost of a buffer in hugetlb-backed CMA against 4 KiB pages.

import { native } from '../lib/native';
import { cma_alloc } from '../lib/mm/cma';
import { PAGE_SIZE } from '../lib/mm/gfp';
import { Machine } from '../lib/mm/machine';
import { hugepagePoolFree } from '../lib/os/backing';
import {
  compare, consume, gbPerSecond, makeResult, record, sizeName, targets, yieldToLoop,
  type BenchContext, type BenchGroup,
} from './harness';
import { loadDma } from './dma';

const MiB = 1024 * 1024;

interface Buf {
  addr: number;
  view: Buffer;
  free(): void;
}

/**
 * A DMA buffer of `size` bytes: dma_alloc_coherent on a direct device (CMA underneath).
 */
function dmaBuffer(m: Machine, size: number): Buf & { how: string } {
  const dma = loadDma();
  const dev = m.createDevice({ name: `bench-bw-${size}`, dmaMask: 64, coherentDmaMask: 64 });
  const handle = { value: 0n };
  const addr = dma.mapping.dma_alloc_coherent(dev, size, handle, 0xcc0);
  if (addr === null) throw new Error(`bench: dma_alloc_coherent(${sizeName(size)}) failed`);
  return {
    addr, view: m.view(addr, size), how: 'dma_alloc_coherent',
    free: () => {
      dma.mapping.dma_free_coherent(dev, size, addr, handle.value);
      dev.destroy();
    },
  };
}

export const bandwidth: BenchGroup = {
  name: 'bandwidth',
  steps: () => 5,
  async run(ctx: BenchContext): Promise<void> {
    const size = ctx.quick ? 32 * MiB : 256 * MiB;
    const gbs = gbPerSecond(size);
    const m = new Machine({ name: 'bench-bw', ramPerNode: 4 * MiB, cmaSize: 2 * size + 8 * MiB, emitWarnings: false });
    try {
      const src = dmaBuffer(m, size);
      const dst = dmaBuffer(m, size);
      const backing = m.cmaSegment(m.dma_contiguous_default_area!).backing;
      const note = `${sizeName(size)} from ${src.how} (CMA backing: ${backing}); one pass per op`;
      try {
        let byte = 1;
        record(ctx, 'write through the view', () => compare({
          group: 'bandwidth', name: `write ${sizeName(size)}`, rounds: ctx.rounds, ops: 1,
          a: { label: 'view.fill (JS)', run: () => void src.view.fill((byte = (byte + 1) & 0xff)) },
          b: { label: 'native memset', run: () => native.memset(src.addr, (byte = (byte + 1) & 0xff), size) },
          unit: 'GB/s', better: 'higher', scale: gbs, target: targets.ratioAtLeast(0.8, '>= 80% of native'), note,
        }));
        await yieldToLoop();
        record(ctx, 'read through the view', () => compare({
          group: 'bandwidth', name: `read (copy out) ${sizeName(size)}`, rounds: ctx.rounds, ops: 1,
          a: { label: 'dst.set(view) (JS)', run: () => dst.view.set(src.view) },
          b: { label: 'native memcpy', run: () => native.memcpy(dst.addr, src.addr, size) },
          unit: 'GB/s', better: 'higher', scale: gbs, target: targets.ratioAtLeast(0.8, '>= 80% of native'),
          note: `${note}; into a second DMA buffer`,
        }));
        await yieldToLoop();
        // Element by element from JS: what a driver writing descriptors does.
        const f64 = new Float64Array(src.view.buffer, src.view.byteOffset, size / 8);
        record(ctx, 'typed-array loop', () => compare({
          group: 'bandwidth', name: `write ${sizeName(size)}, Float64Array loop`, rounds: ctx.rounds, ops: 1,
          a: {
            label: 'for (i) f64[i] = x',
            run(): void {
              const x = byte++;
              for (let i = 0; i < f64.length; i++) f64[i] = x;
            },
          },
          b: { label: 'native memset', run: () => native.memset(src.addr, (byte = (byte + 1) & 0xff), size) },
          unit: 'GB/s', better: 'higher', scale: gbs, note: 'informative: per-element stores from JS',
        }));
        consume(f64[7]!);
      } finally {
        src.free();
        dst.free();
      }
    } finally {
      m.destroy();
    }
    await yieldToLoop();
    await firstTouch(ctx);
  },
};

/** First-touch cost: a fresh machine whose CMA area is hugetlb or 4 KiB pages; populate, then the first write pass. */
async function firstTouch(ctx: BenchContext): Promise<void> {
  const size = ctx.quick ? 64 * MiB : 256 * MiB;
  const hugeNeeded = size / (2 * MiB);
  const rounds = ctx.quick ? 3 : 5;
  const free = hugepagePoolFree();
  if (free < hugeNeeded + 8) {
    ctx.progress.step('first touch (skipped)');
    ctx.progress.step('populate (skipped)');
    ctx.notes.push(`bandwidth: first-touch skipped: the 2 MiB pool has ${free} free pages, ${hugeNeeded} needed (echo N > /proc/sys/vm/nr_hugepages)`);
    return;
  }
  const touch: Record<'huge' | 'small', number[]> = { huge: [], small: [] };
  const populate: Record<'huge' | 'small', number[]> = { huge: [], small: [] };
  const now = process.hrtime.bigint;
  const one = (kind: 'huge' | 'small'): void => {
    const t0 = now();
    const m = new Machine({ name: `bench-touch-${kind}`, ramPerNode: 2 * MiB, cmaSize: size, hugepages: kind === 'huge' ? 'require' : 'off', emitWarnings: false });
    const t1 = now();
    try {
      // The whole area as one allocation: views cover allocations only.
      const page = cma_alloc(m.dma_contiguous_default_area, size / PAGE_SIZE, 0, false);
      if (page === null) throw new Error(`bench: cma_alloc of the whole ${sizeName(size)} area failed`);
      const view = m.view(m.page_address(page), size);
      const t2 = now();
      view.fill(0x5a);
      const t3 = now();
      populate[kind].push(Number(t1 - t0) / 1e6);
      touch[kind].push(Number(t3 - t2) / 1e6);
    } finally {
      m.destroy();
    }
  };
  ctx.progress.step(`first touch ${sizeName(size)}`);
  // Interleaved: hugetlb then 4 KiB, 4 KiB then hugetlb, ...
  for (let i = 0; i < rounds; i++) {
    if (i % 2 === 0) { one('huge'); one('small'); } else { one('small'); one('huge'); }
    await yieldToLoop();
  }
  const sum = (a: number[], b: number[]): number[] => a.map((x, i) => x + b[i]!);
  ctx.results.push(makeResult({
    group: 'bandwidth', name: `first touch (populate + first write), ${sizeName(size)} CMA`, unit: 'ms',
    aLabel: 'hugetlb 2 MiB', bLabel: '4 KiB pages',
    note: 'the cost until a fresh buffer has been written once: the sum of the two rows below, per round',
  }, sum(populate.huge, touch.huge), sum(populate.small, touch.small)));
  ctx.results.push(makeResult({
    group: 'bandwidth', name: `first write pass, ${sizeName(size)} CMA`, unit: 'ms',
    aLabel: 'hugetlb 2 MiB', bLabel: '4 KiB pages',
    note: 'a fresh, populated CMA segment; the first view.fill over it (page-table and TLB work the later passes do not pay)',
  }, touch.huge, touch.small));
  ctx.progress.step(`populate ${sizeName(size)}`);
  ctx.results.push(makeResult({
    group: 'bandwidth', name: `create + populate, ${sizeName(size)} CMA`, unit: 'ms',
    aLabel: 'hugetlb 2 MiB', bLabel: '4 KiB pages',
    note: 'new Machine with that CMA area: memfd, mmap, MADV_POPULATE_WRITE (the kernel zeroes every page)',
  }, populate.huge, populate.small));
}
