// Device coherent pools through the mapping layer (cases 45-48, and 11-13 via dma_alloc_attrs and
// dma_common_mmap), and DMA-API debug (prior-art-dma.md §4) wired through lib/dma/mapping.ts.

import assert from 'node:assert/strict';
import type { Machine } from '../lib/mm/machine';
import '../lib/dma/device';
import type { Device } from '../lib/dma/device';
import { GFP_KERNEL, PAGE_SIZE } from '../lib/mm/gfp';
import type { Page } from '../lib/mm/page';
import {
  dma_alloc_from_dev_coherent, dma_declare_coherent_memory, dma_release_coherent_memory, dma_release_from_dev_coherent,
} from '../lib/dma/coherent';
import { DMA_BIDIRECTIONAL, DMA_FROM_DEVICE, DMA_TO_DEVICE, EBUSY, EINVAL, ENODEV, ENXIO } from '../lib/dma/constants';
import { DmaDebugError } from '../lib/dma/debug';
import {
  dma_alloc_attrs, dma_alloc_coherent, dma_alloc_pages, dma_free_attrs, dma_free_coherent, dma_free_pages,
  dma_map_sg, dma_map_single, dma_mapping_error, dma_mmap_attrs, dma_sync_single_for_cpu, dma_unmap_sg,
  dma_unmap_single,
} from '../lib/dma/mapping';
import { dma_common_alloc_pages, dma_common_free_pages, dma_common_mmap } from '../lib/dma/ops_helpers';
import { SgTable, for_each_sg, sg_alloc_table, sg_set_page, type Scatterlist } from '../lib/dma/scatterlist';
import { expectNoLeaks } from './helpers/leaks';
import { useDmaMachine } from './helpers/dma-fixtures';
import { spyOps } from './helpers/spy-ops';

const S3 = 3 * PAGE_SIZE;
const BASE = 0x9000_0000n;

