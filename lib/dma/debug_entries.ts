// What DMA-API debugging tracks (kernel/dma/debug.c): struct dma_debug_entry, one per live mapping
// or allocation, kept per device by DMA address, and the kernel's best-fit lookup over them.

/** What the tracker needs of a device: identity (the object) and a name for messages. */
export interface DmaDebugDevice {
  readonly name: string;
}

/** How a mapping was made. 'pages' is dma_alloc_pages, 'phys' is dma_map_resource / map_phys. */
export type DmaDebugType = 'single' | 'page' | 'sg' | 'coherent' | 'pages' | 'phys';

/** The kernel's type2name (older kernels' "page" type kept, as the hooks tell single from page). */
export const TYPE_NAMES: Readonly<Record<DmaDebugType, string>> = {
  single: 'single',
  page: 'page',
  sg: 'scatter-gather',
  coherent: 'coherent',
  pages: 'noncoherent',
  phys: 'resource',
};

/** enum map_err_types: whether dma_mapping_error() was called on the handle. */
export const MAP_ERR_CHECK_NOT_APPLICABLE = 0;
export const MAP_ERR_NOT_CHECKED = 1;
export const MAP_ERR_CHECKED = 2;
export type MapErrType = 0 | 1 | 2;

/** maperr2str. */
export const MAP_ERR_NAMES: readonly string[] = ['dma map error check not applicable', 'dma map error not checked', 'dma map error checked'];

/** struct dma_debug_entry. */
export interface DmaDebugEntry {
  readonly dev: DmaDebugDevice;
  readonly type: DmaDebugType;
  readonly dev_addr: bigint;
  readonly size: number;
  readonly direction: number;
  /** Physical address of the mapped data (page/sg/pages/phys), else null. */
  readonly paddr: bigint | null;
  /** CPU address a coherent allocation returned, else null. */
  readonly cpu_addr: number | null;
  /** 'nents' passed to dma_map_sg (0 for other types). */
  readonly sg_call_ents: number;
  /** What dma_map_sg returned (0 for other types). */
  readonly sg_mapped_ents: number;
  map_err_type: MapErrType;
  /** Up to 5 frames of the caller that made the mapping. */
  readonly stack: string;
}

/** The reference an unmap/free/sync hook builds to look an entry up (the kernel's on-stack `ref`). */
export interface DmaDebugRef {
  dev: DmaDebugDevice;
  type: DmaDebugType;
  /** Unmap of a page without saying single or page: either kind matches. */
  looseType: boolean;
  dev_addr: bigint;
  size: number;
  direction: number;
  paddr: bigint | null;
  cpu_addr: number | null;
  sg_call_ents: number;
}

/** Does the entry's type match the reference's (check 4 is the mismatch)? */
export function typeMatches(entry: DmaDebugEntry, ref: DmaDebugRef): boolean {
  if (entry.type === ref.type) return true;
  return ref.looseType && (entry.type === 'single' || entry.type === 'page');
}

/** Entries of one device by DMA address; a list because the same address can be mapped twice. */
interface DeviceEntries {
  readonly byAddr: Map<bigint, DmaDebugEntry[]>;
  count: number;
}

/**
 * Best fit among `candidates` (__hash_bucket_find): a perfect match on size, type, direction
 * and sg count wins at once; otherwise the best partial match, but only if it is the sole
 * candidate when `requireUnique` (with several imperfect ones the kernel gives up, and so do we).
 */
function bestFit(candidates: readonly DmaDebugEntry[], ref: DmaDebugRef, requireUnique: boolean): DmaDebugEntry | null {
  let best: DmaDebugEntry | null = null;
  let bestLvl = -1;
  for (const e of candidates) {
    const lvl = (e.size === ref.size ? 1 : 0) + (typeMatches(e, ref) ? 1 : 0) +
      (e.direction === ref.direction ? 1 : 0) + (e.sg_call_ents === ref.sg_call_ents ? 1 : 0);
    if (lvl === 4) return e;
    if (lvl > bestLvl) {
      bestLvl = lvl;
      best = e;
    }
  }
  return requireUnique && candidates.length !== 1 ? null : best;
}

/** The live entries of every device (the kernel's dma_entry_hash). */
export class DmaDebugEntries {
  private readonly devices = new Map<DmaDebugDevice, DeviceEntries>();
  private total = 0;

  /** Live entries of one device, or of all. */
  count(dev?: DmaDebugDevice): number {
    if (dev === undefined) return this.total;
    return this.devices.get(dev)?.count ?? 0;
  }

  add(entry: DmaDebugEntry): void {
    const { dev, dev_addr } = entry;
    let own = this.devices.get(dev);
    if (own === undefined) {
      own = { byAddr: new Map(), count: 0 };
      this.devices.set(dev, own);
    }
    const list = own.byAddr.get(dev_addr);
    if (list === undefined) own.byAddr.set(dev_addr, [entry]);
    else list.push(entry);
    own.count++;
    this.total++;
  }

  remove(entry: DmaDebugEntry): void {
    const own = this.devices.get(entry.dev);
    const list = own?.byAddr.get(entry.dev_addr);
    if (own === undefined || list === undefined) return;
    const i = list.indexOf(entry);
    if (i < 0) return;
    list.splice(i, 1);
    if (list.length === 0) own.byAddr.delete(entry.dev_addr);
    own.count--;
    this.total--;
  }

  /** Forget every entry of `dev` (its teardown); returns how many there were. */
  forget(dev: DmaDebugDevice): number {
    const n = this.count(dev);
    this.total -= n;
    this.devices.delete(dev);
    return n;
  }

  /** Every entry at `dev_addr` of `dev`, oldest first. */
  at(dev: DmaDebugDevice, dev_addr: bigint): readonly DmaDebugEntry[] | undefined {
    return this.devices.get(dev)?.byAddr.get(dev_addr);
  }

  /** Every entry of `dev`, or of all devices, grouped by device. */
  *entries(dev?: DmaDebugDevice): Generator<DmaDebugEntry> {
    for (const [d, own] of this.devices) {
      if (dev !== undefined && d !== dev) continue;
      for (const list of own.byAddr.values()) yield* list;
    }
  }

  /** bucket_find_exact: same device and DMA address, best fit among them. O(1) on average. */
  findExact(ref: DmaDebugRef): DmaDebugEntry | null {
    const list = this.at(ref.dev, ref.dev_addr);
    return list === undefined ? null : bestFit(list, ref, true);
  }

  /**
   * The entry a sync of [ref.dev_addr, + ref.size) belongs to: one of the device's entries holding
   * the whole range (the kernel's bucket_find_contain with containing_match), so a sync that runs
   * past the end of its mapping finds nothing and is reported as memory it has not allocated.
   * An exact start address is looked up first (O(1)); a sync of part of a mapping scans.
   */
  findContaining(ref: DmaDebugRef): DmaDebugEntry | null {
    const own = this.devices.get(ref.dev);
    if (own === undefined) return null;
    const end = ref.dev_addr + BigInt(ref.size);
    const holds = (e: DmaDebugEntry): boolean => e.dev_addr <= ref.dev_addr && end <= e.dev_addr + BigInt(e.size);
    const exact = own.byAddr.get(ref.dev_addr)?.filter(holds);
    if (exact !== undefined && exact.length > 0) return bestFit(exact, ref, false);
    const hits: DmaDebugEntry[] = [];
    for (const list of own.byAddr.values()) {
      for (const e of list) if (holds(e)) hits.push(e);
    }
    return hits.length === 0 ? null : bestFit(hits, ref, false);
  }
}
