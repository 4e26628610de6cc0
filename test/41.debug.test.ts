// DMA-API debug tracker (lib/dma/debug.ts, mirroring kernel/dma/debug.c): one test per misuse
// check, plus strict mode, the disabled tracker, warnings, and clean usage staying silent.

import assert from 'node:assert/strict';
import { Page, PAGE_CONSTRUCTION_KEY, type PageSegment } from '../lib/mm/page';
import {
  DMA_BIDIRECTIONAL,
  DMA_FROM_DEVICE,
  DMA_MAPPING_ERROR,
  DMA_TO_DEVICE,
  DMA_ATTR_SKIP_CPU_SYNC,
} from '../lib/dma/constants';
import { DmaDebug, DmaDebugError, MAP_ERR_CHECKED, type DmaDebugReport } from '../lib/dma/debug';
import { SgTable, for_each_sg, sg_alloc_table, sg_set_page } from '../lib/dma/scatterlist';

const segment: PageSegment = { kind: 'ram', nid: 0, startPfn: 0, pages: 1 << 20, fd: -1, mapGranule: 4096 };
const page = (pfn: number): Page => new Page(pfn, segment, null, PAGE_CONSTRUCTION_KEY);

/** A quiet tracker: records everything, prints nothing. */
const tracker = (): DmaDebug => new DmaDebug({ enabled: true, strict: false, maxPrinted: 0 });

const checks = (d: DmaDebug): number[] => d.reports.map((r) => r.check);

function only(d: DmaDebug, check: number): DmaDebugReport {
  const found = d.reports.filter((r) => r.check === check);
  assert.equal(found.length, 1, `one report of check ${check}, got ${JSON.stringify(checks(d))}`);
  return found[0] as DmaDebugReport;
}

/** dma_map_page + dma_mapping_error, as a careful driver does. */
function mapChecked(d: DmaDebug, dev: { name: string }, addr: bigint, size: number, dir: number, single = false): void {
  d.debug_dma_map_page(dev, page(Number(addr >> 12n)), 0, size, dir, addr, single);
  d.debug_dma_mapping_error(dev, addr);
}

/** An sg table of `n` one-page entries at bus addresses 0x100000, 0x101000, ... */
function mappedTable(n: number): SgTable {
  const t = new SgTable();
  assert.equal(sg_alloc_table(t, n, 0), 0);
  for_each_sg(t.sgl, n, (sg, i) => {
    sg_set_page(sg, page(0x100 + i), 4096, 0);
    sg.dma_address = 0x100000n + BigInt(i) * 4096n;
    sg.dma_length = 4096;
  });
  return t;
}

