// A segment of the machine's "physical" memory: one memfd, mapped once into the linear map at the
// place its PFNs give it, with struct pages created on first use. Its byte access is internal: a
// segment is reachable from public objects (machine.segments, page.segment) and gives no views.

import { createBackedMemfd, type Backing, type HugepagePolicy } from '../os/backing';
import { C, native } from '../native';
import { detachInternal, internalArrayBuffer } from '../os/views';
import { Page, PAGE_CONSTRUCTION_KEY, pageState, PG_cma, PG_reserved, type PageSegment, type SegmentKind } from './page';

/** The allocators' writes to struct page state. */
const ps = pageState();
import { PAGE_SHIFT, PAGE_SIZE } from './gfp';

export interface SegmentSpec {
  readonly name: string;
  readonly kind: SegmentKind;
  readonly nid: number;
  readonly startPfn: number;
  readonly pages: number;
  readonly hugepages: HugepagePolicy;
  /** Why the policy is what it is, when the machine chose it rather than the user. */
  readonly policyReason?: string;
  /**
   * User memory (kind 'user'): map this memfd (an fd the segment owns from now on, closed at
   * release) from `offset` instead of creating one; `backing` and `granule` are the Region's. Not
   * `writable` (a Region over a read-only fd): mapped copy-on-write, so the kernel side's writes
   * stay in its own copy and never reach the file, and devices may not write it (memory map).
   */
  readonly from?: { readonly fd: number; readonly offset: number; readonly backing: Backing; readonly granule: number; readonly writable: boolean };
}

/** Only this module (through createSegment) may construct a Segment: its constructor maps memory. */
const token = Symbol('Segment');

/** The whole-segment bytes of a segment, for the machine's internal fast paths (set in the class body). */
let bytesOf: (seg: Segment) => Uint8Array;
let releaseOf: (seg: Segment) => void;

/**
 * Creates a segment's memfd, maps it at `address` (inside the machine's reserved linear map) and
 * pre-faults it. Internal to lib/mm: the machine is the only caller.
 */
export function createSegment(spec: SegmentSpec, address: number, machine: unknown): Segment {
  return new Segment(token, spec, address, machine);
}

/**
 * The whole segment as one Uint8Array, made once and detached at release; never handed out
 * (memset, zeroing, poisoning and read() copy through it without a native call).
 */
export function segmentBytes(seg: Segment): Uint8Array {
  return bytesOf(seg);
}

/**
 * Machine teardown: detaches the internal bytes and closes the memfd (the machine unmaps the linear
 * map whole). Idempotent. Not a method, so that no public object can release a live segment.
 */
export function releaseSegment(seg: Segment): void {
  releaseOf(seg);
}

export class Segment implements PageSegment {
  readonly name: string;
  readonly kind: SegmentKind;
  readonly nid: number;
  readonly startPfn: number;
  readonly pages: number;
  readonly fd: number;
  /** Where the segment's first byte sits in the linear map. */
  readonly address: number;
  readonly backing: Backing;
  /** Why this backing was chosen (e.g. "hugetlb pool has 0 free 2 MiB pages"). */
  readonly backingReason: string;
  readonly mapGranule: number;
  /** Where the segment's first byte is in its memfd (non-zero for user memory mapped from an offset). */
  readonly fileOffset: number;
  /** False for user memory pinned from a read-only file: device writes to it are refused. */
  readonly writable: boolean;
  readonly #memMap: (Page | undefined)[];
  readonly #machine: unknown;
  #buffer: ArrayBuffer | null = null;
  #bytes: Uint8Array | null = null;
  #released = false;

