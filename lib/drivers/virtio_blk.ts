// The virtio-blk driver, in the shape of Linux's drivers/block/virtio_blk.c: a request is three
// scatterlists (the out header, the data, the status byte) added with virtqueue_add_sgs, so the
// ring maps every byte with the DMA API; header and status live in kmalloc'd request slots (blk-mq's
// preallocated PDUs), data in the caller's pages. Completion by interrupt (virtblk_done) or by
// polling (virtblk_poll). A small promise API on top (VirtioBlk: read, write, flush, getId).

import type { Device } from '../dma/device';
import type { Machine } from '../mm/machine';
import type { Page } from '../mm/page';
import { Scatterlist, sg_init_table, sg_set_page } from '../dma/scatterlist';
import { sg_init_one } from '../dma/sg_helpers';
import { GFP_ATOMIC, GFP_KERNEL, get_order } from '../mm/gfp';
import { kfree } from '../mm/slab';
import { errnoError } from '../os/errors';
import { busMaster } from '../devices/bus_master';
import type { PciDev } from '../devices/pci_dev';
import {
  type VirtioDevice, virtio_cread16, virtio_cread32, virtio_cread64, virtio_cread8, virtio_del_vqs, virtio_device_ready,
  virtio_find_vqs, virtio_needs_reset, virtio_reset_device,
} from './virtio';
import { type VirtioIrqMode, virtio_pci_probe, virtio_pci_remove } from './virtio_pci_modern';
import { VirtQueue } from '../devices/virtio/virtqueue';
import {
  VIRTIO_F_ACCESS_PLATFORM, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC, virtio_has_feature,
} from '../devices/virtio/virtio_ring_layout';
import {
  SECTOR_SIZE, VIRTIO_BLK_CFG_CAPACITY, VIRTIO_BLK_CFG_SEG_MAX, VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO,
  VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_OUTHDR_IOPRIO, VIRTIO_BLK_OUTHDR_SECTOR, VIRTIO_BLK_OUTHDR_SIZE,
  VIRTIO_BLK_OUTHDR_TYPE, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_ID_BLOCK, VirtioBlkDevice, type VirtioBlkOptions,
} from '../devices/virtio/virtio_blk';
import {
  ENOSPC, type Virtqueue, type VqCallback, virtqueue_add_sgs, virtqueue_detach_unused_buf, virtqueue_disable_cb,
  virtqueue_enable_cb, virtqueue_get_avail_addr, virtqueue_get_buf, virtqueue_get_desc_addr, virtqueue_get_used_addr,
  virtqueue_is_broken, virtqueue_kick_prepare, virtqueue_notify, vring_create_virtqueue, vring_del_virtqueue, vring_interrupt,
} from './virtio_ring';

const bit = (b: number): bigint => 1n << BigInt(b);

/** The features this driver knows (virtio_blk.c's features[] table, the ones modelled here). */
export const VIRTIO_BLK_DRIVER_FEATURES = bit(VIRTIO_BLK_F_SEG_MAX) | bit(VIRTIO_BLK_F_RO) | bit(VIRTIO_BLK_F_BLK_SIZE) | bit(VIRTIO_BLK_F_FLUSH)
  | bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_F_ACCESS_PLATFORM) | bit(VIRTIO_RING_F_EVENT_IDX) | bit(VIRTIO_RING_F_INDIRECT_DESC);

/**
 * What the driver needs from a virtio transport (struct virtio_device and its config ops), for
 * queue 0 only: the negotiated features, config reads, the queue, and reset.
 */
