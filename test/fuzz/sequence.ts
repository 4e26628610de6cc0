// Runs one random sequence of public calls (see ops.ts) on a fresh machine, with a second machine
// and a destroyed one on demand, workers terminated at random points, hostile receivers of shares
// and huge sizes. After every step it writes through every Buffer handed out (and its whole
// `.buffer`) and checks the allocators' counts; a broken promise that is not a signal is thrown.

/* eslint-disable @typescript-eslint/no-explicit-any */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { Worker } from 'node:worker_threads';
import { notePool, touchBuffer } from '../fixtures/touch';
import { ARENA_ACTIONS, ARENA_SIZES, CROSS_CALLS, HUGE_SIZES, HUGE_WHAT, NC_ACTIONS, PIN_ACTIONS, RECEIVER_ACTIONS, WORKER_SCRIPTS, describeOp, type Op } from './ops';
import { OBJS, valueOf, describeVal, type ObjKind } from './values';

/**
 * Exports that wait for a peer by design, with the options that bound their wait: called with
 * arbitrary fds they may wait for ever (a fuzz child's stdio fds are socketpairs nobody writes to).
 */
const BOUNDED_WAIT: Record<string, object> = { receiveShare: { timeoutMs: 5 } };

export const INDEX = path.resolve(__dirname, '..', '..', 'lib', 'index.js');
// The compiled package as a user loads it; `any` because misuse is the point.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const d: any = require(INDEX);
// Test-side bookkeeping only (as test/hooks.ts does): every machine a sequence made, even through
// misuse, is destroyed at its end, so that nothing accumulates over thousands of sequences.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const registry: { liveMachines(): any[] } = require(path.resolve(__dirname, '..', '..', 'lib', 'mm', 'registry.js'));

const PAGE = 4096;
const MiB = 1024 * 1024;
const ADVICE = ['hugepage', 'nohugepage', 'dontneed', 'remove', 'willneed', 'populate-read', 'populate-write', 'dontfork', 'dofork', 'random', 'sequential', 'normal'];

/** Counts of what the run threw, by error name (TypeError, RangeError, kernel BUG, errno codes). */
export const thrown = new Map<string, number>();

/** Report only signals: leaked SyntaxErrors etc. and broken counts are counted, not failures. */
let lenient = false;

/** A thrown value that is a bug of the API, not a clear refusal. */
function badThrow(err: unknown): string | null {
  if (lenient) return null;
  if (!(err instanceof Error)) return `threw a non-Error: ${typeof err === 'symbol' ? 'symbol' : String(err)}`;
  if (err.message === '') return `threw an ${err.name} with an empty message`;
  if (err.message === 'hostile getter') return null; // our own hostile Proxy
  if (err instanceof SyntaxError) return `leaked a SyntaxError: ${err.message}`;
  if (err instanceof ReferenceError) return `leaked a ReferenceError: ${err.message}`;
  return null;
}

function record(err: Error): void {
  const code = (err as { code?: unknown }).code;
  const key = /^kernel BUG/.test(err.message) ? 'kernel BUG' : typeof code === 'string' ? `${err.name}(${code})` : err.name;
  thrown.set(key, (thrown.get(key) ?? 0) + 1);
}

/** Start of node's own code (the r-xp mapping of the node binary): the worst fixedAddress. */
const nodeCode = (() => {
  const exe = fs.realpathSync(process.execPath);
  for (const line of fs.readFileSync('/proc/self/maps', 'utf8').split('\n')) {
    const f = line.split(/\s+/);
    if (f[1] === 'r-xp' && f[5] === exe) return parseInt(f[0]!.split('-')[0]!, 16);
  }
  return 0x400000;
})();

const WORKER_CODE: Record<(typeof WORKER_SCRIPTS)[number], string> = {
  load: `require(${JSON.stringify(INDEX)}); require('worker_threads').parentPort.postMessage('go');`,
  regionLoop: `const d = require(${JSON.stringify(INDEX)}); require('worker_threads').parentPort.postMessage('go');
    for (;;) { const r = d.Region.allocate(4096, { hugepages: 'off' }); r.view()[0] = 1; r.close(); }`,
  machineLoop: `const d = require(${JSON.stringify(INDEX)}); require('worker_threads').parentPort.postMessage('go');
    for (;;) { const m = new d.Machine({ ramPerNode: 2 << 20, cmaSize: 0, hugepages: 'off', emitWarnings: false });
      const p = m.alloc_pages(d.GFP_KERNEL, 0); const v = m.createVma(4096);
      d.remap_pfn_range(v, v.vm_start, p.pfn, 4096, v.vm_page_prot); v.view()[0] = 1; m.view(m.page_address(p), 4096)[1] = 2; m.destroy(); }`,
  fromFdLoop: `const d = require(${JSON.stringify(INDEX)}); const { fd, len } = require('worker_threads').workerData;
    require('worker_threads').parentPort.postMessage('go');
    for (;;) { try { const x = d.Region.fromFd(fd, len); const b = x.view(); b[0] = 1; b[b.length - 1] = 1; x.close(); } catch {} }`,
  arenaLoop: `const d = require(${JSON.stringify(INDEX)}); const { h } = require('worker_threads').workerData;
    require('worker_threads').parentPort.postMessage('go');
    for (let i = 0; ; i++) { try { const p = d.Arena.attach(h); const b = p.view((i % 64) * 4096, 4096); b[0] = 1; b[4095] = 1; p.close(); } catch {} }`,
};

