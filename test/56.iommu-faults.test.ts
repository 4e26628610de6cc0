// IOMMU faults as data: a blocked access changes no byte and leaves a record (device, IOVA,
// read/write, DMAR reason) in the domain's log, for the handler set with iommu_set_fault_handler,
// or printed as the kernel's DMAR line; lazy mode lets a cached translation live until the flush.

import assert from 'node:assert/strict';
import { Machine } from '../lib/mm/machine';
import '../lib/dma/device';
import type { Device } from '../lib/dma/device';
import { PAGE_SIZE } from '../lib/mm/gfp';
import { DMA_BIDIRECTIONAL, DMA_FROM_DEVICE, DMA_TO_DEVICE, ENOSYS } from '../lib/dma/constants';
import { dma_map_page, dma_unmap_page } from '../lib/dma/mapping';
import { IOMMU_FAULT_READ, IOMMU_FAULT_WRITE, iommu_set_fault_handler, type IommuDomain } from '../lib/dma/iommu';
import { FAULT_SLOTS } from '../lib/dma/iommu_regs';
import { BusEngine, MEMTX_ACCESS_ERROR, MEMTX_OK } from '../lib/devices/bus_engine';
import { busDescription, busMaster } from '../lib/devices/bus_master';
import { expectNoLeaks } from './helpers/leaks';
import { usePagesOf } from './helpers/pages-of';

const MiB = 1024 * 1024;

function domain(dev: Device): IommuDomain {
  assert.ok(dev.iommu !== null);
  return dev.iommu;
}

