// The driver's MMIO accessors (include/asm-generic/io.h, lib/iomap.c): pci_iomap / ioremap give an
// __iomem cookie for a BAR; readb..readq and writeb..writeq (value first, as in C) reach the device
// model, which decides what a read returns. Offsets are added as a second argument (no pointer
// arithmetic in JS: readl(base + 4) is readl(base, 4)). Outside the mapping: all-ones, dropped, recorded.

import { findBar, type PciDev } from '../devices/pci_dev';
import type { MmioValue } from '../devices/model';

/** void __iomem *: a mapped window of one BAR. */
export class IoMem {
  readonly pdev: PciDev;
  readonly bar: number;
  /** Where the window starts inside the BAR. */
  readonly base: number;
  readonly length: number;
  #unmapped = false;

  constructor(pdev: PciDev, bar: number, base: number, length: number) {
    this.pdev = pdev;
    this.bar = bar;
    this.base = base;
    this.length = length;
  }

  get unmapped(): boolean {
    return this.#unmapped;
  }

  /** pci_iounmap / iounmap. */
  unmap(): void {
    this.#unmapped = true;
  }
}

function describe(v: unknown): string {
  return v === null ? 'null' : typeof v === 'object' ? (v.constructor?.name ?? 'object') : `${String(v)} of type ${typeof v}`;
}

function checkAddr(fn: string, addr: unknown, offset: unknown): void {
  if (!(addr instanceof IoMem)) throw new TypeError(`${fn}: Expected an __iomem cookie from pci_iomap or ioremap for addr but received ${describe(addr)}`);
  if (typeof offset !== 'number' || !Number.isInteger(offset)) throw new TypeError(`${fn}: Expected an integer for offset but received ${describe(offset)}`);
  if (addr.unmapped) throw new Error(`${fn}: access through an __iomem cookie after iounmap`);
}

/** The access, or false (recorded) when it leaves the mapping or the BAR. */
function inside(addr: IoMem, offset: number, size: number, write: boolean): boolean {
  if (offset >= 0 && offset + size <= addr.length) return true;
  addr.pdev.recordBadAccess(addr.bar, addr.base + offset, size, write);
  return false;
}

function rd(fn: string, addr: IoMem, offset: number, size: number): MmioValue {
  checkAddr(fn, addr, offset);
  if (!inside(addr, offset, size, false)) return size === 8 ? 0xffff_ffff_ffff_ffffn : 2 ** (8 * size) - 1;
  return addr.pdev.mmioRead(addr.bar, addr.base + offset, size);
}

function wr(fn: string, addr: IoMem, offset: number, size: number, value: MmioValue): void {
  checkAddr(fn, addr, offset);
  if (inside(addr, offset, size, true)) addr.pdev.mmioWrite(addr.bar, addr.base + offset, size, value);
}

function checkNum(fn: string, value: unknown, bits: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value)) throw new TypeError(`${fn}: Expected an integer for value but received ${describe(value)}`);
  // C truncates to the register's width; so do we (negative values as two's complement).
  return bits === 32 ? value >>> 0 : value & (2 ** bits - 1);
}

