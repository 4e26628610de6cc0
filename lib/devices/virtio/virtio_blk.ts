// The virtio-blk device's request handling (QEMU's hw/block/virtio-blk.c, synchronous): one request
// queue whose chains are { type, reserved, sector } + data + a status byte, served from a real file
// with fs.readSync / fs.writeSync / fs.fsyncSync, so what a driver writes is in the file. It reaches
// guest memory only through its VirtQueue (the bus engine). A bad request gets IOERR; a chain with no
// writable status byte breaks the queue (virtio_error). Nothing here throws on ring data.

import * as fs from 'node:fs';
import * as path from 'node:path';
import type { DeviceType } from '../model';
import type { VirtQueue, VirtQueueElement } from './virtqueue';
import { virtio_pci_device, type VirtioBackend, type VirtioTransport } from './virtio_pci';
import { VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC, VIRTIO_F_ACCESS_PLATFORM } from './virtio_ring_layout';

// ---- include/uapi/linux/virtio_blk.h (shared with lib/drivers/virtio_blk.ts) ----

/** The virtio device ID of a block device (PCI device ID 0x1040 + 2 on a modern transport). */
export const VIRTIO_ID_BLOCK = 2;

/** Feature bits (bit numbers). */
export const VIRTIO_BLK_F_SIZE_MAX = 1;
export const VIRTIO_BLK_F_SEG_MAX = 2;
export const VIRTIO_BLK_F_GEOMETRY = 4;
/** The disk is read-only: every write fails. */
export const VIRTIO_BLK_F_RO = 5;
export const VIRTIO_BLK_F_BLK_SIZE = 6;
/** Cache flush command support (VIRTIO_BLK_T_FLUSH). */
export const VIRTIO_BLK_F_FLUSH = 9;

/** Request types. */
export const VIRTIO_BLK_T_IN = 0;
export const VIRTIO_BLK_T_OUT = 1;
export const VIRTIO_BLK_T_FLUSH = 4;
export const VIRTIO_BLK_T_GET_ID = 8;

/** Status values (the request's last byte). */
export const VIRTIO_BLK_S_OK = 0;
export const VIRTIO_BLK_S_IOERR = 1;
export const VIRTIO_BLK_S_UNSUPP = 2;

/** sizeof(struct virtio_blk_outhdr): { type le32, ioprio le32 (reserved), sector le64 }. */
export const VIRTIO_BLK_OUTHDR_SIZE = 16;
export const VIRTIO_BLK_OUTHDR_TYPE = 0;
export const VIRTIO_BLK_OUTHDR_IOPRIO = 4;
export const VIRTIO_BLK_OUTHDR_SECTOR = 8;
/** The device ID string: NUL-padded, up to 20 bytes (no NUL when it is 20 long). */
export const VIRTIO_BLK_ID_BYTES = 20;
/** Sectors are 512 bytes whatever blk_size says (virtio's unit for `sector` and `capacity`). */
export const SECTOR_SHIFT = 9;
export const SECTOR_SIZE = 512;

/** struct virtio_blk_config offsets: capacity le64, size_max le32, seg_max le32, geometry, blk_size le32. */
export const VIRTIO_BLK_CFG_CAPACITY = 0;
export const VIRTIO_BLK_CFG_SIZE_MAX = 8;
export const VIRTIO_BLK_CFG_SEG_MAX = 12;
export const VIRTIO_BLK_CFG_BLK_SIZE = 20;
/** The bytes of configuration this device exposes (up to and including blk_size). */
export const VIRTIO_BLK_CONFIG_SIZE = 24;

const bit = (b: number): bigint => 1n << BigInt(b);

