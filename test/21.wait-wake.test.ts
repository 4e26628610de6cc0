// Issue 9, item 1: wait / waitAsync / notify on 32-bit words of a Region, with shared futexes:
// between the main thread and workers, between processes, cancelled by AbortSignal and by close(),
// and safe when a process exits or a worker is terminated while a wait is pending.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { native } from '../lib/native';
import { Region } from '../lib/os/region';
import { expectNoLeaks } from './helpers/leaks';
import { runChild } from './helpers/child';

const PAGE = native.pageSize;
const INDEX_JS = JSON.stringify(path.resolve(__dirname, '..', 'lib', 'index.js'));



/**
 * Notifies until one waiter was really asleep on the word (the waiter thread may not be there yet).
 * The word itself is left unchanged: a waiter that only arrives after a store would see
 * 'not-equal', so the tests pass data in other words and wake on an unchanged one.
 */
async function notifyOne(r: Region, offset: number): Promise<number> {
  for (let i = 0; i < 10000; i++) {
    const n = r.notify(offset, 1);
    if (n > 0) return n;
    await new Promise((res) => setTimeout(res, 1));
  }
  return 0;
}

const i32 = (r: Region): Int32Array => new Int32Array(r.view().buffer, 0, r.length / 4);

describe('21 wait and wake on Region memory', function () {
  this.timeout(30000);
  before(() => runChild('0')); // Node opens /dev/null on the first spawn and keeps it
  expectNoLeaks();
  after(() => assert.equal(native.futexStats().pending, 0, 'no async wait is left pending'));

  it("wait: 'not-equal' when the word differs, 'timed-out' after the timeout; notify with no waiter wakes 0", () => {
    using r = Region.allocate(PAGE, { hugepages: 'off' });
    const w = i32(r);
    w[1] = 7;
    assert.equal(r.wait(4, 6, 1000), 'not-equal');
    assert.equal(r.wait(4, 7, 5), 'timed-out');
    assert.equal(r.wait(4, 7, 0), 'timed-out');
    assert.equal(r.notify(4), 0);
    w[2] = -1;
    assert.equal(r.wait(8, 0xffffffff, 0), 'timed-out', 'uint32 and int32 spellings of the same word are equal');
    assert.equal(r.wait(8, -1, 0), 'timed-out');
  });

  it("waitAsync settles 'ok' when notified, and notify counts the waiter it woke", async () => {
    using r = Region.allocate(PAGE, { hugepages: 'off' });
    const p = r.waitAsync(0, 0);
    assert.equal(await notifyOne(r, 0), 1);
    assert.equal(await p, 'ok');
    assert.equal(await r.waitAsync(0, 1), 'not-equal');
    assert.equal(await r.waitAsync(0, 0, 5), 'timed-out');
    assert.equal(native.futexStats().pending, 0);
  });

  it('waitAsync does not block the event loop while it waits', async () => {
    using r = Region.allocate(PAGE, { hugepages: 'off' });
    let ticks = 0;
    const p = r.waitAsync(0, 0, 1000);
    while (ticks < 5) {
      await new Promise((res) => setImmediate(res));
      ticks++;
    }
    assert.equal(await notifyOne(r, 0), 1, 'the loop ran while the waiter slept');
    assert.equal(await p, 'ok');
  });

  it('a worker blocked in wait() is woken by the main thread, and the main thread by the worker', async () => {
    using r = Region.allocate(PAGE, { hugepages: 'off' });
    const worker = new Worker(
      `const { parentPort, workerData } = require('node:worker_threads');
      const { Region } = require(${INDEX_JS});
      const w = Region.fromShare(workerData);
      const a = new Int32Array(w.view().buffer, 0, 4);
      parentPort.postMessage('ready');
      const res = w.wait(0, 0);
      const seen = Atomics.load(a, 2);
      while (w.notify(4) === 0) w.wait(12, 0, 1); // until the main thread sleeps on word 1
      w.close();
      parentPort.postMessage(res + ' ' + seen);`,
      { eval: true, workerData: r.share() },
    );
    const msg = (): Promise<unknown> => new Promise((res, rej) => (worker.once('message', res), worker.once('error', rej)));
    assert.equal(await msg(), 'ready');
    const back = r.waitAsync(4, 0);
    const a = i32(r);
    Atomics.store(a, 2, 42);
    assert.equal(await notifyOne(r, 0), 1);
    assert.equal(await msg(), 'ok 42');
    assert.equal(await back, 'ok');
    await new Promise((res) => worker.once('exit', res));
  });

  it('shared futexes work across processes: a child wakes our waitAsync, we wake its wait()', async () => {
    using r = Region.allocate(PAGE, { hugepages: 'off', name: 'futex-xproc' });
    const h = r.share();
    const parentWaits = r.waitAsync(0, 0);
    const child = runChild(
      `const { Region } = require(${INDEX_JS});
      const c = Region.fromShare(${JSON.stringify(h)}, { fd: 3 });
      const a = new Int32Array(c.view().buffer, 0, 4);
      Atomics.store(a, 2, 1);
      // Wake the parent until it was asleep, then sleep on word 1 until the parent wakes us.
      while (c.notify(0) === 0) c.wait(0, 12345, 1);
      const res = c.wait(4, 0, 20000);
      process.stdout.write(res + ' ' + Atomics.load(a, 3)); c.close();`,
      h.fd,
    );
    assert.equal(await parentWaits, 'ok');
    const a = i32(r);
    assert.equal(Atomics.load(a, 2), 1);
    Atomics.store(a, 3, 5);
    assert.equal(await notifyOne(r, 4), 1, 'the child was asleep on word 1 and one notify woke it');
    const res = await child;
    assert.equal(res.stderr, '');
    assert.equal(res.stdout, 'ok 5');
  });

  it('close() rejects pending waits with ERR_DMAMEM_CLOSED; waiters of an alias on the same word are not woken', async () => {
    const r = Region.allocate(PAGE, { hugepages: 'off' });
    using alias = r.alias();
    const mine = [r.waitAsync(0, 0), r.waitAsync(0, 0, 60000)];
    const other = alias.waitAsync(0, 0, 50);
    r.close();
    for (const p of mine) await assert.rejects(p, { name: 'DmamemError', code: 'ERR_DMAMEM_CLOSED' });
    assert.equal(await other, 'timed-out', "closing r did not wake the alias's waiter as 'ok'");
    assert.equal(native.futexStats().pending, 0);
  });

  it('an AbortSignal cancels a waitAsync with its reason; an aborted signal rejects at once', async () => {
    using r = Region.allocate(PAGE, { hugepages: 'off' });
    const ac = new AbortController();
    const p = r.waitAsync(0, 0, Infinity, { signal: ac.signal });
    const sibling = r.waitAsync(0, 0, 50);
    ac.abort(new Error('stop'));
    await assert.rejects(p, { message: 'stop' });
    assert.equal(await sibling, 'timed-out', 'the cancel woke only its own waiter');
    await assert.rejects(r.waitAsync(0, 0, Infinity, { signal: AbortSignal.abort() }), { name: 'AbortError' });
    assert.equal(native.futexStats().pending, 0);
  });

  it('read-only shares can wait and notify; the word is the one the writer changes', async () => {
    using r = Region.allocate(PAGE, { hugepages: 'off' });
    using ro = Region.fromShare(r.share({ readOnly: true }));
    assert.equal(ro.writable, false);
    const p = ro.waitAsync(8, 0);
    assert.equal(await notifyOne(r, 8), 1);
    assert.equal(await p, 'ok');
    const q = r.waitAsync(8, 0);
    assert.equal(await notifyOne(ro, 8), 1, 'a read-only mapping wakes the writer');
    assert.equal(await q, 'ok');
    Atomics.store(i32(r), 2, 3);
    assert.equal(ro.wait(8, 0, 0), 'not-equal', 'the read-only mapping sees the store');
  });

  it('rejects bad arguments before any system call: TypeError, RangeError, ERR_DMAMEM_CLOSED, PROT_NONE', () => {
    const r = Region.allocate(PAGE, { hugepages: 'off' });
    for (const f of [(o: unknown) => r.wait(o as number, 0, 0), (o: unknown) => r.notify(o as number), (o: unknown) => r.waitAsync(o as number, 0, 0)]) {
      assert.throws(() => f(2), RangeError, 'misaligned');
      assert.throws(() => f(PAGE), RangeError, 'past the end');
      assert.throws(() => f(PAGE - 2), RangeError);
      assert.throws(() => f(-4), RangeError);
      assert.throws(() => f('0'), TypeError);
      assert.throws(() => f(undefined), TypeError);
    }
    assert.throws(() => r.wait(0, '0' as unknown as number, 0), TypeError);
    assert.throws(() => r.wait(0, 1.5, 0), RangeError);
    assert.throws(() => r.wait(0, 2 ** 32, 0), RangeError);
    assert.throws(() => r.wait(0, 0, -1), RangeError);
    assert.throws(() => r.wait(0, 0, NaN), RangeError);
    assert.throws(() => r.wait(0, 0, '5' as unknown as number), TypeError);
    assert.throws(() => r.notify(0, -1), RangeError);
    assert.throws(() => r.notify(0, 1.5), RangeError);
    assert.throws(() => r.waitAsync(0, 0, 0, { signal: {} as AbortSignal }), TypeError);
    assert.throws(() => r.waitAsync(0, 0, 0, 5 as unknown as object), TypeError);
    r.protect('none');
    assert.throws(() => r.wait(0, 0, 0), { code: 'ERR_DMAMEM_PROT_NONE' });
    assert.throws(() => r.notify(0), { code: 'ERR_DMAMEM_PROT_NONE' });
    r.protect('read');
    assert.equal(r.wait(0, 0, 0), 'timed-out');
    r.close();
    assert.throws(() => r.wait(0, 0, 0), { code: 'ERR_DMAMEM_CLOSED' });
    assert.throws(() => r.waitAsync(0, 0, 0), { code: 'ERR_DMAMEM_CLOSED' });
    assert.throws(() => r.notify(0), { code: 'ERR_DMAMEM_CLOSED' });
    assert.throws(() => r.wait(2, 0, 0), RangeError, 'argument errors come first');
    assert.equal(native.futexStats().pending, 0, 'nothing was started');
  });

  it('a process that exits with waits pending exits cleanly; a pending wait keeps it alive until it settles', async () => {
    const exiting = await runChild(
      `const { Region } = require(${INDEX_JS});
      const r = Region.allocate(4096, { hugepages: 'off' });
      for (let i = 0; i < 8; i++) r.waitAsync(0, 0).catch(() => {});
      setTimeout(() => process.exit(0), 20);`,
    );
    assert.equal(exiting.signal, null);
    assert.equal(exiting.stderr, '');
    assert.equal(exiting.code, 0);
    const kept = await runChild(
      `const { Region } = require(${INDEX_JS});
      const r = Region.allocate(4096, { hugepages: 'off' });
      r.waitAsync(0, 0, 30).then((res) => { process.stdout.write(res); r.close(); });`,
    );
    assert.equal(kept.stderr, '');
    assert.equal(kept.stdout, 'timed-out', 'the process stayed alive until the wait settled');
  });

  it('process.exit() while a worker is blocked in wait() and another has waitAsync pending exits cleanly', function () {
    this.timeout(30000);
    const script = `const { Worker } = require('node:worker_threads');
      const { Region } = require(${INDEX_JS});
      const r = Region.allocate(4096, { hugepages: 'off' });
      const code = (mode) => \`const { workerData, parentPort } = require('node:worker_threads');
        const { Region } = require(${INDEX_JS.replace(/\\/g, '\\\\')});
        const w = Region.fromShare(workerData);
        parentPort.postMessage('go');
        if ('\${mode}' === 'sync') w.wait(0, 0); else for (let i = 0; i < 4; i++) w.waitAsync(0, 0);\`;
      let ready = 0;
      for (const mode of ['sync', 'async']) {
        const w = new Worker(code(mode), { eval: true, workerData: r.share() });
        w.once('message', () => { if (++ready === 2) setTimeout(() => { process.stdout.write('exiting'); process.exit(0); }, 50); });
      }`;
    const res = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 25000 });
    assert.equal(res.signal, null, res.stderr.slice(-2000));
    assert.equal(res.stderr, '');
    assert.equal(res.status, 0);
    assert.equal(res.stdout, 'exiting');
  });

  it('workers terminated while blocked in wait() or with waitAsync pending end without a signal', function () {
    this.timeout(60000);
    const script = `const { Worker } = require('node:worker_threads');
      const { Region } = require(${INDEX_JS});
      const r = Region.allocate(4096, { hugepages: 'off' });
      const code = (mode) => \`const { workerData, parentPort } = require('node:worker_threads');
        const { Region } = require(${INDEX_JS.replace(/\\/g, '\\\\')});
        const w = Region.fromShare(workerData);
        parentPort.postMessage('go');
        if ('\${mode}' === 'sync') w.wait(0, 0); else for (let i = 0; i < 4; i++) w.waitAsync(0, 0);\`;
      let done = 0;
      const total = 40;
      function one(i) {
        const w = new Worker(code(i % 2 ? 'sync' : 'async'), { eval: true, workerData: r.share() });
        w.once('message', () => setTimeout(() => w.terminate(), Math.random() * 20));
        w.once('exit', () => { if (++done === total) { r.close(); process.stdout.write('ok ' + done); } else if (i + 2 < total) one(i + 2); });
      }
      one(0); one(1);`;
    const res = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 55000 });
    assert.equal(res.signal, null, res.stderr.slice(-2000));
    assert.equal(res.stderr, '');
    assert.equal(res.status, 0);
    assert.equal(res.stdout, 'ok 40');
  });
});
