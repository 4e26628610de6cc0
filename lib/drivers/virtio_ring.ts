// The driver side of a split virtqueue, in the shape of Linux's drivers/virtio/virtio_ring.c (split
// ring only): rings in dma_alloc_coherent memory written through CPU views resolved once, every
// buffer mapped with the DMA API (so DMA-API debug sees it), indirect tables from kmalloc, and the
// kernel's notification suppression with and without EVENT_IDX. Free-running 16-bit indices.

import type { Device } from '../dma/device';
import type { Machine } from '../mm/machine';
import { DMA_FROM_DEVICE, DMA_TO_DEVICE, EIO, ENOMEM, type DmaDataDirection } from '../dma/constants';
import { dma_alloc_coherent, dma_free_coherent, dma_map_page, dma_map_single, dma_mapping_error, dma_unmap_page, dma_unmap_single } from '../dma/mapping';
import { Scatterlist, sg_next, sg_page } from '../dma/scatterlist';
import { checkLiveDevice } from '../dma/validate';
import { GFP_KERNEL, __GFP_HIGHMEM, type gfp_t } from '../mm/gfp';
import { kfree } from '../mm/slab';
import { checkBox, checkGfp, checkInt, describeValue } from '../mm/validate';
import { dma_rmb, dma_wmb, smp_mb } from './barriers';
import { IRQ_HANDLED, IRQ_NONE } from './irq';
import {
  VRING_AVAIL_F_NO_INTERRUPT, VRING_AVAIL_FLAGS, VRING_AVAIL_IDX, VRING_AVAIL_RING, VRING_DESC_ADDR, VRING_DESC_F_INDIRECT,
  VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, VRING_DESC_FLAGS, VRING_DESC_LEN, VRING_DESC_NEXT, VRING_DESC_SIZE, VRING_MAX_SIZE,
  VRING_USED_F_NO_NOTIFY, VRING_USED_FLAGS, VRING_USED_IDX, VRING_USED_RING, VRING_USED_ELEM_SIZE, vring_avail_event_offset,
  vring_avail_size, vring_desc_size, vring_need_event, vring_size_ok, vring_used_event_offset, vring_used_size,
} from '../devices/virtio/virtio_ring_layout';

/** ENOSPC: no room in the ring now (retry after virtqueue_get_buf). */
export const ENOSPC = 28;

// The virtio barriers with weak_barriers (the rings are coherent DMA memory): virtio_mb is smp_mb,
// virtio_rmb dma_rmb, virtio_wmb dma_wmb (include/linux/virtio_ring.h).
const virtio_mb = smp_mb;
const virtio_rmb = dma_rmb;
const virtio_wmb = dma_wmb;

/** notify: rings the device's doorbell; returns false when the device is gone (the queue then breaks). */
export type VqNotify = (vq: Virtqueue) => boolean | void;
/** callback: called from vring_interrupt when used buffers arrived. */
export type VqCallback = (vq: Virtqueue) => void;

export interface VringCreateOptions {
  /** VIRTIO_RING_F_EVENT_IDX was negotiated: used_event / avail_event suppression. Default false. */
  eventIdx?: boolean;
  /** VIRTIO_RING_F_INDIRECT_DESC was negotiated: chains of more than one sg go in one kmalloc'd table. Default false. */
  indirect?: boolean;
  /** vq->callback; without one the device is told not to interrupt (avail.flags NO_INTERRUPT). */
  callback?: VqCallback | null;
  /** The queue's index on its device. Default 0. */
  index?: number;
  /**
   * Called when virtqueue_get_buf sees a used index it has not seen before, before it unmaps what
   * the device returned: a transport whose device runs in a worker checks the device's logged bus
   * accesses there (DMA-API debug), while the buffers are still mapped. Default none.
   */
  sync?: (() => void) | null;
}

const OPTION_KEYS = ['eventIdx', 'indirect', 'callback', 'index', 'sync'] as const;

/**
 * vring_desc_extra for a run of descriptors: what was written, kept on the CPU side so that
 * detaching never trusts device-writable memory (struct of arrays, one slot per descriptor).
 */
class DescExtra {
  readonly addr: BigUint64Array;
  readonly len: Uint32Array;
  readonly flags: Uint16Array;
  /** The free list (main table) or i + 1 (an indirect table). */
  readonly next: Uint16Array;

  constructor(n: number) {
    this.addr = new BigUint64Array(n);
    this.len = new Uint32Array(n);
    this.flags = new Uint16Array(n);
    this.next = new Uint16Array(n);
    for (let i = 0; i < n; i++) this.next[i] = (i + 1) & 0xffff;
  }
}

