// IOMMU fault reporting, the driver's side: reads the fault-recording slots the hardware side filled
// (drivers/iommu/intel/dmar.c, dmar_fault), logs each fault, calls the domain's fault handler
// (report_iommu_fault) and prints the DMAR line when nobody handled it.

import type { Device } from './device';
import {
  F_FLAGS, F_IOVA_HI, F_IOVA_LO, F_REASON, F_SOURCE, F_VALID, FAULT_SLOT_WORDS, FAULT_SLOTS,
  REG_FAULT_BASE, REG_FAULT_OVERFLOW, dmar_fault_reason_text,
} from './iommu_regs';

/** report_iommu_fault flags (include/linux/iommu.h). */
export const IOMMU_FAULT_READ = 0x0;
export const IOMMU_FAULT_WRITE = 0x1;
/** Fault records a domain keeps (the oldest go first). */
export const FAULT_LOG_MAX = 1024;

/** One IOMMU fault, as the domain's fault log holds it. */
export interface IommuFault {
  /** The requester (dev_name). */
  readonly device: string;
  /** The IOVA the device used (the page's first byte or the exact byte, as the access gave it). */
  readonly iova: bigint;
  /** IOMMU_FAULT_READ or IOMMU_FAULT_WRITE. */
  readonly flags: number;
  readonly write: boolean;
  /** The DMAR fault reason (0x04 beyond MGAW, 0x05 no write permission, 0x06 no read permission, 0x07 bad table pointer). */
  readonly reason: number;
  /** The kernel's text for the reason. */
  readonly reasonText: string;
  /** The bus engine's source id (which engine of the device took it). */
  readonly source: number;
}

/**
 * iommu_fault_handler_t: (domain, dev, iova, flags, token) => 0 when handled, else -ENOSYS (or any
 * non-zero value) to let the fault be printed too.
 */
export type iommu_fault_handler_t = (domain: unknown, dev: Device, iova: bigint, flags: number, token: unknown) => number;

/** The DMAR line the kernel prints for an unhandled fault. */
export function dmarFaultLine(f: IommuFault): string {
  return `DMAR: [DMA ${f.write ? 'Write' : 'Read'} NO_PASID] Request device [${f.device}] fault addr 0x${f.iova.toString(16)} ` +
    `[fault reason 0x${f.reason.toString(16).padStart(2, '0')}] ${f.reasonText}`;
}

/** Overflow counts already reported, per register block. */
const overflowSeen = new WeakMap<Int32Array, number>();

/**
 * Takes every valid slot out of the register block in sequence order, logs it and reports it.
 * A handler that throws counts as not handling the fault; its error is printed with the DMAR line.
 */
export function drainFaults(regs: Int32Array, dev: Device, domain: unknown, log: IommuFault[], handler: iommu_fault_handler_t | null, token: unknown): number {
  const found: { seq: number; slot: number }[] = [];
  for (let s = 0; s < FAULT_SLOTS; s++) {
    const b = REG_FAULT_BASE + s * FAULT_SLOT_WORDS;
    const seq = Atomics.load(regs, b + F_VALID);
    if (seq !== 0) found.push({ seq, slot: b });
  }
  found.sort((x, y) => x.seq - y.seq);
  for (const { slot } of found) {
    const flags = regs[slot + F_FLAGS]!;
    const reason = regs[slot + F_REASON]!;
    const iova = (BigInt(regs[slot + F_IOVA_HI]! >>> 0) << 32n) | BigInt(regs[slot + F_IOVA_LO]! >>> 0);
    const fault: IommuFault = Object.freeze({
      device: dev.name, iova, flags, write: flags === IOMMU_FAULT_WRITE, reason,
      reasonText: dmar_fault_reason_text(reason), source: regs[slot + F_SOURCE]!,
    });
    // Free the slot before reporting, so that a handler's own DMA can record a new fault.
    Atomics.store(regs, slot + F_VALID, 0);
    if (log.length >= FAULT_LOG_MAX) log.shift();
    log.push(fault);
    let handled = false;
    let failure = '';
    if (handler !== null) {
      try {
        handled = handler(domain, dev, iova, flags, token) === 0;
      } catch (err) {
        failure = ` (fault handler threw: ${err instanceof Error ? err.message : String(err)})`;
      }
    }
    if (!handled) dev.machine.warn(dmarFaultLine(fault) + failure);
  }
  const overflow = Atomics.load(regs, REG_FAULT_OVERFLOW);
  if (overflow !== (overflowSeen.get(regs) ?? 0)) {
    dev.machine.warn(`DMAR: ${dev.name}: ${overflow - (overflowSeen.get(regs) ?? 0)} faults lost: every fault-recording slot was full (primary fault overflow)`);
    overflowSeen.set(regs, overflow);
  }
  return found.length;
}
