// DMA-API debug on the device side: with debugging on, an access a device makes through the bus is
// checked against the driver's live mappings for that device (kernel/dma/debug.c only sees the
// driver's side; here the device's side is seen too, also on direct devices where hardware would
// silently succeed). Reports are WARNs naming the access and the device's live mappings.

import { DMA_FROM_DEVICE, DMA_TO_DEVICE, dma_direction_name } from '../dma/constants';
import { debugOf, type Device } from '../dma/device';

/** Reports one check makes at most (the kernel stops printing after a few as well). */
const MAX_REPORTS = 64;
/** Live mappings named in a report. */
const MAPPINGS_SHOWN = 4;

const hex = (v: bigint | number): string => `0x${v.toString(16)}`;

/**
 * The access hook of a device's engine when its DMA-API debug is on, else null. An access not held
 * by one live mapping of the device (after dma_unmap_*, after the buffer was freed, or at an address
 * the device was never given), or in a direction the mapping does not allow, is reported once per
 * page and kind.
 */
export function dmaDebugAccessCheck(dev: Device): ((addr: number, length: number, write: boolean) => void) | null {
  if (!dev.debug.enabled) return null;
  const seen = new Set<string>();
  let reports = 0;
  const report = (key: string, text: string): void => {
    if (seen.has(key) || reports >= MAX_REPORTS) return;
    seen.add(key);
    reports++;
    dev.machine.warn(`DMA-API: ${dev.name}: ${text}`);
  };
  return (addr, length, write) => {
    if (!dev.debug.enabled || dev.machine.isDestroyed) return;
    const a = BigInt(addr);
    const what = `device ${write ? 'write to' : 'read from'}`;
    const where = `[device address=${hex(a)}] [size=${length} bytes]`;
    const e = debugOf(dev).mappingCovering(dev, a, length);
    if (e !== null) {
      if (write ? e.direction === DMA_TO_DEVICE : e.direction === DMA_FROM_DEVICE) {
        report(`dir:${e.dev_addr}:${write}`, `${what} a mapping made ${dma_direction_name(e.direction)} ${where} ` +
          `[mapping at ${hex(e.dev_addr)} size=${e.size}]\nMapped at:\n${e.stack}`);
      }
      return;
    }
    const page = a - (a % 4096n);
    const live = debugOf(dev).debug_dma_dump_mappings(dev);
    const shown = live.length === 0
      ? 'the device has no live mapping'
      : `live mappings of the device: ${live.slice(0, MAPPINGS_SHOWN).join('; ')}${live.length > MAPPINGS_SHOWN ? `; and ${live.length - MAPPINGS_SHOWN} more` : ''}`;
    report(`unmapped:${page}:${write}`, `${what} memory not mapped for it (unmapped, freed, or never given) ${where}; ${shown}`);
  };
}