/** An indirect table: kmalloc'd, mapped DMA_TO_DEVICE once filled; freed at detach. */
interface IndirectTable {
  readonly cpu: number;
  readonly n: number;
  readonly view: DataView;
  readonly extra: DescExtra;
}

/** A coherent ring area: its CPU address, bus address, size and the view written through. */
interface RingArea {
  readonly cpu: number;
  readonly dma: bigint;
  readonly size: number;
  readonly view: DataView;
}

/** struct vring_virtqueue (split): the state behind a Virtqueue. */
class VringVirtqueue {
  readonly dev: Device;
  readonly machine: Machine;
  readonly num: number;
  readonly notify: VqNotify;
  readonly event: boolean;
  readonly indirect: boolean;
  readonly desc: RingArea;
  readonly avail: RingArea;
  readonly used: RingArea;
  readonly extra: DescExtra;
  /** desc_state[].data: the token of each chain head, null when free. */
  readonly data: unknown[];
  /** desc_state[].indir_desc. */
  readonly indir: (IndirectTable | null)[];
  readonly usedEventOff: number;
  readonly availEventOff: number;
  free_head = 0;
  num_free: number;
  avail_idx_shadow = 0;
  avail_flags_shadow = 0;
  last_used_idx = 0;
  num_added = 0;
  broken = false;
  event_triggered = false;
  deleted = false;
  /** options.sync, and the used index it last ran for. */
  sync: (() => void) | null = null;
  synced_used_idx = 0;

  constructor(dev: Device, num: number, notify: VqNotify, event: boolean, indirect: boolean, desc: RingArea, avail: RingArea, used: RingArea) {
    this.dev = dev;
    this.machine = dev.machine;
    this.num = num;
    this.notify = notify;
    this.event = event;
    this.indirect = indirect;
    this.desc = desc;
    this.avail = avail;
    this.used = used;
    this.extra = new DescExtra(num);
    this.data = new Array<unknown>(num).fill(null);
    this.indir = new Array<IndirectTable | null>(num).fill(null);
    this.usedEventOff = vring_used_event_offset(num);
    this.availEventOff = vring_avail_event_offset(num);
    this.num_free = num;
  }
}

let vringOf: (vq: Virtqueue) => VringVirtqueue;
let newVirtqueue: (name: string, index: number, callback: VqCallback | null, vring: VringVirtqueue) => Virtqueue;

/**
 * struct virtqueue: a driver's handle on one split ring. Made by vring_create_virtqueue; every
 * operation is one of the kernel-named functions below.
 */
export class Virtqueue {
  readonly name: string;
  readonly index: number;
  readonly callback: VqCallback | null;
  readonly #vring: VringVirtqueue;

  // The module's functions reach the state; nothing outside this file can.
  static {
    vringOf = (vq) => vq.#vring;
    newVirtqueue = (name, index, callback, vring) => new Virtqueue(name, index, callback, vring);
  }

  /** Made by vring_create_virtqueue only. */
  private constructor(name: string, index: number, callback: VqCallback | null, vring: VringVirtqueue) {
    this.name = name;
    this.index = index;
    this.callback = callback;
    this.#vring = vring;
    Object.freeze(this);
  }

  /** Descriptors free now. */
  get num_free(): number {
    return this.#vring.num_free;
  }

  /** The ring's size. */
  get num_max(): number {
    return this.#vring.num;
  }
}

/** The live state of `vq`, or a TypeError naming `fn` (not a Virtqueue, or deleted). */
function live(fn: string, vq: unknown): VringVirtqueue {
  if (!(vq instanceof Virtqueue)) throw new TypeError(`${fn}: Expected a Virtqueue for vq but received ${describeValue(vq)}`);
  const vr = vringOf(vq);
  if (vr.deleted) throw new TypeError(`${fn}: virtqueue ${vq.name} was deleted (vring_del_virtqueue)`);
  return vr;
}

/** BAD_RING: the device broke the ring protocol; the queue is broken from now on. */
function BAD_RING(vr: VringVirtqueue, vq: Virtqueue, message: string): void {
  vr.machine.warn(`${vr.dev.name}: ${vq.name}: ${message}`);
  vr.broken = true;
}

function allocRing(dev: Device, size: number): RingArea | null {
  const handle = { value: 0n };
  const cpu = dma_alloc_coherent(dev, size, handle, GFP_KERNEL);
  if (cpu === null) return null;
  const buf = dev.machine.view(cpu, size);
  buf.fill(0);
  return { cpu, dma: handle.value, size, view: new DataView(buf.buffer, buf.byteOffset, buf.byteLength) };
}

