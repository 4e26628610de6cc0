// Translation: virtual address -> struct page (virt_to_page, dma_common_vaddr_to_page,
// vmalloc_to_page: pure arithmetic, no native call) and virtual -> host physical through
// /proc/self/pagemap, batched, against one read per page as DPDK's rte_mem_virt2phy does.

import { native } from '../lib/native';
import { Machine } from '../lib/mm/machine';
import { virt_to_page, vmalloc_to_page } from '../lib/mm/kernel';
import { vfree, vmalloc } from '../lib/mm/vmalloc';
import { PFN_HIDDEN, readPfns } from '../lib/os/pagemap';
import {
  compare, consume, countNativeCalls, record, sizeName, targets, yieldToLoop,
  type BenchContext, type BenchGroup, type BenchResult,
} from './harness';
import { loadDma } from './dma';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const PAGE = 4096;
/** Distinct addresses each lookup loop cycles through (a power of two). */
const SPREAD = 4096;

function lookupTarget(calls: number) {
  return (r: BenchResult): { text: string; met: boolean } => ({
    text: `< 50 ns, no native call (${calls} made)`,
    met: r.a.median < 50 && calls === 0,
  });
}

export const translation: BenchGroup = {
  name: 'translation',
  steps: () => 6,
  async run(ctx: BenchContext): Promise<void> {
    const bytes = ctx.quick ? 64 * MiB : GiB;
    const pages = bytes / PAGE;
    const m = new Machine({ name: 'bench-xlate', ramPerNode: bytes, cmaSize: 0, emitWarnings: false });
    try {
      const ramBase = m.segments[0]!.address;
      const addrs = new Float64Array(SPREAD);
      const pageAddrs = new Float64Array(SPREAD);
      for (let i = 0; i < SPREAD; i++) {
        pageAddrs[i] = ramBase + ((i * 7919) % pages) * PAGE;
        addrs[i] = pageAddrs[i]! + (i % 64) * 8;
      }
      const one = new Float64Array(1);
      const lookups = ctx.quick ? 200_000 : 1_000_000;
      const nativeBaseline = {
        label: 'pagemap pread, 1 page',
        run(n: number): void {
          for (let i = 0; i < n; i++) readPfns(pageAddrs[i & (SPREAD - 1)]!, 1, one);
          consume(one[0]! | 0);
        },
      };

      // virt_to_page: the kernel-named free function (finds the machine from the address).
      virt_to_page(addrs[0]!);
      const v2pCalls = countNativeCalls(native, () => virt_to_page(addrs[1]!));
      record(ctx, 'virt_to_page', () => compare({
        group: 'translation', name: 'virt_to_page', rounds: ctx.rounds, ops: lookups, bOps: ctx.quick ? 5_000 : 20_000,
        a: {
          label: 'virt_to_page',
          run(n: number): void {
            let acc = 0;
            for (let i = 0; i < n; i++) acc += virt_to_page(addrs[i & (SPREAD - 1)]!).pfn;
            consume(acc);
          },
        },
        b: nativeBaseline,
        target: lookupTarget(v2pCalls),
        note: `${SPREAD} addresses spread over ${sizeName(bytes)} of RAM; baseline: the host PFN of one page via pagemap`,
      }));
      await yieldToLoop();

      const dma = loadDma();
      const { dma_common_vaddr_to_page } = dma.helpers;
      dma_common_vaddr_to_page(addrs[0]!);
      const calls = countNativeCalls(native, () => dma_common_vaddr_to_page(addrs[1]!));
      record(ctx, 'dma_common_vaddr_to_page', () => compare({
        group: 'translation', name: 'dma_common_vaddr_to_page (linear)', rounds: ctx.rounds, ops: lookups, bOps: ctx.quick ? 5_000 : 20_000,
        a: {
          label: 'dma_common_vaddr_to_page',
          run(n: number): void {
            let acc = 0;
            for (let i = 0; i < n; i++) acc += dma_common_vaddr_to_page(addrs[i & (SPREAD - 1)]!)!.pfn;
            consume(acc);
          },
        },
        b: nativeBaseline,
        target: lookupTarget(calls),
        note: 'linear-map addresses; baseline: the host PFN of one page via pagemap',
      }));
      await yieldToLoop();

      // vmalloc_to_page over a 16 MiB vmalloc area (4096 pages).
      const vsize = 16 * MiB;
      const vaddr = vmalloc(m, vsize);
      if (vaddr === null) throw new Error('bench: vmalloc(16 MiB) failed');
      try {
        const vaddrs = new Float64Array(SPREAD);
        for (let i = 0; i < SPREAD; i++) vaddrs[i] = vaddr + ((i * 7919) % (vsize / PAGE)) * PAGE + (i % 64) * 8;
        const calls = countNativeCalls(native, () => vmalloc_to_page(vaddrs[1]!));
        record(ctx, 'vmalloc_to_page', () => compare({
          group: 'translation', name: 'vmalloc_to_page', rounds: ctx.rounds, ops: lookups,
          a: {
            label: 'vmalloc_to_page',
            run(n: number): void {
              let acc = 0;
              for (let i = 0; i < n; i++) acc += vmalloc_to_page(vaddrs[i & (SPREAD - 1)]!)!.pfn;
              consume(acc);
            },
          },
          target: (r) => ({ text: `< 50 ns, no native call (${calls} made)`, met: r.a.median < 50 && calls === 0 }),
          note: `a 16 MiB vmalloc area among ${m.stats().vmallocAreas} (binary search, then the page array)`,
        }));
      } finally {
        vfree(m, vaddr);
      }
      await yieldToLoop();

      // Host physical translation of the whole RAM segment.
      const out = new Float64Array(pages);
      readPfns(ramBase, pages, out);
      if (out[0] === PFN_HIDDEN) ctx.notes.push('translation: host PFNs are hidden (no CAP_SYS_ADMIN): pagemap timings still hold, the PFNs read as 0');
      const oneRaw = new BigUint64Array(1);
      const batched = {
        label: 'readPfns, one pread',
        run(n: number): void {
          for (let done = 0; done < n; done += pages) readPfns(ramBase, Math.min(pages, n - done), out);
          consume(out[n >> 1]! | 0);
        },
      };
      const xlateRounds = ctx.quick ? 3 : 5;
      record(ctx, `pagemap ${sizeName(bytes)}, per page reopen`, () => compare({
        group: 'translation', name: `physical translation of ${sizeName(bytes)}`, rounds: xlateRounds, ops: pages,
        a: batched,
        b: {
          label: 'open+pread+close per page (rte_mem_virt2phy)',
          run(n: number): void {
            for (let i = 0; i < n; i++) native.pagemapRead(ramBase + (i % pages) * PAGE, 1, oneRaw, true);
            consume(Number(oneRaw[0]! & 0xffffn));
          },
        },
        unit: 'ns/page',
        target: targets.ratioAtLeast(20, '>= 20x faster'),
        note: `${pages} pages; ms for the whole range = ns/page x ${pages / 1e6}`,
      }));
      await yieldToLoop();
      record(ctx, `pagemap ${sizeName(bytes)}, per page cached fd`, () => compare({
        group: 'translation', name: `physical translation of ${sizeName(bytes)}, cached fd`, rounds: xlateRounds, ops: pages,
        a: batched,
        b: {
          label: 'pread per page (cached fd)',
          run(n: number): void {
            for (let i = 0; i < n; i++) native.pagemapRead(ramBase + (i % pages) * PAGE, 1, oneRaw, false);
            consume(Number(oneRaw[0]! & 0xffffn));
          },
        },
        unit: 'ns/page',
        note: 'the per-page baseline without the open/close (ixy-style cached descriptor)',
      }));
      await yieldToLoop();
      // The same range through the machine API (allocates the result array per call).
      record(ctx, `hostPfns ${sizeName(bytes)}`, () => compare({
        group: 'translation', name: `machine.hostPfns of ${sizeName(bytes)}`, rounds: xlateRounds, ops: pages,
        a: {
          label: 'machine.hostPfns',
          run(n: number): void {
            let acc = 0;
            for (let done = 0; done < n; done += pages) acc += m.hostPfns(ramBase, Math.min(pages, n - done)).length;
            consume(acc);
          },
        },
        b: batched,
        unit: 'ns/page',
        note: 'the Machine API against readPfns into a reused array (ratio < 1: the cost of the fresh result array)',
      }));
    } finally {
      m.destroy();
    }
  },
};
