// Pages a test takes from a per-test machine, freed after the test, then the machine destroyed:
// the set-up the device and IOMMU tests share.

import { GFP_KERNEL } from '../../lib/mm/gfp';
import type { Machine } from '../../lib/mm/machine';
import type { Page } from '../../lib/mm/page';

/**
 * Registers an afterEach that frees every page taken through the returned function and destroys the
 * machine; returns take(order = 0). Call it after expectNoLeaks() so the leak check runs last.
 * @example let m: Machine; const take = usePagesOf(() => m); beforeEach(() => { m = new Machine(...); });
 */
export function usePagesOf(machine: () => Machine): (order?: number) => Page {
  const held: { page: Page; order: number }[] = [];
  afterEach(() => {
    const m = machine();
    for (const { page, order } of held.splice(0)) m.__free_pages(page, order);
    m.destroy();
  });
  return (order = 0) => {
    const page = machine().alloc_pages(GFP_KERNEL, order)!;
    held.push({ page, order });
    return page;
  };
}