/** What the device is made from: options a transport passes through (structured-clonable). */
export interface VirtioBlkOptions {
  /** The backing file; opened read-write unless readOnly (or the open for writing is refused). */
  readonly path: string;
  /** Open the file read-only and offer VIRTIO_BLK_F_RO. Default false. */
  readonly readOnly?: boolean;
  /** The GET_ID string (ASCII, at most 20 bytes). Default: the file's base name, cut to 20 bytes. */
  readonly serial?: string;
  /** seg_max: the most data segments one request may have (default 254, QEMU's queue-size - 2 for 256). */
  readonly segMax?: number;
}

function optionError(what: string, v: unknown): TypeError {
  return new TypeError(`virtio-blk: Expected ${what} but received ${String(v)} of type ${typeof v}`);
}

/**
 * The device's bounce buffer between the file and the bus: requests bigger than this move in chunks
 * of it (64 KiB: big enough that the bus and the syscall costs are per chunk, not per byte).
 */
const STAGING_SIZE = 64 * 1024;

/**
 * A virtio-blk disk over a file. Drive it from a VirtQueue with handleQueue(vq) at each doorbell
 * (or through a transport that does); read configRead for capacity. Call destroy() to close the file.
 * @example
 * const blk = new VirtioBlkDevice({ path: '/tmp/disk.img' });
 * const vq = new VirtQueue(bus, { size: 128, desc, avail, used, features, onNotify });
 * blk.handleQueue(vq);          // at each doorbell
 */
export class VirtioBlkDevice {
  /** The file's size in 512-byte sectors (a trailing partial sector is not part of the disk). */
  readonly capacity: number;
  readonly readOnly: boolean;
  readonly serial: string;
  readonly segMax: number;
  /** Features the device offers (the driver acknowledges a subset). */
  readonly hostFeatures: bigint;
  readonly path: string;
  #fd: number;
  readonly #staging = new Uint8Array(STAGING_SIZE);
  readonly #hdr = new Uint8Array(VIRTIO_BLK_OUTHDR_SIZE);
  readonly #hdrView = new DataView(this.#hdr.buffer);
  readonly #status = new Uint8Array(1);
  readonly #id = new Uint8Array(VIRTIO_BLK_ID_BYTES);
  /** Requests served, by outcome (for tests and the log). */
  readonly stats = { requests: 0, ok: 0, ioerr: 0, unsupp: 0, broken: 0 };

