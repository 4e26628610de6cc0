// Issue 16, items 2-3: a Region costs only the system calls it needs. Every addon call made by
// allocate/close and fromShare is recorded (the addon's exports wrapped for the duration): no
// aligned reservation where the natural alignment suffices, hugetlb populated by its mmap, nothing twice.

import assert from 'node:assert/strict';
import fs = require('node:fs'); // the module object itself: its readFileSync is replaced for one test
import { C, native } from '../lib/native';
import { HUGE_2M } from '../lib/os/backing';
import { Region } from '../lib/os/region';
import { expectNoLeaks, hugepagesFree } from './helpers/leaks';

interface Call { name: string; args: unknown[] }

/** The addon calls `fn` makes, in order (bookkeeping calls that make no syscall left out). */
function nativeCalls(fn: () => void): Call[] {
  const target = native as unknown as Record<string, unknown>;
  const saved = new Map<string, unknown>();
  const calls: Call[] = [];
  for (const key of Object.keys(target)) {
    const f = target[key];
    if (typeof f !== 'function') continue;
    saved.set(key, f);
    target[key] = (...args: unknown[]): unknown => {
      calls.push({ name: key, args });
      return (f as (...a: unknown[]) => unknown)(...args);
    };
  }
  try {
    fn();
  } finally {
    for (const [key, f] of saved) target[key] = f;
  }
  return calls.filter((c) => !['adjustExternalMemory', 'externalArrayBuffer', 'viewArrayBuffer', 'arenaBuffer', 'detach'].includes(c.name));
}

describe('23 Region syscalls', function () {
  expectNoLeaks();

  it("a 4 KiB 'off' Region: memfd_create, fallocate, mmap(MAP_POPULATE); close: munmap, close", () => {
    Region.allocate(4096, { hugepages: 'off' }).close(); // warm: budget and lazy state read once
    let r: Region | null = null;
    const alloc = nativeCalls(() => {
      r = Region.allocate(4096, { hugepages: 'off' });
    });
    assert.deepEqual(alloc.map((c) => c.name), ['memfdCreate', 'fallocate', 'mmap']);
    assert.deepEqual(alloc[1]!.args.slice(1), [0, 0, 4096], 'fallocate mode 0 sizes the file and allocates its pages');
    assert.equal(alloc[2]!.args[0], 0, 'mmap at an address the kernel picks: no reservation first');
    assert.equal((alloc[2]!.args[3] as number) & C.MAP_POPULATE, C.MAP_POPULATE);
    assert.ok(r!.physicalPages().every((p) => p.present), 'mapped and present before the first touch');
    const close = nativeCalls(() => r!.close());
    assert.deepEqual(close.map((c) => c.name), ['munmap', 'close']);
  });

  it('above 1 MiB, shmem is sized by ftruncate and populated by MADV_POPULATE_WRITE (a long fallocate gives up on any signal)', () => {
    let r: Region | null = null;
    const alloc = nativeCalls(() => {
      r = Region.allocate(HUGE_2M + 4096, { hugepages: 'off' });
    });
    assert.deepEqual(alloc.map((c) => c.name), ['memfdCreate', 'ftruncate', 'mmap', 'madvise']);
    assert.equal(alloc[3]!.args[2], C.MADV_POPULATE_WRITE);
    assert.ok(r!.physicalPages().every((p) => p.present));
    r!.close();
  });

  it("'auto' below 2 MiB reads no THP setting (it cannot get a huge page) and makes the same calls", () => {
    Region.allocate(8192).close();
    let r: Region | null = null;
    const files: string[] = [];
    const read = fs.readFileSync;
    (fs as { readFileSync: unknown }).readFileSync = (...args: Parameters<typeof fs.readFileSync>) => {
      files.push(String(args[0]));
      return read(...args);
    };
    let alloc: Call[];
    try {
      alloc = nativeCalls(() => {
        r = Region.allocate(8192);
      });
    } finally {
      (fs as { readFileSync: unknown }).readFileSync = read;
    }
    assert.deepEqual(alloc.map((c) => c.name), ['memfdCreate', 'fallocate', 'mmap']);
    assert.deepEqual(files.filter((f) => f.includes('transparent_hugepage')), []);
    r!.close();
  });

  it("a hugetlb Region is placed 2 MiB-aligned by the kernel and populated by its mmap", function () {
    if (hugepagesFree() < 2) this.skip();
    let r: Region | null = null;
    const alloc = nativeCalls(() => {
      r = Region.allocate(HUGE_2M, { hugepages: 'require' });
    });
    assert.deepEqual(alloc.map((c) => c.name), ['memfdCreate', 'ftruncate', 'mmap']);
    assert.equal((alloc[2]!.args[3] as number) & C.MAP_POPULATE, C.MAP_POPULATE);
    assert.equal(r!.address % HUGE_2M, 0);
    assert.equal(r!.pfns()[0]! !== -1, true, 'populated');
    r!.close();
  });

  it('align2M still reserves an aligned range (the caller asked for it)', () => {
    let r: Region | null = null;
    const alloc = nativeCalls(() => {
      r = Region.allocate(4096, { hugepages: 'off', align2M: true });
    });
    assert.ok(alloc.some((c) => c.name === 'reserve'));
    assert.equal(r!.address % HUGE_2M, 0);
    r!.close();
  });

  it('fromShare maps without a reservation and pre-faults with read faults', () => {
    using owner = Region.allocate(1 << 20, { hugepages: 'off' });
    owner.view().fill(3);
    const h = owner.share();
    let peer: Region | null = null;
    const calls = nativeCalls(() => {
      peer = Region.fromShare(h);
    });
    assert.ok(!calls.some((c) => c.name === 'reserve'), calls.map((c) => c.name).join(','));
    const mmap = calls.find((c) => c.name === 'mmap')!;
    assert.equal(mmap.args[0], 0);
    assert.equal(calls.find((c) => c.name === 'madvise')!.args[2], C.MADV_POPULATE_READ);
    const v = peer!.view();
    assert.equal(v[12345], 3);
    v[1] = 9; // the read-faulted pages are writable in the shared mapping
    assert.equal(owner.view()[1], 9);
    peer!.close();
  });
});
