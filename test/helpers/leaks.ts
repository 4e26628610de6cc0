// Test helpers shared by every test file: leak checks (mappings and fds of this process) and the
// hugepage pool (skip with instructions when empty, but fail under CI, which must run the real path).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as vm from 'node:vm';
import * as v8 from 'node:v8';
import { native } from '../../lib/native';
import { hugepagePoolFree } from '../../lib/os/backing';
import { hugepageAdvice } from '../../lib/os/hugetlb-pool';
import { pfnVisible, readPfns } from '../../lib/os/pagemap';

/**
 * Lines of /proc/self/maps other than anonymous private memory. V8 maps and unmaps 256 KiB heap
 * pages, glibc malloc arenas and code ranges as anonymous private memory whenever it likes (a run of
 * 20,000 allocations left ~36 more such lines than it began with, all V8's), so the raw total cannot
 * be compared; everything dmamem maps (memfds, hugetlb or not) is shared and named, and stays counted.
 */
export function stableMappingCount(): number {
  return stableLines(fs.readFileSync('/proc/self/maps', 'utf8')).length;
}

function stableLines(maps: string): string[] {
  // Fields: range perms offset dev inode [path]. Anonymous private: perms end in 'p', inode 0, no path
  // (or a bracketed pseudo-path like [heap], [anon:...]).
  return maps.split('\n').filter((l) => {
    if (l === '') return false;
    const f = l.trim().split(/\s+/);
    const path = f[5] ?? '';
    const anonymous = f[4] === '0' && (path === '' || path.startsWith('['));
    return !(anonymous && f[1]?.endsWith('p'));
  });
}

/** Mappings of memfds (/memfd:NAME (deleted)), hugetlb ones included: the ones dmamem makes. */
export function memfdMappingCount(): number {
  return fs.readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l.includes('/memfd:')).length;
}

/** fd -> link target for every open fd (for messages). */
export function fdTable(): string[] {
  return fs.readdirSync('/proc/self/fd').map((f) => {
    try {
      return `${f} -> ${fs.readlinkSync(`/proc/self/fd/${f}`)}`;
    } catch {
      return `${f} (gone: the directory handle)`;
    }
  });
}

/** Entries of /proc/self/fd (the directory handle itself included, consistently). */
export function fdCount(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

let gcFn: (() => void) | null | undefined;
/** A full GC, if one can be had without --expose-gc on the command line; else a no-op. */
export function forceGc(): void {
  if (gcFn === undefined) {
    try {
      v8.setFlagsFromString('--expose-gc');
      gcFn = vm.runInNewContext('gc') as () => void;
    } catch {
      gcFn = null;
    }
  }
  gcFn?.();
}

/** GC twice and let FinalizationRegistry callbacks run, so that only real leaks remain. */
export async function settle(): Promise<void> {
  forceGc();
  await new Promise((r) => setImmediate(r));
  forceGc();
  await new Promise((r) => setImmediate(r));
}

let firstPipeSpawn: Promise<void> | null = null;

/**
 * Node opens /dev/null the first time it spawns a child with a 'pipe' in its stdio, and keeps it for
 * the process's life (measured: 'ignore'-only spawns do not). Done once before any leak baseline, so
 * that the first test to spawn such a child is not charged with Node's fd.
 */
function spawnWithPipeOnce(): Promise<void> {
  firstPipeSpawn ??= new Promise((res) => {
    const child = spawn(process.execPath, ['-e', '0'], { stdio: ['ignore', 'ignore', 'pipe'] });
    child.stderr.resume();
    child.on('close', () => res());
  });
  return firstPipeSpawn;
}

/**
 * Registers before/after hooks in the current describe() that fail when the block leaves
 * mappings or fds behind: the /proc/self/maps lines other than anonymous private memory (see
 * stableMappingCount) and the /proc/self/fd entries must be back to their starting values
 * (after a GC, and allowing the runtime a few retries to release its own).
 * @example describe('my layer', () => { expectNoLeaks(); it(...); });
 */
export function expectNoLeaks(): void {
  let maps = 0;
  let fds = 0;
  let mapsText = '';
  let fdText: string[] = [];
  before(async () => {
    // The addon keeps one /proc/self/pagemap fd open for the process's life: open it now so it is
    // part of the baseline rather than counted as a leak of the first test that reads PFNs.
    readPfns(0, 1);
    await spawnWithPipeOnce();
    // Likewise the one empty memfd ('dmamem:reserved') that every address-space reservation maps.
    native.munmap(native.reserve(native.pageSize, native.pageSize), native.pageSize);
    await settle();
    maps = stableMappingCount();
    fds = fdCount();
    mapsText = fs.readFileSync('/proc/self/maps', 'utf8');
    fdText = fdTable();
  });
  after(async function () {
    this.timeout(20000);
    // Worker threads and child processes release their fds and stacks asynchronously: retry briefly.
    for (let i = 0; i < 50; i++) {
      await settle();
      if (stableMappingCount() === maps && fdCount() === fds) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    const newFds = fdTable().filter((f) => !fdText.includes(f));
    assert.equal(fdCount(), fds, `fds of /proc/self/fd are back to the starting count; new:\n${newFds.join('\n')}`);
    const now = fs.readFileSync('/proc/self/maps', 'utf8');
    const was = new Set(stableLines(mapsText));
    const added = stableLines(now).filter((l) => !was.has(l));
    assert.equal(stableMappingCount(), maps, `mappings (other than anonymous private ones) are back to the starting count; new:\n${added.join('\n')}`);
  });
}

/** 2 MiB huge pages a new mapping can still reserve (free_hugepages - resv_hugepages). */
export function hugepagesFree(): number {
  return hugepagePoolFree(2048);
}

/**
 * Whether host PFNs are readable here (CAP_SYS_ADMIN). Tests check the visible result as root and
 * the hidden one (null / NaN, never a fake 0) otherwise; under CI, which runs as root, hidden PFNs
 * are an error rather than the other branch.
 */
export function hostPfnsVisible(): boolean {
  const visible = pfnVisible();
  if (!visible && process.env.CI === 'true') throw new Error('CI must see host PFNs: run it as root (CAP_SYS_ADMIN)');
  return visible;
}

/** Skips the running test, saying why, unless host PFNs are visible (see hostPfnsVisible). */
export function requirePfnsOrSkip(ctx: Mocha.Context): void {
  if (hostPfnsVisible()) return;
  const test = ctx.currentTest ?? ctx.test;
  if (test) test.title += ' [skipped: host PFNs are hidden without CAP_SYS_ADMIN]';
  ctx.skip();
}

/**
 * Skips the running test (saying why and how to fill the pool) unless `n` free 2 MiB pages exist;
 * under CI (CI=true) throws instead, because CI must run the real hugetlb path.
 * @example it('maps hugetlb', function () { requireHugepagesOrSkip(this, 1); ... });
 */
export function requireHugepagesOrSkip(ctx: Mocha.Context, n: number): void {
  const free = hugepagesFree();
  if (free >= n) return;
  const msg = `the 2 MiB hugepage pool has ${free} free pages, ${n} needed; fill it with: ${hugepageAdvice(n)}`;
  if (process.env.CI === 'true') throw new Error(`CI must run the hugetlb path: ${msg}`);
  const test = ctx.currentTest ?? ctx.test;
  if (test) test.title += ` [skipped: ${msg}]`;
  ctx.skip();
}
