// virtio-net as a loopback (QEMU's hw/net/virtio-net.c with its peer wired back to itself): every
// frame the driver puts on the TX queue (1), its 12-byte virtio_net_hdr included, is received on
// the RX queue (0). Backpressure, as a real link: while no RX buffer is free the TX chains stay in
// the TX ring (not popped), and the next RX doorbell resumes the transfer.

import type { DeviceType } from '../model';
import { virtio_pci_device, type VirtioBackend, type VirtioTransport } from './virtio_pci';
import type { VirtQueue } from './virtqueue';

/** The virtio device id of a network card. */
export const VIRTIO_ID_NET = 1;
/** Feature bits (include/uapi/linux/virtio_net.h). */
export const VIRTIO_NET_F_MTU = 3;
export const VIRTIO_NET_F_MAC = 5;
export const VIRTIO_NET_F_STATUS = 16;
/** virtio_net_config: mac[6] at 0, status le16 at 6, max_virtqueue_pairs le16 at 8, mtu le16 at 10. */
export const VIRTIO_NET_CONFIG_MAC = 0;
export const VIRTIO_NET_CONFIG_STATUS = 6;
export const VIRTIO_NET_CONFIG_MTU = 10;
export const VIRTIO_NET_CONFIG_SIZE = 12;
export const VIRTIO_NET_S_LINK_UP = 1;
/** sizeof(struct virtio_net_hdr_v1) without MRG_RXBUF's use: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, num_buffers. */
export const VIRTIO_NET_HDR_LEN = 12;
/** Offset of num_buffers in the header (the device writes 1: no mergeable buffers). */
export const VIRTIO_NET_HDR_NUM_BUFFERS = 10;
/** The queues. */
export const VIRTIO_NET_RX = 0;
export const VIRTIO_NET_TX = 1;
/** The default MAC (locally administered) and MTU. */
export const VIRTIO_NET_DEFAULT_MAC = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56] as const;
export const VIRTIO_NET_DEFAULT_MTU = 1500;
/** Queue size offered. */
export const VIRTIO_NET_QUEUE_MAX = 256;
/** Largest frame the device takes from TX (header + 64 KiB): a longer chain breaks the TX queue. */
export const VIRTIO_NET_MAX_FRAME = VIRTIO_NET_HDR_LEN + 65535;

/** Counters in the device (readable by tests through the model's log, and on the instance inline). */
export interface VirtioNetCounters {
  txPackets: number;
  rxPackets: number;
  /** Frames longer than the RX buffer they got: that RX buffer is given back with length 0, the frame dropped. */
  rxLengthErrors: number;
}

class VirtioNetLoopback implements VirtioBackend {
  readonly #t: VirtioTransport;
  readonly counters: VirtioNetCounters = { txPackets: 0, rxPackets: 0, rxLengthErrors: 0 };
  #frame = new Uint8Array(2048);
  #busy = false;

  constructor(t: VirtioTransport) {
    this.#t = t;
    const o = t.ctx.options;
    const mac = Array.isArray(o.mac) && o.mac.length === 6 ? (o.mac as number[]) : VIRTIO_NET_DEFAULT_MAC;
    mac.forEach((b, i) => t.config.setUint8(VIRTIO_NET_CONFIG_MAC + i, b & 0xff));
    t.config.setUint16(VIRTIO_NET_CONFIG_STATUS, VIRTIO_NET_S_LINK_UP, true);
    t.config.setUint16(VIRTIO_NET_CONFIG_MTU, VIRTIO_NET_DEFAULT_MTU, true);
  }

  handleOutput(): void {
    // A doorbell on either queue: TX has frames, or RX got buffers a blocked TX waits for.
    this.#flushTx();
  }

  ready(): void {
    this.#flushTx();
  }

  reset(): void {
    this.#busy = false;
  }

  /** virtio_net_flush_tx against our own receive path, with notification suppression on TX. */
  #flushTx(): void {
    if (this.#busy) return;
    const t = this.#t;
    const tx = t.queue(VIRTIO_NET_TX);
    const rx = t.queue(VIRTIO_NET_RX);
    if (tx === null || rx === null) return;
    this.#busy = true;
    try {
      for (;;) {
        tx.setNotification(false);
        const blocked = this.#drain(tx, rx);
        if (tx.broken || rx.broken) return;
        if (blocked) return; // TX doorbells stay off: the RX doorbell after a refill resumes us
        tx.setNotification(true);
        if (tx.isEmpty()) return;
      }
    } finally {
      this.#busy = false;
    }
  }

  /** Moves frames TX -> RX until TX is empty (false) or RX has no buffer (true). */
  #drain(tx: VirtQueue, rx: VirtQueue): boolean {
    let moved = 0;
    let blocked = false;
    for (;;) {
      if (tx.isEmpty()) break;
      if (rx.isEmpty()) {
        blocked = !rx.broken;
        break;
      }
      const e = tx.pop();
      if (e === null) break;
      const n = e.outBytes;
      if (n < VIRTIO_NET_HDR_LEN || n > VIRTIO_NET_MAX_FRAME) {
        tx.markBroken(`virtio-net: TX chain of ${n} bytes (header ${VIRTIO_NET_HDR_LEN}, at most ${VIRTIO_NET_MAX_FRAME})`);
        break;
      }
      if (this.#frame.length < n) this.#frame = new Uint8Array(Math.max(n, this.#frame.length * 2));
      const frame = this.#frame;
      if (tx.readOut(e, 0, frame, 0, n) !== n) break;
      tx.push(e.index, 0);
      this.counters.txPackets++;
      const r = rx.pop();
      if (r === null) break;
      // Without VIRTIO_NET_F_MRG_RXBUF a frame takes one buffer: num_buffers is 1.
      frame[VIRTIO_NET_HDR_NUM_BUFFERS] = 1;
      frame[VIRTIO_NET_HDR_NUM_BUFFERS + 1] = 0;
      if (r.inBytes < n) {
        this.counters.rxLengthErrors++;
        rx.push(r.index, 0);
      } else {
        if (rx.writeIn(r, 0, frame, 0, n) !== n) break;
        rx.push(r.index, n);
        this.counters.rxPackets++;
      }
      moved++;
    }
    if (moved > 0) {
      rx.notify();
      tx.notify();
    }
    return blocked;
  }
}

/**
 * The virtio-net loopback device type: PCI 1af4:1041 rev 1, class Ethernet (0x020000), queues RX 0
 * and TX 1 of up to 256 entries, features MAC, STATUS, MTU. Model options: `mac` (6 numbers).
 */
export const virtio_net: DeviceType = virtio_pci_device({
  name: 'virtio-net',
  deviceId: VIRTIO_ID_NET,
  classCode: 0x020000,
  numQueues: 2,
  queueMax: VIRTIO_NET_QUEUE_MAX,
  features: (1n << BigInt(VIRTIO_NET_F_MAC)) | (1n << BigInt(VIRTIO_NET_F_STATUS)) | (1n << BigInt(VIRTIO_NET_F_MTU)),
  configSize: VIRTIO_NET_CONFIG_SIZE,
  create: (t) => new VirtioNetLoopback(t),
});
