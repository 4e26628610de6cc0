// Completions (kernel/sched/completion.c): init_completion, complete, complete_all and the waits,
// with wait_for_completion_timeout as a promise of the jiffies left (0 on timeout). Time in jiffies
// at HZ = 250 (x86 distributions' CONFIG_HZ_250).

export const HZ = 250;
/** MAX_SCHEDULE_TIMEOUT: wait without a limit. */
export const MAX_SCHEDULE_TIMEOUT = 0x7fffffff;
const UINT_MAX = 0xffffffff;

/** msecs_to_jiffies: rounded up, as the kernel does. */
export function msecs_to_jiffies(ms: number): number {
  if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < 0) throw new RangeError(`msecs_to_jiffies: Expected a non-negative number of milliseconds but received ${String(ms)}`);
  return Math.ceil((ms * HZ) / 1000);
}

/** jiffies_to_msecs. */
export function jiffies_to_msecs(j: number): number {
  return (j * 1000) / HZ;
}

/** struct completion. */
export class Completion {
  /** How many complete() calls are not yet consumed by a wait (UINT_MAX after complete_all). */
  done = 0;
  /** Waiters in arrival order. */
  readonly waiters: (() => void)[] = [];
}

function check(fn: string, x: unknown): Completion {
  if (!(x instanceof Completion)) throw new TypeError(`${fn}: Expected a struct completion (new Completion() or init_completion()) but received ${String(x)}`);
  return x;
}

/** init_completion: a new completion, or `x` reset to not done. */
export function init_completion(x?: Completion): Completion {
  if (x === undefined) return new Completion();
  check('init_completion', x).done = 0;
  return x;
}

/** reinit_completion: not done again (waiters stay). */
export function reinit_completion(x: Completion): void {
  check('reinit_completion', x).done = 0;
}

/** complete: one waiter (or the next wait) proceeds. */
export function complete(x: Completion): void {
  check('complete', x);
  if (x.done !== UINT_MAX) x.done++;
  const w = x.waiters.shift();
  if (w !== undefined) w();
}

/** complete_all: every waiter, and every later wait, proceeds. */
export function complete_all(x: Completion): void {
  check('complete_all', x);
  x.done = UINT_MAX;
  for (const w of x.waiters.splice(0)) w();
}

/** completion_done: true when a wait would not block. */
export function completion_done(x: Completion): boolean {
  return check('completion_done', x).done > 0;
}

/** try_wait_for_completion: consumes a completion if there is one. */
export function try_wait_for_completion(x: Completion): boolean {
  check('try_wait_for_completion', x);
  if (x.done === 0) return false;
  if (x.done !== UINT_MAX) x.done--;
  return true;
}

/**
 * wait_for_completion_timeout: resolves with the jiffies left (at least 1) once completed, or 0
 * when `timeout` jiffies pass first. The wait lets the event loop run (interrupt handlers included).
 */
export function wait_for_completion_timeout(x: Completion, timeout: number): Promise<number> {
  check('wait_for_completion_timeout', x);
  if (typeof timeout !== 'number' || !Number.isInteger(timeout) || timeout < 0) throw new RangeError(`wait_for_completion_timeout: Expected a non-negative integer of jiffies for timeout but received ${String(timeout)}`);
  if (try_wait_for_completion(x)) return Promise.resolve(Math.max(timeout, 1));
  if (timeout === 0) return Promise.resolve(0);
  const t0 = performance.now();
  return new Promise((resolve) => {
    let timer: NodeJS.Timeout | null = null;
    const waiter = (): void => {
      if (timer !== null) clearTimeout(timer);
      if (x.done !== UINT_MAX) x.done--;
      if (timeout === MAX_SCHEDULE_TIMEOUT) resolve(timeout);
      else resolve(Math.max(1, timeout - Math.floor(((performance.now() - t0) * HZ) / 1000)));
    };
    x.waiters.push(waiter);
    if (timeout !== MAX_SCHEDULE_TIMEOUT) {
      timer = setTimeout(() => {
        const i = x.waiters.indexOf(waiter);
        if (i >= 0) x.waiters.splice(i, 1);
        resolve(0);
      }, jiffies_to_msecs(timeout));
    }
  });
}

/** wait_for_completion: without a limit. Misuse throws at the call, not as a rejection nobody may await. */
export function wait_for_completion(x: Completion): Promise<void> {
  return wait_for_completion_timeout(x, MAX_SCHEDULE_TIMEOUT).then(() => undefined);
}
