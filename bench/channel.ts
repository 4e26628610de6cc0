// Channel and futex benchmarks (issue 9): 64 B messages per second through a Channel against
// process.send (two processes) and worker postMessage (two threads), 64 KiB messages against
// memcpy bandwidth, and a notify -> waitAsync round trip against a postMessage round trip.

import { fork, type ChildProcess } from 'node:child_process';
import * as os from 'node:os';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { Channel } from '../lib/ipc/channel';
import { Region } from '../lib/os/region';
import type { Use } from './channel-peer';
import { consume, gbPerSecond, makeResult, targets, yieldToLoop, type BenchContext, type BenchGroup } from './harness';

const PEER = path.join(__dirname, 'channel-peer.js');

/** A peer (child process or worker) spoken to with messages. */
interface Peer {
  send(msg: unknown): void;
  next(): Promise<Record<string, unknown>>;
  on(f: (msg: unknown) => void): void;
  off(f: (msg: unknown) => void): void;
  end(): Promise<void>;
}

function processPeer(): Peer {
  const c: ChildProcess = fork(PEER, [], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  return wrap((m) => c.send(m as object), (f) => c.on('message', f), (f) => c.off('message', f), () => new Promise((r) => c.once('exit', () => r())));
}

function workerPeer(): Peer {
  const w = new Worker(PEER);
  return wrap((m) => w.postMessage(m), (f) => w.on('message', f), (f) => w.off('message', f), () => new Promise((r) => w.once('exit', () => r())));
}

function wrap(send: (m: unknown) => void, on: (f: (m: unknown) => void) => void, off: (f: (m: unknown) => void) => void, exited: () => Promise<void>): Peer {
  return {
    send,
    on,
    off,
    next: () =>
      new Promise((resolve) => {
        const f = (m: unknown): void => {
          off(f);
          resolve(m as Record<string, unknown>);
        };
        on(f);
      }),
    end: async () => {
      const done = exited();
      send({ cmd: 'close' });
      await done;
    },
  };
}

/** Sends n messages of `msg` through the channel, then waits for the peer's 'done'. */
async function channelRound(tx: Channel, peer: Peer, n: number, msg: Uint8Array, use: Use): Promise<number> {
  const done = peer.next();
  peer.send({ cmd: 'chan', n, use });
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) if (!tx.trySend(msg)) await tx.send(msg);
  await done;
  return Number(process.hrtime.bigint() - t0) / n;
}

/** Sends n messages through the peer's own message port, then waits for its 'done'. */
async function messageRound(peer: Peer, n: number, payload: Uint8Array): Promise<number> {
  peer.send({ cmd: 'msgs', n });
  const done = peer.next();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) peer.send({ cmd: 'm', p: payload });
  await done;
  return Number(process.hrtime.bigint() - t0) / n;
}

/** Interleaved async rounds (A B, B A, ...): per-round samples of each side. */
async function rounds(k: number, a: () => Promise<number>, b: () => Promise<number>): Promise<[number[], number[]]> {
  await a();
  await b();
  const as: number[] = [];
  const bs: number[] = [];
  for (let i = 0; i < k; i++) {
    if (i % 2 === 1) bs.push(await b());
    as.push(await a());
    if (i % 2 === 0) bs.push(await b());
    await yieldToLoop();
  }
  return [as, bs];
}

const perSecond = (ns: number): number => 1e9 / ns;

async function messageRate(ctx: BenchContext, kind: 'process' | 'worker'): Promise<void> {
  const peer = kind === 'process' ? processPeer() : workerPeer();
  try {
    using tx = Channel.create('producer', { capacity: 64 * 1024, slotSize: 64 });
    peer.send({ cmd: 'attach', share: tx.share() });
    await peer.next();
    const msg = Buffer.alloc(64, 1);
    const nChan = ctx.quick ? 50_000 : 500_000;
    const nBase = ctx.quick ? 5_000 : 50_000;
    const [as, bs] = await rounds(ctx.rounds, () => channelRound(tx, peer, nChan, msg, 'first'), () => messageRound(peer, nBase, msg));
    const baseline = kind === 'process' ? 'process.send' : 'worker postMessage';
    ctx.results.push(makeResult({
      group: 'channel', name: `64 B messages, two ${kind === 'process' ? 'processes' : 'threads'}`, unit: 'msgs/s', better: 'higher',
      aLabel: 'Channel (slots)', bLabel: baseline,
      target: targets.ratioAtLeast(kind === 'process' ? 10 : 3, `>= ${kind === 'process' ? 10 : 3}x ${baseline}`),
      note: `${nChan} channel / ${nBase} baseline messages per round, counted by the peer`,
    }, as.map(perSecond), bs.map(perSecond)));
  } finally {
    await peer.end();
  }
}

