// `dmamem demo`, the README's main job: run as a user runs it, on the hugetlb path and with the
// hugepage pool exhausted (the fallback), and its misuse errors.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { Machine } from '../lib/mm/machine';
import { expectNoLeaks, hostPfnsVisible, hugepagesFree, requireHugepagesOrSkip } from './helpers/leaks';

const bin = path.resolve(__dirname, '..', '..', 'bin', 'dmamem.js');

interface DemoJson {
  ok: boolean;
  steps: { step: string; ok: boolean }[];
  buffer: { backing: string; iova: string; hostPhys: string | null } | null;
  fallbacks: string[];
  leaks: { before: number; after: number }[];
  mappingsLeftAfterTeardown: number;
  edu: {
    ok: boolean;
    device: { id: string; inWorker: boolean; iommu: boolean; dmaMask: string };
    roundTrip: { bytes: number; iova: string; interrupts: number; equal: boolean } | null;
    fault: { iova: string; write: boolean; reason: string; reasonText: string; dmar: string; bytesChanged: number } | null;
    steps: { step: string; ok: boolean }[];
  };
  swiotlb: {
    ok: boolean;
    machine: { physBase: string; poolStart: string; poolSlots: number };
    steps: { step: string; ok: boolean; result: string }[];
    counters: { bounces: number; bytesBounced: number; maxUsed: number; usedAfter: number; mappedAfter: number } | null;
  };
  noncoherent: {
    ok: boolean;
    device: { name: string; coherent: boolean; iommu: boolean; ownership: string };
    reads: { withoutSync: string; withSync: string } | null;
    ownership: { check: number; message: string; mappedAt: string; calledFrom: string } | null;
    steps: { step: string; ok: boolean; result: string }[];
    counters: { writtenBack: number; refilled: number; discarded: number } | null;
  };
}

