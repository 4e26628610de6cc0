// `dmamem info`: the human report and --json, run in-process (runInfo) and as a separate process.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { runInfo } from '../lib/cli/info';
import { expectNoLeaks } from './helpers/leaks';

const INFO_JS = JSON.stringify(path.resolve(__dirname, '..', 'lib', 'cli', 'info.js'));

function run(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['-e', `process.exitCode = require(${INFO_JS}).runInfo(process.argv.slice(1))`, '--', ...args], { encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('23 dmamem info', () => {
  before(() => run(['--help'])); // Node's first spawn opens /dev/null for good: before the baseline
  expectNoLeaks();

  it('prints a human report naming every facility', () => {
    const r = run([]);
    assert.equal(r.status, 0, r.stderr);
    for (const word of ['Base page size', 'Hugepage pools', 'THP (anonymous)', 'THP (shmem / memfd)', 'Physical addresses', 'RLIMIT_MEMLOCK', 'NUMA nodes', 'IOMMU groups']) {
      assert.ok(r.stdout.includes(word), `mentions ${word}`);
    }
    assert.match(r.stdout, /2 MiB\s+\d+\/\d+ free/);
  });

  it('--json is machine-readable and includes the missing capabilities with commands', () => {
    const r = run(['--json']);
    assert.equal(r.status, 0, r.stderr);
    const info = JSON.parse(r.stdout) as { pageSize: number; hugepagePools: unknown[]; missing: { command: string }[]; thp: { shmem: string | null } };
    assert.equal(typeof info.pageSize, 'number');
    assert.ok(Array.isArray(info.hugepagePools));
    if (info.thp.shmem === 'never') assert.ok(info.missing.some((m) => m.command.includes('shmem_enabled')));
  });

  it('exits non-zero only on errors (an unknown argument)', () => {
    const r = run(['--bogus']);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /unknown option '--bogus'/);
    assert.equal(run(['--help']).status, 0);
  });

  it('runInfo returns 0 in-process', () => {
    const write = process.stdout.write;
    let out = '';
    process.stdout.write = ((chunk: string | Uint8Array) => ((out += chunk.toString()), true)) as typeof process.stdout.write;
    try {
      assert.equal(runInfo(['--json']), 0);
    } finally {
      process.stdout.write = write;
    }
    assert.ok(JSON.parse(out));
  });
});