function freeRing(dev: Device, area: RingArea): void {
  dma_free_coherent(dev, area.size, area.cpu, area.dma);
}

/**
 * vring_create_virtqueue: a split ring of `num` entries for `dev`, its descriptor table, available
 * and used rings each from dma_alloc_coherent. `notify` rings the device's doorbell.
 * @returns the queue, or null when coherent memory cannot be had (nothing is left allocated).
 * @throws RangeError when `num` is not a power of two from 1 to 32768 (before any allocation).
 * @example const vq = vring_create_virtqueue(dev, 256, () => { writew(0, notifyReg); return true; }, 'tx', { eventIdx: true })!;
 */
export function vring_create_virtqueue(dev: Device, num: number, notify: VqNotify, name: string, options: VringCreateOptions = {}): Virtqueue | null {
  const fn = 'vring_create_virtqueue';
  checkLiveDevice(fn, dev);
  if (typeof num !== 'number') throw new TypeError(`${fn}: Expected a number for num but received ${describeValue(num)}`);
  if (!vring_size_ok(num)) throw new RangeError(`${fn}: Expected a power of two from 1 to ${VRING_MAX_SIZE} for num but received ${describeValue(num)}`);
  if (typeof notify !== 'function') throw new TypeError(`${fn}: Expected a function for notify but received ${describeValue(notify)}`);
  if (typeof name !== 'string') throw new TypeError(`${fn}: Expected a string for name but received ${describeValue(name)}`);
  if (typeof options !== 'object' || options === null) throw new TypeError(`${fn}: Expected an options object but received ${describeValue(options)}`);
  for (const k of Object.keys(options)) {
    if (!(OPTION_KEYS as readonly string[]).includes(k)) throw new TypeError(`${fn}: Unknown option '${k}' (expected ${OPTION_KEYS.join(', ')})`);
  }
  for (const k of ['eventIdx', 'indirect'] as const) {
    if (options[k] !== undefined && typeof options[k] !== 'boolean') throw new TypeError(`${fn}: Expected a boolean for ${k} but received ${describeValue(options[k])}`);
  }
  const callback = options.callback ?? null;
  if (callback !== null && typeof callback !== 'function') throw new TypeError(`${fn}: Expected a function or null for callback but received ${describeValue(callback)}`);
  const index = options.index ?? 0;
  checkInt(fn, 'index', index, 0, 0xffff);
  const sync = options.sync ?? null;
  if (sync !== null && typeof sync !== 'function') throw new TypeError(`${fn}: Expected a function or null for sync but received ${describeValue(sync)}`);
  dev.machine.assertAlive();

  const desc = allocRing(dev, vring_desc_size(num));
  if (desc === null) return null;
  const avail = allocRing(dev, vring_avail_size(num));
  if (avail === null) {
    freeRing(dev, desc);
    return null;
  }
  const used = allocRing(dev, vring_used_size(num));
  if (used === null) {
    freeRing(dev, avail);
    freeRing(dev, desc);
    return null;
  }
  const vr = new VringVirtqueue(dev, num, notify, options.eventIdx === true, options.indirect === true, desc, avail, used);
  vr.sync = sync;
  // No callback? Tell the other side not to bother us.
  if (callback === null) {
    vr.avail_flags_shadow |= VRING_AVAIL_F_NO_INTERRUPT;
    if (!vr.event) avail.view.setUint16(VRING_AVAIL_FLAGS, vr.avail_flags_shadow, true);
  }
  return newVirtqueue(name, index, callback, vr);
}

/**
 * vring_del_virtqueue: frees the rings. Buffers still in the ring are not unmapped (detach them
 * first with virtqueue_detach_unused_buf, as drivers do; DMA-API debug reports them at teardown).
 * A second call does nothing.
 */
export function vring_del_virtqueue(vq: Virtqueue): void {
  if (!(vq instanceof Virtqueue)) throw new TypeError(`vring_del_virtqueue: Expected a Virtqueue for vq but received ${describeValue(vq)}`);
  const vr = vringOf(vq);
  if (vr.deleted) return;
  vr.deleted = true;
  if (vr.machine.isDestroyed) return;
  freeRing(vr.dev, vr.used);
  freeRing(vr.dev, vr.avail);
  freeRing(vr.dev, vr.desc);
}

