// DMA-API debugging: kernel/dma/debug.c. Tracks every mapping and allocation per device and reports
// misuse at unmap, free, sync and driver-unbind time with the kernel's wording and bracketed context.

import { inspect } from 'node:util';
import type { Page } from '../mm/page';
import {
  DMA_BIDIRECTIONAL,
  DMA_FROM_DEVICE,
  DMA_MAPPING_ERROR,
  DMA_TO_DEVICE,
  dma_direction_name,
} from './constants';
import {
  DmaDebugEntries, MAP_ERR_CHECKED, MAP_ERR_CHECK_NOT_APPLICABLE, MAP_ERR_NAMES, MAP_ERR_NOT_CHECKED, TYPE_NAMES,
  typeMatches, type DmaDebugDevice, type DmaDebugEntry, type DmaDebugRef,
} from './debug_entries';
import { type Scatterlist, for_each_sg, sg_dma_address, sg_dma_len, sg_page } from './scatterlist';
import {
  ACTIVE_CACHELINE_MAX_OVERLAP, active_cacheline_first_overflow, active_cacheline_insert, active_cacheline_remove, to_cacheline_number,
} from './debug_cacheline';
import { DMA_ATTR_SKIP_CPU_SYNC } from './constants';
import { DmaDebugPool, PREALLOC_DMA_DEBUG_ENTRIES, type DmaDebugPoolStats } from './debug_pool';
import { FrozenList } from '../os/lock';
import { checkBool, checkInt } from '../mm/validate';

export {
  MAP_ERR_CHECKED, MAP_ERR_CHECK_NOT_APPLICABLE, MAP_ERR_NOT_CHECKED, type DmaDebugDevice, type DmaDebugEntry,
  type DmaDebugType, type MapErrType,
} from './debug_entries';

/** What a map/alloc hook supplies; the rest defaults to null / 0. */
type NewEntry = Pick<DmaDebugEntry, 'dev' | 'type' | 'dev_addr' | 'size' | 'direction' | 'map_err_type'> &
  Partial<Pick<DmaDebugEntry, 'paddr' | 'cpu_addr' | 'sg_call_ents' | 'sg_mapped_ents'>>;

/** One detected misuse. `check` is the number of the check in prior-art-dma.md §4. */
export interface DmaDebugReport {
  readonly check: number;
  readonly device: string;
  readonly message: string;
  readonly entry?: DmaDebugEntry;
}

export interface DmaDebugOptions {
  /** When false every hook returns at once and nothing is tracked. */
  enabled: boolean;
  /** Throw a DmaDebugError for the first report of a hook call instead of warning. */
  strict: boolean;
  /** How many reports are emitted as process warnings (all are recorded). Default 10. */
  maxPrinted?: number;
  /** CONFIG_DMA_API_DEBUG_SG: check each mapped sg segment against the device's limits. Default false. */
  sg?: boolean;
  /**
   * The machine's pool of entries (one per machine, shared by its devices). Default: a pool of
   * this tracker's own, PREALLOC_DMA_DEBUG_ENTRIES, growing from host memory.
   */
  pool?: DmaDebugPool;
}

/** A device's segment limits, for CONFIG_DMA_API_DEBUG_SG's check_sg_segment. */
export interface SgSegmentLimits {
  /** dma_get_max_seg_size. */
  readonly maxSegSize: number;
  /** dma_get_seg_boundary. */
  readonly segBoundary: bigint;
}

/** One line for an entry: what it is, never the device and machine objects it refers to. */
function describeEntry(e: DmaDebugEntry): string {
  const paddr = e.paddr === null ? '' : ` paddr=0x${e.paddr.toString(16)}`;
  return `${TYPE_NAMES[e.type]} entry of ${e.dev.name}: dev_addr=${hex16(e.dev_addr)} size=${e.size}${paddr} ${dma_direction_name(e.direction)}`;
}

/** [util.inspect.custom] of reports: one line, so that logging one does not dump the object graph. */
function inspectReport(this: DmaDebugReport): string {
  const entry = this.entry === undefined ? '' : ` (${describeEntry(this.entry)})`;
  return `DmaDebugReport { check ${this.check}: ${this.message}${entry} }`;
}

/** [util.inspect.custom] of entries. */
function inspectEntry(this: DmaDebugEntry): string {
  return `DmaDebugEntry { ${describeEntry(this)} }`;
}

/**
 * A report: check, device name and message enumerable; the entry (which refers to the device, and
 * through it to the machine) non-enumerable, and a one-line inspect.
 */
