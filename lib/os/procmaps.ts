// What /proc/self/maps says about our own address space: who else maps a file (matched by device
// and inode; before truncating a memfd, any mapping past the new end -- an alias, a Region.fromFd of
// the same fd, a worker's mapping -- would raise SIGBUS), and whether a range is dmamem's own
// PROT_NONE reservation (before mapping over it with MAP_FIXED, which would replace anything).

import { fstatSync, readFileSync } from 'node:fs';

/** One mapping of a file: its virtual range and where in the file it starts. */
export interface FileMapping {
  start: number;
  end: number;
  /** File offset of `start`. */
  offset: number;
}

/**
 * The mappings of the file behind `fd` in this process (every thread), as /proc/self/maps lists
 * them. Not for hot paths: it reads and parses the whole maps file.
 * @example mappingsOfFile(region.fd).filter((m) => m.offset + (m.end - m.start) > newSize)
 */
export function mappingsOfFile(fd: number): FileMapping[] {
  const st = fstatSync(fd);
  // /proc/PID/maps prints dev as hex major:minor (new_encode_dev split), and the inode in decimal.
  const major = ((st.dev >> 8) & 0xfff).toString(16).padStart(2, '0');
  const minor = ((st.dev & 0xff) | ((st.dev >> 12) & 0xfff00)).toString(16).padStart(2, '0');
  const dev = `${major}:${minor}`;
  const inode = String(st.ino);
  const out: FileMapping[] = [];
  for (const line of readFileSync('/proc/self/maps', 'utf8').split('\n')) {
    const f = line.split(/\s+/, 5);
    if (f[3] !== dev || f[4] !== inode || f[0] === undefined || f[2] === undefined) continue;
    const [start, end] = f[0].split('-').map((x) => Number.parseInt(x, 16));
    out.push({ start: start!, end: end!, offset: Number.parseInt(f[2], 16) });
  }
  return out;
}

/** How native.reserve's reservations appear in /proc/self/maps (native/mapping.cc names the memfd). */
const RESERVATION = '/memfd:dmamem:reserved';

/**
 * True when every page of [address, address+length) is a dmamem reservation: a PROT_NONE private
 * mapping of the addon's "dmamem:reserved" memfd (native.reserve / reserveFixed). Nothing else in
 * the process maps that memfd, so a MAP_FIXED over such a range cannot replace anyone's memory.
 * @example isReservedRange(native.reserve(4096, 4096), 4096) // true
 */
export function isReservedRange(address: number, length: number): boolean {
  const end = address + length;
  let covered = address;
  for (const line of readFileSync('/proc/self/maps', 'utf8').split('\n')) {
    const f = line.split(/\s+/, 6);
    if (f[0] === undefined || f[5] === undefined) continue;
    const dash = f[0].indexOf('-');
    const start = Number.parseInt(f[0].slice(0, dash), 16);
    const stop = Number.parseInt(f[0].slice(dash + 1), 16);
    if (stop <= covered) continue;
    if (start > covered) return false; // a gap (unmapped) or the lines passed our start
    if (f[1] !== '---p' || !f[5].startsWith(RESERVATION)) return false;
    covered = stop;
    if (covered >= end) return true;
  }
  return false;
}
