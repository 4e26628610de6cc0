// Region: real, page-aligned, memfd-backed memory for a Node program: allocation with a hugepage
// policy, JS views that are detached before the memory stops being safely writable, protection,
// advice, locking, resizing, aliasing, physical pages, sealing and sharing with other processes.

import { onFirstUse } from '../lazy';
import { C, native } from '../native';
import { createBackedMemfd, HUGE_2M, HUGEPAGE_POLICIES, type Backing } from './backing';
import { DmamemError } from './errors';
import { allocCopy, assertBackable } from './memory-limits';
import type { PageInfo } from './pagemap';
import { ADVICE, ADVICES, PROTECTIONS, SEALS, SEAL_NAMES, type Advice, type AllocateOptions, type FromFdOptions, type Protection, type ReadOnlyShare, type Seal } from './region-options';
import type { Resizable } from './region-resize';
import type { ShareHandle, ShareOptions, SharedMapping } from './region-share';
import type { PendingWaits, WaitAsyncOptions, WaitResult } from './region-wait';
import { backstop, protBits, releaseMapping, reserveFor, roundUp, type MappingState } from './region-state';
import { trackExternalMemory, ViewSet } from './views';
import * as v from './validate';

// What allocating, viewing and closing never need loads on first use, so that a program that only
// allocates does not pay for sharing, resizing, waiting and physical-page queries at start-up.
/* eslint-disable @typescript-eslint/no-require-imports */
const pagemap = onFirstUse(() => require('./pagemap') as typeof import('./pagemap'));
const resizing = onFirstUse(() => require('./region-resize') as typeof import('./region-resize'));
const sharing = onFirstUse(() => require('./region-share') as typeof import('./region-share'));
const waiting = onFirstUse(() => require('./region-wait') as typeof import('./region-wait'));
/* eslint-enable @typescript-eslint/no-require-imports */

/** The constructor's key: only this module makes Regions. */
const REGION_KEY = Symbol('Region');

/** What pinning a Region's pages for DMA (lib/mm/gup.ts) reads of it; never part of the public API. */
export interface RegionPinInfo {
  readonly fd: number;
  readonly address: number;
  readonly mappedLength: number;
  readonly fileOffset: number;
  readonly fileWritable: boolean;
  readonly prot: Protection;
  readonly granule: number;
  readonly backing: Backing;
}

let pinInfo: (r: Region) => RegionPinInfo | null;
let pinAdjust: (r: Region, delta: number) => void;

/**
 * Internal to dmamem (lib/mm/gup.ts): the mapping a pin needs (null once closed), and the count of
 * page references taken on the Region for DMA. While it is non-zero, close(), a shrinking resize()
 * and a protect() taking access away throw ERR_DMAMEM_BUSY before doing anything.
 */
export function regionPinInfo(r: Region): RegionPinInfo | null {
  return pinInfo(r);
}
export function regionPinAdjust(r: Region, delta: number): void {
  pinAdjust(r, delta);
}

const PROT_RANK: Record<Protection, number> = { none: 0, read: 1, readwrite: 2 };

/**
 * Real memory: a memfd mapped MAP_SHARED at a page-aligned (or 2 MiB-aligned) address.
 * @example
 * using r = Region.allocate(4 << 20);          // 'hugetlb-2M' if the pool has room
 * r.view().fill(7);                             // a Buffer over the real pages
 * console.log(r.backing, r.backingReason, r.address.toString(16));
 */
