// What `npm pack` ships: the built library and CLI, the addon's sources and build file (an install
// compiles them), the license and the changelog; never the tests, the TypeScript sources, CI or tools.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';

const root = path.join(__dirname, '..', '..');

describe('92 the package: a files allowlist', function () {
  this.timeout(60000);
  let files: string[] = [];
  before(() => {
    const r = spawnSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: root, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    files = (JSON.parse(r.stdout) as { files: { path: string }[] }[])[0]!.files.map((f) => f.path);
  });

  it('ships what an install and `dmamem` need', () => {
    for (const f of ['package.json', 'README.md', 'LICENSE', 'CHANGELOG.md', 'binding.gyp', 'bin/dmamem.js', 'native/addon.cc', 'native/errors.h',
      'dist/lib/index.js', 'dist/lib/index.d.ts', 'dist/lib/cli/main.js', 'dist/bench/index.js']) {
      assert.ok(files.includes(f), `${f} is in the package`);
    }
  });

  it('ships no tests, sources, CI scripts or tool configuration', () => {
    const stray = files.filter((f) => /^(test|lib|scripts|examples|bench|\.ci|dist\/test|dist\/examples)\//.test(f) || /^(tsconfig|stryker\.config|\.mocharc)/.test(f) || f.endsWith('.tgz'));
    assert.deepEqual(stray, []);
  });
});