describe('DMA-API debug', () => {
  const dev = { name: 'nic0' };

  it('check 1: unmapping an address never mapped, and a double unmap', () => {
    const d = tracker();
    d.debug_dma_unmap_page(dev, 0x1000n, 4096, DMA_TO_DEVICE);
    const r = only(d, 1);
    assert.equal(r.device, 'nic0');
    assert.equal(
      r.message,
      'DMA-API: nic0: device driver tries to free DMA memory it has not allocated ' +
        '[device address=0x0000000000001000] [size=4096 bytes]',
    );
    d.clear();
    mapChecked(d, dev, 0x2000n, 4096, DMA_TO_DEVICE);
    d.debug_dma_unmap_page(dev, 0x2000n, 4096, DMA_TO_DEVICE);
    d.debug_dma_unmap_page(dev, 0x2000n, 4096, DMA_TO_DEVICE);
    assert.deepEqual(checks(d), [1]);
  });

  it('check 1 is per device: another device cannot free my mapping', () => {
    const d = tracker();
    mapChecked(d, dev, 0x2000n, 4096, DMA_TO_DEVICE);
    d.debug_dma_unmap_page({ name: 'other' }, 0x2000n, 4096, DMA_TO_DEVICE);
    assert.equal(only(d, 1).device, 'other');
    assert.equal(d.activeEntries(dev), 1);
  });

  it('check 2: unmapping DMA_MAPPING_ERROR', () => {
    const d = tracker();
    d.debug_dma_map_page(dev, page(1), 0, 4096, DMA_TO_DEVICE, DMA_MAPPING_ERROR, false);
    assert.equal(d.activeEntries(), 0, 'a failed mapping is not tracked');
    d.debug_dma_unmap_page(dev, DMA_MAPPING_ERROR, 4096, DMA_TO_DEVICE);
    assert.equal(only(d, 2).message, 'DMA-API: nic0: device driver tries to free an invalid DMA memory address');
  });

  it('check 3: unmap size differs from map size', () => {
    const d = tracker();
    mapChecked(d, dev, 0x10000n, 4096, DMA_TO_DEVICE);
    d.debug_dma_unmap_page(dev, 0x10000n, 8192, DMA_TO_DEVICE);
    assert.deepEqual(checks(d), [3]);
    const r = only(d, 3);
    assert.ok(r.message.includes('device driver frees DMA memory with different size'));
    assert.ok(r.message.endsWith('[device address=0x0000000000010000] [map size=4096 bytes] [unmap size=8192 bytes]'));
    assert.equal(r.entry?.size, 4096);
    assert.ok((r.entry?.stack ?? '').length > 0, 'the report carries where it was mapped');
    assert.equal(d.activeEntries(), 0, 'the entry is released anyway');
  });

  it('check 4: released with the wrong function', () => {
    const d = tracker();
    mapChecked(d, dev, 0x3000n, 4096, DMA_TO_DEVICE, true);
    d.debug_dma_unmap_page(dev, 0x3000n, 4096, DMA_TO_DEVICE, false);
    assert.ok(only(d, 4).message.endsWith(
      'device driver frees DMA memory with wrong function [device address=0x0000000000003000] [size=4096 bytes] ' +
        '[mapped as single] [unmapped as page]',
    ));
    d.clear();
    d.debug_dma_alloc_coherent(dev, 8192, 0x8000n, 0x7f00_0000_0000);
    d.debug_dma_unmap_page(dev, 0x8000n, 8192, DMA_BIDIRECTIONAL);
    assert.ok(only(d, 4).message.includes('[mapped as coherent] [unmapped as page]'));
  });

  it('check 4 is not raised for single vs page when the unmap does not say which', () => {
    const d = tracker();
    mapChecked(d, dev, 0x3000n, 4096, DMA_TO_DEVICE, true);
    d.debug_dma_unmap_page(dev, 0x3000n, 4096, DMA_TO_DEVICE);
    assert.deepEqual(checks(d), []);
  });

  it('check 5: coherent free with a different CPU address', () => {
    const d = tracker();
    d.debug_dma_alloc_coherent(dev, 4096, 0x9000n, 0x7f00_0000_1000);
    d.debug_dma_free_coherent(dev, 4096, 0x7f00_0000_2000, 0x9000n);
    assert.ok(only(d, 5).message.endsWith(
      'device driver frees DMA memory with different CPU address [device address=0x0000000000009000] ' +
        '[size=4096 bytes] [cpu alloc address=0x00007f0000001000] [cpu free address=0x00007f0000002000]',
    ));
  });

  it('check 5: dma_free_pages with a different page', () => {
    const d = tracker();
    d.debug_dma_alloc_pages(dev, page(0x10), 4096, DMA_FROM_DEVICE, 0x10000n);
    d.debug_dma_free_pages(dev, page(0x11), 4096, DMA_FROM_DEVICE, 0x10000n);
    assert.ok(only(d, 5).message.includes('[cpu alloc address=0x0000000000010000] [cpu free address=0x0000000000011000]'));
  });

  it('check 6: sg unmap with a different nents', () => {
    const d = tracker();
    const t = mappedTable(3);
    d.debug_dma_map_sg(dev, t.sgl, 3, 3, DMA_TO_DEVICE);
    assert.equal(d.activeEntries(dev), 3);
    d.debug_dma_unmap_sg(dev, t.sgl, 2, DMA_TO_DEVICE);
    const six = d.reports.filter((r) => r.check === 6);
    assert.equal(six.length, 2, 'one per unmapped segment');
    assert.ok(six.every((r) => r.message.endsWith(
      'device driver frees DMA sg list with different entry count [map count=3] [unmap count=2]',
    )));
    assert.deepEqual([...new Set(checks(d))], [6]);
  });

  it('check 7: unmap direction differs', () => {
    const d = tracker();
    mapChecked(d, dev, 0x4000n, 4096, DMA_TO_DEVICE);
    d.debug_dma_unmap_page(dev, 0x4000n, 4096, DMA_FROM_DEVICE);
    assert.ok(only(d, 7).message.endsWith(
      'device driver frees DMA memory with different direction [device address=0x0000000000004000] ' +
        '[size=4096 bytes] [mapped with DMA_TO_DEVICE] [unmapped with DMA_FROM_DEVICE]',
    ));
  });

  it('check 8: unmap without dma_mapping_error', () => {
    const d = tracker();
    d.debug_dma_map_page(dev, page(5), 0, 4096, DMA_TO_DEVICE, 0x5000n, false);
    d.debug_dma_unmap_page(dev, 0x5000n, 4096, DMA_TO_DEVICE);
    assert.deepEqual(checks(d), [8]);
    assert.ok(only(d, 8).message.endsWith(
      'device driver failed to check map error [device address=0x0000000000005000] [size=4096 bytes] [mapped as page]',
    ));
  });

  it('dma_mapping_error marks one of two mappings at the same address', () => {
    const d = tracker();
    d.debug_dma_map_page(dev, page(5), 0, 4096, DMA_TO_DEVICE, 0x5000n, false);
    d.debug_dma_map_page(dev, page(5), 0, 8192, DMA_TO_DEVICE, 0x5000n, false);
    d.debug_dma_mapping_error(dev, 0x5000n);
    // Best fit on size picks each mapping; only one of them was checked.
    d.debug_dma_unmap_page(dev, 0x5000n, 8192, DMA_TO_DEVICE);
    d.debug_dma_unmap_page(dev, 0x5000n, 4096, DMA_TO_DEVICE);
    assert.deepEqual(checks(d), [8]);
    assert.equal(d.activeEntries(), 0);
  });

  it('check 9: sync of an unmapped range', () => {
    const d = tracker();
    d.debug_dma_sync_single_for_cpu(dev, 0x6000n, 64, DMA_FROM_DEVICE);
    assert.equal(
      only(d, 9).message,
      'DMA-API: nic0: device driver tries to sync DMA memory it has not allocated ' +
        '[device address=0x0000000000006000] [size=64 bytes]',
    );
  });

  it('a sync past the end of the mapping is memory it has not allocated (bucket_find_contain / containing_match)', () => {
    const d = tracker();
    mapChecked(d, dev, 0x20000n, 4096, DMA_FROM_DEVICE);
    d.debug_dma_sync_single_for_cpu(dev, 0x20800n, 4096, DMA_FROM_DEVICE);
    assert.deepEqual(checks(d), [9]);
    assert.ok(only(d, 9).message.endsWith(
      'device driver tries to sync DMA memory it has not allocated [device address=0x0000000000020800] [size=4096 bytes]',
    ));
    d.clear();
    d.debug_dma_sync_single_for_cpu(dev, 0x20000n, 4097, DMA_FROM_DEVICE);
    assert.deepEqual(checks(d), [9], 'one byte past the end, from the start address');
    d.clear();
    d.debug_dma_sync_single_for_cpu(dev, 0x20800n, 2048, DMA_FROM_DEVICE);
    d.debug_dma_sync_single_for_cpu(dev, 0x20000n, 4096, DMA_FROM_DEVICE);
    assert.deepEqual(checks(d), [], 'a sync of the tail, or of the whole mapping, is fine');
  });

  it('check 11: sync direction differs; a BIDIRECTIONAL mapping may be synced any way', () => {
    const d = tracker();
    mapChecked(d, dev, 0x7000n, 4096, DMA_TO_DEVICE);
    d.debug_dma_sync_single_for_device(dev, 0x7000n, 4096, DMA_FROM_DEVICE);
    assert.deepEqual(checks(d), [11]);
    assert.ok(only(d, 11).message.endsWith(
      'device driver syncs DMA memory with different direction [device address=0x0000000000007000] ' +
        '[size=4096 bytes] [mapped with DMA_TO_DEVICE] [synced with DMA_FROM_DEVICE]',
    ));
    d.clear();
    mapChecked(d, dev, 0x9000n, 4096, DMA_BIDIRECTIONAL);
    d.debug_dma_sync_single_for_cpu(dev, 0x9000n, 4096, DMA_TO_DEVICE);
    d.debug_dma_sync_single_for_device(dev, 0x9000n, 4096, DMA_FROM_DEVICE);
    assert.deepEqual(checks(d), []);
  });

  it('check 12: sync_for_cpu of memory mapped for the device only', () => {
    const d = tracker();
    mapChecked(d, dev, 0x7000n, 4096, DMA_TO_DEVICE);
    d.debug_dma_sync_single_for_cpu(dev, 0x7000n, 4096, DMA_BIDIRECTIONAL);
    assert.deepEqual(checks(d), [11, 12]);
    assert.ok(only(d, 12).message.endsWith(
      'device driver syncs device read-only DMA memory for cpu [device address=0x0000000000007000] ' +
        '[size=4096 bytes] [mapped with DMA_TO_DEVICE] [synced with DMA_BIDIRECTIONAL]',
    ));
  });

  it('check 13: sync_for_device of memory mapped FROM_DEVICE', () => {
    const d = tracker();
    mapChecked(d, dev, 0x7000n, 4096, DMA_FROM_DEVICE);
    d.debug_dma_sync_single_for_device(dev, 0x7000n, 4096, DMA_BIDIRECTIONAL);
    assert.deepEqual(checks(d), [11, 13]);
    assert.ok(only(d, 13).message.endsWith(
      'device driver syncs device write-only DMA memory to device [device address=0x0000000000007000] ' +
        '[size=4096 bytes] [mapped with DMA_FROM_DEVICE] [synced with DMA_BIDIRECTIONAL]',
    ));
  });

  it('check 14: sg sync with a different nents', () => {
    const d = tracker();
    const t = mappedTable(3);
    d.debug_dma_map_sg(dev, t.sgl, 3, 3, DMA_TO_DEVICE);
    d.debug_dma_sync_sg_for_device(dev, t.sgl, 2, DMA_TO_DEVICE);
    const fourteen = d.reports.filter((r) => r.check === 14);
    assert.equal(fourteen.length, 2);
    assert.ok(fourteen.every((r) => r.message.endsWith(
      'device driver syncs DMA sg list with different entry count [map count=3] [sync count=2]',
    )));
    assert.deepEqual([...new Set(checks(d))], [14]);
  });

  it("check 20: two live mappings the device may write starting in one cacheline (add_dma_entry / active_cacheline_insert)", () => {
    const d = tracker();
    const p = page(0x300);
    d.debug_dma_map_page(dev, p, 0, 32, DMA_FROM_DEVICE, 0x300000n, false);
    d.debug_dma_map_page(dev, p, 64, 32, DMA_FROM_DEVICE, 0x300040n, false);
    assert.deepEqual(checks(d), [], 'the next cacheline is another line');
    d.debug_dma_map_page(dev, p, 32, 32, DMA_BIDIRECTIONAL, 0x300020n, false);
    assert.equal(only(d, 20).message, "DMA-API: nic0: cacheline tracking EEXIST, overlapping mappings aren't supported");
    d.clear();
    // The device does not write a TO_DEVICE mapping, and SKIP_CPU_SYNC opts out: both are allowed.
    d.debug_dma_map_page(dev, p, 16, 16, DMA_TO_DEVICE, 0x300010n, false);
    d.debug_dma_map_page(dev, p, 48, 16, DMA_FROM_DEVICE, 0x300030n, false, DMA_ATTR_SKIP_CPU_SYNC);
    assert.deepEqual(checks(d), []);
    // Overlaps are counted: the line stays tracked until its last mapping goes.
    for (const [addr, size, dir] of [[0x300000n, 32, DMA_FROM_DEVICE], [0x300020n, 32, DMA_BIDIRECTIONAL], [0x300010n, 16, DMA_TO_DEVICE]] as const) {
      d.debug_dma_mapping_error(dev, addr);
      d.debug_dma_unmap_page(dev, addr, size, dir);
    }
    d.debug_dma_map_page(dev, p, 0, 8, DMA_FROM_DEVICE, 0x300000n, false);
    assert.deepEqual(checks(d), [20], 'the SKIP_CPU_SYNC mapping still holds the line');
    d.clear();
    d.debug_dma_mapping_error(dev, 0x300000n);
    d.debug_dma_unmap_page(dev, 0x300000n, 8, DMA_FROM_DEVICE);
    d.debug_dma_mapping_error(dev, 0x300030n);
    d.debug_dma_unmap_page(dev, 0x300030n, 16, DMA_FROM_DEVICE);
    d.debug_dma_map_page(dev, p, 0, 8, DMA_FROM_DEVICE, 0x300000n, false);
    assert.deepEqual(checks(d), [], 'the line is free again');
  });

  it('check 20: more than 7 overlaps of a line WARN once ("exceeded 7 overlapping mappings", a likely leak)', async () => {
    const d = tracker();
    const warnings: string[] = [];
    const on = (w: Error & { code?: string }): void => void (w.code === 'KERNEL_WARN' && warnings.push(w.message));
    process.on('warning', on);
    try {
      for (let i = 0; i < 10; i++) d.debug_dma_map_page(dev, page(0x400), i, 1, DMA_FROM_DEVICE, 0x400000n + BigInt(i), false);
      await new Promise((r) => setImmediate(r));
    } finally {
      process.off('warning', on);
    }
    assert.deepEqual(warnings, ['DMA-API: exceeded 7 overlapping mappings of cacheline 0x0000000000010000']);
    assert.equal(checks(d).filter((c) => c === 20).length, 9, 'every mapping after the first is reported');
  });

  it('checks 18 and 19 (CONFIG_DMA_API_DEBUG_SG check_sg_segment): a segment longer than max_seg_size, or across the boundary', () => {
    const limits = { maxSegSize: 65536, segBoundary: 0xffffn };
    const table = (): SgTable => {
      const t = new SgTable();
      assert.equal(sg_alloc_table(t, 3, 0), 0);
      const set = [[0x500, 65536, 0x10000n], [0x520, 65540, 0x20000n], [0x540, 8192, 0x3f000n]] as const;
      for_each_sg(t.sgl, 3, (sg, i) => {
        const [pfn, len, dma] = set[i]!;
        sg_set_page(sg, page(pfn), len, 0);
        sg.dma_address = dma;
        sg.dma_length = len;
      });
      return t;
    };
    const off = tracker();
    off.debug_dma_map_sg(dev, table().sgl, 3, 3, DMA_TO_DEVICE, 0, limits);
    assert.deepEqual(checks(off), [], 'off unless enabled, as the config option');
    const d = tracker();
    d.sg = true;
    d.debug_dma_map_sg(dev, table().sgl, 3, 3, DMA_TO_DEVICE, 0, limits);
    // Entry 1 is 4 bytes too long and its DMA range runs 4 bytes into the next 64 KiB; entry 2 straddles 0x40000.
    assert.deepEqual(checks(d), [18, 19, 19]);
    assert.equal(d.reports[0]!.message, 'DMA-API: nic0: mapping sg segment longer than device claims to support [len=65540] [max=65536]');
    assert.equal(d.reports[1]!.message, 'DMA-API: nic0: mapping sg segment across boundary [start=0x0000000000020000] [end=0x0000000000030003] [boundary=0x000000000000ffff]');
    assert.equal(d.reports[2]!.message, 'DMA-API: nic0: mapping sg segment across boundary [start=0x000000000003f000] [end=0x0000000000040fff] [boundary=0x000000000000ffff]');
  });

  it('check 21: a device released with mappings still held', () => {
    const d = tracker();
    mapChecked(d, dev, 0xa000n, 4096, DMA_TO_DEVICE, true);
    mapChecked(d, dev, 0xb000n, 8192, DMA_TO_DEVICE, true);
    const other = { name: 'other' };
    mapChecked(d, other, 0xc000n, 4096, DMA_TO_DEVICE);
    d.dma_debug_device_teardown(dev);
    const r = only(d, 21);
    assert.ok(r.message.startsWith(
      'DMA-API: nic0: device driver has pending DMA allocations while released from device [count=2]\n' +
        'One of leaked entries details: [device address=0x',
    ));
    assert.ok(/\[size=\d+ bytes\] \[mapped with DMA_TO_DEVICE\] \[mapped as single\]$/.test(r.message));
    assert.equal(d.activeEntries(dev), 0);
    assert.equal(d.activeEntries(other), 1);
    d.dma_debug_device_teardown({ name: 'idle' });
    assert.equal(d.reports.length, 1);
  });

  it('strict mode throws after the bookkeeping is done', () => {
    const d = new DmaDebug({ enabled: true, strict: true });
    mapChecked(d, dev, 0x10000n, 4096, DMA_TO_DEVICE);
    assert.throws(
      () => d.debug_dma_unmap_page(dev, 0x10000n, 8192, DMA_FROM_DEVICE),
      (e: unknown) =>
        e instanceof DmaDebugError &&
        e.code === 'ERR_DMA_API_DEBUG' &&
        e.report.check === 3 &&
        e.message.includes('[map size=4096 bytes] [unmap size=8192 bytes]'),
    );
    assert.deepEqual(checks(d), [3, 7], 'every finding is still recorded');
    assert.equal(d.activeEntries(), 0);
  });

  it('a disabled tracker records nothing', () => {
    const d = new DmaDebug({ enabled: false, strict: true });
    d.debug_dma_map_page(dev, page(1), 0, 4096, DMA_TO_DEVICE, 0x1000n, false);
    d.debug_dma_unmap_page(dev, 0x1000n, 8192, DMA_FROM_DEVICE);
    d.debug_dma_unmap_page(dev, DMA_MAPPING_ERROR, 1, DMA_FROM_DEVICE);
    d.debug_dma_sync_single_for_cpu(dev, 0x999000n, 1, DMA_TO_DEVICE);
    d.debug_dma_free_coherent(dev, 1, 0, 0n);
    d.dma_debug_device_teardown(dev);
    assert.equal(d.reports.length, 0);
    assert.equal(d.errorCount, 0);
    assert.equal(d.activeEntries(), 0);
  });

  it('correct usage of every API records nothing', () => {
    const d = tracker();
    mapChecked(d, dev, 0x1000n, 4096, DMA_FROM_DEVICE, true);
    d.debug_dma_sync_single_for_cpu(dev, 0x1000n, 4096, DMA_FROM_DEVICE);
    d.debug_dma_sync_single_for_device(dev, 0x1000n, 4096, DMA_FROM_DEVICE);
    d.debug_dma_sync_single_for_cpu(dev, 0x1800n, 512, DMA_FROM_DEVICE);
    d.debug_dma_unmap_page(dev, 0x1000n, 4096, DMA_FROM_DEVICE, true);

    const t = mappedTable(200);
    d.debug_dma_map_sg(dev, t.sgl, 200, 200, DMA_BIDIRECTIONAL);
    d.debug_dma_sync_sg_for_cpu(dev, t.sgl, 200, DMA_BIDIRECTIONAL);
    d.debug_dma_sync_sg_for_device(dev, t.sgl, 200, DMA_BIDIRECTIONAL);
    d.debug_dma_unmap_sg(dev, t.sgl, 200, DMA_BIDIRECTIONAL);

    d.debug_dma_alloc_coherent(dev, 8192, 0x40000n, 0x7f00_0000_0000);
    d.debug_dma_free_coherent(dev, 8192, 0x7f00_0000_0000, 0x40000n);
    d.debug_dma_alloc_pages(dev, page(0x50), 4096, DMA_TO_DEVICE, 0x50000n);
    d.debug_dma_free_pages(dev, page(0x50), 4096, DMA_TO_DEVICE, 0x50000n);
    d.debug_dma_map_phys(dev, 0xfe000000n, 256, DMA_TO_DEVICE, 0xfe000000n);
    d.debug_dma_mapping_error(dev, 0xfe000000n);
    d.debug_dma_unmap_phys(dev, 0xfe000000n, 256, DMA_TO_DEVICE);
    d.dma_debug_device_teardown(dev);

    assert.deepEqual(d.reports, []);
    assert.equal(d.errorCount, 0);
    assert.equal(d.activeEntries(), 0);
  });

  it('sg unmap only visits the segments dma_map_sg produced', () => {
    const d = tracker();
    const t = mappedTable(4);
    d.debug_dma_map_sg(dev, t.sgl, 4, 2, DMA_TO_DEVICE);
    assert.equal(d.activeEntries(dev), 2);
    d.debug_dma_unmap_sg(dev, t.sgl, 4, DMA_TO_DEVICE);
    assert.deepEqual(d.reports, []);
    assert.equal(d.activeEntries(dev), 0);
  });

  it('emits the first maxPrinted reports as process warnings and records them all', async () => {
    const d = new DmaDebug({ enabled: true, strict: false, maxPrinted: 1 });
    const seen: Error[] = [];
    const onWarning = (w: Error): void => {
      if ((w as Error & { code?: string }).code === 'DMA_API_DEBUG') seen.push(w);
    };
    process.on('warning', onWarning);
    try {
      d.debug_dma_unmap_page(dev, 0x1000n, 1, DMA_TO_DEVICE);
      d.debug_dma_unmap_page(dev, 0x2000n, 1, DMA_TO_DEVICE);
      await new Promise((resolve) => setImmediate(resolve));
    } finally {
      process.off('warning', onWarning);
    }
    assert.equal(seen.length, 1);
    assert.ok(seen[0]?.message.includes('[device address=0x0000000000001000]'));
    assert.equal(d.reports.length, 2);
    assert.equal(d.errorCount, 2);
    d.clear();
    assert.equal(d.reports.length, 0);
    assert.equal(d.errorCount, 0);
  });

  it('dump lists live mappings with their map-error state', () => {
    const d = tracker();
    mapChecked(d, dev, 0x1000n, 4096, DMA_TO_DEVICE, true);
    d.debug_dma_alloc_coherent({ name: 'gpu' }, 4096, 0x2000n, 0x7f00_0000_0000);
    assert.equal(d.debug_dma_dump_mappings().length, 2);
    const [line] = d.debug_dma_dump_mappings(dev);
    assert.equal(line, 'nic0 single P=0x0000000000001000 D=1000 L=1000 DMA_TO_DEVICE dma map error checked');
    assert.equal(MAP_ERR_CHECKED, 2);
  });
});
