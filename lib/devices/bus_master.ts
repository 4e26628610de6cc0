// Inline bus mastering: a device's transferable bus description made from the machine and the
// device (what a worker would be given), and the device's own engine built from it in this thread.
// The engine is the same code a worker runs; only the fault "interrupt" is delivered by a call here.

import { segmentBytes } from '../mm/segment';
import { publishedMemoryMap, type Machine } from '../mm/machine';
import { min_not_zero } from '../dma/direct';
import { busCacheDescription } from '../dma/cache';
import { dma_owner_report_device_accesses } from '../dma/ownership';
import type { Device } from '../dma/device';
import { checkLiveDevice } from '../dma/validate';
import { dmaDebugAccessCheck } from './access_check';
import { BusEngine, type BusDescription } from './bus_engine';

/** Source ids handed to engines (fault records name the engine that took the fault). */
let nextSourceId = 1;

export interface BusDescriptionOptions {
  /**
   * Give the segments by memfd only (no mapped bytes), as a worker must receive them: the engine
   * then maps them itself and owns those mappings until close(). Default false.
   */
  fdOnly?: boolean;
}

/**
 * The transferable description of a device's bus (see BusDescription): the machine's segments
 * (PFN ranges with their memfds, and in this thread their bytes), the device's bus offset, the
 * highest bus address its DMA mask and bus limit let it drive, and its IOMMU's register block.
 * The mask is read now: a device's address lines do not change when a driver later calls
 * dma_set_mask.
 * @example const engine = new BusEngine(busDescription(dev, { fdOnly: true }));
 */
export function busDescription(dev: Device, options: BusDescriptionOptions = {}): BusDescription {
  checkLiveDevice('busDescription', dev);
  if (typeof options !== 'object' || options === null) throw new TypeError(`busDescription: Expected an options object but received ${String(options)}`);
  for (const k of Object.keys(options)) if (k !== 'fdOnly') throw new TypeError(`busDescription: Unknown option '${k}' (expected fdOnly)`);
  if (options.fdOnly !== undefined && typeof options.fdOnly !== 'boolean') throw new TypeError(`busDescription: Expected a boolean for fdOnly but received ${String(options.fdOnly)}`);
  const m = dev.machine;
  m.assertAlive();
  const fdOnly = options.fdOnly === true;
  const segments = m.segments.map((s) => (fdOnly
    ? { startPfn: s.startPfn, pages: s.pages, fd: s.fd, fileOffset: s.fileOffset, writable: s.writable }
    : { startPfn: s.startPfn, pages: s.pages, fd: s.fd, fileOffset: s.fileOffset, writable: s.writable, bytes: segmentBytes(s) }));
  const limit = dev.dma_mask === null ? -1 : Number(min_not_zero(dev.dma_mask, dev.bus_dma_limit));
  const cache = busCacheDescription(dev);
  return {
    segments,
    busOffset: Number(dev.busOffset),
    busLimit: limit,
    iommu: dev.iommu === null ? null : { regs: dev.iommu.regs },
    sourceId: nextSourceId++,
    memoryMap: publishedMemoryMap(m),
    ...(cache === undefined ? {} : { cache }),
  };
}

/**
 * Inline engines take the machine's own bytes for memory added after they were made (rather than
 * mapping its memfd a second time): the segment starting at a PFN, looked up when the map changes.
 */
export function inlineSegmentBytes(m: Machine): (startPfn: number) => Uint8Array | null {
  return (startPfn) => {
    if (m.isDestroyed) return null;
    const seg = m.segments.find((s) => s.startPfn === startPfn);
    return seg === undefined ? null : segmentBytes(seg);
  };
}

/** The inline engine of each device, with the mask and debug setting it was made for. */
const engines = new WeakMap<Device, { engine: BusEngine; mask: bigint | null; debug: boolean; coherent: boolean }>();

/**
 * The device's bus-master engine in this thread (the same one each time, remade when the device's
 * mask, debug setting or coherence changed; it follows the machine's memory map, so memory pinned or added
 * later is reachable and memory removed is not). A fault it takes is reported at
 * once: logged in the domain, given to the fault handler, printed when unhandled. With the device's
 * DMA-API debug on, every access it lets through is checked against the driver's live mappings.
 * @example const bus = busMaster(dev); bus.write32(desc + 8n, 0x1) === MEMTX_OK
 */
export function busMaster(dev: Device): BusEngine {
  checkLiveDevice('busMaster', dev);
  dev.machine.assertAlive();
  const have = engines.get(dev);
  const debug = dev.debug.enabled;
  if (have !== undefined && have.mask === dev.dma_mask && have.debug === debug && have.coherent === dev.dma_coherent) return have.engine;
  const domain = dev.iommu;
  const engine = new BusEngine(busDescription(dev), {
    onFault: domain === null ? null : () => { domain.processFaults(); },
    onAccess: dmaDebugAccessCheck(dev),
    segmentBytes: inlineSegmentBytes(dev.machine),
    onOwnership: () => { dma_owner_report_device_accesses(dev.machine); },
  });
  engines.set(dev, { engine, mask: dev.dma_mask, debug, coherent: dev.dma_coherent });
  return engine;
}
