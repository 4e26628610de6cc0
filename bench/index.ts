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
import { noncoherent } from './noncoherent';
import { virtio } from './virtio';
import { misuse, parseCommand, usage, wrap, type CommandSpec } from '../lib/cli/args';

/** Every group, in the order of the issue. */
export const GROUPS: readonly BenchGroup[] = [allocation, translation, mapping, scatter, bandwidth, mapbench, devices, channel, arena, noncoherent, virtio];

const BENCH: CommandSpec = {
  command: 'bench',
  summary: 'Runs the benchmarks (medians of interleaved rounds, each against a baseline in the same run):\nprogress on stderr, the results on stdout.',
  options: {
    quick: { type: 'boolean', help: 'smaller sizes and fewer rounds (under a minute)' },
    only: { type: 'string', value: 'group,...', help: `run only these groups: ${GROUPS.map((g) => g.name).join(', ')}` },
    json: { type: 'boolean', help: 'print the results as JSON' },
    markdown: { type: 'boolean', help: 'print the table as GitHub markdown (what bench/README.md shows)' },
    check: { type: 'boolean', help: 'exit 1 when a target is missed (by default a miss is a result, exit 0)' },
  },
};

interface Options {
  quick: boolean;
  json: boolean;
  markdown: boolean;
  check: boolean;
  only: string[] | null;
}

/** The parsed options, or the exit code when parsing answered (help, misuse). */
function parse(args: string[]): Options | number {
  const p = parseCommand(BENCH, args);
  if ('exit' in p) return p.exit;
  const v = p.values;
  let only: string[] | null = null;
  if (typeof v.only === 'string') {
    only = v.only.split(',').map((s) => s.trim()).filter((s) => s !== '');
    const bad = only.filter((n) => !GROUPS.some((g) => g.name === n));
    if (only.length === 0 || bad.length > 0) {
      return misuse('bench', only.length === 0 ? 'option --only needs a group name' : `unknown group ${bad.map((b) => `'${b}'`).join(', ')}`, usage(BENCH)).exit;
    }
  }
  return { quick: v.quick === true, json: v.json === true, markdown: v.markdown === true, check: v.check === true, only };
}

/** The width the table keeps to. */
const COLUMNS = 100;

/** 1234.5 -> '1.23 k', 0.0123 -> '0.0123'; three significant digits. */
function num(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  const ax = Math.abs(x);
  if (ax >= 1e6) return `${(x / 1e6).toPrecision(3)} M`;
  if (ax >= 1e4) return `${(x / 1e3).toPrecision(3)} k`;
  if (ax >= 1e3) return x.toFixed(0);
  return String(Number(x.toPrecision(3)));
}

function cell(s: BenchResult['a'] | undefined, unit: string): string {
  if (s === undefined) return '';
  return `${s.label}: ${num(s.median)} ${unit} [${num(s.spread.q1)}–${num(s.spread.q3)}]`;
}

/**
 * The results as text of at most 100 columns: per group, each benchmark with its ratio and target
 * ("met" or "MISSED"), then the dmamem and baseline medians [IQR] on their own lines; a last line
 * lists the missed targets.
 */
export function formatTable(results: readonly BenchResult[]): string {
  const out: string[] = [];
  let group = '';
  for (const r of results) {
    if (r.group !== group) {
      if (group !== '') out.push('');
      out.push(r.group);
      group = r.group;
    }
    const verdict = r.target === undefined ? '' : `${r.target.met ? 'met' : 'MISSED'} (target ${r.target.text})`;
    const right = [r.ratio === undefined ? '' : `ratio ${num(r.ratio)}x`, verdict].filter((x) => x !== '').join(', ');
    out.push(...wrap(`  ${r.name}${right === '' ? '' : `: ${right}`}`, COLUMNS, '      '));
    out.push(...wrap(`      ${cell(r.a, r.unit)}`, COLUMNS, '        '));
    if (r.b !== undefined) out.push(...wrap(`      ${cell(r.b, r.unit)}`, COLUMNS, '        '));
  }
  const missed = results.filter((r) => r.target !== undefined && !r.target.met);
  out.push('');
  if (results.some((r) => r.target !== undefined)) {
    out.push(...wrap(missed.length === 0 ? 'Every target met.' : `${missed.length} target${missed.length === 1 ? '' : 's'} MISSED: ${missed.map((r) => `${r.group} / ${r.name}`).join('; ')}`, COLUMNS, '  '));
  }
  return out.join('\n');
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

/** 1 when a group failed, or with `check` when a target was missed; else 0. */
export function benchExitCode(results: readonly BenchResult[], failedGroups: number, check: boolean): number {
  if (failedGroups > 0) return 1;
  return check && results.some((r) => r.target !== undefined && !r.target.met) ? 1 : 0;
}

/**
 * Runs `dmamem bench` with the arguments after `bench`; returns the exit code: 0 when every group
 * ran (missed targets are results, not failures, unless --check), 1 when a group threw or, with
 * --check, a target was missed, 2 for bad arguments.
 * @example process.exitCode = await runBench(['--quick', '--json']);
 */
export async function runBench(args: string[]): Promise<number> {
  const o = parse(args);
  if (typeof o === 'number') return o;
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
    if (ctx.notes.length > 0) process.stdout.write(`\nNotes:\n${ctx.notes.flatMap((n) => wrap(`  - ${n}`, COLUMNS, '    ')).join('\n')}\n`);
    process.stdout.write(`\n${wrap(`${o.quick ? 'quick' : 'full'} run, ${(durationMs / 1000).toFixed(1)} s; ratio = how many times better dmamem is than the baseline (median against median)`, COLUMNS, '').join('\n')}\n`);
    if (failed.length > 0) process.stdout.write(`Failed groups: ${failed.map((f) => f.group).join(', ')}\n`);
  }
  return benchExitCode(ctx.results, failed.length, o.check);
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
