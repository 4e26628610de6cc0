// The map_benchmark loop (kernel/dma/map_benchmark.c, userspace port): dma_map_page_attrs and
// dma_unmap_page_attrs on an IOMMU device, timed in batches, for one granule after another.
// Runs on the main thread (imported) and as a worker thread (this file is the worker's entry):
// a Machine and its objects belong to one thread, so every thread builds its own machine and
// device and measures the same loop.

import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { Machine } from '../lib/mm/machine';
import { GFP_KERNEL } from '../lib/mm/gfp';
import { loadDma } from './dma';

export interface MapbenchJob {
  kind: 'mapbench';
  granules: number[];
  rounds: number;
  /** Pages mapped per timed batch (at most): the batch holds pages / granule mappings. */
  batchPages: number;
  maxBatch: number;
}

/** Per granule: ns per map and ns per unmap, one sample per round. */
export interface MapbenchSamples {
  granule: number;
  map: number[];
  unmap: number[];
}

const MiB = 1024 * 1024;
const PAGE = 4096;

export function runMapbench(job: MapbenchJob, name = 'bench-mapbench'): MapbenchSamples[] {
  const dma = loadDma();
  const { dma_map_page_attrs, dma_unmap_page_attrs, dma_mapping_error } = dma.mapping;
  const { DMA_BIDIRECTIONAL } = dma.constants;
  const m = new Machine({ name, ramPerNode: 16 * MiB, cmaSize: 0, emitWarnings: false });
  try {
    const dev = m.createDevice({ name: `${name}-iommu`, iommu: true, dmaMask: 64, coherentDmaMask: 64 });
    try {
      const maxGranule = Math.max(...job.granules);
      // One buffer of the largest granule (order 10 = 4 MiB), mapped over and over as map_benchmark does.
      const page = m.alloc_pages_node(0, GFP_KERNEL, Math.ceil(Math.log2(maxGranule)));
      if (page === null) throw new Error('bench: no pages for the map_benchmark buffer');
      const out: MapbenchSamples[] = [];
      const now = process.hrtime.bigint;
      for (const granule of job.granules) {
        const size = granule * PAGE;
        const k = Math.max(1, Math.min(job.maxBatch, Math.floor(job.batchPages / granule)));
        const handles: bigint[] = new Array<bigint>(k).fill(0n);
        const s: MapbenchSamples = { granule, map: [], unmap: [] };
        for (let r = -1; r < job.rounds; r++) {
          const t0 = now();
          for (let i = 0; i < k; i++) handles[i] = dma_map_page_attrs(dev, page, 0, size, DMA_BIDIRECTIONAL, 0);
          const t1 = now();
          for (let i = 0; i < k; i++) dma_unmap_page_attrs(dev, handles[i]!, size, DMA_BIDIRECTIONAL, 0);
          const t2 = now();
          if (dma_mapping_error(dev, handles[0]!) !== 0) throw new Error(`dma_map_page_attrs(${size}) failed`);
          if (r < 0) continue; // warm-up
          s.map.push(Number(t1 - t0) / k);
          s.unmap.push(Number(t2 - t1) / k);
        }
        out.push(s);
      }
      m.__free_pages(page, Math.ceil(Math.log2(maxGranule)));
      return out;
    } finally {
      dev.destroy();
    }
  } finally {
    m.destroy();
  }
}

if (!isMainThread && parentPort !== null && (workerData as MapbenchJob | undefined)?.kind === 'mapbench') {
  const port = parentPort;
  const job = workerData as MapbenchJob & { thread: number };
  try {
    port.postMessage({ ok: true, samples: runMapbench(job, `bench-mapbench-t${job.thread}`) });
  } catch (err) {
    port.postMessage({ ok: false, error: err instanceof Error ? (err.stack ?? err.message) : String(err) });
  }
}
