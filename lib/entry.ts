// The entry `require('dmamem')` loads (package.json "main" and "exports" -> "require"): exactly the
// value exports of lib/index.ts, whose plain list is the typed, documented surface (index.d.ts) and
// what `import` loads, defined here from one table of names so that a start costs only what is
// used. The addon loads at once; each lib/os module on the first read of one of its names; the
// kernel model, the DMA layer, channels and devices together, in the index's order, on the first
// read of any of theirs.
// Why not the index itself: TypeScript emits a getter function per re-exported name, and compiling
// those 500 functions took about as long as loading everything a Region needs.

import type * as Index from './index';
// The addon loads now, as it always did: a missing or unloadable binary (or an unsupported platform)
// is an error at require('dmamem') that names the fix, not a surprise at the first use of a name.
import './native';

/** A value export of lib/index.ts. */
type Name = keyof typeof Index;

/** lib/os modules and their public names: each module loads on the first read of one of its names. */
const OS = {
  './os/region': ['Region'],
  './os/region-options': ['PROTECTIONS'],
  './os/arena': ['Arena'],
  './os/share-socket': ['shareSocketPair', 'sendShare', 'receiveShare'],
  './os/backing': ['hugepagePoolFree', 'HUGE_2M', 'HUGEPAGE_POLICIES'],
  './os/views': ['trackedExternalMemory', 'viewAddress'],
  './os/pagemap': [
    'readPagemap', 'readPfns', 'PFN_NOT_PRESENT', 'PFN_HIDDEN', 'readKpageflags', 'hasKpageflag', 'pfnVisible',
    'effectiveCapabilities', 'KPF_LOCKED', 'KPF_DIRTY', 'KPF_LRU', 'KPF_MMAP', 'KPF_ANON', 'KPF_SWAPBACKED',
    'KPF_COMPOUND_HEAD', 'KPF_COMPOUND_TAIL', 'KPF_HUGE', 'KPF_UNEVICTABLE', 'KPF_NOPAGE', 'KPF_THP', 'KPF_ZERO_PAGE',
  ],
  './os/sysinfo': ['systemInfo', 'explainMissing', 'thpMode'],
  './os/errors': ['isErrno', 'errnoError', 'DmamemError'],
} as const satisfies Record<string, readonly Name[]>;

/**
 * The other layers and their public names, in the index's order: the first read of any name loads all
 * of them, since some extend others when they load (lib/dma/device.ts adds Machine.prototype.createDevice).
 */
