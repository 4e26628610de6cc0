// Every runnable example in examples/ runs to the end as a user runs it (node dist/examples/X.js, in
// a child process) and prints what it promises. The edu driver (examples/edu/) is test 63's.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { EXAMPLE_OUTPUT as EXPECT } from './helpers/examples';

const root = path.resolve(__dirname, '..', '..');
const dir = path.join(root, 'dist', 'examples');

describe('73 examples', function () {
  this.timeout(120000);

  it('every example in examples/ has an expectation here', () => {
    const found = fs.readdirSync(dir).filter((f) => f.endsWith('.js')).sort();
    assert.deepEqual(found, Object.keys(EXPECT).sort());
  });

  for (const [file, expected] of Object.entries(EXPECT)) {
    it(`${file} runs and prints what it promises`, () => {
      const r = spawnSync(process.execPath, [path.join(dir, file)], { cwd: root, encoding: 'utf8', timeout: 60000 });
      assert.equal(r.status, 0, `exit ${r.status} ${r.signal ?? ''}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
      assert.match(r.stdout, expected);
    });
  }
});
