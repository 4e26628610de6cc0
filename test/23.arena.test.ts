// Issue 16, item 1: the arena. Allocations are Buffers over exactly their bytes in one memfd,
// zeroed (or not, allocUnsafe), detached when freed so a reused slot is never visible through an
// old view; double and foreign frees are TypeErrors; sizes and the cap are ENOMEM with figures;
// trim gives pages back; a worker and a child process see allocations through one shared handle;
// no sequence of calls (use after free, close with live buffers, terminated workers) raises a signal.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { Arena } from '../lib/os/arena';
import { viewAddress } from '../lib/os/views';
import { expectNoLeaks, hugepagesFree, memfdMappingCount } from './helpers/leaks';
import { runChild } from './helpers/child';

const MiB = 1 << 20;
const INDEX_JS = JSON.stringify(path.resolve(__dirname, '..', 'lib', 'index.js'));


describe('23 arena', function () {
  this.timeout(60000);
  expectNoLeaks();

  it('alloc gives a zeroed Buffer over exactly its bytes, inside the arena', () => {
    using a = Arena.create({ hugepages: 'off', capacity: 8 * MiB });
    for (const size of [1, 15, 16, 17, 100, 4096, 5000, 65536, 2 * MiB]) {
      const b = a.alloc(size);
      assert.equal(b.length, size);
      assert.equal(b.byteOffset, 0);
      assert.equal(b.buffer.byteLength, size, 'the ArrayBuffer reaches no byte beyond the allocation');
      assert.ok(b.every((x) => x === 0), `alloc(${size}) is zeroed`);
      b.fill(0xab);
      assert.equal(b[size - 1], 0xab);
      a.free(b);
    }
    const x = a.alloc(64);
    const y = a.alloc(64);
    const off = a.offsetOf(x);
    assert.equal(viewAddress(y) - viewAddress(x), a.offsetOf(y) - off, 'offsets are positions in one mapping of the memfd');
    assert.equal(off % 64, 0, 'a slot is aligned to its size class');
    assert.equal(a.offsetOf(x.subarray(8)), off + 8);
  });

  it('a reused slot is zeroed by alloc and not by allocUnsafe', () => {
    using a = Arena.create({ hugepages: 'off', capacity: 4 * MiB });
    const b = a.alloc(4096);
    const off = a.offsetOf(b);
    b.fill(0x5a);
    a.free(b);
    const u = a.allocUnsafe(4000); // same size class: the slot just freed
    assert.equal(a.offsetOf(u), off);
    assert.equal(u[0], 0x5a, 'allocUnsafe leaves the old bytes');
    a.free(u);
    const z = a.alloc(3000);
    assert.equal(a.offsetOf(z), off);
    assert.ok(z.every((x) => x === 0), 'alloc zeroes the reused slot');
  });

  it('free detaches every view; a freed slot is never visible through an old view', () => {
    using a = Arena.create({ hugepages: 'off', capacity: 4 * MiB });
    const b = a.alloc(256);
    const sub = b.subarray(10, 20);
    const u32 = new Uint32Array(b.buffer, 0, 4);
    b[15] = 7;
    a.free(sub); // any view of the allocation frees it
    assert.equal(b.length, 0);
    assert.equal(sub.length, 0);
    assert.equal(u32.length, 0);
    const again = a.alloc(256);
    again.fill(9);
    assert.equal(b[15], undefined, 'the old Buffer reads nothing');
    b[15] = 1; // ignored, not a write into the new owner's bytes
    assert.equal(again[15], 9);
  });

  it('double free, foreign buffers and non-buffers are TypeErrors that change nothing', () => {
    using a = Arena.create({ hugepages: 'off', capacity: 4 * MiB });
    using other = Arena.create({ hugepages: 'off', capacity: 4 * MiB });
    const b = a.alloc(32);
    const keep = a.alloc(32);
    keep[0] = 3;
    const offB = a.offsetOf(b);
    a.free(b);
    assert.throws(() => a.free(b), (e: Error) => e instanceof TypeError && /double free/.test(e.message));
    assert.throws(() => a.free(Buffer.alloc(32)), (e: Error) => e instanceof TypeError && /did not allocate/.test(e.message));
    assert.throws(() => a.free(other.alloc(32)), (e: Error) => e instanceof TypeError && /another arena/.test(e.message));
    assert.throws(() => a.free({} as Buffer), TypeError);
    assert.throws(() => a.offsetOf(b), TypeError);
    assert.equal(a.stats().live, 1);
    assert.equal(keep[0], 3);
    assert.equal(a.offsetOf(a.alloc(32)), offB, 'the freed slot serves the next allocation');
  });

  it('bad sizes: TypeError/RangeError for non-sizes, ENOMEM with figures beyond a chunk or the cap', () => {
    using a = Arena.create({ hugepages: 'off', capacity: 4 * MiB });
    for (const bad of [0, -1, 1.5, NaN, Infinity]) assert.throws(() => a.alloc(bad), RangeError, String(bad));
    assert.throws(() => a.alloc('4' as unknown as number), TypeError);
    for (const huge of [2 * MiB + 1, 2 ** 40, Number.MAX_SAFE_INTEGER]) {
      assert.throws(() => a.alloc(huge), (e: NodeJS.ErrnoException) => e.code === 'ENOMEM' && e.message.includes(`${huge} bytes`) && e.message.includes('chunkSize 2097152'));
    }
    const bs = [a.alloc(MiB), a.alloc(MiB), a.alloc(MiB), a.alloc(MiB)];
    assert.throws(() => a.alloc(MiB), (e: NodeJS.ErrnoException) => e.code === 'ENOMEM' && /arena is full: 2 chunks .*capacity 4194304/.test(e.message));
    assert.throws(() => a.alloc(16), (e: NodeJS.ErrnoException) => e.code === 'ENOMEM', 'no chunk left for another size class either');
    a.free(bs[0]!);
    assert.equal(a.alloc(MiB).length, MiB, 'a freed slot serves again after ENOMEM');
    assert.throws(() => Arena.create({ capacity: 3 * MiB }), RangeError);
    assert.throws(() => Arena.create({ chunkSize: 3 * 4096, hugepages: 'off' }), RangeError);
    assert.throws(() => Arena.create({ hugepages: 'maybe' as 'auto' }), TypeError);
  });

  it('empty chunks of one size class serve another before the arena grows; trim gives pages back', () => {
    using a = Arena.create({ hugepages: 'off', capacity: 4 * MiB });
    const small = Array.from({ length: 1000 }, () => a.alloc(100));
    for (const b of small) a.free(b);
    const big = [a.alloc(2 * MiB), a.alloc(2 * MiB)]; // needs both chunks: the 128 B class's goes
    assert.equal(a.stats().chunks, 2);
    for (const b of big) a.free(b);
    const fd = a.share().fd;
    const before = fs.fstatSync(fd).blocks;
    assert.ok(before * 512 >= 4 * MiB, `the chunks are populated (${before} blocks)`);
    const s = a.stats();
    assert.equal(s.emptyChunks, 2);
    assert.equal(a.trim(), 4 * MiB);
    assert.equal(fs.fstatSync(fd).blocks, 0, "trim punched the pages out of the memfd");
    assert.deepEqual([a.stats().chunks, a.stats().mappedBytes], [0, 0]);
    const c = a.alloc(4096);
    assert.ok(c.every((x) => x === 0));
    assert.equal(a.stats().chunks, 1, 'growth maps a chunk again');
    assert.equal(a.trim(), 0, 'a chunk with a live allocation stays');
  });

  it('stats count live allocations and bytes per size class', () => {
    using a = Arena.create({ hugepages: 'off', capacity: 8 * MiB });
    const b = [a.alloc(10), a.alloc(20), a.alloc(30), a.alloc(5000)];
    const s = a.stats();
    assert.equal(s.live, 4);
    assert.equal(s.liveBytes, 5060);
    assert.equal(s.backing, '4k');
    const byClass = Object.fromEntries(s.classes.filter((c) => c.live > 0).map((c) => [c.size, c.live]));
    assert.deepEqual(byClass, { 16: 1, 32: 2, 8192: 1 });
    a.free(b[1]!);
    assert.equal(a.stats().classes.find((c) => c.size === 32)!.free, 1);
  });

  it('close() detaches live allocations and releases everything; use after close is refused', () => {
    const maps = memfdMappingCount();
    const a = Arena.create({ hugepages: 'off', capacity: 4 * MiB });
    const b = a.alloc(100);
    assert.ok(memfdMappingCount() > maps);
    a.close();
    a.close();
    assert.equal(b.length, 0);
    assert.equal(memfdMappingCount(), maps);
    assert.throws(() => a.alloc(1), (e: NodeJS.ErrnoException) => e.code === 'ERR_DMAMEM_CLOSED');
    assert.throws(() => a.free(b), TypeError);
    assert.throws(() => a.share(), (e: NodeJS.ErrnoException) => e.code === 'ERR_DMAMEM_CLOSED');
  });

  it('hugetlb chunks when the pool has room, and a shared hugetlb arena keeps its pages on trim', function () {
    if (hugepagesFree() < 4) this.skip();
    using a = Arena.create({ hugepages: 'require', capacity: 8 * MiB });
    assert.equal(a.backing, 'hugetlb-2M');
    const b = a.alloc(MiB);
    a.free(b);
    a.share();
    assert.equal(a.trim(), 0);
  });

  it('a worker sees allocations through one handle and (offset, length) per buffer', async () => {
    using a = Arena.create({ hugepages: 'off', capacity: 8 * MiB });
    const handle = a.share();
    const worker = new Worker(
      `const { parentPort } = require('node:worker_threads'); const d = require(${INDEX_JS});
      let peer = null;
      parentPort.on('message', (m) => {
        if (m.handle) { peer = d.Arena.attach(m.handle); return; }
        const b = peer.view(m.offset, m.length);
        const sum = b.reduce((s, x) => s + x, 0);
        b.fill(m.reply);
        parentPort.postMessage({ sum, length: b.length, bufferLength: b.buffer.byteLength });
        if (m.last) { peer.close(); parentPort.postMessage({ closed: b.length }); }
      });`,
      { eval: true },
    );
    try {
      worker.postMessage({ handle });
      const next = (): Promise<{ sum?: number; length?: number; bufferLength?: number; closed?: number }> => new Promise((resolve, reject) => {
        worker.once('message', resolve);
        worker.once('error', reject);
      });
      const bufs = [a.alloc(100), a.alloc(70000), a.alloc(3)];
      for (const [i, b] of bufs.entries()) {
        b.fill(i + 1);
        worker.postMessage({ offset: a.offsetOf(b), length: b.length, reply: 0x40 + i, last: i === bufs.length - 1 });
        const r = await next();
        assert.deepEqual([r.sum, r.length, r.bufferLength], [(i + 1) * b.length, b.length, b.length]);
        assert.ok(b.every((x) => x === 0x40 + i), 'the worker wrote into the same pages');
      }
      assert.equal((await next()).closed, 0, "peer.close() detached the worker's views");
    } finally {
      await worker.terminate();
    }
  });

  it('a child process attaches with the fd as stdio[3] and reads and writes allocations', async () => {
    using a = Arena.create({ hugepages: 'off', capacity: 8 * MiB });
    const handle = a.share();
    const b = a.alloc(5000);
    b.write('hello from the parent');
    const script = `const d = require(${INDEX_JS});
      const peer = d.Arena.attach(${JSON.stringify(handle)}, { fd: 3 });
      const b = peer.view(${a.offsetOf(b)}, 5000);
      process.stdout.write(b.toString('utf8', 0, 21));
      b.write('child', 100);
      peer.close();`;
    const r = await runChild(script, handle.fd);
    assert.equal(r.signal, null, r.stderr);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'hello from the parent');
    assert.equal(b.toString('utf8', 100, 105), 'child');
  });

  it('attach refuses bad handles before mapping anything', () => {
    using a = Arena.create({ hugepages: 'off', capacity: 4 * MiB });
    const h = a.share();
    assert.throws(() => Arena.attach(null as never), TypeError);
    assert.throws(() => Arena.attach({ ...h, chunkSize: 3 } as never), RangeError);
    assert.throws(() => Arena.attach({ ...h, chunkSize: undefined } as never), TypeError);
    assert.throws(() => Arena.attach({ ...h, readOnly: true }), TypeError);
    assert.throws(() => Arena.attach({ ...h, length: 8 * MiB }), RangeError, 'a handle larger than the file');
    using p = Arena.attach(h);
    assert.throws(() => p.view(4 * MiB - 10, 11), RangeError);
    assert.equal(p.view(4 * MiB - 10, 10).length, 10);
  });

  it('no sequence of calls raises a signal: use after free and close, bad frees, huge sizes (child process)', () => {
    const script = `const d = require(${INDEX_JS});
      const tryIt = (f) => { try { f(); } catch {} };
      const a = d.Arena.create({ hugepages: 'off', capacity: 64 << 20 });
      const other = d.Arena.create({ hugepages: 'off', capacity: 4 << 20 });
      const peer = d.Arena.attach(a.share());
      const views = [];
      for (let i = 0; i < 2000; i++) {
        let b;
        try { b = a.alloc(1 + (i * 7919) % 70000); } catch (e) { if (e.code !== 'ENOMEM') throw e; continue; }
        views.push(b, b.subarray(1), new Float64Array(b.buffer, 0, b.length >> 3), peer.view(a.offsetOf(b), b.length));
        if (i % 3 === 0) { a.free(b); tryIt(() => a.free(b)); }
        tryIt(() => a.free(other.alloc(64)));
        tryIt(() => other.free(b));
        tryIt(() => a.alloc(2 ** 40));
        tryIt(() => a.alloc(-1));
        if (i % 500 === 0) a.trim();
      }
      for (const v of views) { tryIt(() => v.fill(1)); v[0] = 2; v[v.length - 1] = 3; }
      a.close();
      for (const v of views) { v[0] = 4; }
      tryIt(() => a.alloc(1)); tryIt(() => a.free(views[0])); tryIt(() => a.trim());
      peer.close();
      for (const v of views) { tryIt(() => v.fill(5)); v[0] = 6; }
      tryIt(() => peer.view(0, 1));
      other.close();
      process.stdout.write('done');`;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60000 });
    assert.equal(r.signal, null, r.stderr);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, 'done');
  });

  it('workers terminated while allocating, freeing and attaching raise no signal and leak nothing (child process)', () => {
    const script = `const { Worker } = require('node:worker_threads'); const d = require(${INDEX_JS});
      const { native } = require(${JSON.stringify(path.resolve(__dirname, '..', 'lib', 'native.js'))});
      const a = d.Arena.create({ hugepages: 'off', capacity: 16 << 20 });
      const handle = a.share();
      const code = \`const { workerData } = require('node:worker_threads'); const d = require(${INDEX_JS.replace(/\\/g, '\\\\')});
        const peer = d.Arena.attach(workerData);
        for (let i = 0; ; i++) {
          const own = d.Arena.create({ hugepages: 'off', capacity: 32 << 20 });
          for (let j = 0; j < 200; j++) { const b = own.alloc(1 + (j * 131) % 9000); b[0] = 1; if (j % 2) own.free(b); }
          peer.view((i * 4096) % (8 << 20), 4096).fill(i & 255);
          if (i % 2) own.close();
        }\`;
      (async () => {
        for (let k = 0; k < 12; k++) {
          const w = new Worker(code, { eval: true, workerData: handle });
          await new Promise((r) => setTimeout(r, 20 + 15 * k));
          await w.terminate();
        }
        a.close();
        const t = native.trackedResources();
        process.stdout.write(JSON.stringify(t));
      })();`;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60000 });
    assert.equal(r.signal, null, r.stderr);
    assert.equal(r.status, 0, r.stderr);
    const t = JSON.parse(r.stdout) as { ranges: number; fds: number };
    assert.equal(t.fds, 0, 'the main thread holds no arena fd after close()');
  });
});
