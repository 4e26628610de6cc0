// A virtio-net driver in the shape of Linux's drivers/net/virtio_net.c (one queue pair, no
// offloads, no mergeable buffers): start_xmit puts header + frame in one page and adds it with
// virtqueue_add_outbuf (the ring maps it with the DMA API), the RX ring is refilled with page-sized
// buffers by virtqueue_add_inbuf, and a NAPI-like poll takes what arrived and re-enables the
// interrupt with virtqueue_enable_cb_prepare / virtqueue_poll. Interrupt-driven (MSI-X or INTx) or
// polled. VirtioNet on top is the small API: send, sendBatch, receive, onPacket, close.

import type { PciDev } from '../devices/pci_dev';
import type { Page } from '../mm/page';
import { GFP_ATOMIC, GFP_KERNEL, PAGE_SIZE } from '../mm/gfp';
import { type Scatterlist, sg_init_table, sg_set_page } from '../dma/scatterlist';
import {
  VIRTIO_NET_CONFIG_MAC, VIRTIO_NET_CONFIG_MTU, VIRTIO_NET_CONFIG_STATUS, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MTU,
  VIRTIO_NET_F_STATUS, VIRTIO_NET_HDR_LEN, VIRTIO_NET_RX, VIRTIO_NET_S_LINK_UP, VIRTIO_NET_TX,
} from '../devices/virtio/virtio_net';
import {
  type VirtioDevice, virtio_cread16, virtio_cread_bytes, virtio_del_vqs, virtio_device_ready, virtio_find_vqs,
  virtio_has_feature, virtio_needs_reset, virtio_reset_device,
} from './virtio';
import { type VirtioIrqMode, virtio_pci_probe, virtio_pci_remove } from './virtio_pci_modern';
import {
  type Virtqueue, virtqueue_add_inbuf, virtqueue_add_outbuf, virtqueue_detach_unused_buf, virtqueue_disable_cb,
  virtqueue_enable_cb_prepare, virtqueue_get_buf, virtqueue_get_vring_size, virtqueue_is_broken, virtqueue_kick,
  virtqueue_poll,
} from './virtio_ring';

/** Ethernet header bytes: a shorter frame is a length error (virtio_net.c's "short packet"). */
export const ETH_HLEN = 14;
/** Largest frame send() takes: a page less the header. */
export const VIRTIO_NET_MAX_SEND = PAGE_SIZE - VIRTIO_NET_HDR_LEN;
/** NAPI's default budget. */
export const NAPI_POLL_WEIGHT = 64;

/** The features this driver asks for beyond the transport's. */
export const VIRTNET_FEATURES = (1n << BigInt(VIRTIO_NET_F_MAC)) | (1n << BigInt(VIRTIO_NET_F_STATUS)) | (1n << BigInt(VIRTIO_NET_F_MTU));

export interface VirtioNetOptions {
  /** 'msix' (default), 'intx' or 'poll' (no interrupts: receive() and poll() look at the used ring). */
  irq?: VirtioIrqMode;
  /** Cap on both queue sizes (a power of two; default: what the device offers). */
  queueSize?: number;
  /** Transport features to leave out (e.g. 1n << 29n: no EVENT_IDX). */
  without?: bigint;
}

/** What the driver counted (struct virtnet_stats). */
export interface VirtioNetStats {
  txPackets: number;
  txBytes: number;
  /** send() found the TX ring full (NETDEV_TX_BUSY). */
  txBusy: number;
  rxPackets: number;
  rxBytes: number;
  /** Frames shorter than header + Ethernet header (the device gives 0 for a frame its buffer could not hold). */
  rxLengthErrors: number;
  /** RX and configuration interrupts taken, NAPI polls run. */
  rxInterrupts: number;
  configInterrupts: number;
  napiPolls: number;
}

/** The error probe throws: `errno` is the negative errno a kernel probe would return. */
export class VirtioNetError extends Error {
  override readonly name = 'VirtioNetError';
  readonly errno: number;
  constructor(message: string, errno: number) {
    super(message);
    this.errno = errno;
  }
}

/** One page-sized buffer of a ring, with the scatterlist entry it is added through. */
interface Slot {
  readonly page: Page;
  readonly view: Uint8Array;
  readonly sg: Scatterlist;
}