describe('62 coherent pools and DMA-API debug through the mapping layer', () => {
  expectNoLeaks();
  // Nested so that the machine is destroyed before the leak check runs.
  describe('on one machine', () => {
    const fx = useDmaMachine('cd62');
    const { calls, held, buffer, vma } = fx;
    let m: Machine;
    before(() => {
      m = fx.m;
    });

    describe('device coherent pool', () => {
      let dev: Device;
      let pool: { page: Page; cpu: number };
      beforeEach(() => {
        dev = m.createDevice({
          name: 'pool',
          ops: spyOps(calls, {
            alloc: (...args: unknown[]): null => {
              calls.push({ op: 'alloc', args });
              return null;
            },
            free: (...args: unknown[]): void => {
              calls.push({ op: 'free', args });
            },
            mmap: dma_common_mmap,
          }),
        });
        pool = buffer(4);
        m.view(pool.cpu, 16 * PAGE_SIZE).fill(0xee);
        assert.equal(dma_declare_coherent_memory(dev, BigInt(pool.page.pfn) << 12n, BASE, 16 * PAGE_SIZE), 0);
      });
      afterEach(() => {
        dma_release_coherent_memory(dev);
        dev.destroy();
      });

      it('case 45: 16-page pool, S = 3 pages -> pool page 0, then page 4; handle = base + 4096*page; only S bytes zeroed', () => {
        const h = { value: 0n };
        const a = dma_alloc_attrs(dev, S3, h, GFP_KERNEL, 0);
        assert.equal(a, pool.cpu);
        assert.equal(h.value, BASE);
        const bytes = m.view(pool.cpu, 4 * PAGE_SIZE);
        assert.ok(bytes.subarray(0, S3).every((b) => b === 0));
        assert.ok(bytes.subarray(S3).every((b) => b === 0xee), 'the 4th page of the order-2 run is not zeroed');
        const b = dma_alloc_coherent(dev, S3, h, GFP_KERNEL);
        assert.equal(b, pool.cpu + 4 * PAGE_SIZE);
        assert.equal(h.value, BASE + 4n * 4096n);
        assert.equal(dev.dma_mem?.used, 8);
        assert.deepEqual(calls, [], 'ops.alloc never runs');
      });

      it('case 46: pool full, or S > pool size -> NULL with no CMA, buddy or ops fallback', () => {
        const cma = m.dma_contiguous_default_area;
        const free = m.buddy.freePages(0);
        const h = { value: 5n };
        assert.equal(dma_alloc_attrs(dev, 17 * PAGE_SIZE, h, GFP_KERNEL, 0), null);
        assert.equal(h.value, 5n);
        for (let i = 0; i < 4; i++) assert.ok(dma_alloc_attrs(dev, S3, h, GFP_KERNEL, 0) !== null);
        assert.equal(dma_alloc_attrs(dev, PAGE_SIZE, h, GFP_KERNEL, 0), null);
        assert.deepEqual(calls, []);
        assert.equal(m.buddy.freePages(0), free);
        assert.equal(cma?.available, cma?.count);
        // The raw helper says so: 1 (claimed) with a null result.
        const ret = { value: 1 as number | null };
        assert.equal(dma_alloc_from_dev_coherent(dev, PAGE_SIZE, h, ret), 1);
        assert.equal(ret.value, null);
      });

      it('case 47: dma_free_attrs on a pool address -> region of get_order(S) released; no ops/direct free', () => {
        const h = { value: 0n };
        const a = dma_alloc_attrs(dev, S3, h, GFP_KERNEL, 0);
        const b = dma_alloc_attrs(dev, S3, h, GFP_KERNEL, 0);
        assert.ok(a !== null && b !== null);
        dma_free_attrs(dev, S3, a, BASE, 0);
        assert.equal(dev.dma_mem?.used, 4);
        assert.deepEqual(calls, []);
        assert.equal(dma_alloc_attrs(dev, S3, h, GFP_KERNEL, 0), a, 'the region is free again');
        dma_free_coherent(dev, S3, b, h.value);
        // Not pool memory: 0.
        assert.equal(dma_release_from_dev_coherent(dev, 0, pool.cpu + 16 * PAGE_SIZE), 0);
      });

      it('case 48: declare twice -> -EBUSY; size 0 -> -EINVAL; NULL device -> -ENODEV; not machine memory -> -EINVAL', () => {
        const phys = BigInt(pool.page.pfn) << 12n;
        assert.equal(dma_declare_coherent_memory(dev, phys, BASE, 16 * PAGE_SIZE), -EBUSY);
        const other = m.createDevice({ name: 'other' });
        assert.equal(dma_declare_coherent_memory(other, phys, BASE, 0), -EINVAL);
        assert.equal(dma_declare_coherent_memory(null, phys, BASE, PAGE_SIZE), -ENODEV);
        assert.equal(dma_declare_coherent_memory(other, 0x1000n, BASE, PAGE_SIZE), -EINVAL, 'below RAM');
        const ramEnd = BigInt(m.segments[0]!.startPfn + m.segments[0]!.pages) << 12n;
        assert.equal(dma_declare_coherent_memory(other, ramEnd - 4096n, BASE, 2 * PAGE_SIZE), -EINVAL, 'runs off its segment');
        assert.equal(other.dma_mem, null);
        other.destroy();
      });

      it('case 11: pool memory from dma_alloc_attrs, mmapped -> pool path, pfn = pfn_base + page index + pgoff', () => {
        const h = { value: 0n };
        dma_alloc_attrs(dev, S3, h, GFP_KERNEL, 0);
        const cpu = dma_alloc_attrs(dev, S3, h, GFP_KERNEL, 0);
        assert.equal(cpu, pool.cpu + 4 * PAGE_SIZE);
        const v = vma(2, 1);
        assert.equal(dma_mmap_attrs(dev, v, cpu, h.value, S3, 0), 0);
        assert.equal(v.remaps[0]?.pfn, pool.page.pfn + 4 + 1);
        v.view(0, 4).write('pool');
        assert.equal(m.view(pool.cpu + 5 * PAGE_SIZE, 4).toString(), 'pool');
        assert.equal(m.hostPfns(v.vm_start, 1)[0], m.hostPfns(pool.cpu + 5 * PAGE_SIZE, 1)[0]);
      });

      it('case 12: pool claims, bounds fail -> -ENXIO, no fallthrough to the generic path', () => {
        const h = { value: 0n };
        const cpu = dma_alloc_attrs(dev, S3, h, GFP_KERNEL, 0);
        assert.ok(cpu !== null);
        const v = vma(3, 1);
        assert.equal(dma_common_mmap(dev, v, cpu, h.value, S3, 0), -ENXIO);
        assert.ok(v.isEmpty);
      });

      it('case 13: memory outside the pool -> generic path', () => {
        const other = buffer(2);
        const v = vma(3);
        assert.equal(dma_common_mmap(dev, v, other.cpu, 0n, S3, 0), 0);
        assert.equal(v.remaps[0]?.pfn, other.page.pfn);
        v.view(2 * PAGE_SIZE, 3).write('gen');
        assert.equal(m.view(other.cpu + 2 * PAGE_SIZE, 3).toString(), 'gen');
      });
    });

    describe('DMA-API debug through the mapping layer', () => {
      let dev: Device;
      beforeEach(() => {
        dev = m.createDevice({
          name: 'dbg',
          debug: true,
          ops: spyOps(calls, {
            alloc: (_d: Device, size: number, h: { value: bigint }): number | null => {
              const page = m.alloc_pages_node(0, GFP_KERNEL, 0);
              if (page === null || size > PAGE_SIZE) return null;
              h.value = 0x5000_0000n + (BigInt(page.pfn) << 12n);
              return m.page_address(page);
            },
            free: (_d: Device, _size: number, vaddr: number): void => {
              m.__free_pages(m.virt_to_page(vaddr), 0);
            },
            alloc_pages_op: dma_common_alloc_pages,
            free_pages: dma_common_free_pages,
            map_sg: (_d: Device, sg: Scatterlist, nents: number): number => {
              for_each_sg(sg, nents, (s) => {
                s.dma_address = 0x6000_0000n + BigInt(s.page_link?.pfn ?? 0) * 4096n;
                s.dma_length = s.length;
              });
              return nents;
            },
            unmap_sg: (): void => undefined,
          }),
        });
        dev.debug.maxPrinted = 0;
      });
      afterEach(() => dev.destroy());

      const last = (d: Device): { check: number; message: string } => {
        const r = d.debug.reports[d.debug.reports.length - 1];
        assert.ok(r, 'a report was made');
        return r;
      };

      it('check 1: double unmap -> "has not allocated" with [device address=...] [size=...]', () => {
        const { cpu } = buffer(0);
        const h = dma_map_single(dev, cpu, PAGE_SIZE, DMA_TO_DEVICE);
        assert.equal(dma_mapping_error(dev, h), 0);
        dma_unmap_single(dev, h, PAGE_SIZE, DMA_TO_DEVICE);
        assert.equal(dev.debug.reports.length, 0, 'a clean map/check/unmap reports nothing');
        dma_unmap_single(dev, h, PAGE_SIZE, DMA_TO_DEVICE);
        const r = last(dev);
        assert.equal(r.check, 1);
        assert.match(r.message, new RegExp(`\\[device address=0x${h.toString(16).padStart(16, '0')}\\] \\[size=4096 bytes\\]`));
        assert.deepEqual(calls.map((c) => c.op), ['map_page', 'unmap_page', 'unmap_page']);
      });

      it('check 3: unmap with a different size -> [map size=4096 bytes] [unmap size=8192 bytes]', () => {
        const { cpu } = buffer(1);
        const h = dma_map_single(dev, cpu, PAGE_SIZE, DMA_FROM_DEVICE);
        dma_mapping_error(dev, h);
        dma_unmap_single(dev, h, 2 * PAGE_SIZE, DMA_FROM_DEVICE);
        const r = last(dev);
        assert.equal(r.check, 3);
        assert.match(r.message, /\[map size=4096 bytes\] \[unmap size=8192 bytes\]/);
      });

      it('check 8: dma_mapping_error never called -> "failed to check map error" [mapped as single]', () => {
        const { cpu } = buffer(0);
        const h = dma_map_single(dev, cpu + 16, 64, DMA_TO_DEVICE);
        dma_unmap_single(dev, h, 64, DMA_TO_DEVICE);
        const r = last(dev);
        assert.equal(r.check, 8);
        assert.match(r.message, /failed to check map error .*\[size=64 bytes\] \[mapped as single\]/);
      });

      it('check 11: sync in the wrong direction -> [mapped with DMA_TO_DEVICE] [synced with DMA_FROM_DEVICE]', () => {
        const { cpu } = buffer(0);
        const h = dma_map_single(dev, cpu, PAGE_SIZE, DMA_TO_DEVICE);
        dma_mapping_error(dev, h);
        dma_sync_single_for_cpu(dev, h, PAGE_SIZE, DMA_FROM_DEVICE);
        const checks = dev.debug.reports.map((r) => r.check);
        assert.ok(checks.includes(11), `checks ${checks.join(',')}`);
        const r = dev.debug.reports.find((x) => x.check === 11);
        assert.match(r?.message ?? '', /\[mapped with DMA_TO_DEVICE\] \[synced with DMA_FROM_DEVICE\]/);
        dma_unmap_single(dev, h, PAGE_SIZE, DMA_TO_DEVICE);
      });

      it('check 5 and 6: coherent free with another CPU address; sg unmap with another nents', () => {
        const h = { value: 0n };
        const cpu = dma_alloc_attrs(dev, PAGE_SIZE, h, GFP_KERNEL, 0);
        assert.ok(cpu !== null);
        const { cpu: wrong } = buffer(0);
        dma_free_attrs(dev, PAGE_SIZE, wrong, h.value, 0);
        assert.equal(last(dev).check, 5);
        assert.match(last(dev).message, /\[cpu alloc address=0x[0-9a-f]{16}\] \[cpu free address=0x[0-9a-f]{16}\]/);
        m.__free_pages(m.virt_to_page(cpu), 0); // the spy freed `wrong`'s page... give the real one back too
        held.splice(held.findIndex((x) => m.page_address(x.page) === wrong), 1);

        const sgt = new SgTable();
        assert.equal(sg_alloc_table(sgt, 2, GFP_KERNEL), 0);
        const a = buffer(0);
        const b = buffer(0);
        sg_set_page(sgt.sgl!, a.page, PAGE_SIZE, 0);
        let second: Scatterlist | null = null;
        for_each_sg(sgt.sgl, 2, (s, i) => {
          if (i === 1) second = s;
        });
        sg_set_page(second!, b.page, PAGE_SIZE, 0);
        assert.equal(dma_map_sg(dev, sgt.sgl, 2, DMA_BIDIRECTIONAL), 2);
        dma_unmap_sg(dev, sgt.sgl, 1, DMA_BIDIRECTIONAL);
        assert.ok(dev.debug.reports.some((r) => r.check === 6 && /\[map count=2\] \[unmap count=1\]/.test(r.message)));
      });

      it('dma_alloc_pages / dma_free_pages are tracked: free with a different size -> check 3', () => {
        const h = { value: 0n };
        const page = dma_alloc_pages(dev, S3, h, DMA_BIDIRECTIONAL, GFP_KERNEL);
        assert.ok(page !== null);
        assert.equal(dev.debug.activeEntries(), 1);
        dma_free_pages(dev, 2 * PAGE_SIZE + 1, page, h.value, DMA_BIDIRECTIONAL);
        const r = last(dev);
        assert.equal(r.check, 3);
        assert.match(r.message, /\[map size=12288 bytes\] \[unmap size=8193 bytes\]/);
        assert.equal(dev.debug.activeEntries(), 0);
      });

      it('check 21: teardown with mappings held -> [count=2] and one leaked entry\'s details', () => {
        const { cpu } = buffer(1);
        const h1 = dma_map_single(dev, cpu, PAGE_SIZE, DMA_TO_DEVICE);
        const h2 = dma_map_single(dev, cpu + PAGE_SIZE, 100, DMA_FROM_DEVICE);
        dma_mapping_error(dev, h1);
        dma_mapping_error(dev, h2);
        dev.destroy();
        const r = last(dev);
        assert.equal(r.check, 21);
        assert.match(r.message, /pending DMA allocations while released from device \[count=2\]/);
        assert.match(r.message, /\[device address=0x[0-9a-f]{16}\] \[size=\d+ bytes\] \[mapped with DMA_(TO|FROM)_DEVICE\] \[mapped as single\]/);
      });

      it('strict mode throws DmaDebugError after doing the work (double unmap; sg unmap still unmaps)', () => {
        const unmap_sg = (): void => {
          calls.push({ op: 'unmap_sg', args: [] });
        };
        const strict = m.createDevice({ name: 'strict', debug: 'strict', ops: spyOps(calls, { unmap_sg }) });
        const { cpu } = buffer(0);
        const h = dma_map_single(strict, cpu, PAGE_SIZE, DMA_TO_DEVICE);
        dma_mapping_error(strict, h);
        dma_unmap_single(strict, h, PAGE_SIZE, DMA_TO_DEVICE);
        assert.throws(() => dma_unmap_single(strict, h, PAGE_SIZE, DMA_TO_DEVICE), (err: unknown) => {
          assert.ok(err instanceof DmaDebugError);
          assert.equal(err.report.check, 1);
          assert.match(err.message, /\[device address=0x[0-9a-f]{16}\] \[size=4096 bytes\]/);
          return true;
        });
        assert.equal(calls.filter((c) => c.op === 'unmap_page').length, 2, 'the unmap ran before the throw');
        const sgt = new SgTable();
        sg_alloc_table(sgt, 1, GFP_KERNEL);
        sg_set_page(sgt.sgl!, m.virt_to_page(cpu), PAGE_SIZE, 0);
        assert.throws(() => dma_unmap_sg(strict, sgt.sgl, 1, DMA_TO_DEVICE), DmaDebugError);
        assert.ok(calls.some((c) => c.op === 'unmap_sg'), 'dma_unmap_sg unmapped despite the debug throw');
        strict.destroy();
      });
    });
  });
});
