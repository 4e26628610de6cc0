// QEMU's edu teaching device (hw/misc/edu.c, docs/specs/edu.rst), register for register: the
// identification and liveness registers, the factorial computed in the device's own thread, the
// interrupt status / raise / acknowledge registers (INTx level or one MSI vector), and the DMA
// engine with its 4 KiB buffer at device address 0x40000 and its dma_mask property.

import { MEMTX_OK } from './bus_engine';
import type { DeviceContext, DeviceModel, DeviceType, MmioValue } from './model';

export const EDU_VENDOR_ID = 0x1234;
export const EDU_DEVICE_ID = 0x11e8;
/** Register offsets of BAR 0. */
export const EDU_REG_ID = 0x00;
export const EDU_REG_LIVENESS = 0x04;
export const EDU_REG_FACT = 0x08;
export const EDU_REG_STATUS = 0x20;
export const EDU_REG_IRQ_STATUS = 0x24;
export const EDU_REG_IRQ_RAISE = 0x60;
export const EDU_REG_IRQ_ACK = 0x64;
export const EDU_REG_DMA_SRC = 0x80;
export const EDU_REG_DMA_DST = 0x88;
export const EDU_REG_DMA_CNT = 0x90;
export const EDU_REG_DMA_CMD = 0x98;
/** Status bits. */
export const EDU_STATUS_COMPUTING = 0x01;
export const EDU_STATUS_IRQFACT = 0x80;
/** DMA command bits: start, direction (0: RAM to device, 1: device to RAM), interrupt when done. */
export const EDU_DMA_RUN = 0x1;
export const EDU_DMA_TO_PCI = 0x2;
export const EDU_DMA_IRQ = 0x4;
/** Interrupt values. */
export const EDU_FACT_IRQ = 0x001;
export const EDU_DMA_IRQ_VALUE = 0x100;
/** The device buffer: device addresses 0x40000..0x40fff. */
export const EDU_DMA_START = 0x40000;
export const EDU_DMA_SIZE = 4096;
/** The identification value: major 1, minor 0, then 0xed. */
export const EDU_ID = 0x010000ed;
/** The default dma_mask property: 28 bits. */
export const EDU_DEFAULT_DMA_MASK = (1n << 28n) - 1n;

const M32 = 0xffffffff;
const hex16 = (v: bigint): string => `0x${v.toString(16).padStart(16, '0')}`;

/**
 * The edu model. Its register file lives in BAR 0's shared memory at the register offsets (the
 * DMA registers as 64-bit words), its DMA buffer at 0x40000 of the same memory (not visible through
 * MMIO, as on QEMU, where reads there give all-ones).
 */
class EduDevice implements DeviceModel {
  readonly #ctx: DeviceContext;
  readonly #r: DataView;
  readonly #buf: Uint8Array;
  readonly #dmaMask: bigint;
  readonly #dmaDelayMs: number;
  readonly #factDelayMs: number;

  constructor(ctx: DeviceContext) {
    this.#ctx = ctx;
    this.#r = ctx.bars[0]!;
    this.#buf = new Uint8Array(this.#r.buffer, this.#r.byteOffset + EDU_DMA_START, EDU_DMA_SIZE);
    const o = ctx.options;
    this.#dmaMask = typeof o.dmaMask === 'bigint' ? o.dmaMask : EDU_DEFAULT_DMA_MASK;
    this.#dmaDelayMs = typeof o.dmaDelayMs === 'number' ? o.dmaDelayMs : 0;
    this.#factDelayMs = typeof o.factDelayMs === 'number' ? o.factDelayMs : 0;
  }

  /** Below 0x80 only 4-byte accesses; from 0x80 up, 4 or 8 bytes. */
  accessOk(_bar: number, offset: number, size: number): boolean {
    return offset < 0x80 ? size === 4 : size === 4 || size === 8;
  }

