// dmamem's public API: wiring only. Real buffers (Region), the kernel memory model (Machine and
// kernel-named functions) and the DMA layer (kernel/dma) all export from here.

export * from './os/index';

export { Machine } from './mm/machine';
export type { MachineOptions, KernelWarning, SegmentStats } from './mm/machine';
export { defaultMachine, destroyDefaultMachine, DEFAULT_MACHINE_OPTIONS } from './mm/default';
export { Page, PG_buddy, PG_cma, PG_head, PG_reserved } from './mm/page';
export * from './mm/gfp';
export * from './mm/kernel';
export { Cma, cma_alloc_aligned, cma_pages_valid, CMA_MAX_RANGES, CONFIG_CMA_ALIGNMENT } from './mm/cma';
export { VmallocArea } from './mm/vmalloc';
export * from './mm/vma';
export * from './mm/pgprot';

export * from './dma/constants';
export * from './dma/ops';
export * from './dma/device';
export * from './dma/scatterlist';
export * from './dma/debug';
export * from './dma/contiguous';
export * from './dma/coherent';
export * from './dma/ops_helpers';
export * from './dma/mapping';
export * from './dma/direct';
export * from './dma/iommu';
