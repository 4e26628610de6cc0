// The one place that loads the compiled addon, and the typed contract of everything it exports.
// The native layer is thin and stateless: arguments in, one syscall, a value or a thrown errno out.
// Validation happens in TypeScript before these are called; native code trusts its arguments' types.

import { join, resolve } from 'node:path';

/** Linux constants the addon reads from the system headers at build time. */
export interface NativeConstants {
  readonly PROT_NONE: number; readonly PROT_READ: number; readonly PROT_WRITE: number; readonly PROT_EXEC: number;
  readonly MAP_SHARED: number; readonly MAP_PRIVATE: number; readonly MAP_FIXED: number;
  readonly MAP_FIXED_NOREPLACE: number; readonly MAP_ANONYMOUS: number; readonly MAP_POPULATE: number;
  readonly MAP_NORESERVE: number; readonly MAP_HUGETLB: number; readonly MAP_LOCKED: number;
  readonly MFD_CLOEXEC: number; readonly MFD_ALLOW_SEALING: number; readonly MFD_HUGETLB: number;
  readonly MFD_HUGE_2MB: number; readonly MFD_HUGE_1GB: number;
  readonly F_SEAL_SEAL: number; readonly F_SEAL_SHRINK: number; readonly F_SEAL_GROW: number;
  readonly F_SEAL_WRITE: number; readonly F_SEAL_FUTURE_WRITE: number;
  readonly FALLOC_FL_KEEP_SIZE: number; readonly FALLOC_FL_PUNCH_HOLE: number;
  readonly MREMAP_MAYMOVE: number; readonly MREMAP_FIXED: number; readonly MREMAP_DONTUNMAP: number;
  readonly MADV_NORMAL: number; readonly MADV_RANDOM: number; readonly MADV_SEQUENTIAL: number;
  readonly MADV_WILLNEED: number; readonly MADV_DONTNEED: number; readonly MADV_FREE: number;
  readonly MADV_REMOVE: number; readonly MADV_DONTFORK: number; readonly MADV_DOFORK: number;
  readonly MADV_HUGEPAGE: number; readonly MADV_NOHUGEPAGE: number; readonly MADV_DONTDUMP: number;
  readonly MADV_DODUMP: number; readonly MADV_COLLAPSE: number;
  readonly MADV_POPULATE_READ: number; readonly MADV_POPULATE_WRITE: number;
  readonly MLOCK_ONFAULT: number;
  readonly MS_ASYNC: number; readonly MS_SYNC: number; readonly MS_INVALIDATE: number;
  readonly O_RDONLY: number; readonly O_RDWR: number;
}

/**
 * Every OS failure is thrown as an Error shaped like Node's fs errors:
 * `code` ('ENOMEM'), `errno` (negative, as Node does), `syscall` ('mmap'), and a message naming the
 * call and its key arguments, e.g. "ENOMEM: cannot allocate memory, mmap(length=2097152, ...)".
 * Addresses, lengths and offsets are plain numbers (exact below 2^53; user addresses are < 2^47).
 * In a worker that is being terminated nothing is thrown (no JS can run any more, and Node-API
 * refuses to throw): the call just returns, never napi_fatal_error (see native/errors.h).
 */
export interface Native {
  readonly constants: NativeConstants;
  /** sysconf(_SC_PAGESIZE). */
  readonly pageSize: number;

  // --- memfd (native/memfd.cc) ---
  /** memfd_create(name, flags | MFD_CLOEXEC). Returns the fd. */
  memfdCreate(name: string, flags: number): number;
  ftruncate(fd: number, size: number): void;
  fallocate(fd: number, mode: number, offset: number, length: number): void;
  /** fcntl(F_ADD_SEALS). */
  addSeals(fd: number, seals: number): void;
  /** fcntl(F_GET_SEALS). */
  getSeals(fd: number): number;
  /** fstat(fd).st_size */
  fstatSize(fd: number): number;
  /** open(path, flags | O_CLOEXEC) -> fd (used to open /proc/PID/fd/N of a shared memfd). */
  open(path: string, flags: number): number;
  /** dup(fd) with FD_CLOEXEC -> new fd. */
  dup(fd: number): number;
  close(fd: number): void;

