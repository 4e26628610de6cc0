// Errors of the OS layer: recognising the errno errors the native layer throws, and making
// errors of the same shape (code, errno, syscall) for conditions TypeScript detects itself.

import { constants } from 'node:os';

/** An Error shaped like Node's fs errors. */
export interface ErrnoError extends Error {
  code: string;
  errno: number;
  syscall: string;
}

/**
 * True when `err` is an Error whose `code` is `code` (e.g. 'ENOMEM').
 * @example try { native.mmap(...) } catch (err) { if (!isErrno(err, 'ENOMEM')) throw err; }
 */
export function isErrno(err: unknown, code: string): err is ErrnoError {
  return err instanceof Error && (err as Partial<ErrnoError>).code === code;
}

/**
 * An Error like the ones Node's fs throws: `code`, negative `errno`, `syscall`, and the message
 * "CODE: message". Used where TypeScript knows a syscall would fail, or failed for a reason the
 * errno alone does not explain (e.g. an empty hugepage pool).
 * @example throw errnoError('EPERM', 'ftruncate', 'the memfd is sealed against shrinking (F_SEAL_SHRINK)')
 */
export function errnoError(code: string, syscall: string, message: string): ErrnoError {
  const err = new Error(`${code}: ${message}`) as ErrnoError;
  err.code = code;
  const n = (constants.errno as Record<string, number | undefined>)[code];
  err.errno = n === undefined ? 0 : -n;
  err.syscall = syscall;
  Error.captureStackTrace(err, errnoError);
  return err;
}

/** Error codes of the OS layer itself (not errno values). */
export type DmamemErrorCode =
  | 'ERR_DMAMEM_READONLY'
  | 'ERR_DMAMEM_PROT_NONE'
  | 'ERR_DMAMEM_CLOSED'
  | 'ERR_DMAMEM_BUSY'
  | 'ERR_DMAMEM_SEALED'
  | 'ERR_DMAMEM_UNSUPPORTED'
  | 'ERR_DMAMEM_PEER_CLOSED'
  | 'ERR_DMAMEM_PEER_DEAD';

/** An Error with a literal name and a typed code, for states (not arguments) that forbid a call. */
export class DmamemError extends Error {
  override readonly name = 'DmamemError';
  constructor(
    readonly code: DmamemErrorCode,
    message: string,
  ) {
    super(message);
  }
}
