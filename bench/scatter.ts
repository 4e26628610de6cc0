// Scatter-gather: sg_alloc_table_from_pages over 1 GiB of 4 KiB pages (runs merged, and the worst
// case of one entry per page), and dma_map_sgtable on an IOMMU device against mapping page by page.

import { Machine } from '../lib/mm/machine';
import type { Page } from '../lib/mm/page';
import { GFP_KERNEL } from '../lib/mm/gfp';
import { SgTable, sg_free_table } from '../lib/dma/scatterlist';
import { sg_alloc_table_from_pages } from '../lib/dma/sg_pages';
import { compare, consume, makeResult, record, sizeName, yieldToLoop, type BenchContext, type BenchGroup } from './harness';
import { loadDma } from './dma';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const PAGE = 4096;

export const scatter: BenchGroup = {
  name: 'scatter',
  steps: () => 4,
  async run(ctx: BenchContext): Promise<void> {
    const bytes = ctx.quick ? 64 * MiB : GiB;
    const n = bytes / PAGE;
    const limitMs = 50 * (bytes / GiB);
    // RAM a little larger than the buffer; no CMA (it would take the large allocations).
    const m = new Machine({ name: 'bench-sg', ramPerNode: bytes + 4 * MiB, cmaSize: 0, emitWarnings: false });
    try {
      const pages: Page[] = new Array<Page>(n);
      for (let i = 0; i < n; i++) {
        const p = m.alloc_pages_node(0, GFP_KERNEL, 0);
        if (p === null) throw new Error(`bench: page ${i} of ${n} could not be allocated`);
        pages[i] = p;
      }
      pages.sort((x, y) => x.pfn - y.pfn);
      // Worst case: no two neighbours in the list are physically consecutive (even PFNs, then odd).
      const scattered = [...pages.filter((p) => p.pfn % 2 === 0), ...pages.filter((p) => p.pfn % 2 === 1)];
      const rounds = ctx.quick ? 5 : 9;
      const target = (r: { a: { median: number } }): { text: string; met: boolean } => ({
        text: ctx.quick ? `< ${limitMs.toPrecision(2)} ms (50 ms per GiB)` : '< 50 ms',
        met: r.a.median < limitMs,
      });
      const build = (list: readonly Page[], label: string) => ({
        label,
        run(ops: number): void {
          let acc = 0;
          for (let k = 0; k < ops; k++) {
            const t = new SgTable();
            const ret = sg_alloc_table_from_pages(t, list, n, 0, bytes, GFP_KERNEL);
            if (ret !== 0) throw new Error(`sg_alloc_table_from_pages returned ${ret}`);
            acc += t.orig_nents;
            sg_free_table(t);
          }
          consume(acc);
        },
      });
      const countEntries = (list: readonly Page[]): number => {
        const t = new SgTable();
        sg_alloc_table_from_pages(t, list, n, 0, bytes, GFP_KERNEL);
        return t.orig_nents;
      };
      const contiguousEntries = countEntries(pages);
      record(ctx, `sg_alloc_table_from_pages ${sizeName(bytes)}, merged`, () => compare({
        group: 'scatter', name: `sg_alloc_table_from_pages, ${sizeName(bytes)}, pages in PFN order`, rounds, ops: 1,
        a: build(pages, 'sg_alloc_table_from_pages'), unit: 'ms', scale: (ns) => ns / 1e6, target,
        note: `${n} pages -> ${contiguousEntries} entries (consecutive PFNs merge)`,
      }));
      await yieldToLoop();
      record(ctx, `sg_alloc_table_from_pages ${sizeName(bytes)}, one entry per page`, () => compare({
        group: 'scatter', name: `sg_alloc_table_from_pages, ${sizeName(bytes)}, no two pages adjacent`, rounds, ops: 1,
        a: build(scattered, 'sg_alloc_table_from_pages'), unit: 'ms', scale: (ns) => ns / 1e6, target,
        note: `${n} pages -> ${countEntries(scattered)} entries (the worst case)`,
      }));
      await yieldToLoop();

      const dma = loadDma();
      const { dma_map_sgtable, dma_unmap_sgtable, dma_map_page_attrs, dma_unmap_page_attrs, dma_mapping_error } = dma.mapping;
      const { DMA_BIDIRECTIONAL } = dma.constants;
      const dev = m.createDevice({ name: 'bench-sg-iommu', iommu: true, dmaMask: 64, coherentDmaMask: 64 });
      try {
        const t = new SgTable();
        if (sg_alloc_table_from_pages(t, scattered, n, 0, bytes, GFP_KERNEL) !== 0) throw new Error('sg table');
        const entries = t.orig_nents;
        const mapRounds = ctx.quick ? 3 : 7;
        // Map and unmap are timed separately within each round.
        const mapS: number[] = [];
        const unmapS: number[] = [];
        const perPageMap: number[] = [];
        const perPageUnmap: number[] = [];
        const handles: bigint[] = new Array<bigint>(n).fill(0n);
        const now = process.hrtime.bigint;
        const sgRound = (): void => {
          const t0 = now();
          const nents = dma_map_sgtable(dev, t, DMA_BIDIRECTIONAL, 0);
          const t1 = now();
          if (nents !== 0) throw new Error(`dma_map_sgtable returned ${nents}`);
          dma_unmap_sgtable(dev, t, DMA_BIDIRECTIONAL, 0);
          const t2 = now();
          mapS.push(Number(t1 - t0) / entries);
          unmapS.push(Number(t2 - t1) / entries);
        };
        const pageRound = (): void => {
          const t0 = now();
          for (let i = 0; i < n; i++) handles[i] = dma_map_page_attrs(dev, scattered[i]!, 0, PAGE, DMA_BIDIRECTIONAL, 0);
          const t1 = now();
          if (dma_mapping_error(dev, handles[0]!) !== 0) throw new Error('dma_map_page_attrs failed');
          for (let i = 0; i < n; i++) dma_unmap_page_attrs(dev, handles[i]!, PAGE, DMA_BIDIRECTIONAL, 0);
          const t2 = now();
          perPageMap.push(Number(t1 - t0) / n);
          perPageUnmap.push(Number(t2 - t1) / n);
        };
        sgRound();
        pageRound();
        mapS.length = unmapS.length = perPageMap.length = perPageUnmap.length = 0;
        for (let i = 0; i < mapRounds; i++) {
          if (i % 2 === 0) { sgRound(); pageRound(); } else { pageRound(); sgRound(); }
          await yieldToLoop();
        }
        const toRate = (xs: number[]): number[] => xs.map((ns) => 1e3 / ns); // M entries per second
        ctx.progress.step('dma_map_sgtable');
        ctx.results.push(makeResult({
          group: 'scatter', name: `dma_map_sgtable, IOMMU, ${entries} entries`, unit: 'M entries/s', better: 'higher',
          aLabel: 'dma_map_sgtable', bLabel: 'dma_map_page_attrs per page',
          note: `map only; ${sizeName(bytes)} in ${entries} one-page entries; the whole table gets one IOVA range`,
        }, toRate(mapS), toRate(perPageMap)));
        ctx.progress.step('dma_unmap_sgtable');
        ctx.results.push(makeResult({
          group: 'scatter', name: `dma_unmap_sgtable, IOMMU, ${entries} entries`, unit: 'M entries/s', better: 'higher',
          aLabel: 'dma_unmap_sgtable', bLabel: 'dma_unmap_page_attrs per page',
        }, toRate(unmapS), toRate(perPageUnmap)));
        sg_free_table(t);
      } finally {
        dev.destroy();
      }
    } finally {
      m.destroy();
    }
  },
};
