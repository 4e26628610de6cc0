// The fuzzer's parent side: splits N sequences over child processes (one per core), each in a
// memory-limited cgroup when one can be made; when a child dies by a signal (or hangs), replays the
// sequence it was running and shrinks it by deleting steps while the same signal still comes.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { createMemcg, type Memcg } from '../fixtures/memcg';
import { describeOp, type Op } from './ops';

const CHILD = path.resolve(__dirname, '..', 'fixtures', 'no-signals-child.js');

export interface FuzzOptions {
  /** Sequences in all. */
  runs: number;
  /** Child processes run at the same time (default: the number of cores). */
  jobs: number;
  /** First seed; job k uses seed + k (and later children seed + jobs, ...). */
  seed: number;
  minLength: number;
  maxLength: number;
  /** Weight of worker-termination steps (0 = none). */
  workers: number;
  /** Weight of hostile receivers that are real child processes (0 = none). */
  childReceivers: number;
  /** Step kinds left out (see ops.ts), to look past a known crash. */
  exclude: string[];
  /** Huge sizes (only in a memory-limited child: dropped with a note otherwise). */
  huge: boolean;
  allowWideBuffers: boolean;
  /** Touch only each Buffer's own bytes (not its whole `.buffer`): looks past that known crash. */
  viewOnly: boolean;
  /** Only signals (and hangs) fail: leaked SyntaxErrors and broken counts are not reported. */
  lenient: boolean;
  /** Memory limit of each child's cgroup. */
  memLimit: number;
  /** V8 heap limit of each child (MiB). */
  maxOldSpace: number;
  /** A child that runs longer than this is killed and reported as a hang. */
  childTimeoutMs: number;
  /** Time spent shrinking one signal failure by replays. */
  shrinkBudgetMs: number;
  /** After a failure, start another child with the next seed for the sequences not yet run. */
  keepGoing: boolean;
  /** Stop after this many failures (keepGoing only). */
  maxFailures: number;
  log: (line: string) => void;
}

export interface Failure {
  seed: number;
  kind: 'signal' | 'property' | 'hang' | 'error';
  signal: string | null;
  /** Sequences the child had run (including the failing one). */
  atSequence: number;
  report: string;
  ops: Op[];
  shrunk: Op[] | null;
  /** The step the replay printed last before dying. */
  lastStep: string | null;
  ms: number;
}

export interface FuzzResult {
  sequences: number;
  ms: number;
  failures: Failure[];
  notes: string[];
  okLines: string[];
  /** Sequences started in all children (failing ones included) and the children's run time (no shrinking). */
  started: number;
  childMs: number;
}

interface ChildOutcome {
  signal: string | null;
  status: number | null;
  stdout: string;
  stderr: string;
  hung: boolean;
}

/** Runs the child with `args`, in a fresh cgroup when `memcg` is on; never rejects. */
function runChild(args: string[], o: FuzzOptions, useMemcg: boolean, timeoutMs: number): Promise<ChildOutcome> {
  let cg: Memcg | string | null = null;
  const node = [process.execPath, `--max-old-space-size=${o.maxOldSpace}`, CHILD, ...args];
  let argv = node;
  if (useMemcg) {
    cg = createMemcg(o.memLimit);
    if (typeof cg !== 'string') argv = cg.wrap(node);
  }
  return new Promise((resolve) => {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let hung = false;
    child.stdout.setEncoding('utf8').on('data', (s: string) => { stdout = (stdout + s).slice(-200000); });
    child.stderr.setEncoding('utf8').on('data', (s: string) => { stderr = (stderr + s).slice(-50000); });
    const timer = setTimeout(() => { hung = true; child.kill('SIGKILL'); }, timeoutMs);
    child.once('close', (status, signal) => {
      clearTimeout(timer);
      if (cg !== null && typeof cg !== 'string') {
        try { cg.remove(); } catch { /* reported by the next createMemcg */ }
      }
      resolve({ signal, status, stdout, stderr, hung });
    });
  });
}

/** The state file of a child: the sequence it was running and how many it had started. */
function readState(file: string): { n: number; ops: Op[] } {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as { n: number; ops: Op[] };
  } catch {
    return { n: NaN, ops: [] };
  }
}

