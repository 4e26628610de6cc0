// DMA to a Region's memory (mm/gup.c): pin_user_pages_fast / get_user_pages over a Region give
// struct pages of this machine, sg_alloc_table_from_pages + dma_map_sgtable map them, a device's
// DMA (direct, IOMMU, worker) reaches the Region's bytes, and the Region is blocked while pinned.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { Machine } from '../lib/mm/machine';
import '../lib/dma/device';
import { GFP_KERNEL, PAGE_SIZE } from '../lib/mm/gfp';
import type { Page } from '../lib/mm/page';
import { Region } from '../lib/os/region';
import {
  FOLL_GET, FOLL_LONGTERM, FOLL_WRITE, FOLL_NOWAIT, GUP_PIN_COUNTING_BIAS, page_maybe_dma_pinned,
  unpin_user_page, unpin_user_pages, unpin_user_pages_dirty_lock,
} from '../lib/mm/gup';
import { get_page, put_page } from '../lib/mm/page_ref';
import { DMA_BIDIRECTIONAL } from '../lib/dma/constants';
import { dma_map_sgtable, dma_unmap_sgtable } from '../lib/dma/mapping';
import { SgTable, for_each_sgtable_dma_sg, sg_dma_address, sg_dma_len, sg_free_table } from '../lib/dma/scatterlist';
import { sg_alloc_table_from_pages } from '../lib/dma/sg_pages';
import { MEMTX_OK } from '../lib/devices/bus_engine';
import { busDescription, busMaster } from '../lib/devices/bus_master';
import { BusEngine, MEMTX_ACCESS_ERROR, MEMTX_DECODE_ERROR } from '../lib/devices/bus_engine';
import type { Segment } from '../lib/mm/segment';
import { MM_COUNT, MM_GEN, MM_SLOTS, MS_FD, MS_PAGES, MS_STATE, MS_USERS, SLOT_PRESENT, slotBase } from '../lib/mm/memory_map_layout';
import * as fs from 'node:fs';
import { mapPrivate } from '../lib/os/private-map';
import { createPciDevice, type PciDev } from '../lib/devices/pci_dev';
import { pci_get_drvdata, pci_register_driver, pci_unregister_driver } from '../lib/drivers/pci';
import { edu_dma, edu_driver, type EduDev } from '../examples/edu/edu_driver';
import { expectNoLeaks } from './helpers/leaks';

const MiB = 1024 * 1024;
const EFAULT = 14;
const EINVAL = 22;
const ENOMEM = 12;

function busy(fn: () => void): void {
  assert.throws(fn, (e: NodeJS.ErrnoException) => e.code === 'ERR_DMAMEM_BUSY');
}

