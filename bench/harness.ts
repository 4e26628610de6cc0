// The benchmark harness: A/B comparisons measured in the same run, interleaved round by round
// (A B A B ...), each round timing a batch of operations; median and spread per side, and the
// ratio of medians. This VM is noisy, so only ratios measured side by side mean much.

/** Whether a smaller or a larger value is better (time per op vs bytes per second). */
export type Better = 'lower' | 'higher';

/** Median and spread of one side, in the record's unit. */
export interface SideStats {
  label: string;
  median: number;
  /** Interquartile range (25th..75th percentile) and the extremes, in the record's unit. */
  spread: { q1: number; q3: number; min: number; max: number };
  rounds: number;
}

/** One row of the results table. */
export interface BenchResult {
  group: string;
  name: string;
  unit: string;
  better: Better;
  /** The dmamem side. */
  a: SideStats;
  /** The baseline, when there is one. */
  b?: SideStats;
  /**
   * How much better dmamem is than the baseline: b/a for 'lower' units, a/b for 'higher' ones.
   * 10 means ten times faster; 0.8 means 80% of the baseline's speed.
   */
  ratio?: number;
  target?: { text: string; met: boolean };
  /** Anything a reader needs to interpret the number (sizes, counts, caveats). */
  note?: string;
}

/** One side of a comparison: `run(n)` performs n operations; setup is untimed, once. */
export interface Side {
  label: string;
  /** Performs `ops` operations. Everything inside is timed. */
  run(ops: number): void;
}

export interface CompareSpec {
  group: string;
  name: string;
  /** The dmamem side. */
  a: Side;
  /** The baseline side (optional: some rows have an absolute target only). */
  b?: Side;
  /** Operations per timed batch (per side; `bOps` overrides for the baseline). */
  ops: number;
  bOps?: number;
  rounds: number;
  /** How a batch's time becomes the unit: default ns per op. */
  unit?: string;
  /** Converts nanoseconds per op to the reported value (default identity). */
  scale?: (nsPerOp: number) => number;
  better?: Better;
  /** Decides the target from the finished record. */
  target?: (r: BenchResult) => { text: string; met: boolean };
  note?: string;
}

const now = process.hrtime.bigint;

/** Times one batch: nanoseconds per operation. */
export function timeBatch(side: Side, ops: number): number {
  const t0 = now();
  side.run(ops);
  return Number(now() - t0) / ops;
}

function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
}

/** Median and spread of samples already in the reported unit. */
export function stats(label: string, samples: readonly number[]): SideStats {
  const s = [...samples].sort((x, y) => x - y);
  return {
    label,
    median: quantile(s, 0.5),
    spread: { q1: quantile(s, 0.25), q3: quantile(s, 0.75), min: s[0] ?? NaN, max: s[s.length - 1] ?? NaN },
    rounds: s.length,
  };
}

/** Builds a record from per-round samples of each side (already in the unit). */
export function makeResult(
  spec: Pick<CompareSpec, 'group' | 'name' | 'unit' | 'better' | 'target' | 'note'> & { aLabel: string; bLabel?: string },
  aSamples: readonly number[],
  bSamples?: readonly number[],
): BenchResult {
  const better = spec.better ?? 'lower';
  const r: BenchResult = { group: spec.group, name: spec.name, unit: spec.unit ?? 'ns/op', better, a: stats(spec.aLabel, aSamples) };
  if (bSamples !== undefined && spec.bLabel !== undefined) {
    r.b = stats(spec.bLabel, bSamples);
    r.ratio = better === 'lower' ? r.b.median / r.a.median : r.a.median / r.b.median;
  }
  if (spec.note !== undefined) r.note = spec.note;
  if (spec.target) r.target = spec.target(r);
  return r;
}

/**
 * Runs the comparison: one untimed warm-up batch per side, then `rounds` rounds, each timing one
 * batch of A then one of B (the order alternates every round: AB, BA, AB, ... so neither side
 * always runs on a cache the other warmed).
 */
export function compare(spec: CompareSpec): BenchResult {
  const scale = spec.scale ?? ((x: number) => x);
  const bOps = spec.bOps ?? spec.ops;
  spec.a.run(Math.min(spec.ops, Math.max(1, spec.ops >> 2)));
  if (spec.b) spec.b.run(Math.min(bOps, Math.max(1, bOps >> 2)));
  const as: number[] = [];
  const bs: number[] = [];
  for (let i = 0; i < spec.rounds; i++) {
    if (spec.b && i % 2 === 1) bs.push(scale(timeBatch(spec.b, bOps)));
    as.push(scale(timeBatch(spec.a, spec.ops)));
    if (spec.b && i % 2 === 0) bs.push(scale(timeBatch(spec.b, bOps)));
  }
  return makeResult({ ...spec, aLabel: spec.a.label, bLabel: spec.b?.label }, as, spec.b ? bs : undefined);
}