/** Replays `ops`; returns the signal it died by (or 'hang'), null when it ended, and its last step. */
async function replay(ops: Op[], o: FuzzOptions, useMemcg: boolean, dir: string): Promise<{ died: string | null; lastStep: string | null }> {
  const file = path.join(dir, `replay-${process.pid}-${Math.random().toString(36).slice(2)}.json`);
  fs.writeFileSync(file, JSON.stringify(ops));
  const args = ['--replay', file, ...(o.huge && useMemcg ? ['--huge'] : []), ...(o.allowWideBuffers ? ['--allow-wide'] : []), ...(o.viewOnly ? ['--view-only'] : []), ...(o.lenient ? ['--lenient'] : [])];
  const r = await runChild(args, o, useMemcg, Math.min(o.childTimeoutMs, 60000));
  fs.rmSync(file, { force: true });
  const steps = r.stdout.split('\n').filter((l) => l.startsWith('step '));
  return { died: r.hung ? 'hang' : r.signal, lastStep: steps[steps.length - 1] ?? null };
}

/** Deletes chunks of steps (halves, quarters, ... single steps) while the replay still dies by `signal`. */
async function shrink(ops: Op[], signal: string, o: FuzzOptions, useMemcg: boolean, dir: string): Promise<{ ops: Op[] | null; lastStep: string | null; note: string }> {
  const until = Date.now() + o.shrinkBudgetMs;
  const first = await replay(ops, o, useMemcg, dir);
  if (first.died !== signal) return { ops: null, lastStep: first.lastStep, note: `the replay ${first.died === null ? 'ended normally' : `died by ${first.died}`}: timing-dependent, not shrunk` };
  let cur = ops;
  let lastStep = first.lastStep;
  let tries = 1;
  // Most deaths come from the last step alone (the one running when the child died): try it first.
  const stepNo = Number(/^step (\d+):/.exec(first.lastStep ?? '')?.[1] ?? cur.length - 1);
  const alone = cur.slice(stepNo, stepNo + 1);
  if (alone.length === 1 && cur.length > 1) {
    tries++;
    const r = await replay(alone, o, useMemcg, dir);
    if (r.died === signal) return { ops: alone, lastStep: r.lastStep, note: `${tries} replays: the last step alone` };
  }
  for (let chunk = Math.ceil(cur.length / 2); chunk >= 1 && Date.now() < until; chunk = chunk === 1 ? 0 : Math.ceil(chunk / 2)) {
    for (let start = 0; start < cur.length && Date.now() < until;) {
      const cand = [...cur.slice(0, start), ...cur.slice(start + chunk)];
      if (cand.length === 0) { start += chunk; continue; }
      tries++;
      const r = await replay(cand, o, useMemcg, dir);
      if (r.died === signal) {
        cur = cand;
        lastStep = r.lastStep;
      } else {
        start += chunk;
      }
    }
  }
  return { ops: cur, lastStep, note: `${tries} replays${Date.now() >= until ? ' (shrink budget used up)' : ''}` };
}

function formatOps(ops: readonly Op[]): string {
  return ops.map((op, i) => `    ${i}: ${describeOp(op)}`).join('\n');
}

/** Text of one failure for the console and for assertion messages. */
export function formatFailure(f: Failure): string {
  const lines = [`${f.kind.toUpperCase()}${f.signal ? ` ${f.signal}` : ''} seed=${f.seed} at sequence ${f.atSequence} after ${(f.ms / 1000).toFixed(1)} s`];
  if (f.lastStep) lines.push(`  died at ${f.lastStep}`);
  lines.push(f.report.split('\n').map((l) => `  ${l}`).join('\n'));
  if (f.kind !== 'property') {
    lines.push(`  sequence (${f.ops.length} steps):\n${formatOps(f.ops)}`);
    if (f.shrunk) lines.push(`  shrunk (${f.shrunk.length} steps):\n${formatOps(f.shrunk)}\n  json: ${JSON.stringify(f.shrunk)}`);
  }
  return lines.join('\n');
}

