// Wait and wake on 32-bit words of a Region (shared futexes, so across threads and processes):
// argument checks, the blocking and asynchronous waits, and the waits a Region cancels at close().

import { native } from '../native';
import { DmamemError } from './errors';
import * as v from './validate';

/** What a wait ends with, as Atomics.wait says it. */
export type WaitResult = 'ok' | 'not-equal' | 'timed-out';

/** Options of Region.waitAsync. */
export interface WaitAsyncOptions {
  /** Aborting it rejects the promise with the signal's reason and frees the waiter at once. */
  signal?: AbortSignal;
}

const RESULTS: readonly WaitResult[] = ['ok', 'not-equal', 'timed-out'];

/** Checks a word offset: an integer in [0, length - 4] and a multiple of 4 (futex words are aligned). */
export function checkWordOffset(offset: unknown, length: number): number {
  v.assertInteger('offset', offset, 0, Math.max(0, length - 4));
  if (length < 4) throw new RangeError(`Expected an offset of a 32-bit word inside the region for offset but the region has only ${length} bytes`);
  if (offset % 4 !== 0) throw new RangeError(`Expected a multiple of 4 (a 32-bit word) for offset but received ${v.describeValue(offset)}`);
  return offset;
}

/** The expected value as the kernel compares it: an int32 or uint32 number, as a uint32. */
export function checkExpected(expected: unknown): number {
  if (typeof expected !== 'number') throw new TypeError(`Expected an integer between -2147483648 and 4294967295 for expected but received ${v.describeValue(expected)}`);
  if (!Number.isInteger(expected) || expected < -0x80000000 || expected > 0xffffffff) {
    throw new RangeError(`Expected an integer between -2147483648 and 4294967295 for expected but received ${v.describeValue(expected)}`);
  }
  return expected >>> 0;
}

/** Milliseconds (default Infinity) as the native layer's nanoseconds, -1 for no limit. */
export function checkTimeout(timeoutMs: unknown): number {
  if (timeoutMs === undefined || timeoutMs === Infinity) return -1;
  if (typeof timeoutMs !== 'number') throw new TypeError(`Expected a non-negative number of milliseconds or Infinity for timeoutMs but received ${v.describeValue(timeoutMs)}`);
  if (Number.isNaN(timeoutMs) || timeoutMs < 0) throw new RangeError(`Expected a non-negative number of milliseconds or Infinity for timeoutMs but received ${v.describeValue(timeoutMs)}`);
  // Beyond ~104 days the nanoseconds stop being exact doubles: treat such waits as unlimited.
  const ns = Math.round(timeoutMs * 1e6);
  return ns > Number.MAX_SAFE_INTEGER ? -1 : ns;
}

/** How many waiters to wake (default all): a non-negative integer or Infinity. */
export function checkCount(count: unknown): number {
  if (count === undefined || count === Infinity) return 0x7fffffff;
  v.assertInteger('count', count);
  return Math.min(count, 0x7fffffff);
}

/** Blocks on the word at `address` while it holds `expected`. */
export function waitBlocking(address: number, expected: number, timeoutNs: number): WaitResult {
  const r = native.futexWait(address, expected, timeoutNs);
  // undefined: this worker is being terminated and no JS will see the result.
  return RESULTS[r] ?? 'timed-out';
}

/** Regions with waits pending: a pending wait keeps its Region (and so its mapping) alive. */
const waiting = new Set<object>();

/**
 * The asynchronous waits pending on one Region: close() rejects them all with ERR_DMAMEM_CLOSED
 * (each waiter has its own cancel word, so no other waiter on the same word sees a wake).
 */
export class PendingWaits {
  readonly #owner: object;
  /** id -> why it was cancelled (null while pending). */
  readonly #waits = new Map<number, { reason: unknown }>();

  constructor(owner: object) {
    this.#owner = owner;
  }

  /** Starts an asynchronous wait on the word at `address`. */
  wait(address: number, expected: number, timeoutNs: number, signal: AbortSignal | undefined): Promise<WaitResult> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    const [id, settled] = native.futexWaitAsync(address, expected, timeoutNs);
    const entry = { reason: null as unknown };
    this.#waits.set(id, entry);
    waiting.add(this.#owner);
    const onAbort = (): void => {
      entry.reason = signal!.reason;
      native.futexCancel(id);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    return settled.then(
      (r) => {
        this.#done(id);
        signal?.removeEventListener('abort', onAbort);
        if (r === 'cancelled') throw entry.reason;
        return r;
      },
      (err: unknown) => {
        this.#done(id);
        signal?.removeEventListener('abort', onAbort);
        throw err;
      },
    );
  }

  #done(id: number): void {
    this.#waits.delete(id);
    if (this.#waits.size === 0) waiting.delete(this.#owner);
  }

  /** How many waits are pending. */
  get size(): number {
    return this.#waits.size;
  }

  /** Cancels every pending wait: each rejects with ERR_DMAMEM_CLOSED (before the memory goes). */
  cancelAll(address: number): void {
    for (const [id, entry] of this.#waits) {
      entry.reason = new DmamemError('ERR_DMAMEM_CLOSED', `the region at 0x${address.toString(16)} was closed while waitAsync was pending`);
      native.futexCancel(id);
    }
  }
}
