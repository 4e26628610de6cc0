// kmalloc: SLUB's size classes and their alignment, slabs from and back to the page allocator,
// large allocations from pages, kzalloc/kcalloc zeroing and overflow, krealloc, ksize, kfree by
// address (refusing what kmalloc did not hand out), and DMA-mapping a kmalloc buffer.

import assert from 'node:assert/strict';
import { Machine } from '../lib/mm/machine';
import { destroyDefaultMachine } from '../lib/mm/default';
import { GFP_KERNEL, PAGE_SIZE, __GFP_NOWARN, __GFP_ZERO } from '../lib/mm/gfp';
import {
  KMALLOC_MAX_SIZE, KMALLOC_SIZES, ZERO_SIZE_PTR, kfree, kmalloc_stats, krealloc, ksize,
} from '../lib/mm/slab';
import '../lib/dma/device';
import { dma_map_single, dma_mapping_error, dma_unmap_single } from '../lib/dma/mapping';
import { DMA_TO_DEVICE } from '../lib/dma/constants';
import { busMaster } from '../lib/devices/bus_master';
import { expectNoLeaks } from './helpers/leaks';

const MiB = 1 << 20;

describe('37 kmalloc (mm/slub.c)', () => {
  expectNoLeaks();
  let m: Machine;
  const freePages = (): number => m.stats().nodes[0]!.freePages;
  beforeEach(() => { m = new Machine({ name: 'm37', ramPerNode: 8 * MiB, cmaSize: 0, hugepages: 'off', emitWarnings: false }); });
  afterEach(() => m.destroy());

  it('each size lands in its class: ksize, alignment, objects packed in a slab', () => {
    const cases: [number, number][] = [[1, 8], [8, 8], [9, 16], [33, 64], [65, 96], [97, 128], [129, 192], [193, 256], [257, 512], [1000, 1024], [4097, 8192]];
    for (const [size, cls] of cases) {
      const a = m.kmalloc(size, GFP_KERNEL)!;
      const b = m.kmalloc(size, GFP_KERNEL)!;
      assert.equal(ksize(a), cls, `kmalloc(${size}) is in kmalloc-${cls}`);
      assert.equal(Math.abs(b - a), cls, 'the next object of the same slab');
      const align = cls === 96 || cls === 192 ? 32 : Math.min(cls, PAGE_SIZE);
      assert.equal((a - m.page_address(m.virt_to_page(a))) % align === 0 || a % align === 0, true, `aligned to ${align}`);
      kfree(a);
      kfree(b);
    }
    assert.deepEqual(KMALLOC_SIZES, [8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192]);
    assert.equal(m.kmalloc(0, GFP_KERNEL), ZERO_SIZE_PTR);
    kfree(ZERO_SIZE_PTR);
    kfree(null);
    assert.equal(ksize(null), 0);
  });

  it('slabs come from the page allocator and go back when empty; freed objects are reused last in, first out', () => {
    const before = freePages();
    const objs = Array.from({ length: 40 }, () => m.kmalloc(256, GFP_KERNEL)!);
    const st = kmalloc_stats(m).find((c) => c.name === 'kmalloc-256')!;
    assert.deepEqual([st.order, st.objperslab, st.slabs, st.active], [0, 16, 3, 40]);
    assert.equal(before - freePages(), 3, 'three order-0 slabs');
    kfree(objs[5]!);
    kfree(objs[9]!);
    assert.equal(m.kmalloc(256, GFP_KERNEL), objs[9], 'the last freed first');
    assert.equal(m.kmalloc(200, GFP_KERNEL), objs[5]);
    for (const o of objs) kfree(o);
    assert.equal(freePages(), before, 'every slab went back');
    assert.equal(kmalloc_stats(m).find((c) => c.name === 'kmalloc-256')!.slabs, 0);
    const big = kmalloc_stats(m).find((c) => c.name === 'kmalloc-8k')!;
    assert.deepEqual([big.order, big.objperslab], [3, 4], 'kmalloc-8k: order-3 slabs of 4 objects');
  });

  it('above 8 KiB whole pages (ksize is their size); above KMALLOC_MAX_SIZE null with a WARN', () => {
    const before = freePages();
    const p = m.kmalloc(3 * PAGE_SIZE + 1, GFP_KERNEL)!;
    assert.equal(p % PAGE_SIZE, 0);
    assert.equal(ksize(p), 4 * PAGE_SIZE);
    assert.equal(before - freePages(), 4);
    kfree(p);
    assert.equal(freePages(), before);
    assert.equal(m.kmalloc(KMALLOC_MAX_SIZE + 1, GFP_KERNEL), null);
    assert.match(m.warnings.at(-1)!.message, /above KMALLOC_MAX_SIZE/);
    const n = m.warnings.length;
    assert.equal(m.kmalloc(KMALLOC_MAX_SIZE + 1, GFP_KERNEL | __GFP_NOWARN), null);
    assert.equal(m.warnings.length, n, '__GFP_NOWARN: silent');
    assert.equal(freePages(), before);
  });

  it('kzalloc and kcalloc zero dirty memory; kcalloc refuses an overflowing product', () => {
    const a = m.kmalloc(64, GFP_KERNEL)!;
    m.view(a, 64).fill(0xee);
    kfree(a);
    const z = m.kzalloc(64, GFP_KERNEL)!;
    assert.equal(z, a);
    assert.ok(m.view(z, 64).every((x) => x === 0));
    kfree(z);
    m.view(m.kmalloc(64, GFP_KERNEL)!, 64).fill(0xee);
    kfree(a);
    const c = m.kcalloc(8, 8, GFP_KERNEL)!;
    assert.ok(m.view(c, 64).every((x) => x === 0));
    kfree(c);
    assert.equal(m.kcalloc(2 ** 40, 2 ** 40, GFP_KERNEL), null, 'n * size overflows size_t');
    const raw = m.kmalloc_array(4, 16, GFP_KERNEL)!;
    assert.equal(ksize(raw), 64);
    kfree(raw);
  });

  it('krealloc keeps an object that fits, moves one that does not (bytes kept), frees on 0', () => {
    const a = m.kmalloc(100, GFP_KERNEL)!;
    m.view(a, 100).fill(0x5a);
    assert.equal(krealloc(a, 120, GFP_KERNEL), a, '120 still fits kmalloc-128');
    const b = krealloc(a, 300, GFP_KERNEL)!;
    assert.notEqual(b, a);
    assert.equal(ksize(b), 512);
    assert.ok(m.view(b, 100).every((x) => x === 0x5a), 'the bytes moved');
    assert.equal(krealloc(b, 10, GFP_KERNEL | __GFP_ZERO), b, 'shrinking keeps the object');
    assert.ok(m.view(b + 10, 502).every((x) => x === 0), '__GFP_ZERO clears past the new size');
    assert.equal(krealloc(b, 0, GFP_KERNEL), ZERO_SIZE_PTR);
    const n = m.warnings.length;
    kfree(b);
    assert.match(m.warnings[n]!.message, /not an object kmalloc handed out/, 'krealloc(.., 0) freed it, and its empty slab went back');
    // krealloc(NULL, ...) is kmalloc, which (without a machine argument) uses the default machine.
    const c = krealloc(null, 50, GFP_KERNEL)!;
    assert.equal(ksize(c), 64);
    assert.equal(m.isLinearAddress(c), false, 'on the default machine');
    kfree(c);
    destroyDefaultMachine();
  });

  it('kfree of something kmalloc did not hand out, or twice, is a WARN that frees nothing', () => {
    const a = m.kmalloc(64, GFP_KERNEL)!;
    const keep = m.kmalloc(64, GFP_KERNEL)!;
    kfree(a + 8);
    assert.match(m.warnings.at(-1)!.message, /not an object kmalloc handed out/);
    const page = m.alloc_pages_node(0, GFP_KERNEL, 0)!;
    kfree(m.page_address(page));
    assert.match(m.warnings.at(-1)!.message, /not an object kmalloc handed out/);
    kfree(a);
    kfree(a);
    assert.match(m.warnings.at(-1)!.message, /double free of 0x[0-9a-f]+ in kmalloc-64/);
    const x = m.kmalloc(64, GFP_KERNEL)!;
    const y = m.kmalloc(64, GFP_KERNEL)!;
    assert.notEqual(x, y, 'the double free did not list the object twice');
    assert.throws(() => kfree('0x1000' as unknown as number), TypeError);
    assert.throws(() => kfree(12345), RangeError, 'not a linear-map address');
    for (const o of [keep, x, y]) kfree(o);
    m.__free_pages(page, 0);
  });

  it('a kmalloc buffer is DMA-mappable: the device reads it at the handle', () => {
    const dev = m.createDevice({ name: 'k', iommu: true });
    const buf = m.kmalloc(300, GFP_KERNEL)!;
    m.view(buf, 300).fill(0x77);
    const h = dma_map_single(dev, buf, 300, DMA_TO_DEVICE);
    assert.equal(dma_mapping_error(dev, h), 0);
    assert.equal(busMaster(dev).read8(h + 299n), 0x77);
    dma_unmap_single(dev, h, 300, DMA_TO_DEVICE);
    kfree(buf);
  });

  it('misuse is refused before anything is allocated', () => {
    const before = freePages();
    assert.throws(() => m.kmalloc(-1, GFP_KERNEL), RangeError);
    assert.throws(() => m.kmalloc('64' as unknown as number, GFP_KERNEL), TypeError);
    assert.throws(() => m.kmalloc(64, 'GFP_KERNEL' as unknown as number), TypeError);
    assert.throws(() => m.kzalloc(64, 1 << 30), TypeError);
    assert.throws(() => m.kmalloc_node(64, GFP_KERNEL, -7), RangeError);
    assert.throws(() => krealloc(null, -5, GFP_KERNEL), RangeError);
    assert.equal(freePages(), before);
    void __GFP_ZERO;
  });
});
