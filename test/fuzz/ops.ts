// The fuzzer's vocabulary: one step of a random sequence of public calls, as JSON-safe data, and
// the fast-check arbitraries that generate it (weights keep costly steps -- workers, child
// receivers -- rare enough for 10,000 sequences to fit in CI's time).

import fc from 'fast-check';
import { valArb, describeVal, type Val } from './values';

const PAGE = 4096;
const MiB = 1024 * 1024;

export const WORKER_SCRIPTS = ['load', 'regionLoop', 'machineLoop', 'fromFdLoop', 'arenaLoop'] as const;
export const RECEIVER_ACTIONS = ['trunc0', 'truncHalf', 'grow', 'write', 'mapSmaller', 'mapBigger', 'mapRead', 'child'] as const;
export const HUGE_WHAT = ['region', 'regionOff', 'machine', 'machineCma', 'sg', 'vmalloc', 'dma', 'cma', 'vma', 'resize', 'fromFd', 'sgFromPages', 'arena', 'arenaAlloc'] as const;
export const HUGE_SIZES = [2 ** 30, 2 ** 31 + PAGE, 2 ** 34, 2 ** 40, 2 ** 46, 2 ** 53 - PAGE, 2 ** 53, 1e9] as const;
export const CROSS_CALLS = [
  'dma_map_page', '__free_pages', 'dma_free_pages', 'remap_pfn_range', 'dma_common_mmap', 'dma_map_sgtable', 'view',
  'page_address', 'free_via_other_dev', 'vmap', 'dma_unmap_page', 'sg_from_pages', 'cma_release', 'dma_mmap_pages',
] as const;

/** What an 'arena' step does (see sequence.ts). */
export const ARENA_ACTIONS = [
  'create', 'alloc', 'allocUnsafe', 'free', 'freeForeign', 'trim', 'close', 'attach', 'peerView', 'peerClose', 'offsetOf',
  'stats', 'truncShared',
] as const;
/** What a 'pin' step does: pin pages of a Region (read-write, or a read-only mapping of it), unpin, grow a pinned Region, DMA at a pinned (or unpinned) page through busMaster or an engine made from memfds. */
export const PIN_ACTIONS = ['pin', 'pinReadOnly', 'unpin', 'grow', 'bus', 'busFd'] as const;
/**
 * What an 'nc' step does on a non-coherent device with ownership checking (the simulated CPU cache):
 * map a buffer, sync it either way, unmap, let the device write or read it, let the CPU write it,
 * allocate or free non-coherent memory, or scribble on the shared cache table as a buggy device model could.
 */
export const NC_ACTIONS = ['map', 'syncCpu', 'syncDevice', 'unmap', 'devWrite', 'devRead', 'cpuWrite', 'allocNc', 'freeNc', 'scribble'] as const;
export const ARENA_SIZES = [0, 1, 16, 17, 4096, 65536, 2 * MiB, 2 * MiB + 1, -1, 1.5, 2 ** 31] as const;

export type Op =
  | { k: 'regionAlloc'; size: number; huge: 'auto' | 'off' | 'require' }
  | { k: 'regionView'; i: number; off: number; len: number }
  | { k: 'regionClose'; i: number }
  | { k: 'regionResize'; i: number; size: number }
  | { k: 'regionProtect'; i: number; prot: 'none' | 'read' | 'readwrite' }
  | { k: 'regionAdvise'; i: number; advice: number; page: number }
  | { k: 'regionAlias'; i: number }
  | { k: 'alloc'; order: number; nid: number }
  | { k: 'free'; i: number; order: number }
  | { k: 'linearView'; i: number; off: number; len: number }
  | { k: 'vmalloc'; pages: number }
  | { k: 'vfree'; i: number }
  | { k: 'vma'; pages: number; remapPage: number; pfnDelta: number; shared: boolean; viewFirst: boolean; cma: boolean }
  | { k: 'vmaView'; i: number; off: number; pages: number }
  | { k: 'vmaUnmap'; i: number }
  | { k: 'dmaAlloc'; size: number; iommu: boolean }
  | { k: 'dmaFree'; i: number; sizeDelta: number }
  | { k: 'dmaMmap'; i: number; pgoff: number; pages: number }
  | { k: 'destroy' }
  // Exported-class misuse: an export, a method of an object handed out, or something reachable
  // from one, called (or constructed) with hostile arguments.
  | { k: 'call'; on: 'export' | 'method' | 'reach'; i: number; j: number; j2: number; asNew: boolean; args: Val[] }
  // A hostile write: a value assigned to a writable property (or through a setter) of an object
  // handed out or reachable from one, as `m.destroyed = false` or `page.allocOrder = 30`.
  | { k: 'set'; on: 'method' | 'reach'; i: number; j: number; j2: number; value: Val }
  | { k: 'machineB' }
  | { k: 'deadMachine' }
  | { k: 'cross'; src: 'B' | 'dead'; what: number }
  | { k: 'worker'; script: number; when: 'construct' | 'online' | 'message'; delay: number }
  | { k: 'receiver'; i: number; enforce: boolean; action: number }
  | { k: 'huge'; what: number; s: number }
  | { k: 'arena'; act: number; i: number; size: number; j: number }
  | { k: 'pin'; act: number; i: number; page: number; n: number; write: boolean }
  | { k: 'nc'; act: number; i: number; off: number; len: number; dir: number; strict: boolean };