function makeReport(check: number, device: string, message: string, entry: DmaDebugEntry | undefined): DmaDebugReport {
  const report = { check, device, message } as DmaDebugReport;
  if (entry !== undefined) Object.defineProperty(report, 'entry', { value: entry, enumerable: false });
  Object.defineProperty(report, inspect.custom, { value: inspectReport, enumerable: false });
  return report;
}

/**
 * Thrown in strict mode. The hook finishes its bookkeeping before throwing. `report` is
 * non-enumerable and the error inspects as its stack plus one line: an uncaught DmaDebugError
 * prints a few lines, not the device and machine it came from.
 */
export class DmaDebugError extends Error {
  declare readonly report: DmaDebugReport;
  readonly code = 'ERR_DMA_API_DEBUG';
  constructor(report: DmaDebugReport) {
    super(report.message);
    Object.defineProperty(this, 'name', { value: 'DmaDebugError', enumerable: false, configurable: true, writable: true });
    Object.defineProperty(this, 'report', { value: report, enumerable: false });
    // Recompute the stack's first line now that the name is set.
    if (typeof this.stack === 'string') this.stack = this.stack.replace(/^Error/, 'DmaDebugError');
  }

  [inspect.custom](): string {
    return `${this.stack ?? `${this.name}: ${this.message}`}
    [check ${this.report.check}] [device ${this.report.device}] { code: '${this.code}' }`;
  }
}

const hex16 = (v: bigint): string => `0x${v.toString(16).padStart(16, '0')}`;
const pagePhys = (page: Page): bigint => page.phys;

/** A hook method, used to cut the tracker's own frames off a captured stack. */
type Hook = (...args: never[]) => unknown;

/** Up to 5 frames of the code that called `hook` (the kernel keeps 5 stack entries too). */
function shortStack(hook: Hook): string {
  const holder: { stack?: string } = {};
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 5;
  Error.captureStackTrace(holder, hook);
  Error.stackTraceLimit = limit;
  return (holder.stack ?? '').split('\n').slice(1).map((l) => l.trim()).join('\n');
}

/**
 * The DMA-API debug tracker. A machine or device owns one; the mapping layer calls its hooks
 * around every map/unmap/alloc/free/sync.
 * @example
 *   const dbg = new DmaDebug({ enabled: true, strict: false });
 *   dbg.debug_dma_map_page(dev, page, 0, 4096, DMA_TO_DEVICE, handle, true);
 *   dbg.debug_dma_unmap_page(dev, handle, 8192, DMA_TO_DEVICE); // reports check 3 (and 8)
 */
export class DmaDebug {
  #enabled: boolean;
  #strict: boolean;
  #maxPrinted: number;
  #sg: boolean;
  /** Every report, in order (callers get a frozen snapshot). */
  #reports = new FrozenList<DmaDebugReport>();
  /** The kernel's error_count: reports since creation or the last clear(). */
  #errorCount = 0;
  #printed = 0;
  readonly #entries = new DmaDebugEntries();
  readonly #pool: DmaDebugPool;
  /** First report of the hook call in progress (strict mode throws it when the hook ends). */
  #pending: DmaDebugReport | null = null;

  constructor(options: DmaDebugOptions) {
    this.#enabled = options.enabled;
    this.#strict = options.strict;
    this.#maxPrinted = options.maxPrinted ?? 10;
    this.#sg = options.sg ?? false;
    this.#pool = options.pool ?? new DmaDebugPool(PREALLOC_DMA_DEBUG_ENTRIES, null);
  }

  /** CONFIG_DMA_API_DEBUG_SG: whether mapped sg segments are checked against the device's limits. */
  get sg(): boolean {
    return this.#sg;
  }

  set sg(on: boolean) {
    checkBool('DmaDebug', 'sg', on);
    this.#sg = on;
  }

  /**
   * Whether the hooks track and check (the kernel's dma_debug `disabled` switch, inverted): false
   * for good once the machine's entry pool could not grow ("debugging out of memory - disabling").
   */
  get enabled(): boolean {
    return this.#enabled && !this.#pool.disabled;
  }

  /** The entry pool's debugfs counters (nr_total_entries, num_free_entries, min_free_entries, disabled). */
  get pool(): DmaDebugPoolStats {
    return this.#pool.stats();
  }

  set enabled(on: boolean) {
    checkBool('DmaDebug', 'enabled', on);
    this.#enabled = on;
  }

  /** Whether a report is also thrown (DmaDebugError) when the hook that found it ends. */
  get strict(): boolean {
    return this.#strict;
  }

