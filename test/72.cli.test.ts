// The dmamem command behaves the same way in every subcommand: --help/-h on stdout with exit 0,
// --version, misuse as one line plus the usage on stderr with exit 2, output within 100 columns,
// and bench's --check turning a missed target into exit 1.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { benchExitCode, formatTable } from '../bench/index';
import type { BenchResult } from '../bench/harness';

const root = path.resolve(__dirname, '..', '..');
const bin = path.join(root, 'bin', 'dmamem.js');

function dmamem(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 30000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const widest = (text: string): number => Math.max(...text.split('\n').map((l) => l.length));

describe('72 the dmamem command', function () {
  this.timeout(60000);

  it('--help and -h: usage on stdout, exit 0, at the top level and in every subcommand, within 100 columns', () => {
    for (const args of [['--help'], ['-h'], ['help'], ['info', '--help'], ['demo', '-h'], ['bench', '--help']]) {
      const r = dmamem(...args);
      assert.equal(r.status, 0, `${args.join(' ')}: ${r.stderr}`);
      assert.equal(r.stderr, '', args.join(' '));
      assert.match(r.stdout, /^Usage: dmamem /, args.join(' '));
      assert.match(r.stdout, /--help, -h/, args.join(' '));
      assert.ok(widest(r.stdout) <= 100, `${args.join(' ')}: ${widest(r.stdout)} columns`);
    }
  });

  it('--version and -v print the package version', () => {
    const { version } = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { version: string };
    for (const flag of ['--version', '-v']) assert.deepEqual(dmamem(flag), { status: 0, stdout: `${version}\n`, stderr: '' });
  });

  it('misuse: one line in the same wording, then the usage, on stderr; exit 2; nothing on stdout', () => {
    const cases: [string[], string][] = [
      [[], 'dmamem: missing command'],
      [['frobnicate'], "dmamem: unknown command 'frobnicate'"],
      [['--json'], "dmamem: unknown option '--json' (options go after the command, as in: dmamem info --json)"],
      [['info', '--bogus'], "dmamem info: unknown option '--bogus'"],
      [['demo', '--bogus'], "dmamem demo: unknown option '--bogus'"],
      [['bench', '--bogus'], "dmamem bench: unknown option '--bogus'"],
      [['info', 'extra'], "dmamem info: unexpected argument 'extra'"],
      [['demo', '--json=yes'], 'dmamem demo: option --json takes no value'],
      [['bench', '--only'], 'dmamem bench: option --only needs a value'],
      [['bench', '--only', 'nope,arena'], "dmamem bench: unknown group 'nope'"],
    ];
    for (const [args, line] of cases) {
      const r = dmamem(...args);
      assert.equal(r.status, 2, args.join(' '));
      assert.equal(r.stdout, '', args.join(' '));
      assert.equal(r.stderr.split('\n')[0], line);
      assert.match(r.stderr, /\n\nUsage: dmamem /, args.join(' '));
    }
  });

  describe('bench output', () => {
    const side = (label: string, median: number): BenchResult['a'] => ({ label, median, spread: { q1: median * 0.9, q3: median * 1.1, min: median / 2, max: median * 2 }, rounds: 5 });
    const results: BenchResult[] = [
      { group: 'allocation', name: 'a benchmark with a rather long name that goes on, 4 KiB / 64 KiB / 2 MiB', unit: 'ns/op', better: 'lower',
        a: side('dma_alloc_pages + machine.view() + dma_free_pages on an IOMMU device', 1234), b: side('mmap(MAP_PRIVATE|MAP_ANONYMOUS|MAP_POPULATE) + munmap per buffer, as the Node mmap libraries do', 5678),
        ratio: 4.6, target: { text: '>= 5x faster than mmap, which is the baseline of this row', met: false } },
      { group: 'allocation', name: 'short', unit: 'ns/op', better: 'lower', a: side('x', 10), b: side('y', 20), ratio: 2, target: { text: '>= 1x', met: true } },
    ];

    it('fits 100 columns, says "met" or "MISSED" per target and lists the misses', () => {
      const text = formatTable(results);
      assert.ok(widest(text) <= 100, `${widest(text)} columns:\n${text}`);
      assert.match(text, /ratio 4\.6x, MISSED\s+\(target >= 5x faster/);
      assert.match(text, /short: ratio 2x, met \(target >= 1x\)/);
      assert.match(text, /1 target MISSED: allocation \/ a benchmark/);
      assert.match(formatTable([results[1]!]), /Every target met\./);
      assert.match(text, /1234 ns\/op/, 'four-digit figures as digits, not 1.23e+3');
    });

    it('--check makes a missed target exit 1; without it a miss is a result (exit 0); a failed group is 1', () => {
      assert.equal(benchExitCode(results, 0, false), 0);
      assert.equal(benchExitCode(results, 0, true), 1);
      assert.equal(benchExitCode([results[1]!], 0, true), 0);
      assert.equal(benchExitCode([results[1]!], 1, false), 1);
    });
  });
});
