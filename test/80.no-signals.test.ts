// No sequence of public calls may kill the process with a signal: random sequences (misuse
// included) run in a child process, which must exit normally. See test/fixtures/no-signals-child.ts.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';

const child = path.resolve(__dirname, 'fixtures', 'no-signals-child.js');

describe('80 no signals from any sequence of public calls', function () {
  this.timeout(180000);

  for (const seed of [1, 2, 3]) {
    it(`random sequences over Region, Machine, VMAs, vmalloc and the DMA API (seed ${seed}) end normally`, () => {
      const r = spawnSync(process.execPath, [child, String(seed), '40'], { encoding: 'utf8', timeout: 150000 });
      assert.equal(r.signal, null, `the child was killed by ${r.signal}\n${r.stderr.slice(-2000)}`);
      assert.equal(r.status, 0, r.stdout.slice(-2000) + r.stderr.slice(-2000));
      assert.match(r.stdout, /^ok 40 runs/m);
    });
  }
});
