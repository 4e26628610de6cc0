// Pinning user memory for DMA (mm/gup.c): pin_user_pages(_fast), get_user_pages(_fast),
// unpin_user_page(s) over a Region's pages. The Region's memfd becomes machine memory while any of
// its pages is referenced: a 'user' segment hot-added at fresh PFNs, removed at the last release.

import { native } from '../native';
import { regionPinAdjust, regionPinInfo, type Region, type RegionPinInfo } from '../os/region';
import { onMachineDestroy } from './machine-teardown';
import { type Machine, userMemoryHotplug } from './machine';
import { PAGE_SIZE } from './gfp';
import { MemoryMapFullError } from './memory_map';
import { Page, pageState } from './page';
import type { Segment } from './segment';
import { checkInt, checkSameMachine, describeValue } from './validate';

/** gup_flags (include/linux/mm_types.h). */
export const FOLL_WRITE = 1 << 0;
export const FOLL_GET = 1 << 1;
export const FOLL_DUMP = 1 << 2;
export const FOLL_FORCE = 1 << 3;
export const FOLL_NOWAIT = 1 << 4;
export const FOLL_NOFAULT = 1 << 5;
export const FOLL_HWPOISON = 1 << 6;
export const FOLL_ANON = 1 << 7;
export const FOLL_LONGTERM = 1 << 8;
export const FOLL_SPLIT_PMD = 1 << 9;
export const FOLL_PCI_P2PDMA = 1 << 10;
export const FOLL_INTERRUPTIBLE = 1 << 11;
export const FOLL_HONOR_NUMA_FAULT = 1 << 12;
/** mm/internal.h: set by pin_user_pages*, never by a caller (INTERNAL_GUP_FLAGS). */
const FOLL_PIN = 1 << 19;
const INTERNAL_GUP_FLAGS = (1 << 16) | (1 << 17) | (1 << 18) | FOLL_PIN | (1 << 20) | (1 << 21) | (1 << 22);
/** What gup_fast_fallback accepts (anything else is a WARN and -EINVAL). */
const FAST_FLAGS = FOLL_WRITE | FOLL_LONGTERM | FOLL_FORCE | FOLL_PIN | FOLL_GET | FOLL_NOFAULT | FOLL_PCI_P2PDMA | FOLL_HONOR_NUMA_FAULT;
/** The public flags (the slow path takes any of them). */
const PUBLIC_FLAGS = (1 << 13) - 1;

/** include/linux/mm.h: a pin adds this to the refcount of an order-0 page (page_maybe_dma_pinned). */
export const GUP_PIN_COUNTING_BIAS = 1024;

const EFAULT = 14;
const EINVAL = 22;
const ENOMEM = 12;
const ps = pageState();

/** One Region's memory on one machine: its segments (by first page of the Region) and the references held. */
interface UserMemory {
  readonly machine: Machine;
  readonly region: Region;
  readonly segs: { seg: Segment; first: number }[];
  refs: number;
}

let nextUser = 0;
const byMachine = new WeakMap<Machine, Map<Region, UserMemory>>();
const bySegment = new WeakMap<Segment, UserMemory>();

function gupWarn(m: Machine, msg: string): void {
  m.warn(`WARNING: mm/gup.c: ${msg}`);
}

/** is_valid_gup_args + the fast path's flag check: the gup_flags with FOLL_PIN/FOLL_GET added, or -EINVAL (with a WARN). */
function validFlags(m: Machine, fn: string, gupFlags: number, pin: boolean, fast: boolean): number {
  if (gupFlags & INTERNAL_GUP_FLAGS || gupFlags & ~(PUBLIC_FLAGS | INTERNAL_GUP_FLAGS)) {
    gupWarn(m, `${fn}: gup_flags 0x${gupFlags.toString(16)} include internal or unknown flags`);
    return -EINVAL;
  }
  if (pin && gupFlags & FOLL_GET) {
    gupWarn(m, `${fn}: FOLL_GET and FOLL_PIN are mutually exclusive`);
    return -EINVAL;
  }
  if (!pin && gupFlags & FOLL_LONGTERM) {
    gupWarn(m, `${fn}: FOLL_LONGTERM can only be specified when pinning`);
    return -EINVAL;
  }
  const flags = gupFlags | (pin ? FOLL_PIN : FOLL_GET);
  if (fast && flags & ~FAST_FLAGS) {
    gupWarn(m, `${fn}: gup_flags 0x${gupFlags.toString(16)} are not supported by the fast path`);
    return -EINVAL;
  }
  return flags;
}

