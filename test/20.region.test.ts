// Region over real syscalls: alignment, backings and the hugepage fallback, views and their
// detachment, resize, protect, alias, close, and misuse errors.

import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as dmamem from '../lib/index';
import { Region } from '../lib/os/region';
import { ADVICES } from '../lib/os/region-options';
import { thpMode } from '../lib/os/sysinfo';
import { hugepagePoolFree, HUGE_2M } from '../lib/os/backing';
import { readKpageflags, hasKpageflag, KPF_HUGE, KPF_THP, pfnVisible } from '../lib/os/pagemap';
import { viewAddress, trackedExternalMemory } from '../lib/os/views';
import { native } from '../lib/native';
import { expectNoLeaks, forceGc, requireHugepagesOrSkip } from './helpers/leaks';

const PAGE = native.pageSize;

/** VmLck of /proc/self/status in bytes: memory this process has locked. */
function lockedBytes(): number {
  const m = /^VmLck:\s+(\d+) kB$/m.exec(fs.readFileSync('/proc/self/status', 'utf8'));
  return Number(m?.[1] ?? NaN) * 1024;
}

describe('20 Region', () => {
  expectNoLeaks();

  describe('allocation', () => {
    it('is page-aligned, pre-faulted, and reports its real address', () => {
      using r = Region.allocate(10000, { hugepages: 'off' });
      assert.equal(r.address % PAGE, 0);
      assert.equal(r.length, 10000);
      assert.equal(r.mappedLength, 3 * PAGE);
      assert.equal(r.backing, '4k');
      assert.match(r.backingReason, /'off'/);
      assert.equal(r.granule, PAGE);
      assert.ok(r.physicalPages().every((p) => p.present), 'MADV_POPULATE_WRITE faulted every page');
      const v = r.view(100, 10);
      assert.equal(viewAddress(v), r.address + 100);
    });

    it('aligns to 2 MiB with align2M even for 4 KiB pages', () => {
      using r = Region.allocate(3 * PAGE, { hugepages: 'off', align2M: true });
      assert.equal(r.address % HUGE_2M, 0);
    });

    it('populate: false leaves pages unfaulted', () => {
      using r = Region.allocate(4 * PAGE, { hugepages: 'off', populate: false });
      assert.ok(r.physicalPages().every((p) => !p.present));
    });

    it("hugetlb 'require': 512 consecutive PFNs per 2 MiB page and kpageflags HUGE", function () {
      requireHugepagesOrSkip(this, 1);
      using r = Region.allocate(HUGE_2M, { hugepages: 'require' });
      assert.equal(r.backing, 'hugetlb-2M');
      assert.equal(r.granule, HUGE_2M);
      assert.equal(r.address % HUGE_2M, 0);
      if (!pfnVisible()) return;
      const pfns = r.pfns();
      assert.equal(pfns.length, 512);
      for (let i = 1; i < 512; i++) assert.equal(pfns[i], pfns[0]! + i);
      assert.equal(r.isPhysicallyContiguous(), true);
      const flags = readKpageflags(pfns[0]!, 1);
      assert.ok(flags !== null, '/proc/kpageflags is readable with CAP_SYS_ADMIN');
      assert.ok(hasKpageflag(flags[0]!, KPF_HUGE), 'KPF_HUGE is set');
    });

    it("'auto' prefers hugetlb for 2 MiB multiples when the pool has room", function () {
      requireHugepagesOrSkip(this, 2);
      using r = Region.allocate(2 * HUGE_2M);
      assert.equal(r.backing, 'hugetlb-2M');
    });

    // Runs for real with an empty pool too (a user without root): then there is nothing to hog.
    it("'auto' falls back with the reason when the pool is exhausted; 'require' fails with ENOMEM naming nr_hugepages", () => {
      const hogs: Region[] = [];
      try {
        // Take every page still reservable (mmap reserves them; no need to fault them in).
        for (let free = hugepagePoolFree(); free > 0; free = hugepagePoolFree()) {
          hogs.push(Region.allocate(free * HUGE_2M, { hugepages: 'require', populate: false, name: 'pool-hog' }));
        }
        using auto = Region.allocate(HUGE_2M);
        assert.notEqual(auto.backing, 'hugetlb-2M');
        assert.match(auto.backingReason, /pool/);
        assert.match(auto.backingReason, /nr_hugepages/);
        if (['never', 'deny', null].includes(thpMode('shmem'))) {
          // shmem THP is off for memfds: 4 KiB pages, and the reason says so and how to enable it.
          assert.equal(auto.backing, '4k');
          assert.match(auto.backingReason, /shmem_enabled/);
        }
        assert.throws(
          () => Region.allocate(HUGE_2M, { hugepages: 'require' }),
          (err: NodeJS.ErrnoException) => {
            assert.equal(err.code, 'ENOMEM');
            assert.equal(err.syscall, 'mmap');
            assert.equal(err.errno, -12);
            assert.match(err.message, /echo \d+ \| sudo tee \/proc\/sys\/vm\/nr_hugepages/);
            return true;
          },
        );
      } finally {
        for (const h of hogs) h.close();
      }
      if (hogs.length > 0) assert.ok(hugepagePoolFree() > 0, 'the pool is given back');
    });

    it("'auto' takes transparent huge pages when the pool is exhausted and shmem THP is allowed (confirmed by kpageflags)", function () {
      const knob = '/sys/kernel/mm/transparent_hugepage/shmem_enabled';
      const before = thpMode('shmem');
      if (process.getuid?.() !== 0 || before === null) {
        const why = `needs root to set ${knob} to 'advise' for the test (this is ${before === null ? 'a kernel without shmem THP' : 'not root'})`;
        if (process.env.CI === 'true') throw new Error(`CI must run the THP path: ${why}`);
        this.test!.title += ` [skipped: ${why}]`;
        this.skip();
      }
      const hogs: Region[] = [];
      try {
        fs.writeFileSync(knob, 'advise');
        for (let free = hugepagePoolFree(); free > 0; free = hugepagePoolFree()) {
          hogs.push(Region.allocate(free * HUGE_2M, { hugepages: 'require', populate: false, name: 'pool-hog' }));
        }
        using r = Region.allocate(4 * HUGE_2M, { align2M: true });
        assert.equal(r.backing, 'thp', r.backingReason);
        assert.match(r.backingReason, /thp/);
        const pfns = r.pfns();
        const flags = readKpageflags(pfns[0]!, 1);
        assert.ok(flags !== null && hasKpageflag(flags[0]!, KPF_THP), 'the first page is part of a transparent huge page');
        r.view().fill(7);
        assert.equal(r.read(3 * HUGE_2M, 1)[0], 7);
      } finally {
        for (const h of hogs) h.close();
        fs.writeFileSync(knob, before!);
      }
      assert.equal(thpMode('shmem'), before, 'the setting is restored');
    });

    it("'require' with a length that is not a 2 MiB multiple is EINVAL", () => {
      assert.throws(() => Region.allocate(PAGE, { hugepages: 'require' }), { code: 'EINVAL', syscall: 'mmap' });
    });
  });

  describe('views and detachment', () => {
    it('close() detaches every view, is idempotent, and later calls fail cleanly', () => {
      const r = Region.allocate(2 * PAGE, { hugepages: 'off' });
      const a = r.view();
      const b = r.view(PAGE, 16);
      const u32 = new Uint32Array(a.buffer, a.byteOffset, 4);
      a.fill(1);
      r.close();
      r.close();
      assert.equal(r.closed, true);
      assert.equal(a.length, 0);
      assert.equal(b.length, 0);
      assert.equal(u32.length, 0);
      assert.equal(a[0], undefined);
      assert.equal(u32[0], undefined);
      assert.throws(() => r.view(), { code: 'ERR_DMAMEM_CLOSED' });
      assert.throws(() => r.read(0, 1), { code: 'ERR_DMAMEM_CLOSED' });
    });

    it('resize keeps contents, detaches old views and gives new ones (grow and shrink)', () => {
      using r = Region.allocate(PAGE, { hugepages: 'off' });
      r.view().fill(0xab);
      const old = r.view();
      r.resize(64 * PAGE);
      assert.equal(old.length, 0);
      assert.equal(r.length, 64 * PAGE);
      const grown = r.view();
      assert.equal(grown.length, 64 * PAGE);
      assert.equal(grown[PAGE - 1], 0xab);
      assert.equal(grown[PAGE], 0);
      grown[10 * PAGE] = 7;
      r.resize(PAGE + 1);
      assert.equal(grown.length, 0);
      assert.equal(r.view()[PAGE - 1], 0xab);
      assert.equal(r.mappedLength, 2 * PAGE);
    });

    it('resize of hugetlb memory in 2 MiB steps keeps contents', function () {
      requireHugepagesOrSkip(this, 3);
      using r = Region.allocate(HUGE_2M, { hugepages: 'require' });
      r.view().fill(5);
      r.resize(3 * HUGE_2M);
      assert.equal(r.address % HUGE_2M, 0);
      assert.equal(r.view()[HUGE_2M - 1], 5);
      r.resize(HUGE_2M);
      assert.equal(r.view()[0], 5);
      assert.throws(() => r.resize(HUGE_2M + PAGE), RangeError);
    });

    it("protect('read') detaches views; view() then throws and read() copies; 'readwrite' gives views again", () => {
      using r = Region.allocate(PAGE, { hugepages: 'off' });
      const v = r.view();
      v.write('hello');
      r.protect('read');
      assert.equal(v.length, 0);
      assert.throws(() => r.view(), (err: Error & { code?: string }) => err.code === 'ERR_DMAMEM_READONLY' && /read\(/.test(err.message));
      assert.throws(() => r.write(0, Buffer.from('x')), { code: 'ERR_DMAMEM_READONLY' });
      assert.equal(r.read(0, 5).toString(), 'hello');
      r.protect('none');
      assert.throws(() => r.read(0, 1), { code: 'ERR_DMAMEM_PROT_NONE' });
      r.protect('readwrite');
      assert.equal(r.view(0, 5).toString(), 'hello');
    });

    it('write() copies in and read() copies out', () => {
      using r = Region.allocate(PAGE, { hugepages: 'off' });
      r.write(100, Buffer.from([1, 2, 3]));
      assert.deepEqual([...r.read(99, 5)], [0, 1, 2, 3, 0]);
    });

    it('reports mapped bytes to V8 and takes them back on close', () => {
      const before = trackedExternalMemory();
      const v8Before = native.adjustExternalMemory(0); // V8's own total, not just our counter
      const r = Region.allocate(5 * PAGE, { hugepages: 'off' });
      assert.equal(trackedExternalMemory() - before, 5 * PAGE);
      assert.equal(native.adjustExternalMemory(0) - v8Before, 5 * PAGE);
      r.resize(8 * PAGE);
      assert.equal(trackedExternalMemory() - before, 8 * PAGE);
      assert.equal(native.adjustExternalMemory(0) - v8Before, 8 * PAGE);
      r.close();
      assert.equal(trackedExternalMemory(), before);
      assert.equal(native.adjustExternalMemory(0), v8Before);
    });

    it('shrinking is refused once another mapping of the memfd shares it (it would SIGBUS): the fd is sealed', () => {
      using r = Region.allocate(4 * PAGE, { hugepages: 'off' });
      const view = r.view();
      const other = Region.fromFd(r.fd, 4 * PAGE);
      try {
        assert.throws(() => r.resize(2 * PAGE), (err: Error & { code?: string }) => err.code === 'ERR_DMAMEM_SEALED' && /F_SEAL_SHRINK/.test(err.message));
        assert.equal(view.length, 4 * PAGE, 'a refused resize changes nothing');
        other.view()[4 * PAGE - 1] = 1; // still backed: no SIGBUS
        other.resize(2 * PAGE); // a mapping that does not own the file shrinks only itself
        assert.throws(() => r.resize(2 * PAGE), { code: 'ERR_DMAMEM_SEALED' }, 'sharing fixed the size for good');
        assert.equal(native.fstatSize(r.fd), 4 * PAGE);
        assert.equal(other.view()[PAGE], 0);
      } finally {
        other.close();
      }
    });
  });

  describe('alias, advise, lock', () => {
    it('alias() is a second real mapping of the same pages', () => {
      using r = Region.allocate(2 * PAGE, { hugepages: 'off' });
      using a = r.alias();
      assert.notEqual(a.address, r.address);
      r.view()[PAGE + 3] = 42;
      assert.equal(a.view()[PAGE + 3], 42);
      a.view()[0] = 9;
      assert.equal(r.view()[0], 9);
      if (pfnVisible()) assert.deepEqual([...a.pfns()], [...r.pfns()]);
      assert.throws(() => r.resize(PAGE), { code: 'ERR_DMAMEM_BUSY' });
      a.close();
      assert.equal(r.view()[0], 9);
    });

    it('advise() and lock()/unlock() run the real syscalls', () => {
      using r = Region.allocate(4 * PAGE, { hugepages: 'off' });
      r.view().fill(3);
      r.advise('dontneed');
      assert.equal(r.view()[0], 3, 'shared memfd pages keep their contents after MADV_DONTNEED');
      r.advise('remove', PAGE, PAGE);
      assert.equal(r.view()[PAGE], 0, 'MADV_REMOVE punched a hole');
      r.advise('populate-write');
      for (const advice of ADVICES) if (advice !== 'remove') r.advise(advice);
      const before = lockedBytes();
      r.lock();
      assert.equal(lockedBytes(), before + 4 * PAGE, 'VmLck counts the whole region');
      r.unlock();
      assert.equal(lockedBytes(), before);
      r.lock({ onFault: true });
      assert.equal(lockedBytes(), before + 4 * PAGE, 'populated pages are locked at once with onFault');
      r.unlock();
      assert.equal(lockedBytes(), before);
    });

    it("advise('remove') is refused on hugetlb memory (a refault could SIGBUS)", function () {
      requireHugepagesOrSkip(this, 1);
      using r = Region.allocate(HUGE_2M, { hugepages: 'require' });
      assert.throws(() => r.advise('remove'), { code: 'ERR_DMAMEM_UNSUPPORTED' });
      r.advise('dontneed');
      assert.throws(() => r.advise('dontneed', PAGE), RangeError, 'hugetlb advice is in 2 MiB units');
    });
  });

  describe('misuse', () => {
    it('throws TypeError/RangeError with sharp-style messages before any syscall', () => {
      assert.throws(() => Region.allocate(-1), { name: 'RangeError', message: 'Expected a positive integer for length but received -1 of type number' });
      assert.throws(() => Region.allocate('1' as unknown as number), { name: 'TypeError', message: "Expected a positive integer for length but received '1' of type string" });
      assert.throws(() => Region.allocate(1.5), RangeError);
      assert.throws(() => Region.allocate(PAGE, { hugepages: 'yes' as 'auto' }), { name: 'TypeError', message: "Expected one of 'auto', 'require', 'off' for hugepages but received 'yes' of type string" });
      assert.throws(() => Region.allocate(PAGE, null as unknown as object), TypeError);
      using r = Region.allocate(PAGE, { hugepages: 'off' });
      assert.throws(() => r.view(PAGE + 1), { name: 'RangeError', message: `Expected an integer between 0 and ${PAGE} for offset but received ${PAGE + 1} of type number` });
      assert.throws(() => r.view(0, PAGE + 1), RangeError);
      assert.throws(() => r.advise('explode' as 'normal'), TypeError);
      assert.throws(() => r.advise('normal', 1), RangeError);
      assert.throws(() => r.protect('rw' as 'read'), TypeError);
      assert.throws(() => r.write(0, 'abc' as unknown as Uint8Array), TypeError);
      assert.throws(() => r.seal(['nope' as 'seal']), TypeError);
      // Options are checked before the path is opened: RangeError, not ENOENT.
      assert.throws(() => Region.open('/nonexistent', PAGE, { offset: 1 }), RangeError);
      assert.throws(() => Region.open('/nonexistent', PAGE, { populate: 'yes' as unknown as boolean }), TypeError);
      assert.throws(() => Region.fromFd(r.fd, PAGE, { writable: 1 as unknown as boolean }), TypeError);
    });

    it('the package root exports no way to view an arbitrary address', () => {
      assert.equal('ViewWindow' in dmamem, false);
      assert.equal('trackExternalMemory' in dmamem, false);
      assert.equal(typeof dmamem.Region, 'function');
    });
  });

  it('survives 20,000 create/view/close cycles at re-used addresses with GC in between', function () {
    this.timeout(120000);
    const seen = new Map<number, number>();
    for (let i = 0; i < 20000; i++) {
      const r = Region.allocate(PAGE, { hugepages: 'off' });
      const v = r.view();
      v[0] = i & 0xff;
      assert.equal(v[0], i & 0xff);
      seen.set(r.address, (seen.get(r.address) ?? 0) + 1);
      r.close();
      assert.equal(v.length, 0);
      if (i % 2000 === 0) forceGc();
    }
    assert.ok(Math.max(...seen.values()) > 1, 'addresses were re-used');
  });
});
