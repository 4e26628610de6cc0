// Buffer ownership (a device's `ownership` option, lib/dma/ownership.ts): a CPU write while the
// device owns a streaming buffer is reported at the next sync_for_cpu or unmap with the byte that
// changed and the mapping's stack; a device access to a buffer the CPU owns is reported by the bus
// (and refused in strict mode); a driver that keeps the rules gets no report.

import assert from 'node:assert/strict';
import { Machine } from '../lib/mm/machine';
import '../lib/dma/device';
import type { Device } from '../lib/dma/device';
import { GFP_KERNEL, PAGE_SIZE } from '../lib/mm/gfp';
import { DMA_BIDIRECTIONAL, DMA_FROM_DEVICE, DMA_TO_DEVICE } from '../lib/dma/constants';
import { DmaDebugError } from '../lib/dma/debug';
import {
  dma_alloc_noncoherent, dma_free_noncoherent, dma_map_sg, dma_map_single, dma_mapping_error, dma_unmap_sg, dma_unmap_single,
} from '../lib/dma/mapping';
import { dma_sync_sg_for_cpu, dma_sync_single_for_cpu, dma_sync_single_for_device } from '../lib/dma/sync';
import { CHECK_CPU_WROTE_DEVICE_OWNED, CHECK_DEVICE_TOUCHED_CPU_OWNED } from '../lib/dma/ownership';
import { Scatterlist, sg_init_table } from '../lib/dma/scatterlist';
import { sg_set_buf } from '../lib/dma/sg_helpers';
import { MEMTX_ACCESS_ERROR, MEMTX_OK } from '../lib/devices/bus_engine';
import { busMaster } from '../lib/devices/bus_master';
import { createPciDevice, type PciDev } from '../lib/devices/pci_dev';
import { pci_iomap, readl, writel, writeq } from '../lib/drivers/io';
import { kfree } from '../lib/mm/slab';
import { DB_ADDR, DB_COUNT, DB_DOORBELL, DB_STATUS } from './fixtures/device-models';
import { expectNoLeaks } from './helpers/leaks';
import { until } from './helpers/until';

const MiB = 1024 * 1024;
const doorbellType = { module: require.resolve('./fixtures/device-models'), export: 'doorbell' };