export interface VirtioBlkTransport {
  /** The device the rings and buffers are mapped for (DMA API). */
  readonly dev: Device;
  /** The features both sides accepted (FEATURES_OK done). */
  readonly features: bigint;
  /** virtio_cread: `size` bytes of the device configuration at `offset` (a bigint for 8). */
  configRead(offset: number, size: 1 | 2 | 4 | 8): number | bigint;
  /**
   * virtio_find_single_vq: creates and enables queue 0 (vring_create_virtqueue with the doorbell
   * as notify) and routes its interrupt to vring_interrupt, which runs `callback` (null: polled, no
   * interrupts wanted). `onError` is told when the device gives up (DEVICE_NEEDS_RESET). Sets DRIVER_OK.
   */
  findVq(name: string, num: number, callback: VqCallback | null, onError: (reason: string) => void): Virtqueue | null;
  /** virtio_reset_device: after it the device touches no ring or buffer. */
  reset(): void;
  /** del_vqs: frees the queue's rings (after the driver took its buffers back). */
  delVqs(): void;
  /** Polled drivers ask this now and then (no config interrupt tells them): whether the device gave up. */
  needsReset?(): boolean;
  /** The transport's own end (virtio_pci_remove), after delVqs. */
  remove?(): void;
}

/** blk_status_to_errno for the statuses a virtio-blk device returns (virtblk_result). */
function statusErrno(status: number): string | null {
  if (status === VIRTIO_BLK_S_OK) return null;
  if (status === VIRTIO_BLK_S_UNSUPP) return 'EOPNOTSUPP';
  return 'EIO';
}

/** Where the status byte sits in a request slot: its own cache line, apart from the header the device only reads. */
const VIRTBLK_STATUS_OFF = 64;
const VIRTBLK_SLOT_SIZE = 128;
/** Status written before submitting: a device that never writes the byte reads as an error. */
const STATUS_UNSET = 0xff;

/** What a request carries: its command, data (caller's pages as a scatterlist) and completion. */
export interface VirtblkRequest {
  readonly type: number;
  readonly sector: number;
  /** The data scatterlist (end-marked; its entries' total is the transfer size) or null for none. */
  readonly data: Scatterlist | null;
  /** Called once with the device's status (VIRTIO_BLK_S_*), or IOERR when the queue failed. */
  readonly done: (status: number) => void;
}

/** struct virtblk_req: a kmalloc'd slot with the out header and the status byte, and its scatterlists. */
class VirtblkReq {
  readonly cpu: number;
  readonly hdr: DataView;
  readonly status: Uint8Array;
  readonly hdrSg = new Scatterlist();
  readonly statusSg = new Scatterlist();
  readonly sgs: (Scatterlist | null)[] = [null, null, null];
  rq: VirtblkRequest | null = null;
  /** performance.now() when it went to the device (for the timeout). */
  started = 0;
  /** Completed early (the queue broke) but still owned by the ring until reset. */
  orphan = false;

  constructor(m: Machine, cpu: number) {
    this.cpu = cpu;
    const b = m.view(cpu, VIRTBLK_SLOT_SIZE);
    this.hdr = new DataView(b.buffer, b.byteOffset, VIRTIO_BLK_OUTHDR_SIZE);
    this.status = new Uint8Array(b.buffer, b.byteOffset + VIRTBLK_STATUS_OFF, 1);
    sg_init_one(this.hdrSg, cpu, VIRTIO_BLK_OUTHDR_SIZE);
    sg_init_one(this.statusSg, cpu + VIRTBLK_STATUS_OFF, 1);
  }
}

export interface VirtioBlkProbeOptions {
  /** Completion by polling (no interrupts asked for). Default false: interrupt-driven. */
  readonly poll?: boolean;
  /** Ring entries asked of the transport. Default 128. */
  readonly num?: number;
  /**
   * A request the device has not answered after this many milliseconds fails the disk (EIO for it
   * and every other one; the buffers stay with the ring until remove()), as blk-mq's timeout would.
   * Default 30000 (blk-mq's 30 s); checked on a timer only while requests are in flight.
   */
  readonly timeoutMs?: number;
}

/**
 * struct virtio_blk: one disk on one request queue. Made by VirtioBlk.probe(transport) (virtblk_probe).
 * @example
 * const blk = VirtioBlk.probe(virtio_blk_direct(dev, { path: '/tmp/disk.img' }))!;
 * await blk.write(8, data);                     // data.length a multiple of 512
 * const back = await blk.read(8, data.length / 512);
 * await blk.flush();
 * await blk.remove();
 */
