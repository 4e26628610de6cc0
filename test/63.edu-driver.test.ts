// The example edu driver (examples/edu/edu_driver.ts) on QEMU's edu model: direct and IOMMU, inline
// and in a worker: probe, identification, liveness, factorial by interrupt, a DMA round trip through
// dma_alloc_coherent memory and a streaming mapping, remove. Negative: DMA to an unmapped IOVA is a
// fault that changes no byte; DMA after dma_unmap_single is a DMA-API debug report; a buffer above
// 256 MiB for the 28-bit device fails to map on a direct device and gets a low IOVA behind an IOMMU.

import assert from 'node:assert/strict';
import { Machine } from '../lib/mm/machine';
import '../lib/dma/device';
import { GFP_KERNEL, PAGE_SIZE } from '../lib/mm/gfp';
import type { Page } from '../lib/mm/page';
import { page_to_phys } from '../lib/mm/kernel';
import { DMA_FROM_DEVICE, DMA_MAPPING_ERROR } from '../lib/dma/constants';
import { dma_alloc_coherent, dma_map_single, dma_mapping_error, dma_unmap_single } from '../lib/dma/mapping';
import { createPciDevice, type PciDev } from '../lib/devices/pci_dev';
import { EDU_DMA_IRQ_VALUE, EDU_FACT_IRQ, EDU_ID, EDU_REG_ID } from '../lib/devices/edu';
import { ioread32 } from '../lib/drivers/io';
import { pci_driver_of, pci_get_drvdata, pci_register_driver, pci_unregister_driver } from '../lib/drivers/pci';
import { edu_alive, edu_dma, edu_dma_roundtrip, edu_driver, edu_factorial, eduParams, type EduDev } from '../examples/edu/edu_driver';
import { expectNoLeaks } from './helpers/leaks';
import { until } from './helpers/until';

const MiB = 1024 * 1024;
const LOW_BASE = 64 * MiB; // below 256 MiB: a 28-bit device reaches it directly

