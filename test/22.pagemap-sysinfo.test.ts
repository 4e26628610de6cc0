// pagemap and kpageflags reads over real memory, and the system snapshot read from /proc and /sys.

import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { Region } from '../lib/os/region';
import { PFN_HIDDEN, PFN_NOT_PRESENT, readPagemap, readPfns, readKpageflags, pfnVisible, hasKpageflag, KPF_HUGE, KPF_COMPOUND_HEAD, KPF_COMPOUND_TAIL } from '../lib/os/pagemap';
import { systemInfo, explainMissing, thpMode, DEFAULT_HUGEPAGES_WANTED } from '../lib/os/sysinfo';
import { DEFAULT_MACHINE_OPTIONS } from '../lib/mm/default';
import { HUGE_2M } from '../lib/os/hugetlb-pool';
import { native } from '../lib/native';
import { expectNoLeaks, requireHugepagesOrSkip, requirePfnsOrSkip } from './helpers/leaks';

const PAGE = native.pageSize;

describe('22 pagemap and system info', () => {
  expectNoLeaks();

  describe('pagemap', () => {
    it('reports present, shared memfd pages with PFNs (or null when hidden), and absent ones as not present', () => {
      using r = Region.allocate(4 * PAGE, { hugepages: 'off', populate: false });
      r.view()[0] = 1; // fault in page 0 only
      const pages = readPagemap(r.address, 4);
      assert.equal(pages.length, 4);
      assert.equal(pages[0]!.present, true);
      assert.equal(pages[0]!.fileOrShared, true);
      assert.equal(pages[0]!.swapped, false);
      if (pfnVisible()) assert.ok(typeof pages[0]!.pfn === 'number' && pages[0]!.pfn > 0);
      else assert.equal(pages[0]!.pfn, null);
      for (const p of pages.slice(1)) {
        assert.equal(p.present, false);
        assert.equal(p.pfn, null, 'a page not present has no PFN, never 0');
      }
    });

    it('readPfns fills a caller-provided Float64Array, PFN_NOT_PRESENT for missing pages', () => {
      using r = Region.allocate(2 * PAGE, { hugepages: 'off', populate: false });
      r.view()[PAGE] = 1;
      const out = new Float64Array(8);
      const got = readPfns(r.address, 2, out);
      assert.equal(got, out);
      assert.equal(out[0], PFN_NOT_PRESENT);
      if (pfnVisible()) assert.equal(out[1], r.physicalPages()[1]!.pfn);
      else assert.equal(out[1], PFN_HIDDEN);
      assert.throws(() => readPfns(r.address, 2, new Float64Array(1)), TypeError);
    });

    it('agrees with pfnVisible(), decided from CAP_SYS_ADMIN in CapEff', () => {
      const capEff = BigInt(`0x${/CapEff:\s*([0-9a-f]+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'))![1]}`);
      assert.equal(pfnVisible(), ((capEff >> 21n) & 1n) === 1n);
    });

    it('kpageflags marks a hugetlb page HUGE, head then tails', function () {
      requireHugepagesOrSkip(this, 1);
      requirePfnsOrSkip(this);
      using r = Region.allocate(2 * 1024 * 1024, { hugepages: 'require' });
      const pfn = r.pfns()[0]!;
      const flags = readKpageflags(pfn, 2);
      assert.ok(flags !== null, '/proc/kpageflags is readable with CAP_SYS_ADMIN');
      assert.ok(hasKpageflag(flags[0]!, KPF_HUGE));
      assert.ok(hasKpageflag(flags[0]!, KPF_COMPOUND_HEAD));
      assert.ok(hasKpageflag(flags[1]!, KPF_COMPOUND_TAIL));
    });

    it('hasKpageflag reads one bit of a kpageflags word and refuses anything but a bigint and a bit 0..63', () => {
      assert.equal(hasKpageflag(1n << 17n, KPF_HUGE), true);
      assert.equal(hasKpageflag(1n << 16n, KPF_HUGE), false);
      assert.throws(() => hasKpageflag({} as unknown as bigint, KPF_HUGE), TypeError);
      assert.throws(() => hasKpageflag(1 as unknown as bigint, KPF_HUGE), TypeError);
      assert.throws(() => hasKpageflag(1n, {} as unknown as number), TypeError);
      assert.throws(() => hasKpageflag(1n, 64), RangeError);
      assert.throws(() => hasKpageflag(1n, -1), RangeError);
    });

    it('huge queries: past user space is a RangeError, more than the JS heap holds is ENOMEM, a large one is read in chunks', () => {
      assert.throws(() => readPfns(2 ** 47 - 4096, 2), RangeError);
      assert.throws(() => readPagemap(0, 1e9), (e: NodeJS.ErrnoException) => e.code === 'ENOMEM' && /JS heap/.test(e.message));
      assert.throws(() => readKpageflags(0, 2 ** 41), RangeError);
      // More entries than the cached scratch holds: read in chunks, each page answered.
      const pfns = readPfns(0, (1 << 20) + 5);
      assert.equal(pfns.length, (1 << 20) + 5);
      assert.ok(pfns.every((p) => p === PFN_NOT_PRESENT || p === PFN_HIDDEN || p > 0));
      assert.equal(pfns[(1 << 20) + 4], readPfns(((1 << 20) + 4) * 4096, 1)[0], 'the last chunk reads the right pages');
    });

    it('rejects misaligned addresses and bad counts before reading', () => {
      assert.throws(() => readPagemap(1, 1), { name: 'RangeError', message: `Expected a non-negative multiple of ${PAGE} for address but received 1 of type number` });
      assert.throws(() => readPagemap(0, 0), RangeError);
      assert.throws(() => readKpageflags(-1, 1), RangeError);
    });
  });

  describe('systemInfo', () => {
    it('matches /proc and /sys', () => {
      const info = systemInfo();
      assert.equal(info.pageSize, PAGE);
      const pool = info.hugepagePools.find((p) => p.sizeKiB === 2048);
      if (fs.existsSync('/sys/kernel/mm/hugepages/hugepages-2048kB')) {
        assert.ok(pool);
        assert.equal(pool.total, Number(fs.readFileSync('/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages', 'utf8')));
        assert.ok(pool.free <= pool.total);
      }
      assert.equal(info.thp.anonymous, thpMode('anonymous'));
      assert.equal(info.thp.shmem, thpMode('shmem'));
      assert.ok(info.numaNodes.length >= 1);
      assert.ok(info.numaNodes.every((n) => n.memTotal > 0 && n.memFree <= n.memTotal));
      const [soft] = native.memlockLimit();
      assert.equal(info.memlock.soft, soft < 0 ? null : soft);
      assert.equal(info.pfnVisible, pfnVisible());
      assert.equal(info.iommuGroups, fs.existsSync('/sys/kernel/iommu_groups') ? fs.readdirSync('/sys/kernel/iommu_groups').length : 0);
    });

    it('explainMissing gives an exact command for each missing capability', () => {
      const info = systemInfo();
      const missing = explainMissing(info);
      for (const m of missing) assert.ok(m.what && m.why && m.command);
      if (info.thp.shmem === 'never') {
        assert.ok(missing.some((m) => m.command === 'echo advise | sudo tee /sys/kernel/mm/transparent_hugepage/shmem_enabled'));
      }
      const empty = { ...info, hugepagePools: [{ sizeKiB: 2048, total: 0, free: 0, reserved: 0, surplus: 0 }], pfnVisible: false };
      const advice = explainMissing(empty);
      assert.ok(advice.some((m) => m.command === 'echo 32 | sudo tee /proc/sys/vm/nr_hugepages'), 'what the default machine needs: 32 pages');
      assert.equal(DEFAULT_HUGEPAGES_WANTED, DEFAULT_MACHINE_OPTIONS.cmaSize! / HUGE_2M, "the constant follows the default machine's CMA area (info must not load lib/mm)");
      const some = { ...info, hugepagePools: [{ sizeKiB: 2048, total: 40, free: 10, reserved: 2, surplus: 0 }] };
      assert.ok(explainMissing(some, 20).some((m) => m.command === 'echo 52 | sudo tee /proc/sys/vm/nr_hugepages'), '12 more for 20 with 8 reservable');
      assert.ok(!explainMissing(some, 8).some((m) => /hugetlb/.test(m.what)), 'enough room: nothing missing');
      const pfn = advice.find((m) => /physical/.test(m.what))!;
      assert.doesNotMatch(pfn.command, /command -v node"\)?\s*(#|$)/, 'never setcap on the system node binary');
      assert.match(pfn.why, /every script/);
      assert.ok(!explainMissing({ ...info, iommuGroups: 0 }).some((m) => /IOMMU/.test(m.what)), "the host IOMMU is information: dmamem's is a model");
    });
  });
});