export class VirtioBlk {
  /** Disk size in 512-byte sectors (config capacity). */
  readonly capacity: number;
  /** VIRTIO_BLK_F_RO was offered: the device fails writes (the driver still sends them). */
  readonly readOnly: boolean;
  readonly features: bigint;
  readonly polled: boolean;
  readonly dev: Device;
  /** Requests the ring takes at once (num, halved without indirect descriptors, as virtblk_probe does). */
  readonly queueDepth: number;
  /** Largest data transfer of one request made by read/write (bigger ones are split). */
  readonly maxRequestBytes = 128 * 1024;
  readonly #t: VirtioBlkTransport;
  readonly #m: Machine;
  readonly #vq: Virtqueue;
  readonly #slots: VirtblkReq[] = [];
  readonly #free: VirtblkReq[] = [];
  readonly #pending: VirtblkRequest[] = [];
  #inflight = 0;
  #running = false;
  #again = false;
  #polling = false;
  #broken: string | null = null;
  #timeoutMs = 30000;
  #watchdog: ReturnType<typeof setInterval> | null = null;
  #removed = false;

  private constructor(t: VirtioBlkTransport, vq: Virtqueue, polled: boolean, brokenBox: { blk: VirtioBlk | null }) {
    this.#t = t;
    this.dev = t.dev;
    this.#m = t.dev.machine;
    this.#vq = vq;
    this.polled = polled;
    this.features = t.features;
    this.capacity = Number(t.configRead(VIRTIO_BLK_CFG_CAPACITY, 8));
    this.readOnly = virtio_has_feature(t.features, VIRTIO_BLK_F_RO);
    let depth = vq.num_max;
    if (!virtio_has_feature(t.features, VIRTIO_RING_F_INDIRECT_DESC)) depth = Math.max(1, depth >> 1);
    this.queueDepth = depth;
    brokenBox.blk = this;
  }