describe('63 the example edu driver', () => {
  expectNoLeaks();
  let m: Machine;
  const devs: PciDev[] = [];
  const held: Page[] = [];
  const newMachine = (physBase: number): Machine => {
    m = new Machine({ name: 'edu63', ramPerNode: 8 * MiB, physBase, cmaSize: 0, hugepages: 'off', emitWarnings: false });
    return m;
  };
  /** An edu device with the example driver bound to it. */
  const probe = (iommu: boolean, worker: boolean, debug = true): { pdev: PciDev; edu: EduDev } => {
    const pdev = createPciDevice(m, { worker, device: { iommu: iommu ? { strict: true } : false, debug } });
    devs.push(pdev);
    assert.equal(pci_register_driver(edu_driver), 0);
    assert.equal(pci_driver_of(pdev), edu_driver, 'probe() succeeded: the driver is bound');
    const edu = pci_get_drvdata<EduDev>(pdev)!;
    assert.ok(edu !== undefined);
    return { pdev, edu };
  };
  const warnings = (re: RegExp): string[] => m.warnings.map((w) => w.message).filter((s) => re.test(s));
  afterEach(async () => {
    pci_unregister_driver(edu_driver);
    eduParams.use_msi = false;
    for (const p of devs.splice(0)) await p.destroy();
    if (m !== undefined && !m.isDestroyed) for (const p of held.splice(0)) m.__free_pages(p, 0);
    held.length = 0;
    m?.destroy();
  });

  for (const iommu of [false, true]) {
    for (const worker of [false, true]) {
      it(`${iommu ? 'IOMMU' : 'direct'} device, ${worker ? 'in a worker' : 'inline'}: identification, liveness, factorial by interrupt, DMA round trip (coherent + streaming), remove`, async () => {
        // Behind the IOMMU the RAM may sit above 256 MiB: the IOVAs the 28-bit device gets are low.
        newMachine(iommu ? 1024 * MiB : LOW_BASE);
        const { pdev, edu } = probe(iommu, worker);
        assert.equal(ioread32(edu.ioaddr, EDU_REG_ID), EDU_ID);
        assert.equal(pdev.dev.dma_mask, (1n << 28n) - 1n, 'probe set the 28-bit mask');
        assert.equal(edu_alive(edu, 0x12345678), true);
        assert.equal(edu_alive(edu, 0), true);
        assert.equal(await edu_factorial(edu, 10), 3628800);
        assert.equal(edu.lastStatus & EDU_FACT_IRQ, EDU_FACT_IRQ, 'the factorial interrupt value');
        assert.equal(await edu_factorial(edu, 13), 6227020800 % 2 ** 32, '32-bit wrapping');
        const irqs = edu.irqs;
        assert.equal(await edu_dma_roundtrip(edu, 4096), 0, 'the bytes came back through the device');
        assert.equal(edu.irqs, irqs + 2, 'one DMA interrupt per transfer');
        assert.equal(edu.lastStatus, EDU_DMA_IRQ_VALUE);
        assert.equal(await edu_dma_roundtrip(edu, 100), 0, 'a short transfer too');
        assert.deepEqual(warnings(/DMAR|DMA-API|EDU/), [], 'no fault, no DMA-API report, no device complaint');
        if (iommu) assert.equal(pdev.dev.iommu!.faults.length, 0);
        pci_unregister_driver(edu_driver);
        assert.equal(pci_driver_of(pdev), null, 'removed');
        assert.equal(pci_get_drvdata(pdev), undefined);
      });
    }
  }

  it('with MSI (module parameter use_msi), in a worker behind the IOMMU: factorial and round trip by the MSI vector', async () => {
    newMachine(1024 * MiB);
    eduParams.use_msi = true;
    const { pdev, edu } = probe(true, true);
    assert.equal(edu.msi, true);
    assert.notEqual(edu.irq, pdev.irq, 'an MSI vector, not the INTx line');
    assert.equal(await edu_factorial(edu, 5), 120);
    assert.equal(await edu_dma_roundtrip(edu, 4096), 0);
  });

  for (const worker of [false, true]) {
    it(`DMA to an unmapped IOVA (${worker ? 'worker' : 'inline'}): an IOMMU fault record and the DMAR line, not one byte of RAM changed`, async () => {
      newMachine(1024 * MiB);
      const { pdev, edu } = probe(true, worker, false);
      const seg = m.segments[0]!;
      const before = m.read(seg.address, seg.byteLength);
      const iova = 0x0800_0000n; // below the 28-bit limit, never mapped
      assert.equal(await edu_dma(edu, iova + 0x40n, 0, 256, false), 0, 'edu finishes the transfer (with an error inside) and interrupts');
      assert.ok(m.read(seg.address, seg.byteLength).equals(before), 'no byte changed');
      const faults = pdev.dev.iommu!.faults;
      assert.equal(faults.length, 1);
      assert.equal(faults[0]!.iova, iova);
      assert.equal(faults[0]!.write, true);
      assert.equal(faults[0]!.reason, 0x05);
      assert.equal(warnings(/^DMAR: \[DMA Write NO_PASID\] Request device \[0000:00:[0-9a-f]{2}\.0\] fault addr 0x8000000 \[fault reason 0x05\] PTE Write access is not set$/).length, 1);
      await until(() => warnings(/EDU: DMA write to 0x0000000008000040 failed \(MemTxResult 4\)/).length === 1, "the model's error (edu's log line)");
    });

    it(`DMA after dma_unmap_single on a direct device (${worker ? 'worker' : 'inline'}): a DMA-API debug report (the bus itself lets it through)`, async () => {
      newMachine(LOW_BASE);
      const { pdev, edu } = probe(false, worker, true);
      const page = m.alloc_pages(GFP_KERNEL, 0)!;
      held.push(page);
      const virt = m.page_address(page);
      const h = dma_map_single(pdev.dev, virt, PAGE_SIZE, DMA_FROM_DEVICE);
      assert.equal(dma_mapping_error(pdev.dev, h), 0);
      assert.equal(await edu_dma(edu, h, 0, 64, false), 0);
      assert.deepEqual(warnings(/DMA-API/), [], 'while mapped: no report');
      dma_unmap_single(pdev.dev, h, PAGE_SIZE, DMA_FROM_DEVICE);
      assert.equal(await edu_dma(edu, h, 0, 64, false), 0);
      const reports = warnings(/^DMA-API: /);
      assert.equal(reports.length, 1, reports.join('\n'));
      assert.match(reports[0]!, new RegExp(`device write to memory not mapped for it .*\\[device address=0x${h.toString(16)}\\] \\[size=64 bytes\\]; the device has no live mapping`));
    });
  }

  for (const worker of [false, true]) {
    it(`a buffer above 256 MiB for the 28-bit device (${worker ? 'worker' : 'inline'}): direct -> DMA_MAPPING_ERROR, no coherent memory; IOMMU -> an IOVA below 2^28 that works`, async () => {
      newMachine(1024 * MiB);
      const direct = probe(false, worker, false);
      const viaIommu = probe(true, worker, false);
      const page = m.alloc_pages(GFP_KERNEL, 0)!;
      held.push(page);
      assert.ok(page_to_phys(page) >= 1n << 28n, 'the buffer sits above 256 MiB');
      const virt = m.page_address(page);
      // Direct, no swiotlb: the kernel refuses the mapping (and warns once).
      const hd = dma_map_single(direct.pdev.dev, virt, PAGE_SIZE, DMA_FROM_DEVICE);
      assert.equal(hd, DMA_MAPPING_ERROR);
      assert.notEqual(dma_mapping_error(direct.pdev.dev, hd), 0);
      assert.equal(warnings(/dma_direct_map_page: .* overflow/).length, 1);
      assert.equal(dma_alloc_coherent(direct.pdev.dev, PAGE_SIZE, { value: 0n }, GFP_KERNEL), null, 'no memory the device can reach');
      assert.equal(await edu_dma_roundtrip(direct.edu, 4096), -12, 'the driver gets -ENOMEM');
      // IOMMU: the IOVA allocator honours the mask; the device reaches the high page through it.
      const hi = dma_map_single(viaIommu.pdev.dev, virt, PAGE_SIZE, DMA_FROM_DEVICE);
      assert.equal(dma_mapping_error(viaIommu.pdev.dev, hi), 0);
      assert.ok(hi < 1n << 28n, `IOVA 0x${hi.toString(16)} below 2^28`);
      m.view(virt, PAGE_SIZE).fill(0);
      assert.equal(await edu_dma(viaIommu.edu, hi, 0, 64, false), 0);
      dma_unmap_single(viaIommu.pdev.dev, hi, PAGE_SIZE, DMA_FROM_DEVICE);
      assert.equal(await edu_dma_roundtrip(viaIommu.edu, 4096), 0);
      assert.deepEqual(warnings(/DMAR|EDU/), []);
    });
  }
});
