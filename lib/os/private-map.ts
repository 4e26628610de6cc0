// A private (copy-on-write) mapping of a shared memfd, for memory the process may read but must
// never write into the file: pinned read-only user memory as a device worker reaches it. Reads see
// the file; a stray write would stay in this mapping's own copy instead of faulting. Internal.

import fs from 'node:fs';
import { C, native } from '../native';
import { sealAgainstShrinking } from './region-share';
import { detachInternal, internalArrayBuffer } from './views';

export interface PrivateMapping {
  /** The mapped bytes (detached by close()). */
  readonly bytes: Uint8Array;
  /** Unmaps; idempotent. */
  close(): void;
}

/**
 * Maps `length` bytes of `fd` from `offset` MAP_PRIVATE, readable and (privately) writable; the fd
 * is not kept. As for shared mappings the file is sealed against shrinking first where it takes
 * seals, then it must hold the whole range, so no access can fault past its end.
 * @example const m = mapPrivate(fd, 4096, 0); m.bytes[0]; m.close();
 */
export function mapPrivate(fd: number, length: number, offset: number): PrivateMapping {
  sealAgainstShrinking(fd);
  const size = fs.fstatSync(fd).size;
  if (offset + length > size) throw new RangeError(`mapPrivate: ${length} bytes from offset ${offset} leave the ${size}-byte file`);
  const address = native.mmap(0, length, C.PROT_READ | C.PROT_WRITE, C.MAP_PRIVATE, fd, offset);
  const buffer = internalArrayBuffer(address, length);
  let open = true;
  return {
    bytes: new Uint8Array(buffer),
    close() {
      if (!open) return;
      open = false;
      detachInternal(buffer);
      native.munmap(address, length);
    },
  };
}
