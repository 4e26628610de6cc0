// Argument checks for the kernel-named API (lib/mm and lib/dma): every public entry point runs these
// before any side effect. Messages follow lib/os/validate.ts ("Expected X for Y but received Z of
// type T"), prefixed with the function's name. Each check is a typeof test first: no allocation
// unless it throws, so hot paths stay cheap.

import { describeValue } from '../os/validate';

export { describeValue };

function expected(fn: string, what: string, name: string, value: unknown): string {
  return `${fn}: Expected ${what} for ${name} but received ${describeValue(value)}`;
}

/**
 * An integer number in [min, max]: not a number is a TypeError (a string '4096' too), a number
 * outside the range or not a safe integer a RangeError. The pass test is all the function does,
 * so that V8 inlines it; the message is built in failInt.
 * @example checkInt('dma_map_page_attrs', 'size', size, 0)
 */
export function checkInt(fn: string, name: string, value: unknown, min = 0, max = Number.MAX_SAFE_INTEGER): asserts value is number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) failInt(fn, name, value, min, max);
}

function failInt(fn: string, name: string, value: unknown, min: number, max: number): never {
  const what = max === Number.MAX_SAFE_INTEGER
    ? (min === 0 ? 'a non-negative integer' : `an integer of at least ${min}`)
    : `an integer from ${min} to ${max}`;
  if (typeof value !== 'number') throw new TypeError(expected(fn, what, name, value));
  throw new RangeError(expected(fn, what, name, value));
}

/** A size_t-like byte count: a non-negative safe integer. */
export function checkSize(fn: string, name: string, value: unknown): asserts value is number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) failInt(fn, name, value, 0, Number.MAX_SAFE_INTEGER);
}

/** A bigint (dma_addr_t, phys_addr_t, a mask): anything else is a TypeError, never a SyntaxError from BigInt(). */
export function checkBigint(fn: string, name: string, value: unknown): asserts value is bigint {
  if (typeof value !== 'bigint') failType(fn, 'a bigint', name, value);
}

function failType(fn: string, what: string, name: string, value: unknown): never {
  throw new TypeError(expected(fn, what, name, value));
}

/** A boolean. */
export function checkBool(fn: string, name: string, value: unknown): asserts value is boolean {
  if (typeof value !== 'boolean') throw new TypeError(expected(fn, 'a boolean', name, value));
}

/** A string. */
export function checkString(fn: string, name: string, value: unknown): asserts value is string {
  if (typeof value !== 'string') throw new TypeError(expected(fn, 'a string', name, value));
}

/**
 * A kernel out-parameter: a `{ value }` box the callee can write. Checked before anything is
 * allocated, so a bad box can never leave an allocation behind.
 * @example checkBox('dma_alloc_pages', 'dma_handle', handle)
 */
export function checkBox(fn: string, name: string, value: unknown): asserts value is { value: unknown } {
  if (typeof value !== 'object' || value === null || Array.isArray(value) || Object.isFrozen(value)) failType(fn, 'a writable { value } box', name, value);
}

/** Every __GFP_* bit of Linux 6.17 (bits 0..23) except bit 9, the retired __GFP_ATOMIC. */
export const GFP_KNOWN_BITS = 0xffffff & ~(1 << 9);

/**
 * gfp_t: an integer number made of known __GFP_* bits. undefined, 'GFP_KERNEL' or unknown bits
 * are a TypeError (in C they would not compile or would trip a VM_WARN in the allocator).
 */
export function checkGfp(fn: string, value: unknown): asserts value is number {
  if (typeof value !== 'number' || !(value >= 0 && value <= 0xffffff) || (value & ~GFP_KNOWN_BITS) !== 0 || !Number.isInteger(value)) failGfp(fn, value);
}

function failGfp(fn: string, value: unknown): never {
  if (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0) {
    const unknown = value > 0xffffff ? 'above bit 23' : `0x${((value & ~GFP_KNOWN_BITS) >>> 0).toString(16)}`;
    throw new TypeError(`${fn}: unknown gfp bits ${unknown} in 0x${value.toString(16)} (known: the __GFP_* bits of Linux 6.17)`);
  }
  throw new TypeError(expected(fn, 'gfp flags (a number made of __GFP_* bits)', 'gfp', value));
}

/** Levenshtein distance, for "did you mean". */
function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cur = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1]!.toLowerCase() === b[j - 1]!.toLowerCase() ? 0 : 1));
      prev = cur;
    }
  }
  return row[b.length]!;
}

/** The valid key closest to `key` (by edit distance, ties by order). */
export function closestKey(key: string, valid: readonly string[]): string {
  let best = valid[0] ?? '';
  let bestD = Infinity;
  for (const v of valid) {
    const d = distance(key, v);
    if (d < bestD) {
      best = v;
      bestD = d;
    }
  }
  return best;
}

/**
 * An options object: undefined (defaults) or a plain object whose own keys are all in `valid`.
 * An unknown key (a typo) is a TypeError naming the closest valid key.
 * @example checkOptions('MachineOptions', { ramPerNod: 1 }, KEYS) // TypeError: ... did you mean ramPerNode?
 */
export function checkOptions<T extends object>(what: string, value: T | undefined, valid: readonly string[]): Partial<T> {
  if (value === undefined) return {};
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new TypeError(`Expected an object for ${what} but received ${describeValue(value)}`);
  }
  for (const key of Object.keys(value)) {
    if (!valid.includes(key)) {
      throw new TypeError(`Unknown option '${key}' in ${what}: did you mean ${closestKey(key, valid)}? (valid: ${valid.join(', ')})`);
    }
  }
  return value;
}

/** An optional field: undefined passes, anything else must satisfy `check`. */
export function optional<V>(value: V | undefined, check: (v: unknown) => void): void {
  if (value !== undefined) check(value);
}

/** The name of whatever object carries a `name` (a Machine), for cross-machine messages. */
export function nameOf(obj: unknown): string {
  const n = (obj as { name?: unknown } | null)?.name;
  return typeof n === 'string' ? `'${n}'` : 'an unknown machine';
}

/**
 * Objects carry their machine: refuse one of another machine with a TypeError naming both.
 * @example checkSameMachine('dma_map_page_attrs', 'page', page.machine, dev.machine)
 */
export function checkSameMachine(fn: string, what: string, theirs: unknown, ours: unknown): void {
  if (theirs === ours) return;
  const same = nameOf(theirs) === nameOf(ours) ? ' (another machine of the same name)' : '';
  throw new TypeError(`${fn}: the ${what} belongs to machine ${nameOf(theirs)}${same}, not to machine ${nameOf(ours)}`);
}