/** vring_map_one_sg: the entry's page range mapped for the device, or DMA_MAPPING_ERROR. */
function vring_map_one_sg(vr: VringVirtqueue, sg: Scatterlist, dir: DmaDataDirection): bigint {
  return dma_map_page(vr.dev, sg_page(sg)!, sg.offset, sg.length, dir);
}

/** vring_unmap_one_split: undoes the mapping behind descriptor i of a table (main or indirect). */
function vring_unmap_one_split(vr: VringVirtqueue, extra: DescExtra, i: number): void {
  const flags = extra.flags[i]!;
  if (flags & VRING_DESC_F_INDIRECT) {
    dma_unmap_single(vr.dev, extra.addr[i]!, extra.len[i]!, DMA_TO_DEVICE);
  } else {
    dma_unmap_page(vr.dev, extra.addr[i]!, extra.len[i]!, flags & VRING_DESC_F_WRITE ? DMA_FROM_DEVICE : DMA_TO_DEVICE);
  }
}

/** virtqueue_add_desc_split: writes descriptor i of `view` and its extra; the next free index. */
function virtqueue_add_desc_split(view: DataView, extra: DescExtra, i: number, addr: bigint, len: number, flags: number): number {
  const at = i * VRING_DESC_SIZE;
  const next = extra.next[i]!;
  view.setBigUint64(at + VRING_DESC_ADDR, addr, true);
  view.setUint32(at + VRING_DESC_LEN, len, true);
  view.setUint16(at + VRING_DESC_FLAGS, flags, true);
  view.setUint16(at + VRING_DESC_NEXT, next, true);
  extra.addr[i] = addr;
  extra.len[i] = len;
  extra.flags[i] = flags;
  return next;
}

/** alloc_indirect_split: a kmalloc'd table for `total_sg` descriptors, or null (then the ring is used). */
function alloc_indirect_split(vr: VringVirtqueue, total_sg: number, gfp: gfp_t): IndirectTable | null {
  // The table is CPU memory the device reads through a mapping: no highmem.
  const cpu = vr.machine.kmalloc_array(total_sg, VRING_DESC_SIZE, gfp & ~__GFP_HIGHMEM);
  if (cpu === null) return null;
  const buf = vr.machine.view(cpu, total_sg * VRING_DESC_SIZE);
  return { cpu, n: total_sg, view: new DataView(buf.buffer, buf.byteOffset, buf.byteLength), extra: new DescExtra(total_sg) };
}

/**
 * The entries of lists sgs[from .. to - 1] (each walked with sg_next, at most `limit` entries in
 * all), checked before anything is mapped.
 */
function collect(fn: string, vr: VringVirtqueue, sgs: readonly (Scatterlist | null)[], from: number, to: number, limit: number, entries: Scatterlist[]): void {
  for (let n = from; n < to; n++) {
    let sg = sgs[n] ?? null;
    if (!(sg instanceof Scatterlist)) throw new TypeError(`${fn}: Expected a Scatterlist for sgs[${n}] but received ${describeValue(sg)}`);
    for (let k = 0; sg !== null && entries.length < limit; k++) {
      const page = sg_page(sg);
      if (page === null) throw new TypeError(`${fn}: entry ${k} of sgs[${n}] has no page (sg_set_page or sg_set_buf first)`);
      if (page.machine !== vr.machine) throw new TypeError(`${fn}: entry ${k} of sgs[${n}] is a page of another machine than ${vr.dev.name}'s`);
      entries.push(sg);
      sg = sg_next(sg);
    }
  }
}

/**
 * virtqueue_add_split: maps each entry (out ones DMA_TO_DEVICE, in ones DMA_FROM_DEVICE), writes
 * the chain (or an indirect table), publishes the head in the available ring.
 */
