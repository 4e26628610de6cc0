// Argument checks of the DMA layer, on top of lib/mm/validate.ts: devices (a Device, alive, its
// machine alive), directions (the kernel's BUG), and objects that must be of the device's machine
// (pages, VMAs, scatterlists, CPU addresses). Every public lib/dma function runs them first.

import { Page } from '../mm/page';
import { machineOfAddress } from '../mm/registry';
import { GFP_KNOWN_BITS, checkInt, checkSameMachine, describeValue, nameOf } from '../mm/validate';
import { VmArea } from '../mm/vma';
import { valid_dma_direction, dma_direction_name, type DmaDataDirection } from './constants';
import { Device } from './device';
import { Scatterlist, SgTable, type SgStore } from './scatterlist';

// Predicates for the fast path of hot entry points: one inlined boolean test, then the check
// functions below only when it fails (to throw the precise error).

/** A Device whose machine is alive (it may be destroyed itself). */
export function isDevice(dev: unknown): dev is Device {
  return dev instanceof Device && !dev.machine.isDestroyed;
}

/** A Device that is not destroyed, on a live machine. */
export function isLiveDevice(dev: unknown): dev is Device {
  return dev instanceof Device && !dev.isDestroyed && !dev.machine.isDestroyed;
}

/** A struct page of `machine`. */
export function isPageOf(page: unknown, machine: unknown): page is Page {
  return page instanceof Page && page.machine === machine;
}