async function bandwidth(ctx: BenchContext): Promise<void> {
  const size = 64 * 1024;
  const slots = 32;
  const peer = workerPeer();
  try {
    using tx = Channel.create('producer', { capacity: slots * size });
    peer.send({ cmd: 'attach', share: tx.share() });
    await peer.next();
    const msg = Buffer.alloc(size, 3);
    const n = ctx.quick ? 2000 : 10000;
    // The baseline copies the same bytes through a ring-sized buffer, as the channel's copies go
    // (a 64 KiB copy into one hot 64 KiB buffer would measure the L2 cache, not memory).
    const src = Buffer.alloc(size, 5);
    const dst = Buffer.alloc(slots * size);
    const memcpy = async (): Promise<number> => {
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < n; i++) src.copy(dst, (i % slots) * size);
      consume(dst[0]!);
      return Number(process.hrtime.bigint() - t0) / n;
    };
    const gb = gbPerSecond(size);
    const load = (): string => `load average ${os.loadavg()[0]!.toFixed(1)} on ${os.availableParallelism()} CPUs`;
    // Zero-copy receive: the consumer reads every byte of its view in place (memchr for a byte
    // that is never sent), so the data crosses from the producer's core to the consumer's.
    const [as, bs] = await rounds(ctx.rounds, () => channelRound(tx, peer, n, msg, 'read'), memcpy);
    ctx.results.push(makeResult({
      group: 'channel', name: '64 KiB messages, two threads', unit: 'GB/s', better: 'higher',
      aLabel: 'Channel (copy in, consumer reads in place)', bLabel: 'memcpy into a 2 MiB ring (Buffer.copy)',
      target: targets.ratioAtLeast(0.8, '>= 80% of memcpy'),
      note: `the producer copies each message into the 2 MiB ring, the consumer reads all its bytes in the view it receives; two threads need two free CPUs (${load()})`,
    }, as.map(gb), bs.map(gb)));
    const [cs, ds] = await rounds(ctx.rounds, () => channelRound(tx, peer, n, msg, 'copy'), memcpy);
    ctx.results.push(makeResult({
      group: 'channel', name: '64 KiB messages, two threads, copied out', unit: 'GB/s', better: 'higher',
      aLabel: 'Channel (copy in, consumer copies out)', bLabel: 'memcpy into a 2 MiB ring (Buffer.copy)',
      note: `informative: a consumer that copies each message out of the ring (two copies per message against one; ${load()})`,
    }, cs.map(gb), ds.map(gb)));
  } finally {
    await peer.end();
  }
}

async function latency(ctx: BenchContext): Promise<void> {
  const futexPeer = workerPeer();
  const echo = workerPeer();
  using r = Region.allocate(4096, { hugepages: 'off' });
  const a = new Int32Array(r.view(0, 64).buffer);
  try {
    futexPeer.send({ cmd: 'futex', share: r.share() });
    await futexPeer.next();
    const n = ctx.quick ? 300 : 2000;
    const futexRound = async (): Promise<number> => {
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < n; i++) {
        const seen = Atomics.load(a, 0);
        Atomics.add(a, 1, 1);
        r.notify(4);
        while (Atomics.load(a, 0) === seen) await r.waitAsync(0, seen);
      }
      return Number(process.hrtime.bigint() - t0) / n;
    };
    const postRound = async (): Promise<number> => {
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < n; i++) {
        const pong = echo.next();
        echo.send({ cmd: 'ping' });
        await pong;
      }
      return Number(process.hrtime.bigint() - t0) / n;
    };
    const [as, bs] = await rounds(ctx.rounds, futexRound, postRound);
    ctx.results.push(makeResult({
      group: 'channel', name: 'wake-up round trip, two threads', unit: 'µs', better: 'lower',
      aLabel: 'notify -> blocking wait -> notify -> waitAsync', bLabel: 'postMessage ping-pong',
      note: 'one round trip per op: main notifies a worker sleeping in wait(), which notifies back to a waitAsync',
    }, as.map((ns) => ns / 1000), bs.map((ns) => ns / 1000)));
  } finally {
    Atomics.store(a, 1, -1);
    r.notify(4);
    await futexPeer.end();
    await echo.end();
  }
}

export const channel: BenchGroup = {
  name: 'channel',
  steps: () => 4,
  async run(ctx: BenchContext): Promise<void> {
    ctx.progress.step('channel: 64 B messages vs process.send');
    await messageRate(ctx, 'process');
    ctx.progress.step('channel: 64 B messages vs worker postMessage');
    await messageRate(ctx, 'worker');
    ctx.progress.step('channel: 64 KiB messages vs memcpy');
    await bandwidth(ctx);
    ctx.progress.step('channel: notify -> waitAsync vs postMessage round trip');
    await latency(ctx);
  },
};
