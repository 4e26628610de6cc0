// Smoke test of the benchmarks: `dmamem bench --quick --json` runs to the end in a child process,
// prints valid JSON with every group, and every record has finite positive medians. No timing
// assertions: this machine is too noisy for them, and speed is the benchmarks' business.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

const root = path.resolve(__dirname, '..', '..');

interface Side { label: string; median: number; spread: { q1: number; q3: number; min: number; max: number } }
interface Record { group: string; name: string; unit: string; a: Side; b?: Side; ratio?: number; target?: { text: string; met: boolean } }

describe('bench smoke (dmamem bench --quick --json)', function () {
  this.timeout(120_000);

  it('runs every group and reports finite positive medians', function () {
    const cli = path.join(root, 'bin', 'dmamem.js');
    // Until the CLI dispatcher exists, call runBench directly.
    const args = fs.existsSync(cli)
      ? [cli, 'bench', '--quick', '--json']
      : ['-e', "require('./dist/bench/index').runBench(['--quick','--json']).then((c) => { process.exitCode = c; })"];
    const r = spawnSync(process.execPath, args, { cwd: root, encoding: 'utf8', timeout: 115_000, maxBuffer: 64 << 20 });
    assert.equal(r.error, undefined, String(r.error));
    assert.equal(r.status, 0, `exit status ${r.status}; stderr:\n${r.stderr.slice(-4000)}`);
    const out = JSON.parse(r.stdout) as { mode: string; groups: string[]; results: Record[]; failed: unknown[]; notes: string[] };
    assert.equal(out.mode, 'quick');
    assert.deepEqual(out.failed, []);
    const expected = ['allocation', 'translation', 'mapping', 'scatter', 'bandwidth', 'mapbench', 'devices', 'channel', 'arena', 'noncoherent', 'virtio'];
    assert.deepEqual(out.groups, expected);
    for (const g of expected) {
      assert.ok(out.results.some((x) => x.group === g), `no results for group ${g}; notes: ${out.notes.join('; ')}`);
    }
    const finitePositive = (x: number): boolean => Number.isFinite(x) && x > 0;
    for (const rec of out.results) {
      const what = `${rec.group} / ${rec.name}`;
      assert.ok(finitePositive(rec.a.median), `${what}: dmamem median ${rec.a.median}`);
      if (rec.b !== undefined) {
        assert.ok(finitePositive(rec.b.median), `${what}: baseline median ${rec.b.median}`);
        assert.ok(finitePositive(rec.ratio ?? NaN), `${what}: ratio ${rec.ratio}`);
      }
      if (rec.target !== undefined) assert.equal(typeof rec.target.met, 'boolean', `${what}: target.met`);
    }
    // Nothing but the JSON on stdout; progress went to stderr.
    assert.match(r.stderr, /\[\d+\/\d+\]/);
  });
});