/**
 * The core of pin_user_pages* / get_user_pages*: references `nr_pages` pages of `region` from user
 * address `start` (rounded down to a page), filling `pages`. Returns how many were referenced (fewer
 * than asked when the Region ends first, as the kernel stops at the end of the VMAs), or -EFAULT when
 * not even the first page is there or the mapping's protection refuses the access, -EINVAL for bad flags.
 */
function gup(m: Machine, fn: string, region: Region, start: number, nrPages: number, gupFlags: number, pages: Page[], pin: boolean, fast: boolean): number {
  m.assertAlive();
  if (typeof region !== 'object' || region === null) throw new TypeError(`${fn}: Expected a Region for region but received ${describeValue(region)}`);
  let info;
  try {
    info = regionPinInfo(region);
  } catch {
    throw new TypeError(`${fn}: Expected a Region for region but received ${describeValue(region)}`);
  }
  checkInt(fn, 'start', start, 0);
  checkInt(fn, 'nr_pages', nrPages, 0);
  checkInt(fn, 'gup_flags', gupFlags, 0, 0xffffffff);
  if (!Array.isArray(pages)) throw new TypeError(`${fn}: Expected an array for pages (filled with the struct pages) but received ${describeValue(pages)}`);
  const flags = validFlags(m, fn, gupFlags, pin, fast);
  if (flags < 0) return flags;
  if (nrPages === 0) return 0;
  if (info === null) return -EFAULT; // closed: nothing is mapped there any more
  const addr = start - (start % PAGE_SIZE);
  if (addr < info.address || addr >= info.address + info.mappedLength) return -EFAULT;
  // check_vma_flags: a shared mapping is written only where it is writable (FOLL_FORCE does not
  // help: it would need a COW mapping), read where readable or, with FOLL_FORCE, may be read.
  const write = (flags & FOLL_WRITE) !== 0;
  if (write ? info.prot !== 'readwrite' : info.prot === 'none' && !(flags & FOLL_FORCE)) return -EFAULT;
  const first = (addr - info.address) / PAGE_SIZE;
  const end = info.mappedLength / PAGE_SIZE;
  const count = Math.min(nrPages, end - first);

  let um: UserMemory;
  try {
    um = attach(m, region, info, first + count);
  } catch (err) {
    // No slot in the memory map, or no huge pages to reserve for a read-only hugetlb Region's copy-on-write mapping.
    if (err instanceof MemoryMapFullError || (err as NodeJS.ErrnoException | null)?.code === 'ENOMEM') return -ENOMEM;
    throw err;
  }
  const bias = pin ? GUP_PIN_COUNTING_BIAS : 1;
  for (let k = 0; k < count; k++) {
    const i = first + k;
    const s = um.segs.find((e) => i >= e.first && i < e.first + e.seg.pages)!;
    const page = s.seg.page(s.seg.startPfn + i - s.first);
    ps.setRefcount(page, page.refcount + bias);
    pages[k] = page;
  }
  um.refs += count;
  regionPinAdjust(region, count);
  return count;
}

/**
 * The UserMemory of `region` on `m`, with segments covering its pages [0, upto): the first
 * reference hot-adds the Region's whole mapping; a Region grown since gets one more segment.
 */
