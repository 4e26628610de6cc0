// The simulated CPU cache (lib/dma/cache.ts) against a reference model written out plainly here:
// random CPU writes, device writes (through a non-coherent bus engine), cleans, invalidates,
// releases and owner counts over more pages than the cache holds, so that slots are reused, the
// hash collides and deletes, and pages are evicted. After every step the CPU's bytes, what the
// device reads, the counters and the shared table must be what the model says. Then the edges the
// mutation run found unchecked: owner counts, the violation ring, the table's guards.

import assert from 'node:assert/strict';
import { Machine } from '../lib/mm/machine';
import '../lib/dma/device';
import { GFP_KERNEL, PAGE_SIZE } from '../lib/mm/gfp';
import type { Page } from '../lib/mm/page';
import { DMA_BIDIRECTIONAL, DMA_TO_DEVICE } from '../lib/dma/constants';
import { dma_map_sg, dma_map_single, dma_unmap_sg, dma_unmap_single } from '../lib/dma/mapping';
import { Scatterlist, sg_init_table, sg_set_page } from '../lib/dma/scatterlist';
import { dma_sync_sg_for_cpu, dma_sync_sg_for_device, dma_sync_single_for_cpu, dma_sync_single_for_device } from '../lib/dma/sync';
import { DmaCache, busCacheDescription, cpuBytes, dma_cache, dma_cache_stats } from '../lib/dma/cache';
import {
  CM_COUNT, CM_HASH_SIZE, CM_SEQ, CM_SLOTS, CM_VIO_HEAD, CM_VIO_SLOTS, OWNERSHIP_OFF, OWNERSHIP_REPORT, OWNERSHIP_STRICT, cacheHash, cacheInsert,
  cacheLayout, cacheLayoutOf, cacheLookup, cacheRebuild, cacheRemove,
} from '../lib/dma/cache_layout';
import { CHECK_DEVICE_TOUCHED_CPU_OWNED, dma_owner_report_device_accesses, ownershipSpareBytes } from '../lib/dma/ownership';
import { BusEngine, MEMTX_ACCESS_ERROR, MEMTX_OK } from '../lib/devices/bus_engine';
import { busDescription, busMaster } from '../lib/devices/bus_master';
import { expectNoLeaks } from './helpers/leaks';

const MiB = 1024 * 1024;
const LINE = 64;
const LINES = PAGE_SIZE / LINE;

/** A small deterministic PRNG (mulberry32), so that a failure replays. */
function rng(seed: number): (n: number) => number {
  let a = seed >>> 0;
  return (n) => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) / 4294967296 * n) | 0;
  };
}

/** The reference: per held page its RAM and snapshot, FIFO order, owner counts; counters. */
class Model {
  held = new Map<number, { ram: Uint8Array; snap: Uint8Array; owners: Uint8Array }>();
  order: number[] = [];
  writtenBack = 0;
  refilled = 0;
  discarded = 0;
  evicted = 0;
  /** The model's own copy of the CPU's bytes of each page (the real ones are compared with it). */
  readonly cpuBytes = new Map<number, Uint8Array>();
  constructor(readonly slots: number) {}

  cpu(pfn: number): Uint8Array {
    return this.cpuBytes.get(pfn)!;
  }

