// The memory model's kernel-named free functions. Those whose arguments name a page or an address
// find the machine from it; those with no such argument act on the default machine.

import { defaultMachine } from './default';
import type { Cma } from './cma';
import type { Machine } from './machine';
import { Page } from './page';
import { machineOfAddress } from './registry';
import { checkGfp, checkInt, checkSameMachine, describeValue } from './validate';
import { NUMA_NO_NODE } from './gfp';
import * as vm from './vmalloc';

/** A struct page: anything else is a TypeError (never a raw property error). */
function checkPage(fn: string, page: unknown): asserts page is Page {
  if (!(page instanceof Page)) throw new TypeError(`${fn}: Expected a struct page (Page) for page but received ${describeValue(page)}`);
}

function machineOf(page: Page, fn = 'page_address'): Machine {
  checkPage(fn, page);
  return page.machine as Machine;
}

function machineAt(addr: number, fn: string): Machine {
  checkInt(fn, 'addr', addr, 0);
  const m = machineOfAddress(addr);
  if (m === null) throw new RangeError(`${fn}: 0x${addr.toString(16)} belongs to no live machine`);
  return m;
}

export function page_to_pfn(page: Page): number {
  checkPage('page_to_pfn', page);
  return page.pfn;
}

export function page_to_phys(page: Page): bigint {
  checkPage('page_to_phys', page);
  return page.phys;
}

export function page_to_nid(page: Page): number {
  checkPage('page_to_nid', page);
  return page.nid;
}

export function page_address(page: Page): number {
  return machineOf(page).page_address(page);
}

/** virt_to_page for a linear-map address of any live machine. */
export function virt_to_page(addr: number): Page {
  return machineAt(addr, 'virt_to_page').virt_to_page(addr);
}

export function virt_to_phys(addr: number): bigint {
  return machineAt(addr, 'virt_to_phys').virt_to_phys(addr);
}

export function is_vmalloc_addr(addr: number): boolean {
  checkInt('is_vmalloc_addr', 'addr', addr, 0);
  const m = machineOfAddress(addr);
  return m !== null && m.is_vmalloc_addr(addr);
}

/** vmalloc_to_page: the page mapped at a vmalloc address, or null where nothing is mapped. */
export function vmalloc_to_page(addr: number): Page | null {
  checkInt('vmalloc_to_page', 'addr', addr, 0);
  const m = machineOfAddress(addr);
  if (m === null || !m.is_vmalloc_addr(addr)) throw new RangeError(`kernel BUG at mm/vmalloc.c: VIRTUAL_BUG_ON: vmalloc_to_page(0x${addr.toString(16)}) outside the vmalloc area`);
  return m.vmalloc_to_page(addr);
}

export function __free_pages(page: Page, order: number): void {
  machineOf(page, '__free_pages').__free_pages(page, order);
}

// Functions with no machine-identifying argument use the default machine.
export function pfn_to_page(pfn: number): Page {
  checkInt('pfn_to_page', 'pfn', pfn, 0);
  return defaultMachine().pfn_to_page(pfn);
}
export function phys_to_virt(phys: bigint): number {
  if (typeof phys !== 'bigint') throw new TypeError(`phys_to_virt: Expected a bigint for phys but received ${describeValue(phys)}`);
  return defaultMachine().phys_to_virt(phys);
}
export function alloc_pages_node(nid: number, gfp: number, order: number): Page | null {
  // Checked here too, so that misuse does not create the default machine first.
  checkInt('alloc_pages_node', 'nid', nid, NUMA_NO_NODE);
  checkGfp('alloc_pages_node', gfp);
  checkInt('alloc_pages_node', 'order', order, 0);
  return defaultMachine().alloc_pages_node(nid, gfp, order);
}
export function alloc_pages(gfp: number, order: number): Page | null {
  checkGfp('alloc_pages', gfp);
  checkInt('alloc_pages', 'order', order, 0);
  return defaultMachine().alloc_pages(gfp, order);
}
export function vmalloc(size: number): number | null {
  checkInt('vmalloc', 'size', size, 0);
  return defaultMachine().vmalloc(size);
}
export function vzalloc(size: number): number | null {
  checkInt('vzalloc', 'size', size, 0);
  return defaultMachine().vzalloc(size);
}
export function vfree(addr: number | null): void {
  if (addr === null || addr === 0) return;
  checkInt('vfree', 'addr', addr, 0);
  vm.vfree(machineAt(addr, 'vfree'), addr);
}
export function vmap(pages: readonly Page[], count: number, flags = 0, prot: 'readwrite' | 'read' = 'readwrite'): number | null {
  if (!Array.isArray(pages)) throw new TypeError(`vmap: Expected an array of pages for pages but received ${describeValue(pages)}`);
  checkInt('vmap', 'count', count, 0, pages.length);
  const first = pages[0];
  const m = first === undefined ? defaultMachine() : machineOf(first, 'vmap');
  // Every page of one machine: a vmap of another machine's page would map unrelated memory.
  for (let i = 0; i < count; i++) {
    const p = pages[i];
    checkPage('vmap', p);
    if (p.machine !== m) checkSameMachine('vmap', `pages[${i}]`, p.machine, m);
  }
  return vm.vmap(m, pages, count, flags, prot);
}
export function vunmap(addr: number | null): void {
  if (addr === null || addr === 0) return;
  checkInt('vunmap', 'addr', addr, 0);
  vm.vunmap(machineAt(addr, 'vunmap'), addr);
}
export { cma_alloc, cma_release } from './cma';
export type { Cma };