describe('39 user pages: PCI device models made before the pin', () => {
  expectNoLeaks();
  let m: Machine;
  let pdev: PciDev | null = null;
  afterEach(async () => {
    pci_unregister_driver(edu_driver);
    await pdev?.destroy();
    pdev = null;
    m.destroy();
  });

  for (const iommu of [false, true]) {
    for (const worker of [false, true]) {
      it(`edu, ${iommu ? 'IOMMU' : 'direct'}, ${worker ? 'in a worker' : 'inline'}: DMA to a Region mapped at a file offset and pinned after probe; after the unpin the old addresses are no memory`, async () => {
        m = new Machine({ name: 'gup39e', ramPerNode: 8 * MiB, physBase: 64 * MiB, cmaSize: 0, hugepages: 'off', emitWarnings: false });
        pdev = createPciDevice(m, { worker, device: { iommu: iommu ? { strict: true } : false } });
        assert.equal(pci_register_driver(edu_driver), 0);
        const edu = pci_get_drvdata<EduDev>(pdev)!;
        const owner = Region.allocate(16 * PAGE_SIZE, { hugepages: 'off' });
        const r = Region.fromFd(owner.fd, 8 * PAGE_SIZE, { offset: 8 * PAGE_SIZE }); // the owner's pages 8..15
        const pages: Page[] = [];
        try {
          const pattern = Uint8Array.from({ length: PAGE_SIZE }, (_, i) => (i * 7 + 3) & 0xff);
          r.view().set(pattern, 2 * PAGE_SIZE);
          assert.equal(m.pin_user_pages_fast(r, r.address + 2 * PAGE_SIZE, 2, FOLL_WRITE, pages), 2);
          const sgt = new SgTable();
          assert.equal(sg_alloc_table_from_pages(sgt, pages, 2, 0, 2 * PAGE_SIZE, GFP_KERNEL), 0);
          assert.equal(dma_map_sgtable(pdev.dev, sgt, DMA_BIDIRECTIONAL, 0), 0);
          const dma = sg_dma_address(sgt.sgl!);
          assert.equal(sg_dma_len(sgt.sgl!), 2 * PAGE_SIZE);
          assert.equal(await edu_dma(edu, dma, 0, PAGE_SIZE, true), 0, 'the device read the first pinned page');
          assert.equal(await edu_dma(edu, dma + BigInt(PAGE_SIZE), 0, PAGE_SIZE, false), 0, 'and wrote it to the second');
          assert.deepEqual(owner.view().subarray(11 * PAGE_SIZE, 12 * PAGE_SIZE), Buffer.from(pattern), "the bytes are the owner's pages 10 and 11");
          dma_unmap_sgtable(pdev.dev, sgt, DMA_BIDIRECTIONAL, 0);
          sg_free_table(sgt);
          unpin_user_pages(pages.splice(0), 2);
          if (!iommu) {
            owner.view().fill(0, 11 * PAGE_SIZE, 12 * PAGE_SIZE);
            const before = m.warnings.length;
            assert.equal(await edu_dma(edu, dma + BigInt(PAGE_SIZE), 0, PAGE_SIZE, false), 0);
            const t0 = Date.now();
            while (!m.warnings.slice(before).some((w) => /DMA write to .* failed \(MemTxResult 2\)/.test(w.message))) {
              if (Date.now() - t0 > 20000) assert.fail(`no failed-DMA log: ${JSON.stringify(m.warnings.slice(before))}`);
              await new Promise((res) => setTimeout(res, 1));
            }
            assert.ok(owner.view().subarray(11 * PAGE_SIZE, 12 * PAGE_SIZE).every((b) => b === 0), 'no byte reached the unpinned memory');
          }
        } finally {
          if (pages.length > 0) unpin_user_pages(pages, pages.length);
          r.close();
          owner.close();
        }
      });
    }
  }
});