  #dirty(pfn: number, line: number): boolean {
    const h = this.held.get(pfn)!;
    const c = this.cpu(pfn);
    for (let i = line * LINE; i < (line + 1) * LINE; i++) if (c[i] !== h.snap[i]) return true;
    return false;
  }

  hold(pfn: number): boolean {
    if (this.held.has(pfn)) return true;
    if (this.held.size === this.slots) {
      const victim = this.order.find((p) => this.held.get(p)!.owners.every((o) => o === 0));
      if (victim === undefined) return false;
      this.drop(victim);
      this.evicted++;
    }
    const c = this.cpu(pfn);
    this.held.set(pfn, { ram: new Uint8Array(c), snap: new Uint8Array(c), owners: new Uint8Array(LINES) });
    this.order.push(pfn);
    return true;
  }

  drop(pfn: number): void {
    const h = this.held.get(pfn);
    if (h === undefined) return;
    const c = this.cpu(pfn);
    for (let line = 0; line < LINES; line++) {
      if (!this.#dirty(pfn, line)) c.set(h.ram.subarray(line * LINE, (line + 1) * LINE), line * LINE);
    }
    this.held.delete(pfn);
    this.order.splice(this.order.indexOf(pfn), 1);
  }

  clean(pfn: number, first: number, end: number): void {
    if (!this.hold(pfn)) return;
    const h = this.held.get(pfn)!;
    const c = this.cpu(pfn);
    for (let line = first; line < end; line++) {
      if (!this.#dirty(pfn, line)) continue;
      h.ram.set(c.subarray(line * LINE, (line + 1) * LINE), line * LINE);
      h.snap.set(c.subarray(line * LINE, (line + 1) * LINE), line * LINE);
      this.writtenBack++;
    }
  }

  /** Invalidate of [off, off + len) in one page (partial end lines cleaned first). */
  invalidate(pfn: number, off: number, len: number): void {
    const end = off + len;
    if (off % LINE !== 0) this.clean(pfn, Math.floor(off / LINE), Math.floor(off / LINE) + 1);
    if (end % LINE !== 0) this.clean(pfn, Math.floor((end - 1) / LINE), Math.floor((end - 1) / LINE) + 1);
    if (!this.hold(pfn)) return;
    const h = this.held.get(pfn)!;
    const c = this.cpu(pfn);
    const first = Math.floor(off / LINE);
    const stop = Math.ceil(end / LINE);
    for (let line = first; line < stop; line++) if (this.#dirty(pfn, line)) this.discarded++;
    c.set(h.ram.subarray(first * LINE, stop * LINE), first * LINE);
    h.snap.set(h.ram.subarray(first * LINE, stop * LINE), first * LINE);
    this.refilled += stop - first;
  }

  own(pfn: number, first: number, end: number, delta: 1 | -1): void {
    if (delta > 0 ? !this.hold(pfn) : !this.held.has(pfn)) return;
    const o = this.held.get(pfn)!.owners;
    for (let line = first; line < end; line++) o[line] = Math.min(255, Math.max(0, o[line]! + delta));
  }
}

describe('77 the cache model against a reference', () => {
  expectNoLeaks();
  let m: Machine;
  let pages: Page[] = [];
  beforeEach(() => {
    m = new Machine({ name: 'cm77', ramPerNode: 8 * MiB, cmaSize: 0, hugepages: 'off', emitWarnings: false });
    pages = Array.from({ length: 7 }, () => m.alloc_pages(GFP_KERNEL, 0)!);
  });
  afterEach(() => {
    if (!m.isDestroyed) for (const p of pages) m.__free_pages(p, 0);
    m.destroy();
  });
  const cpuOf = (pfn: number): Uint8Array => m.view(m.page_address(m.pfn_to_page(pfn)), PAGE_SIZE);

  for (const seed of [1, 2, 3, 4]) {
    it(`seed ${seed}: 1500 random steps over 7 pages through a 3-page cache agree with the model, step by step`, () => {
      const cache = new DmaCache(m, 3);
      const dev = m.createDevice({ name: 'nc', dmaMask: 64, coherent: false, debug: false });
      const desc = busDescription(dev);
      const bus = new BusEngine({ ...desc, cache: { table: cache.table, ownership: OWNERSHIP_OFF, requester: 1 } });
      const strict = new BusEngine({ ...desc, cache: { table: cache.table, ownership: OWNERSHIP_STRICT, requester: 2 } });
      const model = new Model(3);
      const r = rng(seed);
      const t = new Int32Array(cache.table);
      const layout = cacheLayout(3);
      try {
        for (const p of pages) {
          cpuOf(p.pfn).fill(p.pfn & 0xff);
          model.cpuBytes.set(p.pfn, new Uint8Array(cpuOf(p.pfn)));
        }
        const seen = new Uint8Array(PAGE_SIZE);
        for (let step = 0; step < 1500; step++) {
          const p = pages[r(pages.length)]!;
          const phys = p.pfn * PAGE_SIZE;
          const off = r(PAGE_SIZE);
          const len = 1 + r(Math.min(PAGE_SIZE - off, 300));
          const first = Math.floor(off / LINE);
          const end = Math.ceil((off + len) / LINE);
          const byte = 1 + r(255);
          const seqBefore = Atomics.load(t, CM_SEQ);
          const heldBefore = [...model.held.keys()].sort().join();
          const what = ['cpu write', 'cpu write', 'device write', 'clean', 'invalidate', 'release', 'own', 'disown'][r(8)]!;
          switch (what) {
            case 'cpu write': cpuOf(p.pfn).fill(byte, off, off + len); model.cpu(p.pfn).fill(byte, off, off + len); break;
            case 'device write': {
              assert.equal(bus.write(phys + off, new Uint8Array(len).fill(byte)), MEMTX_OK);
              const h = model.held.get(p.pfn);
              (h !== undefined ? h.ram : model.cpu(p.pfn)).fill(byte, off, off + len);
              break;
            }
            case 'clean': model.clean(p.pfn, first, end); cache.clean(phys + off, len); break;
            case 'invalidate': model.invalidate(p.pfn, off, len); cache.invalidate(phys + off, len); break;
            case 'release': model.drop(p.pfn); cache.release(phys + off, len); break;
            case 'own': model.own(p.pfn, first, end, 1); cache.own(phys + off, len, 1); break;
            case 'disown': model.own(p.pfn, first, end, -1); cache.own(phys + off, len, -1); break;
          }
          const at = `seed ${seed} step ${step} (${what} pfn ${p.pfn} [${off}, +${len}))`;
          // The CPU's bytes of every page, what the device reads of every page, which pages are held.
          for (const q of pages) {
            assert.ok(Buffer.compare(cpuOf(q.pfn), model.cpu(q.pfn)) === 0, `${at}: CPU bytes of pfn ${q.pfn}`);
            assert.equal(bus.read(q.pfn * PAGE_SIZE, seen), MEMTX_OK);
            const h = model.held.get(q.pfn);
            const want = h !== undefined ? h.ram : model.cpu(q.pfn);
            if (Buffer.compare(seen, want) !== 0) {
              const i = seen.findIndex((b, k) => b !== want[k]);
              assert.fail(`${at}: device view of pfn ${q.pfn} (held ${h !== undefined}) differs at ${i}: ${seen[i]} vs ${want[i]}`);
            }
            assert.equal(cache.holds(q.pfn), h !== undefined, `${at}: holds(${q.pfn})`);
            assert.equal(cacheLookup(t, layout, q.pfn) >= 0, h !== undefined, `${at}: the shared hash finds pfn ${q.pfn}`);
          }
          // Owner counts, as a strict device sees them: lines of this page.
          const h = model.held.get(p.pfn);
          for (const line of [first, end - 1]) {
            const owned = h !== undefined && h.owners[line]! > 0;
            const st = strict.read(phys + line * LINE, new Uint8Array(1));
            assert.equal(st, h === undefined || owned ? MEMTX_OK : MEMTX_ACCESS_ERROR, `${at}: owner of line ${line}`);
          }
          const s = cache.stats();
          assert.deepEqual(s, { pages: model.held.size, writtenBack: model.writtenBack, refilled: model.refilled, discarded: model.discarded, evicted: model.evicted }, at);
          assert.equal(t[CM_COUNT], model.held.size, `${at}: CM_COUNT`);
          const seqAfter = Atomics.load(t, CM_SEQ);
          assert.equal(seqAfter & 1, 0, `${at}: the sequence is even between changes`);
          if ([...model.held.keys()].sort().join() !== heldBefore) assert.ok(seqAfter > seqBefore, `${at}: a change moved the sequence on`);
        }
        assert.ok(model.evicted > 0 && model.discarded > 0 && model.writtenBack > 0, `the run reached evictions, discards and write-backs: ${model.evicted} ${model.discarded} ${model.writtenBack}`);
      } finally {
        bus.close();
        strict.close();
      }
    });
  }
});

describe('77 the shared PFN hash', () => {
  it('random inserts and removes of colliding PFNs in an 8-cell hash: every key is found from its first probe, removed ones are not', () => {
    const l = cacheLayout(4);
    assert.equal(l.hashSize, 8);
    const t = new Int32Array(new SharedArrayBuffer(l.bytes));
    t[CM_SLOTS] = 4;
    t[CM_HASH_SIZE] = 8;
    const r = rng(77);
    const want = new Map<number, number>();
    let wrapped = 0;
    for (let step = 0; step < 20000; step++) {
      const pfn = r(24);
      if (want.has(pfn)) {
        assert.equal(cacheRemove(t, l, pfn), true);
        want.delete(pfn);
      } else if (want.size < 7) {
        const slot = r(4);
        assert.equal(cacheInsert(t, l, pfn, slot), true);
        want.set(pfn, slot);
      } else {
        assert.equal(cacheRemove(t, l, 1000 + pfn), false, 'a key that is not there');
      }
      for (let q = 0; q < 24; q++) assert.equal(cacheLookup(t, l, q), want.get(q) ?? -1, `step ${step}: pfn ${q}`);
      // Some key sits before its first probe: its run wrapped around the end of the table.
      for (let i = 0; i < 8; i++) if (t[l.keys + i] !== 0 && cacheHash(t[l.keys + i]! - 1, 8) > i) wrapped++;
    }
    assert.ok(wrapped > 0, 'runs wrapped around the end');
    const full = new Int32Array(new SharedArrayBuffer(l.bytes));
    for (let pfn = 0; pfn < 8; pfn++) assert.equal(cacheInsert(full, l, pfn, 0), true);
    assert.equal(cacheInsert(full, l, 99, 0), false, 'no free cell');
    assert.equal(cacheRemove(full, l, 99), false, 'not there, and every cell is taken: a bounded search');
    full.fill(0x7fff_0000, l.keys, l.keys + 8);
    cacheRebuild(full, l, new Map([[5, 3], [13, 1]]));
    assert.equal(cacheLookup(full, l, 5), 3);
    assert.equal(cacheLookup(full, l, 13), 1);
    assert.equal(cacheLookup(full, l, 6), -1);
    assert.equal(full.subarray(l.keys, l.keys + 16).filter((k) => k !== 0).length, 2 + 2, 'two keys and two values, the junk gone');
  });

  it('a slot value out of range (scribbled) reads as not held: a bus engine never indexes past the cache\'s RAM', () => {
    const l = cacheLayout(4);
    const t = new Int32Array(new SharedArrayBuffer(l.bytes));
    cacheInsert(t, l, 7, 4);
    assert.equal(cacheLookup(t, l, 7), -1);
    cacheRemove(t, l, 7);
    cacheInsert(t, l, 7, -5);
    assert.equal(cacheLookup(t, l, 7), -1);
    cacheRemove(t, l, 7);
    cacheInsert(t, l, 7, 3);
    assert.equal(cacheLookup(t, l, 7), 3);
  });

  it('cacheLayoutOf takes only a table whose size and hash size fit its slot count', () => {
    const mk = (bytes: number, slots: number, hash: number): Int32Array => {
      const t = new Int32Array(new SharedArrayBuffer(bytes));
      t[CM_SLOTS] = slots;
      t[CM_HASH_SIZE] = hash;
      return t;
    };
    const l = cacheLayout(4);
    assert.deepEqual(cacheLayoutOf(mk(l.bytes, 4, 8)), l);
    assert.equal(cacheLayoutOf(mk(l.bytes, 4, 16)), null, 'wrong hash size');
    assert.equal(cacheLayoutOf(mk(l.bytes + 4096, 4, 8)), null, 'wrong size');
    assert.equal(cacheLayoutOf(mk(l.bytes, 5, 16)), null, 'wrong slot count');
    const neg = cacheLayout(-1);
    assert.equal(cacheLayoutOf(mk(Math.max(neg.bytes, 4096), -1, neg.hashSize)), null, 'a negative slot count');
    const zero = cacheLayout(0);
    assert.equal(cacheLayoutOf(mk(zero.bytes, 0, zero.hashSize)), null, 'no slots');
    const one = cacheLayout(1);
    assert.deepEqual(cacheLayoutOf(mk(one.bytes, 1, one.hashSize)), one, 'one slot is a cache');
  });
});

describe('77 cache and ownership edges', () => {
  expectNoLeaks();
  let m: Machine;
  const held: Page[] = [];
  beforeEach(() => {
    m = new Machine({ name: 'ce77', ramPerNode: 8 * MiB, cmaSize: 0, hugepages: 'off', emitWarnings: false });
  });
  afterEach(() => {
    if (!m.isDestroyed) for (const p of held.splice(0)) m.__free_pages(p, 0);
    held.length = 0;
    m.destroy();
  });
  const page = (): Page => {
    const p = m.alloc_pages(GFP_KERNEL, 0)!;
    held.push(p);
    m.view(m.page_address(p), PAGE_SIZE).fill(0);
    return p;
  };
  const phys = (p: Page): number => p.pfn * PAGE_SIZE;

  it('eviction skips pages with lines a device owns, and a slot refilled after a release is not evicted for its old fill', () => {
    const c = new DmaCache(m, 2);
    const [a, b, x, d, e] = [page(), page(), page(), page(), page()];
    c.hold(phys(a), 1); // slot 0, serial 1
    c.own(phys(a), 64, 1); // a device owns a line of a
    c.hold(phys(b), 1);
    c.hold(phys(x), 1); // full: the oldest unowned (b) goes, not a
    assert.deepEqual([c.holds(a.pfn), c.holds(b.pfn), c.holds(x.pfn)], [true, false, true]);
    c.own(phys(a), 64, -1);
    c.release(phys(x), 1); // x's slot is free; its FIFO entry stays behind
    c.hold(phys(d), 1); // d takes x's slot with a new fill
    c.hold(phys(e), 1); // full: a (the oldest live fill) goes; d's slot is not taken for x's stale entry
    assert.deepEqual([c.holds(a.pfn), c.holds(d.pfn), c.holds(e.pfn)], [false, true, true]);
    assert.equal(c.stats().evicted, 2);
  });

  it('a cache whose every page has device-owned lines leaves a new page coherent, with a WARN', () => {
    const c = new DmaCache(m, 1);
    const [a, b] = [page(), page()];
    c.own(phys(a), 8, 1);
    c.clean(phys(b), 64);
    assert.equal(c.holds(b.pfn), false);
    assert.ok(m.warnings.some((w) => /non-coherent cache model is full \(1 pages with lines devices own\)/.test(w.message)));
  });

  it('owner counts stop at 0 and 255; a release when nothing is held holds nothing', () => {
    const c = new DmaCache(m, 2);
    const dev = m.createDevice({ name: 'o', dmaMask: 64, coherent: false, debug: false });
    const bus = new BusEngine({ ...busDescription(dev), cache: { table: c.table, ownership: OWNERSHIP_STRICT, requester: 1 } });
    try {
      const a = page();
      const one = new Uint8Array(1);
      c.own(phys(a), 1, -1);
      assert.equal(c.holds(a.pfn), false, 'disowning a page that is not held holds nothing');
      c.own(phys(a), 1, 1);
      c.own(phys(a), 1, -1);
      c.own(phys(a), 1, -1); // one too many: stays 0, not 255
      assert.equal(bus.read(phys(a), one), MEMTX_ACCESS_ERROR);
      for (let i = 0; i < 256; i++) c.own(phys(a), 1, 1); // the 256th stays 255 (a wrap would make it 0)
      assert.equal(bus.read(phys(a), one), MEMTX_OK);
      c.own(phys(a), 1, -1); // 255 - 1: still the device's
      assert.equal(bus.read(phys(a), one), MEMTX_OK);
      assert.equal(bus.read(phys(a) + 64, one), MEMTX_ACCESS_ERROR, 'the next line was never given');
      c.release(phys(a) + PAGE_SIZE, 1); // a page not held: nothing happens
      c.clean(0x7fff_0000 * PAGE_SIZE, 64); // no memory there: nothing is held
      assert.equal(c.stats().pages, 1);
    } finally {
      bus.close();
    }
  });

  it('the violation ring keeps the last 64 records with their fields, and the driver side warns about the ones it lost', () => {
    const dev = m.createDevice({ name: 'vr', dmaMask: 64, coherent: false, ownership: 'report', busOffset: 1n << 33n });
    const p = page();
    dev.debug.maxPrinted = 0;
    const h = dma_map_single(dev, m.page_address(p), 128, DMA_BIDIRECTIONAL);
    dma_sync_single_for_cpu(dev, h, 128, DMA_BIDIRECTIONAL);
    assert.equal(h, BigInt(phys(p)) + (1n << 33n));
    const bus = new BusEngine(busDescription(dev)); // no inline hook: the records wait in the ring
    try {
      for (let i = 0; i < 3; i++) bus.write8(h + 120n + BigInt(i), i);
      dma_sync_single_for_device(dev, h, 128, DMA_BIDIRECTIONAL); // drained: 3 reports, none lost
      assert.equal(dev.debug.reports.length, 3);
      assert.doesNotMatch(dev.debug.reports[0]!.message, /refused/, 'report mode: let through');
      assert.ok(!m.warnings.some((w) => /more device accesses/.test(w.message)), 'nothing lost yet');
      dma_sync_single_for_cpu(dev, h, 128, DMA_BIDIRECTIONAL);
      for (let i = 0; i < 70; i++) bus.write8(h + BigInt(i), i);
      bus.read8(h + 100n);
      const cache = dma_cache(m);
      dma_sync_single_for_device(dev, h, 128, DMA_BIDIRECTIONAL); // the driver side drains here
      const r = dev.debug.reports.filter((x) => x.check === CHECK_DEVICE_TOUCHED_CPU_OWNED).slice(3);
      assert.equal(r.length, CM_VIO_SLOTS);
      assert.match(r[0]!.message, new RegExp(`device write to memory the CPU owns \\[device address=0x${(h + 7n).toString(16)}\\] \\[size=1 bytes\\]`));
      assert.match(r.at(-1)!.message, new RegExp(`device read from memory the CPU owns \\[device address=0x${(h + 100n).toString(16)}\\]`));
      assert.ok(m.warnings.some((w) => /DMA-API: 7 more device accesses to CPU-owned memory were not kept/.test(w.message)));
      assert.deepEqual(cache.drainViolations(), { records: [], lost: 0 }, 'drained');
      dma_unmap_single(dev, h, 128, DMA_BIDIRECTIONAL);
    } finally {
      bus.close();
    }
  });

  it('records name the device and physical page; junk in the ring reports nothing and throws nothing', () => {
    const c = new DmaCache(m, 2);
    const dev = m.createDevice({ name: 'rq', dmaMask: 64, coherent: false, debug: false });
    const id = c.requester(dev);
    assert.equal(c.requester(dev), id, 'one number per device');
    assert.notEqual(c.requester(m.createDevice({ name: 'rq2', debug: false })), id);
    assert.equal(c.requesterDevice(id), dev);
    assert.equal(c.requesterDevice(999), null);
    const bus = new BusEngine({ ...busDescription(dev), cache: { table: c.table, ownership: OWNERSHIP_REPORT, requester: id } });
    try {
      const p = page();
      c.hold(phys(p), 1);
      bus.write16(phys(p) + 6, 1);
      const { records } = c.drainViolations();
      assert.deepEqual(records, [{ requester: id, addr: phys(p) + 6, length: 2, write: true, refused: false, pfn: p.pfn }]);
    } finally {
      bus.close();
    }
    // Junk in the machine's own ring (a scribbling device model): drained without a report or a throw.
    const own = m.createDevice({ name: 'junk', dmaMask: 64, coherent: false, ownership: 'report' });
    const t = new Int32Array(busDescription(own).cache!.table);
    const l = cacheLayout(t[CM_SLOTS]!);
    t.fill(-7, l.vio, l.vio + 16);
    Atomics.add(t, CM_VIO_HEAD, 2);
    assert.equal(dma_owner_report_device_accesses(m), null);
    assert.deepEqual(own.debug.reports, []);
    Atomics.sub(t, CM_VIO_HEAD, 1000); // a head that went backwards
    assert.equal(dma_owner_report_device_accesses(m), null);
  });

  it('cpuBytes: the CPU\'s bytes of a physical range inside one segment, null past its end or outside memory', () => {
    const seg = m.segments[0]!;
    const end = (seg.startPfn + seg.pages) * PAGE_SIZE;
    assert.equal(cpuBytes(m, end - 8, 8)!.length, 8);
    assert.equal(cpuBytes(m, end - 8, 9), null);
    assert.equal(cpuBytes(m, end + PAGE_SIZE, 1), null);
    const p = page();
    m.view(m.page_address(p), 4).writeUInt32LE(0xcafe, 0);
    assert.equal(Buffer.from(cpuBytes(m, phys(p), 4)!).readUInt32LE(0), 0xcafe);
  });

  it('what a bus engine is told: nothing for a coherent device; the table, checking mode and snooping otherwise', () => {
    assert.equal(busCacheDescription(m.createDevice({ name: 'c0' })), undefined);
    const cr = busCacheDescription(m.createDevice({ name: 'c1', ownership: 'report' }))!;
    assert.deepEqual({ o: cr.ownership, s: cr.snoop }, { o: OWNERSHIP_REPORT, s: true });
    const ns = busCacheDescription(m.createDevice({ name: 'n1', coherent: false, ownership: 'strict' }))!;
    assert.deepEqual({ o: ns.ownership, s: ns.snoop }, { o: OWNERSHIP_STRICT, s: false });
    const no = busCacheDescription(m.createDevice({ name: 'n2', coherent: false }))!;
    assert.equal(no.ownership, OWNERSHIP_OFF);
    assert.equal(no.table, dma_cache(m).table);
    assert.notEqual(ns.requester, no.requester);
    const fresh = new Machine({ name: 'ce77b', ramPerNode: 2 * MiB, cmaSize: 0, hugepages: 'off', emitWarnings: false });
    assert.deepEqual(dma_cache_stats(fresh), { pages: 0, writtenBack: 0, refilled: 0, discarded: 0, evicted: 0 });
    fresh.destroy();
  });

  it('no ownership option, or DMA-API debug switched off: no ownership report', () => {
    const plain = m.createDevice({ name: 'plain', dmaMask: 64, coherent: false, debug: true });
    const off = m.createDevice({ name: 'off', dmaMask: 64, coherent: false, ownership: 'strict' });
    off.debug.enabled = false;
    for (const dev of [plain, off]) {
      const p = page();
      const h = dma_map_single(dev, m.page_address(p), 64, DMA_TO_DEVICE);
      m.view(m.page_address(p), 1)[0] = 1;
      dma_sync_single_for_cpu(dev, h, 64, DMA_TO_DEVICE);
      dma_sync_single_for_cpu(dev, h, 64, DMA_TO_DEVICE);
      busMaster(dev).read8(h);
      dma_unmap_single(dev, h, 64, DMA_TO_DEVICE);
      assert.deepEqual(dev.debug.reports.filter((r) => r.check >= 40).map((r) => r.message), [], dev.name);
    }
  });

  it('a second sync_for_device does not count twice: after one sync_for_cpu the CPU owns the buffer', () => {
    const dev = m.createDevice({ name: 'twice', dmaMask: 64, coherent: false, ownership: 'strict', busOffset: 0x1000_0000n });
    const p = page();
    const h = dma_map_single(dev, m.page_address(p), 256, DMA_BIDIRECTIONAL);
    const bus = busMaster(dev);
    assert.equal(bus.read8(h + 255n), 0, 'the device owns it after the map (bus offset taken off)');
    dma_sync_single_for_device(dev, h, 256, DMA_BIDIRECTIONAL);
    dma_sync_single_for_cpu(dev, h, 256, DMA_BIDIRECTIONAL);
    assert.equal(bus.write8(h, 1), MEMTX_ACCESS_ERROR);
    dma_sync_single_for_device(dev, h, 256, DMA_BIDIRECTIONAL);
    dma_unmap_single(dev, h, 256, DMA_BIDIRECTIONAL);
  });

  it('behind an IOMMU a buffer over three pages changes hands page by page', () => {
    const dev = m.createDevice({ name: 'io3', dmaMask: 64, coherent: false, ownership: 'strict', iommu: { strict: true } });
    const block = m.alloc_pages(GFP_KERNEL, 2)!;
    try {
      const addr = m.page_address(block) + 100;
      const h = dma_map_single(dev, addr, 2 * PAGE_SIZE + 50, DMA_BIDIRECTIONAL);
      const bus = busMaster(dev);
      for (const off of [0n, 5000n, BigInt(2 * PAGE_SIZE + 49)]) assert.equal(bus.read8(h + off), 0, `offset ${off}`);
      dma_sync_single_for_cpu(dev, h, 2 * PAGE_SIZE + 50, DMA_BIDIRECTIONAL);
      for (const off of [0n, 5000n, BigInt(2 * PAGE_SIZE + 49)]) {
        bus.read8(h + off);
        assert.equal(bus.status, MEMTX_ACCESS_ERROR, `offset ${off}`);
      }
      dma_unmap_single(dev, h, 2 * PAGE_SIZE + 50, DMA_BIDIRECTIONAL);
    } finally {
      m.__free_pages(block, 2);
    }
  });
});

describe('77 more edges', () => {
  expectNoLeaks();
  let m: Machine;
  beforeEach(() => {
    m = new Machine({ name: 'me77', ramPerNode: 8 * MiB, cmaSize: 0, hugepages: 'off', emitWarnings: false });
  });
  afterEach(() => m.destroy());

  it('an invalidate of whole lines throws a dirty line away (dc ivac): the CPU\'s write is lost, nothing is written back', () => {
    const dev = m.createDevice({ name: 'iv', dmaMask: 64, coherent: false, debug: false });
    const p = m.alloc_pages(GFP_KERNEL, 0)!;
    const v = m.view(m.page_address(p), 128);
    v.fill(1);
    const h = dma_map_single(dev, m.page_address(p), 128, DMA_BIDIRECTIONAL); // clean: RAM = 1
    busMaster(dev).write(h, new Uint8Array(64).fill(2)); // RAM line 0 = 2
    v.fill(3, 64, 128); // line 1 dirty, wholly inside the range
    const before = dma_cache_stats(m);
    dma_sync_single_for_cpu(dev, h, 128, DMA_BIDIRECTIONAL);
    assert.equal(v[0], 2);
    assert.equal(v[100], 1, 'the dirty line was refilled from RAM, not written back');
    const after = dma_cache_stats(m);
    assert.equal(after.discarded - before.discarded, 1);
    assert.equal(after.writtenBack - before.writtenBack, 0);
    assert.equal(after.refilled - before.refilled, 2);
    dma_unmap_single(dev, h, 128, DMA_BIDIRECTIONAL);
    m.__free_pages(p, 0);
  });

  it('behind an IOMMU an sg list of scattered pages merged into one IOVA range changes hands page by page', () => {
    const dev = m.createDevice({ name: 'iosg', dmaMask: 64, coherent: false, ownership: 'strict', iommu: { strict: true } });
    const pages = [m.alloc_pages(GFP_KERNEL, 0)!, m.alloc_pages(GFP_KERNEL, 0)!, m.alloc_pages(GFP_KERNEL, 0)!];
    try {
      const sgl = [new Scatterlist(), new Scatterlist()];
      sg_init_table(sgl, 2);
      sg_set_page(sgl[0]!, pages[0]!, PAGE_SIZE, 0);
      sg_set_page(sgl[1]!, pages[2]!, PAGE_SIZE, 0); // not next to the first
      assert.equal(dma_map_sg(dev, sgl[0]!, 2, DMA_BIDIRECTIONAL), 1, 'merged into one IOVA range');
      const h = sgl[0]!.dma_address;
      const bus = busMaster(dev);
      for (const off of [10n, BigInt(PAGE_SIZE + 10)]) assert.equal(bus.write8(h + off, 7), MEMTX_OK, `device owns offset ${off}`);
      dma_sync_sg_for_cpu(dev, sgl[0]!, 2, DMA_BIDIRECTIONAL);
      assert.equal(m.view(m.page_address(pages[2]!), 16)[10], 7, 'the second page is where the IOVA says');
      for (const off of [10n, BigInt(PAGE_SIZE + 10)]) assert.equal(bus.write8(h + off, 8), MEMTX_ACCESS_ERROR, `CPU owns offset ${off}`);
      dma_sync_sg_for_device(dev, sgl[0]!, 2, DMA_BIDIRECTIONAL);
      dma_unmap_sg(dev, sgl[0]!, 2, DMA_BIDIRECTIONAL);
    } finally {
      for (const p of pages) m.__free_pages(p, 0);
    }
  });

  it('ownership copies are kept for reuse, at most 16 MiB of them', () => {
    const dev = m.createDevice({ name: 'spare', dmaMask: 64, coherent: false, ownership: 'report' });
    const start = ownershipSpareBytes();
    const block = m.alloc_pages(GFP_KERNEL, 9)!; // 2 MiB
    try {
      const addr = m.page_address(block);
      const h = dma_map_single(dev, addr, 1 << 20, DMA_TO_DEVICE);
      dma_unmap_single(dev, h, 1 << 20, DMA_TO_DEVICE);
      assert.ok(ownershipSpareBytes() >= start + (1 << 20) || start + (1 << 20) > 16 << 20, 'the copy was given back');
      const kept = ownershipSpareBytes();
      const again = dma_map_single(dev, addr, 1 << 20, DMA_TO_DEVICE);
      assert.equal(ownershipSpareBytes(), kept - (1 << 20), 'and taken again by the next map of that size');
      dma_unmap_single(dev, again, 1 << 20, DMA_TO_DEVICE);
      const hs = Array.from({ length: 20 }, (_, i) => dma_map_single(dev, addr + i * 4096, (1 << 20) - i * 4096, DMA_TO_DEVICE));
      hs.forEach((x, i) => dma_unmap_single(dev, x, (1 << 20) - i * 4096, DMA_TO_DEVICE));
      assert.ok(ownershipSpareBytes() <= 16 << 20, `bounded: ${ownershipSpareBytes()}`);
      assert.ok(ownershipSpareBytes() > (16 << 20) - (1 << 20), 'filled up to the bound');
    } finally {
      m.__free_pages(block, 9);
    }
  });
});
