// Share handles over a Unix-domain socket: the handle's fields as a small JSON payload and its fd
// as SCM_RIGHTS, so a process that did not inherit the memfd receives a working descriptor.

import { native } from '../native';
import { checkShareHandle, type ShareHandle } from './region-share';
import * as v from './validate';

/** The largest payload receiveShare reads: a handle's JSON is far smaller. */
const MAX_PAYLOAD = 4096;

/**
 * A connected pair of Unix-domain sockets (SOCK_SEQPACKET, close-on-exec) to pass shares over:
 * keep one, give the other to a child through spawn's stdio array, then close it here
 * (fs.closeSync). Both are the caller's to close.
 * @example const [mine, theirs] = shareSocketPair(); spawn(cmd, args, { stdio: ['pipe', 'pipe', 'inherit', theirs] }); fs.closeSync(theirs);
 */
export function shareSocketPair(): [number, number] {
  return native.socketPair();
}

/**
 * Sends a share handle (from region.share()) over a Unix-domain socket: its fd travels as
 * SCM_RIGHTS, so the receiver gets its own descriptor of the memfd.
 * @example sendShare(mine, r.share({ readOnly: true }));
 */
export function sendShare(socketFd: number, handle: ShareHandle): void {
  v.assertInteger('socketFd', socketFd);
  const h = checkShareHandle(handle);
  const payload = Buffer.from(JSON.stringify({ length: h.length, offset: h.offset, backing: h.backing, readOnly: h.readOnly }));
  native.sendFd(socketFd, h.fd, payload);
}

export interface ReceiveShareOptions {
  /** How long to wait for a share (default Infinity): past it, an ETIMEDOUT error. */
  timeoutMs?: number;
}

/**
 * Receives one share sent by sendShare, waiting until it arrives or `timeoutMs` has passed (then
 * an Error with code 'ETIMEDOUT'; nothing is lost, a later call can still receive it). The
 * handle's fd is a new descriptor of this process, owned by the caller: map it with
 * Region.fromShare(handle) (which dups it) and close it with fs.closeSync(handle.fd).
 * @example const h = receiveShare(3, { timeoutMs: 5000 }); const r = Region.fromShare(h); fs.closeSync(h.fd);
 */
export function receiveShare(socketFd: number, options?: ReceiveShareOptions): ShareHandle {
  v.assertInteger('socketFd', socketFd, 0, 0x7fffffff);
  const o = v.assertOptions('options', options);
  for (const key of Object.keys(o)) {
    if (key !== 'timeoutMs') throw new TypeError(`receiveShare: unknown option ${JSON.stringify(key)} (the one option is "timeoutMs")`);
  }
  const timeoutMs = o.timeoutMs ?? Infinity;
  if (typeof timeoutMs !== 'number' || Number.isNaN(timeoutMs)) throw new TypeError(`Expected a number of milliseconds or Infinity for timeoutMs but received ${v.describeValue(timeoutMs)}`);
  if (timeoutMs < 0) throw new RangeError(`Expected a non-negative number of milliseconds or Infinity for timeoutMs but received ${v.describeValue(timeoutMs)}`);
  const buf = Buffer.alloc(MAX_PAYLOAD);
  // Beyond ~24 days a wait is as good as for ever (poll takes an int of milliseconds).
  const [n, fd] = native.recvFd(socketFd, buf, timeoutMs >= 0x7fffffff ? -1 : Math.ceil(timeoutMs));
  try {
    if (fd < 0) throw new TypeError(`Expected a share (a descriptor with a handle) on socket ${socketFd} but received ${n === 0 ? 'end of file' : `${n} bytes without a descriptor`}`);
    let fields: unknown;
    try {
      fields = JSON.parse(buf.subarray(0, n).toString());
    } catch {
      throw new TypeError(`Expected a share handle's JSON on socket ${socketFd} but received ${n} other bytes`);
    }
    return checkShareHandle({ ...(fields as object), fd, pid: process.pid });
  } catch (err) {
    if (fd >= 0) native.close(fd);
    throw err;
  }
}