export class Region {
  readonly #s: MappingState;
  #length: number;
  #prot: Protection;
  /** Every view handed out: exact ArrayBuffers, revoked together. */
  readonly #views = new ViewSet(this);
  /** The whole-region ArrayBuffer write() copies through (in #views, so revoked with the others; never handed out). */
  #whole: ArrayBuffer | null = null;
  readonly #fileWritable: boolean;
  readonly #ownsFile: boolean;
  readonly #offset: number;
  /** The fd was handed out (fd getter, shareReadOnly): the file's size may only grow from now on. */
  #shared = false;
  /** mlock2 flags of the last lock(), null when unlocked (a resize that maps afresh locks again). */
  #lockFlags: number | null = null;
  readonly #backing: Backing;
  readonly #backingReason: string;
  readonly #granule: number;
  /** waitAsync() calls pending on this Region: close() rejects them before the memory goes (made on the first one). */
  #waits: PendingWaits | null = null;
  /** Page references held for DMA (pin_user_pages, get_user_pages): see regionPinInfo. */
  #pins = 0;

  static {
    pinInfo = (r) => (r.#s.closed ? null : {
      fd: r.#s.fd, address: r.#s.address, mappedLength: r.#s.mappedLength, fileOffset: r.#offset,
      fileWritable: r.#fileWritable, prot: r.#prot, granule: r.#granule, backing: r.#backing,
    });
    pinAdjust = (r, delta) => {
      if (r.#pins + delta < 0) throw new Error(`region pin count underflow (${r.#pins} + ${delta})`);
      r.#pins += delta;
    };
  }

  /** ERR_DMAMEM_BUSY while pages of this Region are pinned for DMA (nothing has been done yet). */
  #assertUnpinned(what: string): void {
    if (this.#pins === 0) return;
    throw new DmamemError('ERR_DMAMEM_BUSY', `cannot ${what}: ${this.#pins} page reference${this.#pins === 1 ? ' is' : 's are'} held on this region for DMA (pin_user_pages / get_user_pages); unpin_user_pages / put_page them first`);
  }

  private constructor(
    key: symbol,
    s: MappingState, length: number, prot: Protection, fileWritable: boolean, ownsFile: boolean, offset: number,
    backing: Backing, backingReason: string, granule: number,
  ) {
    // Reachable as Region itself: a forged MappingState would let close() unmap and close anything.
    if (key !== REGION_KEY) throw new TypeError('Region is not constructible: use Region.allocate(), Region.fromFd(), Region.open() or Region.fromShare()');
    this.#backing = backing;
    this.#backingReason = backingReason;
    this.#granule = granule;
    this.#s = s;
    this.#length = length;
    this.#prot = prot;
    this.#fileWritable = fileWritable;
    this.#ownsFile = ownsFile;
    this.#offset = offset;
    trackExternalMemory(s.mappedLength);
    backstop.register(this, s, this);
  }

  /**
   * Allocates `length` bytes of real memory, page-aligned, pre-faulted by default.
   * Throws ENOMEM (saying how to reserve pages) when hugepages is 'require' and the pool is short.
   * @example const r = Region.allocate(2 << 20, { hugepages: 'require' });
   */
  static allocate(length: number, options?: AllocateOptions): Region {
    v.assertPositiveInteger('length', length);
    const o = v.assertOptions('options', options);
    const policy = o.hugepages ?? 'auto';
    v.assertOneOf('hugepages', policy, HUGEPAGE_POLICIES);
    const align2M = o.align2M ?? false;
    v.assertBoolean('align2M', align2M);
    const populate = o.populate ?? true;
    v.assertBoolean('populate', populate);
    const name = o.name ?? 'dmamem';
    v.assertString('name', name);
    if (name.length > 200) throw new RangeError(`Expected a name of at most 200 characters for name but received one of ${name.length}`);
    const sealing = o.sealing ?? true;
    v.assertBoolean('sealing', sealing);

    const mapped = roundUp(length, native.pageSize);
    assertBackable(mapped, `Region.allocate(${length})`, policy === 'require' ? 'only' : policy === 'off' || mapped % HUGE_2M !== 0 ? 'never' : 'maybe');
    const fixedAddress = align2M ? native.reserve(mapped, HUGE_2M) : undefined;
    let m;
    try {
      m = createBackedMemfd(name, mapped, policy, { fixedAddress, populate, sealing });
    } catch (err) {
      if (fixedAddress !== undefined) native.munmap(fixedAddress, mapped); // backing re-reserved it on failure
      throw err;
    }
    const s: MappingState = { address: m.address, mappedLength: mapped, fd: m.fd, extraFds: [], closed: false };
    return new Region(REGION_KEY, s, length, 'readwrite', true, true, 0, m.backing, m.reason, m.granule);
  }

