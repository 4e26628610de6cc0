// Example: one Region shared with a worker thread (postMessage of its share handle) and with a
// child process (the memfd as the child's fd 3); each writes its mark, the owner waits on a word of
// the shared memory with a real futex until both are done.
// Run: node dist/examples/share-worker-and-child.js   (the child is this file with 'child')

import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { Region, type ShareHandle } from '../lib/index';

const DONE = 0; // word 0 (bytes 0..3): how many peers are done
const MARKS = 64; // byte 64: the worker's mark, byte 65: the child's

/** Int32 words over the start of a region's memory (Atomics work on them: locked instructions). */
function words(r: Region): Int32Array {
  const v = r.view(0, 64);
  return new Int32Array(v.buffer, v.byteOffset, 16);
}

/** A peer: map the share, write its mark, count itself done and wake the owner. */
function peer(handle: ShareHandle, which: number, fd?: number): void {
  using r = fd === undefined ? Region.fromShare(handle) : Region.fromShare(handle, { fd });
  r.view()[MARKS + which] = 0xa0 + which;
  Atomics.add(words(r), DONE / 4, 1);
  r.notify(DONE);
}

async function owner(): Promise<void> {
  using r = Region.allocate(4096, { hugepages: 'off' });
  const handle = r.share();
  const worker = new Worker(__filename, { workerData: handle });
  const child = spawn(process.execPath, [__filename, 'child'], {
    stdio: ['ignore', 'inherit', 'inherit', r.fd],
    env: { ...process.env, SHARE: JSON.stringify(handle) },
  });
  // Listen at once: the child may be gone before the owner's waits are over.
  const childClosed = new Promise((resolve) => child.on('close', resolve));
  const done32 = words(r);
  for (let done = Atomics.load(done32, 0); done < 2; done = Atomics.load(done32, 0)) {
    await r.waitAsync(DONE, done, 10_000); // a shared futex: the child is another process
  }
  await childClosed;
  await worker.terminate();
  const [w, c] = [r.view()[MARKS], r.view()[MARKS + 1]];
  const ok = w === 0xa0 && c === 0xa1;
  process.stdout.write(`${ok ? 'ok' : 'MISMATCH'}: worker wrote 0x${w!.toString(16)}, child wrote 0x${c!.toString(16)}\n`);
  if (!ok) process.exitCode = 1;
}

if (!isMainThread) {
  peer(workerData as ShareHandle, 0);
  parentPort!.close();
} else if (process.argv[2] === 'child') {
  peer(JSON.parse(process.env.SHARE!) as ShareHandle, 1, 3);
  fs.closeSync(3);
} else {
  void owner();
}
