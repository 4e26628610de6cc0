// Managed coherent memory (kernel/dma/mapping.c, dmam_*): allocations a driver does not free
// itself; they are released when the device is (driver unbind), newest first.

import { __GFP_NOWARN, type gfp_t } from '../mm/gfp';
import { checkBigint, checkBox, checkGfp, checkSize } from '../mm/validate';
import { DMA_ATTR_NO_WARN } from './constants';
import { devres_add, devres_destroy, type Device } from './device';
import { dma_alloc_attrs, dma_free_attrs, dma_free_coherent } from './mapping';
import type { Box } from './ops';
import { checkAttrs, checkDevice } from './validate';

/** struct dma_devres: what dmam_release frees. */
interface DmaDevres {
  readonly size: number;
  readonly vaddr: number;
  readonly dma_handle: bigint;
  readonly attrs: number;
}

const devresKind = new WeakSet<object>();

/** dmam_alloc_attrs: dma_alloc_attrs, freed with the device unless dmam_free_coherent comes first. */
export function dmam_alloc_attrs(dev: Device, size: number, dma_handle: Box<bigint>, gfp: gfp_t, attrs: number): number | null {
  const fn = 'dmam_alloc_attrs';
  checkDevice(fn, dev);
  checkSize(fn, 'size', size);
  checkBox(fn, 'dma_handle', dma_handle);
  checkGfp(fn, gfp);
  checkAttrs(fn, attrs);
  const vaddr = dma_alloc_attrs(dev, size, dma_handle, gfp, attrs);
  if (vaddr === null) return null;
  const dr: DmaDevres = Object.freeze({ size, vaddr, dma_handle: dma_handle.value, attrs });
  devresKind.add(dr);
  devres_add(dev, dr, () => dma_free_attrs(dev, dr.size, dr.vaddr, dr.dma_handle, dr.attrs));
  return vaddr;
}

/** dmam_alloc_coherent: dmam_alloc_attrs with DMA_ATTR_NO_WARN when gfp has __GFP_NOWARN. */
export function dmam_alloc_coherent(dev: Device, size: number, dma_handle: Box<bigint>, gfp: gfp_t): number | null {
  checkGfp('dmam_alloc_coherent', gfp);
  return dmam_alloc_attrs(dev, size, dma_handle, gfp, gfp & __GFP_NOWARN ? DMA_ATTR_NO_WARN : 0);
}

/**
 * dmam_free_coherent: forgets the managed allocation at `vaddr` (a WARN when there is none, or when
 * its size or handle differ) and frees it now.
 */
export function dmam_free_coherent(dev: Device, size: number, vaddr: number, dma_handle: bigint): void {
  const fn = 'dmam_free_coherent';
  checkDevice(fn, dev);
  checkSize(fn, 'size', size);
  checkSize(fn, 'vaddr', vaddr);
  checkBigint(fn, 'dma_handle', dma_handle);
  let mismatch = false;
  const ret = devres_destroy(dev, (res) => {
    if (typeof res !== 'object' || res === null || !devresKind.has(res)) return false;
    const dr = res as DmaDevres;
    if (dr.vaddr !== vaddr) return false;
    mismatch = dr.size !== size || dr.dma_handle !== dma_handle;
    return true;
  });
  if (ret !== 0) dev.machine.warn(`WARNING: kernel/dma/mapping.c: dmam_free_coherent: ${dev.name} has no managed allocation at 0x${vaddr.toString(16)}`);
  else if (mismatch) dev.machine.warn(`WARNING: kernel/dma/mapping.c: dmam_match: ${dev.name}: the allocation at 0x${vaddr.toString(16)} was made with another size or handle`);
  dma_free_coherent(dev, size, vaddr, dma_handle);
}