function virtqueue_add_split(vq: Virtqueue, vr: VringVirtqueue, entries: readonly Scatterlist[], out: number, out_sgs: number, data: unknown, gfp: gfp_t): number {
  const total_sg = entries.length;
  if (vr.broken) return -EIO;
  if (total_sg > vr.num) return -ENOSPC; // the device refuses a chain longer than its queue, indirect or not
  const head = vr.free_head;
  const table = vr.indirect && total_sg > 1 && vr.num_free > 0 ? alloc_indirect_split(vr, total_sg, gfp) : null;
  const descs_used = table === null ? total_sg : 1;
  if (vr.num_free < descs_used) {
    // As the kernel does: with outgoing data, poke the device so it drains the ring.
    if (out_sgs > 0) vr.notify(vq);
    if (table !== null) kfree(table.cpu);
    return -ENOSPC;
  }
  const view = table === null ? vr.desc.view : table.view;
  const extra = table === null ? vr.extra : table.extra;
  let i = table === null ? head : 0;
  let prev = i;
  let failed = false;
  try {
    for (let n = 0; n < total_sg; n++) {
      const sg = entries[n]!;
      const write = n >= out;
      const addr = vring_map_one_sg(vr, sg, write ? DMA_FROM_DEVICE : DMA_TO_DEVICE);
      if (dma_mapping_error(vr.dev, addr)) {
        failed = true;
        break;
      }
      prev = i;
      i = virtqueue_add_desc_split(view, extra, i, addr, sg.length, write ? VRING_DESC_F_NEXT | VRING_DESC_F_WRITE : VRING_DESC_F_NEXT);
    }
    if (!failed) {
      // The last descriptor ends the chain.
      extra.flags[prev] = extra.flags[prev]! & ~VRING_DESC_F_NEXT;
      view.setUint16(prev * VRING_DESC_SIZE + VRING_DESC_FLAGS, extra.flags[prev]!, true);
      if (table !== null) {
        // Filled first, then mapped: the device sees the finished table.
        const addr = dma_map_single(vr.dev, table.cpu, total_sg * VRING_DESC_SIZE, DMA_TO_DEVICE);
        if (dma_mapping_error(vr.dev, addr)) failed = true;
        else virtqueue_add_desc_split(vr.desc.view, vr.extra, head, addr, total_sg * VRING_DESC_SIZE, VRING_DESC_F_INDIRECT);
      }
    }
  } catch (e) {
    unmap_release(vr, extra, table, head, i, total_sg);
    throw e;
  }
  if (failed) {
    unmap_release(vr, extra, table, head, i, total_sg);
    return -ENOMEM;
  }

  vr.num_free -= descs_used;
  vr.free_head = table === null ? i : vr.extra.next[head]!;
  vr.data[head] = data;
  vr.indir[head] = table;

  // Put the head in the available ring; the index follows once the entry is visible.
  const avail = vr.avail.view;
  avail.setUint16(VRING_AVAIL_RING + 2 * (vr.avail_idx_shadow & (vr.num - 1)), head, true);
  virtio_wmb();
  vr.avail_idx_shadow = (vr.avail_idx_shadow + 1) & 0xffff;
  avail.setUint16(VRING_AVAIL_IDX, vr.avail_idx_shadow, true);
  vr.num_added++;
  // A kick_prepare would not see 65535 adds in one batch as new: kick now.
  if (vr.num_added === 0xffff) virtqueue_kick(vq);
  return 0;
}

/** The unwind of a failed add: unmaps what was mapped (up to descriptor err_idx), frees the table. */
function unmap_release(vr: VringVirtqueue, extra: DescExtra, table: IndirectTable | null, head: number, err_idx: number, total_sg: number): void {
  let i = table === null ? head : 0;
  for (let n = 0; n < total_sg; n++) {
    if (i === err_idx) break;
    vring_unmap_one_split(vr, extra, i);
    i = extra.next[i]!;
  }
  if (table !== null) kfree(table.cpu);
}

function checkAddArgs(fn: string, data: unknown, gfp: unknown): void {
  if (data === null || data === undefined) throw new Error(`kernel BUG at drivers/virtio/virtio_ring.c: ${fn}: data == NULL (the token is what virtqueue_get_buf gives back)`);
  checkGfp(fn, gfp);
}

/**
 * virtqueue_add_sgs: exposes a chain of buffers to the device: `out_sgs` device-readable
 * scatterlists then `in_sgs` device-writable ones, each walked to its end with sg_next. `data` (not
 * null) is the token virtqueue_get_buf returns for it.
 * @returns 0; -ENOSPC when the ring has no room (or the chain is longer than the ring); -ENOMEM
 *   when a mapping failed (nothing stays mapped); -EIO when the queue is broken.
 */
