// Non-coherent devices see RAM, the CPU sees its write-back cache (lib/dma/cache.ts): each classic
// sync bug shows as it would on arm64 (a missing sync_for_cpu, a missing sync_for_device, a sync in
// the wrong direction, a DMA buffer sharing a cache line with a CPU field), coherent allocations
// are never stale, and drivers whose syncs are right (the edu example, a ring driver) work on a
// non-coherent device, direct and behind an IOMMU, inline and in a worker.

import assert from 'node:assert/strict';
import { Machine } from '../lib/mm/machine';
import '../lib/dma/device';
import type { Device } from '../lib/dma/device';
import { GFP_KERNEL, PAGE_SIZE } from '../lib/mm/gfp';
import { DMA_BIDIRECTIONAL, DMA_FROM_DEVICE, DMA_TO_DEVICE } from '../lib/dma/constants';
import {
  dma_alloc_coherent, dma_alloc_noncoherent, dma_free_coherent, dma_free_noncoherent, dma_map_single, dma_mapping_error, dma_unmap_single,
} from '../lib/dma/mapping';
import { dma_sync_single_for_cpu, dma_sync_single_for_device } from '../lib/dma/sync';
import { dma_cache, DmaCache } from '../lib/dma/cache';
import { CM_SEQ, cacheLayout } from '../lib/dma/cache_layout';
import { arch_dma_prep_coherent, dma_cache_maintenance } from '../lib/dma/direct';
import { BusEngine, MEMTX_OK } from '../lib/devices/bus_engine';
import { busDescription, busMaster } from '../lib/devices/bus_master';
import { createPciDevice, type PciDev } from '../lib/devices/pci_dev';
import { pci_iomap, readl, writel, writeq } from '../lib/drivers/io';
import { pci_get_drvdata, pci_register_driver, pci_unregister_driver } from '../lib/drivers/pci';
import { edu_dma_roundtrip, edu_driver, type EduDev } from '../examples/edu/edu_driver';
import { RC_DESC, RC_HEAD, RC_RING, RC_SIZE, RC_TAIL, ringCopier } from './fixtures/device-models';
import { kfree } from '../lib/mm/slab';
import { expectNoLeaks } from './helpers/leaks';
import { until } from './helpers/until';

const MiB = 1024 * 1024;
const ringType = { module: require.resolve('./fixtures/device-models'), export: 'ringCopier' };

