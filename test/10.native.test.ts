// The native addon against the real kernel: every export exercised with real syscalls, no mocks.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { Worker } from 'node:worker_threads';
import { native, C } from '../lib/native';
import { expectNoLeaks, hostPfnsVisible, requireHugepagesOrSkip, requirePfnsOrSkip } from './helpers/leaks';

const PAGE = native.pageSize;
const MiB2 = 2 * 1024 * 1024;
const RW = C.PROT_READ | C.PROT_WRITE;

interface ErrnoShape extends Error {
  code?: string;
  errno?: number;
  syscall?: string;
  index?: number;
}

/** Runs fn, asserts it throws, and returns the error for shape checks. */
function thrown(fn: () => unknown): ErrnoShape {
  try {
    fn();
  } catch (err) {
    return err as ErrnoShape;
  }
  assert.fail('expected a throw');
}

/** A shared memfd of `size` bytes, mapped read-write; both undone by the returned cleanup. */
function sharedMemfd(size: number, flags = 0): { fd: number; addr: number; free: () => void } {
  const fd = native.memfdCreate('dmamem-test', flags);
  native.ftruncate(fd, size);
  const addr = native.mmap(0, size, RW, C.MAP_SHARED, fd, 0);
  return {
    fd,
    addr,
    free: () => {
      native.munmap(addr, size);
      native.close(fd);
    },
  };
}

/** The /proc/self/maps line of the mapping that starts at `addr`, if any. */
function mapsLine(addr: number): string | undefined {
  const prefix = `${addr.toString(16)}-`;
  return fs.readFileSync('/proc/self/maps', 'utf8').split('\n').find((l) => l.startsWith(prefix));
}

/** VmLck of /proc/self/status in bytes: memory this process has locked. */
function lockedBytes(): number {
  const m = /^VmLck:\s+(\d+) kB$/m.exec(fs.readFileSync('/proc/self/status', 'utf8'));
  return Number(m?.[1] ?? NaN) * 1024;
}

