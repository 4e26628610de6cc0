// Which machine owns an address or a page: lets free functions with kernel signatures
// (virt_to_page(addr), vmalloc_to_page(addr), page_address(page)) find their machine without a
// native call. Linear maps and vmalloc areas of different machines never overlap.

import type { Machine } from './machine';

const machines: Machine[] = [];
let last: Machine | null = null;

export function registerMachine(m: Machine): void {
  machines.push(m);
}

export function unregisterMachine(m: Machine): void {
  const i = machines.indexOf(m);
  if (i >= 0) machines.splice(i, 1);
  if (last === m) last = null;
}

/** The live machine whose linear map or vmalloc area contains addr, or null. */
export function machineOfAddress(addr: number): Machine | null {
  if (last !== null && (last.isLinearAddress(addr) || last.is_vmalloc_addr(addr))) return last;
  for (const m of machines) {
    if (m.isLinearAddress(addr) || m.is_vmalloc_addr(addr)) {
      last = m;
      return m;
    }
  }
  return null;
}

/** Live machines (for leak checks). */
export function liveMachines(): readonly Machine[] {
  return machines;
}