interface Foreign {
  m: any;
  dev: any;
  page: any;
  vma: any;
  sgt: any;
  addr: number;
}

/** A second machine (or a destroyed one) with one object of each kind, for cross-machine calls. */
function foreignMachine(name: string, destroy: boolean): Foreign {
  const m = new d.Machine({ name, ramPerNode: 2 * MiB, cmaSize: destroy ? 0 : 2 * MiB, hugepages: 'auto', ramHugepages: 'auto', emitWarnings: false, dmaDebug: true });
  const dev = m.createDevice({ name: `${name}-dev`, dmaMask: 32, coherentDmaMask: 32, iommu: !destroy });
  const page = m.alloc_pages(d.GFP_KERNEL, 1);
  const vma = m.createVma(2 * PAGE);
  d.remap_pfn_range(vma, vma.vm_start, page.pfn, 2 * PAGE, vma.vm_page_prot);
  const sgt = new d.SgTable();
  d.sg_alloc_table_from_pages(sgt, [page, m.pfn_to_page(page.pfn + 1)], 2, 0, 2 * PAGE, d.GFP_KERNEL);
  const addr = m.page_address(page);
  if (destroy) m.destroy();
  return { m, dev, page, vma, sgt, addr };
}

function pick<T>(arr: readonly T[], i: number): T | undefined {
  return arr.length === 0 ? undefined : arr[i % arr.length];
}

/** Built-in containers: their methods mutate data, they are not calls of the package's API. */
/** Generators and iterators are the language's (a generator's throw(x) throws x by definition). */
const BUILTIN_TAGS = /^\[object (Generator|AsyncGenerator|.* Iterator)\]$/;
const BUILTIN = [Array, Map, Set, WeakMap, WeakSet, ArrayBuffer, Promise, Error, Date, RegExp, Object.getPrototypeOf(Uint8Array)];

/** Method names along the prototype chain of the package's own objects (getters excluded). */
function methodsOf(obj: any): string[] {
  const names = new Set<string>();
  if (BUILTIN.some((C) => obj instanceof C) || BUILTIN_TAGS.test(Object.prototype.toString.call(obj))) return [];
  for (let p = Object.getPrototypeOf(obj); p !== null && p !== Object.prototype && p !== Function.prototype; p = Object.getPrototypeOf(p)) {
    for (const n of Object.getOwnPropertyNames(p)) {
      const desc = Object.getOwnPropertyDescriptor(p, n);
      if (n !== 'constructor' && desc !== undefined && typeof desc.value === 'function') names.add(n);
    }
  }
  for (const n of Object.getOwnPropertyNames(obj)) if (typeof obj[n] === 'function') names.add(n);
  return [...names].sort();
}

/**
 * Property names a caller can assign on `obj`: its own writable data properties and the setters
 * along its prototype chain (the package's own objects only, as in methodsOf).
 */
function writablesOf(obj: any): string[] {
  const names = new Set<string>();
  if (BUILTIN.some((C) => obj instanceof C) || typeof obj !== 'object') return [];
  for (const n of Object.getOwnPropertyNames(obj)) {
    const desc = Object.getOwnPropertyDescriptor(obj, n);
    if (desc !== undefined && (('value' in desc && desc.writable === true) || desc.set !== undefined)) names.add(n);
  }
  for (let p = Object.getPrototypeOf(obj); p !== null && p !== Object.prototype; p = Object.getPrototypeOf(p)) {
    for (const n of Object.getOwnPropertyNames(p)) if (Object.getOwnPropertyDescriptor(p, n)?.set !== undefined) names.add(n);
  }
  return [...names].sort();
}

/** The object a 'call' or 'set' step acts on: a root object of the sequence or one reachable from it. */
function targetOf(op: { on: string; i: number; j2: number }, objectOf: (k: ObjKind) => unknown): any {
  const root: any = objectOf(OBJS[op.i % OBJS.length]!);
  if (root === null || root === undefined || (typeof root !== 'object' && typeof root !== 'function')) return undefined;
  if (op.on !== 'reach') return root;
  const all = reachable(root);
  return all.length === 0 ? undefined : all[op.j2 % all.length];
}

/** Objects reachable from `root` through own data properties (depth 3, arrays and maps sampled). */
function reachable(root: any): any[] {
  const out: any[] = [];
  const seen = new Set<any>([root]);
  let level: any[] = [root];
  for (let depth = 0; depth < 3 && out.length < 300; depth++) {
    const next: any[] = [];
    for (const o of level) {
      let children: unknown[] = [];
      if (ArrayBuffer.isView(o) || o instanceof ArrayBuffer) continue;
      if (Array.isArray(o)) children = o.slice(0, 4);
      else if (o instanceof Map || o instanceof Set) children = [...o.values()].slice(0, 4);
      else {
        for (const n of Object.getOwnPropertyNames(o)) {
          const desc = Object.getOwnPropertyDescriptor(o, n);
          if (desc !== undefined && 'value' in desc) children.push(desc.value);
        }
      }
      for (const c of children) {
        if (c === null || (typeof c !== 'object' && typeof c !== 'function') || seen.has(c)) continue;
        seen.add(c);
        out.push(c);
        if (typeof c === 'object') next.push(c);
      }
    }
    level = next;
  }
  return out;
}