/** Bytes per nanosecond is GB/s: the scale for bandwidth rows measured as ns per byte-batch. */
export const gbPerSecond = (bytes: number) => (nsPerOp: number): number => bytes / nsPerOp;

// ---- progress on stderr ----

/**
 * One updating line `[k/N] name...` when stderr is a terminal, plain lines otherwise. Never writes
 * to stdout (which holds only the table or the JSON).
 */
export class Progress {
  private k = 0;
  private readonly tty: boolean;
  private readonly started = Date.now();

  constructor(private total: number, private readonly enabled = true) {
    this.tty = process.stderr.isTTY === true;
  }

  /** Announces the next benchmark. */
  step(name: string): void {
    if (!this.enabled) return;
    this.k++;
    if (this.k > this.total) this.total = this.k;
    const line = `[${this.k}/${this.total}] ${name}…`;
    if (this.tty) {
      const width = process.stderr.columns ?? 100;
      process.stderr.write(`\r\x1b[2K${line.slice(0, Math.max(10, width - 1))}`);
    } else {
      process.stderr.write(`${line}\n`);
    }
  }

  /** Prints a side remark (a skipped benchmark, a fallback) without breaking the progress line. */
  note(text: string): void {
    if (!this.enabled) return;
    process.stderr.write(this.tty ? `\r\x1b[2K${text}\n` : `${text}\n`);
  }

  done(): void {
    if (!this.enabled) return;
    const secs = ((Date.now() - this.started) / 1000).toFixed(1);
    process.stderr.write(this.tty ? `\r\x1b[2K[${this.k}/${this.total}] done in ${secs} s\n` : `done in ${secs} s\n`);
  }
}

/** What every group gets: the mode, a place to put results, and the progress line. */
export interface BenchContext {
  readonly quick: boolean;
  readonly progress: Progress;
  readonly results: BenchResult[];
  /** Remarks for the report (skips, fallbacks, backing actually obtained). */
  readonly notes: string[];
  /** Rounds for ordinary comparisons in this mode. */
  readonly rounds: number;
}

/** A group of benchmarks: one file of bench/. `steps` is how many progress steps run() will announce. */
export interface BenchGroup {
  readonly name: string;
  steps(quick: boolean): number;
  run(ctx: BenchContext): Promise<void>;
}

/** Announce, measure, record. */
export function record(ctx: BenchContext, name: string, measure: () => BenchResult | BenchResult[]): void {
  ctx.progress.step(name);
  const r = measure();
  if (Array.isArray(r)) ctx.results.push(...r);
  else ctx.results.push(r);
}

/** Lets the event loop breathe between benchmarks (progress output, worker messages, GC). */
export function yieldToLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Target helpers. */
export const targets = {
  /** Ratio at least x (dmamem x times better than the baseline). */
  ratioAtLeast: (x: number, text: string) => (r: BenchResult) => ({ text, met: (r.ratio ?? 0) >= x }),
  /** A-side median below a limit in the record's unit. */
  below: (limit: number, text: string) => (r: BenchResult) => ({ text, met: r.a.median < limit }),
};

/** 4096 -> '4 KiB', 2097152 -> '2 MiB'. */
export function sizeName(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  let v = bytes;
  while (v >= 1024 && i < units.length - 1 && v % 1024 === 0) {
    v /= 1024;
    i++;
  }
  return `${v} ${units[i]}`;
}

let sinkValue = 0;
/** Keeps a batch's result alive so the optimizer cannot drop the work. Call once per batch. */
export function consume(x: number): void {
  sinkValue = (sinkValue + x) | 0;
}
/** The accumulated sink (reported in the JSON so that nothing is provably dead). */
export function sink(): number {
  return sinkValue;
}

/**
 * Counts calls into the native addon while `fn` runs, by wrapping every function of the addon's
 * exports object for the duration. Used to prove "no native call" claims.
 */
export function countNativeCalls(native: object, fn: () => void): number {
  const target = native as Record<string, unknown>;
  const saved = new Map<string, unknown>();
  let calls = 0;
  for (const key of Object.keys(target)) {
    const f = target[key];
    if (typeof f !== 'function') continue;
    saved.set(key, f);
    target[key] = function (this: unknown, ...args: unknown[]): unknown {
      calls++;
      return (f as (...a: unknown[]) => unknown).apply(this, args);
    };
  }
  try {
    fn();
  } finally {
    for (const [key, f] of saved) target[key] = f;
  }
  return calls;
}