function attach(m: Machine, region: Region, info: RegionPinInfo, upto: number): UserMemory {
  let map = byMachine.get(m);
  if (map === undefined) {
    byMachine.set(m, (map = new Map()));
    onMachineDestroy(m, () => machineDestroyed(m));
  }
  let um = map.get(region);
  if (um === undefined) um = { machine: m, region, segs: [], refs: 0 };
  const covered = um.segs.reduce((n, e) => Math.max(n, e.first + e.seg.pages), 0);
  if (covered < upto) {
    const own = native.dup(info.fd); // the segment's own: the Region may close its fd once unpinned
    const from = { fd: own, offset: info.fileOffset + covered * PAGE_SIZE, backing: info.backing, granule: info.granule, writable: info.fileWritable };
    const seg = userMemoryHotplug().add(m, `${m.name}:user${nextUser++}`, from, info.mappedLength / PAGE_SIZE - covered);
    um.segs.push({ seg, first: covered });
    bySegment.set(seg, um);
    map.set(region, um);
  }
  return um;
}

/** Drops `n` references of `um`; the last one hot-removes its segments and lifts the Region's block. */
function release(um: UserMemory, n: number): void {
  um.refs -= n;
  regionPinAdjust(um.region, -n);
  if (um.refs > 0) return;
  byMachine.get(um.machine)?.delete(um.region);
  for (const { seg } of um.segs) {
    for (const page of seg.createdPages()) ps.setRefcount(page, 0);
    bySegment.delete(seg);
    userMemoryHotplug().remove(um.machine, seg);
  }
  um.segs.length = 0;
}

/** machine.destroy() with references held: reported (a WARN; with dmaDebug in the leak report instead) and dropped. */
function machineDestroyed(m: Machine): void {
  const map = byMachine.get(m);
  if (map === undefined) return;
  byMachine.delete(m);
  const held: string[] = [];
  for (const um of map.values()) {
    if (um.refs === 0) continue;
    held.push(`${um.refs} on ${um.segs.map((e) => e.seg.name).join('+')}`);
    regionPinAdjust(um.region, -um.refs);
    um.refs = 0;
  }
  if (held.length > 0 && m.dmaDebug === false) gupWarn(m, `${m.name} destroyed with user page references still held (pin_user_pages/get_user_pages without unpin/put_page): ${held.join('; ')}`);
}

/** The live UserMemory of a user page, or a kernel BUG naming `fn`. */
function userMemoryOf(fn: string, page: unknown): { um: UserMemory; page: Page } {
  if (!(page instanceof Page)) throw new TypeError(`${fn}: Expected a struct page (Page) for page but received ${describeValue(page)}`);
  (page.machine as Machine).assertAlive();
  const um = page.segment.kind === 'user' ? bySegment.get(page.segment as Segment) : undefined;
  if (um === undefined) throw new Error(`kernel BUG at mm/gup.c: ${fn}: page 0x${page.pfn.toString(16)} is not a referenced user page`);
  return { um, page };
}

/** The user pages' struct pages after checking that each holds the pins about to be dropped (nothing dropped on failure). */
function checkPinned(fn: string, list: readonly unknown[], bias: number): { um: UserMemory; page: Page }[] {
  const need = new Map<Page, number>();
  const out = list.map((p) => userMemoryOf(fn, p));
  for (const { page } of out) {
    const n = (need.get(page) ?? 0) + bias;
    if (page.refcount - 1 < n) {
      throw new Error(`kernel BUG at mm/gup.c: ${fn}: page 0x${page.pfn.toString(16)} has ${bias > 1 ? 'no pin' : 'no reference'} left to drop (refcount ${page.refcount})`);
    }
    need.set(page, n);
  }
  return out;
}

function drop(entries: readonly { um: UserMemory; page: Page }[], bias: number): void {
  for (const { page } of entries) ps.setRefcount(page, page.refcount - bias);
  const perUm = new Map<UserMemory, number>();
  for (const { um } of entries) perUm.set(um, (perUm.get(um) ?? 0) + 1);
  for (const [um, n] of perUm) release(um, n);
}

