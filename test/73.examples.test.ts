// Every runnable example in examples/ runs to the end as a user runs it (node dist/examples/X.js, in
// a child process) and prints what it promises. The edu driver (examples/edu/) is test 63's.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

const root = path.resolve(__dirname, '..', '..');
const dir = path.join(root, 'dist', 'examples');

/** What each example must print (an example added to the folder without a line here fails). */
const EXPECT: Record<string, RegExp> = {
  'hugepage-buffer.js': /^backing (hugetlb-2M|thp|4k) \(.+\)\naddress 0x[0-9a-f]+, 4194304 bytes, first frame (0x[0-9a-f]+|hidden .*)\nsum of bytes 4194304\n$/,
  'share-worker-and-child.js': /^ok: worker wrote 0xa0, child wrote 0xa1\n$/,
  'dma-quickstart.js': /^iova 0x([0-9a-f]+) -> phys 0x([0-9a-f]+) \(page phys 0x\2\)\ndma_common_mmap 0; byte written through the VMA, read through the kernel address: 42\n$/,
  'channel.js': /^ok: sent 20000 records, the child received 20000 \(checksum equal\)\n$/,
};

describe('73 examples', function () {
  this.timeout(120000);

  it('every example in examples/ has an expectation here', () => {
    const found = fs.readdirSync(dir).filter((f) => f.endsWith('.js')).sort();
    assert.deepEqual(found, Object.keys(EXPECT).sort());
  });

  for (const [file, expected] of Object.entries(EXPECT)) {
    it(`${file} runs and prints what it promises`, () => {
      const r = spawnSync(process.execPath, [path.join(dir, file)], { cwd: root, encoding: 'utf8', timeout: 60000 });
      assert.equal(r.status, 0, `exit ${r.status} ${r.signal ?? ''}\n${r.stderr}`);
      assert.match(r.stdout, expected);
    });
  }
});
