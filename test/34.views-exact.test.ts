// Views cover exactly what was asked for and are revoked with what they cover; the crash
// reproducers of issue 8 (VMA moved under its views, views reaching unmapped pages, internals that
// wrap arbitrary addresses) run in child processes that must end without a signal.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { Machine } from '../lib/mm/machine';
import { GFP_KERNEL, PAGE_SIZE } from '../lib/mm/gfp';
import { cma_alloc, cma_release } from '../lib/mm/cma';
import { remap_pfn_range } from '../lib/mm/vma';
import { vfree, vmalloc, vmap, vunmap } from '../lib/mm/vmalloc';
import { Region } from '../lib/os/region';
import { ViewSet } from '../lib/os/views';
import { native } from '../lib/native';
import { expectNoLeaks, forceGc, requireHugepagesOrSkip } from './helpers/leaks';

const MiB = 1024 * 1024;
/** The package entry as built (dist/lib/index.js): what `require('dmamem')` gives a user. */
const LIB = JSON.stringify(path.join(__dirname, '..', 'lib', 'index.js'));

/**
 * Runs `body` in a child node with `d` = the package and `out(x)` printing JSON; asserts it was not
 * killed by a signal and exited 0, and returns what it printed last.
 */
function child(body: string): Record<string, unknown> {
  const script = `'use strict'; const d = require(${LIB}); const out = (x) => console.log(JSON.stringify(x));\n${body}`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60000 });
  assert.equal(r.signal, null, `the child was killed by ${String(r.signal)}; stderr:\n${r.stderr}`);
  assert.equal(r.status, 0, `the child failed; stderr:\n${r.stderr}`);
  const lines = r.stdout.trim().split('\n');
  return JSON.parse(lines[lines.length - 1]!) as Record<string, unknown>;
}

/** Body snippet: runs f, returns the error's constructor name and code (or 'none'). */
const CATCH = 'const caught = (f) => { try { f(); return "none"; } catch (e) { return `${e.constructor.name}:${e.code ?? ""}`; } };';

