// dmamem's public API: wiring only, one explicit list grouped as README.md ("API index") documents
// it. Nothing internal is exported: no class whose constructor maps or wraps memory, no helper of
// the routing, no test hook. test/44.public-surface.test.ts checks this list against the README.
// `require('dmamem')` loads lib/entry.ts, which defines the same names from one table (cheaper to
// start); these declarations are the types (index.d.ts) and what `import` loads.

import { deferRequires } from './lazy';

// Everything but lib/os loads on first use (see lib/lazy.ts): `require('dmamem')` pays for Regions only.
const restoreRequire = deferRequires(module, (id) => /^\.\/(mm|dma|ipc|devices|drivers)\//.test(id));

// ---- Real buffers (lib/os) ----
export { Region } from './os/region';
export { PROTECTIONS } from './os/region-options';
export type { AllocateOptions, FromFdOptions, Protection, Advice, Seal, ReadOnlyShare } from './os/region-options';
export type { ShareHandle, ShareOptions } from './os/region-share';
export { Arena } from './os/arena';
export type { ArenaOptions, ArenaStats, ArenaClassStats } from './os/arena';
export type { ArenaPeer, ArenaShareHandle } from './os/arena-share';
export { shareSocketPair, sendShare, receiveShare } from './os/share-socket';
export type { ReceiveShareOptions } from './os/share-socket';
export type { WaitResult, WaitAsyncOptions } from './os/region-wait';
export { hugepagePoolFree, HUGE_2M, HUGEPAGE_POLICIES } from './os/backing';
export type { Backing, HugepagePolicy } from './os/backing';
export { trackedExternalMemory, viewAddress } from './os/views';
export {
  readPagemap, readPfns, PFN_NOT_PRESENT, PFN_HIDDEN, readKpageflags, hasKpageflag, pfnVisible, effectiveCapabilities,
  KPF_LOCKED, KPF_DIRTY, KPF_LRU, KPF_MMAP, KPF_ANON, KPF_SWAPBACKED, KPF_COMPOUND_HEAD, KPF_COMPOUND_TAIL,
  KPF_HUGE, KPF_UNEVICTABLE, KPF_NOPAGE, KPF_THP, KPF_ZERO_PAGE,
} from './os/pagemap';
export type { PageInfo } from './os/pagemap';
export { systemInfo, explainMissing, thpMode } from './os/sysinfo';
export type { SystemInfo, HugepagePool, NumaNode, MissingCapability } from './os/sysinfo';
export { isErrno, errnoError, DmamemError } from './os/errors';
export type { ErrnoError, DmamemErrorCode } from './os/errors';

// ---- Channels (lib/ipc) ----
export { Channel } from './ipc/channel';
export type { ChannelRole, ChannelOptions, ChannelShare } from './ipc/channel';

// ---- The machine (lib/mm) ----
export { Machine } from './mm/machine';
export type { MachineOptions, KernelWarning, SegmentStats, SwiotlbReservation } from './mm/machine';
export { defaultMachine, destroyDefaultMachine, DEFAULT_MACHINE_OPTIONS } from './mm/default';
export { PG_buddy, PG_cma, PG_head, PG_reserved } from './mm/page';
export type { Page } from './mm/page';

// ---- gfp flags and page arithmetic (include/linux/gfp*.h) ----
export {
  __GFP_DMA, __GFP_HIGHMEM, __GFP_DMA32, __GFP_MOVABLE, __GFP_RECLAIMABLE, __GFP_HIGH, __GFP_IO, __GFP_FS,
  __GFP_ZERO, __GFP_DIRECT_RECLAIM, __GFP_KSWAPD_RECLAIM, __GFP_WRITE, __GFP_NOWARN, __GFP_RETRY_MAYFAIL,
  __GFP_NOFAIL, __GFP_NORETRY, __GFP_MEMALLOC, __GFP_COMP, __GFP_NOMEMALLOC, __GFP_HARDWALL, __GFP_THISNODE,
  __GFP_ACCOUNT, __GFP_ZEROTAGS, __GFP_RECLAIM,
  GFP_ATOMIC, GFP_KERNEL, GFP_NOWAIT, GFP_NOIO, GFP_NOFS, GFP_DMA, GFP_DMA32,
  PAGE_SHIFT, PAGE_SIZE, MAX_PAGE_ORDER, NUMA_NO_NODE,
  gfpflags_allow_blocking, PAGE_ALIGN, fls64, get_order,
} from './mm/gfp';
export type { gfp_t } from './mm/gfp';

// ---- Kernel-named memory functions (pages, addresses, the page allocator, vmalloc) ----
export {
  page_to_pfn, page_to_phys, page_to_nid, page_address, virt_to_page, virt_to_phys, is_vmalloc_addr,
  vmalloc_to_page, __free_pages, pfn_to_page, phys_to_virt, alloc_pages_node, alloc_pages,
  vmalloc, vzalloc, vfree, vmap, vunmap,
} from './mm/kernel';
export type { VmallocArea } from './mm/vmalloc';

// ---- kmalloc (mm/slub.c, mm/slab_common.c) ----
export {
  kmalloc, kmalloc_node, kzalloc, kmalloc_array, kcalloc, kfree, ksize, krealloc, kmalloc_stats, KMALLOC_SIZES,
  KMALLOC_MAX_CACHE_SIZE, KMALLOC_MAX_SIZE, ARCH_KMALLOC_MINALIGN, ZERO_SIZE_PTR,
} from './mm/slab';

// ---- Page references and fragments (page_ref.h, mm/page_frag_cache.c) ----
export { get_page, put_page, page_ref_count } from './mm/page_ref';
export {
  PageFragCache, page_frag_alloc, page_frag_alloc_align, page_frag_free, page_frag_cache_drain, netdev_alloc_frag,
  PAGE_FRAG_CACHE_MAX_SIZE,
} from './mm/page_frag';

// ---- Pinning user memory for DMA (mm/gup.c) ----
export {
  unpin_user_page, unpin_user_pages, unpin_user_pages_dirty_lock, page_maybe_dma_pinned, GUP_PIN_COUNTING_BIAS,
  FOLL_WRITE, FOLL_GET, FOLL_FORCE, FOLL_NOWAIT, FOLL_NOFAULT, FOLL_LONGTERM, FOLL_PCI_P2PDMA, FOLL_HONOR_NUMA_FAULT,
} from './mm/gup';

// ---- CMA (mm/cma.c) ----
export { cma_alloc, cma_release, cma_alloc_aligned, cma_pages_valid, CMA_MAX_RANGES, CONFIG_CMA_ALIGNMENT } from './mm/cma';
export type { Cma } from './mm/cma';

// ---- User mappings (mm/memory.c) and page protections ----
export {
  VM_READ, VM_WRITE, VM_EXEC, VM_SHARED, VM_MAYREAD, VM_MAYWRITE, VM_MAYEXEC, VM_MAYSHARE, VM_PFNMAP,
  VM_LOCKED, VM_IO, VM_DONTEXPAND, VM_DONTDUMP, vma_pages, remap_pfn_range,
} from './mm/vma';
export type { VmArea, VmaOptions, VmOperations } from './mm/vma';
export {
  _PAGE_PRESENT, _PAGE_RW, _PAGE_USER, _PAGE_PWT, _PAGE_PCD, _PAGE_ACCESSED, PAGE_SHARED, PAGE_READONLY,
  pgprot_noncached, pgprot_writecombine, pgprot_dmacoherent, pgprot_cachemode,
} from './mm/pgprot';
export type { CacheMode } from './mm/pgprot';

// ---- DMA constants (dma-direction.h, dma-mapping.h, errno) ----
export {
  DMA_BIDIRECTIONAL, DMA_TO_DEVICE, DMA_FROM_DEVICE, DMA_NONE,
  DMA_ATTR_WEAK_ORDERING, DMA_ATTR_WRITE_COMBINE, DMA_ATTR_NO_KERNEL_MAPPING, DMA_ATTR_SKIP_CPU_SYNC,
  DMA_ATTR_FORCE_CONTIGUOUS, DMA_ATTR_ALLOC_SINGLE_PAGES, DMA_ATTR_NO_WARN, DMA_ATTR_PRIVILEGED, DMA_ATTR_MMIO,
  DMA_MAPPING_ERROR, DMA_BIT_MASK, valid_dma_direction, dma_direction_name, SIZE_MAX,
  EIO, ENXIO, ENOMEM, EACCES, EBUSY, ENODEV, EINVAL, ENOSYS, EOPNOTSUPP, EREMOTEIO,
} from './dma/constants';
export type { DmaDataDirection } from './dma/constants';

// ---- Devices and dma_map_ops ----
export { dev_to_node, get_dma_ops, set_dma_ops, use_dma_iommu } from './dma/device';
export type { Device, DeviceOptions } from './dma/device';
export type { Box, DmaMapOps } from './dma/ops';
export { dma_common_ops, dma_dummy_ops } from './dma/ops_helpers';

// ---- The driver API (kernel/dma/mapping.c) ----
export {
  dma_pgprot,
  dma_map_page_attrs, dma_map_page, dma_unmap_page_attrs, dma_unmap_page,
  dma_map_single_attrs, dma_map_single, dma_unmap_single_attrs, dma_unmap_single,
  dma_map_resource, dma_unmap_resource,
  dma_map_sg_attrs, dma_map_sg, dma_map_sgtable, dma_unmap_sg_attrs, dma_unmap_sg, dma_unmap_sgtable,
  dma_mapping_error,
  dma_alloc_pages, dma_free_pages, dma_mmap_pages, dma_alloc_noncoherent, dma_free_noncoherent,
  dma_alloc_attrs, dma_alloc_coherent, dma_free_attrs, dma_free_coherent, dma_alloc_wc, dma_free_wc,
  dma_get_sgtable_attrs, dma_get_sgtable, dma_mmap_attrs, dma_mmap_coherent, dma_mmap_wc,
  dma_sync_single_for_cpu, dma_sync_single_for_device, dma_sync_sg_for_cpu, dma_sync_sg_for_device,
  dma_sync_sgtable_for_cpu, dma_sync_sgtable_for_device,
  dma_supported, dma_set_mask, dma_set_coherent_mask, dma_set_mask_and_coherent, dma_get_mask,
  dma_max_mapping_size,
} from './dma/mapping';

// ---- Generic helpers (kernel/dma/ops_helpers.c), CMA and coherent pools for DMA ----
export {
  dma_common_vaddr_to_page, dma_common_get_sgtable, dma_common_mmap, dma_common_alloc_pages, dma_common_free_pages,
} from './dma/ops_helpers';
export { dma_alloc_contiguous, dma_free_contiguous } from './dma/contiguous';
export { dma_declare_coherent_memory, dma_release_coherent_memory } from './dma/coherent';
export type { CoherentPool } from './dma/coherent';

// ---- Limits, dma_parms and managed memory (kernel/dma/mapping.c, dma-mapping.h) ----
export {
  dma_get_max_seg_size, dma_set_max_seg_size, dma_get_seg_boundary, dma_set_seg_boundary, dma_get_seg_boundary_nr_pages,
  dma_get_min_align_mask, dma_set_min_align_mask,
} from './dma/dma_parms';
export type { DeviceDmaParameters } from './dma/device_dma_parameters';
export {
  dma_get_required_mask, dma_addressing_limited, dma_opt_mapping_size, dma_get_merge_boundary, dma_need_sync,
  dma_need_unmap, dma_can_mmap, dma_get_cache_alignment,
} from './dma/limits';
export { dmam_alloc_attrs, dmam_alloc_coherent, dmam_free_coherent } from './dma/managed';
export {
  dma_alloc_noncontiguous, dma_free_noncontiguous, dma_vmap_noncontiguous, dma_vunmap_noncontiguous, dma_mmap_noncontiguous,
} from './dma/noncontiguous';

// ---- swiotlb bounce buffers (kernel/dma/swiotlb.c) ----
export { is_swiotlb_buffer, is_swiotlb_active, is_swiotlb_force_bounce, swiotlb_max_mapping_size, IO_TLB_SIZE, IO_TLB_SHIFT, IO_TLB_SEGSIZE } from './dma/swiotlb';
export { dma_sync_single_range_for_cpu, dma_sync_single_range_for_device } from './dma/sync';

// ---- Scatterlist helpers over kernel memory (lib/scatterlist.c) ----
export {
  sg_set_buf, sg_init_one, sg_virt, sg_last, sg_nents_for_len, SgMappingIter, SG_MITER_ATOMIC, SG_MITER_TO_SG, SG_MITER_FROM_SG,
  sg_miter_start, sg_miter_next, sg_miter_skip, sg_miter_stop, sg_copy_from_buffer, sg_copy_to_buffer, sg_pcopy_from_buffer,
  sg_pcopy_to_buffer,
} from './dma/sg_helpers';

// ---- DMA pools (mm/dmapool.c) ----
export {
  dma_pool_create, dma_pool_create_node, dma_pool_alloc, dma_pool_zalloc, dma_pool_free, dma_pool_destroy,
  dmam_pool_create, dmam_pool_destroy, pools_show, POOL_POISON_FREED, POOL_POISON_ALLOCATED,
} from './dma/dmapool';
export type { DmaPool } from './dma/dmapool';

// ---- Scatter-gather tables (lib/scatterlist.c) ----
export {
  Scatterlist, SgTable, SG_MAX_SINGLE_ALLOC, SG_CHAIN, SG_END, sg_is_chain, sg_is_last, sg_page, sg_set_page, sg_mark_end, sg_unmark_end, sg_dma_address, sg_dma_len, sg_phys, sg_next, for_each_sg, sgIterate, for_each_sgtable_sg, for_each_sgtable_dma_sg, sg_nents, sg_init_table, sg_chain, sg_alloc_table, sg_free_table,
} from './dma/scatterlist';
export { sg_alloc_table_from_pages, sg_alloc_table_from_pages_segment } from './dma/sg_pages';
export { SgAppendTable, sg_alloc_append_table_from_pages, sg_free_append_table } from './dma/sg_pages';

// ---- DMA-API debug (kernel/dma/debug.c) ----
export { DmaDebugError, MAP_ERR_CHECKED, MAP_ERR_CHECK_NOT_APPLICABLE, MAP_ERR_NOT_CHECKED } from './dma/debug';
export { dma_cache_stats, CACHE_PAGES } from './dma/cache';
export type { DmaCacheStats } from './dma/cache';
export { dma_cache_maintenance } from './dma/direct';
export type { DmaCacheMaintenance } from './dma/direct';
export { CACHE_LINE } from './dma/cache_layout';
export { CHECK_CPU_WROTE_DEVICE_OWNED, CHECK_DEVICE_TOUCHED_CPU_OWNED } from './dma/ownership';
export type { DmaDebug, DmaDebugView, DmaDebugReport, DmaDebugOptions, DmaDebugEntry, DmaDebugType, MapErrType, DmaDebugDevice } from './dma/debug';
export type { DmaDebugPoolStats } from './dma/debug_pool';

// ---- IOMMU (drivers/iommu) ----
export {
  IOMMU_READ, IOMMU_WRITE, IOMMU_CACHE, IOMMU_NOEXEC, IOMMU_MMIO, IOMMU_PRIV, IOVA_FQ_SIZE,
  iommu_get_dma_domain, iommu_iova_to_phys, iommu_iova_to_prot, iommu_map, iommu_unmap,
  iommu_set_fault_handler, IOMMU_FAULT_READ, IOMMU_FAULT_WRITE, FAULT_LOG_MAX,
  IOVA_FQ_TIMEOUT, iommu_get_resv_regions, IOMMU_RESV_DIRECT, IOMMU_RESV_DIRECT_RELAXABLE, IOMMU_RESV_RESERVED,
  IOMMU_RESV_MSI, IOMMU_RESV_SW_MSI,
} from './dma/iommu';
export type { IommuDomain, IommuOptions, IommuStats, IommuFault, iommu_fault_handler_t, IommuResvRegion } from './dma/iommu';
export {
  DmaIovaState, dma_iova_try_alloc, dma_iova_link, dma_iova_unlink, dma_iova_sync, dma_iova_destroy, dma_iova_free,
  dma_use_iova, dma_iova_size,
} from './dma/iova_api';
export {
  DMAR_REASON_BEYOND_MGAW, DMAR_REASON_PTE_WRITE, DMAR_REASON_PTE_READ, DMAR_REASON_NEXT_PTR_INVALID,
} from './dma/iommu_regs';

// ---- Devices: bus mastering (lib/devices) ----
export { BusEngine, MEMTX_OK, MEMTX_DECODE_ERROR, MEMTX_ACCESS_ERROR } from './devices/bus_engine';
export type { BusDescription, BusSegment, BusEngineOptions } from './devices/bus_engine';
export { busMaster, busDescription } from './devices/bus_master';
export type { BusDescriptionOptions } from './devices/bus_master';

// ---- Devices: PCI device models, MMIO, QEMU's edu (lib/devices) ----
export { createPciDevice, PciDev } from './devices/pci_dev';
export type { PciDeviceOptions, DeviceTypeRef, PciResource, BadAccess } from './devices/pci_dev';
export type { DeviceModel, DeviceContext, DeviceType, DeviceIdentity, IrqLine, MmioValue } from './devices/model';
export {
  edu, EDU_VENDOR_ID, EDU_DEVICE_ID, EDU_ID, EDU_REG_ID, EDU_REG_LIVENESS, EDU_REG_FACT, EDU_REG_STATUS, EDU_REG_IRQ_STATUS,
  EDU_REG_IRQ_RAISE, EDU_REG_IRQ_ACK, EDU_REG_DMA_SRC, EDU_REG_DMA_DST, EDU_REG_DMA_CNT, EDU_REG_DMA_CMD,
  EDU_STATUS_COMPUTING, EDU_STATUS_IRQFACT, EDU_DMA_RUN, EDU_DMA_TO_PCI, EDU_DMA_IRQ, EDU_FACT_IRQ, EDU_DMA_IRQ_VALUE,
  EDU_DMA_START, EDU_DMA_SIZE, EDU_DEFAULT_DMA_MASK,
} from './devices/edu';

// ---- Driver-side kernel APIs: MMIO, barriers, interrupts, completions, the PCI core (lib/drivers) ----
export {
  IoMem, pci_iomap, pci_iounmap, ioremap, iounmap, readb, readw, readl, readq, writeb, writew, writel, writeq,
  ioread8, ioread16, ioread32, iowrite8, iowrite16, iowrite32, lo_hi_writeq, lo_hi_readq,
} from './drivers/io';
export { mb, rmb, wmb, dma_rmb, dma_wmb, smp_mb } from './drivers/barriers';
export {
  IRQ_NONE, IRQ_HANDLED, IRQ_WAKE_THREAD, IRQF_SHARED, IRQF_ONESHOT, IRQF_NO_AUTOEN,
  PCI_IRQ_INTX, PCI_IRQ_LEGACY, PCI_IRQ_MSI, PCI_IRQ_MSIX, PCI_IRQ_AFFINITY, PCI_IRQ_ALL_TYPES,
  request_irq, free_irq, pci_alloc_irq_vectors, pci_irq_vector, pci_free_irq_vectors,
  disable_irq, disable_irq_nosync, enable_irq, irq_count,
} from './drivers/irq';
export type { irq_handler_t, irqreturn_t } from './drivers/irq';
export {
  Completion, HZ, MAX_SCHEDULE_TIMEOUT, msecs_to_jiffies, jiffies_to_msecs, init_completion, reinit_completion,
  complete, complete_all, completion_done, try_wait_for_completion, wait_for_completion_timeout, wait_for_completion,
} from './drivers/completion';
export {
  PCI_ANY_ID, pci_name, pci_enable_device, pci_disable_device, pci_set_master, pci_clear_master,
  pci_request_regions, pci_release_regions, pci_resource_start, pci_resource_len, pci_set_drvdata, pci_get_drvdata,
  pci_register_driver, pci_unregister_driver, pci_driver_of,
} from './drivers/pci';
export type { pci_device_id, pci_driver } from './drivers/pci';

restoreRequire();
