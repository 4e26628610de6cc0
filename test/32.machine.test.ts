// Machine: segments and backing, the linear map, struct page identity, the page allocator on real
// memory, NUMA nodes, RAM above 4 GiB, the default machine, and teardown.

import assert from 'node:assert/strict';
import { Machine } from '../lib/mm/machine';
import { defaultMachine, destroyDefaultMachine } from '../lib/mm/default';
import { GFP_DMA32, GFP_KERNEL, NUMA_NO_NODE, PAGE_SIZE, __GFP_NOWARN, __GFP_THISNODE, __GFP_ZERO } from '../lib/mm/gfp';
import { page_address, page_to_phys, virt_to_page, virt_to_phys } from '../lib/mm/kernel';
import { cma_alloc, cma_release } from '../lib/mm/cma';
import { remap_pfn_range } from '../lib/mm/vma';
import { expectNoLeaks, fdCount, hostPfnsVisible, hugepagesFree, memfdMappingCount as mappingCount, requireHugepagesOrSkip as needHugepages } from './helpers/leaks';

const MiB = 1024 * 1024;

describe('32 machine: the kernel memory model over real memory', () => {
  expectNoLeaks();

  describe('one node', () => {
    let m: Machine;
    before(() => { m = new Machine({ name: 'm32', ramPerNode: 8 * MiB, cmaSize: 4 * MiB, hugepages: 'off', emitWarnings: false }); });
    after(() => m.destroy());

    it('lays segments out in PFN order from physBase, with the backing and its reason', () => {
      const s = m.stats();
      assert.equal(s.segments.length, 2);
      assert.equal(s.segments[0]!.physStart, 1n << 30n);
      assert.equal(s.segments[0]!.kind, 'ram');
      assert.equal(s.segments[1]!.kind, 'cma');
      assert.ok(s.segments[1]!.startPfn >= s.segments[0]!.startPfn + s.segments[0]!.pages);
      for (const seg of s.segments) {
        assert.equal(seg.backing, '4k');
        assert.match(seg.reason, /off/);
      }
      assert.equal(s.nodes[0]!.totalPages, 2048);
      assert.deepEqual(s.nodes[0]!.buddyinfo, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    });

    it('pfn_to_page returns the same object every time; the linear map is arithmetic', () => {
      const page = m.alloc_pages_node(0, GFP_KERNEL, 0)!;
      assert.equal(m.pfn_to_page(page.pfn), page);
      const addr = m.page_address(page);
      assert.equal(page_address(page), addr);
      assert.equal(m.virt_to_page(addr + 123), page);
      assert.equal(virt_to_page(addr), page);
      assert.equal(virt_to_phys(addr), page_to_phys(page));
      assert.equal(m.phys_to_virt(page_to_phys(page) + 5n), addr + 5);
      assert.equal(addr % PAGE_SIZE, 0);
      m.__free_pages(page, 0);
    });

    it('pages are real memory: bytes written through a view are the bytes at the page address', () => {
      const page = m.alloc_pages_node(NUMA_NO_NODE, GFP_KERNEL | __GFP_ZERO, 1)!;
      const v = m.view(m.page_address(page), 2 * PAGE_SIZE);
      assert.equal(v.length, 8192);
      assert.ok(v.every((b) => b === 0), '__GFP_ZERO zeroes');
      v.fill(0xab);
      const again = m.view(m.page_address(page) + 4096, 16);
      assert.ok(again.every((b) => b === 0xab));
      // Host physical frames come from /proc/self/pagemap; as root they are visible.
      const host = m.hostPhysAddr(page);
      if (host !== null) assert.ok(host > 0n);
      m.__free_pages(page, 1);
    });

    it('an order-n block is 2^n aligned in PFN; order > MAX_PAGE_ORDER is null with a WARN', () => {
      for (let order = 0; order <= 10; order++) {
        const p = m.alloc_pages_node(0, GFP_KERNEL, order)!;
        assert.equal(p.pfn % (1 << order), 0, `order ${order}`);
        m.__free_pages(p, order);
      }
      const warns = m.warnings.length;
      assert.equal(m.alloc_pages_node(0, GFP_KERNEL, 11), null);
      assert.equal(m.warnings.length, warns + 1);
      assert.match(m.warnings.at(-1)!.message, /order 11/);
      assert.equal(m.alloc_pages_node(0, GFP_KERNEL | __GFP_NOWARN, 11), null);
      assert.equal(m.warnings.length, warns + 1, '__GFP_NOWARN suppresses the WARN');
    });

    it('allocating everything then freeing everything gives back maximal blocks', () => {
      const pages = [];
      for (;;) {
        const p = m.alloc_pages_node(0, GFP_KERNEL, 0);
        if (p === null) break;
        pages.push(p);
      }
      assert.equal(pages.length, 2048);
      assert.equal(m.stats().nodes[0]!.freePages, 0);
      for (const p of pages) m.__free_pages(p, 0);
      assert.equal(m.stats().nodes[0]!.freePages, 2048);
      m.drain_all_pages();
      assert.deepEqual(m.stats().nodes[0]!.buddyinfo, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    });

    it('view() refuses ranges that are not mapped or leave their segment', () => {
      const seg = m.segments[0]!;
      assert.throws(() => m.view(seg.address + seg.byteLength - 8, 16), RangeError);
      assert.throws(() => m.view(12345, 4), RangeError);
      assert.throws(() => m.view(seg.address, -1), RangeError);
    });

    it('a view never leaves its allocation; read() copies any mapped memory', () => {
      const block = m.alloc_pages_node(0, GFP_KERNEL, 1)!;
      const addr = m.page_address(block);
      assert.equal(m.view(addr, 2 * PAGE_SIZE).length, 2 * PAGE_SIZE, 'the whole order-1 block');
      assert.throws(() => m.view(addr, 2 * PAGE_SIZE + 1), /leaves its allocation/);
      m.view(addr, 8).fill(0x3c);
      m.__free_pages(block, 1);
      assert.throws(() => m.view(addr, 1), /leaves its allocation/, 'freed memory');
      assert.equal(m.read(addr, 8).toString('hex'), '3c'.repeat(8), 'a copy of freed memory is fine');
      const cma = m.dma_contiguous_default_area!;
      const p = cma_alloc(cma, 2, 0, false)!;
      assert.equal(m.view(m.page_address(p), 2 * PAGE_SIZE).length, 2 * PAGE_SIZE);
      assert.throws(() => m.view(m.page_address(p), 3 * PAGE_SIZE), /not handed out/);
      cma_release(cma, p, 2);
      assert.throws(() => m.read(12345, 1), RangeError);
    });

    it('cma_alloc hands out pages of the CMA segment, 2^align aligned, and cma_release takes them back', () => {
      const cma = m.dma_contiguous_default_area!;
      const p = cma_alloc(cma, 3, 2, false)!;
      assert.equal(p.pfn % 4, 0);
      assert.equal(m.segmentOfPfn(p.pfn)!.kind, 'cma');
      m.view(m.page_address(p), 3 * PAGE_SIZE).fill(1);
      assert.equal(cma_release(cma, p, 3), true);
      assert.equal(cma.available, cma.count);
    });

    it('bad options are RangeErrors before anything is mapped', () => {
      const maps = mappingCount();
      assert.throws(() => new Machine({ ramPerNode: 3 * MiB }), RangeError);
      assert.throws(() => new Machine({ nodes: 0 }), RangeError);
      assert.throws(() => new Machine({ physBase: 4096 }), RangeError);
      assert.equal(mappingCount(), maps);
    });
  });

  describe('two nodes', () => {
    let m: Machine;
    before(() => { m = new Machine({ name: 'numa', nodes: 2, ramPerNode: 4 * MiB, cmaSize: 0, emitWarnings: false }); });
    after(() => m.destroy());

    it('allocates on the preferred node, falls back to the other unless __GFP_THISNODE', () => {
      const on1 = m.alloc_pages_node(1, GFP_KERNEL, 0)!;
      assert.equal(on1.nid, 1);
      const held = [];
      for (;;) {
        const p = m.alloc_pages_node(0, GFP_KERNEL | __GFP_THISNODE, 0);
        if (p === null) break;
        assert.equal(p.nid, 0);
        held.push(p);
      }
      assert.equal(held.length, 1024);
      const spilled = m.alloc_pages_node(0, GFP_KERNEL, 0)!;
      assert.equal(spilled.nid, 1, 'node 0 full: the allocation spills to node 1');
      for (const p of [...held, on1, spilled]) m.__free_pages(p, 0);
      assert.equal(m.stats().nodes[0]!.freePages, 1024);
      assert.equal(m.stats().nodes[1]!.freePages, 1024);
    });

    it('NUMA_NO_NODE means the current CPU node', () => {
      m.currentNode = 1;
      const p = m.alloc_pages_node(NUMA_NO_NODE, GFP_KERNEL, 0)!;
      assert.equal(p.nid, 1);
      m.__free_pages(p, 0);
      m.currentNode = 0;
    });
  });

  describe('zones below 4 GiB', () => {
    it('GFP_DMA32 takes memory below 4 GiB from another node when the preferred one has none', () => {
      // Node 0 is [4 GiB - 4 MiB, 4 GiB), node 1 is [4 GiB, 4 GiB + 4 MiB).
      const m = new Machine({ name: 'zones', nodes: 2, physBase: 2 ** 32 - 4 * MiB, ramPerNode: 4 * MiB, cmaSize: 0, emitWarnings: false });
      try {
        const p = m.alloc_pages_node(1, GFP_KERNEL | GFP_DMA32, 3)!;
        assert.equal(p.nid, 0);
        assert.ok(page_to_phys(p) + 8n * 4096n <= 1n << 32n);
        assert.equal(m.alloc_pages_node(1, GFP_KERNEL | GFP_DMA32 | __GFP_THISNODE, 0), null, 'node 1 has nothing below 4 GiB');
        assert.equal(m.stats().nodes[1]!.freePages, 1024, 'nothing was taken from node 1');
        m.__free_pages(p, 3);
      } finally {
        m.destroy();
      }
    });

    it('a nid outside 0..MAX_NUMNODES-1 is a kernel BUG (VM_BUG_ON)', () => {
      const m = new Machine({ name: 'bug', ramPerNode: 2 * MiB, cmaSize: 0, emitWarnings: false });
      try {
        assert.throws(() => m.alloc_pages_node(4096, GFP_KERNEL, 0), /^Error: kernel BUG.*VM_BUG_ON/);
      } finally {
        m.destroy();
      }
    });
  });

  describe('RAM above 4 GiB', () => {
    it('places RAM at physBase and GFP_DMA32 finds nothing below 4 GiB', () => {
      const m = new Machine({ name: 'high', physBase: 2 ** 32, ramPerNode: 4 * MiB, cmaSize: 0, emitWarnings: false });
      try {
        const p = m.alloc_pages_node(0, GFP_KERNEL, 0)!;
        assert.ok(page_to_phys(p) >= 1n << 32n);
        assert.equal(m.alloc_pages_node(0, GFP_KERNEL | GFP_DMA32, 0), null);
        assert.equal(m.stats().nodes[0]!.freePages, 1023, 'the refused page went back');
        m.__free_pages(p, 0);
      } finally {
        m.destroy();
      }
    });
  });

  describe('hugetlb-backed CMA', () => {
    it('uses 2 MiB hugetlb pages when the pool has room: each huge page is host-contiguous', function () {
      needHugepages(this, 2);
      const m = new Machine({ name: 'huge', ramPerNode: 2 * MiB, cmaSize: 4 * MiB, hugepages: 'require', emitWarnings: false });
      try {
        const cma = m.stats().segments[1]!;
        assert.equal(cma.backing, 'hugetlb-2M');
        const p = cma_alloc(m.dma_contiguous_default_area!, 512, 9, false)!;
        assert.equal(m.isHostContiguous(p, 512), hostPfnsVisible() ? true : null, 'contiguous, or null (unknown) when PFNs are hidden');
        cma_release(m.dma_contiguous_default_area!, p, 512);
      } finally {
        m.destroy();
      }
    });

    it("falls back to 4 KiB pages and says why when the pool is exhausted ('auto')", function () {
      this.timeout(120000);
      const free = hugepagesFree();
      // Exhaust the pool for real with a machine that takes every free huge page, if any.
      const hog = free > 0 ? new Machine({ name: 'hog', ramPerNode: 2 * MiB, cmaSize: free * 2 * MiB, hugepages: 'require', emitWarnings: false }) : null;
      try {
        assert.equal(hugepagesFree(), 0);
        const m = new Machine({ name: 'fallback', ramPerNode: 2 * MiB, cmaSize: 4 * MiB, hugepages: 'auto', emitWarnings: false });
        try {
          const cma = m.stats().segments[1]!;
          assert.notEqual(cma.backing, 'hugetlb-2M');
          assert.match(cma.reason, /hugetlb|pool|huge/i);
        } finally {
          m.destroy();
        }
        assert.throws(
          () => new Machine({ name: 'req', ramPerNode: 2 * MiB, cmaSize: 4 * MiB, hugepages: 'require', emitWarnings: false }),
          (err: NodeJS.ErrnoException) => err.code === 'ENOMEM' && /nr_hugepages/.test(err.message),
        );
      } finally {
        hog?.destroy();
      }
      assert.equal(hugepagesFree(), free, 'the pool is given back');
    });
  });

  describe('default machine and teardown', () => {
    it('defaultMachine() is created once and reused', () => {
      const a = defaultMachine();
      assert.equal(defaultMachine(), a);
      assert.ok(a.stats().nodes[0]!.totalPages > 0);
      destroyDefaultMachine();
      assert.equal(a.isDestroyed, true);
    });

    it('destroy() unmaps everything, closes every fd, detaches views, and is idempotent', () => {
      const maps = mappingCount();
      const fds = fdCount();
      const m = new Machine({ name: 'gone', ramPerNode: 4 * MiB, cmaSize: 2 * MiB, emitWarnings: false });
      const p = m.alloc_pages_node(0, GFP_KERNEL, 0)!;
      const v = m.view(m.page_address(p), 64);
      const vmalloced = m.vmalloc(3 * PAGE_SIZE)!;
      const vv = m.view(vmalloced, 64);
      const vma = m.createVma(PAGE_SIZE);
      assert.equal(remap_pfn_range(vma, vma.vm_start, p.pfn, PAGE_SIZE, vma.vm_page_prot), 0);
      const uv = vma.view();
      assert.ok(mappingCount() > maps);
      m.destroy();
      m.destroy();
      assert.equal(v.length, 0, 'a stale view has length 0');
      assert.equal(v[0], undefined);
      assert.equal(vv.length, 0, 'a stale vmalloc view has length 0');
      assert.equal(uv.length, 0, 'a stale VMA view has length 0');
      assert.equal(vma.isUnmapped, true);
      assert.equal(mappingCount(), maps);
      assert.equal(fdCount(), fds);
      assert.throws(() => m.alloc_pages_node(0, GFP_KERNEL, 0), { code: 'ERR_DMAMEM_DESTROYED' });
    });
  });
});