/** A non-negative safe integer. */
export function isSize(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/** A writable { value } box (see checkBox). */
export function isBox(v: unknown): boolean {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !Object.isFrozen(v);
}

/** gfp flags of known bits (see checkGfp). */
export function isGfp(v: unknown): v is number {
  return typeof v === 'number' && v >= 0 && v <= 0xffffff && (v & ~GFP_KNOWN_BITS) === 0 && Number.isInteger(v);
}

/** attrs: DMA_ATTR_* bits, an unsigned long in C (unknown bits are ignored, as the kernel does). */
export function checkAttrs(fn: string, attrs: unknown): asserts attrs is number {
  if (typeof attrs !== 'number' || !Number.isSafeInteger(attrs) || attrs < 0) checkInt(fn, 'attrs', attrs, 0);
}

/**
 * A Device of a live machine. A destroyed (unbound) device may still give back what it holds
 * (unmap, free, sync): only `checkLiveDevice` refuses it.
 */
export function checkDevice(fn: string, dev: unknown): asserts dev is Device {
  if (!(dev instanceof Device) || dev.machine.isDestroyed) failDevice(fn, dev);
}

function failDevice(fn: string, dev: unknown): never {
  if (dev instanceof Device) dev.machine.assertAlive();
  throw new TypeError(`${fn}: Expected a Device (machine.createDevice()) for dev but received ${describeValue(dev)}`);
}

/** A Device that is not destroyed: allocations and mappings on an unbound device are refused. */
export function checkLiveDevice(fn: string, dev: unknown): asserts dev is Device {
  if (!(dev instanceof Device) || dev.machine.isDestroyed) failDevice(fn, dev);
  if (dev.isDestroyed) {
    const err = new TypeError(`${fn}: device ${dev.name} has been destroyed (its driver is unbound): no new DMA allocations or mappings`) as TypeError & { code: string };
    err.code = 'ERR_DMAMEM_DESTROYED';
    throw err;
  }
}

/**
 * BUG_ON(!valid_dma_direction(dir)) (include/linux/dma-direction.h): the kernel's BUG, thrown as an
 * Error whose message starts with "kernel BUG", for every value that is not 0, 1 or 2.
 */
export function checkDirection(dir: unknown, fn: string): asserts dir is DmaDataDirection {
  if (typeof dir !== 'number' || !valid_dma_direction(dir)) failDirection(dir, fn);
}

function failDirection(dir: unknown, fn: string): never {
  const shown = typeof dir === 'number' ? `${dir} (${dma_direction_name(dir)})` : describeValue(dir);
  throw new Error(`kernel BUG at include/linux/dma-direction.h: ${fn}: BUG_ON(!valid_dma_direction(dir)): invalid DMA direction ${shown}`);
}

/** A struct page of the device's machine. */
export function checkPage(fn: string, name: string, page: unknown, machine: unknown): asserts page is Page {
  if (!(page instanceof Page) || page.machine !== machine) failPage(fn, name, page, machine);
}

function failPage(fn: string, name: string, page: unknown, machine: unknown): never {
  if (!(page instanceof Page)) throw new TypeError(`${fn}: Expected a struct page (Page) for ${name} but received ${describeValue(page)}`);
  checkSameMachine(fn, name, page.machine, machine);
  throw new Error('unreachable');
}

/** A user VMA of the device's machine, not yet unmapped. */
export function checkVma(fn: string, vma: unknown, machine: unknown): asserts vma is VmArea {
  if (!(vma instanceof VmArea)) throw new TypeError(`${fn}: Expected a VMA (machine.createVma()) for vma but received ${describeValue(vma)}`);
  if (vma.machine !== machine) checkSameMachine(fn, 'vma', vma.machine, machine);
}

/** An sg_table. */
export function checkSgTable(fn: string, sgt: unknown): asserts sgt is SgTable {
  if (!(sgt instanceof SgTable)) throw new TypeError(`${fn}: Expected an SgTable (new SgTable()) for sgt but received ${describeValue(sgt)}`);
}

/**
 * A scatterlist (or null where the kernel allows NULL) whose pages are all of `machine`. The walk
 * reads the backing stores' page arrays (chained stores included) without allocating.
 */
export function checkSg(fn: string, sg: unknown, machine: unknown, allowNull: boolean): asserts sg is Scatterlist | null {
  if (sg === null && allowNull) return;
  if (!(sg instanceof Scatterlist)) throw new TypeError(`${fn}: Expected a Scatterlist for sg but received ${describeValue(sg)}`);
  let store: SgStore | undefined = sg.store;
  let more: SgStore[] | null = null;
  const seen: SgStore[] = [];
  while (store !== undefined) {
    seen.push(store);
    const pages = store.pages;
    for (let i = 0; i < pages.length; i++) {
      const p = pages[i];
      if (p != null && p.machine !== machine) checkSameMachine(fn, `page of scatterlist entry ${i}`, p.machine, machine);
    }
    if (store.chains.size > 0) {
      for (const link of store.chains.values()) {
        if (!seen.includes(link.store) && !(more ??= []).includes(link.store)) more.push(link.store);
      }
    }
    store = more?.pop();
  }
}

/**
 * A CPU address (linear map or vmalloc) of `machine`. An address of another live machine is a
 * TypeError naming both machines; an address of no machine is left to the callee (a RangeError).
 */
export function checkCpuAddr(fn: string, name: string, addr: unknown, machine: { isLinearAddress(a: number): boolean; is_vmalloc_addr(a: number): boolean }): asserts addr is number {
  if (!isCpuAddrOf(fn, name, addr, machine)) failCpuAddr(fn, name, addr, machine);
}

/**
 * A CPU address given to dma_map_single: true when it is memory of `machine` (linear map or
 * vmalloc), false when it is memory of no machine (virt_addr_valid fails: DMA-API debug's "invalid
 * area"). Not an address at all, or an address of another machine, throws.
 */
export function isCpuAddrOf(fn: string, name: string, addr: unknown, machine: { isLinearAddress(a: number): boolean; is_vmalloc_addr(a: number): boolean }): addr is number {
  if (typeof addr === 'number' && Number.isSafeInteger(addr) && addr >= 0) {
    if (machine.isLinearAddress(addr) || machine.is_vmalloc_addr(addr)) return true;
    const other = machineOfAddress(addr);
    if (other === null) return false;
  }
  return failCpuAddr(fn, name, addr, machine);
}

export function failCpuAddr(fn: string, name: string, addr: unknown, machine: { isLinearAddress(a: number): boolean; is_vmalloc_addr(a: number): boolean }): never {
  if (typeof addr !== 'number' || !Number.isSafeInteger(addr) || addr < 0) {
    throw new (typeof addr === 'number' ? RangeError : TypeError)(`${fn}: Expected a non-negative integer address for ${name} but received ${describeValue(addr)}`);
  }
  const other = machineOfAddress(addr);
  if (other !== null && other !== machine) checkSameMachine(fn, `${name} 0x${addr.toString(16)}`, other, machine);
  throw new RangeError(`${fn}: ${name} 0x${addr.toString(16)} is not a linear-map or vmalloc address of machine ${nameOf(machine)}`);
}