const idx = fc.nat(7);
/** Weights of ordinary steps are scaled by 4 so that a worker (weight 1) comes about once in 80 sequences. */
const w = (weight: number, arbitrary: fc.Arbitrary<Op>): fc.WeightedArbitrary<Op> => ({ weight: 4 * weight, arbitrary });
const rare = (weight: number, arbitrary: fc.Arbitrary<Op>): fc.WeightedArbitrary<Op> => ({ weight, arbitrary });

/** Options of the generator: which costly or memory-hungry steps may appear. */
export interface GenOptions {
  /** Huge sizes (only in a memory-limited child). */
  huge: boolean;
  /** Weight of worker steps (0 = none); each worker costs ~0.2 s of CPU to load the addon. */
  workers: number;
  /** Weight of receivers that are real child processes (~50 ms each). */
  childReceivers: number;
  /** Step kinds left out (to look past a known crash), e.g. ['receiver', 'vma']. */
  exclude?: readonly string[];
}

export function opArb(g: GenOptions): fc.Arbitrary<Op> {
  const arbs: fc.WeightedArbitrary<Op>[] = [
    w(30, fc.record({ k: fc.constant('regionAlloc' as const), size: fc.constantFrom(PAGE, 3 * PAGE, 2 * MiB, 0, -1, 4 * MiB + 1), huge: fc.constantFrom('auto' as const, 'off' as const, 'require' as const) })),
    w(30, fc.record({ k: fc.constant('regionView' as const), i: idx, off: fc.integer({ min: -PAGE, max: 3 * MiB }), len: fc.integer({ min: -1, max: 3 * MiB }) })),
    w(10, fc.record({ k: fc.constant('regionClose' as const), i: idx })),
    w(20, fc.record({ k: fc.constant('regionResize' as const), i: idx, size: fc.constantFrom(PAGE, 2 * PAGE, 2 * MiB, 4 * MiB, 0, 123) })),
    w(10, fc.record({ k: fc.constant('regionProtect' as const), i: idx, prot: fc.constantFrom('none' as const, 'read' as const, 'readwrite' as const) })),
    w(10, fc.record({ k: fc.constant('regionAdvise' as const), i: idx, advice: fc.nat(11), page: fc.nat(3) })),
    w(10, fc.record({ k: fc.constant('regionAlias' as const), i: idx })),
    w(30, fc.record({ k: fc.constant('alloc' as const), order: fc.integer({ min: -1, max: 12 }), nid: fc.integer({ min: -2, max: 2 }) })),
    w(20, fc.record({ k: fc.constant('free' as const), i: idx, order: fc.integer({ min: 0, max: 3 }) })),
    w(20, fc.record({ k: fc.constant('linearView' as const), i: idx, off: fc.integer({ min: -PAGE, max: 8 * PAGE }), len: fc.integer({ min: 0, max: 16 * PAGE }) })),
    w(15, fc.record({ k: fc.constant('vmalloc' as const), pages: fc.integer({ min: 0, max: 40 }) })),
    w(10, fc.record({ k: fc.constant('vfree' as const), i: idx })),
    w(30, fc.record({ k: fc.constant('vma' as const), pages: fc.integer({ min: 1, max: 8 }), remapPage: fc.integer({ min: -1, max: 9 }), pfnDelta: fc.integer({ min: -4, max: 4000 }), shared: fc.boolean(), viewFirst: fc.boolean(), cma: fc.boolean() })),
    w(20, fc.record({ k: fc.constant('vmaView' as const), i: idx, off: fc.integer({ min: -1, max: 9 }), pages: fc.integer({ min: 0, max: 9 }) })),
    w(10, fc.record({ k: fc.constant('vmaUnmap' as const), i: idx })),
    w(20, fc.record({ k: fc.constant('dmaAlloc' as const), size: fc.constantFrom(1, PAGE, 5000, 64 * 1024, 2 * MiB, 0), iommu: fc.boolean() })),
    w(15, fc.record({ k: fc.constant('dmaFree' as const), i: idx, sizeDelta: fc.constantFrom(0, 0, PAGE) })),
    w(15, fc.record({ k: fc.constant('dmaMmap' as const), i: idx, pgoff: fc.integer({ min: 0, max: 20 }), pages: fc.integer({ min: 1, max: 20 }) })),
    w(3, fc.constant<Op>({ k: 'destroy' })),
    w(60, fc.record({
      k: fc.constant('call' as const), on: fc.constantFrom('export' as const, 'method' as const, 'reach' as const),
      i: fc.nat(1000), j: fc.nat(1000), j2: fc.nat(1000), asNew: fc.boolean(), args: fc.array(valArb, { maxLength: 6 }),
    })),
    w(25, fc.record({
      k: fc.constant('set' as const), on: fc.constantFrom('method' as const, 'reach' as const),
      i: fc.nat(1000), j: fc.nat(1000), j2: fc.nat(1000), value: valArb,
    })),
    w(6, fc.constant<Op>({ k: 'machineB' })),
    w(4, fc.constant<Op>({ k: 'deadMachine' })),
    w(25, fc.record({ k: fc.constant('cross' as const), src: fc.constantFrom('B' as const, 'dead' as const), what: fc.nat(CROSS_CALLS.length - 1) })),
    w(40, fc.record({ k: fc.constant('arena' as const), act: fc.nat(ARENA_ACTIONS.length - 1), i: idx, size: fc.nat(ARENA_SIZES.length - 1), j: fc.nat(1000) })),
    w(40, fc.record({ k: fc.constant('pin' as const), act: fc.nat(PIN_ACTIONS.length - 1), i: idx, page: fc.integer({ min: -1, max: 600 }), n: fc.integer({ min: -1, max: 20 }), write: fc.boolean() })),
    w(40, fc.record({
      k: fc.constant('nc' as const), act: fc.nat(NC_ACTIONS.length - 1), i: idx, off: fc.integer({ min: -64, max: 5000 }),
      len: fc.integer({ min: -1, max: 9000 }), dir: fc.integer({ min: -1, max: 3 }), strict: fc.boolean(),
    })),
    w(12, fc.record({ k: fc.constant('receiver' as const), i: idx, enforce: fc.boolean(), action: fc.nat(RECEIVER_ACTIONS.length - 2) })),
  ];
  if (g.workers > 0) {
    arbs.push(rare(g.workers, fc.record({
      k: fc.constant('worker' as const), script: fc.nat(WORKER_SCRIPTS.length - 1),
      when: fc.constantFrom('construct' as const, 'online' as const, 'message' as const), delay: fc.integer({ min: 0, max: 30 }),
    })));
  }
  if (g.childReceivers > 0) {
    arbs.push(rare(g.childReceivers, fc.record({ k: fc.constant('receiver' as const), i: idx, enforce: fc.boolean(), action: fc.constant(RECEIVER_ACTIONS.length - 1) })));
  }
  if (g.huge) arbs.push(w(8, fc.record({ k: fc.constant('huge' as const), what: fc.nat(HUGE_WHAT.length - 1), s: fc.nat(HUGE_SIZES.length - 1) })));
  // Each arbitrary's kind: generate one value (constant for k) and read it.
  const kept = arbs.filter((a) => !(g.exclude ?? []).includes(fc.sample(a.arbitrary, { numRuns: 1, seed: 1 })[0]!.k));
  if (kept.length === 0) throw new RangeError(`every step kind is excluded: ${(g.exclude ?? []).join(', ')}`);
  return fc.oneof(...kept);
}

