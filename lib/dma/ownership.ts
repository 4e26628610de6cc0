// Streaming-DMA buffer ownership (Documentation/core-api/dma-api-howto.rst): between dma_map_* or
// dma_sync_*_for_device and dma_unmap_* or dma_sync_*_for_cpu the device owns a buffer, and the
// CPU must not touch it; in between the CPU owns it, and the device must not. The kernel's DMA-API
// debug checks only the calls. Here, with a device's `ownership` option:
//   - a CPU write while the device owns the buffer is found at the next sync_for_cpu or unmap, by
//     comparing the buffer with a copy taken when the device got it (which byte changed is named);
//   - a device access to lines the CPU owns is recorded by the bus engine (the per-line owner
//     counts live in the cache table, lib/dma/cache_layout.ts) and reported here.
// On a coherent device a legitimate device write changes the CPU's bytes too, so there the CPU
// check covers DMA_TO_DEVICE mappings only; on a non-coherent device the device writes RAM, and
// every direction is checked.

import { cpuBytes, dma_cache, dma_cache_if_any } from './cache';
import { DMA_TO_DEVICE, dma_direction_name } from './constants';
import type { DmaDebugEntry } from './debug_entries';
import type { DmaDebugError } from './debug';
import { debugOf, use_dma_iommu, type Device } from './device';
import { iommu_iova_to_phys } from './iommu';
import type { Machine } from '../mm/machine';

/** Report checks (numbered after the kernel's). */
export const CHECK_CPU_WROTE_DEVICE_OWNED = 40;
export const CHECK_DEVICE_TOUCHED_CPU_OWNED = 41;

interface Owned {
  /** The CPU's bytes when the device got the buffer (null: not checked for CPU writes). */
  copy: Uint8Array | null;
}

/** Entries the device owns now. */
const deviceOwned = new WeakMap<DmaDebugEntry, Owned>();

/**
 * Copies given back after their compare, by size, for the next map of that size: a fresh 64 KiB
 * allocation per map cost ten times the copy itself (and garbage collection). Bounded in bytes.
 */
const spareCopies = new Map<number, Uint8Array[]>();
const SPARE_BYTES_MAX = 16 << 20;
let spareBytes = 0;

function copyOf(bytes: Uint8Array): Uint8Array {
  const spare = spareCopies.get(bytes.length)?.pop();
  if (spare === undefined) return new Uint8Array(bytes); // a copy (a Buffer's slice() would be a view)
  spareBytes -= spare.length;
  spare.set(bytes);
  return spare;
}

/** Bytes held in spare copies now (for tests: the pool stays bounded and is used). */
export function ownershipSpareBytes(): number {
  return spareBytes;
}

function giveBack(copy: Uint8Array): void {
  if (spareBytes + copy.length > SPARE_BYTES_MAX) return;
  let list = spareCopies.get(copy.length);
  if (list === undefined) spareCopies.set(copy.length, (list = []));
  list.push(copy);
  spareBytes += copy.length;
}

const hex = (v: bigint | number): string => `0x${v.toString(16)}`;

function checking(dev: Device): boolean {
  return dev.ownership !== 'off' && debugOf(dev).enabled;
}

/** Calls fn for each physical piece of [dev_addr, +size) as the device reaches it (per page through an IOMMU). */
function eachDevicePiece(dev: Device, dev_addr: bigint, size: number, fn: (phys: number, len: number) => void): void {
  if (!use_dma_iommu(dev)) {
    fn(Number(dev_addr - dev.busOffset), size);
    return;
  }
  let at = Number(dev_addr);
  const end = at + size;
  while (at < end) {
    const len = Math.min(end - at, 4096 - (at % 4096));
    const phys = iommu_iova_to_phys(dev, BigInt(at));
    if (phys !== 0n) fn(Number(phys), len);
    at += len;
  }
}

/** The owner counts the bus checks: +1 while the device owns the entry. */
function ownLines(dev: Device, e: DmaDebugEntry, delta: 1 | -1): void {
  const cache = dma_cache(dev.machine);
  eachDevicePiece(dev, e.dev_addr, e.size, (phys, len) => cache.own(phys, len, delta));
}


