// Example: the README's DMA quick start. A device behind an IOMMU with a 32-bit mask gets 1 MiB
// from dma_alloc_pages, the buffer is mapped into a user VMA with dma_common_mmap, and a byte
// written through the VMA is read back through the kernel address.
// Run: node dist/examples/dma-quickstart.js

import { Machine, DMA_BIDIRECTIONAL, GFP_KERNEL, dma_alloc_pages, dma_free_pages, dma_common_mmap, iommu_iova_to_phys } from '../lib/index';

const SIZE = 1 << 20;
using machine = new Machine({ ramPerNode: 64 << 20, cmaSize: 64 << 20 });
const dev = machine.createDevice({ name: 'nic', dmaMask: 32, coherentDmaMask: 32, iommu: true });
const handle = { value: 0n };
const page = dma_alloc_pages(dev, SIZE, handle, DMA_BIDIRECTIONAL, GFP_KERNEL);
if (page === null) throw new Error('dma_alloc_pages failed');
const vma = machine.createVma(SIZE);
const ret = dma_common_mmap(dev, vma, machine.page_address(page), handle.value, SIZE, 0);
vma.view()[4096] = 42; // the same physical bytes as the kernel address
const back = machine.view(machine.page_address(page), SIZE)[4096];
process.stdout.write(`iova 0x${handle.value.toString(16)} -> phys 0x${iommu_iova_to_phys(dev, handle.value).toString(16)} (page phys 0x${page.phys.toString(16)})\n`);
process.stdout.write(`dma_common_mmap ${ret}; byte written through the VMA, read through the kernel address: ${back}\n`);
vma.unmap();
dma_free_pages(dev, SIZE, page, handle.value, DMA_BIDIRECTIONAL);
