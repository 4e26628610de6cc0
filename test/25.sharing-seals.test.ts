// Sharing cannot hurt the owner, and the owner's shrink cannot hurt a receiver: once a memfd is
// shared (fd taken, shareReadOnly, Region.fromFd) it is sealed against shrinking (F_SEAL_SHRINK,
// as udmabuf requires). The crash reproducers run in child processes that must not die by
// a signal; the rest checks the seals, the owner's clear error, and that growing still works.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { Region } from '../lib/os/region';
import { native, C } from '../lib/native';
import { expectNoLeaks, fdCount } from './helpers/leaks';

const PAGE = native.pageSize;
const INDEX_JS = JSON.stringify(path.resolve(__dirname, '..', 'lib', 'index.js'));

function runOwner(script: string): { signal: NodeJS.Signals | null; status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['-e', `const d = require(${INDEX_JS});\n${script}`], { encoding: 'utf8', timeout: 120000 });
  return { signal: r.signal, status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('25 sharing and seals', function () {
  this.timeout(120000);
  expectNoLeaks();

  it('crash 6: a receiver of shareReadOnly({ enforce: true }) that reopens /proc/PID/fd/N read-write cannot truncate it (owner lives)', () => {
    const r = runOwner(`
      const { spawnSync } = require('node:child_process');
      const r6 = d.Region.allocate(16384, { hugepages: 'off' });
      r6.view().fill(7);
      const share = r6.shareReadOnly({ enforce: true });
      const c = spawnSync(process.execPath, ['-e', \`try { require('fs').ftruncateSync(require('fs').openSync(\${JSON.stringify(share.path)}, 'r+'), 0); console.log('truncated'); } catch (e) { console.log(e.code); }\`], { encoding: 'utf8' });
      process.stdout.write(c.stdout.trim() + ',' + r6.read(16383, 1)[0] + ',' + r6.seals().join('+'));`);
    assert.equal(r.signal, null, `the owner was killed by ${r.signal}\n${r.stderr}`);
    assert.equal(r.stdout, 'EPERM,7,shrink+future-write', r.stderr);
  });

  it('crash 5: the owner shrinking and regrowing while a worker maps the same fd (Region.fromFd) ends without a signal', () => {
    const r = runOwner(`
      const { Worker } = require('node:worker_threads');
      const r5 = d.Region.allocate(64 * 4096, { hugepages: 'off' });
      const w = new Worker(\`const d = require(${INDEX_JS.replace(/\\/g, '\\\\')}); const { fd } = require('worker_threads').workerData;
        require('worker_threads').parentPort.postMessage('go');
        for (;;) { try { const x = d.Region.fromFd(fd, 64 * 4096); x.view()[64 * 4096 - 1] = 1; x.close(); } catch {} }\`,
        { eval: true, workerData: { fd: r5.fd } });
      const codes = new Set();
      let n = 0;
      w.once('message', function loop() {
        try { r5.resize(2 * 4096); codes.add('shrunk'); } catch (e) { codes.add(e.code); }
        r5.resize(64 * 4096);
        if (++n < 3000) return setImmediate(loop);
        w.terminate().then(() => { process.stdout.write([...codes].join(',') + ' ' + n); r5.close(); });
      });`);
    assert.equal(r.signal, null, `the owner was killed by ${r.signal}\n${r.stderr}`);
    assert.equal(r.stdout, 'ERR_DMAMEM_SEALED 3000', r.stderr);
  });

  it('taking fd seals against shrinking: a raw ftruncate by the receiver fails, the owner gets ERR_DMAMEM_SEALED, growing works', () => {
    using r = Region.allocate(4 * PAGE, { hugepages: 'off' });
    r.view()[4 * PAGE - 1] = 5;
    assert.deepEqual(r.seals(), [], 'not sealed before the fd is shared');
    const fd = r.fd;
    assert.deepEqual(r.seals(), ['shrink']);
    assert.throws(() => native.ftruncate(fd, PAGE), { code: 'EPERM', syscall: 'ftruncate' });
    const view = r.view();
    assert.throws(() => r.resize(PAGE), (e: Error & { code?: string }) => e.name === 'DmamemError' && e.code === 'ERR_DMAMEM_SEALED' && /F_SEAL_SHRINK/.test(e.message));
    assert.equal(view.length, 4 * PAGE, 'a refused shrink changes nothing (the view is still attached)');
    assert.equal(r.mappedLength, 4 * PAGE);
    r.resize(8 * PAGE);
    assert.equal(r.view()[4 * PAGE - 1], 5);
    assert.equal(native.fstatSize(fd), 8 * PAGE);
  });

  it('without taking fd the owner still shrinks (nothing was shared)', () => {
    using r = Region.allocate(4 * PAGE, { hugepages: 'off' });
    r.resize(PAGE);
    assert.equal(r.mappedLength, PAGE);
    assert.deepEqual(r.seals(), []);
  });

  it('Region.fromFd seals before mapping, so a hostile owner (raw ftruncate) cannot shrink under the receiver', () => {
    const fd = native.memfdCreate('hostile-owner', C.MFD_ALLOW_SEALING);
    try {
      native.ftruncate(fd, 4 * PAGE);
      using rx = Region.fromFd(fd, 4 * PAGE);
      assert.equal(native.getSeals(fd) & C.F_SEAL_SHRINK, C.F_SEAL_SHRINK);
      assert.throws(() => native.ftruncate(fd, 0), { code: 'EPERM' });
      rx.view()[4 * PAGE - 1] = 1; // still backed: no SIGBUS
      native.ftruncate(fd, 8 * PAGE); // growing is still allowed
    } finally {
      native.close(fd);
    }
  });

  it('a memfd created with sealing: false cannot be shared read-only (ERR_DMAMEM_UNSUPPORTED), and once its fd is taken it never shrinks', () => {
    using r = Region.allocate(4 * PAGE, { hugepages: 'off', sealing: false });
    const fds = fdCount();
    assert.throws(() => r.shareReadOnly(), { name: 'DmamemError', code: 'ERR_DMAMEM_UNSUPPORTED' });
    assert.equal(fdCount(), fds, 'no read-only fd was opened');
    void r.fd;
    assert.throws(() => r.resize(PAGE), { code: 'ERR_DMAMEM_SEALED' });
    r.resize(8 * PAGE);
    assert.equal(r.mappedLength, 8 * PAGE);
  });
});