export function virtqueue_add_sgs(vq: Virtqueue, sgs: readonly (Scatterlist | null)[], out_sgs: number, in_sgs: number, data: unknown, gfp: gfp_t): number {
  const fn = 'virtqueue_add_sgs';
  const vr = live(fn, vq);
  if (!Array.isArray(sgs)) throw new TypeError(`${fn}: Expected an array of Scatterlist for sgs but received ${describeValue(sgs)}`);
  checkInt(fn, 'out_sgs', out_sgs, 0, sgs.length);
  checkInt(fn, 'in_sgs', in_sgs, 0, sgs.length - out_sgs);
  checkAddArgs(fn, data, gfp);
  const entries: Scatterlist[] = [];
  collect(fn, vr, sgs, 0, out_sgs, Number.MAX_SAFE_INTEGER, entries);
  const out = entries.length;
  collect(fn, vr, sgs, out_sgs, out_sgs + in_sgs, Number.MAX_SAFE_INTEGER, entries);
  if (entries.length === 0) throw new Error(`kernel BUG at drivers/virtio/virtio_ring.c: ${fn}: total_sg == 0`);
  return virtqueue_add_split(vq, vr, entries, out, out_sgs, data, gfp);
}

function addBuf(fn: string, vq: Virtqueue, sg: Scatterlist, num: number, data: unknown, gfp: gfp_t, write: boolean): number {
  const vr = live(fn, vq);
  checkInt(fn, 'num', num, 1, 0xffffffff);
  checkAddArgs(fn, data, gfp);
  const entries: Scatterlist[] = [];
  collect(fn, vr, [sg], 0, 1, num, entries);
  if (entries.length < num) throw new RangeError(`${fn}: the scatterlist ends after ${entries.length} entries, but num is ${num}`);
  return virtqueue_add_split(vq, vr, entries, write ? 0 : num, write ? 0 : 1, data, gfp);
}

/** virtqueue_add_outbuf: `num` entries of `sg`, all device-readable. Returns as virtqueue_add_sgs. */
export function virtqueue_add_outbuf(vq: Virtqueue, sg: Scatterlist, num: number, data: unknown, gfp: gfp_t): number {
  return addBuf('virtqueue_add_outbuf', vq, sg, num, data, gfp, false);
}

/** virtqueue_add_inbuf: `num` entries of `sg`, all device-writable. Returns as virtqueue_add_sgs. */
export function virtqueue_add_inbuf(vq: Virtqueue, sg: Scatterlist, num: number, data: unknown, gfp: gfp_t): number {
  return addBuf('virtqueue_add_inbuf', vq, sg, num, data, gfp, true);
}

/**
 * virtqueue_kick_prepare: whether the device wants a doorbell for what was added since the last
 * one: with EVENT_IDX when the avail index passed the device's avail_event, else unless used.flags
 * has NO_NOTIFY. Call virtqueue_notify when true.
 */
export function virtqueue_kick_prepare(vq: Virtqueue): boolean {
  const vr = live('virtqueue_kick_prepare', vq);
  // The new avail index is visible before we read the device's threshold.
  virtio_mb();
  const old = (vr.avail_idx_shadow - vr.num_added) & 0xffff;
  const now = vr.avail_idx_shadow;
  vr.num_added = 0;
  if (vr.event) return vring_need_event(vr.used.view.getUint16(vr.availEventOff, true), now, old);
  return (vr.used.view.getUint16(VRING_USED_FLAGS, true) & VRING_USED_F_NO_NOTIFY) === 0;
}

/** virtqueue_notify: rings the doorbell. False when the queue is broken or notify said the device is gone (which breaks it). */
export function virtqueue_notify(vq: Virtqueue): boolean {
  const vr = live('virtqueue_notify', vq);
  if (vr.broken) return false;
  // Only an explicit false means the device is gone: a notify written as `() => { iowrite16(...) }` is fine.
  if (vr.notify(vq) === false) {
    vr.broken = true;
    return false;
  }
  return true;
}

/** virtqueue_kick: kick_prepare, then notify when needed. False only when the notify failed or the queue is broken. */
export function virtqueue_kick(vq: Virtqueue): boolean {
  if (virtqueue_kick_prepare(vq)) return virtqueue_notify(vq);
  return true;
}

/** detach_buf_split: unmaps the chain at `head` (and its indirect table) and frees its descriptors. */
function detach_buf_split(vr: VringVirtqueue, head: number): void {
  const extra = vr.extra;
  vr.data[head] = null;
  let i = head;
  while (extra.flags[i]! & VRING_DESC_F_NEXT) {
    vring_unmap_one_split(vr, extra, i);
    i = extra.next[i]!;
    vr.num_free++;
  }
  vring_unmap_one_split(vr, extra, i);
  extra.next[i] = vr.free_head;
  vr.free_head = head;
  vr.num_free++;
  const table = vr.indir[head];
  if (table !== null && table !== undefined) {
    for (let j = 0; j < table.n; j++) vring_unmap_one_split(vr, table.extra, j);
    kfree(table.cpu);
    vr.indir[head] = null;
  }
}

