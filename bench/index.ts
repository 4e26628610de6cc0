// `dmamem bench` / `npm run bench`: runs the benchmark groups, shows progress on stderr, and prints
// the results table (or JSON) on stdout. Wiring and output only; the measurements live per group.

import * as os from 'node:os';
import { Progress, sink, type BenchContext, type BenchGroup, type BenchResult } from './harness';
import { allocation } from './allocation';
import { translation } from './translation';
import { mapping } from './mapping';
import { scatter } from './scatter';
import { bandwidth } from './bandwidth';
import { mapbench } from './mapbench';
import { devices } from './devices';
import { channel } from './channel';
import { arena } from './arena';

/** Every group, in the order of the issue. */
export const GROUPS: readonly BenchGroup[] = [allocation, translation, mapping, scatter, bandwidth, mapbench, devices, channel, arena];

const USAGE = `Usage: dmamem bench [--quick] [--json] [--only <group>[,<group>...]]
  --quick   smaller sizes and fewer rounds (under a minute)
  --json    print the results as JSON instead of a table
  --markdown  print the table as GitHub markdown (what bench/README.md shows)
  --only    run only these groups: ${GROUPS.map((g) => g.name).join(', ')}`;

interface Options {
  quick: boolean;
  json: boolean;
  markdown: boolean;
  only: string[] | null;
}

function parse(args: string[]): Options | string {
  const o: Options = { quick: false, json: false, markdown: false, only: null };
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--quick') o.quick = true;
    else if (a === '--json') o.json = true;
    else if (a === '--markdown') o.markdown = true;
    else if (a === '--only' || a.startsWith('--only=')) {
      const v = a === '--only' ? args[++i] : a.slice('--only='.length);
      if (v === undefined || v === '') return 'Expected a group name after --only';
      const names = v.split(',').map((s) => s.trim()).filter((s) => s !== '');
      const bad = names.filter((n) => !GROUPS.some((g) => g.name === n));
      if (bad.length > 0) return `Unknown group ${bad.map((b) => `'${b}'`).join(', ')}`;
      o.only = [...(o.only ?? []), ...names];
    } else return `Unknown argument '${a}'`;
  }
  return o;
}

/** 1234.5 -> '1.23 k', 0.0123 -> '0.0123'; three significant digits. */
function num(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  const ax = Math.abs(x);
  if (ax >= 1e6) return `${(x / 1e6).toPrecision(3)} M`;
  if (ax >= 1e4) return `${(x / 1e3).toPrecision(3)} k`;
  return x.toPrecision(3).replace(/\.?0+$/, (m) => (m.includes('.') ? '' : m));
}

function cell(s: BenchResult['a'] | undefined, unit: string): string {
  if (s === undefined) return '';
  return `${s.label}: ${num(s.median)} ${unit} [${num(s.spread.q1)}–${num(s.spread.q3)}]`;
}

/** A plain-text table: group, benchmark, dmamem, baseline, ratio, target, met. */
export function formatTable(results: readonly BenchResult[]): string {
  const head = ['group', 'benchmark', 'dmamem (median [IQR])', 'baseline (median [IQR])', 'ratio', 'target', 'met'];
  const rows = results.map((r) => [
    r.group, r.name, cell(r.a, r.unit), cell(r.b, r.unit),
    r.ratio === undefined ? '' : `${num(r.ratio)}x`,
    r.target?.text ?? '', r.target === undefined ? '' : r.target.met ? 'yes' : 'NO',
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cols: string[]): string => cols.map((c, i) => c.padEnd(widths[i]!)).join(' | ').trimEnd();
  return [line(head), widths.map((w) => '-'.repeat(w)).join('-|-'), ...rows.map(line)].join('\n');
}

/** The same table as GitHub markdown (for bench/README.md). */
export function formatMarkdown(results: readonly BenchResult[]): string {
  const head = ['group', 'benchmark', 'dmamem', 'baseline', 'ratio', 'target', 'met'];
  const esc = (s: string): string => s.replace(/\|/g, '\\|');
  const rows = results.map((r) => [
    r.group, r.name, cell(r.a, r.unit), cell(r.b, r.unit),
    r.ratio === undefined ? '' : `${num(r.ratio)}x`, r.target?.text ?? '', r.target === undefined ? '' : r.target.met ? 'yes' : '**no**',
  ].map(esc));
  return [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

/**
 * Runs `dmamem bench` with the arguments after `bench`; returns the exit code: 0 when every group
 * ran (missed targets are results, not failures), 1 when a group threw, 2 for bad arguments.
 * @example process.exitCode = await runBench(['--quick', '--json']);
 */
export async function runBench(args: string[]): Promise<number> {
  if (args.includes('--help') || args.includes('-h')) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const o = parse(args);
  if (typeof o === 'string') {
    process.stderr.write(`dmamem bench: ${o}\n${USAGE}\n`);
    return 2;
  }
  const groups = o.only === null ? GROUPS : GROUPS.filter((g) => o.only!.includes(g.name));
  const progress = new Progress(groups.reduce((n, g) => n + g.steps(o.quick), 0));
  const ctx: BenchContext = { quick: o.quick, progress, results: [], notes: [], rounds: o.quick ? 5 : 11 };
  const started = Date.now();
  const failed: { group: string; error: string }[] = [];
  for (const g of groups) {
    try {
      await g.run(ctx);
    } catch (err) {
      const error = err instanceof Error ? (err.stack ?? err.message) : String(err);
      failed.push({ group: g.name, error });
      progress.note(`dmamem bench: group ${g.name} failed: ${error}`);
    }
  }
  progress.done();
  const durationMs = Date.now() - started;
  if (o.json) {
    const out = {
      mode: o.quick ? 'quick' : 'full',
      groups: groups.map((g) => g.name),
      durationMs,
      machine: { node: process.version, cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model ?? '', memBytes: os.totalmem(), kernel: os.release() },
      results: ctx.results,
      notes: ctx.notes,
      failed,
      sink: sink(),
    };
    process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
  } else {
    process.stdout.write(`${o.markdown ? formatMarkdown(ctx.results) : formatTable(ctx.results)}\n`);
    if (ctx.notes.length > 0) process.stdout.write(`\nNotes:\n${ctx.notes.map((n) => `  - ${n}`).join('\n')}\n`);
    process.stdout.write(`\n${o.quick ? 'quick' : 'full'} run, ${(durationMs / 1000).toFixed(1)} s; ratio = how many times better dmamem is than the baseline (median against median)\n`);
    if (failed.length > 0) process.stdout.write(`Failed groups: ${failed.map((f) => f.group).join(', ')}\n`);
  }
  return failed.length > 0 ? 1 : 0;
}

if (require.main === module) {
  runBench(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exitCode = 1;
    },
  );
}
