// The other side of the channel benchmarks, as a child process (process.send) or a worker
// (parentPort): attaches a channel's consumer end, drains rounds of messages, counts baseline
// messages, echoes ping-pongs, and wakes on a futex word for the latency row.

import { parentPort } from 'node:worker_threads';
import { Channel, type ChannelShare } from '../lib/ipc/channel';
import { Region } from '../lib/os/region';
import type { ShareHandle } from '../lib/os/region-share';

type Cmd =
  | { cmd: 'attach'; share: ChannelShare }
  | { cmd: 'chan'; n: number; use: Use }
  | { cmd: 'msgs'; n: number }
  | { cmd: 'm' }
  | { cmd: 'ping' }
  | { cmd: 'futex'; share: ShareHandle }
  | { cmd: 'close' };

/** What the consumer does with each message: reads one byte, reads every byte in place, or copies it out. */
export type Use = 'first' | 'read' | 'copy';

const reply = (msg: unknown): void => {
  if (parentPort) parentPort.postMessage(msg);
  else process.send!(msg);
};

let rx: Channel | null = null;
let counting = 0;
let scratch = Buffer.alloc(0);

async function drain(n: number, use: Use): Promise<void> {
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const m = rx!.tryReceive() ?? (await rx!.receive());
    if (m === null) throw new Error('the producer closed early');
    if (use === 'copy') {
      if (scratch.length < m.length) scratch = Buffer.alloc(m.length);
      m.copy(scratch);
    } else if (use === 'read') {
      // memchr over the whole view for a byte the sender never writes: every byte is read, in place.
      sum += m.indexOf(0xff);
    }
    sum += m[0]!;
  }
  reply({ done: sum });
}

/** Blocks this thread: sleeps on word 1, and for each change bumps word 0 and wakes it; -1 ends. */
function futexEcho(h: ShareHandle): void {
  const r = Region.fromShare(h);
  const a = new Int32Array(r.view(0, 64).buffer);
  reply({ ready: true });
  let seen = 0;
  for (;;) {
    while (Atomics.load(a, 1) === seen) r.wait(4, seen);
    seen = Atomics.load(a, 1);
    if (seen === -1) break;
    Atomics.add(a, 0, 1);
    r.notify(0);
  }
  r.close();
}

function onMessage(msg: Cmd): void {
  switch (msg.cmd) {
    case 'attach':
      rx = Channel.attach(msg.share);
      reply({ attached: true });
      break;
    case 'chan':
      void drain(msg.n, msg.use);
      break;
    case 'msgs':
      counting = msg.n;
      break;
    case 'm':
      if (--counting === 0) reply({ done: 0 });
      break;
    case 'ping':
      reply({ cmd: 'pong' });
      break;
    case 'futex':
      futexEcho(msg.share);
      break;
    case 'close':
      rx?.close();
      if (parentPort) parentPort.close();
      else process.disconnect();
      break;
  }
}

if (parentPort) parentPort.on('message', onMessage);
else process.on('message', onMessage as (m: unknown) => void);