describe('34 views cover exactly what was asked, and crash reproducers end without a signal', () => {
  expectNoLeaks();

  describe('crash reproducers (child processes)', () => {
    it('crash 1: remap_pfn_range of hugetlb CMA memory moves an empty VMA; a view taken before cannot reach the old range', function () {
      requireHugepagesOrSkip(this, 2);
      const r = child(`
        const m = new d.Machine({ ramPerNode: 2 << 20, cmaSize: 2 << 20, hugepages: 'require', emitWarnings: false });
        d.cma_alloc(m.dma_contiguous_default_area, 1, 0, false);
        const page = d.cma_alloc(m.dma_contiguous_default_area, 1, 0, false);
        const vma = m.createVma(4096);
        const early = vma.view(0, 0);
        const before = vma.vm_start;
        const ret = d.remap_pfn_range(vma, vma.vm_start, page.pfn, 4096, vma.vm_page_prot);
        const v = vma.view(0, 4096);
        v[0] = 1;
        out({ ret, moved: vma.vm_start !== before, len: v.length, ab: v.buffer.byteLength, early: early.buffer.byteLength,
              same: m.read(m.page_address(page), 1)[0], backing: m.stats().cma[0].backing });
        m.destroy();`);
      assert.deepEqual(r, { ret: 0, moved: true, len: 4096, ab: 4096, early: 0, same: 1, backing: 'hugetlb-2M' });
    });

    it('crash 2: vma.view(0, 4096) of a 2-page VMA with page 0 mapped has a 4 KiB .buffer; machine.view too', () => {
      const r = child(`
        const m2 = new d.Machine({ ramPerNode: 2 << 20, cmaSize: 0, emitWarnings: false });
        const v2 = m2.createVma(8192);
        const page = m2.alloc_pages(d.GFP_KERNEL, 0);
        d.remap_pfn_range(v2, v2.vm_start, page.pfn, 4096, v2.vm_page_prot);
        const u = new Uint8Array(v2.view(0, 4096).buffer);
        u[4096] = 1;                      // past the end of a 4 KiB ArrayBuffer: ignored, no fault
        const k = m2.view(m2.page_address(page), 4096);
        const w = new Uint8Array(k.buffer);
        w[4096] = 1; w[8191] = 1;
        out({ vmaAb: u.length, machineAb: k.buffer.byteLength, offset: k.byteOffset });
        m2.destroy();`);
      assert.deepEqual(r, { vmaAb: 4096, machineAb: 4096, offset: 0 });
    });

    it('crash 3: no VmallocArea over an arbitrary address, no markMapped/placeFor, no segment window or constructor', () => {
      const r = child(`${CATCH}
        const m2 = new d.Machine({ ramPerNode: 2 << 20, cmaSize: 0, emitWarnings: false });
        const area = m2.findVmallocArea(m2.vmalloc(4096));
        const Area = area.constructor;
        const vmallocArea = caught(() => new Area(m2, 0x10000, 4096, [], false, 0, true).view(0x10000, 4096)[0] = 1);
        const exported = typeof d.VmallocArea === 'function' ? caught(() => new d.VmallocArea(m2, 0x10000, 4096, [], false, 0, true).view(0x10000, 4096)[0] = 1) : 'not exported';
        const v3 = m2.createVma(4096);
        const markMapped = typeof v3.markMapped;
        const placeFor = typeof v3.placeFor;
        const spill = typeof v3.spillBounds;
        const viewUnmapped = caught(() => v3.view()[0] = 1);
        const seg = m2.segments[0];
        const windowField = typeof seg.window;
        const bytesField = typeof seg.bytes;
        const Seg = seg.constructor;
        const segCtor = caught(() => new Seg({ name: 'x', kind: 'ram', nid: 0, startPfn: 16, pages: 1, hugepages: 'off' }, 0x10000, m2));
        const Vma = v3.constructor;
        const vmaCtor = caught(() => new Vma(m2, 4096, {}));
        const Space = m2.vmallocSpace;
        const spaceInsert = typeof Space.insert;
        out({ vmallocArea, exported, markMapped, placeFor, spill, viewUnmapped, windowField, bytesField, segCtor, vmaCtor, spaceInsert });
        m2.destroy();`);
      assert.equal(r.vmallocArea, 'TypeError:');
      assert.ok(r.exported === 'not exported' || r.exported === 'TypeError:', String(r.exported));
      assert.deepEqual(
        { ...r, vmallocArea: 0, exported: 0 },
        { vmallocArea: 0, exported: 0, markMapped: 'undefined', placeFor: 'undefined', spill: 'undefined', viewUnmapped: 'RangeError:', windowField: 'undefined', bytesField: 'undefined', segCtor: 'TypeError:', vmaCtor: 'TypeError:', spaceInsert: 'undefined' },
      );
    });

    it('crash 3: writing the fields views are computed from changes nothing (segment, VMA, vmalloc area, machine)', () => {
      const r = child(`${CATCH}
        const m = new d.Machine({ ramPerNode: 2 << 20, cmaSize: 0, emitWarnings: false });
        const page = m.alloc_pages(d.GFP_KERNEL, 0);
        const addr = m.page_address(page);
        const seg = m.segments[0];
        const setSeg = caught(() => { 'use strict'; seg.address = 0x10000; });
        const pushSeg = caught(() => { 'use strict'; m.segments.push({ startPfn: 0, pages: 16, address: 0x10000 }); });
        const setPageOffset = caught(() => { 'use strict'; m.pageOffset = 0x10000; });
        const vma = m.createVma(4096);
        d.remap_pfn_range(vma, vma.vm_start, page.pfn, 4096, vma.vm_page_prot);
        const setStart = caught(() => { 'use strict'; vma.vm_start = 0x10000; });
        vma.view()[0] = 7;
        const va = m.vmalloc(4096);
        const area = m.findVmallocArea(va);
        const setAddr = caught(() => { 'use strict'; area.addr = 0x10000; });
        m.view(va, 4096)[0] = 9;
        m.view(addr, 4096)[1] = 8;
        const ro = m.createVma(4096, { prot: 'read' });
        d.remap_pfn_range(ro, ro.vm_start, page.pfn, 4096, ro.vm_page_prot);
        ro.vm_flags |= 0x2; // VM_WRITE set by hand: the mapping is still read-only, so no view
        const roView = caught(() => ro.view()[0] = 1);
        out({ setSeg, pushSeg, setPageOffset, setStart, setAddr, roView, byte0: m.read(addr, 2)[0], byte1: m.read(addr, 2)[1] });
        m.destroy();`);
      assert.deepEqual(r, {
        setSeg: 'TypeError:', pushSeg: 'TypeError:', setPageOffset: 'TypeError:', setStart: 'TypeError:', setAddr: 'TypeError:',
        roView: 'DmamemError:ERR_DMAMEM_READONLY', byte0: 7, byte1: 8,
      });
    });
  });

  describe('exact views', () => {
    let m: Machine;
    beforeEach(() => { m = new Machine({ name: 'm34', ramPerNode: 4 * MiB, cmaSize: 4 * MiB, hugepages: 'off', emitWarnings: false }); });
    afterEach(() => m.destroy());

    it('machine.view over a buddy block: .buffer is exactly the range asked for, byteOffset 0', () => {
      const page = m.alloc_pages(GFP_KERNEL, 2)!;
      const addr = m.page_address(page);
      for (const [off, len] of [[0, 4 * PAGE_SIZE], [100, 1000], [PAGE_SIZE, 1], [3 * PAGE_SIZE, PAGE_SIZE]] as const) {
        const v = m.view(addr + off, len);
        assert.equal(v.length, len);
        assert.equal(v.byteOffset, 0);
        assert.equal(v.buffer.byteLength, len, `view(${off}, ${len})`);
        assert.equal(native.addressOf(v.buffer), addr + off);
      }
      m.__free_pages(page, 2);
    });

    it('views over CMA pages, a vmalloc area and a VMA are exact too', () => {
      const cmaPage = cma_alloc(m.dma_contiguous_default_area, 4, 0, false)!;
      const c = m.view(m.page_address(cmaPage) + 8, 4000);
      assert.equal(c.buffer.byteLength, 4000);
      const va = vmalloc(m, 3 * PAGE_SIZE)!;
      const v = m.view(va + PAGE_SIZE, 10);
      assert.equal(v.buffer.byteLength, 10);
      assert.equal(m.findVmallocArea(va)!.view(va, PAGE_SIZE).buffer.byteLength, PAGE_SIZE);
      const vma = m.createVma(3 * PAGE_SIZE);
      assert.equal(remap_pfn_range(vma, vma.vm_start, cmaPage.pfn, 2 * PAGE_SIZE, vma.vm_page_prot), 0);
      const u = vma.view(PAGE_SIZE, PAGE_SIZE);
      assert.equal(u.buffer.byteLength, PAGE_SIZE);
      assert.equal(native.addressOf(u.buffer), vma.vm_start + PAGE_SIZE);
      assert.equal(m.view(vma.vm_start + 5, 7).buffer.byteLength, 7);
      assert.throws(() => vma.view(0, 3 * PAGE_SIZE), RangeError, 'page 2 is not mapped');
      vma.unmap();
      vfree(m, va);
      assert.equal(cma_release(m.dma_contiguous_default_area, cmaPage, 4), true);
    });

    it('machine.read copies from a vmalloc area, a read-only vmap area and a VMA, refusing unmapped pages', () => {
      const page = m.alloc_pages(GFP_KERNEL, 0)!;
      m.view(m.page_address(page), 4).set([1, 2, 3, 4]);
      const ro = vmap(m, [page], 1, 0, 'read')!;
      assert.deepEqual([...m.read(ro + 1, 2)], [2, 3]);
      assert.throws(() => m.view(ro, 1), /read-only/);
      assert.throws(() => m.read(ro + PAGE_SIZE - 1, 2), RangeError);
      const vma = m.createVma(2 * PAGE_SIZE, { prot: 'read' });
      assert.equal(remap_pfn_range(vma, vma.vm_start, page.pfn, PAGE_SIZE, vma.vm_page_prot), 0);
      assert.deepEqual([...m.read(vma.vm_start, 4)], [1, 2, 3, 4]);
      assert.throws(() => m.read(vma.vm_start + PAGE_SIZE, 1), /not mapped/);
      vma.unmap();
      vunmap(m, ro);
      m.__free_pages(page, 0);
    });

    it('Region.view(offset, length) is exact; whole-region views share one ArrayBuffer', () => {
      const r = Region.allocate(4 * PAGE_SIZE, { hugepages: 'off' });
      try {
        const part = r.view(PAGE_SIZE, 100);
        assert.equal(part.buffer.byteLength, 100);
        assert.equal(native.addressOf(part.buffer), r.address + PAGE_SIZE);
        const a = r.view();
        const b = r.view();
        assert.equal(a.buffer, b.buffer);
        assert.equal(a.buffer.byteLength, r.length);
        r.write(10, Buffer.from([1, 2, 3]));
        assert.deepEqual([...a.subarray(10, 13)], [1, 2, 3]);
        r.protect('read');
        assert.equal(part.length, 0);
        assert.equal(a.length, 0);
        r.protect('readwrite');
        assert.equal(r.view(0, 4).buffer.byteLength, 4);
      } finally {
        r.close();
      }
    });

    /** A debug machine: views are revoked when the pages they cover are freed. */
    function debugMachine(): void {
      m.destroy();
      m = new Machine({ name: 'm34d', ramPerNode: 4 * MiB, cmaSize: 4 * MiB, hugepages: 'off', dmaDebug: true, emitWarnings: false });
    }

    it('with dmaDebug, a view over RAM is revoked when its buddy block is freed (pcp list too), not when another one is', () => {
      debugMachine();
      const a = m.alloc_pages(GFP_KERNEL, 0)!;
      const b = m.alloc_pages(GFP_KERNEL, 3)!;
      const va = m.view(m.page_address(a), PAGE_SIZE);
      const vb = m.view(m.page_address(b) + PAGE_SIZE, 2 * PAGE_SIZE);
      va.fill(1);
      m.__free_pages(a, 0);
      assert.equal(va.length, 0, 'freed to the pcp list: revoked');
      assert.equal(vb.length, 2 * PAGE_SIZE, 'the other block keeps its view');
      m.__free_pages(b, 3);
      assert.equal(vb.length, 0);
      assert.throws(() => m.view(m.page_address(a), PAGE_SIZE), /leaves its allocation/);
    });

    it('with dmaDebug, a view across two adjacent blocks is revoked when either is freed', () => {
      debugMachine();
      // Order-0 pages from a fresh order-1 split are adjacent: find two that are.
      const pages = Array.from({ length: 8 }, () => m.alloc_pages(GFP_KERNEL, 0)!);
      const sorted = [...pages].sort((x, y) => x.pfn - y.pfn);
      const i = sorted.findIndex((p, k) => sorted[k + 1]?.pfn === p.pfn + 1);
      assert.ok(i >= 0);
      const [p, q] = [sorted[i]!, sorted[i + 1]!];
      const v = m.view(m.page_address(p) + 100, PAGE_SIZE);
      assert.equal(v.buffer.byteLength, PAGE_SIZE);
      m.__free_pages(q, 0);
      assert.equal(v.length, 0);
      for (const page of pages) if (page !== q) m.__free_pages(page, 0);
    });

    it('with dmaDebug, cma_release revokes the views over the released pages only; vfree / vunmap revoke theirs always', () => {
      debugMachine();
      const area = m.dma_contiguous_default_area;
      const run = cma_alloc(area, 4, 0, false)!;
      const base = m.page_address(run);
      const head = m.view(base, PAGE_SIZE);
      const tail = m.view(base + 3 * PAGE_SIZE, PAGE_SIZE);
      assert.equal(cma_release(area, m.pfn_to_page(run.pfn + 3), 1), true);
      assert.equal(tail.length, 0);
      assert.equal(head.length, PAGE_SIZE);
      assert.equal(cma_release(area, run, 3), true);
      assert.equal(head.length, 0);

      m.destroy();
      m = new Machine({ name: 'm34', ramPerNode: 4 * MiB, cmaSize: 0, emitWarnings: false });
      const va = vmalloc(m, 2 * PAGE_SIZE)!;
      const vv = m.view(va, 2 * PAGE_SIZE);
      vfree(m, va);
      assert.equal(vv.length, 0);
      const pages = [m.alloc_pages(GFP_KERNEL, 0)!];
      const mapped = vmap(m, pages, 1)!;
      const mv = m.view(mapped, 8);
      vunmap(m, mapped);
      assert.equal(mv.length, 0);
      m.__free_pages(pages[0]!, 0);
    });

    it('without dmaDebug, a view outlives a free and the same exact ArrayBuffer is reused by the next user', () => {
      const page = m.alloc_pages(GFP_KERNEL, 0)!;
      const addr = m.page_address(page);
      const first = m.view(addr, PAGE_SIZE);
      m.__free_pages(page, 0);
      assert.equal(first.length, PAGE_SIZE, 'not revoked without dmaDebug (the memory stays mapped)');
      const again = m.alloc_pages(GFP_KERNEL, 0)!;
      assert.equal(again.pfn, page.pfn);
      const second = m.view(addr, PAGE_SIZE);
      assert.equal(second.buffer, first.buffer);
      assert.equal(m.view(addr, 100).buffer.byteLength, 100, 'another length: another exact ArrayBuffer');
      m.__free_pages(again, 0);
    });

    it('destroy() revokes every view the machine handed out', () => {
      const page = m.alloc_pages(GFP_KERNEL, 0)!;
      const cma = cma_alloc(m.dma_contiguous_default_area, 1, 0, false)!;
      const views = [m.view(m.page_address(page), 64), m.view(m.page_address(cma), 64), m.view(vmalloc(m, PAGE_SIZE)!, 64)];
      m.destroy();
      for (const v of views) assert.equal(v.length, 0);
      m = new Machine({ name: 'm34b', ramPerNode: 2 * MiB, cmaSize: 0, emitWarnings: false });
    });

    it('a view per message over a long-lived allocation does not pile up: dropped views are pruned', async () => {
      const set = new ViewSet();
      const page = m.alloc_pages(GFP_KERNEL, 0)!;
      const addr = m.page_address(page);
      for (let i = 0; i < 2000; i++) set.view(addr + (i % 4000), 16)[0] = i & 0xff;
      // WeakRef targets stay alive until the current job ends: collect in a later one.
      await new Promise((r) => setImmediate(r));
      forceGc();
      for (let i = 0; i < 100; i++) set.view(addr + i, 8);
      assert.ok(set.size < 1000, `tracked entries: ${set.size}`);
      const kept = set.view(addr, 32);
      set.revoke();
      assert.equal(kept.length, 0);
      assert.equal(set.size, 0);
      m.__free_pages(page, 0);
    });
  });
});
