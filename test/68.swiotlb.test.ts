// swiotlb (kernel/dma/swiotlb.c) under dma-direct: the bounce pool a machine with RAM above 4 GiB
// reserves below 4 GiB, the slots a mapping gets, and the byte copies in the kernel's directions,
// seen from the CPU and from the device through its bus address.

import assert from 'node:assert/strict';
import { Machine } from '../lib/mm/machine';
import '../lib/dma/device';
import type { Device } from '../lib/dma/device';
import { GFP_KERNEL, PAGE_SIZE } from '../lib/mm/gfp';
import type { Page } from '../lib/mm/page';
import {
  DMA_ATTR_SKIP_CPU_SYNC, DMA_BIDIRECTIONAL, DMA_FROM_DEVICE, DMA_MAPPING_ERROR, DMA_TO_DEVICE, SIZE_MAX,
} from '../lib/dma/constants';
import { dma_to_phys } from '../lib/dma/direct';
import { dma_map_page, dma_map_page_attrs, dma_map_resource, dma_map_sgtable, dma_unmap_page, dma_unmap_page_attrs, dma_unmap_sgtable } from '../lib/dma/mapping';
import { dma_max_mapping_size } from '../lib/dma/mask';
import { dma_need_sync, dma_need_unmap } from '../lib/dma/limits';
import { dma_set_min_align_mask } from '../lib/dma/dma_parms';
import { dma_sync_single_for_cpu, dma_sync_single_for_device, dma_sync_sgtable_for_cpu } from '../lib/dma/sync';
import { SgTable, sg_free_table, for_each_sg } from '../lib/dma/scatterlist';
import { sg_alloc_table_from_pages } from '../lib/dma/sg_pages';
import { is_swiotlb_buffer, swiotlb_max_mapping_size } from '../lib/dma/swiotlb';
import { busMaster } from '../lib/devices/bus_master';
import { MEMTX_OK } from '../lib/devices/bus_engine';
import { expectNoLeaks } from './helpers/leaks';
import { usePagesOf } from './helpers/pages-of';

const MiB = 1024 * 1024;
const KiB = 1024;
const FOUR_GIB = 2n ** 32n;

function highMachine(extra: Partial<ConstructorParameters<typeof Machine>[0]> = {}): Machine {
  return new Machine({
    name: 'tlb68', physBase: 2 ** 32, ramPerNode: 8 * MiB, cmaSize: 0, hugepages: 'off', emitWarnings: false,
    swiotlbSize: MiB, ...extra,
  });
}

/** The device's view of `len` bytes at bus address `addr`. */
function deviceRead(dev: Device, addr: bigint, len: number): number[] {
  const out = new Uint8Array(len);
  assert.equal(busMaster(dev).read(addr, out), MEMTX_OK);
  return [...out];
}