export interface RunOptions {
  /** Accept a Buffer whose `.buffer` is larger than the Buffer (to look for signals only). */
  allowWideBuffers: boolean;
  /** Touch only each Buffer's own bytes, not its whole `.buffer` (implies allowWideBuffers). */
  viewOnly: boolean;
  /** Print each step before running it (replay). */
  trace: boolean;
  /** Only signals fail (see `lenient` above). */
  lenient?: boolean;
}

/** Runs one sequence; throws (with the step) when a promise other than "no signal" is broken. */
export async function runSequence(ops: readonly Op[], o: RunOptions): Promise<void> {
  lenient = o.lenient ?? false;
  // RAM in 4 KiB pages (the default, one mapping per page: slower) for odd-length sequences, in a
  // hugetlb page when the pool has room for even ones: both paths, and replays stay deterministic.
  const ramHugepages = ops.length % 2 === 0 ? 'auto' : 'off';
  const m = new d.Machine({ name: 'fuzz', ramPerNode: 2 * MiB, cmaSize: 2 * MiB, hugepages: 'auto', ramHugepages, emitWarnings: false, dmaDebug: true });
  const direct = m.createDevice({ name: 'fz-direct', dmaMask: 64, coherentDmaMask: 64 });
  const iommu = m.createDevice({ name: 'fz-iommu', dmaMask: 32, coherentDmaMask: 32, iommu: true });
  let B: Foreign | null = null;
  let dead: Foreign | null = null;
  const regions: any[] = [];
  const pages: { page: any; order: number }[] = [];
  const vmallocs: number[] = [];
  const vmas: any[] = [];
  const bufs: { page: any; size: number; handle: bigint; dev: any }[] = [];
  const views: { b: Buffer; step: number }[] = [];
  const sgts: any[] = [];
  const shares: any[] = [];
  const opened: number[] = [];
  const workers: { w: Worker; exited: Promise<void> }[] = [];
  const extraMachines: any[] = [];
  const found: any[] = [];
  const arenas: any[] = [];
  const arenaBufs: Buffer[] = [];
  const peers: any[] = [];
  const arenaShares: any[] = [];
  /** Pinned user pages (each entry one pin), and pages unpinned since (their PFNs are no memory now). */
  const pinned: any[] = [];
  const unpinned: any[] = [];
  let fdEngine: any = null;
  /** The non-coherent device (made at the first 'nc' step), its live mappings and non-coherent buffers. */
  let ncDev: any = null;
  const ncMaps: { h: bigint; size: number; dir: number; buf: number }[] = [];
  const ncBufs: { cpu: number; h: bigint; size: number }[] = [];
  /** Machines made by misuse in this step: destroyed after it (they stay in the pool, dead). */
  const bornMachines: any[] = [];
  let step = -1;

  const objectOf = (kind: ObjKind): unknown => {
    switch (kind) {
      case 'machine': return m;
      case 'machineB': return B?.m;
      case 'deadMachine': return dead?.m;
      case 'region': return pick(regions, step);
      case 'page': return pick(pages, step)?.page;
      case 'pageB': return B?.page;
      case 'deadPage': return dead?.page;
      case 'vma': return pick(vmas, step);
      case 'vmaB': return B?.vma;
      case 'deadVma': return dead?.vma;
      case 'dev': return step % 2 === 0 ? direct : iommu;
      case 'devB': return B?.dev;
      case 'deadDev': return dead?.dev;
      case 'sgt': return pick(sgts, step);
      case 'sgtB': return B?.sgt;
      case 'deadSgt': return dead?.sgt;
      case 'cma': return m.dma_contiguous_default_area;
      case 'addr': { const p = pick(pages, step); return p ? m.page_address(p.page) : undefined; }
      case 'addrB': return B?.addr;
      case 'deadAddr': return dead?.addr;
      case 'vmStart': return pick(vmas, step)?.vm_start;
      case 'nodeCode': return nodeCode;
      case 'handle': return pick(bufs, step)?.handle;
      case 'box': return { value: 0n };
      case 'share': return pick(shares, step);
      case 'found': return found.length === 0 ? undefined : found[found.length - 1 - (step % found.length)];
      case 'arena': return pick(arenas, step);
      case 'arenaBuf': return pick(arenaBufs, step);
      case 'arenaPeer': return pick(peers, step);
      case 'arenaShare': return pick(arenaShares, step);
    }
  };
  /** What a step handed out: Buffers are touched after every step, other objects join the pool. */
  const keep = (b: unknown): void => {
    notePool();
    if (b instanceof d.Machine) bornMachines.push(b);
    if (b instanceof d.Region) regions.push(b);
    if (Buffer.isBuffer(b)) views.push({ b, step });
    else if (b instanceof Uint8Array || b instanceof ArrayBuffer) views.push({ b: Buffer.from(b instanceof ArrayBuffer ? b : b.buffer, b instanceof ArrayBuffer ? 0 : b.byteOffset, b.byteLength), step });
    else if (b !== null && typeof b === 'object' && found.length < 64) found.push(b);
  };
  const other = (src: 'B' | 'dead'): Foreign => {
    if (src === 'B') return (B ??= foreignMachine('fuzzB', false));
    return (dead ??= foreignMachine('fuzzDead', true));
  };

  const pinStep = async (op: Extract<Op, { k: 'pin' }>): Promise<void> => {
    const act = PIN_ACTIONS[op.act % PIN_ACTIONS.length]!;
    const r = pick(regions, op.i);
    const pin = (region: any, flags: number): void => {
      const got: any[] = [];
      // Mostly inside the Region (one page past its end at times), before it when page is -1.
      const at = op.page < 0 || region.closed ? -PAGE : (op.page % (Math.ceil(region.length / PAGE) + 1)) * PAGE;
      const n = m.pin_user_pages_fast(region, (region.closed ? 0 : region.address) + at, op.n, flags, got);
      if (n > 0) pinned.push(...got.slice(0, n));
    };
    switch (act) {
      case 'pin': if (r) pin(r, op.write ? d.FOLL_WRITE : 0); break;
      case 'pinReadOnly': {
        if (!r || r.closed) break;
        const ro = d.Region.fromFd(r.fd, r.length, { writable: false });
        regions.push(ro);
        pin(ro, op.write ? d.FOLL_WRITE : 0);
        break;
      }
      case 'unpin': {
        const p = pick(pinned, op.page);
        if (p) { pinned.splice(pinned.indexOf(p), 1); d.unpin_user_page(p); unpinned.push(p); }
        break;
      }
      case 'grow': if (r) { r.resize(r.length + (op.n > 0 ? op.n : 1) * PAGE); pin(r, 0); } break;
      case 'bus':
      case 'busFd': {
        const p = pick(op.write ? pinned : [...pinned, ...unpinned], op.page);
        if (!p) break;
        const dev = direct;
        if (act === 'busFd' && fdEngine === null) fdEngine = new d.BusEngine(structuredClone(d.busDescription(dev, { fdOnly: true })));
        const bus = act === 'busFd' ? fdEngine : d.busMaster(dev);
        const addr = p.pfn * PAGE + (op.n & 7) * 512;
        if (op.write) bus.write(addr, new Uint8Array(64).fill(op.i));
        else bus.read(addr, new Uint8Array(64));
        break;
      }
    }
  };

  const ncStep = (op: Extract<Op, { k: 'nc' }>): void => {
    const act = NC_ACTIONS[op.act % NC_ACTIONS.length]!;
    ncDev ??= m.createDevice({ name: 'fz-nc', dmaMask: 64, coherent: false, iommu: op.i % 2 === 1, ownership: op.strict ? 'strict' : 'report' });
    const dev = ncDev;
    const dir = op.dir;
    const mp = pick(ncMaps, op.i);
    switch (act) {
      case 'map': {
        const e = pick(pages, op.i);
        const buf = e ? m.page_address(e.page) + (op.off & 4095) : (pick(vmallocs, op.i) ?? 0);
        const h = d.dma_map_single(dev, buf, op.len, dir);
        if (d.dma_mapping_error(dev, h) === 0) ncMaps.push({ h, size: op.len, dir, buf });
        break;
      }
      case 'syncCpu': if (mp) d.dma_sync_single_for_cpu(dev, mp.h + BigInt(Math.max(0, op.off % 128)), op.len % 2 === 0 ? mp.size : op.len, mp.dir); break;
      case 'syncDevice': if (mp) d.dma_sync_single_for_device(dev, mp.h, op.len % 2 === 0 ? mp.size : op.len, op.dir); break;
      case 'unmap': if (mp) { ncMaps.splice(ncMaps.indexOf(mp), 1); d.dma_unmap_single(dev, mp.h, mp.size, mp.dir); } break;
      case 'devWrite': if (mp) d.busMaster(dev).write(mp.h + BigInt(Math.max(0, op.off)), new Uint8Array(Math.max(0, Math.min(op.len, 8192))).fill(op.i)); break;
      case 'devRead': if (mp) d.busMaster(dev).read(mp.h + BigInt(Math.max(0, op.off)), new Uint8Array(Math.max(0, Math.min(op.len, 8192)))); break;
      case 'cpuWrite': if (mp && mp.size > 0) m.view(mp.buf, Math.min(mp.size, 64)).fill(op.off & 0xff); break;
      case 'allocNc': {
        const h = { value: 0n };
        const cpu = d.dma_alloc_noncoherent(dev, op.len, h, dir, d.GFP_KERNEL);
        if (cpu !== null) { ncBufs.push({ cpu, h: h.value, size: op.len }); keep(m.view(cpu, Math.max(op.len, 1))); }
        break;
      }
      case 'freeNc': { const b = pick(ncBufs, op.i); if (b) { ncBufs.splice(ncBufs.indexOf(b), 1); d.dma_free_noncoherent(dev, b.size, b.cpu, b.h, dir); } break; }
      case 'scribble': {
        const t = new Int32Array(d.busDescription(dev).cache.table);
        for (let k = 0; k < 16; k++) t[(op.off * 7919 + k * 104729) % t.length] = op.len * (k + 1);
        break;
      }
    }
  };

  const exec = async (op: Op): Promise<void> => {
    switch (op.k) {
      case 'regionAlloc': regions.push(d.Region.allocate(op.size, { hugepages: op.huge })); break;
      case 'regionView': { const r = pick(regions, op.i); if (r) keep(r.view(op.off, op.len)); break; }
      case 'regionClose': pick(regions, op.i)?.close(); break;
      case 'regionResize': pick(regions, op.i)?.resize(op.size); break;
      case 'regionProtect': pick(regions, op.i)?.protect(op.prot); break;
      case 'regionAdvise': { const r = pick(regions, op.i); if (r) r.advise(ADVICE[op.advice % ADVICE.length], op.page * PAGE, PAGE); break; }
      case 'regionAlias': { const r = pick(regions, op.i); if (r) { const a = r.alias(); keep(a.view()); a.close(); } break; }
      case 'alloc': { const p = m.alloc_pages_node(op.nid, d.GFP_KERNEL, op.order); if (p) pages.push({ page: p, order: op.order }); break; }
      case 'free': { const e = pick(pages, op.i); if (e) { pages.splice(pages.indexOf(e), 1); m.__free_pages(e.page, op.order === 0 ? e.order : op.order); } break; }
      case 'linearView': { const e = pick(pages, op.i); if (e) keep(m.view(m.page_address(e.page) + op.off, op.len)); break; }
      case 'vmalloc': { const a = m.vmalloc(op.pages * PAGE); if (a !== null) { vmallocs.push(a); keep(m.view(a, op.pages * PAGE)); } break; }
      case 'vfree': { const a = pick(vmallocs, op.i); if (a !== undefined) { vmallocs.splice(vmallocs.indexOf(a), 1); m.vfree(a); } break; }
      case 'vma': {
        const v = m.createVma(op.pages * PAGE, { shared: op.shared });
        vmas.push(v);
        if (op.viewFirst) keep(v.view(0, 0));
        let pfn: number;
        if (op.cma) {
          const p = d.cma_alloc(m.dma_contiguous_default_area, 1 + (op.pfnDelta % 3), 0, true);
          if (p === null) return;
          pfn = p.pfn;
        } else {
          const e = pick(pages, op.pfnDelta);
          pfn = e ? e.page.pfn + (op.pfnDelta % 7) : op.pfnDelta;
        }
        d.remap_pfn_range(v, v.vm_start + op.remapPage * PAGE, pfn, PAGE * (1 + (op.pfnDelta % 3)), v.vm_page_prot);
        keep(v.view(0, PAGE));
        keep(v.view());
        break;
      }
      case 'vmaView': { const v = pick(vmas, op.i); if (v) keep(v.view(op.off * PAGE, op.pages * PAGE)); break; }
      case 'vmaUnmap': pick(vmas, op.i)?.unmap(); break;
      case 'dmaAlloc': {
        const dev = op.iommu ? iommu : direct;
        const h = { value: 0n };
        const p = d.dma_alloc_pages(dev, op.size, h, d.DMA_BIDIRECTIONAL, d.GFP_KERNEL);
        if (p) { bufs.push({ page: p, size: op.size, handle: h.value, dev }); keep(m.view(m.page_address(p), d.PAGE_ALIGN(op.size))); }
        break;
      }
      case 'dmaFree': { const b = pick(bufs, op.i); if (b) { bufs.splice(bufs.indexOf(b), 1); d.dma_free_pages(b.dev, b.size + op.sizeDelta, b.page, b.handle, d.DMA_BIDIRECTIONAL); } break; }
      case 'dmaMmap': {
        const b = pick(bufs, op.i);
        if (b) {
          const v = m.createVma(op.pages * PAGE, { pgoff: op.pgoff });
          vmas.push(v);
          if (d.dma_common_mmap(b.dev, v, m.page_address(b.page), b.handle, b.size, 0) === 0) keep(v.view());
        }
        break;
      }
      case 'destroy': m.destroy(); break;
      case 'pin': await pinStep(op); break;
      case 'nc': ncStep(op); break;
      case 'call': {
        const args = op.args.map((v) => valueOf(v, objectOf));
        if (op.on === 'export') {
          const names = Object.keys(d).filter((n) => typeof d[n] === 'function').sort();
          const name = names[op.i % names.length]!;
          const f = d[name];
          const bound = BOUNDED_WAIT[name];
          if (bound !== undefined) keep(f(args[0], bound));
          else keep(op.asNew ? new f(...args) : f(...args));
        } else {
          const root = objectOf(OBJS[op.i % OBJS.length]!);
          if (root === null || root === undefined || (typeof root !== 'object' && typeof root !== 'function')) return;
          let target: any = root;
          if (op.on === 'reach') {
            const all = reachable(root);
            if (all.length === 0) return;
            target = all[op.j2 % all.length];
          }
          if (op.asNew) {
            const C = target.constructor;
            // dmamem's own classes only: a JS builtin (new Uint8Array(2 ** 31) in a 512 MiB cgroup)
            // tests V8, not this library.
            const builtin = typeof C === 'function' && ((globalThis as any)[C.name] === C || C === Buffer);
            if (typeof C === 'function' && !builtin) keep(new C(...args));
          } else {
            const names = methodsOf(target);
            const name = pick(names, op.j);
            if (name !== undefined) keep(target[name](...args));
          }
        }
        break;
      }
      case 'set': {
        const target = targetOf(op, objectOf);
        const name = target === undefined ? undefined : pick(writablesOf(target), op.j);
        if (name !== undefined) target[name] = valueOf(op.value, objectOf);
        break;
      }
      case 'machineB': other('B'); break;
      case 'deadMachine': other('dead'); break;
      case 'cross': {
        const f = other(op.src);
        const dir = d.DMA_BIDIRECTIONAL;
        const mine = pick(pages, 0)?.page ?? m.alloc_pages(d.GFP_KERNEL, 0);
        switch (CROSS_CALLS[op.what % CROSS_CALLS.length]) {
          case 'dma_map_page': d.dma_map_page(iommu, f.page, 0, PAGE, dir); d.dma_map_page(direct, f.page, 0, PAGE, dir); break;
          case '__free_pages': m.__free_pages(f.page, 0); break;
          case 'dma_free_pages': d.dma_free_pages(iommu, PAGE, f.page, 0n, dir); break;
          case 'remap_pfn_range': if (mine) d.remap_pfn_range(f.vma, f.vma.vm_start, mine.pfn, PAGE, f.vma.vm_page_prot); keep(f.vma.view?.()); break;
          case 'dma_common_mmap': { const b = pick(bufs, 0); if (b) { d.dma_common_mmap(b.dev, f.vma, m.page_address(b.page), b.handle, b.size, 0); keep(f.vma.view?.()); } break; }
          case 'dma_map_sgtable': d.dma_map_sgtable(iommu, f.sgt, dir, 0); d.dma_map_sgtable(direct, f.sgt, dir, 0); break;
          case 'view': keep(m.view(f.addr, PAGE)); break;
          case 'page_address': keep(m.view(m.page_address(f.page), PAGE)); break;
          case 'free_via_other_dev': {
            const h = { value: 0n };
            const p = d.dma_alloc_pages(f.dev, PAGE, h, dir, d.GFP_KERNEL);
            if (p) d.dma_free_pages(iommu, PAGE, p, h.value, dir);
            break;
          }
          case 'vmap': { const a = m.vmap([f.page], 1); if (a !== null) { vmallocs.push(a); keep(m.view(a, PAGE)); } break; }
          case 'dma_unmap_page': { const b = pick(bufs, 0); if (b) d.dma_unmap_page(f.dev, b.handle, PAGE, dir); break; }
          case 'sg_from_pages': { const t = new d.SgTable(); sgts.push(t); d.sg_alloc_table_from_pages(t, [f.page, mine], 2, 0, 2 * PAGE, d.GFP_KERNEL); d.dma_map_sgtable(iommu, t, dir, 0); break; }
          case 'cma_release': d.cma_release(m.dma_contiguous_default_area, f.page, 1); break;
          case 'dma_mmap_pages': { const v = m.createVma(PAGE); vmas.push(v); d.dma_mmap_pages(iommu, v, PAGE, f.page); keep(v.view()); break; }
        }
        break;
      }
      case 'arena': {
        const size = ARENA_SIZES[op.size % ARENA_SIZES.length]!;
        const a = pick(arenas, op.i);
        switch (ARENA_ACTIONS[op.act % ARENA_ACTIONS.length]) {
          case 'create': {
            const chunkSize = [2 * MiB, 64 * 1024, PAGE, 3 * PAGE][op.j % 4];
            arenas.push(d.Arena.create({ capacity: (1 + (op.j % 3)) * 4 * MiB, chunkSize, hugepages: (['auto', 'off', 'require'] as const)[op.j % 3] }));
            break;
          }
          case 'alloc': case 'allocUnsafe': {
            if (!a) return;
            const b = ARENA_ACTIONS[op.act % ARENA_ACTIONS.length] === 'alloc' ? a.alloc(size) : a.allocUnsafe(size);
            arenaBufs.push(b);
            keep(b);
            break;
          }
          case 'free': { const b = pick(arenaBufs, op.j); if (a && b) a.free(b); break; }
          // A buffer of another arena, a Region's or machine's view, or a subarray of its own.
          case 'freeForeign': { const v = pick(views, op.j)?.b; if (a && v) a.free(op.j % 2 === 0 ? v : v.subarray(1)); break; }
          case 'trim': a?.trim(); break;
          case 'close': a?.close(); break;
          case 'attach': { if (!a) return; const h = a.share(); arenaShares.push(h); peers.push(d.Arena.attach(op.j % 3 === 0 ? { ...h, length: h.length * 2 } : h)); break; }
          case 'peerView': {
            const p = pick(peers, op.i);
            const b = pick(arenaBufs, op.j);
            if (!p) return;
            // The offset of a live buffer, or a hostile one (past the end, unaligned, negative).
            let off = op.j * 4096 - (op.j % 5 === 0 ? 1 : 0);
            try { if (b && a) off = a.offsetOf(b); } catch { /* not live */ }
            keep(p.view(off, size));
            break;
          }
          case 'peerClose': pick(peers, op.i)?.close(); break;
          case 'offsetOf': { const b = pick(arenaBufs, op.j); if (a && b) a.offsetOf(b); break; }
          case 'stats': a?.stats(); break;
          // A receiver of the share reopens the memfd and shrinks it: the seal must refuse.
          case 'truncShared': {
            if (!a || a.closed) return;
            const h = a.share();
            const fd = fs.openSync(`/proc/${h.pid}/fd/${h.fd}`, 'r+');
            opened.push(fd);
            fs.ftruncateSync(fd, op.j % 2 === 0 ? 0 : PAGE);
            break;
          }
        }
        break;
      }
      case 'worker': {
        const script = WORKER_SCRIPTS[op.script % WORKER_SCRIPTS.length]!;
        const r = regions.find((x) => !x.closed);
        const a = arenas.find((x) => !x.closed);
        const workerData = script === 'fromFdLoop' && r ? { fd: r.fd, len: r.length } : script === 'arenaLoop' && a ? { h: a.share() } : undefined;
        const code = (script === 'fromFdLoop' || script === 'arenaLoop') && !workerData ? WORKER_CODE.regionLoop : WORKER_CODE[script];
        const w = new Worker(code, { eval: true, workerData });
        w.on('error', () => { /* only the process matters */ });
        const exited = new Promise<void>((resolve) => w.once('exit', () => resolve()));
        const kill = (): void => { setTimeout(() => void w.terminate(), op.delay); };
        if (op.when === 'construct') kill();
        else w.once(op.when, kill);
        workers.push({ w, exited });
        break;
      }
      case 'receiver': {
        const r = pick(regions, op.i);
        if (!r) return;
        const share = r.shareReadOnly({ enforce: op.enforce });
        shares.push(share);
        const len: number = r.length;
        const action = RECEIVER_ACTIONS[op.action % RECEIVER_ACTIONS.length];
        const reopen = (): number => { const fd = fs.openSync(share.path, 'r+'); opened.push(fd); return fd; };
        switch (action) {
          case 'trunc0': fs.ftruncateSync(reopen(), 0); break;
          case 'truncHalf': fs.ftruncateSync(reopen(), Math.floor(len / 2 / PAGE) * PAGE); break;
          case 'grow': fs.ftruncateSync(reopen(), len * 2); break;
          case 'write': fs.writeSync(reopen(), Buffer.alloc(64, 7), 0, 64, Math.max(0, len - 32)); break;
          case 'mapSmaller': { const x = d.Region.open(share.path, Math.max(PAGE, len / 2)); regions.push(x); keep(x.view()); break; }
          case 'mapBigger': { const x = d.Region.open(share.path, len * 2); regions.push(x); keep(x.view()); break; }
          case 'mapRead': { const x = d.Region.open(share.path, len, { writable: false }); regions.push(x); keep(x.read(0, Math.min(len, 64))); break; }
          case 'child': {
            spawnSync(process.execPath, ['-e', `const fs = require('fs'); const p = ${JSON.stringify(share.path)};
              for (const f of [() => { const fd = fs.openSync(p, 'r+'); fs.writeSync(fd, Buffer.alloc(16, 9), 0, 16, 0); fs.ftruncateSync(fd, 0); },
                               () => fs.truncateSync(p, ${PAGE}), () => fs.writeFileSync(p, 'x')]) { try { f(); } catch {} }`], { timeout: 10000 });
            break;
          }
        }
        break;
      }
      case 'huge': {
        const size = HUGE_SIZES[op.s % HUGE_SIZES.length]!;
        switch (HUGE_WHAT[op.what % HUGE_WHAT.length]) {
          case 'region': regions.push(d.Region.allocate(size, { hugepages: 'auto' })); break;
          case 'regionOff': regions.push(d.Region.allocate(size, { hugepages: 'off', populate: false })); break;
          case 'machine': extraMachines.push(new d.Machine({ ramPerNode: size, cmaSize: 0, emitWarnings: false })); break;
          case 'machineCma': extraMachines.push(new d.Machine({ ramPerNode: 2 * MiB, cmaSize: size, emitWarnings: false })); break;
          case 'sg': { const t = new d.SgTable(); sgts.push(t); d.sg_alloc_table(t, Math.floor(size / PAGE), d.GFP_KERNEL); break; }
          case 'sgFromPages': { const t = new d.SgTable(); sgts.push(t); const p = pick(pages, 0)?.page; if (p) d.sg_alloc_table_from_pages(t, [p], Math.floor(size / PAGE), 0, size, d.GFP_KERNEL); break; }
          case 'vmalloc': { const a = m.vmalloc(size); if (a !== null) vmallocs.push(a); break; }
          case 'dma': { const h = { value: 0n }; const p = d.dma_alloc_pages(iommu, size, h, d.DMA_BIDIRECTIONAL, d.GFP_KERNEL); if (p) bufs.push({ page: p, size, handle: h.value, dev: iommu }); break; }
          case 'cma': d.cma_alloc(m.dma_contiguous_default_area, Math.floor(size / PAGE), 0, true); break;
          case 'vma': { const v = m.createVma(size); vmas.push(v); break; }
          case 'resize': pick(regions, 0)?.resize(size); break;
          case 'fromFd': { const r = pick(regions, 0); if (r) { const x = d.Region.fromFd(r.fd, size); regions.push(x); keep(x.view()); } break; }
          case 'arena': arenas.push(d.Arena.create({ capacity: size, chunkSize: 2 * MiB })); break;
          case 'arenaAlloc': { const a = pick(arenas, 0); if (a) { const b = a.alloc(size); arenaBufs.push(b); keep(b); } break; }
        }
        break;
      }
    }
  };

  const check = (): void => {
    for (const v of views) {
      const problem = touchBuffer(v.b, !o.viewOnly);
      if (problem !== null && !o.allowWideBuffers && !o.viewOnly) throw new Error(`after step ${step}: the Buffer from step ${v.step}: ${problem}`);
    }
    for (const mm of [m, B?.m]) {
      if (mm === undefined || mm.isDestroyed) continue;
      const s = mm.stats();
      for (const n of s.nodes) if (n.freePages > n.totalPages || n.freePages < 0) throw new Error(`after step ${step}: ${mm.name} node ${n.nid} has ${n.freePages} free pages of ${n.totalPages}`);
      for (const c of s.cma) if (c.available > c.count || c.available < 0) throw new Error(`after step ${step}: ${mm.name} CMA ${c.name} has ${c.available} available of ${c.count}`);
    }
  };

  try {
    for (step = 0; step < ops.length; step++) {
      const op = ops[step]!;
      if (o.trace) process.stdout.write(`step ${step}: ${describeStep(op, objectOf)}\n`);
      notePool();
      try {
        await exec(op);
      } catch (err) {
        const bad = badThrow(err);
        if (bad !== null) throw new Error(`step ${step} (${describeOp(op)}) ${bad}`);
        record(err as Error);
      }
      for (const x of bornMachines.splice(0)) {
        try { x.destroy(); } catch (err) { if (badThrow(err) !== null) throw new Error(`step ${step}: destroy() of a machine made by misuse ${badThrow(err)}`); }
      }
      try {
        check();
      } catch (err) {
        const e = err as Error;
        if (lenient) { record(e); continue; }
        throw new Error(/^after step/.test(e.message) ? e.message : `after step ${step} (${describeOp(op)}), checking buffers and counts: ${e.name}: ${e.message}`);
      }
      // Let timers (worker terminations) fire between steps.
      if (workers.length > 0) await new Promise((r) => setImmediate(r));
    }
  } finally {
    // Each worker is terminated by its own timer at its random point (during the addon's load,
    // inside a loop of calls): wait for that, then end any still running.
    if (workers.length > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([Promise.all(workers.map((x) => x.exited)), new Promise((r) => { timer = setTimeout(r, 3000); })]);
      clearTimeout(timer);
    }
    for (const { w } of workers) void w.terminate();
    await Promise.all(workers.map((x) => x.exited));
    for (const fd of opened) try { fs.closeSync(fd); } catch { /* closed */ }
    for (const p of pinned) try { d.unpin_user_page(p); } catch (err) { if (badThrow(err) !== null) throw err; }
    try { fdEngine?.close(); } catch (err) { if (badThrow(err) !== null) throw err; }
    for (const r of regions) try { r.close(); } catch (err) { if (badThrow(err) !== null) throw err; }
    for (const x of [...peers, ...arenas]) try { x.close(); } catch (err) { if (badThrow(err) !== null) throw err; }
    for (const x of [m, (B as Foreign | null)?.m, ...extraMachines, ...registry.liveMachines()]) try { x?.destroy(); } catch (err) { if (badThrow(err) !== null) throw err; }
    try { d.destroyDefaultMachine(); } catch (err) { if (badThrow(err) !== null) throw err; }
    for (const v of views) touchBuffer(v.b, !o.viewOnly);
  }
}