describe('39 user pages (pin_user_pages, DMA to a Region)', () => {
  expectNoLeaks();
  let m: Machine;
  let r: Region;
  beforeEach(() => {
    m = new Machine({ name: 'gup39', ramPerNode: 8 * MiB, cmaSize: 0, hugepages: 'off', emitWarnings: false });
    r = Region.allocate(16 * PAGE_SIZE, { hugepages: 'off' });
  });
  afterEach(() => {
    m.destroy();
    r.close();
  });

  /** Maps pages[0..n) as one sg table for dev; returns the table (mapped) and its DMA entries. */
  function mapPages(dev: ReturnType<Machine['createDevice']>, pages: Page[], n: number): { sgt: SgTable; segs: { dma: bigint; len: number }[] } {
    const sgt = new SgTable();
    assert.equal(sg_alloc_table_from_pages(sgt, pages, n, 0, n * PAGE_SIZE, GFP_KERNEL), 0);
    assert.equal(dma_map_sgtable(dev, sgt, DMA_BIDIRECTIONAL, 0), 0);
    const segs: { dma: bigint; len: number }[] = [];
    for_each_sgtable_dma_sg(sgt, (sg) => { segs.push({ dma: sg_dma_address(sg), len: sg_dma_len(sg) }); });
    return { sgt, segs };
  }

  for (const iommu of [false, true]) {
    it(`a ${iommu ? 'IOMMU' : 'direct'} device's DMA through the mapped user pages reads and writes the Region's bytes`, () => {
      const dev = m.createDevice({ name: 'd', dmaMask: 64, iommu });
      const pages: Page[] = [];
      assert.equal(m.pin_user_pages_fast(r, r.address + 2 * PAGE_SIZE, 4, FOLL_WRITE | FOLL_LONGTERM, pages), 4);
      assert.equal(pages.length, 4);
      for (let i = 0; i < 4; i++) {
        const p = pages[i]!;
        assert.equal(p.machine, m);
        assert.equal(m.pfn_to_page(p.pfn), p);
        assert.equal(p.pfn, pages[0]!.pfn + i);
        assert.ok(page_maybe_dma_pinned(p));
        assert.equal(p.refcount, 1 + GUP_PIN_COUNTING_BIAS);
        assert.equal(m.virt_to_page(m.page_address(p)), p);
        // Above every other segment: never the buddy allocator's.
        for (const s of m.segments) if (s.kind !== 'user') assert.ok(p.pfn >= s.startPfn + s.pages);
      }
      const { sgt, segs } = mapPages(dev, pages, 4);
      assert.equal(segs.length, 1); // contiguous PFNs: one entry, one DMA segment
      const bus = busMaster(dev);
      const { dma } = segs[0]!;
      // Device writes land in the Region.
      assert.equal(bus.write(dma + 10n, Uint8Array.from([1, 2, 3])), MEMTX_OK);
      assert.equal(bus.write32(dma + BigInt(3 * PAGE_SIZE) + 8n, 0xdeadbeef), MEMTX_OK);
      const v = r.view();
      assert.deepEqual([...v.subarray(2 * PAGE_SIZE + 10, 2 * PAGE_SIZE + 13)], [1, 2, 3]);
      assert.equal(v.readUInt32LE(5 * PAGE_SIZE + 8), 0xdeadbeef);
      // CPU writes through the Region are what the device reads, and the kernel's linear map sees them.
      v.fill(0x5a, 3 * PAGE_SIZE, 3 * PAGE_SIZE + 64);
      const back = new Uint8Array(64);
      assert.equal(bus.read(dma + BigInt(PAGE_SIZE), back), MEMTX_OK);
      assert.ok(back.every((b) => b === 0x5a));
      assert.equal(m.view(m.page_address(pages[1]!), 64)[0], 0x5a);
      dma_unmap_sgtable(dev, sgt, DMA_BIDIRECTIONAL, 0);
      sg_free_table(sgt);
      unpin_user_pages(pages, 4);
      dev.destroy();
    });
  }

  it('a device given only the machine memfds (as a worker is) reaches the pinned Region', () => {
    const dev = m.createDevice({ name: 'w', dmaMask: 64, iommu: true });
    const pages: Page[] = [];
    assert.equal(m.pin_user_pages_fast(r, r.address, 16, FOLL_WRITE, pages), 16);
    const { sgt, segs } = mapPages(dev, pages, 16);
    const desc = structuredClone(busDescription(dev, { fdOnly: true }));
    const engine = new BusEngine(desc);
    try {
      assert.equal(engine.write(segs[0]!.dma + BigInt(15 * PAGE_SIZE), Uint8Array.from([7, 8, 9])), MEMTX_OK);
      assert.deepEqual([...r.view().subarray(15 * PAGE_SIZE, 15 * PAGE_SIZE + 3)], [7, 8, 9]);
      r.view()[0] = 0x42;
      const b = new Uint8Array(1);
      assert.equal(engine.read(segs[0]!.dma, b), MEMTX_OK);
      assert.equal(b[0], 0x42);
    } finally {
      engine.close();
    }
    dma_unmap_sgtable(dev, sgt, DMA_BIDIRECTIONAL, 0);
    sg_free_table(sgt);
    unpin_user_pages(pages, 16);
    dev.destroy();
  });

  it('while pinned, close, shrinking resize and protect taking access away throw ERR_DMAMEM_BUSY and change nothing; the last unpin lifts it', () => {
    const pages: Page[] = [];
    assert.equal(m.pin_user_pages_fast(r, r.address + PAGE_SIZE, 1, FOLL_WRITE, pages), 1);
    const again: Page[] = [];
    assert.equal(m.pin_user_pages_fast(r, r.address + PAGE_SIZE, 1, 0, again), 1); // the same page twice
    assert.equal(again[0], pages[0]);
    const segments = m.segments.length;
    r.view()[0] = 1;
    busy(() => r.close());
    assert.throws(() => r.resize(8 * PAGE_SIZE), (e: NodeJS.ErrnoException) => e.code === 'ERR_DMAMEM_BUSY' && /held on this region for DMA/.test(e.message));
    busy(() => r.protect('read'));
    busy(() => r.protect('none'));
    assert.equal(r.closed, false);
    assert.equal(r.length, 16 * PAGE_SIZE);
    assert.equal(r.view()[0], 1); // still mapped read-write
    r.protect('readwrite'); // adds nothing, takes nothing away: allowed
    r.resize(32 * PAGE_SIZE); // growing is allowed
    // The pages it grew by become a second user segment (the memfd from 16 pages on) at the next pin.
    const grown: Page[] = [];
    assert.equal(m.pin_user_pages_fast(r, r.address + 15 * PAGE_SIZE, 4, 0, grown), 4);
    assert.equal(m.segments.length, segments + 1);
    const second = grown[1]!.segment as Segment;
    assert.equal(second.fileOffset, 16 * PAGE_SIZE);
    r.view()[16 * PAGE_SIZE] = 0x77;
    assert.equal(m.view(m.page_address(grown[1]!), 1)[0], 0x77, "the second segment maps the memfd's later pages");
    unpin_user_pages(grown, 4);
    assert.equal(m.segments.length, segments + 1, "the Region's memory stays while any of its pages is referenced");
    assert.equal(pages[0]!.refcount, 1 + 2 * GUP_PIN_COUNTING_BIAS);
    unpin_user_page(pages[0]!);
    busy(() => r.close()); // one pin left
    assert.equal(m.segments.length, segments + 1);
    unpin_user_page(again[0]!);
    // The last reference hot-removes the user segments: their PFNs are no memory any more.
    assert.equal(m.segments.length, segments - 1);
    assert.equal(m.pfn_valid(pages[0]!.pfn), false);
    assert.throws(() => unpin_user_page(pages[0]!), /kernel BUG at mm\/gup.c/);
    r.protect('read');
    r.protect('readwrite');
    r.resize(4 * PAGE_SIZE);
    assert.equal(r.length, 4 * PAGE_SIZE);
  });

  it('returns -EFAULT outside the Region or where its protection refuses, a partial count at its end, -EINVAL for bad flags', () => {
    const pages: Page[] = [];
    assert.equal(m.pin_user_pages_fast(r, r.address - PAGE_SIZE, 1, 0, pages), -EFAULT);
    assert.equal(m.pin_user_pages_fast(r, r.address + 16 * PAGE_SIZE, 1, 0, pages), -EFAULT);
    assert.equal(pages.length, 0);
    assert.equal(m.segments.some((s) => s.kind === 'user'), false); // nothing attached on failure
    // Unaligned start: rounded down to its page, as the kernel masks it.
    assert.equal(m.pin_user_pages_fast(r, r.address + 14 * PAGE_SIZE + 100, 5, FOLL_WRITE, pages), 2);
    assert.equal(pages.length, 2);
    assert.equal(m.page_address(pages[0]!) - m.page_address(pages[1]!), -PAGE_SIZE);
    assert.equal(m.pin_user_pages_fast(r, r.address, 0, 0, []), 0);
    // Flags: internal ones, FOLL_GET on a pin, FOLL_LONGTERM without pinning, slow-path flags on the fast path.
    const warns = m.warnings.length;
    assert.equal(m.pin_user_pages_fast(r, r.address, 1, 1 << 19, []), -EINVAL);
    assert.equal(m.pin_user_pages_fast(r, r.address, 1, FOLL_GET, []), -EINVAL);
    assert.equal(m.get_user_pages_fast(r, r.address, 1, FOLL_LONGTERM, []), -EINVAL);
    assert.equal(m.pin_user_pages_fast(r, r.address, 1, FOLL_NOWAIT, []), -EINVAL);
    assert.equal(m.warnings.length, warns + 4);
    const slow: Page[] = [];
    assert.equal(m.pin_user_pages(r, r.address, 1, FOLL_NOWAIT, slow), 1);
    // Protection: FOLL_WRITE needs a writable mapping; a read pin of a read-only one is fine.
    unpin_user_pages(pages, 2);
    unpin_user_pages(slow, 1);
    r.protect('read');
    assert.equal(m.pin_user_pages_fast(r, r.address, 1, FOLL_WRITE, pages), -EFAULT);
    assert.equal(m.pin_user_pages_fast(r, r.address, 1, 0, pages), 1);
    busy(() => r.protect('none'));
    unpin_user_pages(pages, 1);
    r.protect('none');
    assert.equal(m.pin_user_pages_fast(r, r.address, 1, 0, pages), -EFAULT);
    r.protect('readwrite');
    // Misuse is a TypeError/RangeError before anything happens.
    assert.throws(() => m.pin_user_pages_fast({} as Region, 0, 1, 0, []), TypeError);
    assert.throws(() => m.pin_user_pages_fast(r, r.address, -1, 0, []), RangeError);
    assert.throws(() => m.pin_user_pages_fast(r, r.address, 1, 0, null as unknown as Page[]), TypeError);
    assert.equal(m.segments.some((s) => s.kind === 'user'), false);
    // A closed Region has nothing mapped.
    const c = Region.allocate(PAGE_SIZE);
    c.close();
    assert.equal(m.pin_user_pages_fast(c, 0, 1, 0, []), -EFAULT);
  });

  it('a read-only Region pins without FOLL_WRITE: devices read it, a device write is refused (MEMTX_ACCESS_ERROR), and the kernel side never writes the file', () => {
    const src = Region.allocate(4 * PAGE_SIZE, { hugepages: 'off' });
    const ro = Region.fromFd(src.fd, 2 * PAGE_SIZE, { writable: false, offset: 2 * PAGE_SIZE });
    const dev = m.createDevice({ name: 'ro', dmaMask: 64 });
    const early = new BusEngine(structuredClone(busDescription(dev, { fdOnly: true })));
    const pages: Page[] = [];
    try {
      src.view().fill(0x3c, 2 * PAGE_SIZE, 4 * PAGE_SIZE);
      assert.equal(m.pin_user_pages_fast(ro, ro.address, 2, FOLL_WRITE, pages), -EFAULT, 'no write access');
      assert.equal(m.segments.some((x) => x.kind === 'user'), false, 'nothing attached');
      assert.equal(m.pin_user_pages_fast(ro, ro.address, 2, FOLL_LONGTERM, pages), 2);
      const seg = pages[0]!.segment as Segment;
      assert.equal(seg.writable, false);
      assert.equal(seg.fileOffset, 2 * PAGE_SIZE);
      const bus = BigInt(pages[1]!.pfn * PAGE_SIZE) + dev.busOffset;
      for (const engine of [busMaster(dev), early]) {
        assert.equal(engine.read32(bus + 8n), 0x3c3c3c3c, 'the device reads the Region');
        assert.equal(engine.write32(bus + 8n, 0x01020304), MEMTX_ACCESS_ERROR);
        assert.equal(engine.status, MEMTX_ACCESS_ERROR);
        assert.equal(engine.fill(bus, 0, 64), MEMTX_ACCESS_ERROR);
        assert.equal(engine.write(bus - BigInt(PAGE_SIZE), new Uint8Array(PAGE_SIZE + 4)), MEMTX_ACCESS_ERROR, 'a transfer that touches it changes nothing');
      }
      assert.ok(src.view().subarray(2 * PAGE_SIZE).every((b) => b === 0x3c), 'no byte of the file changed');
      // The kernel side's own writes (through the linear map) stay in its copy.
      m.view(m.page_address(pages[0]!), 4).fill(0x99);
      assert.equal(src.view()[2 * PAGE_SIZE], 0x3c);
      // Later writes by the owner are what the device reads (pages the kernel side did not write).
      src.view()[3 * PAGE_SIZE + 8] = 0x5a;
      assert.equal(early.read8(bus + 8n), 0x5a);
    } finally {
      if (pages.length > 0) unpin_user_pages(pages, pages.length);
      early.close();
      dev.destroy();
      ro.close();
      src.close();
    }
  });

  it('get_user_pages references are dropped with put_page (get_page adds one), never to the page allocator', () => {
    const pages: Page[] = [];
    const free = m.buddy.freePages(0);
    assert.equal(m.get_user_pages_fast(r, r.address, 3, FOLL_WRITE, pages), 3);
    assert.equal(m.buddy.freePages(0), free);
    assert.equal(pages[0]!.refcount, 2);
    assert.equal(page_maybe_dma_pinned(pages[0]!), false);
    assert.throws(() => unpin_user_page(pages[0]!), /kernel BUG/); // a get is no pin
    get_page(pages[0]!);
    put_page(pages[0]!);
    put_page(pages[0]!);
    busy(() => r.close());
    assert.throws(() => put_page(pages[0]!), /kernel BUG|no reference/);
    put_page(pages[1]!);
    put_page(pages[2]!);
    assert.equal(m.buddy.freePages(0), free);
    assert.equal(m.segments.some((s) => s.kind === 'user'), false);
    r.resize(PAGE_SIZE);
  });

  it('unpin_user_pages checks every page before dropping any', () => {
    const pages: Page[] = [];
    assert.equal(m.pin_user_pages_fast(r, r.address, 2, FOLL_WRITE, pages), 2);
    const other = m.alloc_pages(GFP_KERNEL, 0)!;
    assert.throws(() => unpin_user_pages([pages[0]!, other], 2), /kernel BUG/);
    assert.throws(() => unpin_user_pages([pages[0]!, pages[0]!], 2), /kernel BUG/); // pinned once only
    assert.equal(pages[0]!.refcount, 1 + GUP_PIN_COUNTING_BIAS);
    m.__free_pages(other, 0);
    unpin_user_pages_dirty_lock(pages, 2, true);
    r.close();
  });

  it('machine.destroy() with pins outstanding reports them and lifts the Region\'s block', () => {
    const pages: Page[] = [];
    assert.equal(m.pin_user_pages_fast(r, r.address, 4, FOLL_WRITE, pages), 4);
    busy(() => r.close());
    m.destroy();
    assert.ok(m.warnings.some((w) => /mm\/gup.c: .*destroyed with user page references still held.*4 on/.test(w.message)), m.warnings.map((w) => w.message).join('\n'));
    assert.throws(() => unpin_user_pages(pages, 4), (e: NodeJS.ErrnoException) => e.code === 'ERR_DMAMEM_DESTROYED');
    r.view()[0] = 3; // the Region's own mapping is intact
    r.close();
  });

  it('with dmaDebug the held references are in the leak report (strict throws ERR_DMAMEM_LEAK)', () => {
    const d = new Machine({ name: 'gup39s', ramPerNode: 8 * MiB, cmaSize: 0, hugepages: 'off', emitWarnings: false, dmaDebug: 'strict' });
    const pages: Page[] = [];
    assert.equal(d.pin_user_pages_fast(r, r.address, 2, FOLL_WRITE, pages), 2);
    assert.throws(() => d.destroy(), (e: NodeJS.ErrnoException) => e.code === 'ERR_DMAMEM_LEAK' && /2 user pages still referenced/.test(e.message));
    r.close();
  });

  it('a user VMA\'s vm_ops.close runs once at unmap (and at machine teardown), with vm_private_data as the driver left it', () => {
    const seen: unknown[] = [];
    const vma = m.createVma(2 * PAGE_SIZE);
    vma.vm_private_data = { ring: 3 };
    vma.vm_ops = { close: (v) => { seen.push(v.vm_private_data); } };
    assert.equal(seen.length, 0);
    vma.unmap();
    vma.unmap();
    assert.equal(seen.length, 1);
    assert.deepEqual(seen[0], { ring: 3 });
    assert.throws(() => { vma.vm_ops = { close: 5 } as unknown as { close: () => void }; }, TypeError);
    const a = m.createVma(PAGE_SIZE);
    a.vm_ops = { open: () => { seen.push('open'); }, close: () => { seen.push('a'); } };
    const b = m.createVma(PAGE_SIZE);
    b.vm_ops = { close: () => { throw new Error('driver bug'); } };
    m.destroy();
    assert.deepEqual(seen, [{ ring: 3 }, 'a']);
    assert.ok(m.warnings.some((w) => /vm_ops->close threw: driver bug/.test(w.message)));
  });

  it('an engine made before the pin (from memfds, as a worker gets them) follows the memory map: pinned memory, a grown part at its file offset, and the unpin', () => {
    const dev = m.createDevice({ name: 'early', dmaMask: 64 });
    const engine = new BusEngine(structuredClone(busDescription(dev, { fdOnly: true })));
    try {
      const first: Page[] = [];
      const later: Page[] = [];
      assert.equal(m.pin_user_pages_fast(r, r.address + 15 * PAGE_SIZE, 1, FOLL_WRITE, first), 1);
      r.resize(24 * PAGE_SIZE);
      assert.equal(m.pin_user_pages_fast(r, r.address + 16 * PAGE_SIZE, 8, FOLL_WRITE, later), 8);
      const pages = [...first, ...later];
      const busOf = (p: Page): bigint => BigInt(p.pfn * PAGE_SIZE) + dev.busOffset;
      assert.equal(engine.write32(busOf(pages[0]!) + 4n, 0x11223344), MEMTX_OK);
      assert.equal(engine.write32(busOf(pages[8]!) + 8n, 0x55667788), MEMTX_OK);
      const v = r.view();
      assert.equal(v.readUInt32LE(15 * PAGE_SIZE + 4), 0x11223344);
      assert.equal(v.readUInt32LE(23 * PAGE_SIZE + 8), 0x55667788, 'the second segment is the memfd from 16 pages on');
      // RAM stays reachable through every hot-add and removal (only removed slots are reaped).
      const ram = m.alloc_pages(GFP_KERNEL, 0)!;
      assert.equal(engine.write32(busOf(ram) + 16n, 0xfeedf00d), MEMTX_OK);
      unpin_user_pages(pages, 9);
      assert.equal(engine.read32(busOf(ram) + 16n), 0xfeedf00d, 'RAM after the unpin');
      assert.equal(m.view(m.page_address(ram), 32).readUInt32LE(16), 0xfeedf00d);
      m.__free_pages(ram, 0);
      v.writeUInt32LE(0, 15 * PAGE_SIZE + 4);
      assert.equal(engine.write32(busOf(pages[0]!) + 4n, 0xdead), MEMTX_DECODE_ERROR, 'unpinned: the PFNs are no memory');
      assert.equal(engine.read32(busOf(pages[8]!)), 0xffffffff);
      assert.equal(engine.status, MEMTX_DECODE_ERROR);
      assert.equal(v.readUInt32LE(15 * PAGE_SIZE + 4), 0, 'no byte changed');
    } finally {
      engine.close();
    }
    dev.destroy();
  });

  it("junk written into the published memory map (anyone with a bus description can) never makes the machine close someone else's fd", () => {
    const dev = m.createDevice({ name: 'hostile', dmaMask: 64 });
    const table = new Int32Array(busDescription(dev).memoryMap!);
    const mine = fs.openSync('/dev/null', 'r');
    try {
      const pages: Page[] = [];
      assert.equal(m.pin_user_pages_fast(r, r.address, 1, FOLL_WRITE, pages), 1);
      const scribble = (): void => {
        for (let i = 0; i < 16; i++) {
          const b = slotBase(i);
          table[b + MS_FD] = mine;
          table[b + MS_STATE] = SLOT_PRESENT;
          table[b + MS_USERS] = 0;
          table[b + MS_PAGES] = 1;
        }
        table[MM_COUNT] = 1 << 30;
        Atomics.add(table, MM_GEN, 1);
      };
      scribble();
      const engine = busMaster(dev);
      engine.read32(0); // the engine follows the junk: no signal, no throw (it maps what it can or skips)
      unpin_user_pages(pages, 1); // a removal and a reap
      scribble();
      m.destroy(); // closes the table's own fds
      assert.ok(fs.fstatSync(mine).isCharacterDevice(), 'my fd is still open');
    } finally {
      fs.closeSync(mine);
    }
  });

  it("a worker's private mapping of read-only memory checks the file holds the whole range first", () => {
    const src = Region.allocate(2 * PAGE_SIZE, { hugepages: 'off' });
    try {
      assert.throws(() => mapPrivate(src.fd, 2 * PAGE_SIZE, PAGE_SIZE), /leave the 8192-byte file/);
      assert.throws(() => mapPrivate(src.fd, 3 * PAGE_SIZE, 0), RangeError);
      src.view()[PAGE_SIZE] = 0x61;
      const p = mapPrivate(src.fd, PAGE_SIZE, PAGE_SIZE); // exactly to the end
      assert.equal(p.bytes[0], 0x61);
      p.close();
      assert.equal(p.bytes.length, 0, 'detached at close');
    } finally {
      src.close();
    }
  });

  it(`a full memory map (${MM_SLOTS} segments) makes a pin return -ENOMEM and change nothing`, function () {
    this.timeout(120000);
    const regions: Region[] = [];
    const pinned: Page[] = [];
    try {
      let rc = 1;
      while (rc === 1) {
        const x = Region.allocate(PAGE_SIZE, { hugepages: 'off' });
        regions.push(x);
        const got: Page[] = [];
        rc = m.pin_user_pages_fast(x, x.address, 1, FOLL_WRITE, got);
        pinned.push(...got);
      }
      assert.equal(rc, -ENOMEM);
      assert.equal(m.segments.length, MM_SLOTS, 'every slot is a segment');
      assert.equal(pinned.length, MM_SLOTS - m.segments.filter((s) => s.kind !== 'user').length);
      regions.pop()!.close(); // not busy: nothing was held on it
      unpin_user_page(pinned.pop()!);
      const y = Region.allocate(PAGE_SIZE, { hugepages: 'off' });
      regions.push(y);
      const got: Page[] = [];
      assert.equal(m.pin_user_pages_fast(y, y.address, 1, FOLL_WRITE, got), 1, 'a freed slot is used again');
      pinned.push(...got);
    } finally {
      unpin_user_pages(pinned, pinned.length);
      for (const x of regions) x.close();
    }
  });

  it('no signal: pinning, DMA and every release path in any order (child process)', () => {
    const code = `
      const { Machine } = require('./dist/lib/mm/machine'); require('./dist/lib/dma/device');
      const { Region } = require('./dist/lib/os/region');
      const { unpin_user_pages, FOLL_WRITE } = require('./dist/lib/mm/gup');
      const { busMaster } = require('./dist/lib/devices/bus_master');
      const m = new Machine({ ramPerNode: 8 << 20, cmaSize: 0, emitWarnings: false });
      const r = Region.allocate(8 * 4096, { hugepages: 'off' });
      const dev = m.createDevice({ dmaMask: 64 });
      const pages = [];
      m.pin_user_pages_fast(r, r.address, 8, FOLL_WRITE, pages);
      const bus = busMaster(dev);
      const at = pages[0].phys;
      bus.write(at, new Uint8Array(8 * 4096).fill(1));
      try { r.close(); } catch {}
      try { r.resize(4096); } catch {}
      unpin_user_pages(pages, 8);
      // The segment is gone: a stale bus address is a bus error, not a fault.
      const s = busMaster(dev).write(at, new Uint8Array(16));
      r.resize(4096);
      m.pin_user_pages_fast(r, r.address, 1, FOLL_WRITE, pages);
      m.destroy();
      r.close();
      console.log('ok', s);
    `;
    const res = spawnSync(process.execPath, ['-e', code], { cwd: `${__dirname}/../..`, encoding: 'utf8', timeout: 60000 });
    assert.equal(res.signal, null, res.stderr);
    assert.equal(res.status, 0, res.stderr);
    assert.match(res.stdout, /^ok [1-9]/);
  });
});
