// Issue 8, item 2: the public surface is exactly what README.md's "API index" documents. Every
// listed value is exported and nothing else is (internals that map or wrap memory above all);
// the listed types are the index's type exports; deep imports past the package's `exports` map fail.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as index from '../lib/index';

const root = path.join(__dirname, '..', '..');

/** The README's API index: value names and type names, each from its backquotes. */
function readmeIndex(): { values: string[]; types: string[] } {
  const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');
  const start = readme.indexOf('## API index');
  assert.ok(start >= 0, 'README.md has an "API index" section');
  const end = readme.indexOf('\n## ', start + 1);
  const section = readme.slice(start, end < 0 ? undefined : end);
  const values: string[] = [];
  const types: string[] = [];
  for (const line of section.split('\n')) {
    const names = [...line.matchAll(/`([A-Za-z_$][\w$]*)`/g)].map((m) => m[1]!);
    if (/^\s+- types:/.test(line)) types.push(...names);
    else if (/^- \*\*/.test(line)) values.push(...names);
  }
  return { values, types };
}

/** Names in `export type { ... }` clauses of the compiled index's declarations. */
function declaredTypes(): string[] {
  const dts = fs.readFileSync(path.join(root, 'dist', 'lib', 'index.d.ts'), 'utf8');
  return [...dts.matchAll(/export type \{([^}]*)\}/g)].flatMap((m) => m[1]!.split(',').map((s) => s.trim()).filter((s) => s !== ''));
}

const sorted = (a: Iterable<string>): string[] => [...a].sort();
const minus = (a: string[], b: string[]): string[] => a.filter((x) => !b.includes(x));

describe('44 public surface: exactly what the README documents', () => {
  it('every README-documented value is exported, and nothing else is', () => {
    const { values } = readmeIndex();
    assert.ok(values.length > 200, `the index lists ${values.length} names`);
    const exported = Object.keys(index);
    assert.deepEqual(minus(values, exported), [], 'documented but not exported');
    assert.deepEqual(minus(exported, values), [], 'exported but not documented');
    assert.deepEqual(sorted(new Set(values)), sorted(values), 'no name listed twice');
  });

  it('every README-documented type is a type export of the index, and nothing else is', () => {
    const { types } = readmeIndex();
    const declared = declaredTypes();
    assert.deepEqual(sorted(types), sorted(declared));
  });

  it('internals are not exported: nothing that maps or wraps memory, no test hooks', () => {
    const internal = [
      'createBackedMemfd', 'ViewWindow', 'trackExternalMemory', 'VmallocArea', 'VmallocSpace', 'VmArea', 'Page', 'Segment',
      'Cma', 'Device', 'DmaDebug', 'IommuDomain', 'CoherentPool', 'SgStore', 'sgFaultInjection', 'BuddyAllocator',
      'mapRuns', 'zapRange', 'native', 'dma_direct_map_page', 'iommu_dma_map_page', 'dma_alloc_from_dev_coherent',
      'markMapped', 'registerMachine', 'machineOfAddress', 'checkInt',
    ];
    for (const name of internal) assert.ok(!(name in index), `${name} must not be exported`);
  });

  it('the README example names are exported', () => {
    for (const name of ['Region', 'Machine', 'DMA_BIDIRECTIONAL', 'GFP_KERNEL', 'dma_alloc_pages', 'dma_free_pages', 'dma_common_mmap', 'defaultMachine']) {
      assert.ok(name in index, name);
    }
  });

  describe('as an installed package', function () {
    // Each case starts a node process that loads the package (~1 s; more on a loaded machine).
    this.timeout(20000);
    let dir = '';
    before(() => {
      // node_modules/dmamem -> this checkout: resolution goes through package.json like an install.
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmamem44-'));
      fs.mkdirSync(path.join(dir, 'node_modules'));
      fs.symlinkSync(root, path.join(dir, 'node_modules', 'dmamem'), 'dir');
    });
    after(() => {
      fs.rmSync(dir, { recursive: true, force: true });
    });

    function run(code: string, input: 'commonjs' | 'module' = 'commonjs'): { status: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string } {
      const args = input === 'module' ? ['--input-type=module', '-e', code] : ['-e', code];
      return spawnSync(process.execPath, args, { cwd: dir, encoding: 'utf8', timeout: 30000 });
    }

    it("require('dmamem') gives the public API, and require('dmamem/package.json') works", () => {
      const r = run(`const d = require('dmamem'); console.log(typeof d.Machine, typeof d.dma_alloc_pages, require('dmamem/package.json').name)`);
      assert.equal(r.signal, null);
      assert.equal(r.stdout.trim(), 'function function dmamem', r.stderr);
    });

    it('import from ESM works too, named imports included (ESM loads the index, whose names Node finds statically)', () => {
      const r = run(`import d from 'dmamem'; console.log(typeof d.Region)`, 'module');
      assert.equal(r.stdout.trim(), 'function', r.stderr);
      const named = run(`import { Region, Machine, dma_alloc_pages } from 'dmamem'; console.log(typeof Region, typeof Machine, typeof dma_alloc_pages)`, 'module');
      assert.equal(named.stdout.trim(), 'function function function', named.stderr);
    });

    for (const deep of ['dmamem/dist/lib/native', 'dmamem/dist/lib/native.js', 'dmamem/dist/lib/os/backing', 'dmamem/dist/lib/mm/vmalloc.js', 'dmamem/lib/index.ts', 'dmamem/build/Release/dmamem.node']) {
      it(`require('${deep}') fails with ERR_PACKAGE_PATH_NOT_EXPORTED`, () => {
        const r = run(`try { require(${JSON.stringify(deep)}); console.log('loaded'); } catch (e) { console.log(e.code); }`);
        assert.equal(r.signal, null);
        assert.equal(r.stdout.trim(), 'ERR_PACKAGE_PATH_NOT_EXPORTED', r.stderr);
      });
    }
  });
});
