// DMA-API debug on the device side: with debugging on, a device access to memory that is not
// mapped for it (after dma_unmap_*, after the buffer was freed, never given) or against the
// mapping's direction is reported, on direct devices too, where the bus itself lets it through.

import assert from 'node:assert/strict';
import { Machine } from '../lib/mm/machine';
import '../lib/dma/device';
import { GFP_KERNEL, PAGE_SIZE } from '../lib/mm/gfp';
import { DMA_BIDIRECTIONAL, DMA_FROM_DEVICE, DMA_TO_DEVICE } from '../lib/dma/constants';
import { dma_alloc_coherent, dma_free_coherent, dma_map_page, dma_mapping_error, dma_unmap_page } from '../lib/dma/mapping';
import { MEMTX_OK } from '../lib/devices/bus_engine';
import { busMaster } from '../lib/devices/bus_master';
import { expectNoLeaks } from './helpers/leaks';
import { usePagesOf } from './helpers/pages-of';

const MiB = 1024 * 1024;

describe('57 DMA-API debug of device accesses', () => {
  expectNoLeaks();
  let m: Machine;
  const take = usePagesOf(() => m);
  const reports = (): string[] => m.warnings.map((w) => w.message).filter((s) => s.startsWith('DMA-API:') && s.includes('device '));
  beforeEach(() => {
    m = new Machine({ name: 'dbg57', ramPerNode: 8 * MiB, cmaSize: 4 * MiB, hugepages: 'off', emitWarnings: false, dmaDebug: true });
  });

  it('direct device: an access inside a live mapping is quiet; after dma_unmap_page the bus succeeds but debug reports it', () => {
    const dev = m.createDevice({ name: 'eth', dmaMask: 64 });
    const page = take();
    const h = dma_map_page(dev, page, 0, 256, DMA_FROM_DEVICE);
    assert.equal(dma_mapping_error(dev, h), 0);
    const bus = busMaster(dev);
    assert.equal(bus.write32(h + 8n, 1), MEMTX_OK);
    assert.equal(bus.write(h, new Uint8Array(256)), MEMTX_OK);
    assert.deepEqual(reports(), [], 'in bounds and in direction: nothing to say');
    dma_unmap_page(dev, h, 256, DMA_FROM_DEVICE);
    assert.equal(bus.write32(h + 8n, 2), MEMTX_OK, 'a direct bus does not stop it (hardware would not)');
    const r = reports();
    assert.equal(r.length, 1);
    assert.match(r[0]!, /eth: device write to memory not mapped for it .*\[device address=0x[0-9a-f]+\] \[size=4 bytes\]; the device has no live mapping/);
    assert.equal(bus.write32(h + 12n, 2), MEMTX_OK);
    assert.equal(reports().length, 1, 'once per page and kind');
    dev.destroy();
  });

  it('a handle the device was never given, and a read past the end of a mapping, are reported with its live mappings', () => {
    const dev = m.createDevice({ name: 'nvme', dmaMask: 64 });
    const page = take();
    const other = take();
    const h = dma_map_page(dev, page, 0, 512, DMA_BIDIRECTIONAL);
    dma_mapping_error(dev, h);
    const bus = busMaster(dev);
    bus.read32(BigInt(other.pfn * PAGE_SIZE));
    bus.read32(h + 510n);
    const r = reports();
    assert.equal(r.length, 2);
    assert.match(r[0]!, /device read from memory not mapped for it .*live mappings of the device: nvme /);
    assert.match(r[1]!, new RegExp(`device address=0x${(h + 510n).toString(16)}`), 'a read crossing the end of the 512-byte mapping');
    dma_unmap_page(dev, h, 512, DMA_BIDIRECTIONAL);
    dev.destroy();
  });

  it('a device write into a DMA_TO_DEVICE mapping is reported with where it was mapped; a freed coherent buffer too', () => {
    const dev = m.createDevice({ name: 'dir', dmaMask: 64, coherentDmaMask: 64 });
    const page = take();
    const h = dma_map_page(dev, page, 0, PAGE_SIZE, DMA_TO_DEVICE);
    dma_mapping_error(dev, h);
    const bus = busMaster(dev);
    assert.equal(bus.read8(h), m.read(m.page_address(page), 1)[0], 'reading it is what it is for');
    bus.write8(h, 1);
    assert.match(reports()[0]!, /device write to a mapping made DMA_TO_DEVICE .*\nMapped at:\n/);
    dma_unmap_page(dev, h, PAGE_SIZE, DMA_TO_DEVICE);
    const hc = { value: 0n };
    const cpu = dma_alloc_coherent(dev, PAGE_SIZE, hc, GFP_KERNEL)!;
    assert.equal(bus.write32(hc.value, 7), MEMTX_OK);
    assert.equal(reports().length, 1);
    dma_free_coherent(dev, PAGE_SIZE, cpu, hc.value);
    bus.write32(hc.value, 8); // a late completion into freed memory
    assert.equal(reports().length, 2);
    assert.match(reports()[1]!, /device write to memory not mapped for it/);
    dev.destroy();
  });

  it('through a lazy IOMMU, a stale IOTLB hit that the hardware allows is reported; without debug nothing is', () => {
    for (const debug of [true, false]) {
      const dev = m.createDevice({ name: debug ? 'lazy-dbg' : 'lazy-quiet', dmaMask: 48, iommu: { strict: false }, debug });
      const page = take();
      const h = dma_map_page(dev, page, 0, PAGE_SIZE, DMA_FROM_DEVICE);
      dma_mapping_error(dev, h);
      const bus = busMaster(dev);
      bus.write32(h, 1);
      dma_unmap_page(dev, h, PAGE_SIZE, DMA_FROM_DEVICE);
      const before = reports().length;
      assert.equal(bus.write32(h + 4n, 2), MEMTX_OK, 'lazy: still translated');
      assert.equal(reports().length - before, debug ? 1 : 0);
      dev.iommu!.flush_iotlb_all();
      dev.destroy();
    }
  });
});
