// The other side of the arena group's sharing rows, as a worker (workerData.flag: answers through
// an Int32Array flag) or a child process (stdio[3]: a Unix socket, answers with one byte): maps
// what it is given (a Region share, or a POSIX shm name under /dev/shm), touches every page, unmaps.

import * as fs from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { C, native } from '../lib/native';
import { Region } from '../lib/os/region';
import type { ShareHandle } from '../lib/os/region-share';

const PAGE = native.pageSize;

function touch(b: Uint8Array): number {
  let acc = 0;
  for (let o = 0; o < b.length; o += PAGE) acc += ++b[o]!;
  return acc;
}

/** A Region share: map (dup'ed fd), touch, close. */
function mapShare(h: ShareHandle): number {
  const r = Region.fromShare(h);
  try {
    return touch(r.view());
  } finally {
    r.close();
  }
}

/** POSIX shm as glibc's shm_open does it: open /dev/shm/NAME, mmap MAP_SHARED, touch, munmap. */
function mapShm(name: string, size: number): number {
  const fd = fs.openSync(`/dev/shm/${name}`, fs.constants.O_RDWR);
  try {
    const addr = native.mmap(0, size, C.PROT_READ | C.PROT_WRITE, C.MAP_SHARED, fd, 0);
    const view = native.arenaBuffer(addr, size);
    const acc = touch(view);
    native.detach(view.buffer as ArrayBuffer);
    native.munmap(addr, size);
    return acc;
  } finally {
    fs.closeSync(fd);
  }
}

if (parentPort !== null) {
  const flag = new Int32Array(workerData.flag as SharedArrayBuffer);
  parentPort.on('message', (m: { share?: ShareHandle; shm?: string; size: number; end?: boolean }) => {
    if (m.end) process.exit(0);
    if (m.share) mapShare(m.share);
    else mapShm(m.shm!, m.size);
    Atomics.store(flag, 0, 1);
    Atomics.notify(flag, 0);
  });
} else {
  const buf = Buffer.alloc(4096);
  for (;;) {
    const [n, fd] = native.recvFd(3, buf, -1);
    if (n === 0 && fd < 0) break;
    // With a descriptor: sendShare's handle fields; without: { shm, size }.
    const msg = JSON.parse(buf.subarray(0, n).toString()) as Omit<ShareHandle, 'fd' | 'pid'> & { shm?: string; size?: number };
    if (fd >= 0) {
      mapShare({ ...msg, fd, pid: process.pid });
      native.close(fd);
    } else {
      mapShm(msg.shm!, msg.size!);
    }
    fs.writeSync(3, Buffer.from([1]));
  }
}