  /**
   * virtblk_probe: reads the config, finds the queue, allocates the request slots.
   * @returns the disk, or null when the queue or its slots cannot be had (nothing is left allocated).
   */
  static probe(t: VirtioBlkTransport, options: VirtioBlkProbeOptions = {}): VirtioBlk | null {
    const polled = options.poll === true;
    const box: { blk: VirtioBlk | null } = { blk: null };
    const vq = t.findVq('req.0', options.num ?? 128, polled ? null : (q) => box.blk?.virtblk_done(q), (reason) => box.blk?.virtblk_broken(reason));
    if (vq === null) return null;
    const timeoutMs = options.timeoutMs ?? 30000;
    if (!(typeof timeoutMs === 'number' && timeoutMs > 0)) throw new RangeError(`VirtioBlk.probe: Expected a positive number for timeoutMs but received ${String(timeoutMs)}`);
    const blk = new VirtioBlk(t, vq, polled, box);
    blk.#timeoutMs = timeoutMs;
    for (let i = 0; i < blk.queueDepth; i++) {
      const cpu = blk.#m.kmalloc(VIRTBLK_SLOT_SIZE, GFP_KERNEL);
      if (cpu === null) {
        t.reset();
        blk.#freeSlots();
        t.delVqs();
        return null;
      }
      const vbr = new VirtblkReq(blk.#m, cpu);
      blk.#slots.push(vbr);
      blk.#free.push(vbr);
    }
    return blk;
  }

  /** Requests submitted and not completed. */
  get inflight(): number {
    return this.#inflight + this.#pending.length;
  }

  /** Why the disk stopped (the device set DEVICE_NEEDS_RESET or broke the ring), or null. */
  get broken(): string | null {
    return this.#broken;
  }

  /** virtblk_setup_cmd + queue: runs `rq` when a slot and ring room are free. */
  submit(rq: VirtblkRequest): void {
    if (this.#removed || this.#broken !== null) {
      rq.done(VIRTIO_BLK_S_IOERR);
      return;
    }
    this.#pending.push(rq);
    // Requests made in the same turn go out with one doorbell (blk-mq's plug / commit_rqs).
    if (this.#pending.length === 1 && !this.#running) queueMicrotask(() => this.#run());
  }

  /** virtio_queue_rqs: adds what fits, then one kick. */
  #run(): void {
    if (this.#running) {
      this.#again = true;
      return;
    }
    this.#running = true;
    try {
      do {
        this.#again = false;
        let added = 0;
        while (this.#pending.length > 0 && this.#free.length > 0 && this.#broken === null) {
          const rq = this.#pending[0]!;
          const vbr = this.#free.pop()!;
          const err = this.#virtblk_add_req(vbr, rq);
          if (err === -ENOSPC) {
            this.#free.push(vbr);
            break; // blk_mq_stop_hw_queue: virtblk_done restarts us
          }
          this.#pending.shift();
          if (err < 0) {
            this.#free.push(vbr);
            rq.done(VIRTIO_BLK_S_IOERR);
            continue;
          }
          this.#inflight++;
          vbr.started = performance.now();
          added++;
        }
        if (added > 0 && virtqueue_kick_prepare(this.#vq)) virtqueue_notify(this.#vq);
        if (this.#broken !== null || virtqueue_is_broken(this.#vq)) this.#failAll(this.#broken ?? 'the queue is broken');
        if (this.#inflight > 0) this.#armWatchdog();
        if (this.polled && this.#inflight > 0) {
          this.virtblk_poll();
          if (this.#inflight > 0) this.#schedulePoll();
        }
      } while (this.#again || (this.#pending.length > 0 && this.#free.length > 0 && this.#broken === null && !virtqueue_is_broken(this.#vq) && this.#madeRoom()));
    } finally {
      this.#running = false;
    }
  }

  /** Whether the ring has room for another chain (a restart after ENOSPC is worth trying). */
  #madeRoom(): boolean {
    return this.#vq.num_free >= (virtio_has_feature(this.features, VIRTIO_RING_F_INDIRECT_DESC) ? 1 : 3);
  }

  /** virtblk_add_req: header out, data out or in, status in. */
  #virtblk_add_req(vbr: VirtblkReq, rq: VirtblkRequest): number {
    vbr.rq = rq;
    vbr.hdr.setUint32(VIRTIO_BLK_OUTHDR_TYPE, rq.type, true);
    vbr.hdr.setUint32(VIRTIO_BLK_OUTHDR_IOPRIO, 0, true);
    vbr.hdr.setBigUint64(VIRTIO_BLK_OUTHDR_SECTOR, BigInt(rq.sector), true);
    vbr.status[0] = STATUS_UNSET;
    const sgs = vbr.sgs;
    let num_out = 0;
    let num_in = 0;
    sgs[num_out++] = vbr.hdrSg;
    if (rq.data !== null) {
      if (rq.type === VIRTIO_BLK_T_OUT) sgs[num_out++] = rq.data;
      else sgs[num_out + num_in++] = rq.data;
    }
    sgs[num_out + num_in++] = vbr.statusSg;
    sgs.length = num_out + num_in;
    const err = virtqueue_add_sgs(this.#vq, sgs, num_out, num_in, vbr, GFP_ATOMIC);
    sgs.length = 3;
    if (err < 0) vbr.rq = null;
    return err;
  }

  /** Ends one request the device used: its slot goes back, its owner is told the status. */
  #complete(vbr: VirtblkReq): void {
    const rq = vbr.rq;
    vbr.rq = null;
    if (vbr.orphan) {
      vbr.orphan = false;
      this.#free.push(vbr);
      return;
    }
    this.#inflight--;
    this.#free.push(vbr);
    if (rq !== null) rq.done(vbr.status[0]!);
  }

  /** virtblk_done: the queue's interrupt callback; takes every used request, re-enables callbacks without losing a race. */
  virtblk_done(vq: Virtqueue): void {
    let n = 0;
    do {
      virtqueue_disable_cb(vq);
      for (let vbr = virtqueue_get_buf(vq, null) as VirtblkReq | null; vbr !== null; vbr = virtqueue_get_buf(vq, null) as VirtblkReq | null) {
        this.#complete(vbr);
        n++;
      }
      if (virtqueue_is_broken(vq)) break;
    } while (!virtqueue_enable_cb(vq));
    // blk_mq_start_stopped_hw_queues: requests waiting for room go now.
    if (n > 0 && this.#pending.length > 0) this.#run();
  }

  /** virtblk_poll: completes what the device used. @returns how many. */
  virtblk_poll(): number {
    let n = 0;
    for (let vbr = virtqueue_get_buf(this.#vq, null) as VirtblkReq | null; vbr !== null; vbr = virtqueue_get_buf(this.#vq, null) as VirtblkReq | null) {
      this.#complete(vbr);
      n++;
    }
    if (n > 0 && this.#pending.length > 0) this.#run();
    return n;
  }

  /** Polls on the event loop until nothing is in flight (a worker device answers on its own time). */
  #schedulePoll(): void {
    if (this.#polling) return;
    this.#polling = true;
    let steps = 0;
    const step = (): void => {
      if (this.#removed || this.#inflight === 0) {
        this.#polling = false;
        return;
      }
      this.virtblk_poll();
      if ((++steps & 63) === 0 && this.#broken === null && this.#t.needsReset?.() === true) this.virtblk_broken('the device set DEVICE_NEEDS_RESET');
      if (this.#broken !== null) this.#failAll(this.#broken);
      setImmediate(step);
    };
    setImmediate(step);
  }

  /**
   * blk-mq's timeout, one timer for the disk: while requests are in flight, asks the transport
   * whether the device gave up and fails everything once the oldest request is older than timeoutMs.
   */
  #armWatchdog(): void {
    if (this.#watchdog !== null) return;
    const tick = Math.max(1, Math.min(250, this.#timeoutMs / 4));
    this.#watchdog = setInterval(() => {
      if (this.#removed || this.#inflight === 0 || this.#broken !== null) {
        clearInterval(this.#watchdog!);
        this.#watchdog = null;
        return;
      }
      if (this.#t.needsReset?.() === true) {
        this.virtblk_broken('the device set DEVICE_NEEDS_RESET (or is gone)');
        return;
      }
      const now = performance.now();
      for (const vbr of this.#slots) {
        if (vbr.rq !== null && !vbr.orphan && now - vbr.started > this.#timeoutMs) {
          this.virtblk_broken(`a request got no answer in ${this.#timeoutMs} ms`);
          return;
        }
      }
    }, tick);
  }

  /** The device gave up (DEVICE_NEEDS_RESET): requests in flight fail with EIO now, their buffers stay with the ring until remove(). */
  virtblk_broken(reason: string): void {
    if (this.#broken === null) this.#broken = reason;
    if (!this.#running) this.#failAll(reason);
  }

  #failAll(_reason: string): void {
    for (const vbr of this.#slots) {
      if (vbr.rq === null || vbr.orphan) continue;
      const rq = vbr.rq;
      vbr.orphan = true;
      this.#orphaned.add(rq);
      this.#inflight--;
      rq.done(VIRTIO_BLK_S_IOERR);
    }
    for (const rq of this.#pending.splice(0)) rq.done(VIRTIO_BLK_S_IOERR);
  }

  // ---- The promise API ----

  #checkRange(fn: string, sector: number, count: number): void {
    if (!Number.isSafeInteger(sector) || sector < 0) throw new RangeError(`VirtioBlk.${fn}: Expected a non-negative integer for sector but received ${String(sector)}`);
    if (!Number.isSafeInteger(count) || count < 1) throw new RangeError(`VirtioBlk.${fn}: Expected a positive integer for count but received ${String(count)}`);
  }

  /** One request, as a promise of its status, with `bytes` of data pages when the type has data. */
  #request(type: number, sector: number, page: Page | null, bytes: number): { rq: VirtblkRequest | null; status: Promise<number> } {
    const out: { rq: VirtblkRequest | null; status: Promise<number> } = { rq: null, status: Promise.resolve(0) };
    out.status = new Promise((resolve) => {
      let data: Scatterlist | null = null;
      if (page !== null) {
        const table: Scatterlist[] = [];
        sg_init_table(table, 1);
        data = table[0]!;
        sg_set_page(data, page, bytes, 0);
      }
      out.rq = { type, sector, data, done: resolve };
      this.submit(out.rq);
    });
    return out;
  }

  #allocData(bytes: number): Page {
    const page = this.#m.alloc_pages(GFP_KERNEL, get_order(bytes));
    if (page === null) throw errnoError('ENOMEM', 'virtio_blk', `no ${bytes} bytes of pages for a request`);
    return page;
  }

  /** Runs one chunk: data pages allocated, the request, the pages freed (unless the ring still holds them). */
  async #chunk(fn: string, type: number, sector: number, bytes: number, fill: ((b: Buffer) => void) | null, take: ((b: Buffer) => void) | null): Promise<void> {
    const page = bytes > 0 ? this.#allocData(bytes) : null;
    const order = get_order(Math.max(bytes, 1));
    if (page !== null && fill !== null) fill(this.#m.view(this.#m.page_address(page), bytes));
    const req = this.#request(type, sector, page, bytes);
    const status = await req.status;
    // Failed early (the device gave up) but still in the ring: the pages go at remove().
    const held = page !== null && req.rq !== null && this.#orphaned.has(req.rq);
    try {
      const code = statusErrno(status);
      if (code !== null) throw errnoError(code, 'virtio_blk', `${fn} at sector ${sector}: device status ${status}${this.#broken !== null ? ` (${this.#broken})` : ''}`);
      if (page !== null && take !== null) take(this.#m.view(this.#m.page_address(page), bytes));
    } finally {
      if (page !== null && !held) this.#m.__free_pages(page, order);
      else if (page !== null) this.#heldPages.push([page, order]);
    }
  }

  readonly #heldPages: [Page, number][] = [];
  /** Requests failed while their buffers stay with the ring (until remove() detaches them). */
  readonly #orphaned = new WeakSet<VirtblkRequest>();

  /** Reads `count` sectors from `sector`. Rejects with EIO (IOERR, beyond the disk, a broken queue). */
  async read(sector: number, count: number): Promise<Uint8Array> {
    this.#checkRange('read', sector, count);
    const out = new Uint8Array(count * SECTOR_SIZE);
    const step = this.maxRequestBytes / SECTOR_SIZE;
    const parts: Promise<void>[] = [];
    for (let s = 0; s < count; s += step) {
      const n = Math.min(step, count - s);
      parts.push(this.#chunk('read', VIRTIO_BLK_T_IN, sector + s, n * SECTOR_SIZE, null, (b) => out.set(b, s * SECTOR_SIZE)));
    }
    await settleAll(parts);
    return out;
  }

  /** Writes `data` (a whole number of sectors) at `sector`. Rejects with EIO as read does (also on a read-only disk). */
  async write(sector: number, data: Uint8Array): Promise<void> {
    if (!(data instanceof Uint8Array) || data.length === 0 || data.length % SECTOR_SIZE !== 0) {
      throw new RangeError(`VirtioBlk.write: Expected a Uint8Array of a whole number of ${SECTOR_SIZE}-byte sectors for data but received ${data instanceof Uint8Array ? `${data.length} bytes` : String(data)}`);
    }
    const count = data.length / SECTOR_SIZE;
    this.#checkRange('write', sector, count);
    const step = this.maxRequestBytes / SECTOR_SIZE;
    const parts: Promise<void>[] = [];
    for (let s = 0; s < count; s += step) {
      const n = Math.min(step, count - s);
      parts.push(this.#chunk('write', VIRTIO_BLK_T_OUT, sector + s, n * SECTOR_SIZE, (b) => b.set(data.subarray(s * SECTOR_SIZE, (s + n) * SECTOR_SIZE)), null));
    }
    await settleAll(parts);
  }

  /** VIRTIO_BLK_T_FLUSH (the device fsyncs its file). Without VIRTIO_BLK_F_FLUSH there is nothing to flush. */
  async flush(): Promise<void> {
    if (!virtio_has_feature(this.features, VIRTIO_BLK_F_FLUSH)) return;
    await this.#chunk('flush', VIRTIO_BLK_T_FLUSH, 0, 0, null, null);
  }

  /** virtblk_get_id: the device's serial (VIRTIO_BLK_T_GET_ID, 20 bytes, NUL-padded). */
  async getId(): Promise<string> {
    let id = '';
    await this.#chunk('getId', VIRTIO_BLK_T_GET_ID, 0, VIRTIO_BLK_ID_BYTES, (b) => b.fill(0), (b) => {
      const end = b.indexOf(0);
      id = b.subarray(0, end < 0 ? VIRTIO_BLK_ID_BYTES : end).toString('latin1');
    });
    return id;
  }

  /** seg_max from the config (0 when not offered). */
  get segMax(): number {
    return virtio_has_feature(this.features, VIRTIO_BLK_F_SEG_MAX) ? Number(this.#t.configRead(VIRTIO_BLK_CFG_SEG_MAX, 4)) : 0;
  }

  /**
   * virtblk_remove: resets the device, takes back every buffer the device never used (those
   * requests fail with EIO), frees the queue and the slots. Safe to call twice.
   */
  async remove(): Promise<void> {
    if (this.#removed) return;
    this.#removed = true;
    if (this.#watchdog !== null) clearInterval(this.#watchdog);
    this.#watchdog = null;
    this.#t.reset();
    for (let vbr = virtqueue_detach_unused_buf(this.#vq) as VirtblkReq | null; vbr !== null; vbr = virtqueue_detach_unused_buf(this.#vq) as VirtblkReq | null) {
      if (vbr.orphan) {
        vbr.orphan = false;
        vbr.rq = null;
        continue;
      }
      const rq = vbr.rq;
      vbr.rq = null;
      this.#inflight--;
      rq?.done(VIRTIO_BLK_S_IOERR);
    }
    for (const rq of this.#pending.splice(0)) rq.done(VIRTIO_BLK_S_IOERR);
    // Let the awaiting chunks run their finally (they free their pages) before the queue goes.
    await new Promise<void>((r) => setImmediate(r));
    for (const [page, order] of this.#heldPages.splice(0)) this.#m.__free_pages(page, order);
    this.#t.delVqs();
    this.#freeSlots();
    this.#t.remove?.();
  }

  #freeSlots(): void {
    for (const vbr of this.#slots.splice(0)) kfree(vbr.cpu);
    this.#free.length = 0;
  }
}

/** Promise.all that waits for every part before rejecting with the first error (no page is freed under a running request). */
async function settleAll(parts: Promise<void>[]): Promise<void> {
  const r = await Promise.allSettled(parts);
  for (const x of r) if (x.status === 'rejected') throw x.reason;
}

// ---- On virtio-pci (lib/drivers/virtio_pci_modern.ts) ----

/** The VirtioBlkTransport of a probed virtio-pci device. */
function pciTransport(vdev: VirtioDevice): VirtioBlkTransport {
  return {
    dev: vdev.dev,
    features: vdev.features,
    configRead(offset: number, size: 1 | 2 | 4 | 8): number | bigint {
      if (size === 8) return virtio_cread64(vdev, offset);
      return size === 4 ? virtio_cread32(vdev, offset) : size === 2 ? virtio_cread16(vdev, offset) : virtio_cread8(vdev, offset);
    },
    findVq(name: string, num: number, callback: VqCallback | null, onError: (reason: string) => void): Virtqueue | null {
      const vqs = virtio_find_vqs(vdev, [{ name, callback }], num);
      if (typeof vqs === 'number') return null;
      vdev.config_changed = (d) => {
        if (virtio_needs_reset(d)) onError('the device set DEVICE_NEEDS_RESET');
      };
      virtio_device_ready(vdev);
      return vqs[0] ?? null;
    },
    reset: () => virtio_reset_device(vdev),
    delVqs: () => virtio_del_vqs(vdev),
    needsReset: () => virtio_needs_reset(vdev),
    remove: () => virtio_pci_remove(vdev),
  };
}

/**
 * virtblk_probe on a virtio-pci function (device id 2): negotiates the block features, finds the
 * request queue with interrupts ('msix', 'intx') or none ('poll': completion by polling).
 * @returns the disk, or a negative errno (-ENODEV: not a virtio-blk device or features refused; -ENOMEM).
 * @example const blk = virtio_blk_probe(createPciDevice(machine, { type: virtioBlkType, worker: true, modelOptions: { path } }));
 */
export function virtio_blk_probe(pdev: PciDev, options: { irq?: VirtioIrqMode; num?: number; timeoutMs?: number } = {}): VirtioBlk | number {
  const irq = options.irq ?? 'msix';
  const vdev = virtio_pci_probe(pdev, { features: VIRTIO_BLK_DRIVER_FEATURES, irq });
  if (typeof vdev === 'number') return vdev;
  if (vdev.id.device !== VIRTIO_ID_BLOCK) {
    virtio_pci_remove(vdev);
    return -19; // ENODEV
  }
  const blk = VirtioBlk.probe(pciTransport(vdev), { poll: irq === 'poll', num: options.num ?? 128, ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}) });
  if (blk === null) {
    virtio_pci_remove(vdev);
    return -12; // ENOMEM
  }
  return blk;
}

// ---- A direct wiring: the device model in this thread, its doorbell a function call ----

export interface VirtioBlkDirectOptions extends VirtioBlkOptions {
  /** Features the driver accepts, masked further (default: all it knows). */
  readonly driverFeatures?: bigint;
}

/**
 * A transport with no registers: the device (VirtioBlkDevice over the file) serves the queue at the
 * doorbell, inline, through busMaster(dev); its interrupt runs vring_interrupt. For tests and until
 * the virtio-pci transport is used. `backend` is the device model, `deviceQueue` its VirtQueue.
 */
export function virtio_blk_direct(dev: Device, options: VirtioBlkDirectOptions): VirtioBlkTransport & { readonly backend: VirtioBlkDevice; readonly deviceQueue: VirtQueue | null; destroy(): void } {
  const backend = new VirtioBlkDevice(options);
  const features = backend.hostFeatures & VIRTIO_BLK_DRIVER_FEATURES & (options.driverFeatures ?? VIRTIO_BLK_DRIVER_FEATURES);
  let vq: Virtqueue | null = null;
  let dq: VirtQueue | null = null;
  let live = false;
  const t = {
    dev,
    features,
    backend,
    get deviceQueue(): VirtQueue | null {
      return dq;
    },
    configRead: (offset: number, size: 1 | 2 | 4 | 8) => backend.configRead(offset, size),
    findVq(name: string, num: number, callback: VqCallback | null, onError: (reason: string) => void): Virtqueue | null {
      vq = vring_create_virtqueue(dev, num, () => {
        if (live && dq !== null) backend.handleQueue(dq);
        return true;
      }, name, { eventIdx: virtio_has_feature(features, VIRTIO_RING_F_EVENT_IDX), indirect: virtio_has_feature(features, VIRTIO_RING_F_INDIRECT_DESC), callback });
      if (vq === null) return null;
      const q = vq;
      dq = new VirtQueue(busMaster(dev), {
        size: num, desc: virtqueue_get_desc_addr(q), avail: virtqueue_get_avail_addr(q), used: virtqueue_get_used_addr(q), features,
        onNotify: () => {
          if (live) vring_interrupt(0, q);
        },
        onError: (reason) => onError(reason),
      });
      live = true;
      return q;
    },
    reset(): void {
      live = false;
    },
    delVqs(): void {
      if (vq !== null) vring_del_virtqueue(vq);
      vq = null;
      dq = null;
    },
    destroy(): void {
      live = false;
      backend.destroy();
    },
  };
  return t;
}
