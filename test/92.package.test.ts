// What `npm pack` ships: the built library and CLI, the prebuilt Node-API binary, the addon's
// sources and build file (the fallback), the license and the changelog; never the tests, the
// TypeScript sources, CI or tools. And the packed tarball installed in a fresh project on a machine
// without a compiler, loaded by this Node and (in CI) by the current LTS.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { EXAMPLE_OUTPUT } from './helpers/examples';

const root = path.join(__dirname, '..', '..');

const prebuilt = path.join(root, 'prebuilds', 'linux-x64', 'dmamem.napi.node');

/** What prepack does: the Node-API-only binary (about 40 s; once per checkout). */
function buildPrebuilt(): void {
  if (fs.existsSync(prebuilt)) return;
  const r = spawnSync(process.execPath, [path.join(root, 'scripts', 'prebuild.js')], { cwd: root, encoding: 'utf8', timeout: 280000 });
  assert.equal(r.status, 0, r.stderr);
}

/** A PATH with node, npm and sh only: no python3, make, cc or g++, so an install cannot compile. */
function pathWithoutCompiler(dir: string, node: string): string {
  const bin = path.join(dir, 'bin');
  fs.mkdirSync(bin);
  fs.symlinkSync(node, path.join(bin, 'node'));
  const npm = spawnSync('sh', ['-c', 'command -v npm'], { encoding: 'utf8' }).stdout.trim();
  fs.symlinkSync(fs.realpathSync(npm), path.join(bin, 'npm'));
  fs.symlinkSync('/bin/sh', path.join(bin, 'sh'));
  for (const tool of ['python3', 'make', 'cc', 'g++', 'gcc']) assert.equal(spawnSync(path.join(bin, 'sh'), ['-c', `command -v ${tool}`], { env: { PATH: bin } }).status !== 0, true, `${tool} is out of reach`);
  return bin;
}

/** The README's ts code blocks that start with an import: whole programs a user can paste. */
function readmePrograms(): string[] {
  const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');
  return [...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]!).filter((code) => code.startsWith('import '));
}