  #u32(off: number): number {
    return this.#r.getUint32(off, true);
  }

  #set32(off: number, v: number): void {
    this.#r.setUint32(off, v >>> 0, true);
  }

  #u64(off: number): bigint {
    return this.#r.getBigUint64(off, true);
  }

  mmioRead(_bar: number, offset: number, size: number): MmioValue {
    let v: bigint | number;
    switch (offset) {
      case EDU_REG_ID: v = EDU_ID; break;
      case EDU_REG_LIVENESS: case EDU_REG_FACT: case EDU_REG_STATUS: case EDU_REG_IRQ_STATUS: v = this.#u32(offset); break;
      case EDU_REG_DMA_SRC: case EDU_REG_DMA_DST: case EDU_REG_DMA_CNT: case EDU_REG_DMA_CMD: v = this.#u64(offset); break;
      default: return size === 8 ? 0xffff_ffff_ffff_ffffn : M32;
    }
    if (size === 8) return BigInt(v);
    return typeof v === 'bigint' ? Number(v & 0xffffffffn) : v;
  }

  mmioWrite(_bar: number, offset: number, size: number, value: MmioValue): void {
    const v = typeof value === 'bigint' ? value : BigInt(value);
    const v32 = Number(v & 0xffffffffn);
    switch (offset) {
      case EDU_REG_LIVENESS: this.#set32(offset, ~v32); break;
      case EDU_REG_FACT:
        if ((this.#u32(EDU_REG_STATUS) & EDU_STATUS_COMPUTING) !== 0) break;
        this.#set32(EDU_REG_FACT, v32);
        this.#set32(EDU_REG_STATUS, this.#u32(EDU_REG_STATUS) | EDU_STATUS_COMPUTING);
        this.#ctx.schedule(this.#factDelayMs, () => this.#factorial());
        break;
      case EDU_REG_STATUS:
        this.#set32(EDU_REG_STATUS, (v32 & EDU_STATUS_IRQFACT) !== 0
          ? this.#u32(EDU_REG_STATUS) | EDU_STATUS_IRQFACT
          : this.#u32(EDU_REG_STATUS) & ~EDU_STATUS_IRQFACT);
        break;
      case EDU_REG_IRQ_RAISE: this.#raise(v32); break;
      case EDU_REG_IRQ_ACK: this.#lower(v32); break;
      case EDU_REG_DMA_SRC: case EDU_REG_DMA_DST: case EDU_REG_DMA_CNT:
        if ((this.#u64(EDU_REG_DMA_CMD) & BigInt(EDU_DMA_RUN)) !== 0n) break; // locked while a transfer runs
        this.#r.setBigUint64(offset, size === 4 ? v & 0xffffffffn : v, true);
        break;
      case EDU_REG_DMA_CMD:
        if ((v & BigInt(EDU_DMA_RUN)) === 0n) break;
        if ((this.#u64(EDU_REG_DMA_CMD) & BigInt(EDU_DMA_RUN)) !== 0n) break;
        this.#r.setBigUint64(offset, size === 4 ? v & 0xffffffffn : v, true);
        this.#ctx.schedule(this.#dmaDelayMs, () => this.#dmaTimer());
        break;
      default: break;
    }
  }

  #raise(val: number): void {
    const st = (this.#u32(EDU_REG_IRQ_STATUS) | val) >>> 0;
    this.#set32(EDU_REG_IRQ_STATUS, st);
    if (st !== 0) this.#ctx.irq.raise(0);
  }

  #lower(val: number): void {
    const st = (this.#u32(EDU_REG_IRQ_STATUS) & ~val) >>> 0;
    this.#set32(EDU_REG_IRQ_STATUS, st);
    if (st === 0 && this.#ctx.irq.mode === 0) this.#ctx.irq.lower(0);
  }

  /** The factorial thread's work: 32-bit wrapping product, then the completion interrupt if asked. */
  #factorial(): void {
    let n = this.#u32(EDU_REG_FACT);
    let ret = 1;
    while (n > 0) ret = Math.imul(ret, n--) >>> 0;
    this.#set32(EDU_REG_FACT, ret);
    this.#set32(EDU_REG_STATUS, this.#u32(EDU_REG_STATUS) & ~EDU_STATUS_COMPUTING);
    if ((this.#u32(EDU_REG_STATUS) & EDU_STATUS_IRQFACT) !== 0) this.#raise(EDU_FACT_IRQ);
  }

  /** edu's dma_mask property: a higher RAM address is clamped (and logged). */
  #clamp(addr: bigint): bigint {
    const res = addr & this.#dmaMask;
    if (res !== addr) this.#ctx.log(`EDU: clamping DMA ${hex16(addr)} to ${hex16(res)}!`);
    return res;
  }

  /** The transfer, some time after the start (asynchronous, as QEMU's timer). */
  #dmaTimer(): void {
    const cmd = this.#u64(EDU_REG_DMA_CMD);
    if ((cmd & BigInt(EDU_DMA_RUN)) === 0n) return;
    const toPci = (cmd & BigInt(EDU_DMA_TO_PCI)) !== 0n;
    const cnt = this.#u64(EDU_REG_DMA_CNT);
    const devAddr = this.#u64(toPci ? EDU_REG_DMA_SRC : EDU_REG_DMA_DST);
    const end = devAddr + cnt;
    const start = BigInt(EDU_DMA_START);
    if (devAddr < start || end > start + BigInt(EDU_DMA_SIZE)) {
      // QEMU only logs this; a model must not touch anything outside its buffer, so it refuses.
      this.#ctx.log(`EDU: DMA range ${hex16(devAddr)}-${hex16(end - 1n)} out of bounds (${hex16(start)}-${hex16(start + BigInt(EDU_DMA_SIZE) - 1n)})! Transfer refused`);
    } else {
      const off = Number(devAddr - start);
      const n = Number(cnt);
      const bus = this.#ctx.bus;
      const ram = this.#clamp(this.#u64(toPci ? EDU_REG_DMA_DST : EDU_REG_DMA_SRC));
      const st = toPci ? bus.write(ram, this.#buf, off, n) : bus.read(ram, this.#buf, off, n);
      if (st !== MEMTX_OK) this.#ctx.log(`EDU: DMA ${toPci ? 'write to' : 'read from'} ${hex16(ram)} failed (MemTxResult ${st})`);
    }
    this.#r.setBigUint64(EDU_REG_DMA_CMD, cmd & ~BigInt(EDU_DMA_RUN), true);
    if ((cmd & BigInt(EDU_DMA_IRQ)) !== 0n) this.#raise(EDU_DMA_IRQ_VALUE);
  }
}

/** The edu device type: PCI 1234:11e8 rev 0x10, class "other" (0xff0000), BAR 0 of 1 MiB, one MSI vector. */
export const edu: DeviceType = {
  name: 'edu',
  identity: {
    vendor: EDU_VENDOR_ID, device: EDU_DEVICE_ID, revision: 0x10, classCode: 0xff0000,
    bars: [1024 * 1024], msiVectors: 1, msixVectors: 0,
  },
  create: (ctx) => new EduDevice(ctx),
};
