// Allocation: dma_alloc_pages + a view + dma_free_pages of 4 KiB, 64 KiB and 2 MiB on a direct and
// an IOMMU device, against (a) a fresh mmap + populate + munmap per buffer, as the Node mmap
// libraries do, and (b) a zeroed Buffer.alloc of the same size.

import { C, native } from '../lib/native';
import { Machine } from '../lib/mm/machine';
import { page_address } from '../lib/mm/kernel';
import { GFP_KERNEL } from '../lib/mm/gfp';
import { compare, consume, record, sizeName, yieldToLoop, type BenchContext, type BenchGroup, type BenchResult, type Side } from './harness';
import { loadDma } from './dma';

const KiB = 1024;
const MiB = 1024 * KiB;
const SIZES = [4 * KiB, 64 * KiB, 2 * MiB] as const;
const DEVICES = ['direct', 'IOMMU'] as const;

function opsFor(size: number, quick: boolean): number {
  const base = size <= 4 * KiB ? 2000 : size <= 64 * KiB ? 400 : 30;
  return quick ? Math.max(10, base >> 2) : base;
}

export const allocation: BenchGroup = {
  name: 'allocation',
  steps: () => SIZES.length * DEVICES.length * 2,
  async run(ctx: BenchContext): Promise<void> {
    const dma = loadDma();
    const { dma_alloc_pages, dma_free_pages } = dma.mapping;
    const { DMA_BIDIRECTIONAL } = dma.constants;
    // Room for a batch of 2 MiB blocks is not needed: each op frees before the next allocates.
    const m = new Machine({ name: 'bench-alloc', ramPerNode: 64 * MiB, cmaSize: 32 * MiB, emitWarnings: false });
    try {
      const devices = {
        direct: m.createDevice({ name: 'bench-alloc-direct', dmaMask: 64, coherentDmaMask: 64 }),
        IOMMU: m.createDevice({ name: 'bench-alloc-iommu', iommu: true, dmaMask: 64, coherentDmaMask: 64 }),
      };
      try {
        const prot = C.PROT_READ | C.PROT_WRITE;
        const flags = C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_POPULATE;
        for (const size of SIZES) {
          const mmapSide: Side = {
            label: 'mmap+populate+munmap',
            run(n: number): void {
              for (let i = 0; i < n; i++) native.munmap(native.mmap(0, size, prot, flags, -1, 0), size);
            },
          };
          const bufferSide: Side = {
            label: 'Buffer.alloc',
            run(n: number): void {
              let acc = 0;
              for (let i = 0; i < n; i++) acc += Buffer.alloc(size).length;
              consume(acc);
            },
          };
          for (const kind of DEVICES) {
            const dev = devices[kind];
            const handle = { value: 0n };
            const dmaSide: Side = {
              label: 'dma_alloc_pages+view+free',
              run(n: number): void {
                let acc = 0;
                for (let i = 0; i < n; i++) {
                  const page = dma_alloc_pages(dev, size, handle, DMA_BIDIRECTIONAL, GFP_KERNEL);
                  if (page === null) throw new Error(`dma_alloc_pages(${size}) on the ${kind} device returned null`);
                  acc += m.view(page_address(page), size).length;
                  dma_free_pages(dev, size, page, handle.value, DMA_BIDIRECTIONAL);
                }
                consume(acc);
              },
            };
            const ops = opsFor(size, ctx.quick);
            const small = size === 4 * KiB;
            const common = { group: 'allocation', rounds: ctx.rounds, ops, a: dmaSide, unit: 'us/buffer', scale: (ns: number) => ns / 1e3 };
            record(ctx, `alloc ${sizeName(size)} ${kind} vs mmap`, (): BenchResult => compare({
              ...common, name: `${sizeName(size)}, ${kind} device, vs mmap`, b: mmapSide,
              target: small ? (r) => ({ text: '>= 10x faster than mmap', met: (r.ratio ?? 0) >= 10 }) : undefined,
              note: 'baseline: mmap(MAP_PRIVATE|MAP_ANONYMOUS|MAP_POPULATE) + munmap, no Buffer made',
            }));
            await yieldToLoop();
            record(ctx, `alloc ${sizeName(size)} ${kind} vs Buffer.alloc`, (): BenchResult => compare({
              ...common, name: `${sizeName(size)}, ${kind} device, vs Buffer.alloc`, b: bufferSide,
              target: small ? (r) => ({ text: 'within 2x of Buffer.alloc', met: (r.ratio ?? 0) >= 0.5 }) : undefined,
              note: 'both sides zeroed (dma_alloc_pages zeroes, as the kernel does)',
            }));
            await yieldToLoop();
          }
        }
      } finally {
        devices.direct.destroy();
        devices.IOMMU.destroy();
      }
    } finally {
      m.destroy();
    }
  },
};