/** After map, and after sync_for_device: the device owns the entries holding [dev_addr, +size). */
export function dma_owner_to_device(dev: Device, dev_addr: bigint, size: number): void {
  if (!checking(dev)) return;
  dma_owner_report_device_accesses(dev.machine);
  for (const e of debugOf(dev).entriesHolding(dev, dev_addr, size)) {
    // Streaming buffers only: a coherent allocation has no paddr (and is never synced).
    if (e.paddr === null || deviceOwned.has(e)) continue;
    const checkCpu = !dev.dma_coherent || e.direction === DMA_TO_DEVICE;
    const now = checkCpu ? cpuBytes(dev.machine, Number(e.paddr), e.size) : null;
    deviceOwned.set(e, { copy: now === null ? null : copyOf(now) });
    ownLines(dev, e, 1);
  }
}

/**
 * Before sync_for_cpu and unmap (and free): the CPU gets the entries back. A CPU write made while
 * the device owned one is reported (check 40); the error to throw once the operation is done
 * (ownership 'strict', or strict debug) is returned.
 */
export function dma_owner_to_cpu(dev: Device, dev_addr: bigint, size: number, call: string): DmaDebugError | null {
  if (!checking(dev)) return null;
  let error: DmaDebugError | null = dma_owner_report_device_accesses(dev.machine);
  for (const e of debugOf(dev).entriesHolding(dev, dev_addr, size)) {
    const owned = deviceOwned.get(e);
    if (owned === undefined) continue;
    deviceOwned.delete(e);
    ownLines(dev, e, -1);
    if (owned.copy === null) continue;
    const now = cpuBytes(dev.machine, Number(e.paddr), e.size);
    const at = now === null ? -1 : firstDifference(owned.copy, now);
    if (at < 0) {
      giveBack(owned.copy);
      continue;
    }
    const err = debugOf(dev).ownershipReport(CHECK_CPU_WROTE_DEVICE_OWNED, dev, e,
      `CPU wrote to memory the device owns [device address=${hex(e.dev_addr)}] [size=${e.size} bytes] ` +
      `[first changed byte at offset ${at}: 0x${owned.copy[at]!.toString(16)} -> 0x${now![at]!.toString(16)}] ` +
      `[mapped ${dma_direction_name(e.direction)}], between the device getting it (map or sync_for_device) and ${call}`,
      dev.ownership === 'strict');
    giveBack(owned.copy);
    error ??= err;
  }
  return error;
}

/** Index of the first byte where a and b differ, or -1. */
function firstDifference(a: Uint8Array, b: Uint8Array): number {
  if (Buffer.compare(a, b) === 0) return -1;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}

/**
 * Reports the device accesses to CPU-owned lines the bus recorded since the last call (check 41),
 * naming the mapping that holds the address when there is one. Never throws: the device's side of
 * a violation is data (the bus refused the access in strict mode). Returns null.
 */
export function dma_owner_report_device_accesses(machine: Machine): null {
  const cache = dma_cache_if_any(machine);
  if (cache === null) return null;
  const { records, lost } = cache.drainViolations();
  for (const r of records) {
    const dev = cache.requesterDevice(r.requester) as Device | null;
    if (dev === null || dev.machine.isDestroyed || !checking(dev)) continue;
    const addr = BigInt(r.addr);
    const e = debugOf(dev).entriesHolding(dev, addr, r.length)[0];
    const where = e === undefined ? '' : ` [mapping at ${hex(e.dev_addr)} size=${e.size} ${dma_direction_name(e.direction)}]`;
    debugOf(dev).ownershipReport(CHECK_DEVICE_TOUCHED_CPU_OWNED, dev, e,
      `device ${r.write ? 'write to' : 'read from'} memory the CPU owns [device address=${hex(addr)}] [size=${r.length} bytes]` +
      `${where}${r.refused ? ' (refused by the bus)' : ''}: after sync_for_cpu or unmap, before sync_for_device`, false);
  }
  if (lost > 0) machine.warn(`DMA-API: ${lost} more device accesses to CPU-owned memory were not kept (the bus records the last 64)`);
  return null;
}