const KERNEL = {
  './ipc/channel': ['Channel'],
  './mm/machine': ['Machine'],
  './mm/default': ['defaultMachine', 'destroyDefaultMachine', 'DEFAULT_MACHINE_OPTIONS'],
  './mm/page': ['PG_buddy', 'PG_cma', 'PG_head', 'PG_reserved'],
  './mm/gfp': [
    '__GFP_DMA', '__GFP_HIGHMEM', '__GFP_DMA32', '__GFP_MOVABLE', '__GFP_RECLAIMABLE', '__GFP_HIGH', '__GFP_IO', '__GFP_FS',
    '__GFP_ZERO', '__GFP_DIRECT_RECLAIM', '__GFP_KSWAPD_RECLAIM', '__GFP_WRITE', '__GFP_NOWARN', '__GFP_RETRY_MAYFAIL',
    '__GFP_NOFAIL', '__GFP_NORETRY', '__GFP_MEMALLOC', '__GFP_COMP', '__GFP_NOMEMALLOC', '__GFP_HARDWALL', '__GFP_THISNODE',
    '__GFP_ACCOUNT', '__GFP_ZEROTAGS', '__GFP_RECLAIM', 'GFP_ATOMIC', 'GFP_KERNEL', 'GFP_NOWAIT', 'GFP_NOIO', 'GFP_NOFS',
    'GFP_DMA', 'GFP_DMA32', 'PAGE_SHIFT', 'PAGE_SIZE', 'MAX_PAGE_ORDER', 'NUMA_NO_NODE', 'gfpflags_allow_blocking',
    'PAGE_ALIGN', 'fls64', 'get_order',
  ],
  './mm/kernel': [
    'page_to_pfn', 'page_to_phys', 'page_to_nid', 'page_address', 'virt_to_page', 'virt_to_phys', 'is_vmalloc_addr',
    'vmalloc_to_page', '__free_pages', 'pfn_to_page', 'phys_to_virt', 'alloc_pages_node', 'alloc_pages', 'vmalloc', 'vzalloc',
    'vfree', 'vmap', 'vunmap',
  ],
  './mm/slab': [
    'kmalloc', 'kmalloc_node', 'kzalloc', 'kmalloc_array', 'kcalloc', 'kfree', 'ksize', 'krealloc', 'kmalloc_stats',
    'KMALLOC_SIZES', 'KMALLOC_MAX_CACHE_SIZE', 'KMALLOC_MAX_SIZE', 'ARCH_KMALLOC_MINALIGN', 'ZERO_SIZE_PTR',
  ],
  './mm/page_ref': ['get_page', 'put_page', 'page_ref_count'],
  './mm/page_frag': [
    'PageFragCache', 'page_frag_alloc', 'page_frag_alloc_align', 'page_frag_free', 'page_frag_cache_drain', 'netdev_alloc_frag',
    'PAGE_FRAG_CACHE_MAX_SIZE',
  ],
  './mm/gup': [
    'unpin_user_page', 'unpin_user_pages', 'unpin_user_pages_dirty_lock', 'page_maybe_dma_pinned', 'GUP_PIN_COUNTING_BIAS',
    'FOLL_WRITE', 'FOLL_GET', 'FOLL_FORCE', 'FOLL_NOWAIT', 'FOLL_NOFAULT', 'FOLL_LONGTERM', 'FOLL_PCI_P2PDMA',
    'FOLL_HONOR_NUMA_FAULT',
  ],
  './mm/cma': ['cma_alloc', 'cma_release', 'cma_alloc_aligned', 'cma_pages_valid', 'CMA_MAX_RANGES', 'CONFIG_CMA_ALIGNMENT'],
  './mm/vma': [
    'VM_READ', 'VM_WRITE', 'VM_EXEC', 'VM_SHARED', 'VM_MAYREAD', 'VM_MAYWRITE', 'VM_MAYEXEC', 'VM_MAYSHARE', 'VM_PFNMAP',
    'VM_LOCKED', 'VM_IO', 'VM_DONTEXPAND', 'VM_DONTDUMP', 'vma_pages', 'remap_pfn_range',
  ],
  './mm/pgprot': [
    '_PAGE_PRESENT', '_PAGE_RW', '_PAGE_USER', '_PAGE_PWT', '_PAGE_PCD', '_PAGE_ACCESSED', 'PAGE_SHARED', 'PAGE_READONLY',
    'pgprot_noncached', 'pgprot_writecombine', 'pgprot_dmacoherent', 'pgprot_cachemode',
  ],
  './dma/constants': [
    'DMA_BIDIRECTIONAL', 'DMA_TO_DEVICE', 'DMA_FROM_DEVICE', 'DMA_NONE', 'DMA_ATTR_WEAK_ORDERING', 'DMA_ATTR_WRITE_COMBINE',
    'DMA_ATTR_NO_KERNEL_MAPPING', 'DMA_ATTR_SKIP_CPU_SYNC', 'DMA_ATTR_FORCE_CONTIGUOUS', 'DMA_ATTR_ALLOC_SINGLE_PAGES',
    'DMA_ATTR_NO_WARN', 'DMA_ATTR_PRIVILEGED', 'DMA_ATTR_MMIO', 'DMA_MAPPING_ERROR', 'DMA_BIT_MASK', 'valid_dma_direction',
    'dma_direction_name', 'SIZE_MAX', 'EIO', 'ENXIO', 'ENOMEM', 'EACCES', 'EBUSY', 'ENODEV', 'EINVAL', 'ENOSYS', 'EOPNOTSUPP',
    'EREMOTEIO',
  ],
  './dma/device': ['dev_to_node', 'get_dma_ops', 'set_dma_ops', 'use_dma_iommu'],
  './dma/ops_helpers': [
    'dma_common_ops', 'dma_dummy_ops', 'dma_common_vaddr_to_page', 'dma_common_get_sgtable', 'dma_common_mmap',
    'dma_common_alloc_pages', 'dma_common_free_pages',
  ],
  './dma/mapping': [
    'dma_pgprot', 'dma_map_page_attrs', 'dma_map_page', 'dma_unmap_page_attrs', 'dma_unmap_page', 'dma_map_single_attrs',
    'dma_map_single', 'dma_unmap_single_attrs', 'dma_unmap_single', 'dma_map_resource', 'dma_unmap_resource',
    'dma_map_sg_attrs', 'dma_map_sg', 'dma_map_sgtable', 'dma_unmap_sg_attrs', 'dma_unmap_sg', 'dma_unmap_sgtable',
    'dma_mapping_error', 'dma_alloc_pages', 'dma_free_pages', 'dma_mmap_pages', 'dma_alloc_noncoherent', 'dma_free_noncoherent',
    'dma_alloc_attrs', 'dma_alloc_coherent', 'dma_free_attrs', 'dma_free_coherent', 'dma_alloc_wc', 'dma_free_wc',
    'dma_get_sgtable_attrs', 'dma_get_sgtable', 'dma_mmap_attrs', 'dma_mmap_coherent', 'dma_mmap_wc', 'dma_sync_single_for_cpu',
    'dma_sync_single_for_device', 'dma_sync_sg_for_cpu', 'dma_sync_sg_for_device', 'dma_sync_sgtable_for_cpu',
    'dma_sync_sgtable_for_device', 'dma_supported', 'dma_set_mask', 'dma_set_coherent_mask', 'dma_set_mask_and_coherent',
    'dma_get_mask', 'dma_max_mapping_size',
  ],
  './dma/contiguous': ['dma_alloc_contiguous', 'dma_free_contiguous'],
  './dma/coherent': ['dma_declare_coherent_memory', 'dma_release_coherent_memory'],
  './dma/dma_parms': [
    'dma_get_max_seg_size', 'dma_set_max_seg_size', 'dma_get_seg_boundary', 'dma_set_seg_boundary',
    'dma_get_seg_boundary_nr_pages', 'dma_get_min_align_mask', 'dma_set_min_align_mask',
  ],
  './dma/limits': [
    'dma_get_required_mask', 'dma_addressing_limited', 'dma_opt_mapping_size', 'dma_get_merge_boundary', 'dma_need_sync',
    'dma_need_unmap', 'dma_can_mmap', 'dma_get_cache_alignment',
  ],
  './dma/managed': ['dmam_alloc_attrs', 'dmam_alloc_coherent', 'dmam_free_coherent'],
  './dma/noncontiguous': [
    'dma_alloc_noncontiguous', 'dma_free_noncontiguous', 'dma_vmap_noncontiguous', 'dma_vunmap_noncontiguous',
    'dma_mmap_noncontiguous',
  ],
  './dma/swiotlb': [
    'is_swiotlb_buffer', 'is_swiotlb_active', 'is_swiotlb_force_bounce', 'swiotlb_max_mapping_size', 'IO_TLB_SIZE',
    'IO_TLB_SHIFT', 'IO_TLB_SEGSIZE',
  ],
  './dma/sync': ['dma_sync_single_range_for_cpu', 'dma_sync_single_range_for_device'],
  './dma/sg_helpers': [
    'sg_set_buf', 'sg_init_one', 'sg_virt', 'sg_last', 'sg_nents_for_len', 'SgMappingIter', 'SG_MITER_ATOMIC', 'SG_MITER_TO_SG',
    'SG_MITER_FROM_SG', 'sg_miter_start', 'sg_miter_next', 'sg_miter_skip', 'sg_miter_stop', 'sg_copy_from_buffer',
    'sg_copy_to_buffer', 'sg_pcopy_from_buffer', 'sg_pcopy_to_buffer',
  ],
  './dma/dmapool': [
    'dma_pool_create', 'dma_pool_create_node', 'dma_pool_alloc', 'dma_pool_zalloc', 'dma_pool_free', 'dma_pool_destroy',
    'dmam_pool_create', 'dmam_pool_destroy', 'pools_show', 'POOL_POISON_FREED', 'POOL_POISON_ALLOCATED',
  ],
  './dma/scatterlist': [
    'Scatterlist', 'SgTable', 'SG_MAX_SINGLE_ALLOC', 'SG_CHAIN', 'SG_END', 'sg_is_chain', 'sg_is_last', 'sg_page',
    'sg_set_page', 'sg_mark_end', 'sg_unmark_end', 'sg_dma_address', 'sg_dma_len', 'sg_phys', 'sg_next', 'for_each_sg',
    'sgIterate', 'for_each_sgtable_sg', 'for_each_sgtable_dma_sg', 'sg_nents', 'sg_init_table', 'sg_chain', 'sg_alloc_table',
    'sg_free_table',
  ],
  './dma/sg_pages': [
    'sg_alloc_table_from_pages', 'sg_alloc_table_from_pages_segment', 'SgAppendTable', 'sg_alloc_append_table_from_pages',
    'sg_free_append_table',
  ],
  './dma/debug': ['DmaDebugError', 'MAP_ERR_CHECKED', 'MAP_ERR_CHECK_NOT_APPLICABLE', 'MAP_ERR_NOT_CHECKED'],
  './dma/cache': ['dma_cache_stats', 'CACHE_PAGES'],
  './dma/direct': ['dma_cache_maintenance'],
  './dma/cache_layout': ['CACHE_LINE'],
  './dma/ownership': ['CHECK_CPU_WROTE_DEVICE_OWNED', 'CHECK_DEVICE_TOUCHED_CPU_OWNED'],
  './dma/iommu': [
    'IOMMU_READ', 'IOMMU_WRITE', 'IOMMU_CACHE', 'IOMMU_NOEXEC', 'IOMMU_MMIO', 'IOMMU_PRIV', 'IOVA_FQ_SIZE',
    'iommu_get_dma_domain', 'iommu_iova_to_phys', 'iommu_iova_to_prot', 'iommu_map', 'iommu_unmap', 'iommu_set_fault_handler',
    'IOMMU_FAULT_READ', 'IOMMU_FAULT_WRITE', 'FAULT_LOG_MAX', 'IOVA_FQ_TIMEOUT', 'iommu_get_resv_regions', 'IOMMU_RESV_DIRECT',
    'IOMMU_RESV_DIRECT_RELAXABLE', 'IOMMU_RESV_RESERVED', 'IOMMU_RESV_MSI', 'IOMMU_RESV_SW_MSI',
  ],
  './dma/iova_api': [
    'DmaIovaState', 'dma_iova_try_alloc', 'dma_iova_link', 'dma_iova_unlink', 'dma_iova_sync', 'dma_iova_destroy',
    'dma_iova_free', 'dma_use_iova', 'dma_iova_size',
  ],
  './dma/iommu_regs': [
    'DMAR_REASON_BEYOND_MGAW', 'DMAR_REASON_PTE_WRITE', 'DMAR_REASON_PTE_READ', 'DMAR_REASON_NEXT_PTR_INVALID',
  ],
  './devices/bus_engine': ['BusEngine', 'MEMTX_OK', 'MEMTX_DECODE_ERROR', 'MEMTX_ACCESS_ERROR'],
  './devices/bus_master': ['busMaster', 'busDescription'],
  './devices/pci_dev': ['createPciDevice', 'PciDev'],
  './devices/edu': [
    'edu', 'EDU_VENDOR_ID', 'EDU_DEVICE_ID', 'EDU_ID', 'EDU_REG_ID', 'EDU_REG_LIVENESS', 'EDU_REG_FACT', 'EDU_REG_STATUS',
    'EDU_REG_IRQ_STATUS', 'EDU_REG_IRQ_RAISE', 'EDU_REG_IRQ_ACK', 'EDU_REG_DMA_SRC', 'EDU_REG_DMA_DST', 'EDU_REG_DMA_CNT',
    'EDU_REG_DMA_CMD', 'EDU_STATUS_COMPUTING', 'EDU_STATUS_IRQFACT', 'EDU_DMA_RUN', 'EDU_DMA_TO_PCI', 'EDU_DMA_IRQ',
    'EDU_FACT_IRQ', 'EDU_DMA_IRQ_VALUE', 'EDU_DMA_START', 'EDU_DMA_SIZE', 'EDU_DEFAULT_DMA_MASK',
  ],
  './drivers/io': [
    'IoMem', 'pci_iomap', 'pci_iounmap', 'ioremap', 'iounmap', 'readb', 'readw', 'readl', 'readq', 'writeb', 'writew', 'writel',
    'writeq', 'ioread8', 'ioread16', 'ioread32', 'iowrite8', 'iowrite16', 'iowrite32', 'lo_hi_writeq', 'lo_hi_readq',
  ],
  './drivers/barriers': ['mb', 'rmb', 'wmb', 'dma_rmb', 'dma_wmb', 'smp_mb'],
  './drivers/irq': [
    'IRQ_NONE', 'IRQ_HANDLED', 'IRQ_WAKE_THREAD', 'IRQF_SHARED', 'IRQF_ONESHOT', 'IRQF_NO_AUTOEN', 'PCI_IRQ_INTX',
    'PCI_IRQ_LEGACY', 'PCI_IRQ_MSI', 'PCI_IRQ_MSIX', 'PCI_IRQ_AFFINITY', 'PCI_IRQ_ALL_TYPES', 'request_irq', 'free_irq',
    'pci_alloc_irq_vectors', 'pci_irq_vector', 'pci_free_irq_vectors', 'disable_irq', 'disable_irq_nosync', 'enable_irq',
    'irq_count',
  ],
  './drivers/completion': [
    'Completion', 'HZ', 'MAX_SCHEDULE_TIMEOUT', 'msecs_to_jiffies', 'jiffies_to_msecs', 'init_completion', 'reinit_completion',
    'complete', 'complete_all', 'completion_done', 'try_wait_for_completion', 'wait_for_completion_timeout',
    'wait_for_completion',
  ],
  './drivers/pci': [
    'PCI_ANY_ID', 'pci_name', 'pci_enable_device', 'pci_disable_device', 'pci_set_master', 'pci_clear_master',
    'pci_request_regions', 'pci_release_regions', 'pci_resource_start', 'pci_resource_len', 'pci_set_drvdata',
    'pci_get_drvdata', 'pci_register_driver', 'pci_unregister_driver', 'pci_driver_of',
  ],
} as const satisfies Record<string, readonly Name[]>;

