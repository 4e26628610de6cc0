// A Linux-shaped PCI driver for QEMU's edu device, line for line what a kernel module does:
// probe (enable, 28-bit DMA mask, pci_iomap, the ID check, one interrupt vector, request_irq),
// factorial by interrupt, DMA through dma_alloc_coherent memory and through a streaming mapping,
// and remove. The tests (test 63) run it on direct and IOMMU devices, inline and in a worker.

import {
  DMA_BIT_MASK, DMA_FROM_DEVICE, GFP_KERNEL, complete, Completion, EDU_DMA_IRQ, EDU_DMA_IRQ_VALUE, EDU_DMA_RUN, EDU_DMA_START, EDU_DMA_TO_PCI, EDU_FACT_IRQ, EDU_ID,
  EDU_REG_DMA_CMD, EDU_REG_DMA_CNT, EDU_REG_DMA_DST, EDU_REG_DMA_SRC, EDU_REG_FACT, EDU_REG_ID, EDU_REG_IRQ_ACK,
  EDU_REG_IRQ_STATUS, EDU_REG_LIVENESS, EDU_REG_STATUS, EDU_STATUS_IRQFACT, EDU_DEVICE_ID, EDU_VENDOR_ID,
  IRQF_SHARED, IRQ_HANDLED, IRQ_NONE, PCI_IRQ_INTX, PCI_IRQ_MSI, dma_alloc_coherent, dma_free_coherent, dma_map_single,
  dma_mapping_error, dma_set_mask_and_coherent, dma_unmap_single, free_irq, init_completion, ioread32, iowrite32,
  msecs_to_jiffies, pci_alloc_irq_vectors, pci_disable_device, pci_enable_device, pci_free_irq_vectors, pci_get_drvdata,
  pci_iomap, pci_iounmap, pci_irq_vector, pci_release_regions, pci_request_regions, pci_set_drvdata, pci_set_master,
  readq, reinit_completion, request_irq, wait_for_completion_timeout, wmb, writeq, type IoMem, type PciDev, type pci_driver,
} from '../../lib/index';

const ENODEV = 19;
const ENOMEM = 12;
const EIO = 5;
const ETIMEDOUT = 110;
const EBUSY = 16;

/** struct edu_dev: the driver's per-device state. */
export interface EduDev {
  pdev: PciDev;
  ioaddr: IoMem;
  irq: number;
  msi: boolean;
  fact_done: Completion;
  dma_done: Completion;
  /** Interrupts this driver claimed (IRQ_HANDLED). */
  irqs: number;
  /** The last irq_status value the handler acknowledged. */
  lastStatus: number;
}

/** The interrupt handler: not ours when the status is 0 (or all-ones: the device is gone). */
function edu_irq(_irq: number, dev_id: unknown): number {
  const edu = dev_id as EduDev;
  const status = ioread32(edu.ioaddr, EDU_REG_IRQ_STATUS);
  if (status === 0 || status === 0xffffffff) return IRQ_NONE;
  iowrite32(status, edu.ioaddr, EDU_REG_IRQ_ACK);
  edu.irqs++;
  edu.lastStatus = status;
  if ((status & EDU_FACT_IRQ) !== 0) complete(edu.fact_done);
  if ((status & EDU_DMA_IRQ_VALUE) !== 0) complete(edu.dma_done);
  return IRQ_HANDLED;
}

/** Module parameter: ask for MSI (falls back to INTx). */
export const eduParams = { use_msi: false };

function edu_probe(pdev: PciDev): number {
  let ret = pci_enable_device(pdev);
  if (ret !== 0) return ret;
  // edu's DMA engine drives 28 address bits: the kernel must not hand it anything higher.
  ret = dma_set_mask_and_coherent(pdev.dev, DMA_BIT_MASK(28));
  if (ret !== 0) {
    pci_disable_device(pdev);
    return ret;
  }
  pci_request_regions(pdev, 'edu');
  const ioaddr = pci_iomap(pdev, 0, 0);
  if (ioaddr === null) {
    pci_release_regions(pdev);
    pci_disable_device(pdev);
    return -ENOMEM;
  }
  if (ioread32(ioaddr, EDU_REG_ID) !== EDU_ID) {
    pci_iounmap(pdev, ioaddr);
    pci_release_regions(pdev);
    pci_disable_device(pdev);
    return -ENODEV;
  }
  const nvec = pci_alloc_irq_vectors(pdev, 1, 1, eduParams.use_msi ? PCI_IRQ_MSI | PCI_IRQ_INTX : PCI_IRQ_INTX);
  if (nvec < 0) {
    pci_iounmap(pdev, ioaddr);
    pci_release_regions(pdev);
    pci_disable_device(pdev);
    return nvec;
  }
  const edu: EduDev = {
    pdev, ioaddr, irq: pci_irq_vector(pdev, 0), msi: eduParams.use_msi && pdev.msiVectors > 0,
    fact_done: init_completion(), dma_done: init_completion(), irqs: 0, lastStatus: 0,
  };
  ret = request_irq(edu.irq, edu_irq, IRQF_SHARED, 'edu', edu);
  if (ret !== 0) {
    pci_free_irq_vectors(pdev);
    pci_iounmap(pdev, ioaddr);
    pci_release_regions(pdev);
    pci_disable_device(pdev);
    return ret;
  }
  pci_set_master(pdev);
  pci_set_drvdata(pdev, edu);
  return 0;
}

