// Issue 9, item 4: the SPSC channel. Order and bytes kept across wrap-around, in slots and records;
// backpressure; a futex wake only when the peer sleeps; between threads and processes (the
// example); a closed peer ends or errors, a dead peer (process killed, worker terminated) errors.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { Channel } from '../lib/ipc/channel';
import { Region } from '../lib/os/region';
import { expectNoLeaks } from './helpers/leaks';

const root = path.resolve(__dirname, '..', '..');
const INDEX_JS = JSON.stringify(path.resolve(__dirname, '..', 'lib', 'index.js'));

const message = (i: number): Buffer => Buffer.alloc(1 + ((i * 131) % 700), (i * 7) & 0xff);

/** Counts Region.prototype.notify calls while `f` runs (the futex wakes the channel makes). */
async function countingNotifies(f: () => Promise<void> | void): Promise<number> {
  const original = Region.prototype.notify;
  let n = 0;
  Region.prototype.notify = function (this: Region, offset: number, count?: number): number {
    n++;
    return original.call(this, offset, count);
  };
  try {
    await f();
  } finally {
    Region.prototype.notify = original;
  }
  return n;
}

describe('21 channel (SPSC ring over shared memory)', function () {
  this.timeout(60000);
  before(() => new Promise((res) => spawn(process.execPath, ['-e', '0'], { stdio: 'ignore' }).on('close', res)));
  expectNoLeaks();

  it('variable-length records keep order and bytes across many wrap-arounds; a full ring refuses (backpressure)', () => {
    using tx = Channel.create('producer', { capacity: 4096 });
    using rx = Channel.attach(tx.share());
    assert.equal(rx.role, 'consumer');
    assert.equal(tx.maxMessage, 2048 - 8);
    let sent = 0;
    let received = 0;
    for (let round = 0; round < 200; round++) {
      while (tx.trySend(message(sent))) sent++;
      assert.ok(sent > received, 'something fit');
      for (let m = rx.tryReceive(); m !== null; m = rx.tryReceive()) {
        assert.deepEqual(m, message(received), `message ${received}`);
        received++;
        if (received % 3 === 0) break; // leave some in the ring: positions drift round the ring
      }
    }
    for (let m = rx.tryReceive(); m !== null; m = rx.tryReceive()) assert.deepEqual(m, message(received++));
    assert.equal(received, sent);
    assert.ok(sent > 500, `${sent} messages (~50 times the ring) went round a 4 KiB ring`);
    assert.ok(tx.trySend(Buffer.alloc(tx.maxMessage)), 'the largest message fits an empty ring wherever the positions are');
    assert.equal(rx.tryReceive()!.length, tx.maxMessage);
  });

  it('fixed-size slots: exactly slotSize bytes each, capacity / slotSize in flight', () => {
    using rx = Channel.create('consumer', { capacity: 64 * 10, slotSize: 64 });
    using tx = Channel.attach(rx.share());
    let n = 0;
    while (tx.trySend(Buffer.alloc(64, n))) n++;
    assert.equal(n, 10);
    for (let i = 0; i < 10; i++) assert.deepEqual(rx.tryReceive(), Buffer.alloc(64, i));
    assert.equal(rx.tryReceive(), null);
    assert.throws(() => tx.trySend(Buffer.alloc(63)), RangeError);
  });

  it('reserve()/commit(): zero-copy send into the ring, shorter commits, across wrap-arounds; nothing visible before commit', async () => {
    using tx = Channel.create('producer', { capacity: 4096 });
    using rx = Channel.attach(tx.share());
    tx.reserve(5)!.write('first');
    assert.equal(rx.tryReceive(), null, 'not visible before commit');
    tx.commit();
    assert.equal(rx.tryReceive()!.toString(), 'first');
    let sent = 0;
    let received = 0;
    for (let round = 0; round < 300; round++) {
      for (let v = tx.reserve(700); v !== null; v = tx.reserve(700)) {
        const m = message(sent++);
        assert.equal(v.length, 700);
        m.copy(v);
        tx.commit(m.length); // records may be shorter than reserved
      }
      for (let r = rx.tryReceive(); r !== null; r = rx.tryReceive()) {
        assert.deepEqual(r, message(received), `message ${received}`);
        if (++received % 3 === 0) break; // leave some in the ring: positions drift round the ring
      }
    }
    for (let r = rx.tryReceive(); r !== null; r = rx.tryReceive()) assert.deepEqual(r, message(received++));
    assert.equal(received, sent);
    assert.ok(sent > 500, `${sent} reservations went round a 4 KiB ring`);
    assert.throws(() => tx.commit(), TypeError, 'commit without a reservation');
    tx.reserve(10)!.fill(1);
    assert.throws(() => tx.reserve(10), TypeError, 'one reservation at a time');
    assert.throws(() => tx.trySend(Buffer.alloc(1)), TypeError, 'no send while a reservation is pending');
    assert.throws(() => tx.commit(11), RangeError, 'longer than reserved');
    tx.commit();
    assert.deepEqual(rx.tryReceive(), Buffer.alloc(10, 1));
    assert.throws(() => tx.reserve(tx.maxMessage + 1), RangeError);
    assert.throws(() => tx.reserve(-1), RangeError);
    assert.throws(() => tx.reserve('1' as never), TypeError);
    assert.throws(() => rx.reserve(1), TypeError, 'the consumer cannot reserve');
    while (tx.trySend(Buffer.alloc(1000)));
    assert.equal(tx.reserve(1000), null, 'full');
    const waiting = tx.reserveAsync(1000);
    while (rx.tryReceive() !== null);
    (await waiting).fill(2);
    tx.commit();
    assert.deepEqual(rx.tryReceive(), Buffer.alloc(1000, 2));

    using slots = Channel.create('producer', { capacity: 256, slotSize: 64 });
    using srx = Channel.attach(slots.share());
    for (let i = 0; i < 20; i++) {
      slots.reserve()!.fill(i);
      slots.commit();
      assert.deepEqual(srx.tryReceive(), Buffer.alloc(64, i));
    }
    assert.throws(() => slots.reserve(63), RangeError);
    slots.reserve(64);
    assert.throws(() => slots.commit(32), RangeError, 'slots are committed whole');
  });

  it('wakes the consumer with a futex only when it sleeps', async () => {
    using tx = Channel.create('producer', { capacity: 1 << 16 });
    using rx = Channel.attach(tx.share());
    const busy = await countingNotifies(() => {
      for (let i = 0; i < 1000; i++) {
        assert.ok(tx.trySend(message(i)));
        assert.deepEqual(rx.tryReceive(), message(i));
      }
    });
    assert.equal(busy, 0, 'no wake while nobody sleeps');
    const slept = await countingNotifies(async () => {
      const got = rx.receive(); // empty ring: the consumer sleeps
      await new Promise((r) => setImmediate(r));
      tx.trySend(Buffer.from('wake'));
      assert.equal((await got)!.toString(), 'wake');
    });
    assert.equal(slept, 1, 'one wake for the sleeping consumer');
  });

  it('send() waits for room and receive() for data, across a worker (blocking receiveSync there)', async () => {
    using tx = Channel.create('producer', { capacity: 8192 });
    const worker = new Worker(
      `const { parentPort, workerData } = require('node:worker_threads');
      const { Channel } = require(${INDEX_JS});
      const rx = Channel.attach(workerData);
      let n = 0, bytes = 0, bad = 0;
      for (let m = rx.receiveSync(); m !== null; m = rx.receiveSync()) {
        if (m.length !== 1 + ((n * 131) % 700) || m[0] !== ((n * 7) & 0xff)) bad++;
        n++; bytes += m.length;
      }
      rx.close(); parentPort.postMessage({ n, bytes, bad });`,
      { eval: true, workerData: tx.share() },
    );
    let bytes = 0;
    for (let i = 0; i < 20000; i++) {
      await tx.send(message(i));
      bytes += message(i).length;
    }
    tx.close();
    const got = await new Promise((res, rej) => (worker.once('message', res), worker.once('error', rej)));
    await new Promise((res) => worker.once('exit', res));
    assert.deepEqual(got, { n: 20000, bytes, bad: 0 });
  });

  it('between processes: the example streams 20000 records to a child and the checksums agree', () => {
    const r = spawnSync(process.execPath, [path.join(root, 'dist', 'examples', 'channel.js'), '20000'], { encoding: 'utf8', timeout: 50000 });
    assert.equal(r.signal, null, r.stderr);
    assert.equal(r.stderr, '');
    assert.equal(r.status, 0, r.stdout);
    assert.match(r.stdout, /^ok: sent 20000 records, the child received 20000 \(checksum equal\)$/m);
  });

  it('a closed producer ends the consumer after the rest is drained; a closed consumer fails the producer', async () => {
    const tx = Channel.create('producer', { capacity: 4096 });
    const rx = Channel.attach(tx.share());
    tx.trySend(Buffer.from('last'));
    tx.close();
    assert.equal(rx.ended, false);
    assert.equal((await rx.receive())!.toString(), 'last');
    assert.equal(await rx.receive(), null);
    assert.equal(rx.ended, true);
    rx.close();

    const tx2 = Channel.create('producer', { capacity: 4096 });
    const rx2 = Channel.attach(tx2.share());
    const blocked = (async () => {
      for (;;) await tx2.send(Buffer.alloc(1000));
    })();
    await new Promise((r) => setTimeout(r, 20));
    rx2.close();
    await assert.rejects(blocked, { code: 'ERR_DMAMEM_PEER_CLOSED' });
    assert.throws(() => tx2.trySend(Buffer.alloc(1)), { code: 'ERR_DMAMEM_PEER_CLOSED' });
    tx2.close();
    assert.throws(() => tx2.trySend(Buffer.alloc(1)), { code: 'ERR_DMAMEM_CLOSED' });
  });

  it('an end closed in one thread wakes the other end blocked in a futex wait in another thread: the producer errors, the consumer ends', async function () {
    this.timeout(20000);
    // livenessMs of a minute: only close()'s wake, not a liveness check, can end these sleeps in time.
    const run = async (blocked: 'sendSync' | 'receiveSync'): Promise<unknown> => {
      const mine = Channel.create(blocked === 'sendSync' ? 'consumer' : 'producer', { capacity: 4096, livenessMs: 60000 });
      const worker = new Worker(
        `const { parentPort, workerData } = require('node:worker_threads');
        const { Channel } = require(${INDEX_JS}); const ch = Channel.attach(workerData, { livenessMs: 60000 });
        const msg = Buffer.alloc(1000);
        if (ch.role === 'producer') while (ch.trySend(msg));
        parentPort.postMessage('about to sleep');
        let out;
        try { out = ch.role === 'producer' ? (ch.sendSync(msg), 'sent') : ch.receiveSync(); } catch (e) { out = e.code; }
        ch.close(); parentPort.postMessage(out);`,
        { eval: true, workerData: mine.share() },
      );
      const msgs: unknown[] = [];
      const second = new Promise((res, rej) => {
        worker.on('message', (m) => msgs.push(m) === 2 && res(m));
        worker.once('error', rej);
      });
      while (msgs.length === 0) await new Promise((r) => setTimeout(r, 5));
      await new Promise((r) => setTimeout(r, 50)); // the worker is now asleep in its futex wait
      mine.close();
      const out = await second;
      await worker.terminate();
      return out;
    };
    assert.equal(await run('sendSync'), 'ERR_DMAMEM_PEER_CLOSED', 'a producer blocked on a full ring');
    assert.equal(await run('receiveSync'), null, 'a consumer blocked on an empty ring: end of messages');
  });

  it('a producer process killed mid-stream gives the waiting consumer ERR_DMAMEM_PEER_DEAD, not a hang', async () => {
    using rx = Channel.create('consumer', { capacity: 4096, livenessMs: 50 });
    const share = rx.share();
    const child = spawn(
      process.execPath,
      ['-e', `const { Channel } = require(${INDEX_JS}); const tx = Channel.attach(${JSON.stringify(share)}, { fd: 3 });
        tx.trySend(Buffer.from('hi')); process.stdout.write('sent'); setInterval(() => {}, 1000);`],
      { stdio: ['ignore', 'pipe', 'inherit', share.region.fd] },
    );
    const closed = new Promise((res) => child.once('close', res));
    await new Promise((res) => child.stdout!.once('data', res));
    assert.equal((await rx.receive())!.toString(), 'hi');
    const waiting = rx.receive();
    child.kill('SIGKILL');
    await assert.rejects(waiting, { name: 'DmamemError', code: 'ERR_DMAMEM_PEER_DEAD' });
    await closed;
  });

  it('a consumer worker terminated while the producer waits for room gives ERR_DMAMEM_PEER_DEAD', async () => {
    using tx = Channel.create('producer', { capacity: 4096, livenessMs: 50 });
    const worker = new Worker(
      `const { parentPort, workerData } = require('node:worker_threads');
      const { Channel } = require(${INDEX_JS}); globalThis.rx = Channel.attach(workerData);
      parentPort.postMessage('attached'); setInterval(() => {}, 1000);`,
      { eval: true, workerData: tx.share() },
    );
    await new Promise((res) => worker.once('message', res));
    const filling = (async () => {
      for (;;) await tx.send(Buffer.alloc(1000));
    })();
    await new Promise((r) => setTimeout(r, 20));
    await worker.terminate();
    await assert.rejects(filling, { code: 'ERR_DMAMEM_PEER_DEAD' });
  });

  it('a receive timeout is ETIMEDOUT; bad input is refused before anything is created', async () => {
    using rx = Channel.create('consumer', { capacity: 4096 });
    await assert.rejects(rx.receive(10), { code: 'ETIMEDOUT' });
    assert.throws(() => rx.receiveSync(0), { code: 'ETIMEDOUT' });
    assert.throws(() => Channel.create('both' as never, { capacity: 4096 }), TypeError);
    assert.throws(() => Channel.create('producer', { capacity: 4095 }), RangeError);
    assert.throws(() => Channel.create('producer', { capacity: 100, slotSize: 64 }), RangeError);
    assert.throws(() => Channel.create('producer', { capacity: 0 }), RangeError);
    assert.throws(() => Channel.create('producer', undefined as never), TypeError);
    assert.throws(() => Channel.create('producer', { capacity: 4096, livenessMs: 0 }), RangeError);
    assert.throws(() => rx.trySend(Buffer.alloc(1)), TypeError, 'the consumer cannot send');
    await assert.rejects(rx.receive(-1), RangeError);
    using tx = Channel.attach(rx.share());
    assert.throws(() => tx.tryReceive(), TypeError, 'the producer cannot receive');
    assert.throws(() => tx.trySend('x' as never), TypeError);
    assert.throws(() => tx.trySend(Buffer.alloc(4096)), RangeError);
    assert.throws(() => Channel.attach(rx.share()), { code: 'ERR_DMAMEM_BUSY' });
    assert.throws(() => Channel.attach(null as never), TypeError);
    using plain = Region.allocate(8192, { hugepages: 'off' });
    assert.throws(() => Channel.attach({ region: plain.share() }), TypeError, 'not a channel');
    assert.throws(() => Channel.attach({ region: rx.share().region }, { livenessMs: -1 }), RangeError);
  });
});