/** A step with its call resolved to names (for traces of replays). */
function describeStep(op: Op, objectOf: (k: ObjKind) => unknown): string {
  if (op.k === 'set') {
    const target = targetOf(op, objectOf);
    const name = target === undefined ? undefined : pick(writablesOf(target), op.j);
    return `<${OBJS[op.i % OBJS.length]}>${op.on === 'reach' ? `~>${target?.constructor?.name ?? 'object'}` : ''}.${name ?? '(nothing writable)'} = ${describeVal(op.value)}`;
  }
  if (op.k !== 'call') return describeOp(op);
  const args = op.args.map(describeVal).join(', ');
  if (op.on === 'export') {
    const names = Object.keys(d).filter((n) => typeof d[n] === 'function').sort();
    return `${op.asNew ? 'new ' : ''}d.${names[op.i % names.length]}(${args})`;
  }
  const kind = OBJS[op.i % OBJS.length]!;
  const root: any = objectOf(kind);
  if (root === null || root === undefined || (typeof root !== 'object' && typeof root !== 'function')) return `(no ${kind})`;
  let target: any = root;
  let where = `<${kind}>`;
  if (op.on === 'reach') {
    const all = reachable(root);
    if (all.length === 0) return `(nothing reachable from ${kind})`;
    target = all[op.j2 % all.length];
    where += `~>${target?.constructor?.name ?? 'object'}`;
  }
  if (op.asNew) return `new (${where}.constructor = ${target?.constructor?.name})(${args})`;
  return `${where}.${pick(methodsOf(target), op.j) ?? '(no method)'}(${args})`;
}
