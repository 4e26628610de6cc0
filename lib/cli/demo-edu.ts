// `dmamem demo`, the device section: QEMU's edu device in a worker thread behind the IOMMU, driven
// as a Linux driver drives it (28-bit mask, pci_iomap, request_irq), a DMA round trip by interrupt,
// then a provoked fault (DMA to an IOVA never mapped) and the DMAR record the IOMMU made of it.

import type { Machine } from '../mm/machine';
import { GFP_KERNEL } from '../mm/gfp';
import { DMA_BIT_MASK } from '../dma/constants';
import { dma_alloc_coherent, dma_free_coherent, dma_set_mask_and_coherent } from '../dma/mapping';
import { iommu_set_fault_handler } from '../dma/iommu';
import { createPciDevice } from '../devices/pci_dev';
import {
  EDU_DMA_IRQ, EDU_DMA_IRQ_VALUE, EDU_DMA_RUN, EDU_DMA_START, EDU_DMA_TO_PCI, EDU_ID, EDU_REG_DMA_CMD, EDU_REG_DMA_CNT,
  EDU_REG_DMA_DST, EDU_REG_DMA_SRC, EDU_REG_ID, EDU_REG_IRQ_ACK, EDU_REG_IRQ_STATUS,
} from '../devices/edu';
import { ioread32, iowrite32, pci_iomap, writeq, type IoMem } from '../drivers/io';
import { wmb } from '../drivers/barriers';
import { IRQ_HANDLED, IRQ_NONE, free_irq, pci_alloc_irq_vectors, pci_free_irq_vectors, pci_irq_vector, request_irq, PCI_IRQ_INTX } from '../drivers/irq';
import { Completion, msecs_to_jiffies, reinit_completion, complete, wait_for_completion_timeout } from '../drivers/completion';
import { pci_enable_device, pci_set_master } from '../drivers/pci';
import type { DemoStep } from './demo';

const LEN = 4096;

export interface EduDemoReport {
  ok: boolean;
  device: { slot: string; id: string; inWorker: boolean; iommu: boolean; dmaMask: string };
  roundTrip: { bytes: number; iova: string; interrupts: number; equal: boolean } | null;
  fault: { iova: string; write: boolean; reason: string; reasonText: string; dmar: string; bytesChanged: number } | null;
  steps: DemoStep[];
}

const hex = (v: number | bigint): string => `0x${v.toString(16)}`;

/** One edu transfer by interrupt: toDevice RAM -> device buffer, else device buffer -> RAM. */
async function transfer(io: IoMem, done: Completion, ram: bigint, toDevice: boolean): Promise<boolean> {
  reinit_completion(done);
  const dev = BigInt(EDU_DMA_START);
  writeq(toDevice ? ram : dev, io, EDU_REG_DMA_SRC);
  writeq(toDevice ? dev : ram, io, EDU_REG_DMA_DST);
  writeq(BigInt(LEN), io, EDU_REG_DMA_CNT);
  wmb();
  writeq(BigInt(EDU_DMA_RUN | EDU_DMA_IRQ | (toDevice ? 0 : EDU_DMA_TO_PCI)), io, EDU_REG_DMA_CMD);
  return (await wait_for_completion_timeout(done, msecs_to_jiffies(5000))) !== 0;
}