function demo(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [bin, 'demo', ...args], { encoding: 'utf8', timeout: 60000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('70 dmamem demo', function () {
  this.timeout(120000);
  // The demo runs in child processes; what this file maps itself is the hog machine of the
  // fallback test, destroyed by that test before this check runs.
  expectNoLeaks();

  it('plays the driver on hugetlb-backed CMA: every step passes and nothing leaks (--json)', function () {
    requireHugepagesOrSkip(this, 40);
    const r = demo('--json');
    assert.equal(r.status, 0, r.stderr);
    const report = JSON.parse(r.stdout) as DemoJson;
    assert.equal(report.ok, true);
    assert.ok(report.steps.length >= 8);
    for (const s of report.steps) assert.equal(s.ok, true, s.step);
    assert.equal(report.buffer!.backing, 'hugetlb-2M');
    assert.ok(BigInt(report.buffer!.iova) < 1n << 32n, 'the IOVA fits the 32-bit mask');
    if (hostPfnsVisible()) assert.notEqual(report.buffer!.hostPhys, null, 'as root, host physical addresses are visible');
    else assert.equal(report.buffer!.hostPhys, null, 'hidden, and said so, without CAP_SYS_ADMIN');
    for (const l of report.leaks) assert.equal(l.after, l.before);
    assert.equal(report.mappingsLeftAfterTeardown, 0);
  });

  it('drives QEMU\'s edu in a worker behind the IOMMU: a DMA round trip and a provoked fault with its DMAR record (--json)', () => {
    const r = demo('--json');
    assert.equal(r.status, 0, r.stderr);
    const { edu } = JSON.parse(r.stdout) as DemoJson;
    assert.equal(edu.ok, true);
    for (const s of edu.steps) assert.equal(s.ok, true, s.step);
    assert.deepEqual(edu.device, { ...edu.device, id: '1234:11e8', inWorker: true, iommu: true, dmaMask: '0xfffffff' });
    assert.equal(edu.roundTrip!.equal, true);
    assert.equal(edu.roundTrip!.interrupts, 2, 'one interrupt per transfer');
    assert.ok(BigInt(edu.roundTrip!.iova) < 1n << 28n, 'the IOVA fits the 28-bit mask');
    const f = edu.fault!;
    assert.deepEqual({ write: f.write, reason: f.reason, reasonText: f.reasonText, bytesChanged: f.bytesChanged },
      { write: true, reason: '0x05', reasonText: 'PTE Write access is not set', bytesChanged: 0 });
    assert.match(f.dmar, new RegExp(`^DMAR: \\[DMA Write NO_PASID\\] Request device \\[0000:00:[0-9a-f]{2}\\.0\\] fault addr ${f.iova} \\[fault reason 0x05\\] PTE Write access is not set$`));
  });

  it('bounces through swiotlb on a machine with RAM above 4 GiB: copied in at map, out at unmap, counters shown (--json)', () => {
    const r = demo('--json');
    assert.equal(r.status, 0, r.stderr);
    const { swiotlb } = JSON.parse(r.stdout) as DemoJson;
    assert.equal(swiotlb.ok, true);
    assert.deepEqual(swiotlb.steps.map((s) => [s.step, s.ok]), [
      ['swiotlb pool', true], ['map to device', true], ['device reads', true], ['device writes', true], ['pool counters', true],
    ]);
    assert.ok(BigInt(swiotlb.machine.physBase) >= 1n << 32n && BigInt(swiotlb.machine.poolStart) < 1n << 32n);
    // kernel/dma/swiotlb.c: swiotlb_tbl_map_single copies in for every direction; unmap copies out for FROM_DEVICE.
    assert.deepEqual(swiotlb.counters, { bounces: 3, bytesBounced: 3 * 4096, maxUsed: 2, usedAfter: 0, mappedAfter: 0 });
    assert.match(swiotlb.steps[3]!.result, /0x5a before the unmap, 0xc3 after/);
  });

  it('catches a missed sync on a non-coherent device: stale bytes without dma_sync_single_for_cpu, the CPU write into a device-owned buffer reported (check 40) with the mapping\'s stack (--json)', () => {
    const r = demo('--json');
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stderr, '', 'the ownership report is in the JSON, not a process warning');
    const { noncoherent: nc } = JSON.parse(r.stdout) as DemoJson;
    assert.equal(nc.ok, true);
    assert.deepEqual(nc.device, { name: 'arm-nic', coherent: false, iommu: false, ownership: 'report' });
    for (const s of nc.steps) assert.equal(s.ok, true, s.step);
    assert.equal(nc.steps.length, 7);
    assert.deepEqual(nc.reads, { withoutSync: '0x00', withSync: '0xc3' }, 'stale 0x00 without the sync, the packet with it');
    const o = nc.ownership!;
    assert.equal(o.check, 40);
    assert.match(o.message, /^DMA-API: arm-nic: CPU wrote to memory the device owns \[device address=0x[0-9a-f]+\] \[size=1500 bytes\] \[first changed byte at offset 0: 0x0 -> 0x6b\] \[mapped DMA_FROM_DEVICE\].*dma_unmap_page$/);
    assert.match(o.mappedAt, /^at __dma_map_page \(.*mapping\.js:\d+:\d+\)$/);
    assert.match(o.calledFrom, /^at playNoncoherentDemo \(.*demo-noncoherent\.js:\d+:\d+\)$/, 'the driver\'s call is named');
    // 1500 bytes are 24 lines: the recycling write dirtied them; the unmap's invalidate cleaned the
    // partial last line first and threw the other 23 away.
    assert.equal(nc.counters!.discarded, 23);
    assert.ok(nc.counters!.writtenBack >= 24 && nc.counters!.refilled >= 3 * 24, JSON.stringify(nc.counters));
  });

  it('falls back to 4 KiB CMA when the hugepage pool is exhausted, says so, and still passes', () => {
    const free = hugepagesFree();
    const hog = free > 0 ? new Machine({ name: 'hog70', ramPerNode: 2 * 1024 * 1024, cmaSize: free * 2 * 1024 * 1024, hugepages: 'require', emitWarnings: false }) : null;
    try {
      const r = demo('--json');
      assert.equal(r.status, 0, r.stderr);
      const report = JSON.parse(r.stdout) as DemoJson;
      assert.equal(report.ok, true);
      assert.notEqual(report.buffer!.backing, 'hugetlb-2M');
      assert.ok(report.fallbacks.some((f) => /cma/.test(f) && /huge|pool/i.test(f)), report.fallbacks.join('\n'));
    } finally {
      hog?.destroy();
    }
  });

  it('prints a readable table by default', () => {
    const r = demo();
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /IOVA 0x[0-9a-f]+/);
    assert.match(r.stdout, /first PFN 0x[0-9a-f]+/);
    assert.match(r.stdout, /host physical (0x[0-9a-f]+|hidden)/);
    assert.match(r.stdout, /Leak check[\s\S]*dmamem mappings after machine teardown: 0/);
    assert.match(r.stdout, /Fallbacks taken/);
    assert.match(r.stdout, /Device edu 1234:11e8 at \S+: in a worker thread, behind the IOMMU/);
    assert.match(r.stdout, /DMA round trip: 4096 bytes at IOVA 0x[0-9a-f]+, 2 interrupts, bytes equal/);
    assert.ok(r.stdout.split('\n').every((l) => l.length <= 100), 'every line within 100 columns');
    const unwrapped = r.stdout.replace(/\n +(?=\S)/g, (m) => (/\n {6,}(?!->|ok|FAIL)/.test(m) ? ' ' : m));
    assert.match(unwrapped, /\n  DMAR: \[DMA Write NO_PASID\] Request device .* \[fault reason 0x05\] PTE Write access is not set\n/);
    assert.equal(r.stderr, '', 'the provoked fault\'s WARNs are shown in the report, not printed on stderr');
    const reasons = r.stdout.match(/buddy RAM defaults to 4 KiB pages/g) ?? [];
    assert.ok(reasons.length <= 1, 'a fallback\'s reason is printed once');
    assert.match(r.stdout, /Bounce buffers \(swiotlb\): RAM at 0x100000000, above 4 GiB/);
    assert.match(r.stdout, /ok   device writes .*\n\s+-> CPU reads 0x5a before the unmap, 0xc3 after/);
    assert.match(r.stdout, /Non-coherent device arm-nic: no IOMMU, CPU caches not snooped, ownership checking 'report'/);
    assert.match(r.stdout, /ok   no sync_for_cpu: stale read .*\n\s+-> CPU reads 0x00: its cache/);
    assert.match(r.stdout, /ok   recycled, device owns it .*\n\s+-> check 40: DMA-API: arm-nic: CPU wrote to memory the device owns/);
    assert.match(r.stdout, /\n +Mapped at: at __dma_map_page \(\S+\)\n +\.\.\. at playNoncoherentDemo \(\S+\)\n/);
    assert.match(r.stdout, /ok   sync_for_cpu: the packet .*\n\s+-> CPU reads 0xc3\n/);
    assert.match(r.stdout, /ok   cache counters .*\n\s+-> \d+ lines written back[\s\S]*?\s\d+ refilled[\s\S]*?\s23\s+dirty lines discarded/);
    assert.match(r.stdout, /All steps passed/);
  });

  it('rejects unknown options and commands with a usage error', () => {
    assert.equal(demo('--bogus').status, 2);
    const r = spawnSync(process.execPath, [bin, 'frobnicate'], { encoding: 'utf8' });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /unknown command/);
  });
});
