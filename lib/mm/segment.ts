// A segment of the machine's "physical" memory: one memfd, mapped once into the linear map at the
// place its PFNs give it, with struct pages created on first use.

import { createBackedMemfd, type Backing, type HugepagePolicy } from '../os/backing';
import { native } from '../native';
import { ViewWindow } from '../os/views';
import { Page, PG_cma, PG_reserved, type PageSegment, type SegmentKind } from './page';
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
  /** One window of views over the whole segment: slicing it is cheap and one detach revokes all. */
  readonly window: ViewWindow;
  private readonly memMap: (Page | undefined)[];
  #bytes: Uint8Array | null = null;

  /** Creates the memfd, maps it at `address` (inside the machine's reserved linear map) and pre-faults it. */
  constructor(spec: SegmentSpec, address: number, private readonly machine: unknown) {
    this.name = spec.name;
    this.kind = spec.kind;
    this.nid = spec.nid;
    this.startPfn = spec.startPfn;
    this.pages = spec.pages;
    const mem = createBackedMemfd(`dmamem:${spec.name}`, spec.pages * PAGE_SIZE, spec.hugepages, {
      fixedAddress: address,
      populate: true,
    });
    this.fd = mem.fd;
    this.address = mem.address;
    this.backing = mem.backing;
    this.backingReason = spec.policyReason === undefined ? mem.reason : `${spec.policyReason}: ${mem.reason}`;
    this.mapGranule = mem.granule;
    this.window = new ViewWindow(this.address, this.pages * PAGE_SIZE);
    this.memMap = new Array<Page | undefined>(spec.pages);
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
    return this.memMap[pfn - this.startPfn];
  }

  /** The struct page of a PFN inside this segment; the same object every time. */
  page(pfn: number): Page {
    const i = pfn - this.startPfn;
    let page = this.memMap[i];
    if (page === undefined) {
      page = new Page(pfn, this, this.machine);
      if (this.kind === 'cma') page.flags |= PG_cma | PG_reserved;
      this.memMap[i] = page;
    }
    return page;
  }

  /** The whole segment as one Uint8Array (made once; empty after release). */
  get bytes(): Uint8Array {
    this.#bytes ??= new Uint8Array(this.window.arrayBuffer());
    return this.#bytes;
  }

  /** Linear-map address of a PFN of this segment. */
  addressOf(pfn: number): number {
    return this.address + (pfn - this.startPfn) * PAGE_SIZE;
  }

  /** Unmaps nothing (the machine unmaps the linear map whole); detaches views and closes the memfd. */
  release(): void {
    this.window.detach();
    native.close(this.fd);
  }
}

export { PAGE_SHIFT };