// ---- the kernel's entry points (the Region is the "mm"; the machine is the one DMA happens on) ----
// The four gup calls are Machine methods (machine.ts); the releases need only the pages.

export function gupPinFast(m: Machine, region: Region, start: number, nr_pages: number, gup_flags: number, pages: Page[]): number {
  return gup(m, 'pin_user_pages_fast', region, start, nr_pages, gup_flags, pages, true, true);
}

export function gupPin(m: Machine, region: Region, start: number, nr_pages: number, gup_flags: number, pages: Page[]): number {
  return gup(m, 'pin_user_pages', region, start, nr_pages, gup_flags, pages, true, false);
}

export function gupGetFast(m: Machine, region: Region, start: number, nr_pages: number, gup_flags: number, pages: Page[]): number {
  return gup(m, 'get_user_pages_fast', region, start, nr_pages, gup_flags, pages, false, true);
}

export function gupGet(m: Machine, region: Region, start: number, nr_pages: number, gup_flags: number, pages: Page[]): number {
  return gup(m, 'get_user_pages', region, start, nr_pages, gup_flags, pages, false, false);
}

/** unpin_user_page: drops one pin (a kernel BUG for a page that holds none). */
export function unpin_user_page(page: Page): void {
  drop(checkPinned('unpin_user_page', [page], GUP_PIN_COUNTING_BIAS), GUP_PIN_COUNTING_BIAS);
}

/** unpin_user_pages: drops one pin of each of pages[0..npages); all are checked before any is dropped. */
export function unpin_user_pages(pages: readonly Page[], npages: number): void {
  if (!Array.isArray(pages)) throw new TypeError(`unpin_user_pages: Expected an array of pages for pages but received ${describeValue(pages)}`);
  checkInt('unpin_user_pages', 'npages', npages, 0, pages.length);
  const list = pages.slice(0, npages);
  const m = list[0] instanceof Page ? list[0].machine : null;
  for (let i = 1; i < list.length; i++) {
    const p = list[i];
    if (p instanceof Page && p.machine !== m) checkSameMachine('unpin_user_pages', `pages[${i}]`, p.machine, m);
  }
  drop(checkPinned('unpin_user_pages', list, GUP_PIN_COUNTING_BIAS), GUP_PIN_COUNTING_BIAS);
}

/** unpin_user_pages_dirty_lock: as unpin_user_pages (the memfd's pages need no dirtying: they are shared memory). */
export function unpin_user_pages_dirty_lock(pages: readonly Page[], npages: number, make_dirty: boolean): void {
  if (typeof make_dirty !== 'boolean') throw new TypeError(`unpin_user_pages_dirty_lock: Expected a boolean for make_dirty but received ${describeValue(make_dirty)}`);
  unpin_user_pages(pages, npages);
}

/** page_maybe_dma_pinned: whether the page holds at least GUP_PIN_COUNTING_BIAS references beyond its mapping's. */
export function page_maybe_dma_pinned(page: Page): boolean {
  if (!(page instanceof Page)) throw new TypeError(`page_maybe_dma_pinned: Expected a struct page (Page) for page but received ${describeValue(page)}`);
  return page.segment.kind === 'user' && page.refcount - 1 >= GUP_PIN_COUNTING_BIAS;
}

/** Whether `page` is a user page of a live attachment (put_page and get_page route such pages here). */
export function isUserPage(page: Page): boolean {
  return page.segment.kind === 'user';
}

/** put_page of a user page: drops a get_user_pages / get_page reference. */
export function putUserPage(page: Page): void {
  drop(checkPinned('put_page', [page], 1), 1);
}

/** get_page of a user page: one more reference (keeps the Region blocked like a get_user_pages one). */
export function getUserPage(page: Page): void {
  const { um } = userMemoryOf('get_page', page);
  ps.setRefcount(page, page.refcount + 1);
  um.refs++;
  regionPinAdjust(um.region, 1);
}
