// mm/dmapool.c: the kernel's size, alignment and boundary rules, LIFO reuse, blocks the device
// reaches at their handles, the dmapool_debug reports, managed pools, validation, and a port of
// NVMe's PRP-list setup that a device walks through the bus.

import assert from 'node:assert/strict';
import { Machine } from '../lib/mm/machine';
import { GFP_KERNEL, NUMA_NO_NODE, PAGE_SIZE } from '../lib/mm/gfp';
import type { Device } from '../lib/dma/device';
import '../lib/dma/device';
import {
  POOL_POISON_ALLOCATED, POOL_POISON_FREED, dma_pool_alloc, dma_pool_create, dma_pool_create_node, dma_pool_destroy,
  dma_pool_free, dma_pool_zalloc, dmam_pool_create, dmam_pool_destroy, pools_show, type DmaPool,
} from '../lib/dma/dmapool';
import { dma_map_sgtable, dma_unmap_sgtable } from '../lib/dma/mapping';
import { DMA_TO_DEVICE } from '../lib/dma/constants';
import { SgTable, sg_dma_address, sg_dma_len, sg_free_table, for_each_sgtable_dma_sg } from '../lib/dma/scatterlist';
import { sg_alloc_table_from_pages } from '../lib/dma/sg_pages';
import { busMaster } from '../lib/devices/bus_master';
import { MEMTX_OK } from '../lib/devices/bus_engine';
import { expectNoLeaks } from './helpers/leaks';

const MiB = 1 << 20;

function alloc(pool: DmaPool, gfp = GFP_KERNEL): { vaddr: number; dma: bigint } {
  const h = { value: 0n };
  const vaddr = dma_pool_alloc(pool, gfp, h);
  assert.notEqual(vaddr, null, 'dma_pool_alloc succeeded');
  return { vaddr: vaddr!, dma: h.value };
}

