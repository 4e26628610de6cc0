// Issue 8, item 5: one validation layer. A table of misuse cases per public function of lib/dma and
// the kernel-named lib/mm entry points; each must throw the stated error and leave everything as it
// was (allocator counts, machine.stats(), IOMMU counters, DMA-API debug entries, warnings, fds and
// memfd mappings): "before any side effect". Also the kernel's return codes that replace
// crashes (offline node, absurd sg table) and the short print of an uncaught DmaDebugError.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import * as d from '../lib/index';
import { liveMachines } from '../lib/mm/registry';
import { expectNoLeaks, fdCount, memfdMappingCount } from './helpers/leaks';

const MiB = 1024 * 1024;
const PAGE = 4096;
/** Casts a misuse value past the type checker, as a JS caller would pass it. */
const bad = <T>(v: unknown): T => v as T;

type Matcher = RegExp | { name: string; message: RegExp; code?: string };
type Case = [label: string, call: () => unknown, expected: Matcher];

describe('42 validation: misuse is refused before any side effect', () => {
  expectNoLeaks();

  describe('on one machine', () => {
    let m: d.Machine;
    let dev: d.Device;
    let ddev: d.Device;
    let dead: d.Device;
    let page: d.Page;
    let cpu: number;
    let vma: d.VmArea;
    let sgt: d.SgTable;
    let handle: bigint;

    before(() => {
      m = new d.Machine({ name: 'val42', ramPerNode: 8 * MiB, cmaSize: 8 * MiB, hugepages: 'off', emitWarnings: false });
      dev = m.createDevice({ name: 'iommu42', iommu: true, debug: true });
      ddev = m.createDevice({ name: 'direct42', debug: true });
      dead = m.createDevice({ name: 'dead42' });
      dead.destroy();
      page = m.alloc_pages(d.GFP_KERNEL, 0)!;
      cpu = m.page_address(page);
      vma = m.createVma(PAGE);
      sgt = new d.SgTable();
      assert.equal(d.sg_alloc_table(sgt, 1, d.GFP_KERNEL), 0);
      d.sg_set_page(sgt.sgl!, page, PAGE, 0);
      handle = d.dma_map_page(dev, page, 0, PAGE, d.DMA_TO_DEVICE);
      assert.equal(d.dma_mapping_error(dev, handle), 0);
    });

    after(() => {
      d.dma_unmap_page(dev, handle, PAGE, d.DMA_TO_DEVICE);
      vma.unmap();
      m.__free_pages(page, 0);
      dev.destroy();
      ddev.destroy();
      m.destroy();
    });

    /** Everything a misuse could change. */
    function state(): unknown {
      return {
        stats: m.stats(),
        iommu: dev.iommu!.stats(),
        debug: [dev.debug.activeEntries(), ddev.debug.activeEntries(), dev.debug.reports.length, ddev.debug.reports.length],
        warnings: m.warnings.length,
        counters: { ...m.counters },
        fds: fdCount(),
        memfdMaps: memfdMappingCount(),
        vma: [vma.vm_start, vma.vm_flags, vma.vm_page_prot, vma.mappedPages()],
        sgt: [sgt.nents, sgt.orig_nents, sgt.sgl?.length],
        devMask: [dev.dma_mask, dev.coherent_dma_mask],
        // The kernel-named functions without a machine argument must not create the default machine.
        machines: liveMachines().length,
      };
    }

    const h = (): { value: bigint } => ({ value: 0n });
    const TE = (message: RegExp): Matcher => ({ name: 'TypeError', message });
    const RE = (message: RegExp): Matcher => ({ name: 'RangeError', message });
    const BUG = /^kernel BUG/;
    const notDevice = TE(/Expected a Device/);

    const cases: Case[] = [
      // devices
      ['dma_alloc_pages(null device)', () => d.dma_alloc_pages(bad(null), PAGE, h(), d.DMA_TO_DEVICE, d.GFP_KERNEL), notDevice],
      ['dma_alloc_pages({} device)', () => d.dma_alloc_pages(bad({}), PAGE, h(), d.DMA_TO_DEVICE, d.GFP_KERNEL), notDevice],
      ['dma_alloc_pages(destroyed device)', () => d.dma_alloc_pages(dead, PAGE, h(), d.DMA_TO_DEVICE, d.GFP_KERNEL), { name: 'TypeError', message: /destroyed/, code: 'ERR_DMAMEM_DESTROYED' }],
      ['dma_alloc_coherent(destroyed device)', () => d.dma_alloc_coherent(dead, PAGE, h(), d.GFP_KERNEL), TE(/destroyed/)],
      ['dma_map_page(destroyed device)', () => d.dma_map_page(dead, page, 0, PAGE, d.DMA_TO_DEVICE), TE(/destroyed/)],
      ['dma_map_sg(null device)', () => d.dma_map_sg(bad(null), sgt.sgl, 1, d.DMA_TO_DEVICE), notDevice],
      ['dma_unmap_page({} device)', () => d.dma_unmap_page(bad({ name: 'x' }), 0n, PAGE, d.DMA_TO_DEVICE), notDevice],
      ['dma_get_mask({})', () => d.dma_get_mask(bad({})), notDevice],
      ['dma_max_mapping_size(null)', () => d.dma_max_mapping_size(bad(null)), notDevice],
      ['dma_set_mask(undefined device)', () => d.dma_set_mask(bad(undefined), 0xffffffffn), notDevice],
      ['dev_to_node(null)', () => d.dev_to_node(bad(null)), notDevice],
      ['set_dma_ops(dev, 5)', () => d.set_dma_ops(ddev, bad(5)), TE(/dma_map_ops/)],
      // sizes: numbers, not strings
      ["dma_alloc_pages(size '4096')", () => d.dma_alloc_pages(dev, bad('4096'), h(), d.DMA_TO_DEVICE, d.GFP_KERNEL), TE(/for size but received '4096' of type string/)],
      ['dma_alloc_pages(size -1)', () => d.dma_alloc_pages(dev, -1, h(), d.DMA_TO_DEVICE, d.GFP_KERNEL), RE(/for size/)],
      ["dma_map_page(size '4096')", () => d.dma_map_page(ddev, page, 0, bad('4096'), d.DMA_TO_DEVICE), TE(/for size/)],
      ['dma_map_page(offset -1)', () => d.dma_map_page(ddev, page, -1, PAGE, d.DMA_TO_DEVICE), RE(/for offset/)],
      ['dma_map_page(size 1.5)', () => d.dma_map_page(ddev, page, 0, 1.5, d.DMA_TO_DEVICE), RE(/for size/)],
      ["dma_map_page_attrs(attrs 'x')", () => d.dma_map_page_attrs(ddev, page, 0, PAGE, d.DMA_TO_DEVICE, bad('x')), TE(/for attrs/)],
      ["dma_alloc_attrs(size '1')", () => d.dma_alloc_attrs(ddev, bad('1'), h(), d.GFP_KERNEL, 0), TE(/for size/)],
      ['dma_map_sg(nents -1)', () => d.dma_map_sg(dev, sgt.sgl, -1, d.DMA_TO_DEVICE), RE(/for nents/)],
      ["dma_map_sg(nents '1')", () => d.dma_map_sg(dev, sgt.sgl, bad('1'), d.DMA_TO_DEVICE), TE(/for nents/)],
      ["dma_pgprot(prot '1')", () => d.dma_pgprot(ddev, bad('1'), 0), TE(/for prot/)],
      // bigints: a TypeError, never a SyntaxError out of BigInt()
      ["dma_unmap_page(handle '4096x')", () => d.dma_unmap_page(dev, bad('4096x'), PAGE, d.DMA_TO_DEVICE), TE(/Expected a bigint for addr/)],
      ['dma_unmap_page(handle function)', () => d.dma_unmap_page(dev, bad(() => 1), PAGE, d.DMA_TO_DEVICE), TE(/Expected a bigint/)],
      ['dma_unmap_page(handle object)', () => d.dma_unmap_page(dev, bad({}), PAGE, d.DMA_TO_DEVICE), TE(/Expected a bigint/)],
      ['dma_unmap_page(handle number)', () => d.dma_unmap_page(dev, bad(4096), PAGE, d.DMA_TO_DEVICE), TE(/Expected a bigint/)],
      ["dma_free_pages(handle '4096x')", () => d.dma_free_pages(dev, PAGE, page, bad('4096x'), d.DMA_TO_DEVICE), TE(/Expected a bigint for dma_handle/)],
      ["dma_set_mask('0xffff')", () => d.dma_set_mask(dev, bad('0xffff')), TE(/Expected a bigint for mask/)],
      ['dma_set_coherent_mask(32)', () => d.dma_set_coherent_mask(dev, bad(32)), TE(/Expected a bigint for mask/)],
      ["dma_mapping_error('x')", () => d.dma_mapping_error(dev, bad('x')), TE(/Expected a bigint/)],
      ['dma_map_resource(phys number)', () => d.dma_map_resource(ddev, bad(0x1000), PAGE, d.DMA_TO_DEVICE, 0), TE(/for phys_addr/)],
      ['dma_sync_single_for_cpu(handle number)', () => d.dma_sync_single_for_cpu(dev, bad(1), PAGE, d.DMA_FROM_DEVICE), TE(/Expected a bigint/)],
      ['dma_free_attrs(handle number)', () => d.dma_free_attrs(ddev, PAGE, cpu, bad(1), 0), TE(/Expected a bigint/)],
      ["iommu_iova_to_phys('x')", () => d.iommu_iova_to_phys(dev, bad('x')), TE(/Expected a bigint for iova/)],
      ['iommu_map(iova number)', () => d.iommu_map(dev.iommu!, bad(0x1000), page.phys, PAGE, d.IOMMU_READ), TE(/Expected a bigint for iova/)],
      ['iommu_unmap({} domain)', () => d.iommu_unmap(bad({}), 0x1000n, PAGE), TE(/IommuDomain/)],
      ['dma_declare_coherent_memory(phys number)', () => d.dma_declare_coherent_memory(ddev, bad(0), 0n, PAGE), TE(/for phys_addr/)],
      // boxes: checked before anything is allocated
      ['dma_alloc_pages(1 MiB, box 0n)', () => d.dma_alloc_pages(dev, 1 << 20, bad(0n), d.DMA_TO_DEVICE, d.GFP_KERNEL), TE(/\{ value \} box for dma_handle/)],
      ["dma_alloc_pages(direct device, 1 MiB, box 0n): the issue's leak of 256 CMA pages", () => d.dma_alloc_pages(ddev, 1 << 20, bad(0n), d.DMA_BIDIRECTIONAL, d.GFP_KERNEL), TE(/box/)],
      ['dma_alloc_pages(box null)', () => d.dma_alloc_pages(ddev, PAGE, bad(null), d.DMA_TO_DEVICE, d.GFP_KERNEL), TE(/box/)],
      ['dma_alloc_pages(frozen box)', () => d.dma_alloc_pages(dev, PAGE, Object.freeze({ value: 0n }), d.DMA_TO_DEVICE, d.GFP_KERNEL), TE(/box/)],
      ['dma_alloc_noncoherent(box 0n)', () => d.dma_alloc_noncoherent(dev, 1 << 20, bad(0n), d.DMA_TO_DEVICE, d.GFP_KERNEL), TE(/box/)],
      ['dma_alloc_coherent(box 5)', () => d.dma_alloc_coherent(dev, 1 << 20, bad(5), d.GFP_KERNEL), TE(/box/)],
      ['dma_common_alloc_pages(box 0n)', () => d.dma_common_alloc_pages(dev, 1 << 20, bad(0n), d.DMA_TO_DEVICE, d.GFP_KERNEL), TE(/box/)],
      // gfp
      ['dma_alloc_pages(gfp undefined)', () => d.dma_alloc_pages(dev, PAGE, h(), d.DMA_TO_DEVICE, bad(undefined)), TE(/gfp flags/)],
      ["dma_alloc_pages(gfp 'GFP_KERNEL')", () => d.dma_alloc_pages(dev, PAGE, h(), d.DMA_TO_DEVICE, bad('GFP_KERNEL')), TE(/gfp flags/)],
      ['dma_alloc_pages(gfp unknown bit 30)', () => d.dma_alloc_pages(dev, PAGE, h(), d.DMA_TO_DEVICE, d.GFP_KERNEL | 2 ** 30), TE(/unknown gfp bits/)],
      ['dma_alloc_coherent(gfp bit 9, the retired __GFP_ATOMIC)', () => d.dma_alloc_coherent(dev, PAGE, h(), d.GFP_KERNEL | (1 << 9)), TE(/unknown gfp bits 0x200/)],
      ['dma_alloc_contiguous(gfp undefined)', () => d.dma_alloc_contiguous(dev, 1 << 20, bad(undefined)), TE(/gfp/)],
      ["sg_alloc_table(gfp 'GFP_KERNEL')", () => d.sg_alloc_table(new d.SgTable(), 2, bad('GFP_KERNEL')), TE(/gfp/)],
      ['m.alloc_pages(gfp undefined)', () => m.alloc_pages(bad(undefined), 0), TE(/gfp/)],
      ["m.alloc_pages_node(gfp 'GFP_KERNEL')", () => m.alloc_pages_node(0, bad('GFP_KERNEL'), 0), TE(/gfp/)],
      ["m.alloc_pages(order '0')", () => m.alloc_pages(d.GFP_KERNEL, bad('0')), TE(/for order/)],
      ['cma_alloc_aligned(gfp null)', () => d.cma_alloc_aligned(m.dma_contiguous_default_area, PAGE, bad(null)), TE(/gfp/)],
      // directions: the kernel's BUG in every function
      ['dma_alloc_pages(dir 7)', () => d.dma_alloc_pages(dev, 1 << 20, h(), bad(7), d.GFP_KERNEL), BUG],
      ['dma_alloc_noncoherent(dir 7)', () => d.dma_alloc_noncoherent(ddev, 1 << 20, h(), bad(7), d.GFP_KERNEL), BUG],
      ['dma_free_pages(dir 7)', () => d.dma_free_pages(dev, PAGE, page, handle, bad(7)), BUG],
      ['dma_map_page(dir 7)', () => d.dma_map_page(dev, page, 0, PAGE, bad(7)), BUG],
      ['dma_map_page(dir DMA_NONE)', () => d.dma_map_page(dev, page, 0, PAGE, d.DMA_NONE), BUG],
      ["dma_map_page(dir '1')", () => d.dma_map_page(dev, page, 0, PAGE, bad('1')), BUG],
      ['dma_map_single(dir 7)', () => d.dma_map_single(ddev, cpu, PAGE, bad(7)), BUG],
      ['dma_unmap_page(dir 7)', () => d.dma_unmap_page(dev, handle, PAGE, bad(7)), BUG],
      ['dma_map_resource(dir 7)', () => d.dma_map_resource(dev, page.phys, PAGE, bad(7), 0), BUG],
      ['dma_unmap_resource(dir -1)', () => d.dma_unmap_resource(dev, handle, PAGE, bad(-1), 0), BUG],
      ['dma_map_sg(dir 7)', () => d.dma_map_sg(dev, sgt.sgl, 1, bad(7)), BUG],
      ['dma_map_sgtable(dir 7)', () => d.dma_map_sgtable(dev, sgt, bad(7), 0), BUG],
      ['dma_unmap_sg(dir 7)', () => d.dma_unmap_sg(dev, sgt.sgl, 1, bad(7)), BUG],
      ['dma_sync_single_for_cpu(dir 7)', () => d.dma_sync_single_for_cpu(dev, handle, PAGE, bad(7)), BUG],
      ['dma_sync_single_for_device(dir 7)', () => d.dma_sync_single_for_device(dev, handle, PAGE, bad(7)), BUG],
      ['dma_sync_sg_for_cpu(dir 7)', () => d.dma_sync_sg_for_cpu(dev, sgt.sgl, 1, bad(7)), BUG],
      ['dma_sync_sgtable_for_device(dir 7)', () => d.dma_sync_sgtable_for_device(dev, sgt, bad(7)), BUG],
      ['dma_common_alloc_pages(dir 7)', () => d.dma_common_alloc_pages(dev, 1 << 20, h(), bad(7), d.GFP_KERNEL), BUG],
      ['dma_common_free_pages(dir 7)', () => d.dma_common_free_pages(dev, PAGE, page, handle, bad(7)), BUG],
      // pages, VMAs, tables, addresses
      ['dma_map_page(page {})', () => d.dma_map_page(dev, bad({ pfn: 1 }), 0, PAGE, d.DMA_TO_DEVICE), TE(/struct page/)],
      ['dma_free_pages(page null)', () => d.dma_free_pages(dev, PAGE, bad(null), handle, d.DMA_TO_DEVICE), TE(/struct page/)],
      ['dma_mmap_pages(vma {})', () => d.dma_mmap_pages(dev, bad({}), PAGE, page), TE(/VMA/)],
      ["dma_mmap_attrs(cpu_addr 'x')", () => d.dma_mmap_attrs(ddev, vma, bad('x'), 0n, PAGE, 0), TE(/cpu_addr/)],
      ['dma_common_mmap(vma null)', () => d.dma_common_mmap(ddev, bad(null), cpu, 0n, PAGE, 0), TE(/VMA/)],
      ['dma_get_sgtable(sgt {})', () => d.dma_get_sgtable(ddev, bad({}), cpu, 0n, PAGE), TE(/SgTable/)],
      ["dma_common_get_sgtable(dma_addr 'x')", () => d.dma_common_get_sgtable(ddev, new d.SgTable(), cpu, bad('x'), PAGE, 0), TE(/bigint/)],
      ["dma_common_vaddr_to_page('x')", () => d.dma_common_vaddr_to_page(bad('x')), TE(/cpu_addr/)],
      ['dma_map_sg(sg {})', () => d.dma_map_sg(dev, bad({}), 1, d.DMA_TO_DEVICE), TE(/Scatterlist/)],
      ['dma_map_sgtable(sgt {})', () => d.dma_map_sgtable(dev, bad({ sgl: null, orig_nents: 0 }), d.DMA_TO_DEVICE, 0), TE(/SgTable/)],
      ['dma_sync_sgtable_for_cpu(sgt null)', () => d.dma_sync_sgtable_for_cpu(dev, bad(null), d.DMA_FROM_DEVICE), TE(/SgTable/)],
      // With DMA-API debug on, memory of no machine is the kernel's "invalid area" report (test 45).
      ['dma_map_single(ptr not memory), debug off', () => { ddev.debug.enabled = false; try { return d.dma_map_single(ddev, 0x1000, PAGE, d.DMA_TO_DEVICE); } finally { ddev.debug.enabled = true; } }, RE(/not a linear-map or vmalloc address/)],
      ['dma_free_contiguous(page {})', () => d.dma_free_contiguous(dev, bad({}), PAGE), TE(/struct page/)],
      // scatterlists
      ["sg_alloc_table(nents '3')", () => d.sg_alloc_table(new d.SgTable(), bad('3'), d.GFP_KERNEL), TE(/for nents/)],
      ['sg_alloc_table(table {})', () => d.sg_alloc_table(bad({}), 3, d.GFP_KERNEL), TE(/SgTable/)],
      ['sg_alloc_table(nents 2^32)', () => d.sg_alloc_table(new d.SgTable(), 2 ** 32, d.GFP_KERNEL), RE(/for nents/)],
      ['sg_alloc_table_from_pages(pages [page, {}])', () => d.sg_alloc_table_from_pages(new d.SgTable(), [page, bad({ pfn: 2 })], 2, 0, 2 * PAGE, d.GFP_KERNEL), TE(/pages\[1\]/)],
      ["sg_alloc_table_from_pages(size '1')", () => d.sg_alloc_table_from_pages(new d.SgTable(), [page], 1, 0, bad('1'), d.GFP_KERNEL), TE(/for size/)],
      ['sg_set_page(sg {})', () => d.sg_set_page(bad({}), page, PAGE, 0), TE(/Scatterlist/)],
      ['sg_set_page(page {})', () => d.sg_set_page(sgt.sgl!, bad({}), PAGE, 0), TE(/struct page/)],
      // option objects: unknown keys name the closest valid key
      ['new Machine({ ramPerNod })', () => new d.Machine(bad({ ramPerNod: 2 * MiB })), TE(/Unknown option 'ramPerNod' in MachineOptions: did you mean ramPerNode\?/)],
      ['new Machine({ hugepage })', () => new d.Machine(bad({ hugepage: 'off' })), TE(/did you mean hugepages\?/)],
      ["new Machine({ ramPerNode: '4194304' })", () => new d.Machine(bad({ ramPerNode: '4194304' })), TE(/ramPerNode/)],
      ["new Machine({ dmaDebug: 'yes' })", () => new d.Machine(bad({ dmaDebug: 'yes' })), TE(/dmaDebug/)],
      ["new Machine({ hugepages: 'always' })", () => new d.Machine(bad({ hugepages: 'always' })), TE(/hugepages/)],
      ['new Machine(5)', () => new d.Machine(bad(5)), TE(/MachineOptions/)],
      ['createDevice({ nmae })', () => m.createDevice(bad({ nmae: 'x' })), TE(/did you mean name\?/)],
      ['createDevice({ dmamask })', () => m.createDevice(bad({ dmamask: 32 })), TE(/did you mean dmaMask\?/)],
      ['createDevice({ iommu: { strcit } })', () => m.createDevice(bad({ iommu: { strcit: true } })), TE(/DeviceOptions.iommu: did you mean strict\?/)],
      ['createDevice({ cma: { size, hugepage } }) creates no CMA segment', () => m.createDevice(bad({ cma: { size: 2 * MiB, hugepage: 'off' } })), TE(/did you mean hugepages\?/)],
      ["createDevice({ dmaMask: '32' })", () => m.createDevice(bad({ dmaMask: '32' })), TE(/dmaMask/)],
      ['createDevice({ dmaMask: 65 })', () => m.createDevice({ dmaMask: 65 }), RE(/dmaMask/)],
      ['createDevice({ numaNode: 3 }) on a 1-node machine', () => m.createDevice({ numaNode: 3 }), RE(/numaNode/)],
      ['createDevice({ busOffset: 5 })', () => m.createDevice(bad({ busOffset: 5 })), TE(/bigint for busOffset/)],
      ['createVma({ pgof })', () => m.createVma(PAGE, bad({ pgof: 1 })), TE(/VmaOptions: did you mean pgoff\?/)],
      ["createVma('4096')", () => m.createVma(bad('4096')), TE(/for length/)],
      // kernel-named mm entry points
      ['m.__free_pages({})', () => m.__free_pages(bad({}), 0), TE(/struct page/)],
      ['__free_pages(null)', () => d.__free_pages(bad(null), 0), TE(/struct page/)],
      ['m.__free_pages(order 11)', () => m.__free_pages(page, 11), RE(/for order/)],
      ['page_to_pfn(null)', () => d.page_to_pfn(bad(null)), TE(/struct page/)],
      ["virt_to_page('x')", () => d.virt_to_page(bad('x')), TE(/for addr/)],
      ["cma_alloc(count '1')", () => d.cma_alloc(m.dma_contiguous_default_area, bad('1'), 0, false), TE(/for count/)],
      ['cma_alloc({} area)', () => d.cma_alloc(bad({ count: 5 }), 1, 0, false), TE(/CMA area/)],
      ["cma_alloc(noWarn 'no')", () => d.cma_alloc(m.dma_contiguous_default_area, 1, 0, bad('no')), TE(/noWarn/)],
      ['cma_release(page {})', () => d.cma_release(m.dma_contiguous_default_area, bad({ pfn: 1 }), 1), TE(/struct page/)],
      ['m.vmap([page, {}])', () => m.vmap([page, bad({})], 2), TE(/pages\[1\]/)],
      ["alloc_pages('GFP_KERNEL', 0) on the default machine", () => d.alloc_pages(bad('GFP_KERNEL'), 0), TE(/gfp/)],
      ["alloc_pages_node('0', ...)", () => d.alloc_pages_node(bad('0'), d.GFP_KERNEL, 0), TE(/for nid/)],
      ["vmalloc('4096') on the default machine", () => d.vmalloc(bad('4096')), TE(/for size/)],
      ['vzalloc(-1)', () => d.vzalloc(-1), RE(/for size/)],
      ["pfn_to_page('1')", () => d.pfn_to_page(bad('1')), TE(/for pfn/)],
      ['phys_to_virt(4096)', () => d.phys_to_virt(bad(4096)), TE(/bigint/)],
      ["m.virt_to_phys('x')", () => m.virt_to_phys(bad('x')), TE(/for addr/)],
      ["m.vmalloc('4096')", () => m.vmalloc(bad('4096')), TE(/for size/)],
      ['sg_next({})', () => d.sg_next(bad({})), TE(/Scatterlist/)],
      ['sg_phys(null)', () => d.sg_phys(bad(null)), TE(/Scatterlist/)],
      ['sg_dma_address(undefined)', () => d.sg_dma_address(bad(undefined)), TE(/Scatterlist/)],
      ["for_each_sg(sgl, '1', fn)", () => d.for_each_sg(sgt.sgl, bad('1'), () => undefined), TE(/for nents/)],
      ['for_each_sgtable_sg({})', () => d.for_each_sgtable_sg(bad({}), () => undefined), TE(/SgTable/)],
      ['sg_chain(prv, 5, sgl) past the chunk', () => d.sg_chain([sgt.sgl!], 5, sgt.sgl!), RE(/prv_nents/)],
      ['get_dma_ops(null)', () => d.get_dma_ops(bad(null)), notDevice],
      ['use_dma_iommu({})', () => d.use_dma_iommu(bad({})), notDevice],
      ['remap_pfn_range({} vma)', () => d.remap_pfn_range(bad({ machine: m }), 0, page.pfn, PAGE, d.PAGE_SHARED), TE(/VMA/)],
      ["remap_pfn_range(pfn '1')", () => d.remap_pfn_range(vma, vma.vm_start, bad(String(page.pfn)), PAGE, d.PAGE_SHARED), TE(/for pfn/)],
      ['remap_pfn_range(size -1)', () => d.remap_pfn_range(vma, vma.vm_start, page.pfn, -1, d.PAGE_SHARED), RE(/for size/)],
      ['m.cma_declare on node 5 of a 1-node machine (no segment made)', () => m.cma_declare('x42', 2 * MiB, 5), RE(/for nid/)],
      ["m.cma_declare(hugepages 'yes')", () => m.cma_declare('x42', 2 * MiB, 0, bad('yes')), TE(/hugepages/)],
      ["PAGE_ALIGN('4096')", () => d.PAGE_ALIGN(bad('4096')), TE(/size/)],
      ["get_order('x')", () => d.get_order(bad('x')), TE(/size/)],
    ];

    for (const [label, call, expected] of cases) {
      it(`${label}: ${expected instanceof RegExp ? 'kernel BUG' : expected.name}, nothing changed`, () => {
        const before = state();
        assert.throws(call, (err: unknown) => {
          assert.ok(err instanceof Error, `${String(err)} is an Error`);
          assert.ok(!(err instanceof SyntaxError), `no SyntaxError leaks: ${err.message}`);
          if (expected instanceof RegExp) {
            assert.equal(err.constructor, Error);
            assert.match(err.message, expected);
          } else {
            assert.equal(err.name, expected.name, err.message);
            assert.match(err.message, expected.message);
            if (expected.code !== undefined) assert.equal((err as { code?: string }).code, expected.code);
          }
          return true;
        });
        assert.deepEqual(state(), before);
      });
    }

    it('the messages follow "Expected X for Y but received Z of type T"', () => {
      assert.throws(() => d.dma_alloc_pages(dev, bad('4096'), h(), d.DMA_TO_DEVICE, d.GFP_KERNEL),
        { name: 'TypeError', message: "dma_alloc_pages: Expected a non-negative integer for size but received '4096' of type string" });
      assert.throws(() => d.dma_unmap_page(dev, bad('4096x'), PAGE, d.DMA_TO_DEVICE),
        { name: 'TypeError', message: "dma_unmap_page_attrs: Expected a bigint for addr but received '4096x' of type string" });
    });

    it('a destroyed device may still give back what it holds', () => {
      const dv = m.createDevice({ name: 'late42', iommu: true });
      const hb = { value: 0n };
      const p = d.dma_alloc_pages(dv, PAGE, hb, d.DMA_BIDIRECTIONAL, d.GFP_KERNEL);
      assert.ok(p !== null);
      dv.destroy();
      assert.throws(() => d.dma_alloc_pages(dv, PAGE, { value: 0n }, d.DMA_BIDIRECTIONAL, d.GFP_KERNEL), /destroyed/);
      d.dma_free_pages(dv, PAGE, p, hb.value, d.DMA_BIDIRECTIONAL);
      assert.equal(dv.iommu!.stats().mappedPages, 0);
    });

    it('alloc_pages_node on a node this machine does not have fails with null and a WARN, never node 0', () => {
      const free0 = m.stats().nodes[0]!.freePages;
      const warnings = m.warnings.length;
      assert.equal(m.alloc_pages_node(1, d.GFP_KERNEL, 0), null);
      assert.equal(m.alloc_pages_node(63, d.GFP_KERNEL | d.__GFP_THISNODE, 3), null);
      assert.equal(m.stats().nodes[0]!.freePages, free0);
      assert.equal(m.warnings.length, warnings + 2);
      assert.match(m.warnings.at(-1)!.message, /allocation from offline node 63/);
      assert.equal(m.alloc_pages_node(1, d.GFP_KERNEL | d.__GFP_NOWARN, 0), null);
      assert.equal(m.warnings.length, warnings + 2, '__GFP_NOWARN keeps it quiet');
      // Out of 0..MAX_NUMNODES-1 it stays the kernel's VM_BUG_ON.
      assert.throws(() => m.alloc_pages_node(1024, d.GFP_KERNEL, 0), /^Error: kernel BUG/);
    });

    it('vmalloc of more than the machine has fails at once with null and a WARN, allocating nothing', () => {
      const before = m.stats();
      const warnings = m.warnings.length;
      assert.equal(m.vmalloc(2 ** 40), null);
      assert.equal(m.vzalloc(64 * MiB), null);
      assert.deepEqual(m.stats(), before);
      assert.equal(m.warnings.length, warnings + 2);
      assert.match(m.warnings.at(-1)!.message, /vmalloc error: size 67108864, exceeds total pages \(2048\)/);
    });

    it('sg_alloc_table of an absurd count returns -ENOMEM at once and leaves the table empty', () => {
      const t = new d.SgTable();
      const t0 = Date.now();
      assert.equal(d.sg_alloc_table(t, 1e9, d.GFP_KERNEL), -d.ENOMEM);
      assert.equal(d.sg_alloc_table(t, 2 ** 32 - 1, d.GFP_KERNEL), -d.ENOMEM);
      assert.equal(t.sgl, null);
      assert.equal(t.nents, 0);
      assert.equal(t.orig_nents, 0);
      void t0; // no timing assertion: the call returning at all (no V8 abort) is the check
      // A table the process can hold still works.
      assert.equal(d.sg_alloc_table(t, 300, d.GFP_KERNEL), 0);
      assert.equal(d.sg_nents(t.sgl), 300);
      d.sg_free_table(t);
    });
  });

  it('an uncaught DmaDebugError prints a short report, not the device and machine', function () {
    this.timeout(30000);
    const index = path.join(__dirname, '..', 'lib', 'index.js');
    const code = `const d = require(${JSON.stringify(index)});
      const m = new d.Machine({ name: 'dbg42', ramPerNode: 2 << 20, cmaSize: 0, dmaDebug: 'strict', emitWarnings: false });
      const dev = m.createDevice({ name: 'nic42' });
      const page = m.alloc_pages(d.GFP_KERNEL, 0);
      const h = d.dma_map_page(dev, page, 0, 4096, d.DMA_TO_DEVICE);
      d.dma_mapping_error(dev, h);
      d.dma_unmap_page(dev, h, 8192, d.DMA_TO_DEVICE);`;
    const r = spawnSync(process.execPath, ['-e', code], { encoding: 'utf8' });
    assert.equal(r.signal, null);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /DmaDebugError: DMA-API: nic42: device driver frees DMA memory with different size/);
    const lines = r.stderr.split('\n').length;
    assert.ok(lines < 30, `${lines} lines:\n${r.stderr}`);
    assert.doesNotMatch(r.stderr, /Machine \{|Device \{|segments|vmallocSpace/);
  });
});