  // --- mappings (native/mapping.cc) ---
  /** mmap(addr, length, prot, flags, fd, offset). addr 0 = kernel chooses. Returns the address. */
  mmap(addr: number, length: number, prot: number, flags: number, fd: number, offset: number): number;
  /**
   * Reserve `length` bytes of address space (PROT_NONE, private, MAP_NORESERVE; a mapping of an
   * empty memfd named dmamem:reserved, so /proc/self/maps shows it as ours)
   * starting at a multiple of `align` (a power of two >= page size). Over-reserves and trims.
   */
  reserve(length: number, align: number): number;
  /** Turns [addr, addr+length) back into a PROT_NONE reservation with one MAP_FIXED call. */
  reserveFixed(addr: number, length: number): void;
  /**
   * Many MAP_FIXED | flags mappings of one fd in one native call. `batch` holds triples
   * [addr, length, offset]. Stops at the first failure and throws; the error carries
   * `index` (the failing triple). Triples before it stay mapped: the caller undoes them.
   */
  mapFixedBatch(fd: number, prot: number, flags: number, batch: Float64Array): void;
  /** mremap(old, oldLength, newLength, flags, newAddr) -> new address. */
  mremap(oldAddr: number, oldLength: number, newLength: number, flags: number, newAddr: number): number;
  munmap(addr: number, length: number): void;
  mprotect(addr: number, length: number, prot: number): void;

  // --- advice and locking (native/advise.cc) ---
  madvise(addr: number, length: number, advice: number): void;
  /** mlock2(addr, length, flags); flags 0 or MLOCK_ONFAULT. */
  mlock(addr: number, length: number, flags: number): void;
  munlock(addr: number, length: number): void;
  msync(addr: number, length: number, flags: number): void;
  /** mincore: one byte per page, bit 0 = resident. */
  mincore(addr: number, length: number): Uint8Array;

  // --- JS access to mapped bytes (native/buffer.cc) ---
  /**
   * An external ArrayBuffer over [addr, addr+length) whose finalizer does nothing (the owner
   * unmaps). Throws an Error with code 'ERR_DMAMEM_NO_EXTERNAL_BUFFERS' where the runtime forbids
   * external buffers (V8 sandbox).
   */
  externalArrayBuffer(addr: number, length: number): ArrayBuffer;
  /** napi_detach_arraybuffer: the buffer and all views over it report length 0 afterwards. */
  detach(buffer: ArrayBuffer): void;
  /** napi_adjust_external_memory(delta) -> the adjusted total. */
  adjustExternalMemory(delta: number): number;
  /** memset(addr, byte, length); the caller guarantees the range is mapped writable. */
  memset(addr: number, byte: number, length: number): void;
  /** memcpy(dst, src, length); the caller guarantees both ranges are mapped (dst writable). */
  memcpy(dst: number, src: number, length: number): void;
  /** Copy `length` bytes at `addr` (mapped readable) into target[targetOffset...]. */
  copyOut(addr: number, length: number, target: Uint8Array, targetOffset: number): void;
  /** The address of the first byte of an ArrayBuffer's backing store (0 when detached/empty). */
  addressOf(buffer: ArrayBuffer | SharedArrayBuffer): number;

  // --- the arena's hot path (native/arena.cc) ---
  /**
   * A Buffer whose ArrayBuffer covers exactly [addr, addr+length) (length >= 1), made with V8's
   * external backing store and no finalizer (the owner unmaps and detaches). Undefined in a
   * terminating worker; ERR_DMAMEM_NO_EXTERNAL_BUFFERS where the runtime forbids external buffers.
   */
  arenaBuffer(addr: number, length: number): Buffer;
  /** The same ArrayBuffer without the Buffer (Region views; length >= 1). */
  viewArrayBuffer(addr: number, length: number): ArrayBuffer;

  // --- physical addresses (native/pagemap.cc) ---
  /**
   * Raw 64-bit /proc/self/pagemap entries for `pages` pages starting at page-aligned `addr`,
   * written into out[0..pages). One pread for the whole range. With `reopen` true the file is
   * opened and closed around the read (the DPDK rte_mem_virt2phy way); otherwise a cached fd is used.
   */
  pagemapRead(addr: number, pages: number, out: BigUint64Array, reopen: boolean): void;
  /** Raw /proc/kpageflags entries for [pfn, pfn+count) into out. Throws EACCES/ENOENT if unreadable. */
  kpageflagsRead(pfn: number, count: number, out: BigUint64Array): void;

  // --- teardown (native/teardown.cc) ---
  /**
   * What this JS environment (main thread or worker) has mapped and opened through the addon and
   * not yet released. All of it is unmapped and closed when the environment is torn down, so a
   * worker that ends (even by terminate()) leaves nothing behind.
   */
  trackedResources(): { ranges: number; bytes: number; fds: number };

