// `npm run fuzz -- --runs N [--jobs J] [--seed S] [--min A --max B] [--workers W] [--child-receivers C]
// [--no-huge] [--exclude kind,kind] [--allow-wide] [--view-only] [--lenient] [--keep-going] [--max-failures F] [--shrink-ms T]`: the property test of
// test/80 run longer. Prints the seed and the shrunk failing sequence of every failure, then one
// line with the counts and the time; exits 1 when anything failed.

import { parseArgs } from 'node:util';
import { DEFAULTS, formatFailure, fuzz, type FuzzOptions } from './driver';

const USAGE = `usage: npm run fuzz -- [options]
  --runs N             sequences in all (default ${DEFAULTS.runs})
  --jobs J             child processes at once (default: one per core)
  --seed S             first seed (default: from the clock); job k uses S + k
  --min A, --max B     calls per sequence (default ${DEFAULTS.minLength}-${DEFAULTS.maxLength})
  --workers W          weight of worker-termination steps (0 = none)
  --child-receivers C  weight of hostile receivers that are child processes (0 = none)
  --shrink-ms T        time budget for shrinking a failure
  --timeout-ms T       time limit of one child process
  --max-failures F     stop after F failures
  --no-huge            leave out huge sizes
  --exclude a,b        leave out step kinds (see test/fuzz/ops.ts)
  --allow-wide         do not fail on a Buffer whose .buffer reaches past it
  --view-only          touch only each Buffer's own bytes
  --lenient            only signals and hangs fail
  --keep-going         run every sequence even after failures
  --help               this text`;

/** Reads the command line with node:util's parseArgs: an unknown option is an error naming it. */
function parse(argv: string[]): FuzzOptions | null {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      runs: { type: 'string' }, jobs: { type: 'string' }, seed: { type: 'string' },
      min: { type: 'string' }, max: { type: 'string' }, workers: { type: 'string' },
      'child-receivers': { type: 'string' }, 'shrink-ms': { type: 'string' }, 'timeout-ms': { type: 'string' },
      'max-failures': { type: 'string' }, 'no-huge': { type: 'boolean' }, exclude: { type: 'string' },
      'allow-wide': { type: 'boolean' }, 'view-only': { type: 'boolean' }, lenient: { type: 'boolean' },
      'keep-going': { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help === true) return null;
  const num = (name: string, dflt: number): number => {
    const raw = (values as Record<string, unknown>)[name];
    if (raw === undefined) return dflt;
    const v = Number(raw);
    if (!Number.isFinite(v) || v < 0) throw new RangeError(`--${name} needs a non-negative number, got ${String(raw)}`);
    return v;
  };
  const o: FuzzOptions = {
    ...DEFAULTS,
    runs: num('runs', DEFAULTS.runs),
    jobs: Math.max(1, num('jobs', DEFAULTS.jobs)),
    seed: num('seed', DEFAULTS.seed),
    minLength: num('min', DEFAULTS.minLength),
    maxLength: num('max', DEFAULTS.maxLength),
    workers: num('workers', DEFAULTS.workers),
    childReceivers: num('child-receivers', DEFAULTS.childReceivers),
    shrinkBudgetMs: num('shrink-ms', DEFAULTS.shrinkBudgetMs),
    childTimeoutMs: num('timeout-ms', DEFAULTS.childTimeoutMs),
    maxFailures: num('max-failures', DEFAULTS.maxFailures),
    huge: values['no-huge'] !== true,
    exclude: (values.exclude ?? '').split(',').filter((x) => x !== ''),
    allowWideBuffers: values['allow-wide'] === true,
    viewOnly: values['view-only'] === true,
    lenient: values.lenient === true,
    keepGoing: values['keep-going'] === true,
  };
  if (o.maxLength < o.minLength) o.maxLength = o.minLength;
  return o;
}

async function main(): Promise<number> {
  const o = parse(process.argv.slice(2));
  if (o === null) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
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
  const usage = (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS') === true || err instanceof RangeError;
  process.stderr.write(usage ? `${(err as Error).message}\n${USAGE}\n` : `${(err as Error).stack ?? String(err)}\n`);
  process.exit(2);
});
