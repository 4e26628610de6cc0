// Bus-master access: what a device writes through its bus address lands in the right physical
// bytes (checked from the CPU side), direct and through the IOMMU; bus errors beyond the mask, the
// bus limit or memory change nothing; an engine built from nothing but a structured-cloned
// description (memfds, no Machine) reaches the same bytes.

import assert from 'node:assert/strict';
import { Machine } from '../lib/mm/machine';
import '../lib/dma/device';
import { GFP_KERNEL, PAGE_SIZE } from '../lib/mm/gfp';
import { DMA_BIDIRECTIONAL, DMA_FROM_DEVICE } from '../lib/dma/constants';
import { dma_map_page, dma_map_sgtable, dma_unmap_page, dma_unmap_sgtable } from '../lib/dma/mapping';
import { SgTable, sg_dma_address, sg_free_table } from '../lib/dma/scatterlist';
import { sg_alloc_table_from_pages } from '../lib/dma/sg_pages';
import { BusEngine, MEMTX_DECODE_ERROR, MEMTX_OK, type BusDescription } from '../lib/devices/bus_engine';
import { busDescription, busMaster } from '../lib/devices/bus_master';
import { cma_alloc, cma_release } from '../lib/mm/cma';
import { expectNoLeaks, memfdMappingCount } from './helpers/leaks';
import { usePagesOf } from './helpers/pages-of';

const MiB = 1024 * 1024;

/** Everything a worker would do with its description: no Machine, no Device in scope. */
function deviceSide(desc: BusDescription, addr: bigint, payload: Uint8Array): { status: number; back: Uint8Array; engine: BusEngine } {
  const engine = new BusEngine(desc);
  const status = engine.write(addr, payload);
  const back = new Uint8Array(payload.length);
  engine.read(addr, back);
  return { status, back, engine };
}

