// `npm run fuzz -- --runs N [--jobs J] [--seed S] [--min A --max B] [--workers W] [--child-receivers C]
// [--no-huge] [--exclude kind,kind] [--allow-wide] [--view-only] [--lenient] [--keep-going] [--max-failures F] [--shrink-ms T]`: the property test of
// test/80 run longer. Prints the seed and the shrunk failing sequence of every failure, then one
// line with the counts and the time; exits 1 when anything failed.

import { DEFAULTS, formatFailure, fuzz, type FuzzOptions } from './driver';

function parse(argv: string[]): FuzzOptions {
  const o: FuzzOptions = { ...DEFAULTS };
  const num = (i: number, name: string): number => {
    const v = Number(argv[i + 1]);
    if (!Number.isFinite(v) || v < 0) throw new RangeError(`--${name} needs a non-negative number, got ${String(argv[i + 1])}`);
    return v;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    switch (a) {
      case '--runs': o.runs = num(i++, 'runs'); break;
      case '--jobs': o.jobs = Math.max(1, num(i++, 'jobs')); break;
      case '--seed': o.seed = num(i++, 'seed'); break;
      case '--min': o.minLength = num(i++, 'min'); break;
      case '--max': o.maxLength = num(i++, 'max'); break;
      case '--workers': o.workers = num(i++, 'workers'); break;
      case '--child-receivers': o.childReceivers = num(i++, 'child-receivers'); break;
      case '--shrink-ms': o.shrinkBudgetMs = num(i++, 'shrink-ms'); break;
      case '--timeout-ms': o.childTimeoutMs = num(i++, 'timeout-ms'); break;
      case '--max-failures': o.maxFailures = num(i++, 'max-failures'); break;
      case '--no-huge': o.huge = false; break;
      case '--exclude': o.exclude = String(argv[++i] ?? '').split(',').filter((x) => x !== ''); break;
      case '--allow-wide': o.allowWideBuffers = true; break;
      case '--view-only': o.viewOnly = true; break;
      case '--lenient': o.lenient = true; break;
      case '--keep-going': o.keepGoing = true; break;
      default: throw new TypeError(`unknown option ${a}; see the header of test/fuzz/cli.ts`);
    }
  }
  if (o.maxLength < o.minLength) o.maxLength = o.minLength;
  return o;
}

async function main(): Promise<number> {
  const o = parse(process.argv.slice(2));
  process.stderr.write(`[fuzz] ${o.runs} sequences of ${o.minLength}-${o.maxLength} calls in ${o.jobs} child processes, seeds from ${o.seed}` +
    `${o.huge ? ', huge sizes' : ''}${o.workers ? `, workers (weight ${o.workers})` : ''}${o.allowWideBuffers ? ', wide Buffers allowed' : ''}${o.viewOnly ? ', Buffers touched only in their own range' : ''}${o.exclude.length ? `, without ${o.exclude.join(', ')}` : ''}\n`);
  const r = await fuzz(o);
  for (const n of r.notes) process.stderr.write(`[fuzz] note: ${n}\n`);
  if (r.failures.length > 0) {
    process.stdout.write(`\n${r.failures.length} failure(s):\n\n${r.failures.map(formatFailure).join('\n\n')}\n\n`);
  }
  const rate = r.childMs > 0 ? (r.started / (r.childMs / 1000)).toFixed(1) : '?';
  process.stdout.write(`fuzz: throughput ${r.started} sequences in ${(r.childMs / 1000).toFixed(1)} s of child run time (${rate} per second per child process, failing children included)\n`);
  process.stdout.write(`fuzz: ${r.sequences} sequences ran clean of ${o.runs}, ${r.failures.length} failure(s), ${(r.ms / 1000).toFixed(1)} s, seeds ${o.seed}..\n`);
  return r.failures.length === 0 ? 0 : 1;
}

main().then((c) => process.exit(c), (err) => {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  process.exit(2);
});