  // --- shared futexes (native/futex.cc) ---
  /**
   * FUTEX_WAIT (shared) on the 32-bit word at `addr` while it holds `expected` (as uint32):
   * 0 woken ('ok'), 1 'not-equal', 2 'timed-out'. timeoutNs < 0 waits without limit. Sleeps in
   * 50 ms slices so a terminated worker returns (undefined, nothing thrown).
   */
  futexWait(addr: number, expected: number, timeoutNs: number): number;
  /** FUTEX_WAKE (shared): wakes up to `count` waiters on `addr` in any process; returns how many. */
  futexWake(addr: number, count: number): number;
  /**
   * Waits on a pooled native thread (futex_waitv on the word and a private cancel word); the
   * promise settles on this thread. A pending wait keeps the event loop alive, like a timer.
   */
  futexWaitAsync(addr: number, expected: number, timeoutNs: number): [id: number, settled: Promise<'ok' | 'not-equal' | 'timed-out' | 'cancelled'>];
  /** Cancels a pending futexWaitAsync: it settles with 'cancelled'. False if it was not pending. */
  futexCancel(id: number): boolean;
  /** Pending async waits and waiter threads started in this environment (for tests). */
  futexStats(): { pending: number; threads: number };

  // --- descriptor passing (native/ipc.cc) ---
  /** socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC) -> [fd, fd] (not tracked: close with fs.closeSync). */
  socketPair(): [number, number];
  /** sendmsg(sock) of `payload` with `fd` as SCM_RIGHTS -> bytes sent (EPIPE, never SIGPIPE). */
  sendFd(sock: number, fd: number, payload: Uint8Array): number;
  /** recvmsg(sock) into `buffer` (blocking) -> [bytes, fd or -1]; the fd is close-on-exec and the caller's. */
  recvFd(sock: number, buffer: Uint8Array, timeoutMs: number): [number, number];

  // --- system (native/sysinfo.cc) ---
  /** getrlimit(RLIMIT_MEMLOCK) -> [soft, hard], -1 for RLIM_INFINITY. */
  memlockLimit(): [number, number];
  /** The kernel thread id of the caller (gettid), to show which worker runs. */
  gettid(): number;
  /** Whether this binary makes external buffers with V8 directly (built from source) or through Node-API (the prebuilt). */
  readonly v8FastPath: boolean;
}

const supported = process.platform === 'linux' && process.arch === 'x64';

function load(): Native {
  if (!supported) {
    throw new Error(
      `dmamem supports Linux on x86-64 only (memfd, hugetlb, /proc/self/pagemap); ` +
        `this is ${process.platform} on ${process.arch}.`,
    );
  }
  const root = resolve(__dirname, '..', '..');
  // node-gyp-build: this checkout's or install's own build (build/Release, with the V8 fast path)
  // first, else the prebuilt Node-API binary in prebuilds/linux-x64/ (any Node from 20 on). A build
  // of its own that does not load (made for another Node, say) falls back to the prebuilt.
  const prebuilt = join(root, 'prebuilds', 'linux-x64', 'dmamem.napi.node');
  let cause: unknown;
  // What node-gyp-build would pick first, without loading it (two modules and a directory listing at
  // every start): build/Release/dmamem.node, unless its environment variables ask for a prebuilt.
  if (process.env.PREBUILDS_ONLY === undefined && process.env.DMAMEM_PREBUILD === undefined) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      return require(join(root, 'build', 'Release', 'dmamem.node')) as Native;
    } catch {
      // Absent or not loadable here: node-gyp-build looks further (build/Debug, prebuilds/).
    }
  }
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const loadBinding = require('node-gyp-build') as (dir: string) => unknown;
    return loadBinding(root) as Native;
  } catch (err) {
    cause = err;
  }
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return require(prebuilt) as Native;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'MODULE_NOT_FOUND') cause = err;
  }
  throw new Error(
    'dmamem: no native addon could be loaded: neither a build of its own (build/Release) nor the prebuilt ' +
      'binary (prebuilds/linux-x64/dmamem.napi.node). Rebuild it with: npm rebuild dmamem ' +
      '(in a checkout: npm run build); a build needs python3, make and a C++ compiler (g++). ' +
      `Cause: ${cause instanceof Error ? cause.message : String(cause)}`,
  );
}

/** The loaded addon. */
export const native: Native = load();
/** Shorthand for the addon's Linux constants. */
export const C: NativeConstants = native.constants;
