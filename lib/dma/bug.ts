// include/asm-generic/bug.h as the DMA layer uses it: a WARN_ONCE fires once per machine (a machine
// is one boot) and call site, and is recorded by machine.warn. A BUG is a thrown Error at its site.

import type { Machine } from '../mm/machine';

const warned = new WeakMap<Machine, Set<string>>();

/**
 * WARN_ONCE: record `message` on the machine the first time `site` warns there; later hits of the
 * same site are silent. `site` names the call site (a function name, say) and must be unique
 * across the DMA layer.
 * @example WARN_ONCE(dev.machine, 'dma_direct_map_page', 'WARNING: kernel/dma/direct.h: ...')
 */
export function WARN_ONCE(machine: Machine, site: string, message: string): void {
  let seen = warned.get(machine);
  if (seen === undefined) warned.set(machine, (seen = new Set()));
  if (seen.has(site)) return;
  seen.add(site);
  machine.warn(message);
}
