// The machine: physical memory built from real memfd segments (RAM per NUMA node, CMA areas), one
// linear map of all of it, the page allocator, the vmalloc area and user VMAs, and their teardown.

import { native } from '../native';
import { trackExternalMemory, ViewSet } from '../os/views';
import { HUGE_2M, type HugepagePolicy } from '../os/backing';
import { PFN_HIDDEN, PFN_NOT_PRESENT, readPfns } from '../os/pagemap';
import { allocCopy, assertBackable, type HugetlbUse } from '../os/memory-limits';
import { FrozenList, lockFields } from '../os/lock';

import { BuddyAllocator } from './buddy';
import { Cma, cma_pages_allocated } from './cma';
import { leakReport, pageCorruption, poisonPages } from './page-debug';
import { runMachineTeardown } from './machine-teardown';
import {
  MAX_PAGE_ORDER, NUMA_NO_NODE, PAGE_SHIFT, PAGE_SIZE, __GFP_DMA, __GFP_DMA32,
  __GFP_NOWARN, __GFP_THISNODE, __GFP_ZERO,
} from './gfp';
import type { Page } from './page';
import { MemoryMapFullError, MemoryMapTable } from './memory_map';
import { MM_SLOTS } from './memory_map_layout';
import { createSegment, releaseSegment, segmentBytes, type Segment, type SegmentSpec } from './segment';
import { registerMachine, unregisterMachine } from './registry';
import { gupGet, gupGetFast, gupPin, gupPinFast } from './gup';
import type { Region } from '../os/region';
import { releaseVmallocSpace, VmallocSpace, type VmallocArea, vfree, vmalloc, vmap, vunmap, vzalloc } from './vmalloc';
import { createVmArea, type VmArea, type VmaOptions } from './vma';
import { Page as PageClass, pageState } from './page';
import { HUGEPAGE_POLICIES } from '../os/backing';
import { checkBool, checkGfp, checkInt, checkOptions, checkSameMachine, checkString, describeValue } from './validate';

/** How a hugepage policy uses the hugetlb pool, for the size check. */
const hugetlbUse = (p: HugepagePolicy): HugetlbUse => (p === 'off' ? 'never' : p === 'require' ? 'only' : 'maybe');
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
/** One 2 MiB huge page (the granule hugetlb memory is mapped in). */
const HUGE = HUGE_2M;
/** Exact view ArrayBuffers a segment keeps for reuse by address (without dmaDebug). */
const VIEW_REUSE_MAX = 4096;
/** Address space kept free above the laid-out memory for CMA areas and pools added later. */
const LINEAR_HEADROOM = 64 * GiB;
/** The swiotlb pool grows in whole segments: IO_TLB_SEGSIZE (128) slots of IO_TLB_SIZE (2 KiB). */
const SWIOTLB_GRANULE = 256 * 1024;

export interface MachineOptions {
  /** A name for messages and memfd names. */
  name?: string;
  /** Number of NUMA nodes, each with its own RAM segment. Default 1. */
  nodes?: number;
  /** Bytes of buddy-managed RAM per node (a multiple of 2 MiB). Default 32 MiB. */
  ramPerNode?: number;
  /** Physical address of the first byte of RAM (a multiple of 2 MiB). Default 1 GiB. Use 2 ** 32 or more to put all RAM above 4 GiB. */
  physBase?: number;
  /** Size of the default CMA area (dma_contiguous_default_area, like `cma=`). 0 for none. Default 32 MiB. */
  cmaSize?: number;
  /** Size of each node's `numa_cma=` area. Default 0 (none). */
  numaCmaSize?: number;
  /** Size of each node's `cma_pernuma=` area. Default 0 (none). */
  pernumaCmaSize?: number;
  /** Hugepage policy for CMA areas. Default 'auto'. */
  hugepages?: HugepagePolicy;
  /**
   * Hugepage policy for RAM. Default 'off': buddy pages are handed out one by one and mapped one
   * by one (vmalloc, remap_pfn_range), and Linux can only map a hugetlb page whole.
   */
  ramHugepages?: HugepagePolicy;
  /** Bytes of address space for the vmalloc area. Default 1 GiB. */
  vmallocSize?: number;
  /** CONFIG_CMA_ALIGNMENT (2..12). Default 8. */
  cmaAlignment?: number;
  /** Emit kernel WARNs as process warnings (they are always recorded). Default true. */
  emitWarnings?: boolean;
  /** DMA-API debug (kernel/dma/debug.c) for devices created on this machine: off, on, or strict (throw). Default false. */
  dmaDebug?: boolean | 'strict';
  /**
   * dma_debug_entries=: DMA-API debug entries preallocated for the machine's devices (one pool, as
   * in the kernel); past them the pool grows a page at a time from the machine's RAM, and turns
   * debugging off when it cannot. Default 65536 (PREALLOC_DMA_DEBUG_ENTRIES).
   */
  dmaDebugEntries?: number;
  /**
   * swiotlb bounce buffering (kernel/dma/swiotlb.c): 'auto' reserves the pool when RAM extends above
   * 4 GiB (pci_swiotlb_detect), 'force' bounces every streaming mapping (swiotlb=force), 'off' has
   * none (swiotlb=noforce). Default 'auto'.
   */
  swiotlb?: 'auto' | 'force' | 'off';
  /** Bytes of the swiotlb pool, a multiple of 256 KiB (one segment of 128 slots). Default 64 MiB. */
  swiotlbSize?: number;
}

/** The reserved swiotlb pool of a machine: memory below 4 GiB that only lib/dma/swiotlb.ts hands out. */
export interface SwiotlbReservation {
  /** The segment holding the pool (not buddy-managed, like memblock_alloc_low memory). */
  readonly segment: Segment;
  /** swiotlb=force: every streaming mapping of dma-direct bounces. */
  readonly force: boolean;
  /** Counters kept by lib/dma/swiotlb.ts, shown in stats(). */
  readonly counters: { used: number; maxUsed: number; mapped: number; bounces: number; bytesBounced: number; full: number };
}

/** One recorded kernel WARN. */
export interface KernelWarning {
  readonly message: string;
  readonly stack: string | undefined;
}

export interface SegmentStats {
  name: string; kind: string; nid: number; startPfn: number; pages: number;
  physStart: bigint; backing: string; reason: string;
}

const MACHINE_OPTION_KEYS = [
  'name', 'nodes', 'ramPerNode', 'physBase', 'cmaSize', 'numaCmaSize', 'pernumaCmaSize', 'hugepages',
  'ramHugepages', 'vmallocSize', 'cmaAlignment', 'emitWarnings', 'dmaDebug', 'dmaDebugEntries', 'swiotlb', 'swiotlbSize',
] as const;
const VMA_OPTION_KEYS = ['pgoff', 'prot', 'flags', 'shared'] as const;

function checkPolicy(name: string, value: unknown): void {
  if (value !== undefined && !HUGEPAGE_POLICIES.includes(value as HugepagePolicy)) {
    throw new TypeError(`Expected one of 'auto', 'require', 'off' for ${name} but received ${describeValue(value)}`);
  }
}