/**
 * virtqueue_get_buf: the token of the next chain the device used, unmapped and detached, with the
 * bytes the device says it wrote in `len.value`; null when there is none or the queue is broken. A
 * used entry naming no chain in flight is the device's bug (BAD_RING): a WARN, and the queue breaks.
 */
export function virtqueue_get_buf(vq: Virtqueue, len: { value: number } | null): unknown {
  const fn = 'virtqueue_get_buf';
  const vr = live(fn, vq);
  if (len !== null) checkBox(fn, 'len', len);
  if (vr.broken) return null;
  const used = vr.used.view;
  const used_idx = used.getUint16(VRING_USED_IDX, true);
  if (vr.last_used_idx === used_idx) return null;
  // Only read the entry after the index says it is there.
  virtio_rmb();
  if (vr.sync !== null && used_idx !== vr.synced_used_idx) {
    vr.synced_used_idx = used_idx;
    vr.sync();
  }
  const at = VRING_USED_RING + VRING_USED_ELEM_SIZE * (vr.last_used_idx & (vr.num - 1));
  const i = used.getUint32(at, true);
  if (len !== null) len.value = used.getUint32(at + 4, true);
  if (i >= vr.num) {
    BAD_RING(vr, vq, `id ${i} out of range`);
    return null;
  }
  const ret = vr.data[i];
  if (ret === null || ret === undefined) {
    BAD_RING(vr, vq, `id ${i} is not a head!`);
    return null;
  }
  detach_buf_split(vr, i);
  vr.last_used_idx = (vr.last_used_idx + 1) & 0xffff;
  // With callbacks on, tell the device which entry we want to hear about next.
  if (!(vr.avail_flags_shadow & VRING_AVAIL_F_NO_INTERRUPT)) {
    vr.avail.view.setUint16(vr.usedEventOff, vr.last_used_idx, true);
    virtio_mb();
  }
  return ret;
}

/**
 * virtqueue_disable_cb: asks the device not to interrupt (a hint: one may still come). Without
 * EVENT_IDX avail.flags NO_INTERRUPT; with it, used_event is set to the entry just behind
 * last_used_idx, which the device only reaches again 65535 entries later (the kernel writes 0 there,
 * a hack its comment admits; this value never fires early).
 */
export function virtqueue_disable_cb(vq: Virtqueue): void {
  const vr = live('virtqueue_disable_cb', vq);
  if (vr.avail_flags_shadow & VRING_AVAIL_F_NO_INTERRUPT) return;
  vr.avail_flags_shadow |= VRING_AVAIL_F_NO_INTERRUPT;
  // The device already signalled: it will not again until re-enabled, nothing to write.
  if (vr.event_triggered) return;
  if (vr.event) vr.avail.view.setUint16(vr.usedEventOff, (vr.last_used_idx - 1) & 0xffff, true);
  else vr.avail.view.setUint16(VRING_AVAIL_FLAGS, vr.avail_flags_shadow, true);
}

/**
 * virtqueue_enable_cb_prepare: turns callbacks back on and returns the opaque value for
 * virtqueue_poll (the last used index seen).
 */
export function virtqueue_enable_cb_prepare(vq: Virtqueue): number {
  const vr = live('virtqueue_enable_cb_prepare', vq);
  if (vr.event_triggered) vr.event_triggered = false;
  if (vr.avail_flags_shadow & VRING_AVAIL_F_NO_INTERRUPT) {
    vr.avail_flags_shadow &= ~VRING_AVAIL_F_NO_INTERRUPT;
    if (!vr.event) vr.avail.view.setUint16(VRING_AVAIL_FLAGS, vr.avail_flags_shadow, true);
  }
  const last = vr.last_used_idx;
  vr.avail.view.setUint16(vr.usedEventOff, last, true);
  return last;
}

/** virtqueue_poll: whether buffers were used since enable_cb_prepare returned `last_used_idx`. */
export function virtqueue_poll(vq: Virtqueue, last_used_idx: number): boolean {
  const vr = live('virtqueue_poll', vq);
  checkInt('virtqueue_poll', 'last_used_idx', last_used_idx, 0, 0xffff);
  if (vr.broken) return false;
  virtio_mb();
  return last_used_idx !== vr.used.view.getUint16(VRING_USED_IDX, true);
}

/**
 * virtqueue_enable_cb: callbacks on again. False when buffers are already waiting (then process
 * them, as the interrupt may have been missed); true when the ring is empty.
 */
