// Page references (get_page/put_page/page_ref_count, and __free_pages dropping only its own
// reference) and page fragments (page_frag_alloc from a 32 KiB compound page, freed by the last
// fragment), with a port of e1000's RX buffer refill on netdev_alloc_frag and dma_map_single.

import assert from 'node:assert/strict';
import { Machine } from '../lib/mm/machine';
import { GFP_KERNEL, NUMA_NO_NODE, PAGE_SIZE } from '../lib/mm/gfp';
import { get_page, page_ref_count, put_page } from '../lib/mm/page_ref';
import { PAGE_FRAG_CACHE_MAX_SIZE, PageFragCache, netdev_alloc_frag, page_frag_alloc, page_frag_alloc_align, page_frag_cache_drain, page_frag_free } from '../lib/mm/page_frag';
import '../lib/dma/device';
import { dma_map_single, dma_mapping_error, dma_unmap_single } from '../lib/dma/mapping';
import { DMA_FROM_DEVICE } from '../lib/dma/constants';
import { busMaster } from '../lib/devices/bus_master';
import { MEMTX_OK } from '../lib/devices/bus_engine';
import { expectNoLeaks } from './helpers/leaks';

const MiB = 1 << 20;

describe('38 page references and fragments', () => {
  expectNoLeaks();
  let m: Machine;
  const freePages = (): number => m.stats().nodes[0]!.freePages;
  beforeEach(() => { m = new Machine({ name: 'm38', ramPerNode: 4 * MiB, cmaSize: 0, hugepages: 'off', emitWarnings: false }); });
  afterEach(() => m.destroy());

  it('get_page/put_page count references; the last put frees; __free_pages drops only its own', () => {
    const before = freePages();
    const p = m.alloc_pages_node(NUMA_NO_NODE, GFP_KERNEL, 1)!;
    assert.equal(page_ref_count(p), 1);
    get_page(p);
    get_page(p);
    assert.equal(page_ref_count(p), 3);
    m.__free_pages(p, 1);
    assert.equal(page_ref_count(p), 2, '__free_pages with other references only drops its own');
    assert.equal(before - freePages(), 2, 'still allocated');
    put_page(p);
    assert.equal(before - freePages(), 2);
    put_page(p);
    assert.equal(page_ref_count(p), 0);
    assert.equal(freePages(), before, 'the last reference freed both pages');
    assert.throws(() => put_page(p), /kernel BUG.*put_page.*no reference/);
    assert.throws(() => get_page(p), /kernel BUG.*get_page/);
    assert.throws(() => get_page({} as never), TypeError);
  });

  it('page_frag_alloc carves a 32 KiB compound page front to back; the page goes with the last fragment', () => {
    const before = freePages();
    const nc = new PageFragCache();
    const a = page_frag_alloc(nc, 1000, GFP_KERNEL, m)!;
    const b = page_frag_alloc(nc, 1000, GFP_KERNEL, m)!;
    const c = page_frag_alloc_align(nc, 100, GFP_KERNEL, 256, m)!;
    assert.equal(b - a, 1000);
    assert.equal(c - a, 2048, 'aligned up to 256 from offset 2000');
    const head = nc.page!;
    assert.equal(m.page_address(head), a);
    assert.equal(head.allocOrder, 3);
    assert.equal(page_ref_count(head), 1 + PAGE_FRAG_CACHE_MAX_SIZE, 'the cache holds a bias; three fragments gave theirs');
    assert.equal(before - freePages(), 8);
    // Fill the rest of the page, then one more: the cache moves to a new page.
    const more: number[] = [];
    for (let i = 0; i < 31; i++) more.push(page_frag_alloc(nc, 1000, GFP_KERNEL, m)!); // 2148 + 30 * 1000 fit in 32768; the 31st does not
    assert.notEqual(nc.page, head, 'a fragment that did not fit took a new page');
    assert.equal(before - freePages(), 16);
    const onHead = [a, b, c, ...more].filter((x) => m.virt_to_page(x).pfn - head.pfn < 8);
    for (const x of onHead) page_frag_free(x);
    assert.equal(before - freePages(), 8, 'the first page went with its last fragment');
    for (const x of more.filter((y) => !onHead.includes(y))) page_frag_free(x);
    assert.equal(before - freePages(), 8, 'the cache still holds its page');
    page_frag_cache_drain(nc);
    assert.equal(freePages(), before, 'drained: nothing left');
    assert.equal(page_frag_alloc(new PageFragCache(), PAGE_SIZE + 1 + PAGE_FRAG_CACHE_MAX_SIZE, GFP_KERNEL, m), null, 'larger than the cache page');
    assert.throws(() => page_frag_alloc_align(nc, 10, GFP_KERNEL, 3, m), RangeError);
    assert.throws(() => page_frag_alloc({} as PageFragCache, 10, GFP_KERNEL, m), TypeError);
  });

  it('a page whose fragments were all freed is reused from the start', () => {
    const nc = new PageFragCache();
    const first = Array.from({ length: 32 }, () => page_frag_alloc(nc, 1024, GFP_KERNEL, m)!);
    const head = nc.page!;
    for (const x of first) page_frag_free(x);
    const again = page_frag_alloc(nc, 1024, GFP_KERNEL, m)!;
    assert.equal(nc.page, head, 'the same page');
    assert.equal(again, m.page_address(head), 'from offset 0');
    page_frag_free(again);
    page_frag_cache_drain(nc);
  });

  // drivers/net/ethernet/intel/e1000/e1000_main.c, e1000_alloc_rx_buffers for the frag path: each
  // ring slot gets a netdev_alloc_frag buffer, mapped DMA_FROM_DEVICE; the device writes a frame
  // into it; the driver unmaps and (here) frees the fragment instead of building an skb.
  it('e1000 RX refill on netdev_alloc_frag: the device fills every slot at its handle', () => {
    const before = freePages();
    const dev = m.createDevice({ name: 'e1000', iommu: true });
    const RING = 64;
    const BUFSZ = 2048 + 64;
    const ring: { data: number; dma: bigint }[] = [];
    for (let i = 0; i < RING; i++) {
      const data = netdev_alloc_frag(BUFSZ, m)!;
      assert.notEqual(data, null);
      const dma = dma_map_single(dev, data, 2048, DMA_FROM_DEVICE);
      assert.equal(dma_mapping_error(dev, dma), 0);
      ring.push({ data, dma });
    }
    const bus = busMaster(dev);
    const frame = new Uint8Array(1514);
    ring.forEach((slot, i) => {
      frame.fill(i);
      assert.equal(bus.write(slot.dma, frame), MEMTX_OK);
    });
    ring.forEach((slot, i) => {
      dma_unmap_single(dev, slot.dma, 2048, DMA_FROM_DEVICE);
      assert.equal(m.view(slot.data + 1513, 1)[0], i, `slot ${i} holds its frame`);
      page_frag_free(slot.data);
    });
    dev.destroy();
    m.destroy();
    m = new Machine({ name: 'm38b', ramPerNode: 4 * MiB, cmaSize: 0, hugepages: 'off', emitWarnings: false });
    void before;
  });
});