  set strict(on: boolean) {
    checkBool('DmaDebug', 'strict', on);
    this.#strict = on;
  }

  /** How many reports are printed as warnings (the kernel's show_num_errors). */
  get maxPrinted(): number {
    return this.#maxPrinted;
  }

  set maxPrinted(count: number) {
    checkInt('DmaDebug', 'maxPrinted', count, 0, Number.MAX_SAFE_INTEGER);
    this.#maxPrinted = count;
  }

  /** Every report since creation or the last clear(), in order. */
  get reports(): readonly DmaDebugReport[] {
    return this.#reports.view;
  }

  /** The kernel's error_count: reports since creation or the last clear(). */
  get errorCount(): number {
    return this.#errorCount;
  }

  /** Forget the reports and the error count (tracked entries stay). */
  clear(): void {
    this.#reports = new FrozenList<DmaDebugReport>();
    this.#errorCount = 0;
    this.#printed = 0;
  }

  /** Number of live tracked entries, of one device or of all (for leak checks). */
  activeEntries(dev?: DmaDebugDevice): number {
    return this.#entries.count(dev);
  }

  // --- hooks: map / unmap --------------------------------------------------------------------

  /**
   * debug_dma_map_single, for a CPU address that is no memory of the machine (virt_addr_valid
   * fails): check 17. (Its vmalloc report cannot fire: dma_map_single_attrs refuses vmalloc first.)
   */
  debug_dma_map_single(dev: DmaDebugDevice, addr: number, len: number): void {
    if (!this.enabled) return;
    this.err(17, dev, undefined, `device driver maps memory from invalid area [addr=0x${addr.toString(16)}] [len=${len}]`);
    this.raiseIfStrict();
  }

  /** After dma_map_page / dma_map_single. A failed mapping (DMA_MAPPING_ERROR) is not tracked. */
  debug_dma_map_page(
    dev: DmaDebugDevice,
    page: Page,
    offset: number,
    size: number,
    direction: number,
    dma_addr: bigint,
    isSingle: boolean,
    attrs = 0,
  ): void {
    if (!this.enabled) return;
    if (dma_addr === DMA_MAPPING_ERROR) return;
    this.add(this.debug_dma_map_page, {
      dev, type: isSingle ? 'single' : 'page', dev_addr: dma_addr, size, direction,
      paddr: pagePhys(page) + BigInt(offset),
      map_err_type: MAP_ERR_NOT_CHECKED,
    }, attrs);
    this.raiseIfStrict();
  }

  /**
   * Before dma_unmap_page / dma_unmap_single. Pass `isSingle` to have single-vs-page mixups
   * reported (older kernels); leave it out and either kind matches (newer kernels merged them).
   */
  debug_dma_unmap_page(dev: DmaDebugDevice, dma_addr: bigint, size: number, direction: number, isSingle?: boolean): void {
    if (!this.enabled) return;
    this.checkUnmap({
      dev, type: isSingle === true ? 'single' : 'page', looseType: isSingle === undefined,
      dev_addr: dma_addr, size, direction, paddr: null, cpu_addr: null, sg_call_ents: 0,
    });
    this.raiseIfStrict();
  }

  /** After dma_map_resource (and newer kernels' map_phys). */
  debug_dma_map_phys(dev: DmaDebugDevice, phys: bigint, size: number, direction: number, dma_addr: bigint, attrs = 0): void {
    if (!this.enabled) return;
    if (dma_addr === DMA_MAPPING_ERROR) return;
    this.add(this.debug_dma_map_phys, {
      dev, type: 'phys', dev_addr: dma_addr, size, direction, paddr: phys,
      map_err_type: MAP_ERR_NOT_CHECKED,
    }, attrs);
    this.raiseIfStrict();
  }

  /** Before dma_unmap_resource. */
  debug_dma_unmap_phys(dev: DmaDebugDevice, dma_addr: bigint, size: number, direction: number): void {
    if (!this.enabled) return;
    this.checkUnmap({
      dev, type: 'phys', looseType: false, dev_addr: dma_addr, size, direction,
      paddr: null, cpu_addr: null, sg_call_ents: 0,
    });
    this.raiseIfStrict();
  }

