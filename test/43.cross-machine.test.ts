// Issue 8, item 4: objects carry their machine. Two machines with the same layout (so their PFNs
// coincide): a page, VMA, scatterlist, CPU address or CMA page of one handed to a function of the
// other is a TypeError naming both machines, and neither machine changes (the case: a page
// of A mapped through a device of B returned an IOVA that mapped B's unrelated page).

import assert from 'node:assert/strict';
import * as d from '../lib/index';
import { expectNoLeaks } from './helpers/leaks';

const MiB = 1024 * 1024;
const PAGE = 4096;
const opts = (name: string): d.MachineOptions => ({ name, ramPerNode: 4 * MiB, cmaSize: 4 * MiB, hugepages: 'off', emitWarnings: false });

describe('43 cross-machine objects are refused', () => {
  expectNoLeaks();

  describe('machines A and B', () => {
    let A: d.Machine;
    let B: d.Machine;
    let devB: d.Device;
    let ddevB: d.Device;
    let pageA: d.Page;
    let pageB: d.Page;
    let cmaPageA: d.Page;
    let vmaA: d.VmArea;
    let vmaB: d.VmArea;
    let sgtA: d.SgTable;
    let vaddrA: number;

    before(() => {
      A = new d.Machine(opts('A'));
      B = new d.Machine(opts('B'));
      devB = B.createDevice({ name: 'iommuB', iommu: true, debug: true });
      ddevB = B.createDevice({ name: 'directB', debug: true });
      pageA = A.alloc_pages(d.GFP_KERNEL, 0)!;
      pageB = B.alloc_pages(d.GFP_KERNEL, 0)!;
      assert.equal(pageA.pfn, pageB.pfn, 'same layout: the PFNs coincide, which is what made the silent corruption possible');
      cmaPageA = d.cma_alloc(A.dma_contiguous_default_area, 1, 0, false)!;
      vmaA = A.createVma(PAGE);
      vmaB = B.createVma(PAGE);
      sgtA = new d.SgTable();
      assert.equal(d.sg_alloc_table(sgtA, 1, d.GFP_KERNEL), 0);
      d.sg_set_page(sgtA.sgl!, pageA, PAGE, 0);
      vaddrA = A.vmalloc(PAGE)!;
    });

    after(() => {
      A.vfree(vaddrA);
      vmaA.unmap();
      vmaB.unmap();
      d.cma_release(A.dma_contiguous_default_area, cmaPageA, 1);
      A.__free_pages(pageA, 0);
      B.__free_pages(pageB, 0);
      devB.destroy();
      ddevB.destroy();
      A.destroy();
      B.destroy();
    });

    function state(): unknown {
      return {
        A: A.stats(), B: B.stats(), iommu: devB.iommu!.stats(),
        debug: [devB.debug.activeEntries(), ddevB.debug.activeEntries()],
        vmas: [vmaA.mappedPages(), vmaB.mappedPages(), vmaB.vm_page_prot, vmaB.vm_flags],
        warnings: [A.warnings.length, B.warnings.length],
      };
    }

    const both = /machine 'A', not to machine 'B'/;
    const cases: [string, () => unknown, RegExp][] = [
      ["dma_map_page: a page of A through an IOMMU device of B (the issue's case)", () => d.dma_map_page(devB, pageA, 0, PAGE, d.DMA_TO_DEVICE), both],
      ['dma_map_page_attrs: a page of A through a direct device of B', () => d.dma_map_page_attrs(ddevB, pageA, 0, PAGE, d.DMA_TO_DEVICE, 0), both],
      ['dma_free_pages: a page of A freed through B', () => d.dma_free_pages(devB, PAGE, pageA, 0x1000n, d.DMA_TO_DEVICE), both],
      ['dma_common_free_pages: a page of A', () => d.dma_common_free_pages(devB, PAGE, pageA, 0x1000n, d.DMA_TO_DEVICE), both],
      ['dma_free_contiguous: a page of A', () => d.dma_free_contiguous(ddevB, pageA, PAGE), both],
      ['dma_free_contiguous: a CMA page of A', () => d.dma_free_contiguous(ddevB, cmaPageA, PAGE), both],
      ['dma_mmap_pages: a VMA of A', () => d.dma_mmap_pages(ddevB, vmaA, PAGE, pageB), /vma belongs to machine 'A', not to machine 'B'/],
      ['dma_mmap_pages: a page of A into a VMA of B', () => d.dma_mmap_pages(ddevB, vmaB, PAGE, pageA), both],
      ['dma_common_mmap: a linear address of A', () => d.dma_common_mmap(ddevB, vmaB, A.page_address(pageA), 0n, PAGE, 0), both],
      ['dma_common_mmap: a vmalloc address of A', () => d.dma_common_mmap(ddevB, vmaB, vaddrA, 0n, PAGE, 0), both],
      ['dma_mmap_attrs: a VMA of A', () => d.dma_mmap_attrs(ddevB, vmaA, B.page_address(pageB), 0n, PAGE, 0), both],
      ['dma_common_get_sgtable: a CPU address of A', () => d.dma_common_get_sgtable(ddevB, new d.SgTable(), A.page_address(pageA), 0n, PAGE, 0), both],
      ['dma_map_single: a linear address of A', () => d.dma_map_single(devB, A.page_address(pageA), PAGE, d.DMA_TO_DEVICE), both],
      ['dma_free_noncoherent: an address of A', () => d.dma_free_noncoherent(devB, PAGE, A.page_address(pageA), 0x1000n, d.DMA_TO_DEVICE), both],
      ['dma_map_sg: a scatterlist holding a page of A', () => d.dma_map_sg(devB, sgtA.sgl, 1, d.DMA_TO_DEVICE), both],
      ['dma_map_sgtable: a table of pages of A', () => d.dma_map_sgtable(ddevB, sgtA, d.DMA_TO_DEVICE, 0), both],
      ['dma_sync_sgtable_for_cpu: a table of pages of A', () => d.dma_sync_sgtable_for_cpu(devB, sgtA, d.DMA_FROM_DEVICE), both],
      ['dma_unmap_sgtable: a table of pages of A', () => d.dma_unmap_sgtable(devB, sgtA, d.DMA_TO_DEVICE, 0), both],
      ['B.__free_pages: a page of A (would raise B above its size and leak in A)', () => B.__free_pages(pageA, 0), both],
      ['B.page_address: a page of A', () => B.page_address(pageA), both],
      ['B.vmap: a page of A', () => B.vmap([pageA], 1), both],
      ['vmap: pages of A and B mixed', () => d.vmap([pageB, pageA], 2), /pages\[1\] belongs to machine 'A', not to machine 'B'/],
      ["cma_release: A's CMA page into B's area (same PFN)", () => d.cma_release(B.dma_contiguous_default_area, cmaPageA, 1), both],
      ["cma_pages_valid: A's CMA page against B's area", () => d.cma_pages_valid(B.dma_contiguous_default_area, cmaPageA, 1), both],
      ['sg_alloc_table_from_pages: pages of two machines', () => d.sg_alloc_table_from_pages(new d.SgTable(), [pageB, pageA], 2, 0, 2 * PAGE, d.GFP_KERNEL), /pages\[1\] belongs to machine 'A', not to machine 'B'/],
    ];

    for (const [label, call, message] of cases) {
      it(`${label}: TypeError naming both machines, nothing changed`, () => {
        const before = state();
        assert.throws(call, (err: unknown) => {
          assert.ok(err instanceof TypeError, String(err));
          assert.match(err.message, message);
          return true;
        });
        assert.deepEqual(state(), before);
      });
    }

    it('the same objects on their own machine work (the checks refuse only the foreign ones)', () => {
      const hB = d.dma_map_page(devB, pageB, 0, PAGE, d.DMA_TO_DEVICE);
      assert.equal(d.dma_mapping_error(devB, hB), 0);
      assert.equal(d.iommu_iova_to_phys(devB, hB), pageB.phys);
      d.dma_unmap_page(devB, hB, PAGE, d.DMA_TO_DEVICE);
      assert.equal(d.cma_pages_valid(A.dma_contiguous_default_area, cmaPageA, 1), true);
    });
  });

  it('two machines of the same name are still told apart', () => {
    const m1 = new d.Machine(opts('twin'));
    const m2 = new d.Machine(opts('twin'));
    try {
      const p = m1.alloc_pages(d.GFP_KERNEL, 0)!;
      const free2 = m2.stats().nodes[0]!.freePages;
      assert.throws(() => m2.__free_pages(p, 0), /belongs to machine 'twin' \(another machine of the same name\), not to machine 'twin'/);
      assert.equal(m2.stats().nodes[0]!.freePages, free2);
      m1.__free_pages(p, 0);
    } finally {
      m1.destroy();
      m2.destroy();
    }
  });
});
