// Map/unmap rate on an IOMMU device like the kernel's map_benchmark: ns per dma_map_page_attrs and
// per dma_unmap_page_attrs for granules of 1 to 1024 pages, on one thread and on several worker
// threads at once (each with its own Machine and device: see mapbench-worker.ts).

import * as os from 'node:os';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { makeResult, yieldToLoop, type BenchContext, type BenchGroup } from './harness';
import { runMapbench, type MapbenchJob, type MapbenchSamples } from './mapbench-worker';

const FULL_GRANULES = [1, 4, 16, 64, 256, 1024];
const QUICK_GRANULES = [1, 16, 1024];

/** Threads for the concurrent run: the CPUs, at least 2. */
function threadCount(): number {
  return Math.max(2, Math.min(8, os.cpus().length));
}

function runWorker(job: MapbenchJob, thread: number): Promise<MapbenchSamples[]> {
  return new Promise((resolve, reject) => {
    const w = new Worker(path.join(__dirname, 'mapbench-worker.js'), { workerData: { ...job, thread } });
    let settled = false;
    w.once('message', (msg: { ok: boolean; samples?: MapbenchSamples[]; error?: string }) => {
      settled = true;
      if (msg.ok) resolve(msg.samples!);
      else reject(new Error(`mapbench worker ${thread}: ${msg.error}`));
    });
    w.once('error', (err) => {
      settled = true;
      reject(err);
    });
    w.once('exit', (code) => {
      if (!settled) reject(new Error(`mapbench worker ${thread} exited with code ${code} before reporting`));
    });
  });
}

export const mapbench: BenchGroup = {
  name: 'mapbench',
  steps: () => 2,
  async run(ctx: BenchContext): Promise<void> {
    const granules = ctx.quick ? QUICK_GRANULES : FULL_GRANULES;
    const job: MapbenchJob = {
      kind: 'mapbench', granules, rounds: ctx.quick ? 5 : 11,
      batchPages: ctx.quick ? 16384 : 65536, maxBatch: ctx.quick ? 2000 : 10000,
    };
    const threads = threadCount();
    ctx.progress.step(`map_benchmark, 1 thread, granules ${granules.join(',')}`);
    const single = runMapbench(job);
    await yieldToLoop();
    ctx.progress.step(`map_benchmark, ${threads} threads at once`);
    const perThread = await Promise.all(Array.from({ length: threads }, (_, t) => runWorker(job, t)));
    const emit = (samples: MapbenchSamples[][], label: string): void => {
      for (const g of granules) {
        const pick = (op: 'map' | 'unmap'): number[] => samples.flatMap((s) => s.find((x) => x.granule === g)![op]);
        for (const op of ['map', 'unmap'] as const) {
          ctx.results.push(makeResult({
            group: 'mapbench', name: `dma_${op}_page_attrs, ${g} page${g === 1 ? '' : 's'}, ${label}`, unit: 'ns/call',
            aLabel: label, note: samples.length > 1 ? 'all rounds of all threads pooled' : undefined,
          }, pick(op)));
        }
      }
    };
    emit([single], '1 thread');
    emit(perThread, `${threads} threads, per thread`);
  },
};