/**
 * struct virtnet_info with the netdev operations as methods.
 * @example
 * const net = VirtioNet.probe(pdev, { irq: 'msix' });
 * net.onPacket((data) => console.log(data.length));
 * net.send(frame);
 * net.close();
 */
export class VirtioNet {
  readonly vdev: VirtioDevice;
  readonly mac: Uint8Array;
  readonly mtu: number;
  readonly stats: VirtioNetStats = {
    txPackets: 0, txBytes: 0, txBusy: 0, rxPackets: 0, rxBytes: 0, rxLengthErrors: 0, rxInterrupts: 0, configInterrupts: 0, napiPolls: 0,
  };
  readonly #rvq: Virtqueue;
  readonly #svq: Virtqueue;
  readonly #irq: VirtioIrqMode;
  readonly #rx: Slot[] = [];
  readonly #tx: Slot[] = [];
  readonly #rxFree: number[] = [];
  readonly #txFree: number[] = [];
  readonly #received: Uint8Array[] = [];
  #onPacket: ((data: Uint8Array, hdr: Uint8Array) => void) | null = null;
  #napiScheduled = false;
  #closed = false;

  /**
   * virtnet_probe: the virtio-pci function, features, queues (RX 0, TX 1), the RX ring filled,
   * DRIVER_OK. @throws VirtioNetError with the errno when the device cannot be driven.
   */
  static probe(pdev: PciDev, options: VirtioNetOptions = {}): VirtioNet {
    return new VirtioNet(pdev, options);
  }