/** Plays the edu section on `machine`; removes the device and frees what it allocated. */
export async function playEduDemo(machine: Machine): Promise<EduDemoReport> {
  const steps: DemoStep[] = [];
  const step = (name: string, call: string, result: string, ok: boolean): boolean => {
    steps.push({ step: name, call, result, ok });
    return ok;
  };
  const pdev = createPciDevice(machine, { type: 'edu', worker: true, device: { iommu: true } });
  const report: EduDemoReport = {
    ok: false,
    device: { slot: pdev.dev.name, id: `${pdev.vendor.toString(16)}:${pdev.device.toString(16)}`, inWorker: pdev.inWorker, iommu: true, dmaMask: '' },
    roundTrip: null, fault: null, steps,
  };
  const done = new Completion();
  const emitting = machine.emitWarnings;
  let interrupts = 0;
  let irq = -1;
  let io: IoMem | null = null;
  const handle = { value: 0n };
  let cpu: number | null = null;
  try {
    pci_enable_device(pdev);
    step('dma mask', 'dma_set_mask_and_coherent(dev, DMA_BIT_MASK(28))', String(dma_set_mask_and_coherent(pdev.dev, DMA_BIT_MASK(28))), pdev.dev.dma_mask === DMA_BIT_MASK(28));
    report.device.dmaMask = hex(pdev.dev.dma_mask ?? 0n);
    io = pci_iomap(pdev, 0, 0)!;
    const id = ioread32(io, EDU_REG_ID);
    if (!step('identify', 'ioread32(bar0 + 0x00)', hex(id), id === EDU_ID)) return report;
    pci_alloc_irq_vectors(pdev, 1, 1, PCI_IRQ_INTX);
    irq = pci_irq_vector(pdev, 0);
    const mmio = io;
    const ret = request_irq(irq, () => {
      const st = ioread32(mmio, EDU_REG_IRQ_STATUS);
      if (st === 0 || st === 0xffffffff) return IRQ_NONE;
      iowrite32(st, mmio, EDU_REG_IRQ_ACK);
      interrupts++;
      if ((st & EDU_DMA_IRQ_VALUE) !== 0) complete(done);
      return IRQ_HANDLED;
    }, 0, 'edu-demo', pdev);
    step('interrupt', `request_irq(${irq}, edu_irq, 0, "edu-demo", pdev)`, String(ret), ret === 0);
    pci_set_master(pdev);

    cpu = dma_alloc_coherent(pdev.dev, LEN, handle, GFP_KERNEL);
    if (!step('coherent buffer', `dma_alloc_coherent(dev, ${LEN}, &handle, GFP_KERNEL)`, cpu === null ? 'NULL' : `iova ${hex(handle.value)}`, cpu !== null && handle.value < 1n << 28n)) return report;
    const buf = machine.view(cpu!, LEN);
    for (let i = 0; i < LEN; i++) buf[i] = (i * 13 + 1) & 0xff;
    const pattern = Buffer.from(buf);
    const out = await transfer(io, done, handle.value, true);
    buf.fill(0);
    const back = out && await transfer(io, done, handle.value, false);
    const equal = back && buf.equals(pattern);
    report.roundTrip = { bytes: LEN, iova: hex(handle.value), interrupts, equal };
    step('DMA round trip', 'RAM -> edu buffer -> RAM through the IOMMU, each waited for by interrupt 0x100', `${interrupts} interrupts, bytes ${equal ? 'equal' : 'DIFFERENT'}`, equal);

    // The provoked fault: a device write to an IOVA nobody mapped. The handler returns -ENOSYS so
    // the kernel's DMAR line is still printed (recorded in machine.warnings).
    const bad = 0x0400_0000n;
    iommu_set_fault_handler(pdev.dev.iommu!, () => -38, null);
    const before = machine.read(machine.segments[0]!.address, machine.segments[0]!.byteLength);
    const warned = machine.warnings.length;
    // The fault's WARNs are expected: recorded (and shown in the report), not printed on stderr,
    // up to the device's removal (the worker's own report of the failed write comes later).
    machine.emitWarnings = false;
    await transfer(io, done, bad, false);
    const after = machine.read(machine.segments[0]!.address, machine.segments[0]!.byteLength);
    let changed = 0;
    for (let i = 0; i < after.length; i++) if (after[i] !== before[i]) changed++;
    const f = pdev.dev.iommu!.faults[0];
    const dmar = machine.warnings.slice(warned).map((w) => w.message).find((s) => s.startsWith('DMAR:')) ?? '';
    if (f !== undefined) report.fault = { iova: hex(f.iova), write: f.write, reason: `0x${f.reason.toString(16).padStart(2, '0')}`, reasonText: f.reasonText, dmar, bytesChanged: changed };
    step('IOMMU fault', `edu DMA to the unmapped IOVA ${hex(bad)}`, f === undefined ? 'no fault recorded' : dmar, f !== undefined && f.iova === bad && f.write && changed === 0 && dmar !== '');
  } finally {
    if (cpu !== null) dma_free_coherent(pdev.dev, LEN, cpu, handle.value);
    if (irq >= 0) free_irq(irq, pdev);
    pci_free_irq_vectors(pdev);
    await pdev.destroy();
    machine.emitWarnings = emitting;
  }
  step('remove', 'free_irq(); pdev teardown (the worker thread ends)', pdev.isDestroyed ? 'removed' : 'still there', pdev.isDestroyed);
  report.ok = steps.every((s) => s.ok);
  return report;
}

/** The text lines of the section. */
export function eduDemoLines(r: EduDemoReport): string[] {
  const out = ['', `Device edu ${r.device.id} at ${r.device.slot}: ${r.device.inWorker ? 'in a worker thread' : 'inline'}, behind the IOMMU, dma_mask ${r.device.dmaMask}`];
  if (r.roundTrip !== null) out.push(`  DMA round trip: ${r.roundTrip.bytes} bytes at IOVA ${r.roundTrip.iova}, ${r.roundTrip.interrupts} interrupts, bytes ${r.roundTrip.equal ? 'equal' : 'DIFFERENT'}`);
  if (r.fault !== null) {
    out.push(`  provoked fault: ${r.fault.write ? 'write' : 'read'} at ${r.fault.iova}, reason ${r.fault.reason} (${r.fault.reasonText}), ${r.fault.bytesChanged} bytes of RAM changed`);
    out.push(`  ${r.fault.dmar}`);
  }
  out.push('  Steps');
  for (const s of r.steps) out.push(`    ${s.ok ? 'ok  ' : 'FAIL'} ${s.step.padEnd(28)} ${s.call}\n         -> ${s.result}`);
  return out;
}