  static {
    bytesOf = (seg) => {
      if (seg.#bytes === null) {
        if (seg.#released) return new Uint8Array(0);
        seg.#buffer = internalArrayBuffer(seg.address, seg.byteLength);
        seg.#bytes = new Uint8Array(seg.#buffer);
      }
      return seg.#bytes;
    };
    releaseOf = (seg) => {
      if (seg.#released) return;
      seg.#released = true;
      if (seg.#buffer !== null) detachInternal(seg.#buffer);
      seg.#buffer = null;
      seg.#bytes = null;
      native.close(seg.fd);
    };
  }

  /** Not constructible from outside lib/mm (see createSegment). */
  constructor(key: symbol, spec: SegmentSpec, address: number, machine: unknown) {
    if (key !== token) throw new TypeError('Segment is not constructible: a machine creates its segments');
    this.#machine = machine;
    this.name = spec.name;
    this.kind = spec.kind;
    this.nid = spec.nid;
    this.startPfn = spec.startPfn;
    this.pages = spec.pages;
    const mem = spec.from !== undefined ? mapUserMemory(spec.from, address, spec.pages * PAGE_SIZE) : createBackedMemfd(`dmamem:${spec.name}`, spec.pages * PAGE_SIZE, spec.hugepages, {
      fixedAddress: address,
      populate: true,
    });
    this.fd = mem.fd;
    this.address = mem.address;
    this.backing = mem.backing;
    this.backingReason = spec.policyReason === undefined ? mem.reason : `${spec.policyReason}: ${mem.reason}`;
    this.mapGranule = mem.granule;
    this.fileOffset = spec.from?.offset ?? 0;
    this.writable = spec.from?.writable ?? true;
    this.#memMap = new Array<Page | undefined>(spec.pages);
    // Every field the machine computes addresses from is fixed from now on.
    Object.freeze(this);
  }

  get endPfn(): number {
    return this.startPfn + this.pages;
  }

  get byteLength(): number {
    return this.pages * PAGE_SIZE;
  }

  containsPfn(pfn: number): boolean {
    return pfn >= this.startPfn && pfn < this.startPfn + this.pages;
  }

  /** The struct page of a PFN if it was ever created (no page is made), else undefined. */
  peek(pfn: number): Page | undefined {
    return this.#memMap[pfn - this.startPfn];
  }

  /** The struct page of a PFN inside this segment; the same object every time. */
  page(pfn: number): Page {
    const i = pfn - this.startPfn;
    let page = this.#memMap[i];
    if (page === undefined) {
      if (!(i >= 0 && i < this.pages)) throw new RangeError(`pfn 0x${pfn.toString(16)} is not in segment ${this.name}`);
      page = new Page(pfn, this, this.#machine, PAGE_CONSTRUCTION_KEY);
      if (this.kind === 'cma') ps.setFlags(page, page.flags | PG_cma | PG_reserved);
      else if (this.kind === 'user') ps.setRefcount(page, 1); // the user mapping's reference
      this.#memMap[i] = page;
    }
    return page;
  }

  /** Linear-map address of a PFN of this segment. */
  addressOf(pfn: number): number {
    return this.address + (pfn - this.startPfn) * PAGE_SIZE;
  }

  /** Pages of the segment whose struct page exists, in PFN order (for teardown reports). */
  *createdPages(): IterableIterator<Page> {
    for (const page of this.#memMap) if (page !== undefined) yield page;
  }

}

/** Maps a Region's memfd at `address` of the linear map (MAP_FIXED over the reservation); closes the fd on failure. */
function mapUserMemory(from: NonNullable<SegmentSpec['from']>, address: number, bytes: number): { fd: number; address: number; backing: Backing; reason: string; granule: number } {
  try {
    const sharing = from.writable ? C.MAP_SHARED : C.MAP_PRIVATE; // private: copy-on-write (hugetlb reserves for it)
    native.mmap(address, bytes, C.PROT_READ | C.PROT_WRITE, sharing | C.MAP_FIXED, from.fd, from.offset);
  } catch (err) {
    native.close(from.fd);
    throw err;
  }
  const reason = from.writable ? 'user memory: a Region\'s memfd, pinned for DMA' : 'user memory: a read-only Region\'s memfd, pinned for DMA (mapped copy-on-write)';
  return { fd: from.fd, address, backing: from.backing, reason, granule: from.granule };
}

export { PAGE_SHIFT };