describe('64 dma_pool (mm/dmapool.c)', () => {
  expectNoLeaks();
  let m: Machine;
  let dev: Device;
  let iommuDev: Device;
  const boot = (dmaDebug: boolean): void => {
    m = new Machine({ name: 'm64', ramPerNode: 4 * MiB, cmaSize: 2 * MiB, hugepages: 'off', emitWarnings: false, dmaDebug });
    dev = m.createDevice({ name: 'nvme0', dmaMask: 64, coherentDmaMask: 64 });
    iommuDev = m.createDevice({ name: 'nvme1', dmaMask: 64, coherentDmaMask: 64, iommu: true });
  };
  afterEach(() => m.destroy());

  describe('creation: the kernel size, alignment and boundary rules', () => {
    beforeEach(() => boot(false));

    it('returns null where the kernel does, and rounds sizes as it does', () => {
      assert.equal(dma_pool_create('x', null, 64, 0, 0), null, 'no device');
      assert.equal(dma_pool_create('x', dev, 0, 0, 0), null, 'size 0');
      assert.equal(dma_pool_create('x', dev, 2 ** 31, 0, 0), null, 'size above INT_MAX');
      assert.equal(dma_pool_create('x', dev, 64, 48, 0), null, 'align not a power of two');
      assert.equal(dma_pool_create('x', dev, 64, 0, 32), null, 'boundary below the size');
      assert.equal(dma_pool_create('x', dev, 64, 0, 96), null, 'boundary not a power of two');
      const tiny = dma_pool_create('tiny', dev, 1, 0, 0)!;
      assert.equal(tiny.size, 16, 'at least sizeof(struct dma_block)');
      const rounded = dma_pool_create('rounded', dev, 100, 64, 0)!;
      assert.equal(rounded.size, 128, 'rounded up to align');
      assert.equal(rounded.allocation, PAGE_SIZE);
      assert.equal(rounded.boundary, PAGE_SIZE, 'boundary 0 is the allocation');
      const big = dma_pool_create('big', dev, 3 * PAGE_SIZE, 0, 2 * MiB)!;
      assert.equal(big.allocation, 3 * PAGE_SIZE, 'allocation is max(size, PAGE_SIZE)');
      assert.equal(big.boundary, 3 * PAGE_SIZE, 'boundary is at most the allocation');
      const named = dma_pool_create_node('a-name-longer-than-thirty-one-characters', dev, 64, 0, 0, 0)!;
      assert.equal(named.name, 'a-name-longer-than-thirty-one-c', 'strscpy into char name[32]');
      assert.equal(named.node, 0);
      for (const p of [tiny, rounded, big, named]) dma_pool_destroy(p);
      dma_pool_destroy(null);
    });

    it('misuse is a TypeError/RangeError before anything is made', () => {
      assert.throws(() => dma_pool_create(5 as unknown as string, dev, 64, 0, 0), TypeError);
      assert.throws(() => dma_pool_create('x', {} as Device, 64, 0, 0), TypeError);
      assert.throws(() => dma_pool_create('x', dev, '64' as unknown as number, 0, 0), TypeError);
      assert.throws(() => dma_pool_create('x', dev, -1, 0, 0), RangeError);
      assert.throws(() => dma_pool_create_node('x', dev, 64, 0, 0, -5), RangeError);
      assert.equal(pools_show(dev), 'poolinfo - 0.1\n', 'no pool was registered');
      const pool = dma_pool_create('v', dev, 64, 0, 0)!;
      assert.throws(() => dma_pool_alloc(pool, 'GFP_KERNEL' as unknown as number, { value: 0n }), TypeError);
      assert.throws(() => dma_pool_alloc(pool, GFP_KERNEL, Object.freeze({ value: 0n })), TypeError);
      assert.throws(() => dma_pool_alloc({} as DmaPool, GFP_KERNEL, { value: 0n }), TypeError);
      assert.equal(pool.nr_pages, 0, 'nothing was allocated by the refused calls');
      const b = alloc(pool);
      assert.throws(() => dma_pool_free(pool, b.vaddr, Number(b.dma) as unknown as bigint), TypeError);
      assert.equal(pool.nr_active, 1);
      dma_pool_free(pool, b.vaddr, b.dma);
      dma_pool_destroy(pool);
      assert.throws(() => dma_pool_alloc(pool, GFP_KERNEL, { value: 0n }), /destroyed/);
      assert.throws(() => dma_pool_destroy(pool), /destroyed/);
    });
  });

  describe('blocks', () => {
    beforeEach(() => boot(false));

    it('a page is carved in address order, never across the boundary; the first block comes first', () => {
      const pool = dma_pool_create('b', dev, 48, 16, 64)!;
      const got = Array.from({ length: 64 }, () => alloc(pool));
      assert.equal(pool.nr_pages, 1);
      assert.equal(pool.nr_blocks, 64, 'one 48-byte block per 64-byte stretch');
      const base = got[0]!.vaddr;
      got.forEach((b, i) => {
        assert.equal(b.vaddr, base + 64 * i, `block ${i} at offset ${64 * i}`);
        assert.equal(b.dma - got[0]!.dma, BigInt(64 * i), 'the same offset on the bus');
      });
      const next = alloc(pool);
      assert.equal(pool.nr_pages, 2, 'the 65th block takes a second page');
      assert.equal(pool.nr_blocks, 128);
      for (const b of [...got, next]) dma_pool_free(pool, b.vaddr, b.dma);
      dma_pool_destroy(pool);
    });

    it('blocks pack without a boundary; reuse is last in, first out; pools_show lists pools newest first', () => {
      const a = dma_pool_create('prp list page', dev, 4096, 4096, 0)!;
      const pool = dma_pool_create('prp list 256', dev, 100, 0, 0)!;
      const got = Array.from({ length: 40 }, () => alloc(pool));
      assert.equal(pool.nr_blocks, 40, 'floor(4096 / 100) blocks in a page');
      assert.equal(pool.nr_pages, 1);
      dma_pool_free(pool, got[3]!.vaddr, got[3]!.dma);
      dma_pool_free(pool, got[7]!.vaddr, got[7]!.dma);
      assert.equal(alloc(pool).vaddr, got[7]!.vaddr, 'the last freed comes back first');
      assert.equal(alloc(pool).vaddr, got[3]!.vaddr);
      assert.equal(
        pools_show(dev),
        'poolinfo - 0.1\n' +
          'prp list 256       40   40  100  1\n' +
          'prp list page       0    0 4096  0\n',
      );
      for (const b of got) dma_pool_free(pool, b.vaddr, b.dma);
      dma_pool_destroy(pool);
      dma_pool_destroy(a);
      assert.equal(pools_show(dev), 'poolinfo - 0.1\n');
    });

    for (const which of ['direct', 'IOMMU'] as const) {
      it(`the ${which} device reaches each block at its handle`, () => {
        const d = which === 'direct' ? dev : iommuDev;
        const pool = dma_pool_create('rx', d, 256, 64, 0)!;
        const blocks = Array.from({ length: 20 }, () => alloc(pool));
        const bus = busMaster(d);
        blocks.forEach((b, i) => assert.equal(bus.write32(b.dma + 4n, 0x1000 + i), MEMTX_OK));
        blocks.forEach((b, i) => assert.equal(m.view(b.vaddr + 4, 4).readUInt32LE(0), 0x1000 + i, `block ${i}`));
        for (const b of blocks) dma_pool_free(pool, b.vaddr, b.dma);
        dma_pool_destroy(pool);
      });
    }

    it('without debug: no poison, zalloc zeroes dirty blocks, a double free hands the block out twice (the kernel bug)', () => {
      const pool = dma_pool_create('z', dev, 64, 0, 0)!;
      const b = alloc(pool);
      m.view(b.vaddr, 64).fill(0x55);
      dma_pool_free(pool, b.vaddr, b.dma);
      const again = alloc(pool);
      assert.equal(again.vaddr, b.vaddr);
      assert.equal(m.view(again.vaddr, 64).every((x) => x === 0x55), true, 'the old bytes: no init on alloc without __GFP_ZERO');
      dma_pool_free(pool, again.vaddr, again.dma);
      const h = { value: 0n };
      const z = dma_pool_zalloc(pool, GFP_KERNEL, h)!;
      assert.equal(z, b.vaddr);
      assert.equal(m.view(z, 64).every((x) => x === 0), true, 'dma_pool_zalloc zeroes');
      dma_pool_free(pool, z, h.value);
      dma_pool_free(pool, z, h.value);
      assert.equal(alloc(pool).vaddr, alloc(pool).vaddr, 'the double-freed block is handed out twice');
      assert.equal(pool.nr_active, 1, 'three allocs, three frees (one twice), two allocs: the count is off by one, as in the kernel');
      dma_pool_destroy(pool);
      assert.match(m.warnings.at(-1)!.message, /nvme0: dma_pool_destroy z busy/);
    });

    it('a free of something that is not a block of the pool is refused with a WARN, never handed out', () => {
      const pool = dma_pool_create('f', dev, 64, 0, 0)!;
      const b = alloc(pool);
      dma_pool_free(pool, b.vaddr + 8, b.dma + 8n);
      assert.match(m.warnings.at(-1)!.message, /not a block of this pool/);
      dma_pool_free(pool, b.vaddr, b.dma + 64n);
      assert.match(m.warnings.at(-1)!.message, /not a block of this pool/, 'vaddr and dma of different blocks');
      assert.equal(pool.nr_active, 1);
      const other = alloc(pool);
      assert.notEqual(other.vaddr, b.vaddr + 8);
      for (const x of [b, other]) dma_pool_free(pool, x.vaddr, x.dma);
      dma_pool_destroy(pool);
    });

    it('dma_pool_destroy gives the coherent memory back; with blocks out it is "busy" and keeps it', () => {
      const free0 = m.stats().nodes[0]!.freePages + m.stats().cma[0]!.available;
      const pool = dma_pool_create('d', dev, 1024, 0, 0)!;
      const blocks = Array.from({ length: 9 }, () => alloc(pool));
      assert.equal(pool.nr_pages, 3);
      assert.ok(m.stats().nodes[0]!.freePages + m.stats().cma[0]!.available < free0);
      for (const b of blocks) dma_pool_free(pool, b.vaddr, b.dma);
      dma_pool_destroy(pool);
      assert.equal(m.stats().nodes[0]!.freePages + m.stats().cma[0]!.available, free0, 'all three pages back');
      const busy = dma_pool_create('busy', dev, 1024, 0, 0)!;
      alloc(busy);
      dma_pool_destroy(busy);
      assert.match(m.warnings.at(-1)!.message, /^nvme0: dma_pool_destroy busy busy$/);
      assert.ok(m.stats().nodes[0]!.freePages + m.stats().cma[0]!.available < free0, 'a busy pool leaves its page allocated');
    });

    it('dmam_pool_create pools are destroyed with the device; dmam_pool_destroy of another pool WARNs', () => {
      const free0 = m.stats().nodes[0]!.freePages + m.stats().cma[0]!.available;
      const d2 = m.createDevice({ name: 'e1000', dmaMask: 32, coherentDmaMask: 32 });
      const managed = dmam_pool_create('rx desc', d2, 16, 16, 0)!;
      const b = alloc(managed);
      dma_pool_free(managed, b.vaddr, b.dma);
      const plain = dma_pool_create('plain', d2, 16, 16, 0)!;
      dmam_pool_destroy(plain);
      assert.match(m.warnings.at(-1)!.message, /plain is not a managed pool/);
      assert.equal(plain.isDestroyed, false);
      dma_pool_destroy(plain);
      d2.destroy();
      assert.equal(managed.isDestroyed, true, 'released at driver unbind');
      assert.equal(m.stats().nodes[0]!.freePages + m.stats().cma[0]!.available, free0);
      const again = dmam_pool_create('again', dev, 16, 16, 0)!;
      dmam_pool_destroy(again);
      assert.equal(again.isDestroyed, true);
    });
  });

  describe('dmapool_debug (machine dmaDebug)', () => {
    beforeEach(() => boot(true));

    it('new blocks read POOL_POISON_ALLOCATED, freed ones POOL_POISON_FREED; a write after free is "corrupted"', () => {
      const pool = dma_pool_create('dbg', dev, 64, 0, 0)!;
      const b = alloc(pool);
      assert.ok(m.view(b.vaddr, 64).every((x) => x === POOL_POISON_ALLOCATED));
      dma_pool_free(pool, b.vaddr, b.dma);
      assert.ok(m.read(b.vaddr, 64).every((x) => x === POOL_POISON_FREED));
      const warned = m.warnings.length;
      const again = alloc(pool);
      assert.equal(m.warnings.length, warned, 'an untouched free block passes the check');
      dma_pool_free(pool, again.vaddr, again.dma);
      // A late write by the driver into the freed block (its memory is still the pool's page).
      m.view(b.vaddr, 64)[20] = 0x00;
      const z = alloc(pool, GFP_KERNEL);
      assert.equal(z.vaddr, b.vaddr);
      const msg = m.warnings.at(-1)!.message;
      assert.match(msg, new RegExp(`^nvme0: pool_check_block dbg, 0x${b.vaddr.toString(16)} \\(corrupted\\): byte 20 is 0x00`));
      assert.match(msg, /\n00000010: a7 a7 a7 a7 00 a7/, 'the hex dump shows the byte');
      dma_pool_free(pool, z.vaddr, z.dma);
      dma_pool_destroy(pool);
    });

    it('"already free" and "bad dma" are reported and change nothing', () => {
      const pool = dma_pool_create('dbg2', dev, 64, 0, 0)!;
      const a = alloc(pool);
      const b = alloc(pool);
      dma_pool_free(pool, a.vaddr, a.dma);
      dma_pool_free(pool, a.vaddr, a.dma);
      assert.equal(m.warnings.at(-1)!.message, `nvme0: dma_pool_free dbg2, dma 0x${a.dma.toString(16).padStart(16, '0')} already free`);
      dma_pool_free(pool, b.vaddr, b.dma + 0x100000n);
      assert.match(m.warnings.at(-1)!.message, /^nvme0: dma_pool_free dbg2, 0x[0-9a-f]+\/0x[0-9a-f]{16} \(bad dma\)$/);
      assert.equal(pool.nr_active, 1, 'only the one good free counted');
      const x = alloc(pool);
      const y = alloc(pool);
      assert.notEqual(x.vaddr, y.vaddr, 'the block was listed once');
      for (const c of [b, x, y]) dma_pool_free(pool, c.vaddr, c.dma);
      dma_pool_destroy(pool);
    });
  });

  // drivers/nvme/host/pci.c, nvme_pci_setup_prps: PRP1 is the first data page (with its offset),
  // PRP2 the second page or, for more, a PRP list from the 'prp list page' pool whose last entry
  // chains to the next list page. The device gathers the data by walking the PRPs on the bus.
  describe('a port of NVMe PRP setup on dma_pool', () => {
    beforeEach(() => boot(false));

    for (const which of ['direct', 'IOMMU'] as const) {
      it(`a ${which} device gathers a 600-page request through chained PRP lists`, () => {
        const d = which === 'direct' ? dev : iommuDev;
        const prpPool = dma_pool_create('prp list page', d, PAGE_SIZE, PAGE_SIZE, 0)!;
        const pages = Array.from({ length: 600 }, () => m.alloc_pages_node(NUMA_NO_NODE, GFP_KERNEL, 0)!);
        pages.forEach((p, i) => m.view(m.page_address(p), PAGE_SIZE).fill(i & 0xff));
        const sgt = new SgTable();
        assert.equal(sg_alloc_table_from_pages(sgt, pages, pages.length, 0, pages.length * PAGE_SIZE, GFP_KERNEL), 0);
        assert.ok(dma_map_sgtable(d, sgt, DMA_TO_DEVICE, 0) === 0);
        // The bus address of every controller page, from the mapped segments.
        const dmaPages: bigint[] = [];
        for_each_sgtable_dma_sg(sgt, (sg) => {
          for (let off = 0; off < sg_dma_len(sg); off += PAGE_SIZE) dmaPages.push(sg_dma_address(sg) + BigInt(off));
        });
        assert.equal(dmaPages.length, 600);
        // nvme_pci_setup_prps
        const perList = PAGE_SIZE / 8;
        const lists: { vaddr: number; dma: bigint }[] = [];
        const prp1 = dmaPages[0]!;
        const first = alloc(prpPool);
        lists.push(first);
        const prp2 = first.dma;
        let list = m.view(first.vaddr, PAGE_SIZE);
        let i = 0;
        for (const page of dmaPages.slice(1)) {
          if (i === perList) {
            const next = alloc(prpPool);
            lists.push(next);
            const old = list;
            list = m.view(next.vaddr, PAGE_SIZE);
            list.writeBigUInt64LE(old.readBigUInt64LE((i - 1) * 8), 0);
            old.writeBigUInt64LE(next.dma, (i - 1) * 8);
            i = 1;
          }
          list.writeBigUInt64LE(page, i * 8);
          i++;
        }
        assert.equal(lists.length, 2, '599 entries: one full list (511 + chain) and a second');
        // The device: PRP1, then PRP2 as a list, following the chain entry at the end of each list.
        const bus = busMaster(d);
        const data = new Uint8Array(600 * PAGE_SIZE);
        assert.equal(bus.read(prp1, data, 0, PAGE_SIZE), MEMTX_OK);
        let listAddr = prp2;
        let k = 1;
        while (k < 600) {
          for (let e = 0; e < perList && k < 600; e++) {
            const entry = bus.read64(listAddr + BigInt(e * 8));
            if (e === perList - 1 && k < 599) {
              listAddr = entry;
              break;
            }
            assert.equal(bus.read(entry, data, k * PAGE_SIZE, PAGE_SIZE), MEMTX_OK);
            k++;
          }
        }
        for (let p = 0; p < 600; p++) assert.equal(data[p * PAGE_SIZE + 7], p & 0xff, `page ${p} gathered in order`);
        for (const l of lists) dma_pool_free(prpPool, l.vaddr, l.dma);
        dma_pool_destroy(prpPool);
        dma_unmap_sgtable(d, sgt, DMA_TO_DEVICE, 0);
        sg_free_table(sgt);
        for (const p of pages) m.__free_pages(p, 0);
      });
    }
  });
});
