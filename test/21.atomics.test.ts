// Issue 9, item 2: Atomics over Region memory. load/store/add/compareExchange on Int32Array and
// BigInt64Array views are real locked instructions on the shared pages, so they are coherent with
// another thread's and another process's mapping; what V8 refuses on such (non-shared) buffers
// is pinned down too, as the README documents it.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { native } from '../lib/native';
import { Region } from '../lib/os/region';
import { expectNoLeaks } from './helpers/leaks';

const PAGE = native.pageSize;
const INDEX_JS = JSON.stringify(path.resolve(__dirname, '..', 'lib', 'index.js'));
const N = 200_000;

// The racing side: waits for the start word, then adds N to an int32 and an int64 counter, and
// takes a compareExchange spin lock N/10 times around a plain (non-atomic) increment.
const RACER = `
function race(r) {
  const i32 = new Int32Array(r.view().buffer, 0, 64);
  const i64 = new BigInt64Array(r.view().buffer, 256, 4);
  Atomics.add(i32, 1, 1);                       // ready
  while (Atomics.load(i32, 0) === 0);           // start
  for (let i = 0; i < ${N}; i++) { Atomics.add(i32, 2, 1); Atomics.add(i64, 0, 1n); }
  for (let i = 0; i < ${N / 10}; i++) {
    while (Atomics.compareExchange(i32, 3, 0, 1) !== 0);
    i32[4] = i32[4] + 1;                        // guarded by the lock
    Atomics.store(i32, 3, 0);
  }
}`;

/** Runs the racer here against another racer, returning after both are done. */
function raceHere(r: Region, others: number): void {
  const i32 = new Int32Array(r.view().buffer, 0, 64);
  const deadline = Date.now() + 30000;
  while (Atomics.load(i32, 1) < others) if (Date.now() > deadline) throw new Error('the other racer never became ready');
  Atomics.store(i32, 0, 1);
  // eslint-disable-next-line @typescript-eslint/no-implied-eval
  new Function('r', `${RACER}; race(r);`)(r);
}

function check(r: Region, racers: number): void {
  const i32 = new Int32Array(r.view().buffer, 0, 64);
  const i64 = new BigInt64Array(r.view().buffer, 256, 4);
  assert.equal(Atomics.load(i32, 2), racers * N, 'no int32 add was lost');
  assert.equal(Atomics.load(i64, 0), BigInt(racers * N), 'no int64 add was lost');
  assert.equal(i32[4], (racers * N) / 10, 'the compareExchange lock excluded the other side');
}

describe('21 Atomics over Region memory', function () {
  this.timeout(60000);
  expectNoLeaks();

  it('load/store/add/compareExchange work on Int32Array and BigInt64Array views', () => {
    using r = Region.allocate(PAGE, { hugepages: 'off' });
    const i32 = new Int32Array(r.view().buffer, 0, 4);
    const i64 = new BigInt64Array(r.view().buffer, 8, 2);
    Atomics.store(i32, 0, 5);
    assert.equal(Atomics.add(i32, 0, 2), 5);
    assert.equal(Atomics.compareExchange(i32, 0, 7, 9), 7);
    assert.equal(Atomics.compareExchange(i32, 0, 7, 1), 9, 'a failed compareExchange leaves the value');
    assert.equal(Atomics.load(i32, 0), 9);
    Atomics.store(i64, 0, -1n);
    assert.equal(Atomics.add(i64, 0, 2n), -1n);
    assert.equal(Atomics.exchange(i64, 0, 1n << 62n), 1n);
    assert.equal(r.read(8, 8).readBigInt64LE(0), 1n << 62n, 'the value is in the real memory');
  });

  it('V8 refuses Atomics.wait on these (non-shared) buffers and Atomics.notify wakes nobody: use r.wait/r.notify', () => {
    using r = Region.allocate(PAGE, { hugepages: 'off' });
    const i32 = new Int32Array(r.view().buffer, 0, 4);
    assert.throws(() => Atomics.wait(i32, 0, 0, 0), TypeError);
    assert.equal(Atomics.notify(i32, 0), 0);
    assert.equal(r.wait(0, 0, 0), 'timed-out', "the Region's own wait works on the same word");
  });

  it('coherent with a worker thread mapping the same memfd: no update lost, the lock excludes', async () => {
    using r = Region.allocate(PAGE, { hugepages: 'off' });
    const worker = new Worker(
      `const { workerData, parentPort } = require('node:worker_threads');
      const { Region } = require(${INDEX_JS});
      ${RACER}
      const w = Region.fromShare(workerData); race(w); w.close(); parentPort.postMessage('done');`,
      { eval: true, workerData: r.share() },
    );
    const done = new Promise((res, rej) => (worker.once('message', res), worker.once('error', rej)));
    raceHere(r, 1);
    assert.equal(await done, 'done');
    await new Promise((res) => worker.once('exit', res));
    check(r, 2);
  });

  it('coherent with another process mapping the same memfd', async () => {
    using r = Region.allocate(PAGE, { hugepages: 'off' });
    const h = r.share();
    const child = spawn(
      process.execPath,
      ['-e', `const { Region } = require(${INDEX_JS}); ${RACER}; const c = Region.fromShare(${JSON.stringify(h)}, { fd: 3 }); race(c); c.close();`],
      { stdio: ['ignore', 'ignore', 'pipe', h.fd] },
    );
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((res) => child.on('close', res));
    // Wait for the child to be ready without blocking our loop (its output must drain).
    const i32 = new Int32Array(r.view().buffer, 0, 64);
    while (Atomics.load(i32, 1) < 1) await new Promise((res) => setTimeout(res, 5));
    raceHere(r, 1);
    assert.equal(await exited, 0, stderr);
    check(r, 2);
  });
});