/** MachineOptions: unknown keys (typos) and wrongly typed fields are refused before anything is reserved. */
function checkMachineOptions(options: MachineOptions | undefined): Partial<MachineOptions> {
  const o = checkOptions<MachineOptions>('MachineOptions', options, MACHINE_OPTION_KEYS);
  if (o.name !== undefined) checkString('Machine', 'name', o.name);
  checkPolicy('hugepages', o.hugepages);
  checkPolicy('ramHugepages', o.ramHugepages);
  if (o.emitWarnings !== undefined) checkBool('Machine', 'emitWarnings', o.emitWarnings);
  if (o.dmaDebug !== undefined && typeof o.dmaDebug !== 'boolean' && o.dmaDebug !== 'strict') {
    throw new TypeError(`Machine: Expected true, false or 'strict' for dmaDebug but received ${describeValue(o.dmaDebug)}`);
  }
  if (o.dmaDebugEntries !== undefined) checkInt('Machine', 'dmaDebugEntries', o.dmaDebugEntries, 0, 0xffffffff);
  if (o.nodes !== undefined && typeof o.nodes !== 'number') checkInt('Machine', 'nodes', o.nodes, 1, 64);
  if (o.cmaAlignment !== undefined && typeof o.cmaAlignment !== 'number') checkInt('Machine', 'cmaAlignment', o.cmaAlignment, 2, 12);
  if (o.swiotlb !== undefined && o.swiotlb !== 'auto' && o.swiotlb !== 'force' && o.swiotlb !== 'off') {
    throw new TypeError(`Machine: Expected one of 'auto', 'force', 'off' for swiotlb but received ${describeValue(o.swiotlb)}`);
  }
  return o;
}

function checkSize(name: string, value: number, multiple: number, allowZero: boolean): number {
  if (typeof value !== 'number') {
    throw new TypeError(`Expected a ${allowZero ? 'non-negative' : 'positive'} integer for ${name} but received ${describeValue(value)}`);
  }
  if (!Number.isSafeInteger(value) || value < 0 || (!allowZero && value === 0)) {
    throw new RangeError(`Expected a ${allowZero ? 'non-negative' : 'positive'} integer for ${name} but received ${String(value)} of type ${typeof value}`);
  }
  if (value % multiple !== 0) {
    throw new RangeError(`Expected a multiple of ${multiple} for ${name} but received ${value}`);
  }
  return value;
}

/** Memory hotplug of user memory, for lib/mm/gup.ts only (set in Machine's static block; not public). */
export interface UserMemoryHotplug {
  /** Adds a 'user' segment mapping `fd` (owned from now on) from `offset`, at fresh PFNs after every other segment. */
  add(m: Machine, name: string, from: NonNullable<SegmentSpec['from']>, pages: number): Segment;
  /** Removes a 'user' segment: views revoked, range back to PROT_NONE, fd closed, PFNs invalid from now on. */
  remove(m: Machine, seg: Segment): void;
}
// eslint-disable-next-line prefer-const -- assigned once, in Machine's static block
let hotplug: UserMemoryHotplug | undefined;
let memoryMapOf: ((m: Machine) => SharedArrayBuffer) | undefined;
export function userMemoryHotplug(): UserMemoryHotplug {
  return hotplug!;
}

/**
 * The machine's published memory map (lib/mm/memory_map_layout.ts), for the devices' bus engines:
 * every segment by PFN range and memfd, kept current as memory is hot-added and removed.
 */
export function publishedMemoryMap(m: Machine): SharedArrayBuffer {
  return memoryMapOf!(m);
}

/**
 * `using m = new Machine(...)` destroys it at the end of the block. Declared here as well as by the
 * class's method: TypeScript's incremental checks (tsc --watch, Stryker's checker) otherwise lose the
 * class's [Symbol.dispose] once another module merges members into Machine, and report TS2850.
 */
// eslint-disable-next-line @typescript-eslint/no-empty-object-type, @typescript-eslint/no-unsafe-declaration-merging
export interface Machine extends Disposable {}

