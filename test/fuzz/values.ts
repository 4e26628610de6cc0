// Hostile argument values for the fuzzer, as JSON-safe descriptors (so that a failing sequence can
// be printed, saved and replayed in another process): numbers of every awkward kind, bigints,
// strings, odd objects, option objects, and live, foreign or destroyed objects of the sequence.

/* eslint-disable @typescript-eslint/no-explicit-any */
import fc from 'fast-check';

export const NUMS = [
  0, 1, -1, 7, 4095, 4096, 4097, 8192, 65536, 2 ** 21, 2 ** 31, 2 ** 32, 2 ** 32 + 4096, 2 ** 40, 2 ** 46,
  2 ** 53 - 1, 2 ** 53, -(2 ** 53), 1e9, 0x10000, NaN, Infinity, -Infinity, -0, 1.5, Number.MAX_VALUE,
] as const;
export const BIGS = [0n, 1n, -1n, 4096n, 2n ** 32n, 2n ** 64n, 2n ** 64n - 1n, -(2n ** 63n)] as const;
export const STRS = ['', '4096', '4096x', '0x1000', 'GFP_KERNEL', 'off', 'auto', 'require', 'read', 'readwrite', 'none', 'random', 'strict'] as const;
export const MISC: readonly (() => unknown)[] = [
  () => null, () => undefined, () => ({}), () => [], () => () => 1, () => ({ value: 0n }), () => ({ value: 'x' }),
  () => Symbol('fuzz'), () => true, () => false, () => new Uint8Array(8), () => Object.create(null),
  () => ({ valueOf: () => 4096 }), () => ({ toString: () => '4096' }), () => [1, 2, 3],
  () => new Proxy({}, { get: () => { throw new Error('hostile getter'); } }),
];
/** Option keys, valid ones of every options object and misspelt ones. */
export const KEYS = [
  'hugepages', 'fixedAddress', 'ramPerNode', 'cmaSize', 'name', 'dmaMask', 'coherentDmaMask', 'iommu', 'debug', 'shared',
  'pgoff', 'prot', 'flags', 'enforce', 'offset', 'populate', 'align2M', 'writable', 'nodes', 'vmallocSize', 'cma', 'ops',
  'busOffset', 'numaNode', 'hugepage', 'ramPerNod', 'sealing', 'onFault', 'dmaDebug', 'physBase', 'capacity', 'chunkSize',
] as const;
/** Objects of the sequence (resolved at run time; see sequence.ts objectOf). */
export const OBJS = [
  'machine', 'machineB', 'deadMachine', 'region', 'page', 'pageB', 'deadPage', 'vma', 'vmaB', 'deadVma', 'dev', 'devB',
  'deadDev', 'sgt', 'sgtB', 'deadSgt', 'cma', 'addr', 'addrB', 'deadAddr', 'vmStart', 'nodeCode', 'handle', 'box', 'share', 'found',
  'arena', 'arenaBuf', 'arenaPeer', 'arenaShare',
] as const;
export type ObjKind = (typeof OBJS)[number];

export type Val =
  | { t: 'n'; i: number }
  | { t: 'b'; i: number }
  | { t: 's'; i: number }
  | { t: 'x'; i: number }
  | { t: 'o'; i: number }
  | { t: 'opt'; k: number; v: Val };

const leaf: fc.Arbitrary<Val> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ t: fc.constant('n' as const), i: fc.nat(NUMS.length - 1) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('b' as const), i: fc.nat(BIGS.length - 1) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('s' as const), i: fc.nat(STRS.length - 1) }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('x' as const), i: fc.nat(MISC.length - 1) }) },
  { weight: 4, arbitrary: fc.record({ t: fc.constant('o' as const), i: fc.nat(OBJS.length - 1) }) },
);
export const valArb: fc.Arbitrary<Val> = fc.oneof(
  { weight: 6, arbitrary: leaf },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('opt' as const), k: fc.nat(KEYS.length - 1), v: leaf }) },
);

/** Sizes above this (finite ones) are only passed in a memory-limited child; else they are clamped. */
const SAFE_SIZE = 2 ** 24;
let hugeNumbers = false;

/** Whether huge numbers may be passed as they are (the child runs in a memory cgroup). */
export function allowHugeNumbers(allowed: boolean): void {
  hugeNumbers = allowed;
}

/** Turns a descriptor into the value (objects through `objectOf`, which may give undefined). */
export function valueOf(v: Val, objectOf: (kind: ObjKind) => unknown): unknown {
  switch (v.t) {
    case 'n': {
      const x = NUMS[v.i % NUMS.length]!;
      return !hugeNumbers && Number.isFinite(x) && Math.abs(x) > SAFE_SIZE ? Math.sign(x) * SAFE_SIZE : x;
    }
    case 'b': return BIGS[v.i % BIGS.length];
    case 's': return STRS[v.i % STRS.length];
    case 'x': return MISC[v.i % MISC.length]!();
    case 'o': return objectOf(OBJS[v.i % OBJS.length]!);
    case 'opt': return { [KEYS[v.k % KEYS.length]!]: valueOf(v.v, objectOf) };
  }
}

/** Short text of a value for reports (no object graphs). */
export function describeVal(v: Val): string {
  switch (v.t) {
    case 'n': return String(NUMS[v.i % NUMS.length]);
    case 'b': return `${BIGS[v.i % BIGS.length]}n`;
    case 's': return JSON.stringify(STRS[v.i % STRS.length]);
    case 'x': return MISC[v.i % MISC.length]!.toString().replace(/^\(\) => /, '');
    case 'o': return `<${OBJS[v.i % OBJS.length]}>`;
    case 'opt': return `{ ${KEYS[v.k % KEYS.length]}: ${describeVal(v.v)} }`;
  }
}
