// DMA-API debug at its edges (kernel/dma/debug.c): the bounded pool of debug entries
// (dma_debug_entries=, dma_entry_alloc growing a page at a time, "debugging out of memory -
// disabling") and debug_dma_map_single's "maps memory from invalid area" for a buffer that is no
// memory of the machine.

import assert from 'node:assert/strict';
import { Machine } from '../lib/mm/machine';
import { GFP_KERNEL, PAGE_SIZE } from '../lib/mm/gfp';
import type { Page } from '../lib/mm/page';
import '../lib/dma/device';
import { DMA_MAPPING_ERROR, DMA_TO_DEVICE } from '../lib/dma/constants';
import { DmaDebugError } from '../lib/dma/debug';
import { DMA_DEBUG_DYNAMIC_ENTRIES, PREALLOC_DMA_DEBUG_ENTRIES } from '../lib/dma/debug_pool';
import { dma_map_page, dma_map_single, dma_mapping_error, dma_unmap_page } from '../lib/dma/mapping';
import { expectNoLeaks } from './helpers/leaks';

const MiB = 1 << 20;

describe('45 DMA-API debug: the entry pool and invalid areas', () => {
  expectNoLeaks();

  const small = (dmaDebugEntries?: number): Machine =>
    new Machine({ name: 'm45', ramPerNode: 2 * MiB, cmaSize: 0, hugepages: 'off', dmaDebug: true, emitWarnings: false, dmaDebugEntries });

  describe('the pool of entries (dma_debug_init, dma_entry_alloc)', () => {
    it('preallocates whole pages of entries, shared by every device of the machine', () => {
      using m = small(1);
      const a = m.createDevice({ name: 'a' }), b = m.createDevice({ name: 'b' });
      assert.equal(DMA_DEBUG_DYNAMIC_ENTRIES, 36, 'a 4 KiB page of 112-byte struct dma_debug_entry');
      assert.deepEqual(a.debug.pool, { nr_total_entries: 36, num_free_entries: 36, min_free_entries: 36, disabled: false });
      const page = m.alloc_pages(GFP_KERNEL, 0)!;
      const h = dma_map_page(a, page, 0, 64, DMA_TO_DEVICE);
      dma_mapping_error(a, h);
      assert.equal(b.debug.pool.num_free_entries, 35, "b sees a's entry taken from the one pool");
      dma_unmap_page(a, h, 64, DMA_TO_DEVICE);
      assert.deepEqual(b.debug.pool, { nr_total_entries: 36, num_free_entries: 36, min_free_entries: 35, disabled: false });
      m.__free_pages(page, 0);
      using d = new Machine({ name: 'm45d', ramPerNode: 2 * MiB, cmaSize: 0, hugepages: 'off', dmaDebug: true });
      assert.equal(d.createDevice().debug.pool.nr_total_entries, Math.ceil(PREALLOC_DMA_DEBUG_ENTRIES / 36) * 36, 'the default is 65536, rounded up to pages');
    });

    it("grows by a page of the machine's RAM, says so at each multiple of the preallocation (check 22, not an error), and disables itself when RAM runs out", () => {
      using m = small(36);
      const dev = m.createDevice({ name: 'nic' });
      const free0 = m.stats().nodes[0]!.freePages;
      const page = m.alloc_pages(GFP_KERNEL, 0)!;
      const handles: bigint[] = [];
      const map = (): bigint => {
        const h = dma_map_page(dev, page, 0, 64, DMA_TO_DEVICE);
        dma_mapping_error(dev, h);
        handles.push(h);
        return h;
      };
      for (let i = 0; i < 36; i++) map();
      assert.equal(dev.debug.pool.num_free_entries, 0);
      assert.equal(m.stats().nodes[0]!.freePages, free0 - 1);
      map();
      assert.deepEqual(dev.debug.pool, { nr_total_entries: 72, num_free_entries: 35, min_free_entries: 0, disabled: false });
      assert.equal(m.stats().nodes[0]!.freePages, free0 - 2, 'the pool took a page of the machine (GFP_ATOMIC)');
      assert.deepEqual(dev.debug.reports.map((r) => [r.check, r.message]), [[22, 'DMA-API: dma_debug_entry pool grown to 72 (200%)']]);
      assert.equal(dev.debug.errorCount, 0, 'a leak hint, not an error');

      // Take every page left, then use up the second page of entries: the pool cannot grow.
      const hog: Page[] = [];
      for (let p = m.alloc_pages(GFP_KERNEL, 0); p !== null; p = m.alloc_pages(GFP_KERNEL, 0)) hog.push(p);
      while (dev.debug.pool.num_free_entries > 0) map();
      assert.equal(dev.debug.enabled, true);
      const last = map();
      assert.notEqual(last, DMA_MAPPING_ERROR, 'the mapping itself does not depend on debugging');
      assert.equal(dev.debug.pool.disabled, true);
      assert.equal(dev.debug.enabled, false, 'global_disable: every hook returns at once from now on');
      assert.ok(m.warnings.some((w) => w.message === 'DMA-API: debugging out of memory - disabling'), JSON.stringify(m.warnings));
      dev.debug.enabled = true;
      assert.equal(dev.debug.enabled, false, 'the switch cannot bring it back');
      const other = m.createDevice({ name: 'other' });
      assert.equal(other.debug.enabled, false, 'a device created later is off too');
      dma_unmap_page(dev, 0x12345000n, 64, DMA_TO_DEVICE);
      assert.equal(dev.debug.errorCount, 0, 'an unknown unmap goes unreported once disabled');

      for (const h of handles) dma_unmap_page(dev, h, 64, DMA_TO_DEVICE);
      for (const p of hog) m.__free_pages(p, 0);
      m.__free_pages(page, 0);
      const before = m.warnings.length;
      m.destroy();
      assert.deepEqual(m.warnings.slice(before).map((w) => w.message), [], 'the pages the pool grew by are given back, not reported as leaks');
    });

    it('says nothing when a growth stays between two multiples of the preallocation', () => {
      using m = small(100); // three pages: 108 entries
      const dev = m.createDevice({ name: 'nvme' });
      assert.equal(dev.debug.pool.nr_total_entries, 108);
      const page = m.alloc_pages(GFP_KERNEL, 0)!;
      const handles: bigint[] = [];
      const grownTo = (total: number): string[] => {
        while (dev.debug.pool.nr_total_entries < total) {
          const h = dma_map_page(dev, page, 0, 64, DMA_TO_DEVICE);
          dma_mapping_error(dev, h);
          handles.push(h);
        }
        return dev.debug.reports.map((r) => r.message);
      };
      assert.deepEqual(grownTo(144), [], '144 % 108 = 36: not past a multiple');
      assert.deepEqual(grownTo(180), [], '180 % 108 = 72');
      assert.deepEqual(grownTo(216), ['DMA-API: dma_debug_entry pool grown to 216 (200%)']);
      for (const h of handles) dma_unmap_page(dev, h, 64, DMA_TO_DEVICE);
      m.__free_pages(page, 0);
    });

    it('dma_debug_entries=0 leaves debugging off from the start; the option is checked', () => {
      using m = small(0);
      const dev = m.createDevice();
      assert.equal(dev.debug.enabled, false);
      assert.ok(m.warnings.some((w) => w.message === 'DMA-API: debugging out of memory error - disabled'));
      assert.throws(() => small(-1), RangeError);
      assert.throws(() => small(2 ** 32), RangeError);
      assert.throws(() => small('64' as unknown as number), TypeError);
      assert.throws(() => new Machine({ dmaDebugEntry: 5 } as never), /dmaDebugEntries/);
    });
  });

  describe('debug_dma_map_single: memory of no machine (check 17)', () => {
    const NOWHERE = 0x1000;

    it('is reported as "maps memory from invalid area" and the mapping fails with DMA_MAPPING_ERROR', () => {
      using m = small();
      const dev = m.createDevice({ name: 'eth0' });
      const free0 = dev.debug.pool.num_free_entries;
      assert.equal(dma_map_single(dev, NOWHERE, 256, DMA_TO_DEVICE), DMA_MAPPING_ERROR);
      assert.deepEqual(dev.debug.reports.map((r) => [r.check, r.message]),
        [[17, 'DMA-API: eth0: device driver maps memory from invalid area [addr=0x1000] [len=256]']]);
      assert.equal(dev.debug.errorCount, 1);
      assert.equal(dev.debug.pool.num_free_entries, free0, 'nothing tracked');
      dev.debug.strict = true;
      assert.throws(() => dma_map_single(dev, NOWHERE, 256, DMA_TO_DEVICE), (e: DmaDebugError) => e instanceof DmaDebugError && e.report.check === 17);
    });

    it('without DMA-API debug it is a RangeError; bad arguments and other machines are refused first', () => {
      using m = new Machine({ name: 'm45q', ramPerNode: 2 * MiB, cmaSize: 0, hugepages: 'off', emitWarnings: false });
      using other = new Machine({ name: 'm45o', ramPerNode: 2 * MiB, cmaSize: 0, hugepages: 'off', emitWarnings: false });
      const dev = m.createDevice();
      assert.throws(() => dma_map_single(dev, NOWHERE, 256, DMA_TO_DEVICE), /0x1000 is not a linear-map or vmalloc address of machine 'm45q'/);
      using dbg = small();
      const ddev = dbg.createDevice();
      const foreign = other.page_address(other.alloc_pages(GFP_KERNEL, 0)!);
      assert.throws(() => dma_map_single(ddev, foreign, 256, DMA_TO_DEVICE), TypeError, "another machine's memory is misuse, not an invalid area");
      assert.throws(() => dma_map_single(ddev, NOWHERE, -1, DMA_TO_DEVICE), RangeError, 'the size is checked before anything is reported');
      assert.throws(() => dma_map_single(ddev, NOWHERE, PAGE_SIZE, 7 as never));
      assert.equal(ddev.debug.errorCount, 0);
      other.__free_pages(other.virt_to_page(foreign), 0);
    });
  });
});