  /**
   * Maps an fd received from another process or worker. The fd is dup'ed: the caller keeps (and
   * closes) its own. A read-only fd needs `writable: false`; such a Region gives copies (read()) only.
   * @example const r = Region.fromFd(3, 1 << 20);            // in a child spawned with the fd as stdio[3]
   */
  static fromFd(fd: number, length: number, options?: FromFdOptions): Region {
    v.assertInteger('fd', fd);
    v.assertPositiveInteger('length', length);
    const { readMapOptions, mapSharedFd } = sharing();
    const o = readMapOptions(options);
    const own = native.dup(fd);
    try {
      return Region.#fromShared(mapSharedFd(own, length, o), length, o.offset);
    } catch (err) {
      native.close(own);
      throw err;
    }
  }

  /**
   * Opens a shared memfd by path (e.g. /proc/PID/fd/N from shareReadOnly()) and maps it; the
   * opened fd is owned by the Region.
   * @example const r = Region.open(`/proc/${pid}/fd/${n}`, 4096, { writable: false });
   */
  static open(path: string, length: number, options?: FromFdOptions): Region {
    v.assertString('path', path);
    v.assertPositiveInteger('length', length);
    const { readMapOptions, mapSharedFd } = sharing();
    const o = readMapOptions(options);
    const fd = native.open(path, o.writable ? C.O_RDWR : C.O_RDONLY);
    try {
      return Region.#fromShared(mapSharedFd(fd, length, o), length, o.offset);
    } catch (err) {
      native.close(fd);
      throw err;
    }
  }

  /**
   * Maps a handle made by share() (received through postMessage, JSON, or receiveShare()). The fd
   * is dup'ed: the sender's stays the sender's. In another process the handle's fd number means
   * nothing: pass `fd` (the number the descriptor has here, e.g. 3 for stdio[3]), or, without it,
   * the memfd is opened through /proc/<pid>/fd/<fd> of the sender (same user, sender alive).
   * A read-only handle maps read-only (copies only).
   * @example worker: parentPort.on('message', (h) => { const r = Region.fromShare(h); ... });
   * @example child with the fd as stdio[3]: Region.fromShare(JSON.parse(process.env.SHARE!), { fd: 3 })
   */
  static fromShare(handle: ShareHandle, options?: { fd?: number; populate?: boolean }): Region {
    const h = sharing().checkShareHandle(handle);
    const o = v.assertOptions('options', options);
    if (o.fd !== undefined) v.assertInteger('fd', o.fd);
    const populate = o.populate ?? true;
    v.assertBoolean('populate', populate);
    const mapOptions = { writable: !h.readOnly, offset: h.offset, populate };
    if (o.fd !== undefined) return Region.fromFd(o.fd, h.length, mapOptions);
    if (h.pid === process.pid) return Region.fromFd(h.fd, h.length, mapOptions);
    return Region.open(`/proc/${h.pid}/fd/${h.fd}`, h.length, mapOptions);
  }