/** The names a table lists. */
type Listed<T> = { [K in keyof T]: T[K] extends readonly (infer N)[] ? N : never }[keyof T];
type Unlisted = Exclude<Name, Listed<typeof OS> | Listed<typeof KERNEL>>;
/** Compile-time check that every export of lib/index.ts is listed above (tsc names any that is not). */
const everyNameListed: [Unlisted] extends [never] ? true : Unlisted = true;
void everyNameListed;

/** Defines `names` on this module's exports as enumerable getters over `load()`'s, as TypeScript's re-exports are. */
function reexport(names: readonly string[], load: () => Record<string, unknown>): void {
  for (const name of names) Object.defineProperty(exports, name, { enumerable: true, get: () => load()[name] });
}

// eslint-disable-next-line @typescript-eslint/no-require-imports
const load = (id: string): Record<string, unknown> => require(id) as Record<string, unknown>;

for (const [id, names] of Object.entries(OS)) {
  let mod: Record<string, unknown> | undefined;
  reexport(names, () => (mod ??= load(id)));
}

let kernelLoaded = false;
for (const [id, names] of Object.entries(KERNEL)) {
  let mod: Record<string, unknown> | undefined;
  reexport(names, () => {
    if (!kernelLoaded) {
      kernelLoaded = true;
      for (const other of Object.keys(KERNEL)) load(other);
    }
    return (mod ??= load(id));
  });
}