describe('75 buffer ownership checking', () => {
  expectNoLeaks();
  let m: Machine;
  const bufs: number[] = [];
  beforeEach(() => {
    m = new Machine({ name: 'own75', ramPerNode: 16 * MiB, cmaSize: 0, hugepages: 'off', emitWarnings: false });
  });
  afterEach(() => {
    if (!m.isDestroyed) for (const b of bufs.splice(0)) kfree(b);
    bufs.length = 0;
    m.destroy();
  });
  const kbuf = (size: number): number => {
    const b = m.kmalloc(size, GFP_KERNEL)!;
    bufs.push(b);
    m.view(b, size).fill(0);
    return b;
  };
  const checks = (dev: Device): number[] => dev.debug.reports.map((r) => r.check).filter((c) => c >= 40);
  const map = (dev: Device, buf: number, size: number, dir: number): bigint => {
    const h = dma_map_single(dev, buf, size, dir as 0);
    assert.equal(dma_mapping_error(dev, h), 0);
    return h;
  };

  for (const coherent of [false, true]) {
    for (const iommu of [false, true]) {
      const kind = `${coherent ? 'coherent' : 'non-coherent'} ${iommu ? 'IOMMU' : 'direct'} device`;
      it(`${kind}: a driver that keeps the rules gets no report`, () => {
        const dev = m.createDevice({ name: 'ok', dmaMask: 64, coherent, iommu, ownership: 'strict' });
        const bus = busMaster(dev);
        const tx = kbuf(512);
        const rx = kbuf(512);
        m.view(tx, 512).fill(1);
        const th = map(dev, tx, 512, DMA_TO_DEVICE);
        const rh = map(dev, rx, 512, DMA_FROM_DEVICE);
        for (let round = 0; round < 3; round++) {
          const got = new Uint8Array(512);
          assert.equal(bus.read(th, got), MEMTX_OK);
          assert.equal(bus.write(rh, got), MEMTX_OK);
          dma_sync_single_for_cpu(dev, rh, 512, DMA_FROM_DEVICE);
          assert.equal(m.view(rx, 1)[0], round + 1);
          dma_sync_single_for_device(dev, rh, 512, DMA_FROM_DEVICE);
          dma_sync_single_for_cpu(dev, th, 512, DMA_TO_DEVICE);
          m.view(tx, 512).fill(round + 2);
          dma_sync_single_for_device(dev, th, 512, DMA_TO_DEVICE);
        }
        dma_unmap_single(dev, th, 512, DMA_TO_DEVICE);
        dma_unmap_single(dev, rh, 512, DMA_FROM_DEVICE);
        assert.deepEqual(dev.debug.reports.map((r) => r.message), []);
      });

      it(`${kind}: a CPU write while the device owns a DMA_TO_DEVICE buffer is reported at sync_for_cpu, naming the byte and the mapping's stack`, () => {
        const dev = m.createDevice({ name: 'tx', dmaMask: 64, coherent, iommu, ownership: 'report' });
        const buf = kbuf(300);
        const h = map(dev, buf, 300, DMA_TO_DEVICE);
        m.view(buf, 300)[299] = 0x5e;
        dma_sync_single_for_cpu(dev, h, 300, DMA_TO_DEVICE);
        assert.deepEqual(checks(dev), [CHECK_CPU_WROTE_DEVICE_OWNED]);
        const r = dev.debug.reports.at(-1)!;
        assert.match(r.message, /CPU wrote to memory the device owns .*first changed byte at offset 299: 0x0 -> 0x5e.*dma_sync_single_for_cpu/);
        assert.match(r.entry!.stack, /75\.ownership\.test/, 'the mapping\'s stack names the test');
        m.view(buf, 300)[0] = 1; // the CPU owns it now: fine
        dma_unmap_single(dev, h, 300, DMA_TO_DEVICE);
        assert.deepEqual(checks(dev), [CHECK_CPU_WROTE_DEVICE_OWNED], 'nothing more');
      });
    }
  }

  it('non-coherent device: a CPU write into a DMA_FROM_DEVICE buffer the device owns is caught at unmap; strict throws once the unmap is done', () => {
    const dev = m.createDevice({ name: 'rx', dmaMask: 64, coherent: false, ownership: 'strict' });
    const bus = busMaster(dev);
    const buf = kbuf(128);
    const h = map(dev, buf, 128, DMA_FROM_DEVICE);
    bus.write(h, new Uint8Array(128).fill(3)); // the device's own write is no CPU write
    m.view(buf, 128)[7] = 9;
    assert.throws(() => dma_unmap_single(dev, h, 128, DMA_FROM_DEVICE), (e: unknown) => {
      assert.ok(e instanceof DmaDebugError);
      assert.equal(e.code, 'ERR_DMA_API_DEBUG');
      assert.equal(e.report.check, CHECK_CPU_WROTE_DEVICE_OWNED);
      assert.match(e.message, /offset 7: 0x0 -> 0x9.*dma_unmap_page/);
      return true;
    });
    assert.equal(dev.debug.activeEntries(), 0, 'the unmap happened');
    assert.equal(m.view(buf, 8)[0], 3, 'and synced: the device\'s data is in');
  });

  it('a coherent device\'s own writes into a DMA_FROM_DEVICE buffer are not mistaken for the CPU\'s', () => {
    const dev = m.createDevice({ name: 'crx', dmaMask: 64, ownership: 'strict' });
    const buf = kbuf(128);
    const h = map(dev, buf, 128, DMA_FROM_DEVICE);
    busMaster(dev).write(h, new Uint8Array(128).fill(3));
    dma_unmap_single(dev, h, 128, DMA_FROM_DEVICE);
    assert.deepEqual(checks(dev), []);
  });

  for (const coherent of [false, true]) {
    it(`${coherent ? 'coherent' : 'non-coherent'} device: an access to a buffer the CPU owns is reported by the bus ('report' lets it through, 'strict' refuses it and changes nothing)`, () => {
      const rep = m.createDevice({ name: 'rep', dmaMask: 64, coherent, ownership: 'report' });
      const b1 = kbuf(256);
      const h1 = map(rep, b1, 256, DMA_BIDIRECTIONAL);
      dma_sync_single_for_cpu(rep, h1, 256, DMA_BIDIRECTIONAL);
      assert.equal(busMaster(rep).write32(h1 + 64n, 0xdeadbeef), MEMTX_OK, 'report: the access goes through');
      const r = rep.debug.reports.at(-1)!;
      assert.equal(r.check, CHECK_DEVICE_TOUCHED_CPU_OWNED);
      assert.match(r.message, new RegExp(`device write to memory the CPU owns \\[device address=0x${(h1 + 64n).toString(16)}\\] \\[size=4 bytes\\] \\[mapping at 0x${h1.toString(16)} size=256 DMA_BIDIRECTIONAL\\]`));
      assert.match(r.entry!.stack, /75\.ownership\.test/);
      dma_sync_single_for_device(rep, h1, 256, DMA_BIDIRECTIONAL);
      assert.equal(busMaster(rep).read32(h1 + 64n), 0xdeadbeef);
      assert.equal(rep.debug.reports.length, 1, 'the device owns it again: no report');
      dma_unmap_single(rep, h1, 256, DMA_BIDIRECTIONAL);

      const str = m.createDevice({ name: 'str', dmaMask: 64, coherent, ownership: 'strict' });
      const b2 = kbuf(256);
      m.view(b2, 256).fill(0x10);
      const h2 = map(str, b2, 256, DMA_BIDIRECTIONAL);
      dma_sync_single_for_cpu(str, h2, 256, DMA_BIDIRECTIONAL);
      const bus = busMaster(str);
      assert.equal(bus.write(h2, new Uint8Array(256).fill(0x99)), MEMTX_ACCESS_ERROR, 'strict: refused');
      assert.equal(bus.read8(h2 + 255n), 0xff, 'a refused load reads all-ones');
      assert.match(str.debug.reports.at(-1)!.message, /refused by the bus/);
      dma_sync_single_for_device(str, h2, 256, DMA_BIDIRECTIONAL);
      dma_unmap_single(str, h2, 256, DMA_BIDIRECTIONAL);
      assert.ok(m.view(b2, 256).every((b) => b === 0x10), 'no byte changed');
    });
  }

  it('dma_alloc_noncoherent memory starts owned by the CPU: the device needs a sync_for_device first', () => {
    const dev = m.createDevice({ name: 'nca', dmaMask: 64, coherent: false, ownership: 'report' });
    const handle = { value: 0n };
    const cpu = dma_alloc_noncoherent(dev, PAGE_SIZE, handle, DMA_TO_DEVICE, GFP_KERNEL)!;
    busMaster(dev).read8(handle.value);
    assert.deepEqual(checks(dev), [CHECK_DEVICE_TOUCHED_CPU_OWNED]);
    dma_sync_single_for_device(dev, handle.value, PAGE_SIZE, DMA_TO_DEVICE);
    busMaster(dev).read8(handle.value);
    m.view(cpu, 1)[0] = 1;
    dma_free_noncoherent(dev, PAGE_SIZE, cpu, handle.value, DMA_TO_DEVICE);
    assert.deepEqual(checks(dev), [CHECK_DEVICE_TOUCHED_CPU_OWNED, CHECK_CPU_WROTE_DEVICE_OWNED], 'the write before the free is caught too');
  });

  it('scatter-gather: each mapped segment changes hands; a CPU write into the second is named by its segment', () => {
    const dev = m.createDevice({ name: 'sg', dmaMask: 64, coherent: false, ownership: 'report' });
    const a = kbuf(1024);
    const b = kbuf(1024);
    const sgl = [new Scatterlist(), new Scatterlist()];
    sg_init_table(sgl, 2);
    sg_set_buf(sgl[0]!, a, 1024);
    sg_set_buf(sgl[1]!, b, 1024);
    assert.equal(dma_map_sg(dev, sgl[0]!, 2, DMA_TO_DEVICE), 2);
    m.view(b, 1024)[10] = 7;
    dma_sync_sg_for_cpu(dev, sgl[0]!, 2, DMA_TO_DEVICE);
    assert.deepEqual(checks(dev), [CHECK_CPU_WROTE_DEVICE_OWNED]);
    assert.match(dev.debug.reports.at(-1)!.message, /size=1024 bytes.*offset 10/);
    dma_unmap_sg(dev, sgl[0]!, 2, DMA_TO_DEVICE);
  });

  it('a device in a worker: its access to a CPU-owned buffer is recorded by its bus and reported at the driver\'s next sync', async () => {
    const pdev: PciDev = createPciDevice(m, { type: doorbellType, worker: true, device: { dmaMask: 48, coherent: false, ownership: 'strict' } });
    try {
      const dev = pdev.dev;
      const io = pci_iomap(pdev, 0, 0)!;
      const buf = kbuf(64);
      const h = map(dev, buf, 64, DMA_FROM_DEVICE);
      dma_sync_single_for_cpu(dev, h, 64, DMA_FROM_DEVICE);
      writeq(h, io, DB_ADDR);
      writel(0x1234, io, DB_DOORBELL);
      await until(() => readl(io, DB_COUNT) === 1, 'the doorbell');
      assert.equal(readl(io, DB_STATUS), MEMTX_ACCESS_ERROR, 'strict: the worker\'s bus refused the write');
      assert.deepEqual(checks(dev), [], 'not reported yet: the driver side has not looked');
      dma_sync_single_for_device(dev, h, 64, DMA_FROM_DEVICE);
      assert.deepEqual(checks(dev), [CHECK_DEVICE_TOUCHED_CPU_OWNED]);
      assert.match(dev.debug.reports.at(-1)!.message, /device write to memory the CPU owns.*refused by the bus/);
      dma_unmap_single(dev, h, 64, DMA_FROM_DEVICE);
      assert.ok(m.view(buf, 64).every((x) => x === 0));
    } finally {
      await pdev.destroy();
    }
  });

  it('bad options are refused before a device exists', () => {
    assert.throws(() => m.createDevice({ ownership: 'loud' as 'report' }), /Expected 'report' or 'strict' for ownership/);
    assert.throws(() => m.createDevice({ ownership: 'report', debug: false }), /needs DMA-API debug/);
    const quiet = new Machine({ name: 'own75q', ramPerNode: 4 * MiB, cmaSize: 0, hugepages: 'off', emitWarnings: false, dmaDebug: false });
    try {
      const d = quiet.createDevice({ ownership: 'report' });
      assert.equal(d.debug.enabled, true, 'ownership turns DMA-API debug on for its device');
      assert.equal(d.ownership, 'report');
      assert.throws(() => { (d as { ownership: string }).ownership = 'off'; }, TypeError);
    } finally {
      quiet.destroy();
    }
  });
});