/** One line per step, readable (hostile arguments spelled out). */
export function describeOp(op: Op): string {
  switch (op.k) {
    case 'call': return `call ${op.on}[${op.i},${op.j},${op.j2}]${op.asNew ? ' new' : ''}(${op.args.map(describeVal).join(', ')})`;
    case 'set': return `set ${op.on}[${op.i},${op.j},${op.j2}] = ${describeVal(op.value)}`;
    case 'cross': return `cross ${op.src} ${CROSS_CALLS[op.what % CROSS_CALLS.length]}`;
    case 'worker': return `worker ${WORKER_SCRIPTS[op.script % WORKER_SCRIPTS.length]} terminated ${op.delay} ms after ${op.when}`;
    case 'receiver': return `receiver of region ${op.i} (enforce ${op.enforce}): ${RECEIVER_ACTIONS[op.action % RECEIVER_ACTIONS.length]}`;
    case 'arena': return `arena ${ARENA_ACTIONS[op.act % ARENA_ACTIONS.length]} #${op.i} size ${ARENA_SIZES[op.size % ARENA_SIZES.length]} j ${op.j}`;
    case 'pin': return `pin ${PIN_ACTIONS[op.act % PIN_ACTIONS.length]} region ${op.i} page ${op.page} n ${op.n}${op.write ? ' write' : ''}`;
    case 'nc': return `nc ${NC_ACTIONS[op.act % NC_ACTIONS.length]} #${op.i} off ${op.off} len ${op.len} dir ${op.dir}${op.strict ? ' strict' : ''}`;
    case 'huge': return `huge ${HUGE_WHAT[op.what % HUGE_WHAT.length]} ${HUGE_SIZES[op.s % HUGE_SIZES.length]}`;
    default: return JSON.stringify(op);
  }
}