describe('92 the package: a files allowlist', function () {
  this.timeout(60000);
  let files: string[] = [];
  before(function () {
    this.timeout(300000);
    buildPrebuilt();
    const r = spawnSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: root, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    files = (JSON.parse(r.stdout) as { files: { path: string }[] }[])[0]!.files.map((f) => f.path);
  });

  it('ships what an install and `dmamem` need', () => {
    for (const f of ['package.json', 'README.md', 'LICENSE', 'CHANGELOG.md', 'binding.gyp', 'bin/dmamem.js', 'native/addon.cc', 'native/errors.h', 'prebuilds/linux-x64/dmamem.napi.node',
      'dist/lib/index.js', 'dist/lib/index.d.ts', 'dist/lib/cli/main.js', 'dist/bench/index.js']) {
      assert.ok(files.includes(f), `${f} is in the package`);
    }
  });

  it('ships no tests, sources, CI scripts or tool configuration', () => {
    const stray = files.filter((f) => /^(test|lib|scripts|examples|bench|\.ci|dist\/test|dist\/examples)\//.test(f) || /^(tsconfig|stryker\.config|\.mocharc)/.test(f) || f.endsWith('.tgz'));
    assert.deepEqual(stray, []);
  });
});

describe('92 the packed tarball in a fresh project, without a compiler', function () {
  this.timeout(600000);
  let dir = '';
  let bin = '';
  const usage = `const d = require('dmamem');
    const a = d.Arena.create(); const b = a.alloc(100); b[7] = 7; const ok1 = b.buffer.byteLength === 100; a.free(b); a.close();
    const r = d.Region.allocate(1 << 20, { hugepages: 'off' }); r.view()[5] = 5; const ok2 = r.read(5, 1)[0] === 5; r.close();
    const m = new d.Machine({ ramPerNode: 4 << 20, cmaSize: 0 }); const p = m.alloc_pages(d.GFP_KERNEL, 0); m.__free_pages(p, 0); m.destroy();
    console.log(ok1 && ok2 && p !== null ? 'works' : 'broken');`;

  before(() => {
    buildPrebuilt();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmamem92-'));
    const pack = spawnSync('npm', ['pack', '--ignore-scripts', '--pack-destination', dir, '--json'], { cwd: root, encoding: 'utf8' });
    assert.equal(pack.status, 0, pack.stderr);
    const tarball = path.join(dir, (JSON.parse(pack.stdout) as { filename: string }[])[0]!.filename);
    const project = path.join(dir, 'app');
    fs.mkdirSync(project);
    fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true }));
    bin = pathWithoutCompiler(dir, process.execPath);
    const env = { ...process.env, PATH: bin, npm_config_nodedir: '' };
    const install = spawnSync('npm', ['install', '--no-audit', '--no-fund', tarball], { cwd: project, env, encoding: 'utf8', timeout: 300000 });
    assert.equal(install.status, 0, `${install.stdout}\n${install.stderr}`);
    // The examples as a user's own code: `import ... from 'dmamem'`, TypeScript at this checkout's
    // pinned versions, strict, target ES2022.
    const dev = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { devDependencies: Record<string, string> };
    const tools = spawnSync('npm', ['install', '--no-audit', '--no-fund', '--no-save', `typescript@${dev.devDependencies.typescript}`, `@types/node@${dev.devDependencies['@types/node']}`],
      { cwd: project, env, encoding: 'utf8', timeout: 300000 });
    assert.equal(tools.status, 0, tools.stderr);
    fs.mkdirSync(path.join(project, 'src'));
    for (const js of Object.keys(EXAMPLE_OUTPUT)) {
      const ts = fs.readFileSync(path.join(root, 'examples', js.replace(/\.js$/, '.ts')), 'utf8');
      assert.match(ts, /from '\.\.\/lib\/index'/, js);
      fs.writeFileSync(path.join(project, 'src', js.replace(/\.js$/, '.ts')), ts.replace(/from '\.\.\/lib\/index'/g, "from 'dmamem'"));
    }
    // The README's whole programs: its ts code blocks that start with an import.
    readmePrograms().forEach((code, i) => fs.writeFileSync(path.join(project, 'src', `readme-${i + 1}.ts`), code));
    fs.writeFileSync(path.join(project, 'tsconfig.json'), JSON.stringify({
      compilerOptions: { strict: true, target: 'ES2022', module: 'commonjs', lib: ['ES2022', 'ESNext.Disposable'], types: ['node'], outDir: 'out', rootDir: 'src' },
      include: ['src'],
    }));
  });
  after(() => {
    if (dir !== '') fs.rmSync(dir, { recursive: true, force: true });
  });

  it('installs without compiling: the prebuilt binary is used', () => {
    const pkg = path.join(dir, 'app', 'node_modules', 'dmamem');
    assert.ok(fs.existsSync(path.join(pkg, 'prebuilds', 'linux-x64', 'dmamem.napi.node')));
    assert.equal(fs.existsSync(path.join(pkg, 'build')), false, 'nothing was compiled');
  });

  const nodes: [string, string | undefined][] = [['this Node', process.execPath], ['the current LTS (DMAMEM_LTS_NODE)', process.env.DMAMEM_LTS_NODE]];
  for (const [which, node] of nodes) {
    it(`loads and works on ${which}`, function () {
      if (node === undefined) {
        // CI installs the LTS (.ci/run) and must run this; elsewhere it is optional.
        if (process.env.CI === 'true') assert.fail('CI must set DMAMEM_LTS_NODE to the current LTS node binary');
        this.skip();
      }
      const r = spawnSync(node, ['-e', usage], { cwd: path.join(dir, 'app'), encoding: 'utf8', timeout: 60000 });
      assert.equal(r.stdout.trim(), 'works', `${node}: ${r.stderr}`);
    });
  }

  it("the examples compile as a user's code against the installed types (tsc --strict, target ES2022)", () => {
    const r = spawnSync(process.execPath, [path.join(dir, 'app', 'node_modules', 'typescript', 'bin', 'tsc'), '-p', '.'], { cwd: path.join(dir, 'app'), encoding: 'utf8', timeout: 120000 });
    assert.equal(r.status, 0, r.stdout + r.stderr);
  });

  for (const [which, node] of nodes) {
    for (const [js, expected] of Object.entries(EXAMPLE_OUTPUT)) {
      it(`example ${js} runs on ${which} from the installed package`, function () {
        if (node === undefined) {
          if (process.env.CI === 'true') assert.fail('CI must set DMAMEM_LTS_NODE to the current LTS node binary');
          this.skip();
        }
        const out = path.join(dir, 'app', 'out', js);
        assert.ok(fs.existsSync(out), `${js} was compiled`);
        const r = spawnSync(node, [out], { cwd: path.join(dir, 'app'), encoding: 'utf8', timeout: 60000 });
        assert.equal(r.status, 0, `${node}: exit ${r.status} ${r.signal ?? ''}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
        assert.match(r.stdout, expected, `stderr: ${r.stderr}`);
      });
    }
  }

  it('the README has whole programs to run (its quick starts)', () => {
    assert.ok(readmePrograms().length >= 2, 'the Region and the DMA quick starts');
  });

  for (const [which, node] of nodes) {
    it(`the README's whole programs run on ${which} from the installed package`, function () {
      if (node === undefined) {
        if (process.env.CI === 'true') assert.fail('CI must set DMAMEM_LTS_NODE to the current LTS node binary');
        this.skip();
      }
      readmePrograms().forEach((_, i) => {
        const r = spawnSync(node, [path.join(dir, 'app', 'out', `readme-${i + 1}.js`)], { cwd: path.join(dir, 'app'), encoding: 'utf8', timeout: 60000 });
        assert.equal(r.status, 0, `README program ${i + 1} on ${node}: exit ${r.status} ${r.signal ?? ''}\n${r.stderr}`);
      });
    });
  }

  it('without any binary, require names npm rebuild dmamem and what a build needs', () => {
    const copy = path.join(dir, 'app2');
    fs.cpSync(path.join(dir, 'app'), copy, { recursive: true, verbatimSymlinks: true });
    fs.rmSync(path.join(copy, 'node_modules', 'dmamem', 'prebuilds'), { recursive: true });
    const r = spawnSync(process.execPath, ['-e', "require('dmamem')"], { cwd: copy, encoding: 'utf8' });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /npm rebuild dmamem/);
    assert.match(r.stderr, /python3, make and a C\+\+ compiler/);
    const info = spawnSync(process.execPath, [path.join(copy, 'node_modules', 'dmamem', 'bin', 'dmamem.js'), 'info'], { cwd: copy, encoding: 'utf8' });
    assert.equal(info.status, 0, `dmamem info works without the addon: ${info.stderr}`);
    assert.match(info.stdout, /Hugepage pools/);
  });
});