describe('55 bus-master access', () => {
  expectNoLeaks();
  let m: Machine;
  const take = usePagesOf(() => m);
  beforeEach(() => {
    m = new Machine({ name: 'bm55', ramPerNode: 16 * MiB, cmaSize: 4 * MiB, hugepages: 'off', emitWarnings: false });
  });

  it('an engine made before a CMA area was declared (from memfds, as a worker) reaches it: it follows the memory map', () => {
    const dev = m.createDevice({ name: 'late', dmaMask: 64 });
    const engine = new BusEngine(structuredClone(busDescription(dev, { fdOnly: true })));
    try {
      const cma = m.cma_declare('late', 2 * MiB, 0, 'off');
      const page = cma_alloc(cma, 1, 0, false)!;
      const h = dma_map_page(dev, page, 0, PAGE_SIZE, DMA_BIDIRECTIONAL);
      assert.equal(engine.write32(h + 12n, 0x600dcafe), MEMTX_OK);
      assert.equal(m.view(m.page_address(page), 16).readUInt32LE(12), 0x600dcafe);
      dma_unmap_page(dev, h, PAGE_SIZE, DMA_BIDIRECTIONAL);
      assert.ok(cma_release(cma, page, 1));
    } finally {
      engine.close();
    }
  });

  describe('direct devices', () => {
    it('bytes and little-endian 16/32/64-bit values land at bus address = phys + bus offset', () => {
      const dev = m.createDevice({ name: 'd', dmaMask: 64, busOffset: 0x8000_0000n });
      const page = take(0);
      const h = dma_map_page(dev, page, 0, PAGE_SIZE, DMA_BIDIRECTIONAL);
      assert.equal(h, BigInt(page.pfn * PAGE_SIZE) + 0x8000_0000n);
      const bus = busMaster(dev);
      assert.equal(bus.write(h + 100n, Uint8Array.from([1, 2, 3])), MEMTX_OK);
      assert.equal(bus.write16(h + 200n, 0xbeef), MEMTX_OK);
      assert.equal(bus.write32(h + 204n, 0x12345678), MEMTX_OK);
      assert.equal(bus.write64(h + 208n, 0x0102030405060708n), MEMTX_OK);
      assert.equal(bus.write8(h + 216n, 0x99), MEMTX_OK);
      assert.equal(bus.fill(h + 300n, 0x5a, 10), MEMTX_OK);
      const cpu = m.view(m.page_address(page), PAGE_SIZE);
      assert.deepEqual([...cpu.subarray(100, 103)], [1, 2, 3]);
      assert.equal(cpu.readUInt16LE(200), 0xbeef);
      assert.equal(cpu.readUInt32LE(204), 0x12345678);
      assert.equal(cpu.readBigUInt64LE(208), 0x0102030405060708n);
      assert.equal(cpu[216], 0x99);
      assert.ok(cpu.subarray(300, 310).every((b) => b === 0x5a));
      assert.notEqual(cpu[310], 0x5a);
      cpu.writeUInt32LE(0xcafef00d, 400);
      assert.equal(bus.read32(h + 400n), 0xcafef00d);
      assert.equal(bus.read16(h + 402n), 0xcafe);
      assert.equal(bus.read8(Number(h) + 403), 0xca, 'numbers work as bus addresses too');
      assert.equal(bus.read64(h + 208n), 0x0102030405060708n);
      dma_unmap_page(dev, h, PAGE_SIZE, DMA_BIDIRECTIONAL);
      dev.destroy();
    });

    it('beyond the DMA mask or bus_dma_limit, or outside memory: MEMTX_DECODE_ERROR, all-ones, no byte changed', () => {
      const dev = m.createDevice({ name: 'd32', dmaMask: 32 });
      const bus = busMaster(dev);
      const page = take(0);
      const phys = page.pfn * PAGE_SIZE;
      const before = m.read(m.page_address(page), PAGE_SIZE);
      assert.equal(bus.write32(2 ** 32, 1), MEMTX_DECODE_ERROR, 'above the 32-bit mask');
      assert.equal(bus.read32(2n ** 32n + 4n), 0xffffffff);
      assert.equal(bus.status, MEMTX_DECODE_ERROR);
      assert.equal(bus.read64(0x10n), 0xffff_ffff_ffff_ffffn, 'no memory at bus address 0x10 (RAM starts at 1 GiB)');
      assert.equal(bus.write(phys - 4, new Uint8Array(8).fill(7)), MEMTX_DECODE_ERROR, 'starts just below memory');
      assert.deepEqual(m.read(m.page_address(page), PAGE_SIZE), before, 'nothing written');
      assert.equal(bus.read32(phys), before.readUInt32LE(0), 'and a good access right after succeeds');
      assert.equal(bus.status, MEMTX_OK);
      dev.destroy();
      const limited = m.createDevice({ name: 'lim', dmaMask: 64, busDmaLimit: BigInt(phys + PAGE_SIZE - 1) });
      const lb = busMaster(limited);
      assert.equal(lb.write32(phys + PAGE_SIZE - 4, 1), MEMTX_OK, 'the last word below bus_dma_limit');
      assert.equal(lb.write32(phys + PAGE_SIZE - 2, 1), MEMTX_DECODE_ERROR, 'a word crossing bus_dma_limit');
      limited.destroy();
    });

    it('a bulk transfer crossing pages moves every byte in one call, and bad arguments are TypeErrors/RangeErrors', () => {
      const dev = m.createDevice({ name: 'bulk', dmaMask: 64 });
      const block = take(4); // 64 KiB
      const bus = busMaster(dev);
      const data = new Uint8Array(64 * 1024).map((_, i) => (i * 7) & 0xff);
      const h = BigInt(block.pfn * PAGE_SIZE);
      assert.equal(bus.write(h, data), MEMTX_OK);
      assert.deepEqual(m.view(m.page_address(block), data.length), Buffer.from(data));
      const back = new Uint8Array(data.length + 10);
      assert.equal(bus.read(h + 1n, back, 10, data.length - 1), MEMTX_OK);
      assert.equal(Buffer.compare(back.subarray(10, 10 + data.length - 1), data.subarray(1)), 0);
      assert.deepEqual([...back.subarray(0, 10)], new Array(10).fill(0), 'nothing before the offset');
      assert.equal(bus.read32(h + BigInt(PAGE_SIZE) - 2n), new DataView(data.buffer).getUint32(PAGE_SIZE - 2, true), 'a word across a page boundary');
      assert.throws(() => bus.write32('0x1000' as unknown as number, 1), TypeError);
      assert.throws(() => bus.read32(-4), RangeError);
      assert.throws(() => bus.write32(h, 2 ** 32), RangeError);
      assert.throws(() => bus.read(h, back, 0, back.length + 1), RangeError);
      assert.throws(() => bus.fill(h, 256, 1), RangeError);
      assert.throws(() => new BusEngine({ segments: 'all' } as unknown as BusDescription), TypeError);
      dev.destroy();
    });
  });

  describe('IOMMU devices', () => {
    it('a device write through an sg mapping over scattered pages lands in each physical page, in order', () => {
      const dev = m.createDevice({ name: 'sg', dmaMask: 48, iommu: true });
      const pages = [take(0), take(0), take(0), take(0)];
      [pages[1], pages[3]] = [pages[3]!, pages[1]!]; // not in PFN order: one IOVA range, scattered frames
      const sgt = new SgTable();
      assert.equal(sg_alloc_table_from_pages(sgt, pages, 4, 0, 4 * PAGE_SIZE, GFP_KERNEL), 0);
      assert.ok(dma_map_sgtable(dev, sgt, DMA_FROM_DEVICE, 0) === 0);
      const iova = sg_dma_address(sgt.sgl!);
      const bus = busMaster(dev);
      const data = new Uint8Array(4 * PAGE_SIZE).map((_, i) => (i >> 12) + 1);
      assert.equal(bus.write(iova, data), MEMTX_OK);
      pages.forEach((p, i) => {
        assert.ok(m.view(m.page_address(p), PAGE_SIZE).every((b) => b === i + 1), `page ${i} (pfn 0x${p.pfn.toString(16)}) holds its own quarter`);
      });
      dma_unmap_sgtable(dev, sgt, DMA_FROM_DEVICE, 0);
      sg_free_table(sgt);
      dev.destroy();
    });

    it('an engine built from a structured-cloned, fd-only description (no Machine in scope) reaches the same bytes', () => {
      const dev = m.createDevice({ name: 'worker-ready', dmaMask: 48, iommu: true });
      const page = take(0);
      const h = dma_map_page(dev, page, 64, 256, DMA_BIDIRECTIONAL);
      const maps0 = memfdMappingCount();
      const desc = structuredClone(busDescription(dev, { fdOnly: true }));
      assert.ok(desc.segments.every((s) => s.bytes === undefined && typeof s.fd === 'number'));
      const payload = Uint8Array.from({ length: 256 }, (_, i) => 255 - i);
      const { status, back, engine } = deviceSide(desc, h, payload);
      assert.equal(status, MEMTX_OK);
      assert.deepEqual(back, payload);
      assert.ok(memfdMappingCount() > maps0, 'the engine mapped the memfds itself');
      assert.deepEqual(m.view(m.page_address(page) + 64, 256), Buffer.from(payload), 'the CPU sees what the device wrote');
      engine.close();
      engine.close();
      assert.equal(memfdMappingCount(), maps0, 'close() unmapped them');
      assert.equal(engine.read32(h), 0xffffffff, 'a closed engine reaches nothing');
      dma_unmap_page(dev, h, 256, DMA_BIDIRECTIONAL);
      dev.destroy();
    });
  });
});
