// Interrupts (kernel/irq/manage.c, drivers/pci/msi): request_irq / free_irq, shared level-triggered
// INTx (a handler returns IRQ_NONE when it was not its device), MSI and MSI-X vectors from
// pci_alloc_irq_vectors, disable_irq / enable_irq. Handlers run on the driver's event loop, one at
// a time, never inside a register access; after free_irq or device teardown none runs.

import { livePciDevices, type PciDev } from '../devices/pci_dev';
import { W_INTX_LEVEL, W_IRQ_MODE, W_MSI_PENDING } from '../devices/pci_state';

export const IRQ_NONE = 0;
export const IRQ_HANDLED = 1;
export const IRQ_WAKE_THREAD = 2;
export type irqreturn_t = number;
/** request_irq flags (include/linux/interrupt.h). */
export const IRQF_SHARED = 0x80;
export const IRQF_ONESHOT = 0x2000;
export const IRQF_NO_AUTOEN = 0x80000;
/** pci_alloc_irq_vectors flags. */
export const PCI_IRQ_INTX = 1 << 0;
export const PCI_IRQ_LEGACY = PCI_IRQ_INTX;
export const PCI_IRQ_MSI = 1 << 1;
export const PCI_IRQ_MSIX = 1 << 2;
export const PCI_IRQ_AFFINITY = 1 << 3;
export const PCI_IRQ_ALL_TYPES = PCI_IRQ_INTX | PCI_IRQ_MSI | PCI_IRQ_MSIX;
const EINVAL = 22;
const EBUSY = 16;
const ENOSPC = 28;
/** Rounds of a still-asserted level line before delivery yields to the loop. */
const LEVEL_ROUNDS = 16;

export type irq_handler_t = (irq: number, dev_id: unknown) => irqreturn_t;

interface IrqAction { handler: irq_handler_t; flags: number; name: string; dev_id: unknown }

interface IrqDesc {
  readonly irq: number;
  /** For an MSI/MSI-X vector: its device and vector index; null for an INTx line. */
  readonly msi: { pdev: PciDev; vector: number } | null;
  actions: IrqAction[];
  depth: number;
  /** An MSI message that came while the vector was disabled (replayed by enable_irq). */
  pending: boolean;
  unhandled: number;
  /** Handler calls so far (tests and /proc/interrupts). */
  count: number;
}

const descs = new Map<number, IrqDesc>();
const msiVectors = new WeakMap<PciDev, number[]>();
let nextMsiIrq = 1024;

function warnOf(pdev: PciDev | undefined, text: string): void {
  if (pdev !== undefined && !pdev.dev.machine.isDestroyed) pdev.dev.machine.warn(text);
  else process.emitWarning(text);
}

/** The live devices wired to an INTx line. */
function intxSources(irq: number): PciDev[] {
  return livePciDevices().filter((p) => p.irq === irq);
}

function descOf(irq: number): IrqDesc | null {
  const d = descs.get(irq);
  if (d !== undefined) return d;
  const sources = intxSources(irq);
  if (sources.length === 0) return null;
  const nd: IrqDesc = { irq, msi: null, actions: [], depth: 0, pending: false, unhandled: 0, count: 0 };
  descs.set(irq, nd);
  for (const p of sources) attach(p);
  return nd;
}

/** Makes the device deliver its interrupts here. */
function attach(pdev: PciDev): void {
  if (pdev.interruptSink === deliver) return;
  pdev.interruptSink = deliver;
  pdev.teardownHooks.push(() => {
    for (const irq of msiVectors.get(pdev) ?? []) descs.delete(irq);
    msiVectors.delete(pdev);
  });
  pdev.requestDelivery();
}

