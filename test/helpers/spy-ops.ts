// A device driver's own dma_map_ops that records every call (name and arguments, in order), for
// tests that check what the DMA layer called, with which arguments and in which order.

import type { Page } from '../../lib/mm/page';
import type { Device } from '../../lib/dma/device';
import type { DmaDataDirection } from '../../lib/dma/constants';
import type { DmaMapOps } from '../../lib/dma/ops';

export interface SpyCall {
  readonly op: string;
  readonly args: readonly unknown[];
}

/** A fake bus address for a page: far from any physical address, so a mix-up shows. */
export const SPY_BUS_BASE = 0x7700_0000_0000n;
export function spyBusAddress(page: Page, offset: number): bigint {
  return SPY_BUS_BASE + (BigInt(page.pfn) << 12n) + BigInt(offset);
}

/**
 * A table with map_page/unmap_page (and whatever `extra` adds or replaces; pass a key with
 * undefined to remove an op). `calls` receives one entry per call.
 */
export function spyOps(calls: SpyCall[], extra: Partial<Record<keyof DmaMapOps, unknown>> = {}): DmaMapOps {
  const base: DmaMapOps = {
    name: 'spy',
    map_page(dev: Device, page: Page, offset: number, size: number, dir: DmaDataDirection, attrs: number): bigint {
      calls.push({ op: 'map_page', args: [dev, page, offset, size, dir, attrs] });
      return spyBusAddress(page, offset);
    },
    unmap_page(dev: Device, addr: bigint, size: number, dir: DmaDataDirection, attrs: number): void {
      calls.push({ op: 'unmap_page', args: [dev, addr, size, dir, attrs] });
    },
  };
  const table: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) delete table[k];
    else table[k] = v;
  }
  return table as DmaMapOps;
}