  constructor(options: VirtioBlkOptions) {
    if (typeof options !== 'object' || options === null) throw optionError('an options object { path }', options);
    if (typeof options.path !== 'string' || options.path === '') throw optionError('a file path for path', options.path);
    if (options.readOnly !== undefined && typeof options.readOnly !== 'boolean') throw optionError('a boolean for readOnly', options.readOnly);
    if (options.serial !== undefined && (typeof options.serial !== 'string' || Buffer.byteLength(options.serial, 'latin1') > VIRTIO_BLK_ID_BYTES)) {
      throw optionError(`a string of at most ${VIRTIO_BLK_ID_BYTES} bytes for serial`, options.serial);
    }
    const segMax = options.segMax ?? 254;
    if (!Number.isInteger(segMax) || segMax < 1 || segMax > 0xffffffff) throw optionError('a positive integer for segMax', segMax);
    this.path = options.path;
    let readOnly = options.readOnly === true;
    let fd: number;
    if (readOnly) {
      fd = fs.openSync(this.path, 'r');
    } else {
      try {
        fd = fs.openSync(this.path, 'r+');
      } catch (e) {
        // A file we may only read is a read-only disk, as QEMU's auto-read-only.
        const code = (e as NodeJS.ErrnoException).code;
        if (code !== 'EACCES' && code !== 'EROFS' && code !== 'EPERM') throw e;
        fd = fs.openSync(this.path, 'r');
        readOnly = true;
      }
    }
    this.#fd = fd;
    this.readOnly = readOnly;
    this.capacity = Math.floor(fs.fstatSync(fd).size / SECTOR_SIZE);
    this.serial = options.serial ?? path.basename(this.path).slice(0, VIRTIO_BLK_ID_BYTES);
    this.#id.set(Buffer.from(this.serial, 'latin1').subarray(0, VIRTIO_BLK_ID_BYTES));
    this.segMax = segMax;
    this.hostFeatures = bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_F_ACCESS_PLATFORM) | bit(VIRTIO_RING_F_EVENT_IDX) | bit(VIRTIO_RING_F_INDIRECT_DESC)
      | bit(VIRTIO_BLK_F_SEG_MAX) | bit(VIRTIO_BLK_F_BLK_SIZE) | bit(VIRTIO_BLK_F_FLUSH) | (readOnly ? bit(VIRTIO_BLK_F_RO) : 0n);
  }

  /** Whether the file is still open (destroy() closes it). */
  get open(): boolean {
    return this.#fd >= 0;
  }

  /** Closes the file. Safe to call twice; requests after it get IOERR. */
  destroy(): void {
    if (this.#fd < 0) return;
    fs.closeSync(this.#fd);
    this.#fd = -1;
  }

  /**
   * A read of the device configuration (struct virtio_blk_config, little-endian): `size` 1, 2, 4
   * (a number) or 8 (a bigint) bytes at `offset`; zeros past what this device exposes.
   */
  configRead(offset: number, size: number): number | bigint {
    const cfg = new DataView(new ArrayBuffer(VIRTIO_BLK_CONFIG_SIZE + 8));
    cfg.setBigUint64(VIRTIO_BLK_CFG_CAPACITY, BigInt(this.capacity), true);
    cfg.setUint32(VIRTIO_BLK_CFG_SIZE_MAX, 0, true);
    cfg.setUint32(VIRTIO_BLK_CFG_SEG_MAX, this.segMax, true);
    cfg.setUint32(VIRTIO_BLK_CFG_BLK_SIZE, SECTOR_SIZE, true);
    if (!Number.isInteger(offset) || offset < 0 || offset + size > VIRTIO_BLK_CONFIG_SIZE) return size === 8 ? 0n : 0;
    switch (size) {
      case 1: return cfg.getUint8(offset);
      case 2: return cfg.getUint16(offset, true);
      case 4: return cfg.getUint32(offset, true);
      case 8: return cfg.getBigUint64(offset, true);
      default: return 0;
    }
  }

  /** The whole configuration space as bytes (for a transport that keeps it in a BAR). */
  configBytes(): Uint8Array {
    const out = new Uint8Array(VIRTIO_BLK_CONFIG_SIZE);
    const dv = new DataView(out.buffer);
    dv.setBigUint64(VIRTIO_BLK_CFG_CAPACITY, BigInt(this.capacity), true);
    dv.setUint32(VIRTIO_BLK_CFG_SEG_MAX, this.segMax, true);
    dv.setUint32(VIRTIO_BLK_CFG_BLK_SIZE, SECTOR_SIZE, true);
    return out;
  }

  /**
   * virtio_blk_handle_vq: serves every available request, doorbells off meanwhile, then raises the
   * interrupt once if the driver wants one. @returns the requests completed.
   */
  handleQueue(vq: VirtQueue): number {
    let n = 0;
    do {
      vq.setNotification(false);
      for (let e = vq.pop(); e !== null; e = vq.pop()) {
        if (!this.handleRequest(vq, e)) break;
        n++;
      }
      vq.setNotification(true);
    } while (!vq.isEmpty());
    if (n > 0) vq.notify();
    return n;
  }

  /**
   * virtio_blk_handle_request for one popped chain: does the I/O, writes the status byte, pushes the
   * chain (used length: every writable byte, as QEMU reports it). False when the chain cannot be
   * answered (no writable status byte, or a bus error): the queue is broken then.
   */
  handleRequest(vq: VirtQueue, e: VirtQueueElement): boolean {
    this.stats.requests++;
    // The status is the last writable byte; without one there is nothing to answer with.
    if (e.inNum === 0) {
      this.stats.broken++;
      vq.markBroken(e.outNum === 0 ? 'virtio-blk missing headers' : 'virtio-blk request inhdr too short (no device-writable status byte)');
      return false;
    }
    const statusAt = e.inBytes - 1;
    const status = this.#serve(vq, e, statusAt);
    if (status < 0) {
      this.stats.broken++;
      return false; // a bus error broke the queue
    }
    if (status === VIRTIO_BLK_S_OK) this.stats.ok++;
    else if (status === VIRTIO_BLK_S_IOERR) this.stats.ioerr++;
    else this.stats.unsupp++;
    this.#status[0] = status;
    if (vq.writeIn(e, statusAt, this.#status) !== 1) {
      this.stats.broken++;
      return false;
    }
    vq.push(e.index, e.inBytes);
    return true;
  }

  /** The request's status, or -1 when a bus access failed (the queue is broken). */
  #serve(vq: VirtQueue, e: VirtQueueElement, dataIn: number): number {
    if (e.outBytes < VIRTIO_BLK_OUTHDR_SIZE) return VIRTIO_BLK_S_IOERR; // outhdr too short
    if (vq.readOut(e, 0, this.#hdr) !== VIRTIO_BLK_OUTHDR_SIZE) return -1;
    const hv = this.#hdrView;
    const type = hv.getUint32(VIRTIO_BLK_OUTHDR_TYPE, true);
    const sector = hv.getBigUint64(VIRTIO_BLK_OUTHDR_SECTOR, true);
    const dataOut = e.outBytes - VIRTIO_BLK_OUTHDR_SIZE;
    if (this.#fd < 0) return VIRTIO_BLK_S_IOERR;
    switch (type) {
      case VIRTIO_BLK_T_IN:
        // Data is device-writable, nothing readable past the header.
        if (dataOut !== 0) return VIRTIO_BLK_S_IOERR;
        return this.#rangeOk(sector, dataIn) ? this.#read(vq, e, Number(sector) * SECTOR_SIZE, dataIn) : VIRTIO_BLK_S_IOERR;
      case VIRTIO_BLK_T_OUT:
        // Data is device-readable, and the status byte is the only writable one.
        if (dataIn !== 0 || this.readOnly) return VIRTIO_BLK_S_IOERR;
        return this.#rangeOk(sector, dataOut) ? this.#write(vq, e, Number(sector) * SECTOR_SIZE, dataOut) : VIRTIO_BLK_S_IOERR;
      case VIRTIO_BLK_T_FLUSH:
        if (dataOut !== 0 || dataIn !== 0) return VIRTIO_BLK_S_IOERR;
        return this.#flush();
      case VIRTIO_BLK_T_GET_ID: {
        if (dataOut !== 0) return VIRTIO_BLK_S_IOERR;
        const n = Math.min(dataIn, VIRTIO_BLK_ID_BYTES);
        if (n > 0 && vq.writeIn(e, 0, this.#id, 0, n) !== n) return -1;
        return VIRTIO_BLK_S_OK;
      }
      default:
        return VIRTIO_BLK_S_UNSUPP;
    }
  }

  /** virtio_blk_sect_range_ok: whole sectors, all inside the disk. */
  #rangeOk(sector: bigint, bytes: number): boolean {
    if (bytes % SECTOR_SIZE !== 0) return false;
    return sector + BigInt(bytes / SECTOR_SIZE) <= BigInt(this.capacity);
  }

  #read(vq: VirtQueue, e: VirtQueueElement, pos: number, bytes: number): number {
    const buf = this.#staging;
    for (let done = 0; done < bytes;) {
      const n = Math.min(buf.length, bytes - done);
      let got: number;
      try {
        got = fs.readSync(this.#fd, buf, 0, n, pos + done);
      } catch {
        return VIRTIO_BLK_S_IOERR;
      }
      // The file shrank under us: the sectors past its end read as zeros.
      if (got < n) buf.fill(0, got, n);
      if (vq.writeIn(e, done, buf, 0, n) !== n) return -1;
      done += n;
    }
    return VIRTIO_BLK_S_OK;
  }

  #write(vq: VirtQueue, e: VirtQueueElement, pos: number, bytes: number): number {
    const buf = this.#staging;
    for (let done = 0; done < bytes;) {
      const n = Math.min(buf.length, bytes - done);
      if (vq.readOut(e, VIRTIO_BLK_OUTHDR_SIZE + done, buf, 0, n) !== n) return -1;
      try {
        for (let w = 0; w < n;) w += fs.writeSync(this.#fd, buf, w, n - w, pos + done + w);
      } catch {
        return VIRTIO_BLK_S_IOERR;
      }
      done += n;
    }
    return VIRTIO_BLK_S_OK;
  }

  #flush(): number {
    try {
      fs.fsyncSync(this.#fd);
      return VIRTIO_BLK_S_OK;
    } catch {
      return VIRTIO_BLK_S_IOERR;
    }
  }
}

// ---- On the virtio-pci transport ----

/** The device-specific features offered over virtio-pci (the transport adds its own four). */
const BLK_PCI_FEATURES = bit(VIRTIO_BLK_F_SEG_MAX) | bit(VIRTIO_BLK_F_BLK_SIZE) | bit(VIRTIO_BLK_F_FLUSH);
/** PCI_CLASS_STORAGE_SCSI, the class QEMU's virtio-blk-pci reports. */
const PCI_CLASS_STORAGE_SCSI = 0x010000;

/** The virtio-pci backend: options are VirtioBlkOptions (ctx.options), the queue is served at each doorbell. */
function blkBackend(t: VirtioTransport, readOnly: boolean): VirtioBackend {
  const o = t.ctx.options as unknown as VirtioBlkOptions;
  const blk = new VirtioBlkDevice({ ...o, readOnly: readOnly || o.readOnly === true });
  if (blk.readOnly !== readOnly) {
    blk.destroy();
    throw new Error(`virtio-blk: ${blk.path} can only be opened read-only: use the virtio_blk_ro device type`);
  }
  new Uint8Array(t.config.buffer, t.config.byteOffset, t.config.byteLength).set(blk.configBytes());
  return {
    handleOutput(n: number): void {
      const vq = t.queue(n);
      if (n === 0 && vq !== null) blk.handleQueue(vq);
    },
    destroy(): void {
      blk.destroy();
    },
  };
}

/**
 * virtio-blk on virtio-pci (device id 2, PCI 0x1af4:0x1042): options { path, serial?, segMax? }.
 * The file is opened read-write; a file that cannot be is an error at creation (use virtio_blk_ro).
 * @example createPciDevice(machine, { type: { module: require.resolve('dmamem/.../virtio_blk'), export: 'virtio_blk' }, worker: true, modelOptions: { path } })
 */
export const virtio_blk: DeviceType = virtio_pci_device({
  name: 'virtio-blk', deviceId: VIRTIO_ID_BLOCK, classCode: PCI_CLASS_STORAGE_SCSI, numQueues: 1, queueMax: 256,
  features: BLK_PCI_FEATURES, configSize: VIRTIO_BLK_CONFIG_SIZE, create: (t) => blkBackend(t, false),
});

/** virtio-blk over a file opened read-only, offering VIRTIO_BLK_F_RO (the offered features are fixed per type). */
export const virtio_blk_ro: DeviceType = virtio_pci_device({
  name: 'virtio-blk-ro', deviceId: VIRTIO_ID_BLOCK, classCode: PCI_CLASS_STORAGE_SCSI, numQueues: 1, queueMax: 256,
  features: BLK_PCI_FEATURES | bit(VIRTIO_BLK_F_RO), configSize: VIRTIO_BLK_CONFIG_SIZE, create: (t) => blkBackend(t, true),
});