export function readb(addr: IoMem, offset = 0): number { return rd('readb', addr, offset, 1) as number; }
export function readw(addr: IoMem, offset = 0): number { return rd('readw', addr, offset, 2) as number; }
export function readl(addr: IoMem, offset = 0): number { return rd('readl', addr, offset, 4) as number; }
export function readq(addr: IoMem, offset = 0): bigint { return rd('readq', addr, offset, 8) as bigint; }
export function writeb(value: number, addr: IoMem, offset = 0): void { wr('writeb', addr, offset, 1, checkNum('writeb', value, 8)); }
export function writew(value: number, addr: IoMem, offset = 0): void { wr('writew', addr, offset, 2, checkNum('writew', value, 16)); }
export function writel(value: number, addr: IoMem, offset = 0): void { wr('writel', addr, offset, 4, checkNum('writel', value, 32)); }
export function writeq(value: bigint, addr: IoMem, offset = 0): void {
  if (typeof value !== 'bigint') throw new TypeError(`writeq: Expected a bigint for value but received ${describe(value)}`);
  wr('writeq', addr, offset, 8, BigInt.asUintN(64, value));
}
/** ioread32 / iowrite32 (lib/iomap.c): the same accesses on a memory BAR. */
export function ioread8(addr: IoMem, offset = 0): number { return rd('ioread8', addr, offset, 1) as number; }
export function ioread16(addr: IoMem, offset = 0): number { return rd('ioread16', addr, offset, 2) as number; }
export function ioread32(addr: IoMem, offset = 0): number { return rd('ioread32', addr, offset, 4) as number; }
export function iowrite8(value: number, addr: IoMem, offset = 0): void { wr('iowrite8', addr, offset, 1, checkNum('iowrite8', value, 8)); }
export function iowrite16(value: number, addr: IoMem, offset = 0): void { wr('iowrite16', addr, offset, 2, checkNum('iowrite16', value, 16)); }
export function iowrite32(value: number, addr: IoMem, offset = 0): void { wr('iowrite32', addr, offset, 4, checkNum('iowrite32', value, 32)); }
/** lo_hi_writeq (io-64-nonatomic-lo-hi.h): the low 32 bits, then the high 32 bits at offset + 4. */
export function lo_hi_writeq(value: bigint, addr: IoMem, offset = 0): void {
  if (typeof value !== 'bigint') throw new TypeError(`lo_hi_writeq: Expected a bigint for value but received ${describe(value)}`);
  const v = BigInt.asUintN(64, value);
  writel(Number(v & 0xffffffffn), addr, offset);
  writel(Number(v >> 32n), addr, offset + 4);
}
/** lo_hi_readq: the low half, then the high half. */
export function lo_hi_readq(addr: IoMem, offset = 0): bigint {
  const lo = readl(addr, offset);
  const hi = readl(addr, offset + 4);
  return (BigInt(hi) << 32n) | BigInt(lo);
}

/** pci_iomap(pdev, bar, maxlen): the whole BAR when maxlen is 0; null for a BAR the device lacks. */
export function pci_iomap(pdev: PciDev, bar: number, maxlen = 0): IoMem | null {
  if (typeof pdev !== 'object' || pdev === null || !('resources' in pdev)) throw new TypeError(`pci_iomap: Expected a pci_dev for pdev but received ${describe(pdev)}`);
  if (!Number.isInteger(bar) || bar < 0 || bar > 5) throw new RangeError(`pci_iomap: Expected a BAR number from 0 to 5 but received ${describe(bar)}`);
  if (!Number.isInteger(maxlen) || maxlen < 0) throw new RangeError(`pci_iomap: Expected a non-negative integer for maxlen but received ${describe(maxlen)}`);
  const r = pdev.resources[bar];
  if (r === undefined || pdev.isDestroyed) return null;
  return new IoMem(pdev, bar, 0, maxlen === 0 ? r.len : Math.min(maxlen, r.len));
}

/** pci_iounmap. */
export function pci_iounmap(_pdev: PciDev, addr: IoMem): void {
  if (!(addr instanceof IoMem)) throw new TypeError(`pci_iounmap: Expected an __iomem cookie for addr but received ${describe(addr)}`);
  addr.unmap();
}

/** ioremap(phys, size): a window of a device's BAR by bus address (pci_resource_start + offset); null when nothing is there. */
export function ioremap(phys: bigint, size: number): IoMem | null {
  if (typeof phys !== 'bigint') throw new TypeError(`ioremap: Expected a bigint for phys_addr but received ${describe(phys)}`);
  if (!Number.isInteger(size) || size <= 0) throw new RangeError(`ioremap: Expected a positive integer for size but received ${describe(size)}`);
  const hit = findBar(phys, size);
  return hit === null ? null : new IoMem(hit.pdev, hit.bar, hit.offset, size);
}

/** iounmap. */
export function iounmap(addr: IoMem): void {
  if (!(addr instanceof IoMem)) throw new TypeError(`iounmap: Expected an __iomem cookie for addr but received ${describe(addr)}`);
  addr.unmap();
}
