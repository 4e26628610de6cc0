// Mapping into user VMAs: dma_common_mmap of a 64 MiB physically contiguous buffer against one raw
// MAP_FIXED mmap of the same memory, and a 64 MiB vmalloc buffer mapped run by run (consecutive
// PFNs coalesced into one remap_pfn_range) against page by page, with the mmap calls each makes.

import { C, native } from '../lib/native';
import { Machine } from '../lib/mm/machine';
import { vfree, vmalloc } from '../lib/mm/vmalloc';
import { remap_pfn_range } from '../lib/mm/vma';
import { compare, record, sizeName, yieldToLoop, type BenchContext, type BenchGroup } from './harness';
import { loadDma } from './dma';

const MiB = 1024 * 1024;
const PAGE = 4096;

export const mapping: BenchGroup = {
  name: 'mapping',
  steps: () => 3,
  async run(ctx: BenchContext): Promise<void> {
    const size = 64 * MiB;
    const m = new Machine({ name: 'bench-map', ramPerNode: size + 8 * MiB, cmaSize: size + 4 * MiB, emitWarnings: false });
    try {
      const rounds = ctx.quick ? 5 : ctx.rounds;
      const ops = ctx.quick ? 20 : 200; // ~20 us each: enough per round to rise above timer and JIT noise
      const dma = loadDma();
      const dev = m.createDevice({ name: 'bench-map-direct', dmaMask: 64, coherentDmaMask: 64 });
      const handle = { value: 0n };
      const cpu = dma.mapping.dma_alloc_coherent(dev, size, handle, 0xcc0);
      if (cpu === null) throw new Error('bench: dma_alloc_coherent(64 MiB) failed');
      try {
        const seg = m.cmaSegment(m.dma_contiguous_default_area!);
        const granule = seg.mapGranule;
        // The baseline maps the same memfd range; hugetlb memory only in whole, aligned huge pages.
        const off = cpu - seg.address;
        const rawOff = Math.floor(off / granule) * granule;
        const rawLen = Math.ceil((off + size) / granule) * granule - rawOff;
        const before = m.counters.mmapCalls;
        const vma0 = m.createVma(size);
        const ret0 = dma.helpers.dma_common_mmap(dev, vma0, cpu, handle.value, size, 0);
        vma0.unmap();
        if (ret0 !== 0) throw new Error(`dma_common_mmap returned ${ret0}`);
        const calls = m.counters.mmapCalls - before;
        record(ctx, `dma_common_mmap ${sizeName(size)} contiguous`, () => compare({
          group: 'mapping', name: `mmap ${sizeName(size)} contiguous buffer`, rounds, ops,
          a: {
            label: 'createVma + dma_common_mmap + unmap',
            run(n: number): void {
              for (let i = 0; i < n; i++) {
                const vma = m.createVma(size);
                const ret = dma.helpers.dma_common_mmap(dev, vma, cpu, handle.value, size, 0);
                vma.unmap();
                if (ret !== 0) throw new Error(`dma_common_mmap returned ${ret}`);
              }
            },
          },
          b: {
            label: 'reserve + one MAP_FIXED mmap + munmap',
            run(n: number): void {
              for (let i = 0; i < n; i++) {
                const addr = native.reserve(rawLen, Math.max(granule, PAGE));
                native.mmap(addr, rawLen, C.PROT_READ | C.PROT_WRITE, C.MAP_SHARED | C.MAP_FIXED, seg.fd, rawOff);
                native.munmap(addr, rawLen);
              }
            },
          },
          unit: 'us/mmap', scale: (ns) => ns / 1e3,
          target: (r) => ({ text: 'within 2x of raw mmap', met: (r.ratio ?? 0) >= 0.5 }),
          note: `CMA backing ${seg.backing}; dma_common_mmap made ${calls} mmap call(s)`,
        }));
      } finally {
        dma.mapping.dma_free_coherent(dev, size, cpu, handle.value);
        dev.destroy();
      }
      await yieldToLoop();

      // A 64 MiB vmalloc buffer: physically scattered in general, so one mapping per run of
      // consecutive PFNs (what remap_vmalloc_range would do, coalesced), against one per page.
      const vaddr = vmalloc(m, size);
      if (vaddr === null) throw new Error('bench: vmalloc(64 MiB) failed');
      try {
        const area = m.findVmallocArea(vaddr)!;
        const runs: { off: number; pfn: number; pages: number }[] = [];
        area.pages.forEach((p, i) => {
          const last = runs[runs.length - 1];
          if (last !== undefined && p.pfn === last.pfn + last.pages) last.pages++;
          else runs.push({ off: i * PAGE, pfn: p.pfn, pages: 1 });
        });
        const mapCoalesced = (): void => {
          const vma = m.createVma(size);
          for (const r of runs) {
            const ret = remap_pfn_range(vma, vma.vm_start + r.off, r.pfn, r.pages * PAGE, vma.vm_page_prot);
            if (ret !== 0) throw new Error(`remap_pfn_range returned ${ret}`);
          }
          vma.unmap();
        };
        const pages = area.pages;
        const mapPerPage = (): void => {
          const vma = m.createVma(size);
          for (let i = 0; i < pages.length; i++) {
            const ret = remap_pfn_range(vma, vma.vm_start + i * PAGE, pages[i]!.pfn, PAGE, vma.vm_page_prot);
            if (ret !== 0) throw new Error(`remap_pfn_range returned ${ret}`);
          }
          vma.unmap();
        };
        let before = m.counters.mmapCalls;
        mapCoalesced();
        const coalescedCalls = m.counters.mmapCalls - before;
        before = m.counters.mmapCalls;
        mapPerPage();
        const perPageCalls = m.counters.mmapCalls - before;
        record(ctx, `mmap ${sizeName(size)} vmalloc buffer`, () => compare({
          group: 'mapping', name: `mmap ${sizeName(size)} vmalloc buffer`, rounds: ctx.quick ? 3 : 5, ops: 1,
          a: { label: `per PFN run (${coalescedCalls} mmap calls)`, run: (n) => { for (let i = 0; i < n; i++) mapCoalesced(); } },
          b: { label: `per page (${perPageCalls} mmap calls)`, run: (n) => { for (let i = 0; i < n; i++) mapPerPage(); } },
          unit: 'ms', scale: (ns) => ns / 1e6,
          note: `${pages.length} pages in ${runs.length} physically consecutive runs (vmalloc on a fresh machine); area mapped with ${area.mmapCalls} mmap calls`,
        }));
      } finally {
        vfree(m, vaddr);
      }
    } finally {
      m.destroy();
    }
    await yieldToLoop();
    bounceRow(ctx);
  },
};

