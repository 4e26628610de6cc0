// The crash reproducers of issue 8 (and its other broken promises: views reaching past what they
// were given, OOM kills, silent cross-machine corruption, side effects before validation), each in
// its own child process that must end by itself, within bounded time, without a signal.
// See test/fixtures/reproducers-child.ts for what each case does.

import assert from 'node:assert/strict';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import * as path from 'node:path';
import { spawnSyncLimited } from './fixtures/memcg';

const child = path.resolve(__dirname, 'fixtures', 'reproducers-child.js');
/** Memory limit of the cgroup the huge-size cases run in: a bug there is an OOM kill of the child only. */
const LIMIT = 512 * 1024 * 1024;

const cases: { name: string; title: string; limited?: boolean }[] = [
  { name: 'r1-hugetlb-remap-moved-vma', title: '1: remap_pfn_range of hugetlb CMA memory into a VMA whose view was taken' },
  { name: 'r2-view-buffer-past-remap', title: '2: vma.view(0, 4096).buffer of a 2-page VMA with only page 0 remapped' },
  { name: 'r3-vmalloc-area-ctor', title: '3: new VmallocArea(m, 0x10000, ...).view()' },
  { name: 'r3-mark-mapped', title: '3: vma.markMapped() then vma.view()' },
  { name: 'r3-view-window-ctor', title: '3: the ViewWindow constructor reached through machine.segments[0].window' },
  { name: 'r3-fixed-address', title: "3: createBackedMemfd(..., { fixedAddress }) over node's own code" },
  { name: 'r4-terminate-in-view', title: '4: worker.terminate() inside region.view() (300 workers or 10 s)' },
  { name: 'r4-terminate-during-load', title: '4: worker.terminate() 0-20 ms after online, while loading the addon (300 workers or 8 s)' },
  { name: 'terminate-after-failed-map', title: 'worker.terminate() while a worker maps a share whose mmap fails (400 workers or 15 s)' },
  { name: 'r5-shrink-race', title: "5: the owner's shrink/regrow against two workers mapping the memfd (8 s)" },
  { name: 'r6-hostile-receiver', title: '6: a shareReadOnly({ enforce }) receiver reopens read-write and truncates' },
  { name: 'machine-view-buffer', title: 'machine.view(addr, 4096).buffer covers exactly 4096 bytes' },
  { name: 'resize-after-partial-advise', title: 'a growing resize() after advise() on part of a region works' },
  { name: 'oom-region', title: 'Region.allocate(2 ** 46) fails with ENOMEM (512 MiB cgroup)', limited: true },
  { name: 'oom-machine', title: 'new Machine({ ramPerNode: 2 ** 40 }) fails with ENOMEM (512 MiB cgroup)', limited: true },
  { name: 'oom-copy', title: 'read() of 640 MiB of hugetlb memory (region, machine RAM) fails with ENOMEM (512 MiB cgroup)', limited: true },
  { name: 'oom-sg-alloc-table', title: 'sg_alloc_table(sgt, 1e9) returns -ENOMEM (512 MiB cgroup)', limited: true },
  { name: 'cross-machine-map', title: 'a page of machine A given to machine B is a TypeError, not silent corruption' },
  { name: 'validate-before-alloc', title: 'dma_alloc_pages with a handle that is not a box throws before allocating' },
  { name: 'dma-validation', title: 'DMA-layer misuse (string sizes, bad bigints, null devices, gfp, direction 7, option keys) is refused clearly' },
  { name: 'forged-constructors', title: 'Region, Arena, ArenaPeer and Channel constructors refuse forged state (no unmap of a victim, no close of fd 0)' },
  { name: 'hostile-writes', title: 'hostile property writes (m.destroyed, m.nodeCount, cma.ranges, page state, device fields, dev.debug) are refused or have no effect' },
  { name: 'debug-view-after-free', title: 'debug mode detaches a machine.view() Buffer when its page is freed' },
];

function explain(r: SpawnSyncReturns<string>): string {
  const timedOut = (r.error as NodeJS.ErrnoException | undefined)?.code === 'ETIMEDOUT' ? ' (timed out: killed by the test)' : '';
  return `signal ${r.signal}${timedOut}, status ${r.status}\n--- stdout\n${r.stdout.slice(-3000)}\n--- stderr\n${r.stderr.slice(-3000)}`;
}

describe('81 reproducers of issue 8 end without a signal', function () {
  this.timeout(90000);

  for (const c of cases) {
    it(c.title, function () {
      const args = [child, c.name];
      const opts = { encoding: 'utf8' as const, timeout: 60000, maxBuffer: 16 * 1024 * 1024 };
      let r: SpawnSyncReturns<string>;
      if (c.limited) {
        const lr = spawnSyncLimited(LIMIT, ['--max-old-space-size=256', ...args], opts);
        if (typeof lr === 'string') {
          const msg = `needs a memory cgroup so that a bug cannot OOM the machine: ${lr}`;
          if (process.env.CI === 'true') throw new Error(`CI must run the huge-size cases: ${msg}`);
          this.test!.title += ` [skipped: ${msg}]`;
          return this.skip();
        }
        r = lr;
      } else {
        r = spawnSync(process.execPath, args, opts);
      }
      assert.equal(r.signal, null, `the child was killed: ${explain(r)}`);
      assert.equal(r.status, 0, `the child failed: ${explain(r)}`);
      const skip = /^SKIP: (.*)$/m.exec(r.stdout);
      if (skip) {
        if (process.env.CI === 'true') throw new Error(`CI must run this case: ${skip[1]}`);
        this.test!.title += ` [skipped: ${skip[1]}]`;
        return this.skip();
      }
      assert.match(r.stdout, new RegExp(`^done ${c.name}$`, 'm'));
    });
  }
});
