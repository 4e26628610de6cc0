// Issue 9, item 3: a Region shared as one object. region.share() gives a plain handle that
// Region.fromShare maps in a worker (postMessage), in a child given the fd as stdio, in a child
// given it over a Unix socket (SCM_RIGHTS), or through /proc; read-only shares cannot write; after
// close() fd and address throw instead of returning stale numbers.

import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { native } from '../lib/native';
import { Region } from '../lib/os/region';
import { receiveShare, sendShare, shareSocketPair } from '../lib/os/share-socket';
import { expectNoLeaks } from './helpers/leaks';
import { runChild } from './helpers/child';

const PAGE = native.pageSize;
const INDEX_JS = JSON.stringify(path.resolve(__dirname, '..', 'lib', 'index.js'));
const PROLOGUE = `const d = require(${INDEX_JS}); const fs = require('node:fs');
const codeOf = (f) => { try { f(); return 'ok'; } catch (e) { return e.code || e.name; } };`;


describe('21 shares as one object (share / fromShare)', function () {
  this.timeout(30000);
  before(() => runChild('0'));
  expectNoLeaks();

  it('share() is a plain, structured-clonable object naming everything needed to map the pages', () => {
    using r = Region.allocate(3 * PAGE, { hugepages: 'off' });
    const h = r.share();
    assert.deepEqual(Object.keys(h).sort(), ['backing', 'fd', 'length', 'offset', 'pid', 'readOnly']);
    assert.deepEqual(structuredClone(h), h);
    assert.deepEqual(JSON.parse(JSON.stringify(h)), h);
    assert.equal(h.length, 3 * PAGE);
    assert.equal(h.readOnly, false);
    assert.equal(h.pid, process.pid);
    assert.equal(h.backing, r.backing);
    assert.ok(r.seals().includes('shrink'), 'sharing sealed the size');
  });

  it('a worker maps a handle received through postMessage; read-only handles give copies only', async () => {
    using r = Region.allocate(PAGE, { hugepages: 'off' });
    r.write(0, Buffer.from('main'));
    const worker = new Worker(
      `const { parentPort } = require('node:worker_threads'); ${PROLOGUE}
      parentPort.on('message', ({ rw, ro }) => {
        const w = d.Region.fromShare(rw); const seen = w.view(0, 4).toString(); w.view(8, 6).write('worker'); w.close();
        const o = d.Region.fromShare(ro);
        const out = [seen, o.writable, codeOf(() => o.view()), codeOf(() => o.write(0, Buffer.from('x'))), o.read(8, 6).toString(),
          codeOf(() => d.Region.fromFd(ro.fd, ro.length))];
        o.close(); parentPort.postMessage(out.join(','));
      });`,
      { eval: true },
    );
    worker.postMessage({ rw: r.share(), ro: r.share({ readOnly: true }) });
    const out = await new Promise((res, rej) => (worker.once('message', res), worker.once('error', rej)));
    await worker.terminate();
    assert.equal(out, 'main,false,ERR_DMAMEM_READONLY,ERR_DMAMEM_READONLY,worker,EACCES');
    assert.equal(r.view(8, 6).toString(), 'worker');
  });

  it('a child maps a handle given as JSON with the fd as stdio[3]', async () => {
    using r = Region.allocate(2 * PAGE, { hugepages: 'off' });
    r.write(PAGE, Buffer.from('stdio'));
    const h = r.share();
    const res = await runChild(
      `${PROLOGUE} const c = d.Region.fromShare(JSON.parse(process.env.SHARE), { fd: 3 });
      process.stdout.write(c.view(${PAGE}, 5).toString()); c.view(0, 5).write('child'); c.close();`,
      h.fd,
      { SHARE: JSON.stringify(h) },
    );
    assert.equal(res.stderr, '');
    assert.equal(res.stdout, 'stdio');
    assert.equal(r.view(0, 5).toString(), 'child');
  });

  it('a child receives shares over a Unix socket (SCM_RIGHTS): read-write maps writable, read-only cannot write', async () => {
    using r = Region.allocate(PAGE, { hugepages: 'off' });
    r.write(0, Buffer.from('socket'));
    const [mine, theirs] = shareSocketPair();
    try {
      const child = runChild(
        `${PROLOGUE}
        const rw = d.receiveShare(3), ro = d.receiveShare(3);
        const a = d.Region.fromShare(rw); fs.closeSync(rw.fd);
        const b = d.Region.fromShare(ro);
        const out = [rw.pid === process.pid, a.view(0, 6).toString(), ro.readOnly, codeOf(() => b.view()),
          codeOf(() => d.Region.fromFd(ro.fd, 4096)), codeOf(() => fs.writeSync(ro.fd, 'x'))];
        a.view(6, 4).write('back'); a.close(); b.close(); fs.closeSync(ro.fd);
        process.stdout.write(out.join(','));`,
        theirs,
      );
      fs.closeSync(theirs);
      sendShare(mine, r.share());
      sendShare(mine, r.share({ readOnly: true }));
      const res = await child;
      assert.equal(res.stderr, '');
      assert.equal(res.stdout, 'true,socket,true,ERR_DMAMEM_READONLY,EACCES,EBADF');
      assert.equal(r.view(6, 4).toString(), 'back');
    } finally {
      fs.closeSync(mine);
    }
  });

  it('a child without the fd maps a handle through /proc/<pid>/fd of the sender', async () => {
    using r = Region.allocate(PAGE, { hugepages: 'off' });
    r.write(0, Buffer.from('proc'));
    const res = await runChild(`${PROLOGUE} const c = d.Region.fromShare(${JSON.stringify(r.share({ readOnly: true }))}); process.stdout.write(c.read(0, 4).toString() + c.writable); c.close();`);
    assert.equal(res.stderr, '');
    assert.equal(res.stdout, 'procfalse');
  });

  it('after close(), fd and address throw ERR_DMAMEM_CLOSED; backing, backingReason and granule are read-only', () => {
    const r = Region.allocate(PAGE, { hugepages: 'off' });
    assert.equal(typeof r.fd, 'number');
    assert.equal(typeof r.address, 'number');
    assert.throws(() => ((r as unknown as { backing: string }).backing = 'thp'), TypeError);
    assert.throws(() => ((r as unknown as { granule: number }).granule = 1), TypeError);
    assert.throws(() => ((r as unknown as { backingReason: string }).backingReason = ''), TypeError);
    assert.equal(r.backing, '4k');
    assert.equal(r.granule, PAGE);
    r.close();
    assert.throws(() => r.fd, { name: 'DmamemError', code: 'ERR_DMAMEM_CLOSED' });
    assert.throws(() => r.address, { name: 'DmamemError', code: 'ERR_DMAMEM_CLOSED' });
    assert.throws(() => r.share(), { code: 'ERR_DMAMEM_CLOSED' });
    assert.equal(r.backing, '4k', 'what it was stays readable');
    assert.equal(r.closed, true);
  });

  it('rejects bad input before any side effect', () => {
    using r = Region.allocate(PAGE, { hugepages: 'off' });
    assert.throws(() => r.share({ readOnly: 1 as unknown as boolean }), TypeError);
    assert.throws(() => r.share({ enforce: true }), TypeError);
    assert.throws(() => r.share(null as unknown as object), TypeError);
    assert.deepEqual(r.seals(), [], 'nothing was sealed by the refused calls');
    const h = r.share();
    assert.throws(() => Region.fromShare(null as never), TypeError);
    assert.throws(() => Region.fromShare({ ...h, length: -1 }), RangeError);
    assert.throws(() => Region.fromShare({ ...h, length: '1' as unknown as number }), TypeError);
    assert.throws(() => Region.fromShare({ ...h, offset: 1 }), RangeError);
    assert.throws(() => Region.fromShare({ ...h, backing: 'x' as never }), TypeError);
    assert.throws(() => Region.fromShare({ ...h, readOnly: 'no' as never }), TypeError);
    assert.throws(() => Region.fromShare({ ...h, pid: 0 }), RangeError);
    assert.throws(() => Region.fromShare(h, { fd: -1 }), RangeError);
    assert.throws(() => Region.fromShare({ ...h, length: 2 * PAGE }), RangeError, 'past the end of the file');
    assert.throws(() => sendShare(-1, h), RangeError);
    assert.throws(() => sendShare('3' as unknown as number, h), TypeError);
    assert.throws(() => sendShare(r.fd, { ...h, fd: 'x' as unknown as number }), TypeError);
    assert.throws(() => receiveShare(undefined as unknown as number), TypeError);
  });

  it('receiveShare waits at most timeoutMs (ETIMEDOUT, nothing lost) and checks its options first', () => {
    const [a, b] = shareSocketPair();
    try {
      const t0 = process.hrtime.bigint();
      assert.throws(() => receiveShare(b, { timeoutMs: 50 }), (e: NodeJS.ErrnoException) => e.code === 'ETIMEDOUT' && e.syscall === 'recvmsg');
      const waited = Number(process.hrtime.bigint() - t0) / 1e6;
      assert.ok(waited >= 45, `it waited ${waited} ms, not the 50 asked for`);
      assert.throws(() => receiveShare(b, { timeoutMs: 0 }), { code: 'ETIMEDOUT' }, 'a zero timeout only polls');
      using r = Region.allocate(PAGE, { hugepages: 'off' });
      sendShare(a, r.share());
      const h = receiveShare(b, { timeoutMs: 0 });
      assert.strictEqual(h.length, PAGE, 'a share already waiting is received with a zero timeout');
      fs.closeSync(h.fd);
      sendShare(a, r.share());
      assert.throws(() => receiveShare(b, { timeoutMs: -1 }), RangeError);
      assert.throws(() => receiveShare(b, { timeoutMs: NaN }), TypeError);
      assert.throws(() => receiveShare(b, { timeoutMs: '5' as unknown as number }), TypeError);
      assert.throws(() => receiveShare(b, { timeout: 5 } as never), /unknown option "timeout".*timeoutMs/);
      assert.throws(() => receiveShare(b, 5 as never), TypeError);
      const h2 = receiveShare(b, { timeoutMs: Infinity });
      assert.strictEqual(h2.length, PAGE, 'the refused calls consumed nothing');
      fs.closeSync(h2.fd);
    } finally {
      fs.closeSync(a);
      fs.closeSync(b);
    }
  });

  it('receiveShare refuses a message without a descriptor or with bad JSON, keeping no fd', () => {
    const [a, b] = shareSocketPair();
    try {
      fs.writeSync(a, 'no fd here');
      assert.throws(() => receiveShare(b), /without a descriptor/);
      using r = Region.allocate(PAGE, { hugepages: 'off' });
      native.sendFd(a, r.fd, Buffer.from('{not json'));
      assert.throws(() => receiveShare(b), /JSON/);
      native.sendFd(a, r.fd, Buffer.from('{"length":-1}'));
      assert.throws(() => receiveShare(b), RangeError, 'the handle check runs, and the received fd is closed');
      assert.throws(() => sendShare(b, { ...r.share(), fd: 999999 }), { code: 'EBADF' });
    } finally {
      fs.closeSync(a);
      fs.closeSync(b);
    }
  });
});
