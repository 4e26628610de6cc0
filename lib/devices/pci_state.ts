// The shared control page of a PCI device: Int32 words both the driver side and the device side
// (same thread or a worker) read with Atomics -- liveness, the INTx level and MSI pending bits,
// the interrupt and fault sequence numbers, refused accesses, and the posted-write / read ring.

/** 1 while the device answers; 0 once it was removed or died (reads give all-ones). */
export const W_ALIVE = 0;
/** Bumped by the device side at every interrupt change or IOMMU fault; the driver side waits on it. */
export const W_IRQ_SEQ = 1;
/** The INTx level (0 or 1). */
export const W_INTX_LEVEL = 2;
/** MSI/MSI-X messages sent and not yet delivered: one bit per vector. */
export const W_MSI_PENDING = 3;
/** Interrupt mode chosen by the driver: 0 INTx, 1 MSI, 2 MSI-X. */
export const W_IRQ_MODE = 4;
/** Bumped by the device side after it recorded an IOMMU fault (the fault interrupt). */
export const W_FAULT_SEQ = 5;
/** The device thread's identity (pid, tid, start time), for the driver to see it die. */
export const W_PEER_PID = 6;
export const W_PEER_TID = 7;
export const W_PEER_START = 8;
/** 1 while the device thread sleeps waiting for ring entries (the driver must wake it). */
export const W_DEV_SLEEP = 9;
/** Ring entries the device has completed (a read's answer is in W_RESP_* when this passes it). */
export const W_RING_HEAD = 10;
/** Ring entries the driver has queued. */
export const W_RING_TAIL = 11;
/** The answer of the last completed read: low and high 32 bits. */
export const W_RESP_LO = 12;
export const W_RESP_HI = 13;
/** 1 while the driver thread sleeps waiting for W_RING_HEAD. */
export const W_DRV_SLEEP = 14;
/** Set by the driver side to stop the device thread. */
export const W_STOP = 15;
/** Refused or out-of-range register accesses: count, last offset, last (bar << 16 | size << 1 | write). */
export const W_BAD_COUNT = 16;
export const W_BAD_OFFSET = 17;
export const W_BAD_WHAT = 18;
/** Bus mastering enabled (PCI_COMMAND_MASTER, pci_set_master). */
export const W_BUS_MASTER = 19;
/** DMA-API debug of a worker device: accesses it made, logged for the driver side to check (see ACC_*). */
export const W_ACC_TAIL = 20;
export const W_ACC_HEAD = 21;
/** Accesses the log had no room for (counted, reported). */
export const W_ACC_LOST = 22;
/**
 * 1 while the driver side sleeps on W_IRQ_SEQ (in the kernel); 0 while it polls it. An interrupt
 * wakes the driver side (a futex wake, a system call) only when this is 1.
 */
export const W_IRQ_SLEEP = 23;
/** First word of the ring. */
export const W_RING = 64;
/** Ring entries (a power of two): 4 words each, kind | bar << 4 | size << 8, offset, low, high. */
export const RING_SLOTS = 256;
export const RING_WORDS = 4;
/** Ring entry kinds. */
export const OP_WRITE = 1;
export const OP_READ = 2;
/** The access log (after the ring): entries of 4 words, address low, address high, length, write. */
export const W_ACC = W_RING + RING_SLOTS * RING_WORDS;
export const ACC_SLOTS = 128;
export const ACC_WORDS = 4;
/** Bytes of the control page. */
export const CONTROL_BYTES = 8192;

/** Records a refused or out-of-range access. */
export function recordBadAccess(w: Int32Array, bar: number, offset: number, size: number, write: boolean): void {
  w[W_BAD_OFFSET] = offset;
  w[W_BAD_WHAT] = (bar << 16) | (size << 1) | (write ? 1 : 0);
  Atomics.add(w, W_BAD_COUNT, 1);
}

/** Device side: logs one access for the driver side's DMA-API debug check; true when the log was empty (wake the driver). */
export function logAccess(w: Int32Array, addr: number, length: number, write: boolean): boolean {
  const tail = w[W_ACC_TAIL]!;
  const head = Atomics.load(w, W_ACC_HEAD);
  if (((tail - head) | 0) >= ACC_SLOTS) {
    Atomics.add(w, W_ACC_LOST, 1);
    return false;
  }
  const s = W_ACC + (tail & (ACC_SLOTS - 1)) * ACC_WORDS;
  w[s] = addr % 0x1_0000_0000 | 0;
  w[s + 1] = Math.floor(addr / 0x1_0000_0000) | 0;
  w[s + 2] = length | 0;
  w[s + 3] = write ? 1 : 0;
  Atomics.store(w, W_ACC_TAIL, (tail + 1) | 0);
  return tail === head;
}

/** Driver side: every logged access, oldest first, handed to `check`; returns how many were lost. */
export function drainAccesses(w: Int32Array, check: (addr: number, length: number, write: boolean) => void): number {
  let head = w[W_ACC_HEAD]!;
  const tail = Atomics.load(w, W_ACC_TAIL);
  while (head !== tail) {
    const s = W_ACC + (head & (ACC_SLOTS - 1)) * ACC_WORDS;
    check((w[s]! >>> 0) + (w[s + 1]! >>> 0) * 0x1_0000_0000, w[s + 2]! >>> 0, w[s + 3] === 1);
    head = (head + 1) | 0;
  }
  Atomics.store(w, W_ACC_HEAD, head);
  return Atomics.exchange(w, W_ACC_LOST, 0);
}