describe('56 IOMMU faults', () => {
  expectNoLeaks();
  let m: Machine;
  const take = usePagesOf(() => m);
  const dmar = (): string[] => m.warnings.map((w) => w.message).filter((s) => s.startsWith('DMAR:'));
  beforeEach(() => {
    m = new Machine({ name: 'f56', ramPerNode: 8 * MiB, cmaSize: 0, hugepages: 'off', emitWarnings: false });
  });

  it('DMA to an IOVA that was never mapped: a fault record, the DMAR line, and no byte changed anywhere', () => {
    const dev = m.createDevice({ name: 'nic', dmaMask: 48, iommu: true });
    const page = take();
    const h = dma_map_page(dev, page, 0, PAGE_SIZE, DMA_BIDIRECTIONAL);
    const neighbour = h - BigInt(PAGE_SIZE) * 16n; // IOVAs are handed out top-down: below is free
    const memBefore = m.read(m.segments[0]!.address, m.segments[0]!.byteLength);
    const bus = busMaster(dev);
    assert.equal(bus.write(neighbour + 8n, new Uint8Array(64).fill(0xee)), MEMTX_ACCESS_ERROR);
    assert.equal(bus.status, MEMTX_ACCESS_ERROR);
    assert.ok(m.read(m.segments[0]!.address, m.segments[0]!.byteLength).equals(memBefore), 'not one byte of RAM changed');
    const faults = domain(dev).faults;
    assert.equal(faults.length, 1);
    assert.deepEqual({ ...faults[0]! }, {
      device: 'nic', iova: neighbour, flags: IOMMU_FAULT_WRITE, write: true, reason: 0x05,
      reasonText: 'PTE Write access is not set', source: faults[0]!.source,
    });
    assert.deepEqual(dmar(), [`DMAR: [DMA Write NO_PASID] Request device [nic] fault addr 0x${neighbour.toString(16)} [fault reason 0x05] PTE Write access is not set`]);
    dma_unmap_page(dev, h, PAGE_SIZE, DMA_BIDIRECTIONAL);
    dev.destroy();
  });

  it('a device write into a DMA_TO_DEVICE mapping faults with the write-permission reason; a read of a DMA_FROM_DEVICE one with the read reason', () => {
    const dev = m.createDevice({ name: 'dir', dmaMask: 48, iommu: true });
    const page = take();
    const cpu = m.view(m.page_address(page), PAGE_SIZE);
    cpu.fill(0x11);
    const to = dma_map_page(dev, page, 0, PAGE_SIZE, DMA_TO_DEVICE);
    const from = dma_map_page(dev, page, 0, PAGE_SIZE, DMA_FROM_DEVICE);
    const bus = busMaster(dev);
    assert.equal(bus.read32(to), 0x11111111, 'reading a TO_DEVICE buffer is allowed');
    assert.equal(bus.write32(to, 0xdeadbeef), MEMTX_ACCESS_ERROR);
    assert.ok(cpu.every((b) => b === 0x11), 'the write was blocked');
    assert.equal(bus.write32(from + 4n, 0x22222222), MEMTX_OK, 'writing a FROM_DEVICE buffer is allowed');
    assert.equal(cpu.readUInt32LE(4), 0x22222222);
    assert.equal(bus.read32(from), 0xffffffff, 'reading a FROM_DEVICE buffer is not');
    const [w, r] = domain(dev).faults;
    assert.equal(w!.reason, 0x05);
    assert.equal(w!.flags, IOMMU_FAULT_WRITE);
    assert.equal(w!.iova, to);
    assert.equal(r!.reason, 0x06);
    assert.equal(r!.flags, IOMMU_FAULT_READ);
    assert.equal(r!.reasonText, 'PTE Read access is not set');
    dma_unmap_page(dev, to, PAGE_SIZE, DMA_TO_DEVICE);
    dma_unmap_page(dev, from, PAGE_SIZE, DMA_FROM_DEVICE);
    dev.destroy();
  });

  it('a transfer whose last page is not mapped writes none of its pages; beyond the aperture is reason 0x04', () => {
    const dev = m.createDevice({ name: 'tail', dmaMask: 32, iommu: true });
    const page = take();
    const above = dma_map_page(dev, take(), 0, PAGE_SIZE, DMA_BIDIRECTIONAL);
    const h = dma_map_page(dev, page, 0, PAGE_SIZE, DMA_BIDIRECTIONAL);
    assert.equal(h + BigInt(PAGE_SIZE), above, 'top-down: the first mapping sits right above');
    dma_unmap_page(dev, above, PAGE_SIZE, DMA_BIDIRECTIONAL);
    const cpu = m.view(m.page_address(page), PAGE_SIZE);
    cpu.fill(0);
    const bus = busMaster(dev);
    assert.equal(bus.write(h + 100n, new Uint8Array(PAGE_SIZE).fill(9)), MEMTX_ACCESS_ERROR);
    assert.ok(cpu.every((b) => b === 0), 'the mapped first page is untouched too');
    assert.equal(domain(dev).faults.at(-1)!.iova, h + BigInt(PAGE_SIZE), 'the record names the page that failed');
    const wide = m.createDevice({ name: 'wide', dmaMask: 64, iommu: { apertureBits: 39 } });
    assert.equal(busMaster(wide).read8(2n ** 40n), 0xff);
    assert.equal(domain(wide).faults[0]!.reason, 0x04);
    assert.equal(domain(wide).faults[0]!.reasonText, 'Access beyond MGAW');
    dma_unmap_page(dev, h, PAGE_SIZE, DMA_BIDIRECTIONAL);
    dev.destroy();
    wide.destroy();
  });

  it('iommu_set_fault_handler: the handler gets (domain, dev, iova, flags, token); 0 silences the DMAR line, -ENOSYS or a throw does not', () => {
    const dev = m.createDevice({ name: 'h', dmaMask: 48, iommu: true });
    const d = domain(dev);
    const seen: unknown[][] = [];
    const token = { mine: true };
    let ret = 0;
    iommu_set_fault_handler(d, (dom, fdev, iova, flags, tok) => {
      seen.push([dom, fdev, iova, flags, tok]);
      if (ret === 1) throw new Error('driver bug');
      return ret;
    }, token);
    const bus = busMaster(dev);
    assert.equal(bus.write8(0x5000n, 1), MEMTX_ACCESS_ERROR);
    assert.deepEqual(seen, [[d, dev, 0x5000n, IOMMU_FAULT_WRITE, token]]);
    assert.deepEqual(dmar(), [], 'handled: nothing printed');
    ret = -ENOSYS;
    assert.equal(bus.read8(0x6000n), 0xff);
    assert.equal(dmar().length, 1, '-ENOSYS: printed too');
    ret = 1;
    assert.equal(bus.read8(0x7000n), 0xff, 'a throwing handler does not reach the device model');
    assert.match(dmar()[1]!, /fault handler threw: driver bug/);
    assert.equal(d.faults.length, 3, 'every fault is logged either way');
    iommu_set_fault_handler(d, null);
    assert.throws(() => iommu_set_fault_handler(d, 'log' as unknown as null), TypeError);
    assert.throws(() => iommu_set_fault_handler({} as IommuDomain, null), TypeError);
    dev.destroy();
  });

  it('strict mode blocks an unmapped IOVA at once; lazy mode lets a cached translation work until the flush', () => {
    for (const strict of [true, false]) {
      const dev = m.createDevice({ name: strict ? 'strict' : 'lazy', dmaMask: 48, iommu: { strict } });
      const page = take();
      const cpu = m.view(m.page_address(page), PAGE_SIZE);
      cpu.fill(0);
      const h = dma_map_page(dev, page, 0, PAGE_SIZE, DMA_FROM_DEVICE);
      const bus = busMaster(dev);
      assert.equal(bus.write32(h, 1), MEMTX_OK, 'the device uses the mapping (its IOTLB now holds it)');
      dma_unmap_page(dev, h, PAGE_SIZE, DMA_FROM_DEVICE);
      const late = bus.write32(h + 8n, 2);
      if (strict) {
        assert.equal(late, MEMTX_ACCESS_ERROR, 'strict: the unmap invalidated the IOTLB');
        assert.equal(cpu.readUInt32LE(8), 0);
      } else {
        assert.equal(late, MEMTX_OK, 'lazy: the stale IOTLB entry still translates, as on hardware');
        assert.equal(cpu.readUInt32LE(8), 2, 'and the late write landed in the old page');
        domain(dev).flush_iotlb_all();
        assert.equal(bus.write32(h + 12n, 3), MEMTX_ACCESS_ERROR, 'after the flush it faults');
        assert.equal(cpu.readUInt32LE(12), 0);
      }
      dev.destroy();
    }
  });

  it('faults recorded without the inline drain wait in the shared slots; more than the slots overflow and are counted', () => {
    const dev = m.createDevice({ name: 'ovf', dmaMask: 48, iommu: true });
    const engine = new BusEngine(busDescription(dev)); // no onFault: as a worker records them
    for (let i = 0; i < FAULT_SLOTS + 3; i++) assert.equal(engine.read8(BigInt((i + 1) * PAGE_SIZE)), 0xff);
    assert.deepEqual(dmar(), [], 'nothing reported until the driver side looks');
    assert.equal(domain(dev).processFaults(), FAULT_SLOTS);
    const log = domain(dev).faults;
    assert.equal(log.length, FAULT_SLOTS);
    assert.deepEqual(log.map((f) => f.iova), Array.from({ length: FAULT_SLOTS }, (_, i) => BigInt((i + 1) * PAGE_SIZE)), 'in order');
    assert.match(dmar().at(-1)!, /3 faults lost/);
    engine.close();
    dev.destroy();
  });
});