export class Machine {
  static {
    memoryMapOf = (m) => m.#memoryMap.buffer;
    hotplug = {
      add: (m, name, from, pages) => {
        try {
          m.assertAlive();
        } catch (err) {
          native.close(from.fd);
          throw err;
        }
        return m.#addSegment(name, 'user', 0, pages, 'off', undefined, from);
      },
      remove: (m, seg) => {
        const i = m.#segments.indexOf(seg);
        if (seg.kind !== 'user' || i < 0) return;
        m.#segmentViews.get(seg)?.set.revoke();
        m.#segmentViews.delete(seg);
        m.#segments.splice(i, 1);
        m.#segmentsView = Object.freeze(m.#segments.slice());
        m.#memoryMap.remove(seg.startPfn);
        if (m.#lastSegment === seg) m.#lastSegment = null;
        releaseSegment(seg);
        native.reserveFixed(seg.address, seg.byteLength);
      },
    };
  }

  readonly name: string;
  readonly physBase: number;
  readonly nodeCount: number;
  readonly cmaAlignment: number;
  readonly #numaCmaAreas = new FrozenList<Cma | null>();
  readonly #pernumaCmaAreas = new FrozenList<Cma | null>();
  readonly #cmaAreas = new FrozenList<Cma>();
  readonly #warnings = new FrozenList<KernelWarning>();
  /** Counts of real mapping syscalls made on behalf of the model (for tests and benchmarks). */
  readonly counters = Object.seal({ mmapCalls: 0, segmentsCreated: 0 });
  #dmaContiguousDefaultArea: Cma | null = null;
  #swiotlb: SwiotlbReservation | null = null;
  #emitWarnings: boolean;
  readonly #dmaDebug: boolean | 'strict';
  readonly #dmaDebugEntries: number;
  #currentNode = 0;

  // What addresses, views and teardown are computed from is private (not writable from outside).
  readonly #pageOffset: number;
  readonly #linearLength: number;
  readonly #vmallocSpace: VmallocSpace;
  readonly #buddy: BuddyAllocator;
  readonly #segments: Segment[] = [];
  /** Every segment, published in shared memory for the devices' bus engines. */
  readonly #memoryMap = new MemoryMapTable();
  #segmentsView: readonly Segment[] = Object.freeze([]);
  #lastSegment: Segment | null = null;
  /** The CMA area of each CMA segment (by segment). */
  readonly #cmaOfSegment = new Map<Segment, Cma>();
  readonly #vmas = new Set<VmArea>();
  /**
   * With dmaDebug (fixed at boot), views over buddy blocks are tracked by head PFN (a view over
   * several blocks is in each) and over CMA areas by segment, and revoked when what they cover is
   * freed. Without it, that costs too much for the hot path (a fresh external ArrayBuffer per
   * allocation, about 15 times an alloc+view+free that reuses one): views are then tracked per
   * segment and revoked at teardown only, and an exact ArrayBuffer per address is reused (a view
   * kept past a free sees the memory's next user, as in the kernel without debugging).
   */
  readonly #revokeOnFree: boolean;
  readonly #blockViews = new Map<number, ViewSet>();
  readonly #cmaViews = new Map<Segment, ViewSet>();
  readonly #segmentViews = new Map<Segment, { set: ViewSet; byAddress: Map<number, ArrayBuffer> }>();
  /** page_poisoning (mm/page_poison.c): fixed at boot from dmaDebug; 'strict' throws on corruption. */
  readonly #poison: boolean | 'strict';
  #nextPfn: number;
  #destroyed = false;

  constructor(opts?: MachineOptions) {
    const options = checkMachineOptions(opts);
    this.name = options.name ?? 'machine';
    const nodes = options.nodes ?? 1;
    if (!Number.isInteger(nodes) || nodes < 1 || nodes > 64) {
      throw new RangeError(`Expected an integer from 1 to 64 for nodes but received ${String(nodes)}`);
    }
    this.nodeCount = nodes;
    const ram = checkSize('ramPerNode', options.ramPerNode ?? 32 * MiB, HUGE, false);
    this.physBase = checkSize('physBase', options.physBase ?? GiB, HUGE, true);
    const cmaSize = checkSize('cmaSize', options.cmaSize ?? 32 * MiB, HUGE, true);
    const numaCma = checkSize('numaCmaSize', options.numaCmaSize ?? 0, HUGE, true);
    const pernumaCma = checkSize('pernumaCmaSize', options.pernumaCmaSize ?? 0, HUGE, true);
    const vmallocSize = checkSize('vmallocSize', options.vmallocSize ?? GiB, HUGE, false);
    const swiotlbSize = checkSize('swiotlbSize', options.swiotlbSize ?? 64 * MiB, SWIOTLB_GRANULE, false);
    this.cmaAlignment = options.cmaAlignment ?? 8;
    if (!Number.isInteger(this.cmaAlignment) || this.cmaAlignment < 2 || this.cmaAlignment > 12) {
      throw new RangeError(`Expected an integer from 2 to 12 for cmaAlignment but received ${String(options.cmaAlignment)}`);
    }
    this.#emitWarnings = options.emitWarnings ?? true;
    this.#dmaDebug = options.dmaDebug ?? false;
    this.#dmaDebugEntries = options.dmaDebugEntries ?? 1 << 16;
    const cmaPolicy = options.hugepages ?? 'auto';
    const ramPolicy = options.ramHugepages ?? 'off';
    const ramReason = options.ramHugepages === undefined
      ? 'buddy RAM defaults to 4 KiB pages because vmalloc and remap_pfn_range map its pages one by one and Linux maps hugetlb pages only whole'
      : undefined;

    // The RAM the segments will pre-fault, checked against what the host can back (ENOMEM) before
    // anything is reserved; each CMA area is checked the same way by cma_declare.
    assertBackable(nodes * ram, `new Machine({ name: '${this.name}' }) RAM (${nodes} x ${ram} bytes)`, hugetlbUse(ramPolicy));

    this.#poison = this.dmaDebug;
    this.#revokeOnFree = this.dmaDebug !== false;
    this.#buddy = new BuddyAllocator((pfn) => this.pfn_to_page(pfn), {
      freed: (pfn, pages) => {
        if (this.#revokeOnFree) this.#pagesFreed(this.segmentOfPfn(pfn), pfn, pages, true);
      },
      allocated: (pfn, pages) => this.#pagesAllocated(pfn, pages),
    });
    this.#nextPfn = this.physBase / PAGE_SIZE;

    // One reservation from physical 0 up, so that virt = PAGE_OFFSET + phys exactly as in the
    // kernel's direct map. PROT_NONE and unreserved: it costs address space only.
    const top = this.physBase + nodes * (ram + numaCma + pernumaCma) + cmaSize;
    // pci_swiotlb_detect: bounce buffers when RAM reaches above 4 GiB. The pool lies just below RAM
    // (and below 4 GiB); with too little room there it comes first and RAM starts after it.
    const swiotlbMode = options.swiotlb ?? 'auto';
    const swiotlbOn = swiotlbMode === 'force' || (swiotlbMode === 'auto' && top > 4 * GiB);
    const swiotlbSpan = Math.ceil(swiotlbSize / HUGE) * HUGE;
    const swiotlbBelow = Math.min(this.physBase, 4 * GiB) - swiotlbSpan;
    this.#linearLength = top + (swiotlbOn && swiotlbBelow < 0 ? swiotlbSpan : 0) + LINEAR_HEADROOM;
    this.#pageOffset = native.reserve(this.#linearLength, GiB);
    try {
      this.#vmallocSpace = new VmallocSpace(native.reserve(vmallocSize, HUGE), vmallocSize);
    } catch (err) {
      native.munmap(this.#pageOffset, this.#linearLength);
      throw err;
    }
    registerMachine(this);
    try {
      if (swiotlbOn) {
        const seg = this.#addSegment(`${this.name}:swiotlb`, 'ram', 0, swiotlbSize / PAGE_SIZE, 'off',
          'swiotlb bounce buffers are copied into slot by slot', undefined, swiotlbBelow >= 0 ? swiotlbBelow / PAGE_SIZE : undefined);
        this.#swiotlb = Object.freeze({
          segment: seg, force: swiotlbMode === 'force',
          counters: Object.seal({ used: 0, maxUsed: 0, mapped: 0, bounces: 0, bytesBounced: 0, full: 0 }),
        });
      }
      for (let nid = 0; nid < nodes; nid++) {
        const seg = this.#addSegment(`${this.name}:ram${nid}`, 'ram', nid, ram / PAGE_SIZE, ramPolicy, ramReason);
        this.buddy.addRange(nid, seg.startPfn, seg.pages);
      }
      if (cmaSize > 0) this.#dmaContiguousDefaultArea = this.cma_declare('reserved', cmaSize, 0, cmaPolicy);
      for (let nid = 0; nid < nodes; nid++) {
        this.#numaCmaAreas.push(numaCma > 0 ? this.cma_declare(`numa${nid}`, numaCma, nid, cmaPolicy) : null);
        this.#pernumaCmaAreas.push(pernumaCma > 0 ? this.cma_declare(`pernuma${nid}`, pernumaCma, nid, cmaPolicy) : null);
      }
    } catch (err) {
      this.destroy();
      throw err;
    }
    lockFields(this, 'name', 'physBase', 'nodeCount', 'cmaAlignment', 'counters');
  }

  // ---- layout ----

  /** dma_contiguous_default_area, or null. */
  get dma_contiguous_default_area(): Cma | null {
    return this.#dmaContiguousDefaultArea;
  }

  /** The swiotlb pool reserved at boot, or null (see MachineOptions.swiotlb). */
  get swiotlb(): SwiotlbReservation | null {
    return this.#swiotlb;
  }

  /** numa_cma= areas by node. */
  get numaCmaAreas(): readonly (Cma | null)[] {
    return this.#numaCmaAreas.view;
  }

  /** cma_pernuma= areas by node. */
  get pernumaCmaAreas(): readonly (Cma | null)[] {
    return this.#pernumaCmaAreas.view;
  }

  /** Every CMA area, including per-device ones added later. */
  get cmaAreas(): readonly Cma[] {
    return this.#cmaAreas.view;
  }

  /** Every kernel WARN this machine raised, in order. */
  get warnings(): readonly KernelWarning[] {
    return this.#warnings.view;
  }

  /** Emit kernel WARNs as process warnings (they are always recorded). */
  get emitWarnings(): boolean {
    return this.#emitWarnings;
  }

  set emitWarnings(value: boolean) {
    checkBool('Machine', 'emitWarnings', value);
    this.#emitWarnings = value;
  }

  /** The default DMA-API debug setting of devices created on this machine (fixed at boot). */
  get dmaDebug(): boolean | 'strict' {
    return this.#dmaDebug;
  }

  /** dma_debug_entries=: the DMA-API debug entries preallocated for this machine's devices. */
  get dmaDebugEntries(): number {
    return this.#dmaDebugEntries;
  }

  /** The node the "current CPU" is on (numa_mem_id()). */
  get currentNode(): number {
    return this.#currentNode;
  }

  set currentNode(nid: number) {
    if (!Number.isInteger(nid) || nid < 0 || nid >= this.nodeCount) {
      throw new RangeError(`Expected an integer from 0 to ${this.nodeCount - 1} for currentNode but received ${describeValue(nid)}`);
    }
    this.#currentNode = nid;
  }

  /** PAGE_OFFSET: the linear-map address of physical address 0 (the kernel's direct map). */
  get pageOffset(): number {
    return this.#pageOffset;
  }

  /** The segments in PFN order (a frozen list: the machine's own is private). */
  get segments(): readonly Segment[] {
    return this.#segmentsView;
  }

  /** The page allocator. */
  get buddy(): BuddyAllocator {
    return this.#buddy;
  }

  /** The vmalloc address range and its live areas (lib/mm/vmalloc.ts). */
  get vmallocSpace(): VmallocSpace {
    return this.#vmallocSpace;
  }

  /** Adds a memfd segment at the next free PFN (2 MiB aligned) and maps it into the linear map. */
  #addSegment(name: string, kind: 'ram' | 'cma' | 'user', nid: number, pages: number, policy: HugepagePolicy, policyReason?: string, from?: SegmentSpec['from'], atPfn?: number): Segment {
    this.assertAlive();
    const startPfn = atPfn ?? this.#nextPfn;
    const bytes = pages * PAGE_SIZE;
    if ((startPfn + pages) * PAGE_SIZE > this.#linearLength) {
      if (from !== undefined) native.close(from.fd);
      throw new RangeError(`${this.name}: no room left in the linear map for ${bytes} more bytes`);
    }
    const base = policyReason === undefined ? { name, kind, nid, startPfn, pages, hugepages: policy } : { name, kind, nid, startPfn, pages, hugepages: policy, policyReason };
    const spec = from === undefined ? base : { ...base, from };
    const seg = createSegment(spec, this.#pageOffset + startPfn * PAGE_SIZE, this);
    if (!this.#memoryMap.add({ startPfn, pages, fd: seg.fd, fileOffset: seg.fileOffset, writable: seg.writable })) {
      releaseSegment(seg);
      native.reserveFixed(seg.address, seg.byteLength);
      throw new MemoryMapFullError(`${this.name}: the published memory map has no free slot for segment ${name} (${MM_SLOTS} segments at most)`);
    }
    this.counters.segmentsCreated++;
    this.counters.mmapCalls++;
    // User memory is the Region's, already counted by it.
    if (kind !== 'user') trackExternalMemory(bytes);
    // Keep segments 2 MiB aligned so that hugetlb segments can be mapped anywhere after.
    if (atPfn === undefined) this.#nextPfn = startPfn + Math.ceil(bytes / HUGE) * (HUGE / PAGE_SIZE);
    this.#segments.push(seg);
    if (atPfn !== undefined) this.#segments.sort((a, b) => a.startPfn - b.startPfn);
    this.#segmentsView = Object.freeze(this.#segments.slice());
    return seg;
  }

  /**
   * Creates a CMA area of `size` bytes on node `nid` (like cma_declare_contiguous_nid): a new
   * segment whose pages only cma_alloc hands out.
   */
  cma_declare(name: string, size: number, nid: number, hugepages: HugepagePolicy = 'auto'): Cma {
    checkString('cma_declare', 'name', name);
    checkInt('cma_declare', 'nid', nid, 0, this.nodeCount - 1);
    checkPolicy('hugepages', hugepages);
    checkSize('size', size, PAGE_SIZE, false);
    assertBackable(size, `cma_declare('${name}', ${size})`, hugetlbUse(hugepages));
    const seg = this.#addSegment(`${this.name}:cma-${name}`, 'cma', nid, size / PAGE_SIZE, hugepages);
    const cma = new Cma({
      name, basePfn: seg.startPfn, count: seg.pages, orderPerBit: 0, nid,
      pfnToPage: (pfn) => seg.page(pfn),
      warn: (message) => this.warn(message),
      allocated: (pfn, count) => this.#pagesAllocated(pfn, count),
      released: (pfn, count) => this.#pagesFreed(seg, pfn, count, false),
    });
    this.#pagesFreed(seg, seg.startPfn, seg.pages, false); // boot: free CMA memory is poisoned too
    this.#cmaOfSegment.set(seg, cma);
    this.#cmaAreas.push(cma);
    return cma;
  }

  /** The segment of a CMA area. */
  cmaSegment(cma: Cma): Segment {
    const seg = this.segmentOfPfn(cma.basePfn);
    if (seg === null) throw new Error(`${this.name}: CMA area ${cma.name} has no segment`);
    return seg;
  }

  // ---- pages and addresses (O(1)-ish arithmetic, no native call) ----

  segmentOfPfn(pfn: number): Segment | null {
    const last = this.#lastSegment;
    if (last !== null && pfn >= last.startPfn && pfn < last.startPfn + last.pages) return last;
    for (const seg of this.#segments) {
      if (pfn >= seg.startPfn && pfn < seg.startPfn + seg.pages) {
        this.#lastSegment = seg;
        return seg;
      }
    }
    return null;
  }

  pfn_valid(pfn: number): boolean {
    return this.segmentOfPfn(pfn) !== null;
  }

  /** struct page of a PFN; the same object every time. RangeError for a PFN that is not memory. */
  pfn_to_page(pfn: number): Page {
    if (typeof pfn !== 'number') checkInt('pfn_to_page', 'pfn', pfn, 0);
    const seg = this.segmentOfPfn(pfn);
    if (seg === null) throw new RangeError(`${this.name}: pfn 0x${pfn.toString(16)} is not memory of this machine`);
    return seg.page(pfn);
  }

  /** Is addr inside this machine's linear (direct) map? */
  isLinearAddress(addr: number): boolean {
    return addr >= this.#pageOffset && addr < this.#pageOffset + this.#linearLength;
  }

  virt_to_phys(addr: number): bigint {
    checkInt('virt_to_phys', 'addr', addr, 0);
    return BigInt(addr - this.pageOffset);
  }

  phys_to_virt(phys: bigint): number {
    if (typeof phys !== 'bigint') throw new TypeError(`phys_to_virt: Expected a bigint for phys but received ${describeValue(phys)}`);
    return Number(phys) + this.pageOffset;
  }

  virt_to_page(addr: number): Page {
    if (typeof addr !== 'number') checkInt('virt_to_page', 'addr', addr, 0);
    return this.pfn_to_page(Math.floor((addr - this.pageOffset) / PAGE_SIZE));
  }

  page_address(page: Page): number {
    if (page.machine !== this) checkSameMachine('page_address', 'page', page.machine, this);
    return this.pageOffset + page.pfn * PAGE_SIZE;
  }

  // ---- the page allocator (mm/page_alloc.c) ----

  numa_mem_id(): number {
    return this.#currentNode;
  }

  /**
   * alloc_pages_node: 2^order contiguous pages, preferably on `nid` (NUMA_NO_NODE: the current
   * CPU's node), only there with __GFP_THISNODE. order > MAX_PAGE_ORDER: WARN (unless
   * __GFP_NOWARN) and null. __GFP_ZERO zeroes. GFP_DMA / GFP_DMA32 restrict to memory below
   * 16 MiB / 4 GiB (ZONE_DMA / ZONE_DMA32), on any allowed node; null when there is none.
   * A nid outside 0..MAX_NUMNODES-1 is the kernel's VM_BUG_ON: it throws "kernel BUG ...".
   */
  alloc_pages_node(nid: number, gfp: number, order: number): Page | null {
    this.assertAlive();
    if (typeof nid !== 'number') checkInt('alloc_pages_node', 'nid', nid, NUMA_NO_NODE);
    checkGfp('alloc_pages_node', gfp);
    checkInt('alloc_pages_node', 'order', order, 0);
    if (nid === NUMA_NO_NODE) nid = this.numa_mem_id();
    if (!Number.isInteger(nid) || nid < 0 || nid >= 1024) {
      throw new Error(`kernel BUG at include/linux/gfp.h: VM_BUG_ON: alloc_pages_node: nid ${String(nid)} outside 0..MAX_NUMNODES-1`);
    }
    if (nid >= this.nodeCount) {
      // A possible node that is not online (it has no memory on this machine): its zonelist is
      // empty, so the allocator finds no zone and fails; warn_if_node_offline reports it.
      if (!(gfp & __GFP_NOWARN)) this.warn(`WARNING: include/linux/gfp.h: warn_if_node_offline: allocation from offline node ${nid} (this machine has nodes 0..${this.nodeCount - 1})`);
      return null;
    }
    if (order > MAX_PAGE_ORDER) {
      if (!(gfp & __GFP_NOWARN)) this.warn(`WARNING: mm/page_alloc.c: __alloc_pages: order ${order} > MAX_PAGE_ORDER (${MAX_PAGE_ORDER})`);
      return null;
    }
    const zoneEnd = gfp & __GFP_DMA ? 16 * MiB : gfp & __GFP_DMA32 ? 4 * GiB : Infinity;
    const page = this.#buddy.allocOrder(nid, order, (gfp & __GFP_THISNODE) !== 0, zoneEnd / PAGE_SIZE);
    if (page === null) return null;
    if (gfp & __GFP_ZERO) this.memset(this.page_address(page), 0, PAGE_SIZE << order);
    return page;
  }

  /** drain_all_pages: moves pages from the pcp lists into the buddy lists, where they merge. */
  drain_all_pages(): void {
    this.#buddy.drainPcp();
  }

  alloc_pages(gfp: number, order: number): Page | null {
    return this.alloc_pages_node(NUMA_NO_NODE, gfp, order);
  }

  __free_pages(page: Page, order: number): void {
    this.assertAlive();
    if (!(page instanceof PageClass)) throw new TypeError(`__free_pages: Expected a struct page (Page) for page but received ${describeValue(page)}`);
    if (page.machine !== this) checkSameMachine('__free_pages', 'page', page.machine, this);
    checkInt('__free_pages', 'order', order, 0, MAX_PAGE_ORDER);
    // put_page_testzero: with other references (get_page) only this one is dropped.
    if (page.refcount > 1 && page.allocOrder === order) {
      pageState().setRefcount(page, page.refcount - 1);
      return;
    }
    this.#buddy.free(page, order);
  }

  // ---- views ----

  /** The segment holding [addr, addr+length) of the linear map, or a RangeError naming `what`. */
  #linearSegment(addr: number, length: number, what: string): Segment {
    const seg = this.segmentOfPfn(Math.floor((addr - this.#pageOffset) / PAGE_SIZE));
    if (seg === null) throw new RangeError(`${this.name}: 0x${addr.toString(16)} is in the linear map but not memory`);
    const off = addr - seg.address;
    if (!(off >= 0 && off + length <= seg.byteLength)) {
      throw new RangeError(`${this.name}: ${what} of ${length} bytes at 0x${addr.toString(16)} leaves segment ${seg.name}`);
    }
    return seg;
  }

  /**
   * memset of `length` bytes at a linear-map or vmalloc address. Inside one segment it is a
   * TypedArray fill through the segment's internal bytes (no native call); elsewhere native memset.
   */
  memset(addr: number, byte: number, length: number): void {
    this.assertAlive();
    if (!Number.isSafeInteger(addr) || !Number.isSafeInteger(length) || length < 0 || !Number.isInteger(byte)) {
      throw new RangeError(`Expected integer address, byte and non-negative length but received ${String(addr)}, ${String(byte)}, ${String(length)}`);
    }
    if (length === 0) return;
    if (this.isLinearAddress(addr)) {
      const seg = this.#linearSegment(addr, length, 'memset');
      const off = addr - seg.address;
      segmentBytes(seg).fill(byte, off, off + length);
      return;
    }
    const area = this.#vmallocSpace.find(addr);
    if (area !== null) {
      // The checks area.view() makes, without making a view.
      if (!area.writable) area.view(addr, length); // throws ERR_DMAMEM_READONLY
      if (addr + length > area.addr + area.size) throw new RangeError(`${this.name}: memset of ${length} bytes at 0x${addr.toString(16)} leaves its vmalloc area`);
    } else {
      this.view(addr, length); // a user VMA: checks that the range is mapped and writable
    }
    native.memset(addr, byte, length);
  }

  /**
   * A Buffer over exactly `length` bytes at a linear-map, vmalloc or user-VMA address: its
   * `.buffer` covers those bytes and nothing more. RangeError when the range is not mapped or
   * leaves the allocation / vmalloc area / VMA that holds its start. The view reads as length 0
   * once its vmalloc area or VMA goes (vfree, vunmap, unmap) or the machine is destroyed, and, with
   * dmaDebug, once the pages it covers are freed (__free_pages, cma_release). A new view costs one
   * external ArrayBuffer (about 2 us); without dmaDebug the one made for the same address and
   * length before is reused.
   */
  view(addr: number, length: number): Buffer {
    this.assertAlive();
    if (!Number.isSafeInteger(addr) || !Number.isSafeInteger(length) || length < 0) {
      throw new RangeError(`Expected integer address and non-negative length but received ${String(addr)}, ${String(length)}`);
    }
    if (this.isLinearAddress(addr)) {
      const seg = this.#linearSegment(addr, length, 'view');
      if (length === 0) return Buffer.alloc(0);
      if (seg.kind === 'user') return this.#segmentView(seg, addr, length); // pinned user memory (a segment only while pinned)
      if (seg.kind === 'cma') {
        this.#checkCmaAllocated(seg, addr, length);
        if (!this.#revokeOnFree) return this.#segmentView(seg, addr, length);
        let set = this.#cmaViews.get(seg);
        if (set === undefined) this.#cmaViews.set(seg, (set = new ViewSet()));
        return set.view(addr, length);
      }
      return this.#buddyView(seg, addr, length);
    }
    const area = this.#vmallocSpace.find(addr);
    if (area !== null) return area.view(addr, length);
    for (const vma of this.#vmas) if (addr >= vma.vm_start && addr < vma.vm_end) return vma.view(addr - vma.vm_start, length);
    throw new RangeError(`${this.name}: nothing is mapped at 0x${addr.toString(16)}`);
  }

  /**
   * A copy of `length` bytes of mapped memory at a linear-map, vmalloc or VMA address, allocated
   * or not (like reading /dev/mem): for inspecting memory a view may not cover, e.g. pages that
   * were just freed. RangeError where nothing is mapped.
   */
  read(addr: number, length: number): Buffer {
    this.assertAlive();
    if (!Number.isSafeInteger(addr) || !Number.isSafeInteger(length) || length < 0) {
      throw new RangeError(`Expected integer address and non-negative length but received ${String(addr)}, ${String(length)}`);
    }
    if (this.isLinearAddress(addr)) {
      const seg = this.#linearSegment(addr, length, 'read');
      const off = addr - seg.address;
      const out = allocCopy(length, `${this.name}: read(0x${addr.toString(16)}, ${length})`);
      out.set(segmentBytes(seg).subarray(off, off + length));
      return out;
    }
    const area = this.#vmallocSpace.find(addr);
    if (area !== null) {
      if (addr + length > area.addr + area.size) throw new RangeError(`${this.name}: read of ${length} bytes at 0x${addr.toString(16)} leaves its vmalloc area`);
      const out = allocCopy(length, `${this.name}: read(0x${addr.toString(16)}, ${length})`);
      if (length > 0) native.copyOut(addr, length, out, 0);
      return out;
    }
    for (const vma of this.#vmas) if (addr >= vma.vm_start && addr < vma.vm_end) return vma.read(addr - vma.vm_start, length);
    throw new RangeError(`${this.name}: nothing is mapped at 0x${addr.toString(16)}`);
  }

  /**
   * A view over buddy RAM: every page of [addr, addr+length) must lie in blocks the buddy allocator
   * handed out (a view is a window onto an allocation, never onto free memory that may go to
   * someone else). The view is tracked under each block it covers, so freeing any of them revokes it.
   */
  #buddyView(seg: Segment, addr: number, length: number): Buffer {
    const first = (addr - seg.address - ((addr - seg.address) % PAGE_SIZE)) / PAGE_SIZE + seg.startPfn;
    const end = Math.ceil((addr + length - seg.address) / PAGE_SIZE) + seg.startPfn;
    const head = this.#allocatedBlockHead(seg, first);
    if (head < 0) throw new RangeError(`${this.name}: view of ${length} bytes at 0x${addr.toString(16)} leaves its allocation (pfn 0x${first.toString(16)} is free)`);
    const blockEnd = head + (1 << seg.page(head).allocOrder);
    if (!this.#revokeOnFree) {
      for (let pfn = blockEnd; pfn < end;) {
        const h = this.#allocatedBlockHead(seg, pfn);
        if (h < 0) throw new RangeError(`${this.name}: view of ${length} bytes at 0x${addr.toString(16)} leaves its allocation (pfn 0x${pfn.toString(16)} is free)`);
        pfn = h + (1 << seg.page(h).allocOrder);
      }
      return this.#segmentView(seg, addr, length);
    }
    let set = this.#blockViews.get(head);
    if (set === undefined) this.#blockViews.set(head, (set = new ViewSet()));
    if (end <= blockEnd) return set.view(addr, length);
    // Several blocks: check them all before making the view, then track it under each.
    const heads = [head];
    for (let pfn = blockEnd; pfn < end;) {
      const h = this.#allocatedBlockHead(seg, pfn);
      if (h < 0) throw new RangeError(`${this.name}: view of ${length} bytes at 0x${addr.toString(16)} leaves its allocation (pfn 0x${pfn.toString(16)} is free)`);
      heads.push(h);
      pfn = h + (1 << seg.page(h).allocOrder);
    }
    const ab = set.arrayBuffer(addr, length);
    for (let i = 1; i < heads.length; i++) {
      let other = this.#blockViews.get(heads[i]!);
      if (other === undefined) this.#blockViews.set(heads[i]!, (other = new ViewSet()));
      other.adopt(ab, addr, length);
    }
    return Buffer.from(ab);
  }

  /**
   * A view tracked by its segment (revoked at teardown), reusing the exact ArrayBuffer made for the
   * same address and length before. The reuse table is bounded; what it forgets stays tracked.
   */
  #segmentView(seg: Segment, addr: number, length: number): Buffer {
    let views = this.#segmentViews.get(seg);
    if (views === undefined) this.#segmentViews.set(seg, (views = { set: new ViewSet(), byAddress: new Map() }));
    const cached = views.byAddress.get(addr);
    if (cached !== undefined && cached.byteLength === length) return Buffer.from(cached);
    const ab = views.set.arrayBuffer(addr, length);
    if (views.byAddress.size >= VIEW_REUSE_MAX) views.byAddress.clear();
    views.byAddress.set(addr, ab);
    return Buffer.from(ab);
  }

  /** RangeError unless every page of [addr, addr+length) of a CMA segment is handed out by cma_alloc. */
  #checkCmaAllocated(seg: Segment, addr: number, length: number): void {
    const first = Math.floor((addr - seg.address) / PAGE_SIZE) + seg.startPfn;
    const end = Math.ceil((addr + length - seg.address) / PAGE_SIZE) + seg.startPfn;
    const cma = this.#cmaOfSegment.get(seg);
    if (cma !== undefined && cma_pages_allocated(cma, first, end - first)) return;
    throw new RangeError(`${this.name}: view of ${length} bytes at 0x${addr.toString(16)} leaves its allocation (pages of CMA area ${cma?.name ?? seg.name} not handed out)`);
  }

  /** The head PFN of the allocated buddy block holding pfn, or -1 if pfn is free (heads are order-aligned). */
  #allocatedBlockHead(seg: Segment, pfn: number): number {
    for (let order = 0; order <= MAX_PAGE_ORDER; order++) {
      const head = pfn - (pfn % (1 << order));
      if (head < seg.startPfn) break;
      const page = seg.peek(head);
      if (page !== undefined && page.allocOrder >= order && head + (1 << page.allocOrder) > pfn) return head;
    }
    return -1;
  }

  /**
   * Pages [pfn, pfn+count) of `seg` were freed (buddy: a block, `block` true; CMA: a run). With
   * dmaDebug, the views over them are revoked and they are filled with PAGE_POISON.
   */
  #pagesFreed(seg: Segment | null, pfn: number, count: number, block: boolean): void {
    // Without dmaDebug nothing is tracked per allocation (see #revokeOnFree).
    if (seg === null || !this.#revokeOnFree) return;
    if (block) {
      const set = this.#blockViews.get(pfn);
      if (set !== undefined) {
        set.revoke();
        this.#blockViews.delete(pfn);
      }
    } else {
      this.#cmaViews.get(seg)?.revoke(seg.addressOf(pfn), seg.addressOf(pfn + count));
    }
    if (this.#poison !== false) poisonPages(segmentBytes(seg), (pfn - seg.startPfn) * PAGE_SIZE, count * PAGE_SIZE);
  }

  /**
   * Pages [pfn, pfn+count) were handed out: with page poisoning, check they still hold
   * PAGE_POISON (a write after free shows here). Corruption is a recorded report ("pagealloc:
   * memory corruption"), thrown in strict mode (the allocator then takes the pages back).
   */
  #pagesAllocated(pfn: number, count: number): void {
    if (this.#poison === false) return;
    const seg = this.segmentOfPfn(pfn);
    if (seg === null) return;
    const report = pageCorruption(segmentBytes(seg), seg.startPfn, pfn, count);
    if (report === null) return;
    this.warn(report);
    if (this.#poison === 'strict') {
      const err = new Error(report) as Error & { code: string };
      err.code = 'ERR_DMAMEM_PAGE_CORRUPTION';
      throw err;
    }
  }

  // ---- vmalloc area (mm/vmalloc.c) ----

  is_vmalloc_addr(addr: number): boolean {
    return this.#vmallocSpace.contains(addr);
  }

  /** The live vmalloc / vmap area holding addr, or null. */
  findVmallocArea(addr: number): VmallocArea | null {
    return this.#vmallocSpace.find(addr);
  }

  /** vmalloc on this machine: an address, or null. See lib/mm/vmalloc.ts. */
  vmalloc(size: number): number | null {
    if (!this.vmallocFits('vmalloc', size)) return null;
    return vmalloc(this, size);
  }

  vzalloc(size: number): number | null {
    if (!this.vmallocFits('vzalloc', size)) return null;
    return vzalloc(this, size);
  }

  /**
   * __vmalloc_node_range's first check: a size whose pages exceed the machine's total RAM fails at
   * once (NULL and "vmalloc error: ... exceeds total pages"), before a single page is allocated.
   */
  private vmallocFits(fn: string, size: number): boolean {
    this.assertAlive();
    checkInt(fn, 'size', size, 0);
    let total = 0;
    for (let nid = 0; nid < this.nodeCount; nid++) total += this.buddy.totalPages(nid);
    if (Math.ceil(size / PAGE_SIZE) <= total) return true;
    this.warn(`vmalloc error: size ${size}, exceeds total pages (${total})`);
    return false;
  }

  vfree(addr: number | null): void {
    vfree(this, addr);
  }

  vmap(pages: readonly Page[], count: number, flags = 0, prot: 'readwrite' | 'read' = 'readwrite'): number | null {
    if (!Array.isArray(pages)) throw new TypeError(`vmap: Expected an array of pages for pages but received ${describeValue(pages)}`);
    checkInt('vmap', 'count', count, 0, pages.length);
    for (let i = 0; i < count; i++) {
      const p: unknown = pages[i];
      if (!(p instanceof PageClass)) throw new TypeError(`vmap: Expected a struct page (Page) for pages[${i}] but received ${describeValue(p)}`);
      if (p.machine !== this) checkSameMachine('vmap', `pages[${i}]`, p.machine, this);
    }
    return vmap(this, pages, count, flags, prot);
  }

  vunmap(addr: number | null): void {
    vunmap(this, addr);
  }

  vmalloc_to_page(addr: number): Page | null {
    return this.#vmallocSpace.find(addr)?.pageAt(addr) ?? null;
  }

  // ---- user mappings ----

  /** Reserves a user VMA the way mmap(2) on a device file does before the driver's mmap handler runs. */
  createVma(length: number, options: VmaOptions = {}): VmArea {
    this.assertAlive();
    checkInt('createVma', 'length', length, 1);
    const o = checkOptions<VmaOptions>('VmaOptions', options, VMA_OPTION_KEYS);
    if (o.pgoff !== undefined) checkInt('createVma', 'pgoff', o.pgoff, 0);
    if (o.flags !== undefined && typeof o.flags !== 'number') checkInt('createVma', 'flags', o.flags, 0);
    if (o.shared !== undefined) checkBool('createVma', 'shared', o.shared);
    const vma = createVmArea(this, length, options, (v) => this.#vmas.delete(v));
    this.#vmas.add(vma);
    return vma;
  }

  // ---- user memory pinned for DMA (mm/gup.c; see lib/mm/gup.ts) ----

  /**
   * pin_user_pages_fast: pins `nr_pages` pages of `region` from user address `start` (rounded down
   * to a page) for DMA, filling `pages` with their struct pages (FOLL_PIN: release with
   * unpin_user_pages). The Region's memory becomes memory of this machine (fresh PFNs after every
   * other segment) while any of its pages is referenced, so devices reach it by bus address like
   * RAM. Returns the number pinned (fewer when the Region ends first), -EFAULT when `start` is not
   * in the Region (or it is closed, read-only, or its protection refuses the access: FOLL_WRITE
   * needs 'readwrite'), -EINVAL (and a WARN) for gup_flags the kernel refuses.
   */
  pin_user_pages_fast(region: Region, start: number, nr_pages: number, gup_flags: number, pages: Page[]): number {
    return gupPinFast(this, region, start, nr_pages, gup_flags, pages);
  }

  /** pin_user_pages: as pin_user_pages_fast, taking the slow path's flags too (e.g. FOLL_NOWAIT). */
  pin_user_pages(region: Region, start: number, nr_pages: number, gup_flags: number, pages: Page[]): number {
    return gupPin(this, region, start, nr_pages, gup_flags, pages);
  }

  /** get_user_pages_fast: as pin_user_pages_fast with FOLL_GET references (release with put_page; no FOLL_LONGTERM). */
  get_user_pages_fast(region: Region, start: number, nr_pages: number, gup_flags: number, pages: Page[]): number {
    return gupGetFast(this, region, start, nr_pages, gup_flags, pages);
  }

  /** get_user_pages: the slow path of get_user_pages_fast. */
  get_user_pages(region: Region, start: number, nr_pages: number, gup_flags: number, pages: Page[]): number {
    return gupGet(this, region, start, nr_pages, gup_flags, pages);
  }

  // ---- host physical addresses ----

  /**
   * The host physical address of a page (via /proc/self/pagemap), or null when PFNs are hidden
   * (no CAP_SYS_ADMIN). The machine's RAM is always backed: a page the host dropped is read once
   * to fault it back in, so "not present" is never an answer.
   */
  hostPhysAddr(page: Page): bigint | null {
    this.assertAlive();
    const addr = this.page_address(page);
    let pfn = readPfns(addr, 1)[0]!;
    if (pfn === PFN_NOT_PRESENT) {
      native.copyOut(addr, 1, new Uint8Array(1), 0); // a read fault maps the memfd's page
      pfn = readPfns(addr, 1)[0]!;
    }
    return pfn < 0 ? null : BigInt(pfn) << BigInt(PAGE_SHIFT);
  }

  /**
   * Host PFNs of `count` pages starting at a linear or vmalloc address: PFN_NOT_PRESENT (-1)
   * where no frame backs the page (e.g. a user VMA page never touched), PFN_HIDDEN (-2) where the
   * kernel hides it (no CAP_SYS_ADMIN).
   */
  hostPfns(addr: number, count: number): Float64Array {
    return readPfns(addr, count);
  }

  /**
   * Whether `count` pages from `page` are contiguous in host physical memory: null when PFNs are
   * hidden, false when they are not consecutive or some page has no frame (not present).
   */
  isHostContiguous(page: Page, count: number): boolean | null {
    this.assertAlive();
    const pfns = readPfns(this.page_address(page), count);
    for (let i = 0; i < count; i++) {
      if (pfns[i] === PFN_HIDDEN) return null;
      if (pfns[i] === PFN_NOT_PRESENT || (i > 0 && pfns[i] !== pfns[i - 1]! + 1)) return false;
    }
    return true;
  }

  // ---- WARN ----

  /** A kernel WARN: recorded, and emitted as a process warning unless emitWarnings is off. */
  warn(message: string): void {
    this.#warnings.push({ message, stack: new Error(message).stack });
    if (this.#emitWarnings) process.emitWarning(message, { code: 'DMAMEM_KERNEL_WARN' });
  }

  // ---- stats and teardown ----

  stats(): {
    segments: SegmentStats[];
    /** buddyinfo: free blocks per order, like /proc/buddyinfo (pages on the pcp lists not included). */
    nodes: { nid: number; freePages: number; totalPages: number; buddyinfo: number[]; pcpPages: number }[];
    cma: { name: string; nid: number; available: number; count: number; backing: string }[];
    vmallocAreas: number;
    vmas: number;
    /** The swiotlb pool: slots (2 KiB) in all and in use, live mappings, bounce copies, failures. */
    swiotlb: { physStart: bigint; nslabs: number; force: boolean; used: number; maxUsed: number; mapped: number; bounces: number; bytesBounced: number; full: number } | null;
  } {
    const tlb = this.#swiotlb;
    return {
      segments: this.#segments.map((s) => ({
        name: s.name, kind: s.kind, nid: s.nid, startPfn: s.startPfn, pages: s.pages,
        physStart: BigInt(s.startPfn) << BigInt(PAGE_SHIFT), backing: s.backing, reason: s.backingReason,
      })),
      nodes: Array.from({ length: this.nodeCount }, (_, nid) => ({
        nid, freePages: this.#buddy.freePages(nid), totalPages: this.#buddy.totalPages(nid),
        buddyinfo: this.#buddy.freeBlocks(nid), pcpPages: this.#buddy.pcpPages(nid),
      })),
      cma: this.#cmaAreas.items.map((c) => ({ name: c.name, nid: c.nid, available: c.available, count: c.count, backing: this.cmaSegment(c).backing })),
      vmallocAreas: this.#vmallocSpace.count,
      vmas: this.#vmas.size,
      swiotlb: tlb === null ? null : {
        physStart: BigInt(tlb.segment.startPfn) << BigInt(PAGE_SHIFT), nslabs: tlb.segment.pages * (PAGE_SIZE / 2048),
        force: tlb.force, ...tlb.counters,
      },
    };
  }

  get isDestroyed(): boolean {
    return this.#destroyed;
  }

  assertAlive(): void {
    if (this.#destroyed) {
      const err = new Error(`${this.name} has been destroyed`) as Error & { code: string };
      err.code = 'ERR_DMAMEM_DESTROYED';
      throw err;
    }
  }

  /**
   * Unmaps everything, closes every fd, detaches every view. Idempotent. With dmaDebug on, what is
   * still allocated or mapped (buddy blocks, CMA pages, vmalloc areas, VMAs) is reported as a WARN
   * once the teardown is complete; with dmaDebug 'strict' it is then also thrown
   * (ERR_DMAMEM_LEAK), the machine being fully destroyed either way.
   */
  destroy(): void {
    if (this.#destroyed) return;
    // Devices attached to the machine stop first (their worker threads are told to end).
    for (const err of runMachineTeardown(this)) this.warn(`device teardown: ${err instanceof Error ? err.message : String(err)}`);
    const leaks = this.dmaDebug === false ? null : leakReport(this.name, this.#segments, this.#vmallocSpace.areas(), [...this.#vmas]);
    this.#destroyed = true;
    for (const vma of [...this.#vmas]) vma.unmap();
    releaseVmallocSpace(this.#vmallocSpace);
    for (const set of this.#blockViews.values()) set.revoke();
    for (const set of this.#cmaViews.values()) set.revoke();
    for (const views of this.#segmentViews.values()) views.set.revoke();
    this.#blockViews.clear();
    this.#cmaViews.clear();
    this.#segmentViews.clear();
    let bytes = 0;
    for (const seg of this.#segments) {
      releaseSegment(seg);
      if (seg.kind !== 'user') bytes += seg.byteLength;
    }
    this.#memoryMap.close();
    native.munmap(this.#vmallocSpace.base, this.#vmallocSpace.length);
    native.munmap(this.#pageOffset, this.#linearLength);
    trackExternalMemory(-bytes);
    unregisterMachine(this);
    if (leaks === null) return;
    this.warn(leaks);
    if (this.dmaDebug === 'strict') {
      const err = new Error(leaks) as Error & { code: string };
      err.code = 'ERR_DMAMEM_LEAK';
      throw err;
    }
  }

  [Symbol.dispose](): void {
    this.destroy();
  }
}