function runActions(desc: IrqDesc, pdev: PciDev): irqreturn_t {
  let ret = IRQ_NONE;
  for (const a of [...desc.actions]) {
    if (!desc.actions.includes(a)) continue; // freed by an earlier handler of this round
    desc.count++;
    try {
      ret |= a.handler(desc.irq, a.dev_id);
    } catch (err) {
      warnOf(pdev, `irq ${desc.irq}: handler ${a.name} threw: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  return ret;
}

/** An INTx line: while any live device on it asserts it, run its handlers. */
function handleLevel(desc: IrqDesc, kicker: PciDev): void {
  for (let round = 0; round < LEVEL_ROUNDS; round++) {
    if (desc.depth > 0 || desc.actions.length === 0) return;
    const on = intxSources(desc.irq).filter((p) => p.alive && Atomics.load(p.controlWords, W_IRQ_MODE) === 0 && Atomics.load(p.controlWords, W_INTX_LEVEL) === 1);
    if (on.length === 0) return;
    if ((runActions(desc, on[0]!) & (IRQ_HANDLED | IRQ_WAKE_THREAD)) === 0) {
      // Nobody claimed it: note_interrupt's "nobody cared", once; the line is left as it is.
      if (desc.unhandled++ === 0) warnOf(kicker, `irq ${desc.irq}: nobody cared (no handler returned IRQ_HANDLED)`);
      return;
    }
    // The handlers' acknowledgements are posted writes: let them land before sampling the level again.
    for (const p of on) p.flushPosted();
  }
  kicker.requestDelivery();
}

/** The devices' interrupt sink: their words changed (called on the event loop). */
function deliver(pdev: PciDev): void {
  if (!pdev.alive) return;
  const w = pdev.controlWords;
  if (Atomics.load(w, W_IRQ_MODE) === 0) {
    const d = descs.get(pdev.irq);
    if (d !== undefined) handleLevel(d, pdev);
    return;
  }
  let bits = Atomics.exchange(w, W_MSI_PENDING, 0);
  const vectors = msiVectors.get(pdev) ?? [];
  for (let v = 0; bits !== 0; v++, bits >>>= 1) {
    if ((bits & 1) === 0) continue;
    const d = descs.get(vectors[v] ?? -1);
    if (d === undefined || d.actions.length === 0) continue; // a message to a vector nobody requested is lost
    if (d.depth > 0) {
      d.pending = true;
      continue;
    }
    runActions(d, pdev);
  }
}

function checkPdev(fn: string, pdev: unknown): PciDev {
  if (typeof pdev !== 'object' || pdev === null || !('controlWords' in pdev)) throw new TypeError(`${fn}: Expected a pci_dev but received ${String(pdev)}`);
  return pdev as PciDev;
}

function checkIrq(fn: string, irq: unknown): number {
  if (typeof irq !== 'number' || !Number.isInteger(irq) || irq < 0) throw new TypeError(`${fn}: Expected a non-negative integer irq number but received ${String(irq)}`);
  return irq;
}

/**
 * pci_alloc_irq_vectors: between min_vecs and max_vecs vectors of the first kind `flags` allows
 * that the device supports (MSI-X, then MSI, then INTx), or -ENOSPC. Returns how many.
 */
export function pci_alloc_irq_vectors(pdev: PciDev, min_vecs: number, max_vecs: number, flags: number): number {
  checkPdev('pci_alloc_irq_vectors', pdev);
  for (const [n, v] of [['min_vecs', min_vecs], ['max_vecs', max_vecs], ['flags', flags]] as const) {
    if (!Number.isInteger(v) || v < 0) throw new TypeError(`pci_alloc_irq_vectors: Expected a non-negative integer for ${n} but received ${String(v)}`);
  }
  if (max_vecs < min_vecs || min_vecs < 1) return -EINVAL;
  if (msiVectors.has(pdev)) return -EINVAL; // already enabled
  const w = pdev.controlWords;
  let mode = -1;
  let n = 0;
  if ((flags & PCI_IRQ_MSIX) !== 0 && pdev.msixVectors >= min_vecs) {
    mode = 2;
    n = Math.min(max_vecs, pdev.msixVectors, 32);
  } else if ((flags & PCI_IRQ_MSI) !== 0 && pdev.msiVectors >= min_vecs) {
    mode = 1;
    n = Math.min(max_vecs, pdev.msiVectors, 32);
    while ((n & (n - 1)) !== 0) n--; // MSI grants a power of two
    if (n < min_vecs) mode = -1;
  }
  if (mode < 0) {
    if ((flags & PCI_IRQ_INTX) === 0 || min_vecs > 1) return -ENOSPC;
    Atomics.store(w, W_IRQ_MODE, 0);
    msiVectors.set(pdev, []);
    attach(pdev);
    return 1;
  }
  const irqs: number[] = [];
  for (let i = 0; i < n; i++) {
    const irq = nextMsiIrq++;
    irqs.push(irq);
    descs.set(irq, { irq, msi: { pdev, vector: i }, actions: [], depth: 0, pending: false, unhandled: 0, count: 0 });
  }
  msiVectors.set(pdev, irqs);
  Atomics.store(w, W_MSI_PENDING, 0);
  Atomics.store(w, W_IRQ_MODE, mode);
  attach(pdev);
  return n;
}

/** pci_irq_vector: the Linux irq number of vector `nr` (INTx: pdev->irq), or -EINVAL. */
export function pci_irq_vector(pdev: PciDev, nr: number): number {
  checkPdev('pci_irq_vector', pdev);
  const irqs = msiVectors.get(pdev);
  if (irqs === undefined || irqs.length === 0) return nr === 0 ? pdev.irq : -EINVAL;
  return irqs[nr] ?? -EINVAL;
}

/** pci_free_irq_vectors: back to INTx. Vectors with handlers still requested are a bug (warned). */
export function pci_free_irq_vectors(pdev: PciDev): void {
  checkPdev('pci_free_irq_vectors', pdev);
  for (const irq of msiVectors.get(pdev) ?? []) {
    const d = descs.get(irq);
    if (d !== undefined && d.actions.length > 0) warnOf(pdev, `WARNING: drivers/pci/msi: free_msi_irqs: irq ${irq} still has handler ${d.actions[0]!.name}`);
    descs.delete(irq);
  }
  msiVectors.delete(pdev);
  if (pdev.alive) Atomics.store(pdev.controlWords, W_IRQ_MODE, 0);
}

/**
 * request_irq: adds `handler` to interrupt `irq`. 0, or -EINVAL (no such interrupt, no handler,
 * IRQF_SHARED without dev_id) or -EBUSY (in use by a handler that does not share).
 */
export function request_irq(irq: number, handler: irq_handler_t, flags: number, name: string, dev_id: unknown): number {
  checkIrq('request_irq', irq);
  if (typeof handler !== 'function') return -EINVAL;
  if (!Number.isInteger(flags) || flags < 0) throw new TypeError(`request_irq: Expected non-negative integer flags but received ${String(flags)}`);
  if (typeof name !== 'string') throw new TypeError(`request_irq: Expected a string for name but received ${String(name)}`);
  if ((flags & IRQF_SHARED) !== 0 && (dev_id === null || dev_id === undefined)) return -EINVAL;
  const desc = descOf(irq);
  if (desc === null) return -EINVAL;
  if (desc.actions.length > 0 && ((flags & IRQF_SHARED) === 0 || desc.actions.some((a) => (a.flags & IRQF_SHARED) === 0))) return -EBUSY;
  desc.actions.push({ handler, flags, name, dev_id });
  if ((flags & IRQF_NO_AUTOEN) !== 0 && desc.actions.length === 1) desc.depth++;
  if (desc.msi !== null) desc.msi.pdev.requestDelivery();
  else for (const p of intxSources(irq)) { attach(p); p.requestDelivery(); }
  return 0;
}

/** free_irq: removes the handler registered with `dev_id`; returns its name, or null (warned) when there is none. */
export function free_irq(irq: number, dev_id: unknown): string | null {
  checkIrq('free_irq', irq);
  const desc = descs.get(irq);
  const i = desc === undefined ? -1 : desc.actions.findIndex((a) => a.dev_id === dev_id);
  if (desc === undefined || i < 0) {
    warnOf(desc?.msi?.pdev ?? intxSources(irq)[0], `WARNING: kernel/irq/manage.c: Trying to free already-free IRQ ${irq}`);
    return null;
  }
  const [a] = desc.actions.splice(i, 1);
  return a!.name;
}

function liveDesc(fn: string, irq: number): IrqDesc | null {
  checkIrq(fn, irq);
  return descs.get(irq) ?? null;
}

/** disable_irq: no handler of `irq` runs until the matching enable_irq (nested). */
export function disable_irq(irq: number): void {
  const d = liveDesc('disable_irq', irq);
  if (d !== null) d.depth++;
}

/** disable_irq_nosync: the same here (handlers never run concurrently with the caller). */
export function disable_irq_nosync(irq: number): void {
  disable_irq(irq);
}

/** enable_irq: undoes one disable_irq; a level still asserted, or an MSI that came meanwhile, is delivered. */
export function enable_irq(irq: number): void {
  const d = liveDesc('enable_irq', irq);
  if (d === null) return;
  if (d.depth === 0) {
    warnOf(d.msi?.pdev ?? intxSources(irq)[0], `WARNING: kernel/irq/manage.c: Unbalanced enable for IRQ ${irq}`);
    return;
  }
  if (--d.depth > 0) return;
  if (d.msi !== null) {
    const p = d.msi.pdev;
    if (d.pending && p.alive) {
      d.pending = false;
      Atomics.or(p.controlWords, W_MSI_PENDING, 1 << d.msi.vector);
    }
    p.requestDelivery();
  } else {
    for (const p of intxSources(irq)) p.requestDelivery();
  }
}

/** How many times handlers of `irq` were called (a column of /proc/interrupts). */
export function irq_count(irq: number): number {
  return descs.get(checkIrq('irq_count', irq))?.count ?? 0;
}
