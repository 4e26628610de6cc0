// Example: a producer in this process streams variable-length records to a consumer in a child
// process over a dmamem Channel (shared memory, futex wake-ups only when the consumer sleeps).
// Run: node dist/examples/channel.js [messages]   (the child is this same file with 'consumer')

import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { Channel, type ChannelShare } from '../lib/index';

/** A cheap checksum both sides compute over every byte they saw. */
function sum(buf: Uint8Array, acc: number): number {
  for (let i = 0; i < buf.length; i++) acc = (acc * 31 + buf[i]!) >>> 0;
  return acc;
}

async function producer(count: number): Promise<void> {
  using tx = Channel.create('producer', { capacity: 64 * 1024 });
  const share: ChannelShare = tx.share();
  // The memfd goes to the child as its fd 3; the rest of the handle as JSON.
  const child = spawn(process.execPath, [__filename, 'consumer'], {
    stdio: ['ignore', 'pipe', 'inherit', share.region.fd],
    env: { ...process.env, CHANNEL: JSON.stringify(share) },
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve));

  let check = 0;
  for (let i = 0; i < count; i++) {
    const msg = Buffer.alloc(1 + ((i * 7919) % 3000), i & 0xff); // 1..3000 bytes
    check = sum(msg, check);
    await tx.send(msg); // waits only when the ring is full (backpressure)
  }
  tx.close(); // the consumer drains what is left, then receive() gives null
  const code = await exited;
  const [n, theirs] = out.trim().split(' ').map(Number);
  const ok = code === 0 && n === count && theirs === check;
  process.stdout.write(`${ok ? 'ok' : 'MISMATCH'}: sent ${count} records, the child received ${n} (checksum ${theirs === check ? 'equal' : 'different'})\n`);
  if (!ok) process.exitCode = 1;
}

async function consumer(): Promise<void> {
  const share = JSON.parse(process.env.CHANNEL!) as ChannelShare;
  using rx = Channel.attach(share, { fd: 3 });
  fs.closeSync(3); // attach dup'ed it
  let n = 0;
  let check = 0;
  for (let m = await rx.receive(); m !== null; m = await rx.receive()) {
    check = sum(m, check); // m is a view into shared memory, valid until the next receive
    n++;
  }
  process.stdout.write(`${n} ${check}\n`);
}

if (process.argv[2] === 'consumer') void consumer();
else void producer(Number(process.argv[2] ?? 20000));
