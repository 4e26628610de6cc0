// Sharing a Region's memfd: with a child process (fd in stdio, or /proc/PID/fd), read-only shares,
// seals against a receiver shrinking the memory, and worker_threads mapping the same pages.

import assert from 'node:assert/strict';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { Region } from '../lib/os/region';
import { native } from '../lib/native';
import { expectNoLeaks, requireHugepagesOrSkip } from './helpers/leaks';
import { runChild } from './helpers/child';

const PAGE = native.pageSize;
const DIST = path.resolve(__dirname, '..', 'lib');
const REGION_JS = JSON.stringify(path.join(DIST, 'os', 'region.js'));
const NATIVE_JS = JSON.stringify(path.join(DIST, 'native.js'));



/** The child's prologue: load the compiled Region and a helper printing an error's code. */
const PROLOGUE = `const { Region } = require(${REGION_JS}); const { native } = require(${NATIVE_JS});
const codeOf = (f) => { try { f(); return 'ok'; } catch (e) { return e.code || e.message; } };`;

describe('21 sharing', () => {
  // Node opens /dev/null once, on the first spawn, and keeps it: open it before the leak baseline.
  before(() => runChild('0'));
  expectNoLeaks();

  it('a child process maps the fd (stdio) and both see each other’s bytes', async () => {
    using r = Region.allocate(4 * PAGE, { hugepages: 'off', name: 'share-child' });
    r.view(0, 5).write('hello');
    const res = await runChild(
      `${PROLOGUE}
      const c = Region.fromFd(3, ${4 * PAGE});
      process.stdout.write(c.view(0, 5).toString());
      c.view(${PAGE}, 6).write('child!');
      c.close();`,
      r.fd,
    );
    assert.equal(res.stderr, '');
    assert.equal(res.code, 0);
    assert.equal(res.stdout, 'hello');
    assert.equal(r.view(PAGE, 6).toString(), 'child!');
  });

  it('a child maps hugetlb memory shared through its fd', async function () {
    requireHugepagesOrSkip(this, 1);
    using r = Region.allocate(2 * 1024 * 1024, { hugepages: 'require', name: 'share-huge' });
    r.view()[2 * 1024 * 1024 - 1] = 77;
    const res = await runChild(
      `${PROLOGUE}
      const c = Region.fromFd(3, ${2 * 1024 * 1024});
      process.stdout.write(c.backing + ' ' + c.view()[${2 * 1024 * 1024 - 1}]);
      c.view()[0] = 66; c.close();`,
      r.fd,
    );
    assert.equal(res.stdout, 'hugetlb-2M 77', res.stderr);
    assert.equal(r.view()[0], 66);
  });

  it('a read-only share cannot be mapped writable (EACCES) but can be read by copy', async () => {
    using r = Region.allocate(PAGE, { hugepages: 'off', name: 'share-ro' });
    r.view(0, 6).write('secret');
    const share = r.shareReadOnly();
    assert.match(share.path, new RegExp(`^/proc/${process.pid}/fd/${share.fd}$`));
    const res = await runChild(
      `${PROLOGUE}
      const out = [codeOf(() => Region.fromFd(3, ${PAGE}))];
      const ro = Region.fromFd(3, ${PAGE}, { writable: false });
      out.push(codeOf(() => ro.view()), ro.read(0, 6).toString(), codeOf(() => ro.write(0, Buffer.from('x'))));
      const byPath = Region.open(${JSON.stringify(share.path)}, ${PAGE}, { writable: false });
      out.push(byPath.read(0, 6).toString());
      ro.close(); byPath.close();
      process.stdout.write(out.join(','));`,
      share.fd,
    );
    assert.equal(res.stdout, 'EACCES,ERR_DMAMEM_READONLY,secret,ERR_DMAMEM_READONLY,secret', res.stderr);
    assert.equal(r.view(0, 6).toString(), 'secret');
  });

  it("shareReadOnly({ enforce: true }) stops even a read-write reopen via /proc from mapping it writable", async () => {
    using r = Region.allocate(PAGE, { hugepages: 'off', name: 'share-enforced' });
    const share = r.shareReadOnly({ enforce: true });
    assert.ok(r.seals().includes('future-write'));
    r.view(0, 2).write('ok'); // the owner's existing mapping still writes
    const res = await runChild(
      `${PROLOGUE}
      process.stdout.write(codeOf(() => Region.open(${JSON.stringify(share.path)}, ${PAGE})));`,
    );
    assert.equal(res.stdout, 'EPERM', res.stderr);
  });

  it("seal(['shrink']) stops a receiver from shrinking the memory (ftruncate EPERM); growing still works", async () => {
    using r = Region.allocate(2 * PAGE, { hugepages: 'off', name: 'share-sealed' });
    r.seal(['shrink']);
    assert.deepEqual(r.seals(), ['shrink']);
    const res = await runChild(`${PROLOGUE} process.stdout.write(codeOf(() => native.ftruncate(3, 0)) + ',' + native.fstatSize(3));`, r.fd);
    assert.equal(res.stdout, `EPERM,${2 * PAGE}`, res.stderr);
    r.view()[2 * PAGE - 1] = 1; // still mapped: no SIGBUS
    assert.throws(() => r.resize(PAGE), { name: 'DmamemError', code: 'ERR_DMAMEM_SEALED' });
    r.resize(4 * PAGE);
    assert.equal(r.view()[2 * PAGE - 1], 1);
  });

  it('worker_threads map the same memfd and see the same bytes', async () => {
    using r = Region.allocate(PAGE, { hugepages: 'off', name: 'share-worker' });
    r.view(0, 4).write('main');
    const worker = new Worker(
      `const { workerData, parentPort } = require('node:worker_threads');
      const { Region } = require(${REGION_JS});
      const w = Region.fromFd(workerData.fd, workerData.length);
      const seen = w.view(0, 4).toString();
      w.view(100, 6).write('worker');
      w.close();
      parentPort.postMessage(seen);`,
      { eval: true, workerData: { fd: r.fd, length: PAGE } },
    );
    const seen = await new Promise<unknown>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    });
    await new Promise((resolve) => worker.once('exit', resolve));
    assert.equal(seen, 'main');
    assert.equal(r.view(100, 6).toString(), 'worker');
    assert.equal(r.closed, false, 'the worker closed its own dup of the fd, not ours');
    r.view()[0] = 1;
  });

  it("the owner cannot shrink the memfd while a worker's mapping reaches past the new end", async () => {
    using r = Region.allocate(4 * PAGE, { hugepages: 'off', name: 'share-worker-shrink' });
    const worker = new Worker(
      `const { workerData, parentPort } = require('node:worker_threads');
      const { Region } = require(${REGION_JS});
      const w = Region.fromFd(workerData.fd, workerData.length);
      parentPort.postMessage('mapped');
      parentPort.once('message', () => { const last = w.view()[workerData.length - 1]; w.close(); parentPort.postMessage(last); });`,
      { eval: true, workerData: { fd: r.fd, length: 4 * PAGE } },
    );
    const next = (): Promise<unknown> =>
      new Promise((resolve, reject) => {
        worker.once('message', resolve);
        worker.once('error', reject);
      });
    try {
      assert.equal(await next(), 'mapped');
      r.view()[4 * PAGE - 1] = 9;
      assert.throws(() => r.resize(PAGE), { code: 'ERR_DMAMEM_SEALED' });
      worker.postMessage('touch');
      assert.equal(await next(), 9, 'the worker touched its last page: still backed');
    } finally {
      await worker.terminate();
    }
    assert.throws(() => r.resize(PAGE), { code: 'ERR_DMAMEM_SEALED' }, 'sharing sealed the size: it may only grow');
    assert.equal(native.fstatSize(r.fd), 4 * PAGE);
  });

  it('fromFd refuses lengths past the end of the file (they would SIGBUS)', () => {
    using r = Region.allocate(PAGE, { hugepages: 'off' });
    assert.throws(() => Region.fromFd(r.fd, 2 * PAGE), RangeError);
    assert.throws(() => Region.fromFd(-1, PAGE), RangeError);
    assert.throws(() => Region.fromFd(r.fd, PAGE, { offset: 1 }), RangeError);
  });
});