  static #fromShared(m: SharedMapping, length: number, offset: number): Region {
    return new Region(REGION_KEY, m.state, length, m.prot, m.prot === 'readwrite', false, offset, m.backing, m.reason, m.granule);
  }

  /** The backing actually obtained. @example r.backing === 'hugetlb-2M' */
  get backing(): Backing {
    return this.#backing;
  }
  /** Why this backing (what was tried and why it was not taken). @example console.log(r.backingReason) */
  get backingReason(): string {
    return this.#backingReason;
  }
  /** 2 MiB for hugetlb memory (map, advise and resize in such units), else the page size. @example r.granule */
  get granule(): number {
    return this.#granule;
  }

  /**
   * The real virtual address of byte 0. Throws ERR_DMAMEM_CLOSED after close(): the range may
   * already belong to another mapping.
   * @example r.address.toString(16)
   */
  get address(): number {
    this.#live();
    return this.#s.address;
  }
  /** Usable bytes (the mapping is this rounded up to the granule). @example r.length */
  get length(): number {
    return this.#length;
  }
  /** Bytes actually mapped: length rounded up to the page size (hugetlb: 2 MiB). @example r.mappedLength */
  get mappedLength(): number {
    return this.#s.mappedLength;
  }
  /**
   * The memfd (owned by the Region; dup it to keep it past close()). Taking it shares the memory:
   * the memfd is sealed against shrinking (F_SEAL_SHRINK) first, so whoever receives the fd cannot
   * truncate the pages under this mapping (SIGBUS), and resize() may then only grow it.
   * Throws ERR_DMAMEM_CLOSED after close(): the number may already name another file.
   * @example spawn(cmd, args, { stdio: ['pipe', 'pipe', 'inherit', r.fd] })
   */
  get fd(): number {
    this.#live();
    this.#markShared();
    return this.#s.fd;
  }

  /** Seals against shrinking where the memfd allows it; resize() refuses shrinking either way. */
  #markShared(): boolean {
    this.#shared = true;
    return sharing().sealAgainstShrinking(this.#s.fd);
  }
  /** True once close() ran (or the GC backstop released it). @example if (!r.closed) r.close() */
  get closed(): boolean {
    return this.#s.closed;
  }
  /** The current protection. @example r.protection === 'readwrite' */
  get protection(): Protection {
    return this.#prot;
  }
  /** False for a read-only share: such a Region never gives writable views. @example r.writable */
  get writable(): boolean {
    return this.#fileWritable;
  }

  #live(): void {
    if (this.#s.closed) throw new DmamemError('ERR_DMAMEM_CLOSED', `the region at 0x${this.#s.address.toString(16)} was closed`);
  }

  #range(offset: number | undefined, length: number | undefined): [number, number] {
    const off = offset ?? 0;
    v.assertInteger('offset', off, 0, this.#length);
    const len = length ?? this.#length - off;
    v.assertInteger('length', len, 0, this.#length - off);
    return [off, len];
  }

  #assertWritable(): void {
    if (!this.#fileWritable) {
      throw new DmamemError('ERR_DMAMEM_READONLY', 'the region is a read-only mapping, so it gives no writable views; use read(offset, length) to copy its bytes');
    }
    if (this.#prot !== 'readwrite') {
      const code = this.#prot === 'none' ? 'ERR_DMAMEM_PROT_NONE' : 'ERR_DMAMEM_READONLY';
      throw new DmamemError(code, `the region is protected '${this.#prot}', so it gives no views; ${this.#prot === 'read' ? 'use read(offset, length) to copy, or ' : ''}protect('readwrite') first`);
    }
  }

  /**
   * A Buffer over [offset, offset+length) of the real memory (no copy); its `.buffer` covers exactly
   * those bytes. It reads as length 0 once the region is closed, resized, or loses write permission.
   * Each call makes one ArrayBuffer (the same one again for the same range as the last call).
   * @example const b = r.view(0, 64); b.writeUInt32LE(1, 0);
   */
  view(offset?: number, length?: number): Buffer {
    const [off, len] = this.#range(offset, length);
    this.#live();
    this.#assertWritable();
    return this.#views.view(this.address + off, len);
  }

  /**
   * A copy of [offset, offset+length); works on read-only regions too.
   * @example const header = r.read(0, 16);
   */
  read(offset?: number, length?: number): Buffer {
    const [off, len] = this.#range(offset, length);
    this.#live();
    if (this.#prot === 'none') throw new DmamemError('ERR_DMAMEM_PROT_NONE', "the region is protected 'none'; protect('read') first");
    const out = allocCopy(len, `region.read(${off}, ${len})`);
    if (len > 0) native.copyOut(this.address + off, len, out, 0);
    return out;
  }

  /**
   * Copies `source` into the region at `offset`.
   * @example r.write(4096, Buffer.from('hello'));
   */
  write(offset: number, source: Uint8Array): void {
    v.assertUint8Array('source', source);
    const [off] = this.#range(offset, source.length);
    this.#live();
    this.#assertWritable();
    if (source.length === 0) return;
    // Through the whole-region ArrayBuffer (made once per mapping): no native call per write.
    if (this.#whole === null || this.#whole.byteLength !== this.#length) this.#whole = this.#views.arrayBuffer(this.address, this.#length);
    new Uint8Array(this.#whole, off, source.length).set(source);
  }

  /**
   * mlock2 the whole mapping; with onFault, pages are locked as they are touched (MLOCK_ONFAULT).
   * Fails with ENOMEM/EPERM beyond RLIMIT_MEMLOCK without CAP_IPC_LOCK.
   * @example r.lock();  r.lock({ onFault: true });
   */
  lock(options?: { onFault?: boolean }): void {
    const o = v.assertOptions('options', options);
    const onFault = o.onFault ?? false;
    v.assertBoolean('onFault', onFault);
    this.#live();
    const flags = onFault ? C.MLOCK_ONFAULT : 0;
    native.mlock(this.address, this.mappedLength, flags);
    this.#lockFlags = flags;
  }

  /** munlock the whole mapping. @example r.unlock() */
  unlock(): void {
    this.#live();
    native.munlock(this.address, this.mappedLength);
    this.#lockFlags = null;
  }

  /**
   * Changes the protection of the whole mapping. Dropping write first detaches every view (a JS
   * write would otherwise kill the process); after protect('readwrite') view() gives new ones.
   * @example r.protect('read'); r.read(0, 4); r.protect('readwrite');
   */
  protect(prot: Protection): void {
    v.assertOneOf('prot', prot, PROTECTIONS);
    this.#live();
    if (PROT_RANK[prot] < PROT_RANK[this.#prot]) this.#assertUnpinned(`protect('${prot}')`);
    if (prot !== 'readwrite') this.#views.revoke();
    native.mprotect(this.address, this.mappedLength, protBits(prot));
    this.#prot = prot;
  }

  /**
   * madvise over [offset, offset+length) (default: all). offset must be a multiple of the granule.
   * 'remove' frees the pages (they read as zero after); refused on hugetlb memory, where a later
   * fault could find the pool empty and raise SIGBUS.
   * @example r.advise('dontneed'); r.advise('willneed', 0, 65536);
   */
  advise(advice: Advice, offset?: number, length?: number): void {
    v.assertOneOf('advice', advice, ADVICES);
    const off = offset ?? 0;
    v.assertPageAligned('offset', off, this.granule);
    const [, len] = this.#range(off, length);
    this.#live();
    if (advice === 'remove' && this.backing === 'hugetlb-2M') {
      throw new DmamemError('ERR_DMAMEM_UNSUPPORTED', "advise('remove') is refused on hugetlb memory: refaulting would need free pool pages and could raise SIGBUS; use 'dontneed'");
    }
    if (len === 0) return;
    native.madvise(this.address + off, roundUp(len, this.granule), C[ADVICE[advice]]);
  }

  /**
   * Changes the length, keeping the contents (it is the same memfd). The mapping may move: every
   * old view is detached; call view() again. Hugetlb regions resize in 2 MiB multiples.
   * Shrinking the memfd this Region created is refused with ERR_DMAMEM_SEALED once the memory was
   * shared (fd taken, shareReadOnly, seal(['shrink'])), and with ERR_DMAMEM_BUSY while an alias
   * reaches the part that would go.
   * @example r.resize(r.length * 2); r.view().length === r.length;
   */
  resize(newLength: number): void {
    v.assertPositiveInteger('newLength', newLength);
    if (this.granule === HUGE_2M) v.assertPageAligned('newLength', newLength, HUGE_2M);
    this.#live();
    const oldMapped = this.mappedLength;
    const newMapped = roundUp(newLength, this.granule);
    if (newLength < this.#length) this.#assertUnpinned(`shrink to ${newLength} bytes`);
    if (newMapped > oldMapped) assertBackable(newMapped - oldMapped, `resize(${newLength})`, this.granule === HUGE_2M ? 'only' : 'never');
    if (newMapped < oldMapped) resizing().shrinkMapping(this.#resizable(), newMapped);
    else if (newMapped > oldMapped) resizing().growMapping(this.#resizable(), newMapped);
    else this.#views.revoke(); // same pages, but the old views had the old length
    this.#length = newLength;
    // Hugetlb growth was pre-faulted before the switch. A shmem shortage here is an OOM, not a
    // SIGBUS: the region is already resized, just not pre-faulted.
    if (newMapped > oldMapped && this.granule !== HUGE_2M && this.#prot === 'readwrite') {
      native.madvise(this.address + oldMapped, newMapped - oldMapped, C.MADV_POPULATE_WRITE);
    }
  }

  #resizable(): Resizable {
    return { s: this.#s, granule: this.granule, fileOffset: this.#offset, ownsFile: this.#ownsFile, shared: this.#shared, prot: this.#prot, lockFlags: this.#lockFlags, detachViews: () => this.#views.revoke() };
  }

  /**
   * A second real mapping of the same pages at another address (MAP_SHARED of the same memfd),
   * with its own views, protection and close(). Writes through one are seen through the other.
   * @example const a = r.alias(); r.view()[0] = 9; a.view()[0] === 9; a.close();
   */
  alias(): Region {
    this.#live();
    const s = this.#s;
    const fd = native.dup(s.fd);
    let address = -1;
    try {
      address = reserveFor(s.mappedLength);
      native.mmap(address, s.mappedLength, protBits(this.#prot), C.MAP_SHARED | C.MAP_FIXED, fd, this.#offset);
      const a: MappingState = { address, mappedLength: s.mappedLength, fd, extraFds: [], closed: false };
      return new Region(REGION_KEY, a, this.#length, this.#prot, this.#fileWritable, false, this.#offset, this.backing, `alias of the region at 0x${s.address.toString(16)}`, this.granule);
    } catch (err) {
      if (address !== -1) native.munmap(address, s.mappedLength);
      native.close(fd);
      throw err;
    }
  }

  /**
   * Per-page pagemap entries of the mapping. pfn is null when there is no frame to report:
   * `present: false` (not present) or `pfnHidden: true` (present, but hidden without CAP_SYS_ADMIN).
   * @example r.physicalPages()[0]!.pfn
   */
  physicalPages(): PageInfo[] {
    this.#live();
    return pagemap().readPagemap(this.address, this.mappedLength / native.pageSize);
  }

  /**
   * PFNs of every 4 KiB page: PFN_NOT_PRESENT (-1) where not present, PFN_HIDDEN (-2) where
   * the kernel hides the frame (no CAP_SYS_ADMIN).
   * @example r.pfns()[0]
   */
  pfns(out?: Float64Array): Float64Array {
    this.#live();
    return pagemap().readPfns(this.address, this.mappedLength / native.pageSize, out);
  }

  /**
   * True when the pages are consecutive page frames; false when they are not, or some page has
   * no frame (not present); null when PFNs are hidden (no CAP_SYS_ADMIN).
   * @example Region.allocate(2 << 20, { hugepages: 'require' }).isPhysicallyContiguous() // true
   */
  isPhysicallyContiguous(): boolean | null {
    const { pfnVisible, PFN_HIDDEN, PFN_NOT_PRESENT } = pagemap();
    if (!pfnVisible()) return null;
    const p = this.pfns();
    for (let i = 0; i < p.length; i++) {
      if (p[i] === PFN_HIDDEN) return null;
      if (p[i] === PFN_NOT_PRESENT || p[i] !== p[0]! + i) return false;
    }
    return true;
  }

  /**
   * Adds memfd seals (fcntl F_ADD_SEALS). 'shrink' stops anyone holding the fd from shrinking the
   * memory under this mapping (which would be SIGBUS here).
   * @example r.seal(['shrink', 'grow']);
   */
  seal(seals: readonly Seal[]): void {
    if (!Array.isArray(seals)) throw new TypeError(`Expected an array of seals for seals but received ${v.describeValue(seals)}`);
    let bits = 0;
    for (const name of seals) {
      v.assertOneOf('seal', name, SEAL_NAMES);
      bits |= C[SEALS[name]];
    }
    this.#live();
    native.addSeals(this.#s.fd, bits);
  }

  /** The seals in force. @example r.seals() // ['shrink'] */
  seals(): Seal[] {
    this.#live();
    const bits = native.getSeals(this.#s.fd);
    return SEAL_NAMES.filter((n) => (bits & C[SEALS[n]]) !== 0);
  }

  /**
   * A read-only share: an O_RDONLY reopen of the memfd (closed by close()). A receiver that maps it
   * writable gets EACCES. By itself this only stops honest receivers: anyone may reopen
   * /proc/PID/fd/N read-write. With `enforce` the memfd is also sealed F_SEAL_FUTURE_WRITE, so no
   * one can map it writable or write(2) to it any more, while this Region's views keep working.
   * Either way the memfd is first sealed against shrinking (F_SEAL_SHRINK), so even a receiver that
   * reopens it read-write cannot truncate it under this mapping; a Region created with
   * `sealing: false` cannot be sealed and is refused (ERR_DMAMEM_UNSUPPORTED).
   * @example const { fd } = r.shareReadOnly({ enforce: true }); spawn('node', ['child.js'], { stdio: ['pipe', 'pipe', 'inherit', fd] });
   */
  shareReadOnly(options?: { enforce?: boolean }): ReadOnlyShare {
    const o = v.assertOptions('options', options);
    const enforce = o.enforce ?? false;
    v.assertBoolean('enforce', enforce);
    this.#live();
    if (!this.#markShared()) {
      throw new DmamemError('ERR_DMAMEM_UNSUPPORTED', 'cannot share read-only: this memfd cannot be sealed against shrinking (it was created with sealing: false, or was received without the right to seal), so a receiver could reopen it read-write and truncate it under this mapping (SIGBUS)');
    }
    const fd = native.open(`/proc/self/fd/${this.#s.fd}`, C.O_RDONLY);
    try {
      if (enforce) native.addSeals(this.#s.fd, C.F_SEAL_FUTURE_WRITE);
    } catch (err) {
      native.close(fd);
      throw err;
    }
    this.#s.extraFds.push(fd);
    return { fd, path: `/proc/${process.pid}/fd/${fd}` };
  }

  /**
   * One object that maps these pages elsewhere: `{ fd, length, offset, backing, readOnly, pid }`,
   * plain and structured-clonable (postMessage, JSON). The fd is owned by this Region (valid until
   * close()). Sharing seals the memfd against shrinking, as taking `fd` does; `readOnly` hands out
   * an O_RDONLY reopen (shareReadOnly(), with `enforce` likewise), so the receiver cannot write.
   * @example worker.postMessage(r.share()); // the worker: Region.fromShare(handle)
   */
  share(options?: ShareOptions): ShareHandle {
    const o = sharing().readShareOptions(options);
    this.#live();
    const fd = o.readOnly ? this.shareReadOnly({ enforce: o.enforce }).fd : this.fd;
    return { fd, length: this.#length, offset: this.#offset, backing: this.#backing, readOnly: o.readOnly || !this.#fileWritable, pid: process.pid };
  }

  /**
   * Blocks until the 32-bit word at `offset` is woken by notify() (here, in another thread or in
   * another process mapping the same memory), as Atomics.wait does: 'not-equal' at once when the
   * word does not hold `expected` (an int32 or uint32), 'timed-out' after `timeoutMs`
   * (default Infinity). For workers; the main thread should use waitAsync().
   * @example const r2 = Region.fromShare(h); r2.wait(0, 0, 1000); // 'ok' | 'not-equal' | 'timed-out'
   */
  wait(offset: number, expected: number, timeoutMs?: number): WaitResult {
    const { checkWordOffset, checkExpected, checkTimeout, waitBlocking } = waiting();
    const off = checkWordOffset(offset, this.#length);
    const value = checkExpected(expected);
    const ns = checkTimeout(timeoutMs);
    this.#waitable();
    return waitBlocking(this.#s.address + off, value, ns);
  }

  /**
   * wait() without blocking: a pooled native thread sleeps on the futex, and the promise settles
   * on this thread. It rejects with the signal's reason when `signal` aborts and with
   * ERR_DMAMEM_CLOSED when the region is closed. A pending wait keeps the process alive, like a timer.
   * @example const res = await r.waitAsync(0, 0, 5000, { signal: AbortSignal.timeout(100) });
   */
  waitAsync(offset: number, expected: number, timeoutMs?: number, options?: WaitAsyncOptions): Promise<WaitResult> {
    const { checkWordOffset, checkExpected, checkTimeout, PendingWaits } = waiting();
    const off = checkWordOffset(offset, this.#length);
    const value = checkExpected(expected);
    const ns = checkTimeout(timeoutMs);
    const o = v.assertOptions('options', options);
    if (o.signal !== undefined && !(o.signal instanceof AbortSignal)) throw new TypeError(`Expected an AbortSignal for signal but received ${v.describeValue(o.signal)}`);
    this.#waitable();
    return (this.#waits ??= new PendingWaits(this)).wait(this.#s.address + off, value, ns, o.signal);
  }

  /**
   * Wakes up to `count` (default all) waiters on the 32-bit word at `offset`, in every thread and
   * process that maps these pages, and returns how many woke. Store the new value first.
   * @example Atomics.store(i32, 0, 1); r.notify(0);
   */
  notify(offset: number, count?: number): number {
    const { checkWordOffset, checkCount } = waiting();
    const off = checkWordOffset(offset, this.#length);
    const n = checkCount(count);
    this.#waitable();
    return native.futexWake(this.#s.address + off, n);
  }

  /** A futex reads the word: the region must be open and not protected 'none' (EFAULT otherwise). */
  #waitable(): void {
    this.#live();
    if (this.#prot === 'none') throw new DmamemError('ERR_DMAMEM_PROT_NONE', "the region is protected 'none', so its words cannot be waited on; protect('read') first");
  }

  /**
   * Detaches every view, unmaps, closes the fd(s) and takes the bytes back from V8's accounting.
   * Pending waitAsync() promises reject with ERR_DMAMEM_CLOSED. Safe to call twice.
   * @example r.close(); r.close(); r.closed === true
   */
  close(): void {
    if (this.#s.closed) return;
    this.#assertUnpinned('close');
    this.#waits?.cancelAll(this.#s.address);
    backstop.unregister(this);
    this.#views.revoke();
    releaseMapping(this.#s);
  }

  /** close(), for `using r = Region.allocate(...)`. @example { using r = Region.allocate(4096); } */
  [Symbol.dispose](): void {
    this.close();
  }
}