describe('native addon', () => {
  // Every test unmaps and closes what it made (in finally), so the file ends where it began.
  expectNoLeaks();
  describe('constants and system', () => {
    it('exports the page size and the Linux constants', () => {
      assert.equal(PAGE, 4096);
      assert.equal(C.PROT_READ, 1);
      assert.equal(C.MAP_SHARED, 1);
      assert.equal(C.MADV_POPULATE_WRITE, 23);
      assert.equal(C.MFD_HUGE_2MB, 21 << 26);
      assert.equal(C.F_SEAL_FUTURE_WRITE, 0x10);
      assert.equal(C.MREMAP_DONTUNMAP, 4);
      assert.equal(C.MLOCK_ONFAULT, 1);
    });

    it('memlockLimit returns [soft, hard] with -1 for unlimited', () => {
      const [soft, hard] = native.memlockLimit();
      assert.ok(soft === -1 || soft >= 0);
      assert.ok(hard === -1 || hard >= 0);
      if (hard !== -1) assert.ok(soft !== -1 && soft <= hard);
    });

    it('gettid returns the main thread id (== pid on the main thread)', () => {
      assert.equal(native.gettid(), process.pid);
    });

    it('loading on another platform fails with an error that names the supported one', () => {
      const nativeJs = JSON.stringify(path.resolve(__dirname, '..', 'lib', 'native.js'));
      const script = `Object.defineProperty(process, 'platform', { value: 'darwin' });
        try { require(${nativeJs}); console.log('loaded'); } catch (e) { console.log(e.message); }`;
      const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /supports Linux on x86-64 only .*this is darwin on x64/);
    });
  });

  describe('memfd', () => {
    it('creates, sizes, seals; a shrink after F_SEAL_SHRINK fails with EPERM', () => {
      const fd = native.memfdCreate('dmamem-seal', C.MFD_ALLOW_SEALING);
      try {
        assert.ok(fd >= 0);
        native.ftruncate(fd, 8192);
        assert.equal(native.fstatSize(fd), 8192);
        native.fallocate(fd, 0, 0, 8192);
        native.addSeals(fd, C.F_SEAL_SHRINK);
        assert.equal(native.getSeals(fd) & C.F_SEAL_SHRINK, C.F_SEAL_SHRINK);
        const e = thrown(() => native.ftruncate(fd, 4096));
        assert.equal(e.code, 'EPERM');
        assert.equal(e.errno, -1);
        assert.equal(e.syscall, 'ftruncate');
        assert.match(e.message, /^EPERM: .*, ftruncate\(fd=\d+, size=4096\)$/);
        native.ftruncate(fd, 16384); // growing is still allowed
        assert.equal(native.fstatSize(fd), 16384);
      } finally {
        native.close(fd);
      }
    });

    it('open of /proc/self/fd/N and dup give new close-on-exec fds of the same file', () => {
      const fd = native.memfdCreate('dmamem-open', 0);
      const fds: number[] = [];
      try {
        native.ftruncate(fd, 4096);
        fds.push(native.open(`/proc/self/fd/${fd}`, C.O_RDWR));
        fds.push(native.dup(fd));
        for (const other of fds) {
          assert.notEqual(other, fd);
          assert.equal(native.fstatSize(other), 4096);
        }
      } finally {
        for (const other of fds) native.close(other);
        native.close(fd);
      }
      assert.equal(thrown(() => native.close(fd)).code, 'EBADF');
    });

    it('fallocate PUNCH_HOLE | KEEP_SIZE drops the pages of a range: they read back as zeros, the size stays', () => {
      const fd = native.memfdCreate('dmamem-punch', 0);
      const len = 4 * native.pageSize;
      const addr = native.mmap(0, len, C.PROT_READ | C.PROT_WRITE, C.MAP_SHARED, fd, 0);
      try {
        native.ftruncate(fd, len);
        native.memset(addr, 0x5a, len);
        native.fallocate(fd, C.FALLOC_FL_PUNCH_HOLE | C.FALLOC_FL_KEEP_SIZE, native.pageSize, 2 * native.pageSize);
        const out = new Uint8Array(len);
        native.copyOut(addr, len, out, 0);
        assert.equal(out[native.pageSize - 1], 0x5a, 'page 0 kept');
        assert.ok(out.subarray(native.pageSize, 3 * native.pageSize).every((b) => b === 0), 'pages 1-2 punched');
        assert.equal(out[3 * native.pageSize], 0x5a, 'page 3 kept');
        assert.equal(native.fstatSize(fd), len);
        assert.equal(thrown(() => native.fallocate(fd, C.FALLOC_FL_PUNCH_HOLE, 0, native.pageSize)).code, 'EOPNOTSUPP', 'PUNCH_HOLE needs KEEP_SIZE');
      } finally {
        native.munmap(addr, len);
        native.close(fd);
      }
    });
  });

  describe('errors', () => {
    it('munmap of an unaligned address throws a Node-fs-shaped EINVAL', () => {
      const e = thrown(() => native.munmap(0x1001, PAGE));
      assert.ok(e instanceof Error);
      assert.equal(e.code, 'EINVAL');
      assert.equal(e.errno, -22);
      assert.equal(e.syscall, 'munmap');
      assert.equal(e.message, 'EINVAL: Invalid argument, munmap(addr=0x1001, length=4096)');
    });

    it('mmap failures name the call and its arguments in hex', () => {
      const e = thrown(() => native.mmap(0, PAGE, RW, C.MAP_SHARED, 987654, 0));
      assert.equal(e.code, 'EBADF');
      assert.equal(e.errno, -9);
      assert.equal(e.syscall, 'mmap');
      assert.equal(e.message, 'EBADF: Bad file descriptor, mmap(addr=0x0, length=4096, prot=0x3, flags=0x1, fd=987654, offset=0x0)');
    });
    it('every export checks its arguments first: undefined, NaN or 0 is never read as address 0', () => {
      // Node-addon-api reads a non-number as 0, and munmap(0, 8 MiB) unmaps node's own ELF header.
      const nodeHeader = fs.readFileSync('/proc/self/maps', 'utf8').split('\n')[0]!;
      const bad: [string, () => unknown, RegExp][] = [
        ['munmap(undefined)', () => native.munmap(undefined as unknown as number, 8 << 20), /munmap: argument 0 must be an address/],
        ['munmap(NaN)', () => native.munmap(NaN, 8 << 20), /munmap: argument 0 must be an address/],
        ['munmap(0)', () => native.munmap(0, 8 << 20), /munmap: argument 0 must be an address/],
        ['mprotect(1.5)', () => native.mprotect(1.5, PAGE, 0), /mprotect: argument 0 must be an address/],
        ['memset(len "1")', () => native.memset(PAGE, 0, '1' as unknown as number), /memset: argument 2 must be a finite number/],
        ['copyOut(target [])', () => native.copyOut(PAGE, 1, [] as unknown as Uint8Array, 0), /copyOut: argument 2 must be a Uint8Array/],
        ['mapFixedBatch(Array)', () => native.mapFixedBatch(-1, 0, 0, [0, 0, 0] as unknown as Float64Array), /argument 3 must be a Float64Array/],
        ['close(undefined)', () => native.close(undefined as unknown as number), /close: argument 0 must be a finite number/],
        ['memfdCreate(1)', () => native.memfdCreate(1 as unknown as string, 0), /memfdCreate: argument 0 must be a string/],
      ];
      for (const [what, fn, message] of bad) {
        const e = thrown(fn);
        assert.ok(e instanceof TypeError, `${what}: ${e.name}`);
        assert.match(e.message, message, what);
      }
      assert.equal(fs.readFileSync('/proc/self/maps', 'utf8').split('\n')[0], nodeHeader, "node's first mapping is untouched");
    });
  });

  describe('mappings', () => {
    it('reserve() returns exactly length bytes at a 2 MiB multiple', () => {
      const length = 3 * MiB2;
      const addr = native.reserve(length, MiB2);
      try {
        assert.equal(addr % MiB2, 0);
        const vec = native.mincore(addr, length); // ENOMEM if any page of the range is unmapped
        assert.equal(vec.length, length / PAGE);
        native.mprotect(addr, length, C.PROT_NONE); // the whole range is one mapping we own
        // Exactly [addr, addr+length): the over-reservation was trimmed at both ends.
        const line = mapsLine(addr);
        assert.ok(line, 'a mapping starts at the returned address');
        assert.ok(line.startsWith(`${addr.toString(16)}-${(addr + length).toString(16)} ---p `), line);
        assert.match(line, /dmamem:reserved/);
      } finally {
        native.munmap(addr, length);
      }
    });

    it('mapFixedBatch maps memfd ranges into a reservation, aliasing another mapping of the memfd', () => {
      const m = sharedMemfd(2 * PAGE);
      const res = native.reserve(MiB2, MiB2);
      try {
        native.mapFixedBatch(m.fd, RW, C.MAP_SHARED, new Float64Array([res, PAGE, 0, res + 4 * PAGE, PAGE, PAGE]));
        const a = new Uint8Array(native.externalArrayBuffer(res, PAGE));
        const b = new Uint8Array(native.externalArrayBuffer(res + 4 * PAGE, PAGE));
        const whole = new Uint8Array(native.externalArrayBuffer(m.addr, 2 * PAGE));
        a[10] = 0xab;
        b[20] = 0xcd;
        assert.equal(whole[10], 0xab);
        assert.equal(whole[PAGE + 20], 0xcd);
        whole[PAGE + 21] = 0xef;
        assert.equal(b[21], 0xef);
        for (const v of [a, b, whole]) native.detach(v.buffer as ArrayBuffer);
      } finally {
        native.munmap(res, MiB2);
        m.free();
      }
    });

    it('mapFixedBatch failure carries the index of the failing triple', () => {
      const m = sharedMemfd(2 * PAGE);
      const res = native.reserve(4 * PAGE, PAGE);
      try {
        // The second triple's offset is not page-aligned.
        const e = thrown(() =>
          native.mapFixedBatch(m.fd, RW, C.MAP_SHARED, new Float64Array([res, PAGE, 0, res + PAGE, PAGE, 1])),
        );
        assert.equal(e.code, 'EINVAL');
        assert.equal(e.syscall, 'mmap');
        assert.equal(e.index, 1);
        assert.match(e.message, /mmap\(addr=0x[0-9a-f]+, length=4096, prot=0x3, flags=0x11, fd=\d+, offset=0x1\)$/);
      } finally {
        native.munmap(res, 4 * PAGE);
        m.free();
      }
    });

    it('mremap grow keeps the contents', () => {
      const addr = native.mmap(0, PAGE, RW, C.MAP_PRIVATE | C.MAP_ANONYMOUS, -1, 0);
      let cur = addr;
      let len = PAGE;
      try {
        native.memset(addr, 0x5a, PAGE);
        cur = native.mremap(addr, PAGE, 4 * PAGE, C.MREMAP_MAYMOVE, 0);
        len = 4 * PAGE;
        const out = new Uint8Array(4 * PAGE);
        native.copyOut(cur, 4 * PAGE, out, 0);
        assert.ok(out.subarray(0, PAGE).every((x) => x === 0x5a));
        assert.ok(out.subarray(PAGE).every((x) => x === 0));
      } finally {
        native.munmap(cur, len);
      }
    });

    it('mremap shrinks in place and moves to a fixed address (MREMAP_FIXED), keeping the contents', () => {
      const m = sharedMemfd(4 * PAGE);
      const res = native.reserve(8 * PAGE, PAGE);
      let cur = m.addr;
      let len = 4 * PAGE;
      try {
        native.memset(m.addr, 0x3c, 4 * PAGE);
        assert.equal(native.mremap(m.addr, 4 * PAGE, 2 * PAGE, 0, 0), m.addr);
        len = 2 * PAGE;
        assert.ok(mapsLine(m.addr)?.startsWith(`${m.addr.toString(16)}-${(m.addr + 2 * PAGE).toString(16)} `));
        cur = native.mremap(m.addr, 2 * PAGE, 2 * PAGE, C.MREMAP_MAYMOVE | C.MREMAP_FIXED, res + 2 * PAGE);
        assert.equal(cur, res + 2 * PAGE);
        assert.equal(mapsLine(m.addr), undefined, 'the old range is gone');
        const out = new Uint8Array(2 * PAGE);
        native.copyOut(cur, 2 * PAGE, out, 0);
        assert.ok(out.every((x) => x === 0x3c));
        const e = thrown(() => native.mremap(cur, 2 * PAGE, 4 * PAGE, 0, 0)); // would need to move
        assert.equal(e.code, 'ENOMEM');
        assert.equal(e.syscall, 'mremap');
      } finally {
        native.munmap(cur, len);
        native.munmap(res, 8 * PAGE); // what is left of the reservation
        native.close(m.fd);
      }
    });

    it('mprotect read-only, then copyOut still reads', () => {
      const addr = native.mmap(0, PAGE, RW, C.MAP_PRIVATE | C.MAP_ANONYMOUS, -1, 0);
      try {
        native.memset(addr, 7, 16);
        native.mprotect(addr, PAGE, C.PROT_READ);
        const out = new Uint8Array(16);
        native.copyOut(addr, 16, out, 0);
        assert.deepEqual([...out], new Array(16).fill(7));
        assert.equal(thrown(() => native.mprotect(addr + 1, PAGE, C.PROT_READ)).code, 'EINVAL');
      } finally {
        native.munmap(addr, PAGE);
      }
    });
  });

  describe('advice and locking', () => {
    it('madvise POPULATE_WRITE makes every page resident (mincore)', () => {
      const len = 8 * PAGE;
      const addr = native.mmap(0, len, RW, C.MAP_PRIVATE | C.MAP_ANONYMOUS, -1, 0);
      try {
        native.madvise(addr, len, C.MADV_POPULATE_WRITE);
        const vec = native.mincore(addr, len);
        assert.ok(vec instanceof Uint8Array);
        assert.equal(vec.length, 8);
        assert.ok(vec.every((b) => (b & 1) === 1));
        native.madvise(addr, len, C.MADV_DONTNEED);
        assert.equal(thrown(() => native.madvise(addr + 1, PAGE, C.MADV_DONTNEED)).syscall, 'madvise');
      } finally {
        native.munmap(addr, len);
      }
    });

    it('mincore reports touched and untouched pages', () => {
      const len = 4 * PAGE;
      const addr = native.mmap(0, len, RW, C.MAP_PRIVATE | C.MAP_ANONYMOUS, -1, 0);
      try {
        native.memset(addr, 1, 1);
        const vec = native.mincore(addr, len);
        assert.equal(vec.length, 4);
        assert.equal((vec[0] ?? 0) & 1, 1);
        assert.equal((vec[3] ?? 1) & 1, 0);
      } finally {
        native.munmap(addr, len);
      }
    });

    it('mlock / mlock ONFAULT / munlock / msync a small range', () => {
      const len = 2 * PAGE;
      const m = sharedMemfd(len);
      try {
        const before = lockedBytes();
        native.mlock(m.addr, PAGE, 0);
        assert.equal(lockedBytes(), before + PAGE, 'VmLck counts the locked page');
        native.mlock(m.addr + PAGE, PAGE, C.MLOCK_ONFAULT);
        assert.equal(lockedBytes(), before + 2 * PAGE, 'VmLck counts the lock-on-fault page');
        native.munlock(m.addr, len);
        assert.equal(lockedBytes(), before);
        native.msync(m.addr, len, C.MS_SYNC);
        const e = thrown(() => native.mlock(m.addr, PAGE, 0x100));
        assert.equal(e.code, 'EINVAL');
        assert.equal(e.syscall, 'mlock2');
      } finally {
        m.free();
      }
    });
  });

  describe('JS access to mapped bytes', () => {
    it('externalArrayBuffer views the memory; detach zeroes the buffer and its views', () => {
      const m = sharedMemfd(PAGE);
      try {
        const ab = native.externalArrayBuffer(m.addr, PAGE);
        assert.equal(ab.byteLength, PAGE);
        assert.equal(native.addressOf(ab), m.addr);
        const u8 = new Uint8Array(ab);
        u8[0] = 42;
        const out = new Uint8Array(1);
        native.copyOut(m.addr, 1, out, 0);
        assert.equal(out[0], 42);
        native.detach(ab);
        assert.equal(ab.byteLength, 0);
        assert.equal(u8.length, 0);
        assert.equal(native.addressOf(ab), 0);
        native.detach(ab); // already detached: a no-op
        const empty = native.externalArrayBuffer(m.addr, 0);
        assert.equal(empty.byteLength, 0);
      } finally {
        m.free();
      }
    });

    it('creates and detaches 20,000 external ArrayBuffers over the same address', () => {
      const m = sharedMemfd(PAGE);
      try {
        native.memset(m.addr, 9, PAGE);
        for (let i = 0; i < 20_000; i++) {
          const ab = native.externalArrayBuffer(m.addr, PAGE);
          const u8 = new Uint8Array(ab);
          if (u8[i % PAGE] !== 9) assert.fail(`iteration ${i}: wrong byte`);
          native.detach(ab);
          if (u8.length !== 0) assert.fail(`iteration ${i}: view not detached`);
        }
      } finally {
        m.free();
      }
    });

    it('memset, memcpy, copyOut honour the target byteOffset and bounds', () => {
      const m = sharedMemfd(2 * PAGE);
      try {
        native.memset(m.addr, 0x11, 8);
        native.memcpy(m.addr + PAGE, m.addr, 4);
        const backing = new ArrayBuffer(32);
        const target = new Uint8Array(backing, 8, 16);
        native.copyOut(m.addr + PAGE, 6, target, 2);
        assert.deepEqual([...new Uint8Array(backing, 8, 8)], [0, 0, 0x11, 0x11, 0x11, 0x11, 0, 0]);
        assert.ok(new Uint8Array(backing, 0, 8).every((x) => x === 0));
        assert.throws(() => native.copyOut(m.addr, 16, target, 1), RangeError);
      } finally {
        m.free();
      }
    });

    it('addressOf reads ArrayBuffers and SharedArrayBuffers; adjustExternalMemory returns a total', () => {
      assert.ok(native.addressOf(new ArrayBuffer(16)) > 0);
      assert.ok(native.addressOf(new SharedArrayBuffer(16)) > 0);
      assert.equal(native.addressOf(new ArrayBuffer(0)), 0);
      const up = native.adjustExternalMemory(PAGE);
      const down = native.adjustExternalMemory(-PAGE);
      assert.equal(up - down, PAGE);
    });
  });

  describe('physical addresses', () => {
    it('pagemapRead of a touched page: present, with its PFN as root and PFN 0 without CAP_SYS_ADMIN', () => {
      const m = sharedMemfd(2 * PAGE);
      try {
        native.memset(m.addr, 1, 2 * PAGE);
        for (const reopen of [false, true]) {
          const out = new BigUint64Array(2);
          native.pagemapRead(m.addr, 2, out, reopen);
          for (const e of out) {
            assert.equal((e >> 63n) & 1n, 1n, 'present bit');
            if (hostPfnsVisible()) assert.notEqual(e & ((1n << 55n) - 1n), 0n, 'PFN (root)');
            else assert.equal(e & ((1n << 55n) - 1n), 0n, 'the kernel zeroes the PFN without CAP_SYS_ADMIN');
          }
        }
        assert.throws(() => native.pagemapRead(m.addr, 3, new BigUint64Array(2), false), RangeError);
      } finally {
        m.free();
      }
    });

    it('a 2 MiB hugetlb memfd is 512 consecutive PFNs flagged HUGE in kpageflags', function (this: Mocha.Context) {
      requireHugepagesOrSkip(this, 1);
      requirePfnsOrSkip(this);
      const m = sharedMemfd(MiB2, C.MFD_HUGETLB | C.MFD_HUGE_2MB);
      try {
        assert.equal(m.addr % MiB2, 0);
        native.madvise(m.addr, MiB2, C.MADV_POPULATE_WRITE);
        const out = new BigUint64Array(512);
        native.pagemapRead(m.addr, 512, out, false);
        const mask = (1n << 55n) - 1n;
        const first = (out[0] ?? 0n) & mask;
        assert.notEqual(first, 0n);
        assert.equal(first % 512n, 0n, 'a 2 MiB page is 2 MiB aligned physically');
        out.forEach((e, i) => {
          assert.equal((e >> 63n) & 1n, 1n, `page ${i} present`);
          assert.equal(e & mask, first + BigInt(i), `page ${i} consecutive`);
        });
        const flags = new BigUint64Array(1);
        native.kpageflagsRead(Number(first), 1, flags);
        assert.equal(((flags[0] ?? 0n) >> 17n) & 1n, 1n, 'KPF_HUGE');
      } finally {
        m.free();
      }
    });
  });

  describe('worker threads', () => {
    it('a worker loads the addon, maps the same memfd by fd number and sees the bytes', async function (this: Mocha.Context) {
      this.timeout(20_000);
      const m = sharedMemfd(PAGE);
      try {
        native.memset(m.addr, 0x77, 8);
        native.memset(m.addr + 8, 0x78, 1);
        const nativeJs = path.resolve(__dirname, '..', 'lib', 'native.js');
        const script = `
          const { parentPort, workerData } = require('node:worker_threads');
          const { native, C } = require(workerData.nativeJs);
          const addr = native.mmap(0, workerData.size, C.PROT_READ, C.MAP_SHARED, workerData.fd, 0);
          const out = new Uint8Array(9);
          native.copyOut(addr, 9, out, 0);
          native.munmap(addr, workerData.size);
          parentPort.postMessage({ bytes: Array.from(out), tid: native.gettid() });
        `;
        const worker = new Worker(script, { eval: true, workerData: { nativeJs, fd: m.fd, size: PAGE } });
        const reply = await new Promise<{ bytes: number[]; tid: number }>((resolve, reject) => {
          worker.once('message', resolve);
          worker.once('error', reject);
          worker.once('exit', (code) => reject(new Error(`worker exited with ${code} before replying`)));
        });
        await worker.terminate();
        assert.deepEqual(reply.bytes, [0x77, 0x77, 0x77, 0x77, 0x77, 0x77, 0x77, 0x77, 0x78]);
        assert.notEqual(reply.tid, native.gettid());
      } finally {
        m.free();
      }
    });
  });
});
