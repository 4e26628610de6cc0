// Argument checks for the OS layer: every public entry point calls these before any native call,
// so misuse is a TypeError/RangeError with a sharp-style message and never reaches a syscall.

import { native } from '../native';

/** "-1 of type number", "'x' of type string", "null": the tail of every misuse message. */
export function describeValue(value: unknown): string {
  if (value === null) return 'null of type object';
  if (typeof value === 'string') return `'${value}' of type string`;
  if (typeof value === 'bigint') return `${value}n of type bigint`;
  if (typeof value === 'symbol') return `${String(value)} of type symbol`;
  if (typeof value === 'function') return 'a function of type function';
  if (typeof value === 'object') {
    const ctor = (value as { constructor?: { name?: string } }).constructor?.name;
    return `an object${ctor && ctor !== 'Object' ? ` (${ctor})` : ''} of type object`;
  }
  return `${String(value)} of type ${typeof value}`;
}

function expected(what: string, name: string, value: unknown): string {
  return `Expected ${what} for ${name} but received ${describeValue(value)}`;
}

/**
 * Throws unless `value` is an integer in [min, max] (both inclusive). Not a number: TypeError;
 * a number that is not a safe integer or lies outside the range: RangeError.
 * @example assertInteger('offset', offset, 0, region.length)
 */
export function assertInteger(name: string, value: unknown, min = 0, max = Number.MAX_SAFE_INTEGER): asserts value is number {
  if (typeof value === 'number' && Number.isSafeInteger(value) && value >= min && value <= max) return; // hot: view() calls this
  const what =
    min === 0 && max === Number.MAX_SAFE_INTEGER
      ? 'a non-negative integer'
      : max === Number.MAX_SAFE_INTEGER
        ? `an integer of at least ${min}`
        : `an integer between ${min} and ${max}`;
  if (typeof value !== 'number') throw new TypeError(expected(what, name, value));
  throw new RangeError(expected(what, name, value));
}

/**
 * Throws unless `value` is an integer in [1, max].
 * @example assertPositiveInteger('length', -1) // RangeError: Expected a positive integer for length but received -1 of type number
 */
export function assertPositiveInteger(name: string, value: unknown, max = Number.MAX_SAFE_INTEGER): asserts value is number {
  if (typeof value === 'number' && Number.isSafeInteger(value) && value >= 1 && value <= max) return;
  const what = max === Number.MAX_SAFE_INTEGER ? 'a positive integer' : `a positive integer of at most ${max}`;
  if (typeof value !== 'number') throw new TypeError(expected(what, name, value));
  if (!Number.isSafeInteger(value) || value < 1 || value > max) throw new RangeError(expected(what, name, value));
}

/**
 * Throws unless `value` is a non-negative integer multiple of `granule` (default: the page size).
 * @example assertPageAligned('address', 0x7f0000001000)
 */
export function assertPageAligned(name: string, value: unknown, granule: number = native.pageSize): asserts value is number {
  if (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0 && value % granule === 0) return;
  const what = `a non-negative multiple of ${granule}`;
  if (typeof value !== 'number') throw new TypeError(expected(what, name, value));
  if (!Number.isSafeInteger(value) || value < 0 || value % granule !== 0) throw new RangeError(expected(what, name, value));
}

/**
 * Throws a TypeError unless `value` is one of `allowed` (compared with ===).
 * @example assertOneOf('hugepages', opts.hugepages, ['auto', 'require', 'off'] as const)
 */
export function assertOneOf<T extends string | number | boolean>(name: string, value: unknown, allowed: readonly T[]): asserts value is T {
  if (!allowed.includes(value as T)) {
    const list = allowed.map((a) => (typeof a === 'string' ? `'${a}'` : String(a))).join(', ');
    throw new TypeError(expected(`one of ${list}`, name, value));
  }
}

/** @example assertBoolean('populate', opts.populate) */
export function assertBoolean(name: string, value: unknown): asserts value is boolean {
  if (typeof value !== 'boolean') throw new TypeError(expected('a boolean', name, value));
}

/** @example assertString('name', opts.name) */
export function assertString(name: string, value: unknown): asserts value is string {
  if (typeof value !== 'string') throw new TypeError(expected('a string', name, value));
}

/** An options argument: undefined (use defaults) or a plain object. Returns the object to read. */
export function assertOptions<T extends object>(name: string, value: T | undefined): Partial<T> {
  if (value === undefined) return {};
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new TypeError(expected('an object', name, value));
  }
  return value;
}

/** @example assertUint8Array('source', buf): Buffers are Uint8Arrays. */
export function assertUint8Array(name: string, value: unknown): asserts value is Uint8Array {
  if (!(value instanceof Uint8Array)) throw new TypeError(expected('a Uint8Array or Buffer', name, value));
}
