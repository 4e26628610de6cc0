// Issue 16, item 4: require('dmamem') loads the OS layer only; the kernel model, the DMA layer,
// channels and devices load together on the first read of any of their exports, and then work
// exactly as before (the DMA layer's additions to Machine included). The package's require entry
// (lib/entry.ts) loads only the addon until a name is read, then only that name's lib/os module (and
// what it imports), and gives exactly the index's exports.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';

const INDEX_JS = JSON.stringify(path.resolve(__dirname, '..', 'lib', 'index.js'));
const ENTRY_JS = JSON.stringify(path.resolve(__dirname, '..', 'lib', 'entry.js'));
const PACKAGE = JSON.stringify(path.resolve(__dirname, '..', '..'));

function child(script: string): string {
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 30000 });
  assert.equal(r.signal, null, r.stderr);
  assert.equal(r.status, 0, r.stderr);
  return r.stdout;
}

const LOADED = `const loaded = () => Object.keys(require.cache).map((f) => f.replace(/.*dist\\/lib\\//, '')).filter((f) => /^(mm|dma|ipc|devices)\\//.test(f));`;

describe('23 lazy start', () => {
  it('requiring the package loads no kernel model, DMA, channel or device module', () => {
    const out = child(`${LOADED} const d = require(${INDEX_JS});
      const r = d.Region.allocate(4096, { hugepages: 'off' }); r.close();
      const a = d.Arena.create({ hugepages: 'off', capacity: 2 << 20 }); a.free(a.alloc(10)); a.close();
      process.stdout.write(JSON.stringify({ loaded: loaded(), keys: Object.keys(d).length }));`);
    const o = JSON.parse(out) as { loaded: string[]; keys: number };
    assert.deepEqual(o.loaded, []);
    assert.ok(o.keys > 200, 'every export is listed without loading anything');
  });

  it('the first use of any of them loads them all, and the Machine has its DMA methods', () => {
    const out = child(`${LOADED} const d = require(${INDEX_JS});
      const m = new d.Machine({ name: 'lazy', ramPerNode: 4 << 20, cmaSize: 2 << 20, hugepages: 'off', emitWarnings: false });
      const dev = m.createDevice({ name: 'lazy-dev', dmaMask: 64, coherentDmaMask: 64 });
      const h = { value: 0n };
      const page = d.dma_alloc_pages(dev, 4096, h, d.DMA_BIDIRECTIONAL, d.GFP_KERNEL);
      d.dma_free_pages(dev, 4096, page, h.value, d.DMA_BIDIRECTIONAL);
      dev.destroy(); m.destroy();
      const l = loaded();
      process.stdout.write(JSON.stringify({ mm: l.some((f) => f.startsWith('mm/')), dma: l.some((f) => f.startsWith('dma/')), ipc: l.some((f) => f.startsWith('ipc/')), devices: l.some((f) => f.startsWith('devices/')), same: d.Machine === require(${JSON.stringify(path.resolve(__dirname, '..', 'lib', 'mm', 'machine.js'))}).Machine }));`);
    assert.deepEqual(JSON.parse(out), { mm: true, dma: true, ipc: true, devices: true, same: true });
  });

  describe('the require entry (package.json main and exports.require)', () => {
    const OS_LOADED = `const os = () => Object.keys(require.cache).filter((f) => f.includes('/dist/lib/')).map((f) => f.replace(/.*dist\\/lib\\//, '')).sort();`;

    it('is what require() of the package resolves to', () => {
      assert.equal(child(`process.stdout.write(require.resolve(${PACKAGE}))`), JSON.parse(ENTRY_JS));
    });

    it('loads only the addon until a name is read; a Region loads only what allocating, viewing and closing need', () => {
      const out = child(`${OS_LOADED} const d = require(${ENTRY_JS}); const atStart = os(); const n = Object.keys(d).length;
        const r = d.Region.allocate(4096, { hugepages: 'off' }); r.view()[0] = 1; r.close();
        process.stdout.write(JSON.stringify({ atStart, n, region: os() }));`);
      const o = JSON.parse(out) as { atStart: string[]; n: number; region: string[] };
      assert.deepEqual(o.atStart, ['entry.js', 'native.js'], 'the addon loads at require time, so a missing binary is reported there');
      assert.ok(o.n > 200);
      for (const f of ['os/region.js', 'os/backing.js', 'native.js']) assert.ok(o.region.includes(f), f);
      for (const f of ['index.js', 'os/arena.js', 'os/share-socket.js', 'os/pagemap.js', 'os/sysinfo.js', 'os/procmaps.js', 'os/region-share.js', 'os/region-resize.js', 'os/region-wait.js']) {
        assert.ok(!o.region.includes(f), `${f} is not loaded to allocate, view and close a Region`);
      }
      assert.deepEqual(o.region.filter((f) => /^(mm|dma|ipc|devices|drivers)\//.test(f)), []);
    });

    it("gives exactly the index's exports: the same names, enumerable getters, the same values", () => {
      const out = child(`const e = require(${ENTRY_JS}); const i = require(${INDEX_JS});
        const ek = Object.keys(e), ik = Object.keys(i);
        const d = Object.getOwnPropertyDescriptor(e, 'Region');
        process.stdout.write(JSON.stringify({ same: JSON.stringify([...ek].sort()) === JSON.stringify([...ik].sort()), n: ek.length,
          differ: ik.filter((k) => e[k] !== i[k]), esModule: e.__esModule === true, getter: typeof d.get === 'function' && d.enumerable && !d.configurable,
          dma: typeof new e.Machine({ name: 'entry', ramPerNode: 4 << 20, cmaSize: 0, hugepages: 'off', emitWarnings: false }).createDevice }));`);
      assert.deepEqual(JSON.parse(out), { same: true, n: JSON.parse(out).n, differ: [], esModule: true, getter: true, dma: 'function' });
    });
  });
});