  /** After dma_map_sg returned `mapped_ents` > 0: one entry per mapped segment. */
  debug_dma_map_sg(
    dev: DmaDebugDevice, sgl: Scatterlist | null, nents: number, mapped_ents: number, direction: number, attrs = 0,
    limits?: SgSegmentLimits,
  ): void {
    if (!this.enabled) return;
    for_each_sg(sgl, mapped_ents, (s) => {
      if (this.#sg && limits !== undefined) this.checkSgSegment(dev, s, limits);
      const page = sg_page(s);
      const paddr = page === null ? null : pagePhys(page) + BigInt(s.offset);
      this.add(this.debug_dma_map_sg, {
        dev, type: 'sg', dev_addr: sg_dma_address(s), size: sg_dma_len(s), direction,
        paddr, sg_call_ents: nents, sg_mapped_ents: mapped_ents,
        map_err_type: MAP_ERR_CHECK_NOT_APPLICABLE,
      }, attrs);
    });
    this.raiseIfStrict();
  }

  /** Before dma_unmap_sg; `nelems` must be the nents passed to dma_map_sg. */
  debug_dma_unmap_sg(dev: DmaDebugDevice, sgl: Scatterlist | null, nelems: number, direction: number): void {
    if (!this.enabled) return;
    let mapped = 0;
    let stop = false;
    for_each_sg(sgl, nelems, (s, i) => {
      if (stop || (mapped !== 0 && i >= mapped)) {
        stop = true;
        return;
      }
      const ref = this.sgRef(dev, s, nelems, direction);
      // Only the segments dma_map_sg produced were tracked; the first one knows how many.
      if (i === 0) mapped = this.#entries.findExact(ref)?.sg_mapped_ents ?? 0;
      this.checkUnmap(ref);
    });
    this.raiseIfStrict();
  }

  // --- hooks: coherent and page allocations --------------------------------------------------

  /**
   * After dma_alloc_coherent / dma_alloc_attrs; a NULL result (null) is not tracked. `paddr` is the
   * physical address of `virt` (the kernel's entry pfn and offset), for the cacheline check.
   */
  debug_dma_alloc_coherent(dev: DmaDebugDevice, size: number, dma_addr: bigint, virt: number | null, paddr: bigint | null = null, attrs = 0): void {
    if (!this.enabled) return;
    if (virt === null) return;
    this.add(this.debug_dma_alloc_coherent, {
      dev, type: 'coherent', dev_addr: dma_addr, size, direction: DMA_BIDIRECTIONAL, cpu_addr: virt, paddr,
      map_err_type: MAP_ERR_CHECK_NOT_APPLICABLE,
    }, attrs);
    this.raiseIfStrict();
  }

  /** Before dma_free_coherent. */
  debug_dma_free_coherent(dev: DmaDebugDevice, size: number, virt: number, dma_addr: bigint): void {
    if (!this.enabled) return;
    this.checkUnmap({
      dev, type: 'coherent', looseType: false, dev_addr: dma_addr, size, direction: DMA_BIDIRECTIONAL,
      paddr: null, cpu_addr: virt, sg_call_ents: 0,
    });
    this.raiseIfStrict();
  }

  /** After dma_alloc_pages / dma_alloc_noncoherent succeeded. */
  debug_dma_alloc_pages(dev: DmaDebugDevice, page: Page, size: number, direction: number, dma_addr: bigint, attrs = 0): void {
    if (!this.enabled) return;
    this.add(this.debug_dma_alloc_pages, {
      dev, type: 'pages', dev_addr: dma_addr, size, direction, paddr: pagePhys(page),
      map_err_type: MAP_ERR_CHECK_NOT_APPLICABLE,
    }, attrs);
    this.raiseIfStrict();
  }

  /** Before dma_free_pages / dma_free_noncoherent. */
  debug_dma_free_pages(dev: DmaDebugDevice, page: Page, size: number, direction: number, dma_addr: bigint): void {
    if (!this.enabled) return;
    this.checkUnmap({
      dev, type: 'pages', looseType: false, dev_addr: dma_addr, size, direction,
      paddr: pagePhys(page), cpu_addr: null, sg_call_ents: 0,
    });
    this.raiseIfStrict();
  }

  // --- hooks: sync and error check -----------------------------------------------------------

  debug_dma_sync_single_for_cpu(dev: DmaDebugDevice, dma_handle: bigint, size: number, direction: number): void {
    if (!this.enabled) return;
    this.checkSync(this.singleRef(dev, dma_handle, size, direction), true);
    this.raiseIfStrict();
  }

  debug_dma_sync_single_for_device(dev: DmaDebugDevice, dma_handle: bigint, size: number, direction: number): void {
    if (!this.enabled) return;
    this.checkSync(this.singleRef(dev, dma_handle, size, direction), false);
    this.raiseIfStrict();
  }

  debug_dma_sync_sg_for_cpu(dev: DmaDebugDevice, sg: Scatterlist | null, nelems: number, direction: number): void {
    if (!this.enabled) return;
    this.syncSg(dev, sg, nelems, direction, true);
    this.raiseIfStrict();
  }

  debug_dma_sync_sg_for_device(dev: DmaDebugDevice, sg: Scatterlist | null, nelems: number, direction: number): void {
    if (!this.enabled) return;
    this.syncSg(dev, sg, nelems, direction, false);
    this.raiseIfStrict();
  }

  /** dma_mapping_error() was called on `dma_addr`: mark the first unchecked entry as checked. */
  debug_dma_mapping_error(dev: DmaDebugDevice, dma_addr: bigint): void {
    if (!this.enabled) return;
    for (const entry of this.#entries.at(dev, dma_addr) ?? []) {
      if (entry.map_err_type === MAP_ERR_NOT_CHECKED) {
        entry.map_err_type = MAP_ERR_CHECKED;
        break;
      }
    }
  }

  // --- hooks: lifecycle ----------------------------------------------------------------------

  /**
   * The bus notifier's BUS_NOTIFY_UNBOUND_DRIVER check: report mappings the device still holds.
   * Unlike the kernel, the device's entries are then forgotten, since the device object is going
   * away and keeping them would only pin it in memory.
   */
  dma_debug_device_teardown(dev: DmaDebugDevice): void {
    if (!this.enabled) return;
    let example: DmaDebugEntry | undefined;
    for (const e of this.#entries.entries(dev)) example = e;
    if (example === undefined) return;
    const count = this.#entries.forget(dev);
    this.#pool.free(count);
    this.err(21, dev, example,
      `device driver has pending DMA allocations while released from device [count=${count}]\n` +
      `One of leaked entries details: [device address=${hex16(example.dev_addr)}] [size=${example.size} bytes] ` +
      `[mapped with ${dma_direction_name(example.direction)}] [mapped as ${TYPE_NAMES[example.type]}]`);
    this.raiseIfStrict();
  }

  /** The live mappings, of one device or all, one line each (like the debugfs `dump` file). */
  debug_dma_dump_mappings(dev?: DmaDebugDevice): string[] {
    const lines: string[] = [];
    for (const e of this.#entries.entries(dev)) {
      const p = e.paddr === null ? (e.cpu_addr === null ? 'none' : `cpu=0x${e.cpu_addr.toString(16)}`) : hex16(e.paddr);
      lines.push(`${e.dev.name} ${TYPE_NAMES[e.type]} P=${p} D=${e.dev_addr.toString(16)} L=${e.size.toString(16)} ` +
        `${dma_direction_name(e.direction)} ${MAP_ERR_NAMES[e.map_err_type]}`);
    }
    return lines;
  }

  // --- internals -----------------------------------------------------------------------------

  /** add_dma_entry: track the entry, then the cacheline it starts in (check 20). */
  private add(hook: Hook, fields: NewEntry, attrs: number): void {
    // One literal shape for every entry, whatever the hook supplied.
    const entry = {
      paddr: null, cpu_addr: null, sg_call_ents: 0, sg_mapped_ents: 0, ...fields, stack: shortStack(hook),
      [inspect.custom]: inspectEntry,
    } as DmaDebugEntry;
    // dma_entry_alloc: with no entry to be had, debugging has just turned itself off.
    if (!this.#pool.alloc((text) => this.note(22, entry.dev, text))) return;
    this.#entries.add(entry);
    if (entry.paddr === null) return;
    const owner = this.cachelineOwner(entry.dev);
    const found = active_cacheline_insert(owner, entry.paddr, entry.direction);
    if (found === 'overflow' && active_cacheline_first_overflow(owner)) {
      // WARN_ONCE: a line mapped this often means mappings are leaking.
      process.emitWarning(`DMA-API: exceeded ${ACTIVE_CACHELINE_MAX_OVERLAP} overlapping mappings of cacheline ${hex16(to_cacheline_number(entry.paddr))}`, { code: 'KERNEL_WARN' });
    }
    if (found !== 'inserted' && (attrs & DMA_ATTR_SKIP_CPU_SYNC) === 0) {
      this.err(20, entry.dev, entry, "cacheline tracking EEXIST, overlapping mappings aren't supported");
    }
  }

  /** The active cachelines are one tree per kernel: shared by every device of a machine. */
  private cachelineOwner(dev: DmaDebugDevice): object {
    const machine = (dev as { machine?: unknown }).machine;
    return typeof machine === 'object' && machine !== null ? machine : this;
  }

  private singleRef(dev: DmaDebugDevice, dev_addr: bigint, size: number, direction: number): DmaDebugRef {
    return { dev, type: 'single', looseType: true, dev_addr, size, direction, paddr: null, cpu_addr: null, sg_call_ents: 0 };
  }

  private sgRef(dev: DmaDebugDevice, s: Scatterlist, nelems: number, direction: number): DmaDebugRef {
    return {
      dev, type: 'sg', looseType: false, dev_addr: sg_dma_address(s), size: sg_dma_len(s), direction,
      paddr: null, cpu_addr: null, sg_call_ents: nelems,
    };
  }

  /**
   * check_sg_segment (checks 18 and 19): a segment longer than the device's max_seg_size (its CPU
   * length), or whose DMA range crosses the segment boundary: the list was built without the
   * device's dma_parms, or the mapping layer merged too far.
   */
  private checkSgSegment(dev: DmaDebugDevice, s: Scatterlist, limits: SgSegmentLimits): void {
    if (s.length > limits.maxSegSize) {
      this.err(18, dev, undefined, `mapping sg segment longer than device claims to support [len=${s.length}] [max=${limits.maxSegSize}]`);
    }
    const start = sg_dma_address(s);
    const end = start + BigInt(sg_dma_len(s)) - 1n;
    if (((start ^ end) & ~limits.segBoundary & 0xffff_ffff_ffff_ffffn) !== 0n) {
      this.err(19, dev, undefined, `mapping sg segment across boundary [start=${hex16(start)}] [end=${hex16(end)}] [boundary=${hex16(limits.segBoundary)}]`);
    }
  }

  /** check_unmap: checks 1-8, then the entry is dropped. */
  private checkUnmap(ref: DmaDebugRef): void {
    const entry = this.#entries.findExact(ref);
    const addr = hex16(ref.dev_addr);
    if (entry === null) {
      if (ref.dev_addr === DMA_MAPPING_ERROR) {
        this.err(2, ref.dev, undefined, 'device driver tries to free an invalid DMA memory address');
      } else {
        this.err(1, ref.dev, undefined,
          `device driver tries to free DMA memory it has not allocated [device address=${addr}] [size=${ref.size} bytes]`);
      }
      return;
    }
    if (ref.size !== entry.size) {
      this.err(3, ref.dev, entry, 'device driver frees DMA memory with different size ' +
        `[device address=${addr}] [map size=${entry.size} bytes] [unmap size=${ref.size} bytes]`);
    }
    if (!typeMatches(entry, ref)) {
      this.err(4, ref.dev, entry, 'device driver frees DMA memory with wrong function ' +
        `[device address=${addr}] [size=${ref.size} bytes] ` +
        `[mapped as ${TYPE_NAMES[entry.type]}] [unmapped as ${TYPE_NAMES[ref.type]}]`);
    } else if (entry.type === 'coherent' && ref.cpu_addr !== entry.cpu_addr) {
      this.err(5, ref.dev, entry, 'device driver frees DMA memory with different CPU address ' +
        `[device address=${addr}] [size=${ref.size} bytes] ` +
        `[cpu alloc address=${hex16(BigInt(entry.cpu_addr ?? 0))}] [cpu free address=${hex16(BigInt(ref.cpu_addr ?? 0))}]`);
    } else if (entry.type === 'pages' && ref.paddr !== entry.paddr) {
      this.err(5, ref.dev, entry, 'device driver frees DMA memory with different CPU address ' +
        `[device address=${addr}] [size=${ref.size} bytes] ` +
        `[cpu alloc address=${hex16(entry.paddr ?? 0n)}] [cpu free address=${hex16(ref.paddr ?? 0n)}]`);
    }
    if (ref.sg_call_ents !== 0 && ref.type === 'sg' && ref.sg_call_ents !== entry.sg_call_ents) {
      this.err(6, ref.dev, entry, 'device driver frees DMA sg list with different entry count ' +
        `[map count=${entry.sg_call_ents}] [unmap count=${ref.sg_call_ents}]`);
    }
    // Not always a bug in practice, but most DMA API implementations mishandle it.
    if (ref.direction !== entry.direction) {
      this.err(7, ref.dev, entry, 'device driver frees DMA memory with different direction ' +
        `[device address=${addr}] [size=${ref.size} bytes] ` +
        `[mapped with ${dma_direction_name(entry.direction)}] [unmapped with ${dma_direction_name(ref.direction)}]`);
    }
    if (entry.map_err_type === MAP_ERR_NOT_CHECKED) {
      this.err(8, ref.dev, entry, 'device driver failed to check map error ' +
        `[device address=${addr}] [size=${ref.size} bytes] [mapped as ${TYPE_NAMES[entry.type]}]`);
    }
    if (entry.paddr !== null) active_cacheline_remove(this.cachelineOwner(entry.dev), entry.paddr, entry.direction);
    this.#entries.remove(entry);
    this.#pool.free();
  }

  /** check_sync: checks 9 and 11-14. */
  private checkSync(ref: DmaDebugRef, toCpu: boolean): void {
    const entry = this.#entries.findContaining(ref);
    const addr = hex16(ref.dev_addr);
    if (entry === null) {
      this.err(9, ref.dev, undefined,
        `device driver tries to sync DMA memory it has not allocated [device address=${addr}] [size=${ref.size} bytes]`);
      return;
    }
    // The kernel's check 10 ("syncs DMA memory outside allocated range") cannot fire: the lookup
    // above only finds entries holding the whole sync range, as containing_match does.
    // A bidirectional mapping may be synced any way.
    if (entry.direction === DMA_BIDIRECTIONAL) return;
    const dirs = `[device address=${addr}] [size=${entry.size} bytes] ` +
      `[mapped with ${dma_direction_name(entry.direction)}] [synced with ${dma_direction_name(ref.direction)}]`;
    if (ref.direction !== entry.direction) {
      this.err(11, ref.dev, entry, `device driver syncs DMA memory with different direction ${dirs}`);
    }
    if (toCpu && entry.direction !== DMA_FROM_DEVICE && ref.direction !== DMA_TO_DEVICE) {
      this.err(12, ref.dev, entry, `device driver syncs device read-only DMA memory for cpu ${dirs}`);
    }
    if (!toCpu && entry.direction !== DMA_TO_DEVICE && ref.direction !== DMA_FROM_DEVICE) {
      this.err(13, ref.dev, entry, `device driver syncs device write-only DMA memory to device ${dirs}`);
    }
    if (ref.sg_call_ents !== 0 && ref.type === 'sg' && ref.sg_call_ents !== entry.sg_call_ents) {
      this.err(14, ref.dev, entry, 'device driver syncs DMA sg list with different entry count ' +
        `[map count=${entry.sg_call_ents}] [sync count=${ref.sg_call_ents}]`);
    }
  }

  /**
   * debug_dma_sync_sg_for_*: like the kernel, an sg list whose first segment is not tracked is
   * not checked at all, and segments past the mapped count are skipped.
   */
  private syncSg(dev: DmaDebugDevice, sgl: Scatterlist | null, nelems: number, direction: number, toCpu: boolean): void {
    let mapped = 0;
    for_each_sg(sgl, nelems, (s, i) => {
      const ref = this.sgRef(dev, s, nelems, direction);
      if (i === 0) mapped = this.#entries.findExact(ref)?.sg_mapped_ents ?? 0;
      if (i >= mapped) return;
      this.checkSync(ref, toCpu);
    });
  }

  /** err_printk: count, record, then warn (first maxPrinted) or, in strict mode, queue a throw. */
  private err(check: number, dev: DmaDebugDevice, entry: DmaDebugEntry | undefined, text: string): void {
    const message = `DMA-API: ${dev.name}: ${text}`;
    const report = makeReport(check, dev.name, message, entry);
    this.#errorCount++;
    this.#reports.push(report);
    if (this.#strict) {
      this.#pending ??= report;
      return;
    }
    this.print(message, entry);
  }

  /** Emit a report as a process warning, the first maxPrinted of them (show_num_errors). */
  private print(message: string, entry: DmaDebugEntry | undefined): void {
    if (this.#printed >= this.#maxPrinted) return;
    this.#printed++;
    const detail = entry === undefined ? undefined : `Mapped at:\n${entry.stack}`;
    process.emitWarning(message, detail === undefined ? { code: 'DMA_API_DEBUG' } : { code: 'DMA_API_DEBUG', detail });
  }

  /**
   * A pr_info worth a report (check 22, the pool growing: a leak hint): recorded and printed like
   * the others, but not an error: not counted in errorCount and never thrown.
   */
  private note(check: number, dev: DmaDebugDevice, text: string): void {
    const message = `DMA-API: ${text}`;
    this.#reports.push(makeReport(check, dev.name, message, undefined));
    this.print(message, undefined);
  }

  private raiseIfStrict(): void {
    const report = this.#pending;
    if (report === null) return;
    this.#pending = null;
    throw new DmaDebugError(report);
  }
  /**
   * The live entries of `dev` that hold all of [dev_addr, dev_addr + size), by exact start first
   * (O(1)), else by scan. Buffer ownership (lib/dma/ownership.ts) moves whole entries.
   */
  entriesHolding(dev: DmaDebugDevice, dev_addr: bigint, size: number): DmaDebugEntry[] {
    const end = dev_addr + BigInt(size);
    const holds = (e: DmaDebugEntry): boolean => e.dev_addr <= dev_addr && end <= e.dev_addr + BigInt(e.size);
    const exact = this.#entries.at(dev, dev_addr)?.filter(holds);
    if (exact !== undefined && exact.length > 0) return exact;
    const hits: DmaDebugEntry[] = [];
    for (const e of this.#entries.entries(dev)) if (holds(e)) hits.push(e);
    return hits;
  }

  /**
   * A report of the ownership checks (lib/dma/ownership.ts): recorded, counted and printed like
   * the others. Returns the error to throw when debug is strict or `raise` (ownership 'strict'),
   * else null; the caller throws it once its operation is done.
   */
  ownershipReport(check: number, dev: DmaDebugDevice, entry: DmaDebugEntry | undefined, text: string, raise: boolean): DmaDebugError | null {
    this.err(check, dev, entry, text);
    const pending = this.#pending;
    this.#pending = null;
    if (pending !== null) return new DmaDebugError(pending);
    return raise ? new DmaDebugError(this.#reports.view[this.#reports.view.length - 1]!) : null;
  }

  /**
   * The live mapping of `dev` that holds all of [dev_addr, dev_addr + size), or null. Read-only:
   * the device-side access check (lib/devices/access_check.ts) asks it.
   */
  mappingCovering(dev: DmaDebugDevice, dev_addr: bigint, size: number): DmaDebugEntry | null {
    const end = dev_addr + BigInt(size);
    for (const e of this.#entries.entries(dev)) if (e.dev_addr <= dev_addr && end <= e.dev_addr + BigInt(e.size)) return e;
    return null;
  }
}

/**
 * What a device shows of its DMA-API debug tracker (`dev.debug`): the switches, the reports, the
 * counts and the kernel's dump of live mappings. The hooks themselves are reached only by the
 * mapping layer (see debugOf in device.ts): a caller cannot add, remove or forge tracked entries.
 */
export class DmaDebugView {
  readonly #tracker: DmaDebug;
  readonly #dev: DmaDebugDevice;

  constructor(tracker: DmaDebug, dev: DmaDebugDevice) {
    this.#tracker = tracker;
    this.#dev = dev;
    Object.freeze(this);
  }

  /** Whether the hooks track and check (the kernel's dma_debug `disabled` switch, inverted). */
  get enabled(): boolean {
    return this.#tracker.enabled;
  }

  set enabled(on: boolean) {
    this.#tracker.enabled = on;
  }

  /** Whether a report is also thrown (DmaDebugError) when the call that found it ends. */
  get strict(): boolean {
    return this.#tracker.strict;
  }

  set strict(on: boolean) {
    this.#tracker.strict = on;
  }

  /** How many reports are printed as warnings (the kernel's show_num_errors). */
  get maxPrinted(): number {
    return this.#tracker.maxPrinted;
  }

  /** CONFIG_DMA_API_DEBUG_SG: check mapped sg segments against max_seg_size and the boundary. */
  get sg(): boolean {
    return this.#tracker.sg;
  }

  set sg(on: boolean) {
    this.#tracker.sg = on;
  }

  set maxPrinted(count: number) {
    this.#tracker.maxPrinted = count;
  }

  /** Every report since creation or the last clear(), in order (a frozen snapshot). */
  get reports(): readonly DmaDebugReport[] {
    return this.#tracker.reports;
  }

  /** The kernel's error_count. */
  get errorCount(): number {
    return this.#tracker.errorCount;
  }

  /** Forget the reports and the error count (tracked entries stay). */
  clear(): void {
    this.#tracker.clear();
  }

  /** The machine's pool of debug entries, as debugfs shows it (dma-api/nr_total_entries...). */
  get pool(): DmaDebugPoolStats {
    return this.#tracker.pool;
  }

  /** Number of live tracked entries of this device. */
  activeEntries(): number {
    return this.#tracker.activeEntries(this.#dev);
  }

  /** debug_dma_dump_mappings(dev): one line per live mapping of this device. */
  debug_dma_dump_mappings(): string[] {
    return this.#tracker.debug_dma_dump_mappings(this.#dev);
  }
}
