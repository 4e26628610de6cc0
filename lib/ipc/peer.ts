// Who is at each end of a channel, and whether it still lives: a thread is named by pid, tid and
// its start time (so a recycled pid or tid is not mistaken for the peer), read from /proc.

import * as fs from 'node:fs';
import { native } from '../native';

/** A thread's identity as the header stores it. */
export interface PeerId {
  pid: number;
  tid: number;
  /** Field 22 of /proc/PID/task/TID/stat (clock ticks since boot), low 32 bits. */
  start: number;
}

function startTime(pid: number, tid: number): number | null {
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // The command name (field 2) may hold spaces and parentheses: fields resume after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const state = fields[0];
  if (state === 'Z' || state === 'X') return null; // exited, not yet reaped
  const start = Number(fields[19]);
  return Number.isFinite(start) ? start | 0 : null;
}

/** The calling thread. */
export function self(): PeerId {
  const pid = process.pid;
  const tid = native.gettid();
  return { pid, tid, start: startTime(pid, tid) ?? 0 };
}

/** True while the thread `id` names is alive (same pid, tid and start time). */
export function alive(id: PeerId): boolean {
  const start = startTime(id.pid, id.tid);
  return start !== null && start === id.start;
}