function edu_remove(pdev: PciDev): void {
  const edu = pci_get_drvdata<EduDev>(pdev);
  if (edu === undefined) return;
  free_irq(edu.irq, edu);
  pci_free_irq_vectors(pdev);
  pci_iounmap(pdev, edu.ioaddr);
  pci_release_regions(pdev);
  pci_disable_device(pdev);
  pci_set_drvdata(pdev, undefined);
}

export const edu_driver: pci_driver = {
  name: 'edu',
  id_table: [{ vendor: EDU_VENDOR_ID, device: EDU_DEVICE_ID }],
  probe: edu_probe,
  remove: edu_remove,
};

/** The liveness check: the device answers with the bitwise NOT. */
export function edu_alive(edu: EduDev, value: number): boolean {
  iowrite32(value, edu.ioaddr, EDU_REG_LIVENESS);
  return ioread32(edu.ioaddr, EDU_REG_LIVENESS) === (~value >>> 0);
}

/** n! (32-bit, wrapping) computed by the device, waited for by interrupt; -ETIMEDOUT after 1 s. */
export async function edu_factorial(edu: EduDev, n: number): Promise<number> {
  reinit_completion(edu.fact_done);
  iowrite32(EDU_STATUS_IRQFACT, edu.ioaddr, EDU_REG_STATUS);
  iowrite32(n, edu.ioaddr, EDU_REG_FACT);
  const left = await wait_for_completion_timeout(edu.fact_done, msecs_to_jiffies(1000));
  if (left === 0) return -ETIMEDOUT;
  return ioread32(edu.ioaddr, EDU_REG_FACT);
}

/**
 * One transfer between RAM at bus address `ram` and the device buffer (offset `devOff`), waited for
 * by the DMA interrupt. toDevice: RAM -> device. 0, -EBUSY (a transfer runs), -ETIMEDOUT.
 */
export async function edu_dma(edu: EduDev, ram: bigint, devOff: number, len: number, toDevice: boolean): Promise<number> {
  const io = edu.ioaddr;
  if ((readq(io, EDU_REG_DMA_CMD) & BigInt(EDU_DMA_RUN)) !== 0n) return -EBUSY;
  reinit_completion(edu.dma_done);
  const dev = BigInt(EDU_DMA_START + devOff);
  writeq(toDevice ? ram : dev, io, EDU_REG_DMA_SRC);
  writeq(toDevice ? dev : ram, io, EDU_REG_DMA_DST);
  writeq(BigInt(len), io, EDU_REG_DMA_CNT);
  wmb(); // the addresses before the start bit
  writeq(BigInt(EDU_DMA_RUN | EDU_DMA_IRQ | (toDevice ? 0 : EDU_DMA_TO_PCI)), io, EDU_REG_DMA_CMD);
  const left = await wait_for_completion_timeout(edu.dma_done, msecs_to_jiffies(1000));
  return left === 0 ? -ETIMEDOUT : 0;
}

/**
 * The DMA round trip: a pattern written by the CPU into dma_alloc_coherent memory goes to the
 * device, comes back into a second buffer through a streaming mapping, and is compared.
 * 0 or a negative errno (-EIO when the bytes differ).
 */
export async function edu_dma_roundtrip(edu: EduDev, len = 4096): Promise<number> {
  const dev = edu.pdev.dev;
  const m = dev.machine;
  const handle = { value: 0n };
  const cpu = dma_alloc_coherent(dev, len, handle, GFP_KERNEL);
  if (cpu === null) return -ENOMEM;
  const page = m.alloc_pages(GFP_KERNEL, 0);
  if (page === null) {
    dma_free_coherent(dev, len, cpu, handle.value);
    return -ENOMEM;
  }
  try {
    const src = m.view(cpu, len);
    for (let i = 0; i < len; i++) src[i] = (i * 7 + 3) & 0xff;
    let ret = await edu_dma(edu, handle.value, 0, len, true);
    if (ret !== 0) return ret;
    const back = m.page_address(page);
    m.view(back, len).fill(0);
    const h = dma_map_single(dev, back, len, DMA_FROM_DEVICE);
    if (dma_mapping_error(dev, h) !== 0) return -ENOMEM;
    ret = await edu_dma(edu, h, 0, len, false);
    dma_unmap_single(dev, h, len, DMA_FROM_DEVICE);
    if (ret !== 0) return ret;
    return Buffer.compare(m.view(back, len), src) === 0 ? 0 : -EIO;
  } finally {
    m.__free_pages(page, 0);
    dma_free_coherent(dev, len, cpu, handle.value);
  }
}