/** Runs the fuzzer; resolves with every failure found (never rejects for a failing child). */
export async function fuzz(o: FuzzOptions): Promise<FuzzResult> {
  const startedAt = Date.now();
  const notes: string[] = [];
  const probe = createMemcg(o.memLimit);
  const useMemcg = typeof probe !== 'string';
  if (typeof probe === 'string') {
    notes.push(`no memory cgroup (${probe}): children run unlimited${o.huge ? ', so huge sizes are left out' : ''}`);
  } else {
    probe.remove();
  }
  const huge = o.huge && useMemcg;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmamem-fuzz-'));
  const failures: Failure[] = [];
  const okLines: string[] = [];
  let remaining = o.runs;
  let nextSeed = o.seed;
  let sequences = 0;
  let started = 0;
  let childMs = 0;
  // A child runs a bounded batch (about a minute here), so that its time limit catches a hang, not a
  // long run: 100,000 sequences are many children one after the other, each with its own seed.
  const perChild = Math.min(CHILD_BATCH, Math.ceil(o.runs / o.jobs));

  const job = async (): Promise<void> => {
    while (remaining > 0 && (failures.length === 0 || (o.keepGoing && failures.length < o.maxFailures))) {
      const runs = Math.min(perChild, remaining);
      remaining -= runs;
      const seed = nextSeed++;
      const state = path.join(dir, `state-${seed}.json`);
      const args = ['--seed', String(seed), '--runs', String(runs), '--state', state, '--min', String(o.minLength), '--max', String(o.maxLength),
        ...(o.exclude.length > 0 ? ['--exclude', o.exclude.join(',')] : []), '--workers', String(o.workers), '--child-receivers', String(o.childReceivers), ...(huge ? ['--huge'] : []), ...(o.allowWideBuffers ? ['--allow-wide'] : []), ...(o.viewOnly ? ['--view-only'] : []), ...(o.lenient ? ['--lenient'] : [])];
      const t0 = Date.now();
      const r = await runChild(args, o, useMemcg, o.childTimeoutMs);
      const ok = /^ok runs=(\d+).*$/m.exec(r.stdout);
      childMs += Date.now() - t0;
      if (r.signal === null && !r.hung && r.status === 0 && ok) {
        sequences += Number(ok[1]);
        started += Number(ok[1]);
        okLines.push(ok[0]);
        continue;
      }
      const st = readState(state);
      const ops = st.ops;
      // fast-check's shrinking runs count too in the child's tally: take its own count when it has one.
      const n = Number(/^FAIL seed=\S+ path=\S+ after (\d+) runs/m.exec(r.stdout)?.[1] ?? st.n);
      if (Number.isFinite(n) && n > 1) sequences += n - 1;
      if (Number.isFinite(n)) started += n;
      // With keepGoing, the sequences this child did not get to go back to the pool.
      if (o.keepGoing && Number.isFinite(n)) remaining += Math.max(0, runs - n);
      const kind: Failure['kind'] = r.hung ? 'hang' : r.signal !== null ? 'signal' : /^FAIL /m.test(r.stdout) ? 'property' : 'error';
      const signal = r.hung ? 'hang' : r.signal;
      const report = kind === 'property'
        ? r.stdout.slice(r.stdout.indexOf('FAIL ')).trim()
        : `${r.hung ? `killed after ${o.childTimeoutMs} ms` : `signal ${r.signal}, status ${r.status}`}\n--- stderr (tail)\n${r.stderr.slice(-1500).trim()}\n--- stdout (tail)\n${r.stdout.slice(-500).trim()}`;
      const f: Failure = { seed, kind, signal, atSequence: n, report, ops, shrunk: null, lastStep: null, ms: Date.now() - t0 };
      failures.push(f);
      o.log(`[fuzz] seed ${seed}: ${kind}${signal ? ` ${signal}` : ''} after ${((Date.now() - t0) / 1000).toFixed(1)} s; ${kind === 'signal' || kind === 'hang' ? 'shrinking by replay...' : ''}`);
      if ((kind === 'signal' || kind === 'hang') && ops.length > 0 && signal !== null) {
        const s = await shrink(ops, signal, o, useMemcg, dir);
        f.shrunk = s.ops;
        f.lastStep = s.lastStep;
        f.report += `\n--- shrinking: ${s.note}`;
      }
      o.log(formatFailure(f));
    }
  };
  try {
    await Promise.all(Array.from({ length: o.jobs }, job));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return { sequences, ms: Date.now() - startedAt, failures, notes, okLines, started, childMs };
}

/** Most sequences one child runs. */
const CHILD_BATCH = 1250;

export const DEFAULTS: FuzzOptions = {
  runs: 10000, jobs: Math.max(1, os.availableParallelism?.() ?? os.cpus().length), seed: Date.now() % 2 ** 31,
  minLength: 20, maxLength: 30, workers: 1, childReceivers: 1, huge: true, exclude: [], allowWideBuffers: false, viewOnly: false, lenient: false,
  memLimit: 512 * 1024 * 1024, maxOldSpace: 384, childTimeoutMs: 600000, shrinkBudgetMs: 60000,
  keepGoing: false, maxFailures: 20, log: (l) => process.stderr.write(`${l}\n`),
};
