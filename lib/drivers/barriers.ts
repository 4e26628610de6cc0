// Memory barriers (asm/barrier.h): mb, rmb, wmb, dma_rmb, dma_wmb, smp_mb. JavaScript has no fence
// instruction, but a sequentially consistent read-modify-write on shared memory is one: V8 emits a
// LOCK-prefixed instruction (a full fence on x86) and orders no access across it.

const fenceWord = new Int32Array(new SharedArrayBuffer(4));

/** A full barrier: every load and store before it is globally visible before any after it. */
export function mb(): void {
  Atomics.add(fenceWord, 0, 0);
}
/** Orders loads (a status read before the data it guards). */
export function rmb(): void {
  Atomics.add(fenceWord, 0, 0);
}
/** Orders stores (descriptor writes before the doorbell). */
export function wmb(): void {
  Atomics.add(fenceWord, 0, 0);
}
/** Orders reads of coherent DMA memory (dma_rmb). */
export function dma_rmb(): void {
  Atomics.add(fenceWord, 0, 0);
}
/** Orders writes to coherent DMA memory before the device may see a later one (dma_wmb). */
export function dma_wmb(): void {
  Atomics.add(fenceWord, 0, 0);
}
/** smp_mb: the same full barrier. */
export function smp_mb(): void {
  Atomics.add(fenceWord, 0, 0);
}