describe('74 non-coherent devices: a simulated CPU cache', () => {
  expectNoLeaks();
  let m: Machine;
  const bufs: number[] = [];
  beforeEach(() => {
    m = new Machine({ name: 'nc74', ramPerNode: 16 * MiB, cmaSize: 0, hugepages: 'off', emitWarnings: false });
  });
  afterEach(() => {
    if (!m.isDestroyed) for (const b of bufs.splice(0)) kfree(b);
    bufs.length = 0;
    m.destroy();
  });
  const kbuf = (size: number): number => {
    const b = m.kmalloc(size, GFP_KERNEL)!;
    bufs.push(b);
    return b;
  };
  const nc = (iommu: boolean, name = 'nc'): Device => m.createDevice({ name, dmaMask: 64, coherent: false, iommu, debug: false });

  for (const iommu of [false, true]) {
    const kind = iommu ? 'behind an IOMMU' : 'direct';
    describe(kind, () => {
      it('a driver that forgets dma_sync_single_for_cpu reads the bytes from before the device wrote; with it, the new ones', () => {
        const dev = nc(iommu);
        const bus = busMaster(dev);
        const buf = kbuf(256);
        const v = m.view(buf, 256);
        v.fill(0x11);
        const h = dma_map_single(dev, buf, 256, DMA_FROM_DEVICE);
        assert.equal(bus.write(h, new Uint8Array(256).fill(0x77)), MEMTX_OK);
        assert.equal(v[0], 0x11, 'the CPU still reads its cache');
        assert.equal(v[255], 0x11);
        if (!iommu) { // through the IOMMU a DMA_FROM_DEVICE mapping is write-only
          const back = new Uint8Array(4);
          bus.read(h, back);
          assert.deepEqual([...back], [0x77, 0x77, 0x77, 0x77], 'the device reads RAM');
        }
        dma_sync_single_for_cpu(dev, h, 256, DMA_FROM_DEVICE);
        assert.equal(v[0], 0x77, 'after the sync the CPU sees what the device wrote');
        assert.equal(v[255], 0x77);
        dma_unmap_single(dev, h, 256, DMA_FROM_DEVICE);
      });

      it('a driver that writes after mapping DMA_TO_DEVICE without dma_sync_single_for_device has the device read the old bytes', () => {
        const dev = nc(iommu);
        const bus = busMaster(dev);
        const buf = kbuf(512);
        const v = m.view(buf, 512);
        v.fill(0x01);
        const h = dma_map_single(dev, buf, 512, DMA_TO_DEVICE); // cleans: RAM holds 0x01
        v.fill(0x02); // written after the map: dirty in the cache
        const seen = new Uint8Array(512);
        assert.equal(bus.read(h, seen), MEMTX_OK);
        assert.ok(seen.every((b) => b === 0x01), 'the device read the stale bytes');
        assert.equal(bus.read32(h + 508n), 0x01010101, 'the fast path too');
        dma_sync_single_for_device(dev, h, 512, DMA_TO_DEVICE);
        assert.equal(bus.read(h, seen), MEMTX_OK);
        assert.ok(seen.every((b) => b === 0x02), 'after the sync the device reads the new bytes');
        dma_unmap_single(dev, h, 512, DMA_TO_DEVICE);
      });

      it('a sync in the wrong direction does not help: for_device instead of for_cpu, or for_cpu(DMA_TO_DEVICE), leaves the CPU stale', () => {
        const dev = nc(iommu);
        const bus = busMaster(dev);
        const buf = kbuf(128);
        const v = m.view(buf, 128);
        v.fill(0);
        const h = dma_map_single(dev, buf, 128, DMA_BIDIRECTIONAL);
        bus.write(h, new Uint8Array(128).fill(9));
        dma_sync_single_for_device(dev, h, 128, DMA_BIDIRECTIONAL); // a clean: nothing comes in
        assert.equal(v[0], 0);
        dma_sync_single_for_cpu(dev, h, 128, DMA_TO_DEVICE); // arm64 does nothing for TO_DEVICE
        assert.equal(v[0], 0);
        dma_sync_single_for_cpu(dev, h, 128, DMA_BIDIRECTIONAL);
        assert.equal(v[0], 9);
        dma_unmap_single(dev, h, 128, DMA_BIDIRECTIONAL);
      });
    });
  }

  it('a DMA buffer sharing a cache line with a CPU field loses the device\'s data on invalidate (why ARCH_DMA_MINALIGN exists); a line of its own keeps it', () => {
    const dev = nc(false);
    const bus = busMaster(dev);
    const obj = kbuf(256); // 64-byte aligned (kmalloc-256)
    assert.equal(obj % 64, 0);
    const v = m.view(obj, 256);
    v.fill(0);
    // struct { u8 rx[32]; u32 counter; ... }: rx shares line 0 with counter.
    const h = dma_map_single(dev, obj, 32, DMA_FROM_DEVICE);
    v.writeUInt32LE(1234, 32); // the CPU updates its field while the device owns rx
    bus.write(h, new Uint8Array(32).fill(0xab));
    dma_sync_single_for_cpu(dev, h, 32, DMA_FROM_DEVICE); // the partial line is cleaned first: the dirty line overwrites rx in RAM
    assert.equal(v[0], 0, 'the device\'s bytes are lost');
    assert.equal(v.readUInt32LE(32), 1234, 'the CPU field survives');
    const gone = new Uint8Array(4);
    bus.read(h, gone);
    assert.deepEqual([...gone], [0, 0, 0, 0], 'RAM lost them too (the write-back overwrote them)');
    dma_unmap_single(dev, h, 32, DMA_FROM_DEVICE);
    // The same with rx on a line of its own (64-byte aligned and padded).
    const h2 = dma_map_single(dev, obj + 64, 64, DMA_FROM_DEVICE);
    v.writeUInt32LE(5678, 128);
    bus.write(h2, new Uint8Array(64).fill(0xcd));
    dma_sync_single_for_cpu(dev, h2, 64, DMA_FROM_DEVICE);
    assert.equal(v[64], 0xcd);
    assert.equal(v[127], 0xcd);
    assert.equal(v.readUInt32LE(128), 5678);
    dma_unmap_single(dev, h2, 64, DMA_FROM_DEVICE);
    // struct { u32 counter; u8 rx[60]; }: rx starts mid-line, the first line is the shared one.
    const h3 = dma_map_single(dev, obj + 132, 60, DMA_FROM_DEVICE);
    v.writeUInt32LE(99, 128);
    bus.write(h3, new Uint8Array(60).fill(0xef));
    dma_sync_single_for_cpu(dev, h3, 60, DMA_FROM_DEVICE);
    assert.equal(v[132], 0, 'lost again: the partial first line was cleaned over them');
    assert.equal(v.readUInt32LE(128), 99);
    dma_unmap_single(dev, h3, 60, DMA_FROM_DEVICE);
    assert.ok(dma_cache(m).stats().writtenBack > 0);
  });

  it('coherent allocations on a non-coherent device are uncached: never stale in either direction', () => {
    const dev = nc(false);
    const bus = busMaster(dev);
    const handle = { value: 0n };
    const cpu = dma_alloc_coherent(dev, PAGE_SIZE, handle, GFP_KERNEL)!;
    const v = m.view(cpu, PAGE_SIZE);
    v.fill(3);
    assert.equal(bus.read8(handle.value + 100n), 3, 'the device sees a CPU write at once');
    bus.write8(handle.value + 200n, 4);
    assert.equal(v[200], 4, 'the CPU sees a device write at once');
    assert.ok(!dma_cache(m).holds(Number(handle.value) / PAGE_SIZE));
    dma_free_coherent(dev, PAGE_SIZE, cpu, handle.value);
  });

  it('a cached page that becomes a coherent buffer leaves the cache (arch_dma_prep_coherent): a device write is seen, the device and CPU agree', () => {
    const dev = nc(false);
    const bus = busMaster(dev);
    const page = m.alloc_pages(GFP_KERNEL, 0)!;
    try {
      const addr = m.page_address(page);
      const h = dma_map_single(dev, addr, PAGE_SIZE, DMA_BIDIRECTIONAL);
      assert.equal(dma_mapping_error(dev, h), 0);
      bus.write8(h + 8n, 0x42); // into RAM, the CPU's line is clean and stale
      assert.ok(dma_cache(m).holds(page.pfn));
      arch_dma_prep_coherent(dev, page, PAGE_SIZE); // what dma_direct_alloc does to fresh pages
      assert.ok(!dma_cache(m).holds(page.pfn), 'prep_coherent took it out');
      assert.equal(m.view(addr, 16)[8], 0x42, 'clean + invalidate: the CPU reads RAM');
      m.view(addr, 1)[0] = 5;
      assert.equal(bus.read8(h), 5, 'uncached: the device sees a CPU write at once');
      dma_unmap_single(dev, h, PAGE_SIZE, DMA_BIDIRECTIONAL);
    } finally {
      m.__free_pages(page, 0);
    }
    const before = dma_cache_maintenance(m).prepCoherent;
    const handle = { value: 0n };
    const cpu = dma_alloc_coherent(dev, PAGE_SIZE, handle, GFP_KERNEL)!;
    assert.equal(dma_cache_maintenance(m).prepCoherent, before + 1, 'dma_alloc_coherent preps its pages');
    dma_free_coherent(dev, PAGE_SIZE, cpu, handle.value);
  });

  it('dma_alloc_noncoherent memory is cached: CPU writes reach the device only after dma_sync_single_for_device', () => {
    const dev = nc(true);
    const bus = busMaster(dev);
    const handle = { value: 0n };
    const cpu = dma_alloc_noncoherent(dev, 2 * PAGE_SIZE, handle, DMA_TO_DEVICE, GFP_KERNEL)!;
    const v = m.view(cpu, 2 * PAGE_SIZE);
    v.fill(0x5a);
    assert.equal(bus.read32(handle.value + BigInt(PAGE_SIZE) + 4n), 0, 'the device reads the zeroed RAM');
    dma_sync_single_for_device(dev, handle.value, 2 * PAGE_SIZE, DMA_TO_DEVICE);
    assert.equal(bus.read32(handle.value + BigInt(PAGE_SIZE) + 4n), 0x5a5a5a5a);
    dma_free_noncoherent(dev, 2 * PAGE_SIZE, cpu, handle.value, DMA_TO_DEVICE);
  });

  it('a coherent device on the same machine is untouched: it snoops the cache', () => {
    const ncd = nc(false, 'nc');
    const cd = m.createDevice({ name: 'c', dmaMask: 64, debug: false });
    const buf = kbuf(64);
    const v = m.view(buf, 64);
    v.fill(1);
    const h = dma_map_single(ncd, buf, 64, DMA_TO_DEVICE);
    v.fill(2); // dirty
    assert.equal(busMaster(ncd).read8(h), 1);
    assert.equal(busMaster(cd).read8(h), 2, 'a coherent device sees the dirty line');
    dma_unmap_single(ncd, h, 64, DMA_TO_DEVICE);
    assert.equal(dma_cache_maintenance(m).forCpu, 1);
  });

  it('a full cache writes back and drops its oldest page: a device write to a clean line becomes visible, a dirty line keeps the CPU\'s bytes', () => {
    const small = new DmaCache(m, 2);
    const dev = m.createDevice({ name: 'e', dmaMask: 64, coherent: false, debug: false });
    const bus = new BusEngine({ ...busDescription(dev), cache: { table: small.table, ownership: 0, requester: 1 } });
    const pages = [0, 1, 2].map(() => m.alloc_pages(GFP_KERNEL, 0)!);
    try {
      const p0 = pages[0]!.pfn * PAGE_SIZE;
      m.view(m.page_address(pages[0]!), PAGE_SIZE).fill(0);
      small.clean(p0, PAGE_SIZE);
      bus.write8(p0, 0xee); // RAM of line 0
      bus.write8(p0 + 64, 0xdd); // RAM of line 1
      m.view(m.page_address(pages[0]!), 128)[65] = 0x44; // line 1 dirty
      small.clean(pages[1]!.pfn * PAGE_SIZE, 64);
      assert.equal(m.view(m.page_address(pages[0]!), 1)[0], 0, 'still cached');
      small.clean(pages[2]!.pfn * PAGE_SIZE, 64); // a third page: the first goes
      assert.equal(small.stats().evicted, 1);
      assert.ok(!small.holds(pages[0]!.pfn));
      const cpu = m.view(m.page_address(pages[0]!), 128);
      assert.equal(cpu[0], 0xee, 'clean line: the CPU now reads RAM');
      assert.equal(cpu[64], 0, 'dirty line: the CPU\'s bytes stay (written back)');
      assert.equal(cpu[65], 0x44);
      assert.equal(bus.read8(p0), 0xee, 'the device now reaches the CPU\'s bytes');
    } finally {
      bus.close();
      for (const p of pages) m.__free_pages(p, 0);
    }
  });

  it('a scribbled cache table never hangs or crashes a bus engine; a table of the wrong size is refused', () => {
    const dev = nc(false);
    const desc = busDescription(dev);
    const table = desc.cache!.table;
    const t = new Int32Array(table);
    const page = m.alloc_pages(GFP_KERNEL, 0)!;
    try {
      m.view(m.page_address(page), 64).fill(0);
      const h = dma_map_single(dev, m.page_address(page), 64, DMA_TO_DEVICE);
      Atomics.store(t, CM_SEQ, Atomics.load(t, CM_SEQ) | 1); // "a change in progress", forever
      const e = new BusEngine(desc);
      m.view(m.page_address(page), 64).fill(0x21); // dirty: the device must read RAM, not this
      assert.equal(e.read8(h), 0, 'after a bounded wait, one unlocked probe still finds the page');
      const other = m.alloc_pages(GFP_KERNEL, 0)!;
      const h2 = dma_map_single(dev, m.page_address(other), 64, DMA_TO_DEVICE); // a change: the sequence heals
      assert.equal(Atomics.load(t, CM_SEQ) & 1, 0);
      // Junk in every hash cell: this side rebuilds the hash from its own records at the next change.
      const l = cacheLayout(8192);
      t.fill(0x7fff_0000, l.keys, l.keys + l.hashSize);
      assert.equal(e.read8(h), 0x21, 'meanwhile the device is misled (it reads the CPU\'s bytes), nothing worse');
      dma_unmap_single(dev, h2, 64, DMA_TO_DEVICE);
      const third = m.alloc_pages(GFP_KERNEL, 0)!;
      const h3 = dma_map_single(dev, m.page_address(third), 64, DMA_TO_DEVICE); // no free cell: rebuilt
      dma_unmap_single(dev, h3, 64, DMA_TO_DEVICE);
      m.__free_pages(third, 0);
      m.__free_pages(other, 0);
      assert.equal(e.read8(h), 0, 'the page is found again after the rebuild');
      e.close();
      dma_unmap_single(dev, h, 64, DMA_TO_DEVICE);
      assert.throws(() => new BusEngine({ ...desc, cache: { table: new SharedArrayBuffer(4096), ownership: 0, requester: 1 } }), TypeError);
      assert.throws(() => new BusEngine({ ...desc, cache: { table, ownership: 7, requester: 1 } }), TypeError);
      assert.equal(cacheLayout(8192).bytes, table.byteLength);
    } finally {
      m.__free_pages(page, 0);
    }
  });
});