  private constructor(pdev: PciDev, options: VirtioNetOptions) {
    this.#irq = options.irq ?? 'msix';
    const vdev = virtio_pci_probe(pdev, { features: VIRTNET_FEATURES, irq: this.#irq, ...(options.without !== undefined ? { without: options.without } : {}) });
    if (typeof vdev === 'number') throw new VirtioNetError(`virtio_net: probe of ${pdev.dev.name} failed (${vdev})`, vdev);
    this.vdev = vdev;
    const fail = (msg: string, errno: number): never => {
      this.#teardown();
      throw new VirtioNetError(`virtio_net: ${pdev.dev.name}: ${msg}`, errno);
    };
    this.mac = virtio_has_feature(vdev, VIRTIO_NET_F_MAC)
      ? virtio_cread_bytes(vdev, VIRTIO_NET_CONFIG_MAC, 6)
      : Uint8Array.of(0x02, 0, 0, 0, 0, 1); // eth_hw_addr_random, deterministically
    this.mtu = virtio_has_feature(vdev, VIRTIO_NET_F_MTU) ? virtio_cread16(vdev, VIRTIO_NET_CONFIG_MTU) : 1500;
    vdev.config_changed = () => { this.stats.configInterrupts++; };
    const vqs = virtio_find_vqs(vdev, [
      { name: 'input.0', callback: (vq) => this.#skb_recv_done(vq) },
      // TX completions are reclaimed at the next send or poll (free_old_xmit): no TX interrupt.
      { name: 'output.0', callback: null },
    ], options.queueSize);
    if (typeof vqs === 'number') {
      virtio_pci_remove(vdev);
      throw new VirtioNetError(`virtio_net: ${pdev.dev.name}: find_vqs failed (${vqs})`, vqs);
    }
    this.#rvq = vqs[VIRTIO_NET_RX]!;
    this.#svq = vqs[VIRTIO_NET_TX]!;
    const m = vdev.dev.machine;
    for (const [ring, free, n] of [[this.#rx, this.#rxFree, virtqueue_get_vring_size(this.#rvq)], [this.#tx, this.#txFree, virtqueue_get_vring_size(this.#svq)]] as const) {
      for (let i = 0; i < n; i++) {
        const page = m.alloc_pages(GFP_KERNEL, 0);
        if (page === null) fail('out of memory for ring buffers', -12);
        const sg: Scatterlist[] = [];
        sg_init_table(sg, 1);
        const b = m.view(m.page_address(page!), PAGE_SIZE);
        // A plain Uint8Array over the page: its slice() copies (a Buffer's would alias the page).
        ring.push({ page: page!, view: new Uint8Array(b.buffer, b.byteOffset, PAGE_SIZE), sg: sg[0]! });
        free.push(i);
      }
    }
    this.#try_fill_recv();
    virtio_device_ready(vdev);
  }

  /** The device asked for a reset (a broken ring): nothing moves any more until a new probe. */
  get broken(): boolean {
    return this.#closed || this.vdev.broken || virtqueue_is_broken(this.#rvq) || virtqueue_is_broken(this.#svq);
  }

  /** VIRTIO_NET_S_LINK_UP from the device configuration (up when STATUS was not negotiated). */
  get linkUp(): boolean {
    if (!virtio_has_feature(this.vdev, VIRTIO_NET_F_STATUS)) return true;
    return (virtio_cread16(this.vdev, VIRTIO_NET_CONFIG_STATUS) & VIRTIO_NET_S_LINK_UP) !== 0;
  }

  /** The RX queue and the TX queue (for tests and benchmarks). */
  get rvq(): Virtqueue {
    return this.#rvq;
  }

  get svq(): Virtqueue {
    return this.#svq;
  }

  #checkOpen(fn: string): void {
    if (this.#closed) throw new Error(`VirtioNet.${fn}: the device was closed`);
  }

  /** try_fill_recv: every free RX page back in the ring, one kick. */
  #try_fill_recv(): void {
    const vq = this.#rvq;
    let added = 0;
    while (this.#rxFree.length > 0 && vq.num_free > 0) {
      const i = this.#rxFree.pop()!;
      const s = this.#rx[i]!;
      sg_set_page(s.sg, s.page, PAGE_SIZE, 0);
      if (virtqueue_add_inbuf(vq, s.sg, 1, i, GFP_ATOMIC) !== 0) {
        this.#rxFree.push(i);
        break;
      }
      added++;
    }
    if (added > 0) virtqueue_kick(vq);
  }

  /** free_old_xmit: TX buffers the device is done with go back to the pool. */
  #free_old_xmit(): void {
    const vq = this.#svq;
    for (let t = virtqueue_get_buf(vq, null); t !== null; t = virtqueue_get_buf(vq, null)) this.#txFree.push(t as number);
  }

  /** The body of start_xmit without the kick: false when the ring is full. */
  #xmit_one(packet: Uint8Array): boolean {
    if (!(packet instanceof Uint8Array)) throw new TypeError(`VirtioNet.send: Expected a Uint8Array for packet but received ${String(packet)}`);
    if (packet.length > VIRTIO_NET_MAX_SEND) throw new RangeError(`VirtioNet.send: Expected a frame of at most ${VIRTIO_NET_MAX_SEND} bytes but received ${packet.length}`);
    if (this.#txFree.length === 0) this.#free_old_xmit();
    const i = this.#txFree.pop();
    if (i === undefined) {
      this.stats.txBusy++;
      return false;
    }
    const s = this.#tx[i]!;
    // The header in the headroom (can_push): no offloads, all zero.
    s.view.fill(0, 0, VIRTIO_NET_HDR_LEN);
    s.view.set(packet, VIRTIO_NET_HDR_LEN);
    sg_set_page(s.sg, s.page, VIRTIO_NET_HDR_LEN + packet.length, 0);
    if (virtqueue_add_outbuf(this.#svq, s.sg, 1, i, GFP_ATOMIC) !== 0) {
      this.#txFree.push(i);
      this.stats.txBusy++;
      return false;
    }
    this.stats.txPackets++;
    this.stats.txBytes += packet.length;
    return true;
  }

  /** start_xmit: queues one frame (without the virtio header) and kicks. False when the TX ring is full or broken. */
  send(packet: Uint8Array): boolean {
    this.#checkOpen('send');
    const ok = this.#xmit_one(packet);
    if (ok) virtqueue_kick(this.#svq);
    return ok;
  }

  /** start_xmit with xmit_more: queues frames in order until the ring is full, one kick. @returns how many were queued. */
  sendBatch(packets: readonly Uint8Array[]): number {
    this.#checkOpen('sendBatch');
    let n = 0;
    while (n < packets.length && this.#xmit_one(packets[n]!)) n++;
    if (n > 0) virtqueue_kick(this.#svq);
    return n;
  }

  /** receive_buf: one used RX buffer of `len` bytes (header included) to the stack. */
  #receive_buf(i: number, len: number): void {
    if (len < VIRTIO_NET_HDR_LEN + ETH_HLEN) {
      this.stats.rxLengthErrors++;
      return;
    }
    const v = this.#rx[i]!.view;
    const data = v.slice(VIRTIO_NET_HDR_LEN, len);
    this.stats.rxPackets++;
    this.stats.rxBytes += data.length;
    if (this.#onPacket !== null) this.#onPacket(data, v.slice(0, VIRTIO_NET_HDR_LEN));
    else this.#received.push(data);
  }

  /**
   * virtnet_receive + TX reclaim: up to `budget` received frames handed on (onPacket or the receive
   * queue), the RX ring refilled. @returns frames taken.
   */
  poll(budget = NAPI_POLL_WEIGHT): number {
    if (this.#closed) return 0;
    this.stats.napiPolls++;
    const vq = this.#rvq;
    const len = { value: 0 };
    let n = 0;
    while (n < budget) {
      const t = virtqueue_get_buf(vq, len);
      if (t === null) break;
      this.#rxFree.push(t as number);
      this.#receive_buf(t as number, len.value);
      n++;
      if (this.#closed) return n; // an onPacket handler closed us
    }
    if (this.#rxFree.length > 0) this.#try_fill_recv();
    this.#free_old_xmit();
    return n;
  }

  /** skb_recv_done: the RX interrupt. No more until the poll has drained the ring. */
  #skb_recv_done(vq: Virtqueue): void {
    this.stats.rxInterrupts++;
    virtqueue_disable_cb(vq);
    this.#napi_schedule();
  }

  #napi_schedule(): void {
    if (this.#napiScheduled || this.#closed) return;
    this.#napiScheduled = true;
    setImmediate(() => {
      this.#napiScheduled = false;
      if (this.#closed) return;
      const done = this.poll(NAPI_POLL_WEIGHT);
      if (this.#closed) return;
      if (done >= NAPI_POLL_WEIGHT) {
        this.#napi_schedule();
        return;
      }
      // virtqueue_napi_complete: re-enable; if buffers came meanwhile, go round again.
      const opaque = virtqueue_enable_cb_prepare(this.#rvq);
      if (virtqueue_poll(this.#rvq, opaque)) {
        virtqueue_disable_cb(this.#rvq);
        this.#napi_schedule();
      }
    });
  }

  /** The next received frame (without the virtio header), or null. Polled mode looks at the used ring first. */
  receive(): Uint8Array | null {
    this.#checkOpen('receive');
    if (this.#received.length === 0 && this.#irq === 'poll') this.poll(NAPI_POLL_WEIGHT);
    return this.#received.shift() ?? null;
  }

  /** Frames go to `cb` (data, then the 12-byte header the device wrote) instead of the receive queue; null undoes it. */
  onPacket(cb: ((data: Uint8Array, hdr: Uint8Array) => void) | null): void {
    if (cb !== null && typeof cb !== 'function') throw new TypeError(`VirtioNet.onPacket: Expected a function or null but received ${String(cb)}`);
    this.#onPacket = cb;
  }

  /** Whether the device set DEVICE_NEEDS_RESET (reads the status register). */
  needsReset(): boolean {
    return virtio_needs_reset(this.vdev);
  }

  #teardown(): void {
    const vdev = this.vdev;
    const m = vdev.dev.machine;
    if (!m.isDestroyed && vdev.pdev.alive) virtio_reset_device(vdev);
    // free_unused_bufs: every buffer the device still held comes back (unmapped by the ring).
    for (const vq of vdev.vqs) while (virtqueue_detach_unused_buf(vq) !== null) { /* the page stays in its pool */ }
    virtio_del_vqs(vdev);
    virtio_pci_remove(vdev);
    if (!m.isDestroyed) for (const s of [...this.#rx, ...this.#tx]) m.__free_pages(s.page, 0);
    this.#rx.length = 0;
    this.#tx.length = 0;
  }

  /** virtnet_remove: reset, unused buffers detached, queues and interrupts freed, pages freed. A second call does nothing. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#received.length = 0;
    this.#teardown();
  }
}