export function virtqueue_enable_cb(vq: Virtqueue): boolean {
  const last = virtqueue_enable_cb_prepare(vq);
  return !virtqueue_poll(vq, last);
}

/**
 * virtqueue_enable_cb_delayed: callbacks on, but with EVENT_IDX only once about 3/4 of the
 * buffers in flight were used (fewer interrupts for a transmit queue). False when that many were
 * used already.
 */
export function virtqueue_enable_cb_delayed(vq: Virtqueue): boolean {
  const vr = live('virtqueue_enable_cb_delayed', vq);
  if (vr.event_triggered) vr.event_triggered = false;
  if (vr.avail_flags_shadow & VRING_AVAIL_F_NO_INTERRUPT) {
    vr.avail_flags_shadow &= ~VRING_AVAIL_F_NO_INTERRUPT;
    if (!vr.event) vr.avail.view.setUint16(VRING_AVAIL_FLAGS, vr.avail_flags_shadow, true);
  }
  const bufs = Math.floor((((vr.avail_idx_shadow - vr.last_used_idx) & 0xffff) * 3) / 4);
  vr.avail.view.setUint16(vr.usedEventOff, (vr.last_used_idx + bufs) & 0xffff, true);
  virtio_mb();
  return ((vr.used.view.getUint16(VRING_USED_IDX, true) - vr.last_used_idx) & 0xffff) <= bufs;
}

/**
 * virtqueue_detach_unused_buf: takes back one chain the device never used (at teardown, after the
 * device was reset): unmapped and freed, its token returned; null once none is left.
 */
export function virtqueue_detach_unused_buf(vq: Virtqueue): unknown {
  const vr = live('virtqueue_detach_unused_buf', vq);
  for (let i = 0; i < vr.num; i++) {
    const buf = vr.data[i];
    if (buf === null || buf === undefined) continue;
    detach_buf_split(vr, i);
    vr.avail_idx_shadow = (vr.avail_idx_shadow - 1) & 0xffff;
    vr.avail.view.setUint16(VRING_AVAIL_IDX, vr.avail_idx_shadow, true);
    return buf;
  }
  // That should have freed everything.
  if (vr.num_free !== vr.num) throw new Error(`kernel BUG at drivers/virtio/virtio_ring.c: virtqueue_detach_unused_buf: num_free ${vr.num_free} != ${vr.num}`);
  return null;
}

/**
 * vring_interrupt: the queue's interrupt handler. IRQ_NONE when nothing was used; otherwise runs
 * the callback (not on a broken queue) and returns IRQ_HANDLED.
 */
export function vring_interrupt(irq: number, vq: Virtqueue): number {
  const vr = live('vring_interrupt', vq);
  if (vr.last_used_idx === vr.used.view.getUint16(VRING_USED_IDX, true)) return IRQ_NONE;
  if (vr.broken) return IRQ_HANDLED;
  // Just a hint for disable_cb: the device signalled and will not again until re-enabled.
  if (vr.event) vr.event_triggered = true;
  vq.callback?.(vq);
  return IRQ_HANDLED;
}

/** virtqueue_get_vring_size: the ring's number of entries. */
export function virtqueue_get_vring_size(vq: Virtqueue): number {
  return live('virtqueue_get_vring_size', vq).num;
}

/** virtqueue_is_broken: the device broke the protocol or went away; no buffer is added or returned any more. */
export function virtqueue_is_broken(vq: Virtqueue): boolean {
  return live('virtqueue_is_broken', vq).broken;
}

/**
 * __virtqueue_break: the transport found the device broken (DEVICE_NEEDS_RESET, surprise removal):
 * nothing is added or returned on this queue any more (virtio_break_device calls it for each queue).
 */
export function __virtqueue_break(vq: Virtqueue): void {
  live('__virtqueue_break', vq).broken = true;
}

/** virtqueue_get_desc_addr: the descriptor table's bus address (for the transport's queue_desc). */
export function virtqueue_get_desc_addr(vq: Virtqueue): bigint {
  return live('virtqueue_get_desc_addr', vq).desc.dma;
}

/** virtqueue_get_avail_addr: the available ring's bus address (queue_driver). */
export function virtqueue_get_avail_addr(vq: Virtqueue): bigint {
  return live('virtqueue_get_avail_addr', vq).avail.dma;
}

/** virtqueue_get_used_addr: the used ring's bus address (queue_device). */
export function virtqueue_get_used_addr(vq: Virtqueue): bigint {
  return live('virtqueue_get_used_addr', vq).used.dma;
}