describe('74 drivers with the right syncs work on non-coherent devices', () => {
  expectNoLeaks();
  let m: Machine;
  const devs: PciDev[] = [];
  afterEach(async () => {
    pci_unregister_driver(edu_driver);
    for (const p of devs.splice(0)) await p.destroy();
    m?.destroy();
  });

  for (const iommu of [false, true]) {
    for (const worker of [false, true]) {
      const kind = `${iommu ? 'IOMMU' : 'direct'}, ${worker ? 'in a worker' : 'inline'}`;
      it(`the edu example driver (${kind}): DMA round trips pass, DMA-API debug is clean`, async () => {
        m = new Machine({ name: 'edu74', ramPerNode: 8 * MiB, physBase: iommu ? 1024 * MiB : 64 * MiB, cmaSize: 0, hugepages: 'off', emitWarnings: false });
        const pdev = createPciDevice(m, { worker, device: { iommu: iommu ? { strict: true } : false, coherent: false, debug: true } });
        devs.push(pdev);
        assert.equal(pci_register_driver(edu_driver), 0);
        const edu = pci_get_drvdata<EduDev>(pdev)!;
        assert.equal(await edu_dma_roundtrip(edu, 4096), 0);
        assert.equal(await edu_dma_roundtrip(edu, 100), 0, 'a length that ends mid-line');
        assert.deepEqual(m.warnings.map((w) => w.message).filter((s) => /DMA-API|DMAR|EDU/.test(s)), []);
        assert.ok(dma_cache(m).stats().refilled > 0, 'the round trips went through the cache model');
      });

      it(`a ring driver (${kind}): right syncs pass; a missing sync_for_device sends stale data, a missing sync_for_cpu reads stale data`, async () => {
        m = new Machine({ name: 'ring74', ramPerNode: 8 * MiB, physBase: 64 * MiB, cmaSize: 0, hugepages: 'off', emitWarnings: false });
        const pdev = createPciDevice(m, { type: worker ? ringType : ringCopier, worker, device: { iommu, coherent: false, dmaMask: 64, debug: true } });
        devs.push(pdev);
        const dev = pdev.dev;
        const io = pci_iomap(pdev, 0, 0)!;
        const N = 8;
        const LEN = 1500;
        const ringH = { value: 0n };
        const ring = dma_alloc_coherent(dev, N * RC_DESC, ringH, GFP_KERNEL)!; // descriptors: coherent, never synced
        writeq(ringH.value, io, RC_RING);
        writel(N, io, RC_SIZE);
        const tx = Array.from({ length: N }, () => m.kmalloc(LEN, GFP_KERNEL)!);
        const rx = Array.from({ length: N }, () => m.kmalloc(LEN, GFP_KERNEL)!);
        const txH = tx.map((b) => dma_map_single(dev, b, LEN, DMA_TO_DEVICE));
        const rxH = rx.map((b) => dma_map_single(dev, b, LEN, DMA_FROM_DEVICE));
        for (const h of [...txH, ...rxH]) assert.equal(dma_mapping_error(dev, h), 0);
        const desc = m.view(ring, N * RC_DESC);
        let tail = 0;
        /** One round: fill TX (then sync unless told), post N descriptors, wait, sync RX (unless told), check. */
        const round = async (seed: number, syncTx: boolean, syncRx: boolean): Promise<number> => {
          for (let i = 0; i < N; i++) {
            m.view(tx[i]!, LEN).fill((seed + i) & 0xff);
            if (syncTx) dma_sync_single_for_device(dev, txH[i]!, LEN, DMA_TO_DEVICE);
            desc.writeBigUInt64LE(txH[i]!, i * RC_DESC);
            desc.writeBigUInt64LE(rxH[i]!, i * RC_DESC + 8);
            desc.writeUInt32LE(LEN, i * RC_DESC + 16);
            desc.writeUInt32LE(0, i * RC_DESC + 20);
          }
          tail += N;
          writel(tail, io, RC_TAIL);
          await until(() => readl(io, RC_HEAD) === tail, 'the ring to drain');
          let good = 0;
          for (let i = 0; i < N; i++) {
            assert.equal(desc.readUInt32LE(i * RC_DESC + 20), 1, 'status: done');
            if (syncRx) dma_sync_single_for_cpu(dev, rxH[i]!, LEN, DMA_FROM_DEVICE);
            const got = m.view(rx[i]!, LEN);
            if (got[0] === ((seed + i + 1) & 0xff) && got[LEN - 1] === ((seed + i + 1) & 0xff)) good++;
            if (syncRx) dma_sync_single_for_device(dev, rxH[i]!, LEN, DMA_FROM_DEVICE); // give it back
          }
          return good;
        };
        try {
          assert.equal(await round(10, true, true), N, 'right syncs: every packet arrives');
          assert.equal(await round(20, true, true), N, 'and again, with the buffers reused');
          assert.equal(await round(30, false, true), 0, 'no sync_for_device on TX: the device sent the previous round\'s bytes');
          assert.equal(m.view(rx[0]!, 1)[0], 21, 'exactly those: round 20\'s data, plus one');
          assert.equal(await round(40, true, false), 0, 'no sync_for_cpu on RX: the CPU reads stale lines');
          assert.equal(await round(50, true, true), N, 'right syncs again: all good');
        } finally {
          for (let i = 0; i < N; i++) {
            dma_unmap_single(dev, txH[i]!, LEN, DMA_TO_DEVICE);
            dma_unmap_single(dev, rxH[i]!, LEN, DMA_FROM_DEVICE);
            kfree(tx[i]!);
            kfree(rx[i]!);
          }
          dma_free_coherent(dev, N * RC_DESC, ring, ringH.value);
        }
        assert.deepEqual(m.warnings.map((w) => w.message).filter((s) => /DMA-API|DMAR/.test(s)), [], 'DMA-API debug is clean');
      });
    }
  }
});