describe('68 swiotlb bounce buffers', () => {
  expectNoLeaks();
  let m: Machine;
  const take = usePagesOf(() => m);
  const cpu = (page: Page, len = PAGE_SIZE): Buffer => m.view(m.page_address(page), len);

  describe('the pool (pci_swiotlb_detect, swiotlb=force/noforce)', () => {
    it("'auto' reserves the pool below 4 GiB only when RAM extends above 4 GiB", () => {
      m = new Machine({ name: 'low68', ramPerNode: 8 * MiB, cmaSize: 0, hugepages: 'off', emitWarnings: false });
      assert.equal(m.stats().swiotlb, null, 'RAM below 4 GiB: no swiotlb, today\'s behaviour');
      assert.equal(m.swiotlb, null);
      m.destroy();
      m = highMachine({ swiotlbSize: 2 * MiB });
      const s = m.stats().swiotlb;
      assert.ok(s !== null);
      assert.equal(s.nslabs, 1024, '2 MiB of 2 KiB slots');
      assert.ok(s.physStart + 2n * BigInt(MiB) <= FOUR_GIB, 'the pool lies below 4 GiB');
      assert.equal(s.force, false);
      assert.equal(m.stats().segments.filter((g) => g.name.endsWith(':swiotlb')).length, 1);
    });

    it('bad options are refused before anything is reserved', () => {
      m = highMachine();
      assert.throws(() => new Machine({ swiotlb: 'on' as never }), TypeError);
      assert.throws(() => new Machine({ swiotlbSize: 100 * KiB }), RangeError);
      assert.throws(() => new Machine({ swiotlbSize: 0 }), RangeError);
    });
  });

  describe('dma_direct_map_page -> swiotlb_map', () => {
    it('a 32-bit device gets a bounce address below 4 GiB instead of DMA_MAPPING_ERROR; unmap frees the slots', () => {
      m = highMachine();
      const dev = m.createDevice({ name: 'd32', dmaMask: 32 });
      const page = take(0);
      assert.ok(page.phys >= FOUR_GIB);
      const h = dma_map_page(dev, page, 0, PAGE_SIZE, DMA_TO_DEVICE);
      assert.notEqual(h, DMA_MAPPING_ERROR);
      assert.ok(h + BigInt(PAGE_SIZE) <= FOUR_GIB, 'the device can reach it');
      assert.equal(is_swiotlb_buffer(dev, dma_to_phys(dev, h)), true);
      assert.equal(is_swiotlb_buffer(dev, page.phys), false);
      assert.equal(m.stats().swiotlb?.used, 2, 'a 4 KiB mapping takes two 2 KiB slots');
      assert.equal(m.stats().swiotlb?.mapped, 1);
      dma_unmap_page(dev, h, PAGE_SIZE, DMA_TO_DEVICE);
      assert.equal(m.stats().swiotlb?.used, 0);
      assert.equal(m.stats().swiotlb?.mapped, 0);
      dev.destroy();
    });

    it("'off' keeps DMA_MAPPING_ERROR for the 32-bit device (no bounce pool)", () => {
      m = highMachine({ swiotlb: 'off' });
      assert.equal(m.swiotlb, null);
      const dev = m.createDevice({ name: 'd32', dmaMask: 32 });
      assert.equal(dma_map_page(dev, take(0), 0, PAGE_SIZE, DMA_TO_DEVICE), DMA_MAPPING_ERROR);
      assert.equal(dma_max_mapping_size(dev), SIZE_MAX);
      dev.destroy();
    });

    it("'force' bounces a 64-bit device too (is_swiotlb_force_bounce), even with RAM below 4 GiB", () => {
      m = new Machine({ name: 'force68', ramPerNode: 8 * MiB, cmaSize: 0, hugepages: 'off', emitWarnings: false, swiotlb: 'force', swiotlbSize: MiB });
      const dev = m.createDevice({ name: 'd64', dmaMask: 64 });
      const page = take(0);
      const h = dma_map_page(dev, page, 0, PAGE_SIZE, DMA_BIDIRECTIONAL);
      assert.notEqual(h, page.phys);
      assert.equal(is_swiotlb_buffer(dev, h), true);
      assert.equal(dma_max_mapping_size(dev), 256 * KiB);
      dma_unmap_page(dev, h, PAGE_SIZE, DMA_BIDIRECTIONAL);
      assert.equal(m.stats().swiotlb?.used, 0);
      dev.destroy();
    });

    it('a mask that cannot reach the pool either: the slots are given back, WARN and DMA_MAPPING_ERROR (swiotlb_map)', () => {
      m = highMachine();
      const dev = m.createDevice({ name: 'd24', dmaMask: 24 });
      assert.equal(dma_map_page(dev, take(0), 0, 512, DMA_TO_DEVICE), DMA_MAPPING_ERROR);
      assert.equal(m.stats().swiotlb?.used, 0);
      assert.ok(m.warnings.some((w) => /swiotlb addr 0x[0-9a-f]+\+512 overflow \(mask ffffff, bus limit 0\)/.test(w.message)));
      dev.destroy();
    });

    it('dma_map_resource is never bounced (MMIO): still DMA_MAPPING_ERROR above the mask', () => {
      m = highMachine();
      const dev = m.createDevice({ name: 'd32', dmaMask: 32 });
      assert.equal(dma_map_resource(dev, FOUR_GIB + 0x1000n, 4096, DMA_BIDIRECTIONAL, 0), DMA_MAPPING_ERROR);
      assert.equal(m.stats().swiotlb?.used, 0);
      dev.destroy();
    });
  });

  describe('the copies (swiotlb_tbl_map_single, swiotlb_tbl_unmap_single, swiotlb_sync_single_for_*)', () => {
    let dev: Device;
    beforeEach(() => {
      m = highMachine();
      dev = m.createDevice({ name: 'd32', dmaMask: 32 });
    });
    afterEach(() => dev.destroy());

    it('DMA_TO_DEVICE: copied in at map and at sync_for_device; what the device writes never comes back', () => {
      const page = take(0);
      const buf = cpu(page);
      buf.fill(0x11);
      const h = dma_map_page(dev, page, 0, PAGE_SIZE, DMA_TO_DEVICE);
      assert.deepEqual(deviceRead(dev, h, 4), [0x11, 0x11, 0x11, 0x11], 'the device sees the buffer at the bounce address');
      buf.fill(0x22);
      assert.deepEqual(deviceRead(dev, h, 4), [0x11, 0x11, 0x11, 0x11], 'a CPU write after map is not seen yet');
      dma_sync_single_for_device(dev, h, PAGE_SIZE, DMA_TO_DEVICE);
      assert.deepEqual(deviceRead(dev, h + 4000n, 4), [0x22, 0x22, 0x22, 0x22], 'sync_for_device copies it in');
      assert.equal(busMaster(dev).write(h, Uint8Array.of(9, 9)), MEMTX_OK);
      dma_sync_single_for_cpu(dev, h, PAGE_SIZE, DMA_TO_DEVICE);
      assert.equal(buf[0], 0x22, 'sync_for_cpu of TO_DEVICE copies nothing back');
      dma_unmap_page(dev, h, PAGE_SIZE, DMA_TO_DEVICE);
      assert.equal(buf[0], 0x22, 'unmap of TO_DEVICE copies nothing back');
    });

    it('DMA_FROM_DEVICE: the original is copied in at map (a partial device write keeps the rest); back at sync_for_cpu and unmap', () => {
      const page = take(0);
      const buf = cpu(page);
      buf.fill(0xaa);
      const h = dma_map_page(dev, page, 0, PAGE_SIZE, DMA_FROM_DEVICE);
      assert.deepEqual(deviceRead(dev, h + 100n, 2), [0xaa, 0xaa], 'map copied the original into the slots');
      assert.equal(busMaster(dev).fill(h, 0x55, 100), MEMTX_OK);
      assert.equal(buf[0], 0xaa, 'the device wrote the slot, not the original');
      dma_sync_single_for_device(dev, h, PAGE_SIZE, DMA_FROM_DEVICE);
      assert.deepEqual(deviceRead(dev, h, 1), [0x55], 'sync_for_device of FROM_DEVICE copies nothing in');
      dma_sync_single_for_cpu(dev, h, PAGE_SIZE, DMA_FROM_DEVICE);
      assert.equal(buf[0], 0x55, 'sync_for_cpu copies the device write back');
      assert.equal(buf[99], 0x55);
      assert.equal(buf[100], 0xaa, 'the bytes the device did not write are the original ones');
      assert.equal(busMaster(dev).fill(h + 200n, 0x66, 10), MEMTX_OK);
      assert.equal(buf[200], 0xaa);
      dma_unmap_page(dev, h, PAGE_SIZE, DMA_FROM_DEVICE);
      assert.equal(buf[200], 0x66, 'unmap copies back');
    });

    it('DMA_BIDIRECTIONAL copies both ways; DMA_ATTR_SKIP_CPU_SYNC at unmap copies nothing back', () => {
      const page = take(0);
      const buf = cpu(page);
      buf.fill(1);
      const h = dma_map_page(dev, page, 0, PAGE_SIZE, DMA_BIDIRECTIONAL);
      assert.deepEqual(deviceRead(dev, h, 1), [1]);
      buf[0] = 2;
      dma_sync_single_for_device(dev, h, PAGE_SIZE, DMA_BIDIRECTIONAL);
      assert.deepEqual(deviceRead(dev, h, 1), [2]);
      assert.equal(busMaster(dev).write8(h + 1n, 3), MEMTX_OK);
      dma_sync_single_for_cpu(dev, h, PAGE_SIZE, DMA_BIDIRECTIONAL);
      assert.equal(buf[1], 3);
      assert.equal(busMaster(dev).write8(h + 2n, 4), MEMTX_OK);
      dma_unmap_page_attrs(dev, h, PAGE_SIZE, DMA_BIDIRECTIONAL, DMA_ATTR_SKIP_CPU_SYNC);
      assert.equal(buf[2], 1, 'SKIP_CPU_SYNC: the device write stays in the slot');
      assert.equal(m.stats().swiotlb?.used, 0);
    });

    it('a buffer at an offset inside a higher-order block bounces exactly its bytes', () => {
      const page = take(1);
      const buf = cpu(page, 2 * PAGE_SIZE);
      buf.fill(0);
      for (let i = 0; i < 3000; i++) buf[3000 + i] = i & 0xff;
      const h = dma_map_page(dev, page, 3000, 3000, DMA_BIDIRECTIONAL);
      const seen = deviceRead(dev, h, 3000);
      assert.deepEqual(seen, Array.from({ length: 3000 }, (_, i) => i & 0xff));
      assert.equal(busMaster(dev).fill(h, 0xee, 3000), MEMTX_OK);
      dma_unmap_page(dev, h, 3000, DMA_BIDIRECTIONAL);
      assert.equal(buf[2999], 0, 'the byte before the mapping is untouched');
      assert.ok(buf.subarray(3000, 6000).every((b) => b === 0xee));
      assert.equal(buf[6000], 0, 'the byte after the mapping is untouched');
      const s = m.stats().swiotlb!;
      assert.ok(s.bounces >= 2 && s.bytesBounced >= 6000, 'the copies are counted');
    });

    it('dma_map_sgtable bounces every entry; sync and unmap copy each one back', () => {
      const pages = [take(0), take(0), take(0)];
      for (const [i, p] of pages.entries()) cpu(p).fill(0x10 + i);
      const sgt = new SgTable();
      assert.equal(sg_alloc_table_from_pages(sgt, pages, 3, 0, 3 * PAGE_SIZE, GFP_KERNEL), 0);
      assert.equal(dma_map_sgtable(dev, sgt, DMA_BIDIRECTIONAL, 0), 0);
      const handles: bigint[] = [];
      for_each_sg(sgt.sgl, sgt.nents, (sg) => handles.push(sg.dma_address));
      assert.ok(handles.length >= 1 && handles.every((a) => is_swiotlb_buffer(dev, a)));
      assert.deepEqual(deviceRead(dev, handles[0]!, 1), [0x10]);
      for (const a of handles) assert.equal(busMaster(dev).write8(a, 0x77), MEMTX_OK);
      dma_sync_sgtable_for_cpu(dev, sgt, DMA_BIDIRECTIONAL);
      assert.equal(cpu(pages[0]!)[0], 0x77);
      dma_unmap_sgtable(dev, sgt, DMA_BIDIRECTIONAL, 0);
      assert.equal(m.stats().swiotlb?.used, 0);
      sg_free_table(sgt);
    });

    it('dma_need_sync is true for a bounced address (dma_direct_need_sync) and dma_need_unmap after the first bounce', () => {
      assert.equal(dma_need_unmap(dev), false, 'a coherent device that never bounced');
      const page = take(0);
      const h = dma_map_page(dev, page, 0, 64, DMA_TO_DEVICE);
      assert.equal(dma_need_sync(dev, h), true);
      assert.equal(dma_need_sync(dev, page.phys), false, 'an address outside the pool on a coherent device');
      assert.equal(dma_need_unmap(dev), true, 'dma_reset_need_sync cleared dma_skip_sync');
      dma_unmap_page(dev, h, 64, DMA_TO_DEVICE);
    });
  });

  describe('slots (swiotlb_search_pool_area)', () => {
    it('runs out: "swiotlb buffer is full" and DMA_MAPPING_ERROR; freed slots are reused', () => {
      m = highMachine({ swiotlbSize: 256 * KiB });
      const dev = m.createDevice({ name: 'd32', dmaMask: 32 });
      const big = take(6);
      const h = dma_map_page(dev, big, 0, 256 * KiB, DMA_TO_DEVICE);
      assert.notEqual(h, DMA_MAPPING_ERROR);
      assert.equal(m.stats().swiotlb?.used, 128);
      const small = take(0);
      assert.equal(dma_map_page(dev, small, 0, PAGE_SIZE, DMA_TO_DEVICE), DMA_MAPPING_ERROR);
      assert.ok(m.warnings.some((w) => w.message === 'd32: swiotlb buffer is full (sz: 4096 bytes), total 128 (slots), used 128 (slots)'),
        m.warnings.map((w) => w.message).join('\n'));
      assert.equal(m.stats().swiotlb?.full, 1);
      dma_unmap_page(dev, h, 256 * KiB, DMA_TO_DEVICE);
      const again = dma_map_page(dev, small, 0, PAGE_SIZE, DMA_TO_DEVICE);
      assert.notEqual(again, DMA_MAPPING_ERROR, 'the freed slots serve the next mapping');
      dma_unmap_page(dev, again, PAGE_SIZE, DMA_TO_DEVICE);
      dev.destroy();
    });

    it('a mapping larger than one segment of 128 slots fails even with free slots (dma_max_mapping_size is 256 KiB)', () => {
      m = highMachine();
      const dev = m.createDevice({ name: 'd32', dmaMask: 32 });
      assert.equal(dma_max_mapping_size(dev), 256 * KiB);
      assert.equal(swiotlb_max_mapping_size(dev), 256 * KiB);
      const big = take(7);
      assert.equal(dma_map_page(dev, big, 0, 256 * KiB + 2048, DMA_TO_DEVICE), DMA_MAPPING_ERROR);
      assert.equal(m.stats().swiotlb?.used, 0);
      const ok = dma_map_page(dev, big, 0, 256 * KiB, DMA_TO_DEVICE);
      assert.notEqual(ok, DMA_MAPPING_ERROR);
      dma_unmap_page(dev, ok, 256 * KiB, DMA_TO_DEVICE);
      const dev64 = m.createDevice({ name: 'd64', dmaMask: 64 });
      assert.equal(dma_max_mapping_size(dev64), SIZE_MAX, 'a device that reaches all RAM never bounces');
      dev64.destroy();
      dev.destroy();
    });

    it('alignment: slot-aligned below a page, page-aligned from a page up, min_align_mask bits kept (swiotlb_align_offset)', () => {
      m = highMachine();
      const dev = m.createDevice({ name: 'nvme', dmaMask: 32 });
      const page = take(1);
      // Take one slot first so that the next free slot is not page aligned.
      const first = dma_map_page(dev, page, 0, 100, DMA_TO_DEVICE);
      assert.equal(first & 0x7ffn, 0n);
      const whole = dma_map_page(dev, page, 0, PAGE_SIZE, DMA_TO_DEVICE);
      assert.equal(whole & 0xfffn, 0n, 'a mapping of a page or more is page aligned (it skips the free odd slot)');
      assert.equal(whole - first, BigInt(PAGE_SIZE));
      const sub = dma_map_page(dev, page, 0x234, 100, DMA_TO_DEVICE);
      assert.equal(sub & 0x7ffn, 0n, 'without min_align_mask the offset is not kept');
      assert.equal(sub - whole, BigInt(PAGE_SIZE), 'a sub-page mapping takes the next slot');
      dma_set_min_align_mask(dev, 0xfff);
      assert.equal(swiotlb_max_mapping_size(dev), 256 * KiB - 4 * KiB, 'min_align_mask costs its slots');
      // The next free slot (the fifth) has bit 11 set where the original has it clear: it is skipped.
      const nvme = dma_map_page_attrs(dev, page, 0x1234, 3000, DMA_FROM_DEVICE, 0);
      assert.equal(nvme & 0xfffn, 0x234n, 'the low 12 bits of the original are kept');
      assert.equal(nvme - 0x234n - sub, BigInt(2 * 2048), 'the slot after the skipped one');
      for (const [a, s] of [[first, 100], [sub, 100], [whole, PAGE_SIZE]] as const) dma_unmap_page(dev, a, s, DMA_TO_DEVICE);
      dma_unmap_page_attrs(dev, nvme, 3000, DMA_FROM_DEVICE, 0);
      assert.equal(m.stats().swiotlb?.used, 0);
      dev.destroy();
    });
  });
});
