// Who else maps a file in this process: /proc/self/maps lines matched by device and inode. Used
// before truncating a memfd, because any mapping past the new end (an alias, a Region.fromFd of
// the same fd, a worker thread's mapping) would raise SIGBUS on its next touch.

import * as fs from 'node:fs';

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
  const st = fs.fstatSync(fd);
  // /proc/PID/maps prints dev as hex major:minor (new_encode_dev split), and the inode in decimal.
  const major = ((st.dev >> 8) & 0xfff).toString(16).padStart(2, '0');
  const minor = ((st.dev & 0xff) | ((st.dev >> 12) & 0xfff00)).toString(16).padStart(2, '0');
  const dev = `${major}:${minor}`;
  const inode = String(st.ino);
  const out: FileMapping[] = [];
  for (const line of fs.readFileSync('/proc/self/maps', 'utf8').split('\n')) {
    const f = line.split(/\s+/, 5);
    if (f[3] !== dev || f[4] !== inode || f[0] === undefined || f[2] === undefined) continue;
    const [start, end] = f[0].split('-').map((x) => Number.parseInt(x, 16));
    out.push({ start: start!, end: end!, offset: Number.parseInt(f[2], 16) });
  }
  return out;
}