/**
 * A 4 KiB streaming map + unmap (DMA_BIDIRECTIONAL: copied in at map, back at unmap) bounced through
 * swiotlb ('force', as swiotlb=force) against the same on a machine without it (dma-direct: no copy).
 */
function bounceRow(ctx: BenchContext): void {
  const dma = loadDma();
  const bounced = new Machine({ name: 'bench-swiotlb', ramPerNode: 8 * MiB, cmaSize: 0, swiotlb: 'force', swiotlbSize: 4 * MiB, emitWarnings: false });
  const plain = new Machine({ name: 'bench-noswiotlb', ramPerNode: 8 * MiB, cmaSize: 0, swiotlb: 'off', emitWarnings: false });
  try {
    const side = (m: Machine, name: string) => {
      const dev = m.createDevice({ name, dmaMask: 64 });
      const page = m.alloc_pages(0xcc0, 0)!;
      return {
        run(n: number): void {
          for (let i = 0; i < n; i++) {
            const h = dma.mapping.dma_map_page(dev, page, 0, PAGE, 0);
            dma.mapping.dma_unmap_page(dev, h, PAGE, 0);
          }
        },
      };
    };
    const a = side(bounced, 'bench-bounce');
    const b = side(plain, 'bench-direct');
    const ops = ctx.quick ? 2_000 : 20_000;
    record(ctx, '4 KiB map+unmap through swiotlb', () => compare({
      group: 'mapping', name: '4 KiB map+unmap, swiotlb bounce vs dma-direct', rounds: ctx.rounds, ops,
      a: { label: 'bounced (swiotlb=force)', run: a.run },
      b: { label: 'dma-direct, no bounce', run: b.run },
      unit: 'us/map+unmap', scale: (ns) => ns / 1e3,
      note: 'DMA_BIDIRECTIONAL: 4 KiB copied into the slot at map and back at unmap',
    }));
  } finally {
    bounced.destroy();
    plain.destroy();
  }
}
