// MMIO registers and interrupts, inline devices: pci_iomap/ioremap accessors reach the model, which
// decides reads and applies its access-size rules (all-ones / dropped, recorded); outside a BAR the
// same; INTx is level-triggered and shared (IRQ_NONE from the handler of the quiet device), MSI is
// a message per vector; handlers run on the event loop, never inside writel, and never after
// free_irq, disable_irq or teardown; completions time out or complete.

import assert from 'node:assert/strict';
import { Machine } from '../lib/mm/machine';
import { createPciDevice, type PciDev } from '../lib/devices/pci_dev';
import type { DeviceType } from '../lib/devices/model';
import {
  EDU_ID, EDU_REG_DMA_SRC, EDU_REG_ID, EDU_REG_IRQ_ACK, EDU_REG_IRQ_RAISE, EDU_REG_IRQ_STATUS, EDU_REG_LIVENESS,
} from '../lib/devices/edu';
import {
  ioread32, ioremap, iounmap, iowrite32, lo_hi_writeq, pci_iomap, readb, readl, readq, readw, writeb, writel, writeq, writew, type IoMem,
} from '../lib/drivers/io';
import { dma_rmb, dma_wmb, mb, rmb, wmb } from '../lib/drivers/barriers';
import {
  IRQF_SHARED, IRQ_HANDLED, IRQ_NONE, PCI_IRQ_INTX, PCI_IRQ_MSI, PCI_IRQ_MSIX, disable_irq, enable_irq, free_irq, irq_count,
  pci_alloc_irq_vectors, pci_free_irq_vectors, pci_irq_vector, request_irq,
} from '../lib/drivers/irq';
import { complete, init_completion, msecs_to_jiffies, wait_for_completion_timeout } from '../lib/drivers/completion';
import { pci_resource_start } from '../lib/drivers/pci';
import { expectNoLeaks } from './helpers/leaks';

const MiB = 1024 * 1024;
const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

/** A recording device: every write it sees, in order; reads give offset + 0x1000 (8 bytes: high word set too). */
const log: string[] = [];
const recorder: DeviceType = {
  name: 'recorder',
  identity: { vendor: 0x1af4, device: 0x1000, revision: 1, classCode: 0x020000, bars: [4096, 8192], msiVectors: 0, msixVectors: 4 },
  create: () => ({
    mmioRead: (bar, off, size) => (size === 8 ? (1n << 32n) | BigInt(off + 0x1000) : (off + 0x1000 + bar) & (2 ** (8 * size) - 1)),
    mmioWrite: (bar, off, size, v) => { log.push(`${bar}:${off.toString(16)}/${size}=${v.toString(16)}`); },
  }),
};

describe('58 MMIO registers and interrupts (inline)', () => {
  expectNoLeaks();
  let m: Machine;
  const devs: PciDev[] = [];
  const make = (opts: Parameters<typeof createPciDevice>[1] = {}): PciDev => {
    const p = createPciDevice(m, opts);
    devs.push(p);
    return p;
  };
  beforeEach(() => {
    log.length = 0;
    m = new Machine({ name: 'mmio58', ramPerNode: 8 * MiB, cmaSize: 0, hugepages: 'off', emitWarnings: false });
  });
  afterEach(async () => {
    for (const p of devs.splice(0)) await p.destroy();
    m.destroy();
  });

  describe('accessors', () => {
    it('readl/writel reach the model: edu ID and the liveness register, through pci_iomap and ioremap', () => {
      const pdev = make();
      const io = pci_iomap(pdev, 0, 0)!;
      assert.equal(io.length, 1 * MiB);
      assert.equal(readl(io, EDU_REG_ID), EDU_ID);
      writel(0x12345678, io, EDU_REG_LIVENESS);
      assert.equal(readl(io, EDU_REG_LIVENESS), 0xedcba987, 'the device answers the NOT of what was written');
      iowrite32(0, io, EDU_REG_LIVENESS);
      assert.equal(ioread32(io, EDU_REG_LIVENESS), 0xffffffff);
      const win = ioremap(pci_resource_start(pdev, 0) + 4096n - 4096n, 4096)!;
      assert.equal(readl(win, 0), EDU_ID, 'ioremap of the BAR address reaches the same registers');
      assert.equal(ioremap(0x1000n, 4096), null, 'nothing at a RAM address');
      iounmap(win);
      assert.throws(() => readl(win, 0), /after iounmap/);
      assert.equal(pci_iomap(pdev, 1, 0), null, 'edu has one BAR');
    });

    it("edu's access-size rules: below 0x80 only 4 bytes, from 0x80 4 or 8; refused reads give all-ones, refused writes are dropped, both recorded", () => {
      const pdev = make();
      const io = pci_iomap(pdev, 0, 0)!;
      assert.equal(readb(io, EDU_REG_ID), 0xff);
      assert.equal(readw(io, EDU_REG_ID), 0xffff);
      assert.equal(readq(io, EDU_REG_ID), 0xffff_ffff_ffff_ffffn);
      assert.deepEqual(pdev.badAccesses(), { count: 3, last: { bar: 0, offset: 0, size: 8, write: false } });
      writel(5, io, EDU_REG_LIVENESS);
      writew(0x1111, io, EDU_REG_LIVENESS);
      writeb(0x22, io, EDU_REG_LIVENESS);
      assert.equal(readl(io, EDU_REG_LIVENESS), (~5) >>> 0, 'the 2- and 1-byte writes were dropped');
      assert.equal(pdev.badAccesses().count, 5);
      writeq(0x0123_4567_89abn, io, EDU_REG_DMA_SRC);
      assert.equal(readq(io, EDU_REG_DMA_SRC), 0x0123_4567_89abn, '8-byte access from 0x80');
      assert.equal(readl(io, EDU_REG_DMA_SRC), 0x4567_89ab, '4-byte read gives the low half');
      assert.equal(pdev.badAccesses().count, 5, 'allowed accesses are not recorded');
    });

    it('outside the BAR or the mapping: all-ones, dropped, recorded; bad arguments throw before any access', () => {
      const pdev = make({ type: recorder });
      const io = pci_iomap(pdev, 0, 256)!;
      assert.equal(readl(io, 252), 252 + 0x1000);
      assert.equal(readl(io, 256), 0xffffffff, 'past maxlen');
      writel(1, io, 254);
      assert.deepEqual(log, [], 'a write straddling the end is dropped');
      assert.deepEqual(pdev.badAccesses().last, { bar: 0, offset: 254, size: 4, write: true });
      assert.equal(readl(io, -4), 0xffffffff);
      assert.equal(pdev.badAccesses().count, 3);
      assert.throws(() => readl({} as IoMem, 0), TypeError);
      assert.throws(() => writel(1.5, io, 0), TypeError);
      assert.throws(() => writeq(1 as unknown as bigint, io, 0), TypeError);
      assert.deepEqual(log, []);
    });

    it('the default rule refuses misaligned accesses; BAR 1 is a separate window; lo_hi_writeq writes low then high', () => {
      const pdev = make({ type: recorder });
      const io1 = pci_iomap(pdev, 1, 0)!;
      assert.equal(readw(io1, 2), 2 + 0x1000 + 1);
      assert.equal(readl(io1, 2), 0xffffffff, 'misaligned');
      lo_hi_writeq(0x1122334455667788n, io1, 0x10);
      writeq(0xffn, io1, 0x18);
      assert.deepEqual(log, ['1:10/4=55667788', '1:14/4=11223344', '1:18/8=ff']);
      assert.equal(readq(io1, 8), (1n << 32n) | 0x1008n);
    });

    it('barriers are callable full fences (a locked read-modify-write), not no-ops that take arguments', () => {
      for (const f of [mb, rmb, wmb, dma_rmb, dma_wmb]) assert.equal(f(), undefined);
      assert.match(wmb.toString(), /Atomics\.add/);
    });
  });

  describe('interrupts', () => {
    /** An edu handler: claims only when its device's status is non-zero, and acknowledges it. */
    const eduHandler = (io: IoMem, seen: number[]) => (_irq: number, _dev: unknown): number => {
      const st = ioread32(io, EDU_REG_IRQ_STATUS);
      if (st === 0) return IRQ_NONE;
      iowrite32(st, io, EDU_REG_IRQ_ACK);
      seen.push(st);
      return IRQ_HANDLED;
    };

    it('INTx, shared and level-triggered: the quiet device returns IRQ_NONE; no handler runs inside writel; the level drops on acknowledge', async () => {
      const a = make({ intx: 500 });
      const b = make({ intx: 500 });
      assert.equal(a.irq, b.irq);
      const ioa = pci_iomap(a, 0, 0)!;
      const iob = pci_iomap(b, 0, 0)!;
      const seenA: number[] = [];
      const seenB: number[] = [];
      const ha = eduHandler(ioa, seenA);
      let noneA = 0;
      assert.equal(request_irq(a.irq, (irq, id) => { const r = ha(irq, id); if (r === IRQ_NONE) noneA++; return r; }, IRQF_SHARED, 'edu-a', 'a'), 0);
      assert.equal(request_irq(b.irq, eduHandler(iob, seenB), IRQF_SHARED, 'edu-b', 'b'), 0);
      writel(0x42, iob, EDU_REG_IRQ_RAISE);
      assert.equal(irq_count(a.irq), 0, 'not inside the register access');
      await turn();
      assert.deepEqual(seenB, [0x42]);
      assert.deepEqual(seenA, []);
      assert.ok(noneA >= 1, "a's handler said IRQ_NONE");
      assert.equal(readl(iob, EDU_REG_IRQ_STATUS), 0);
      await turn();
      assert.deepEqual(seenB, [0x42], 'acknowledged: the level dropped, no second call');
      assert.equal(free_irq(a.irq, 'a'), 'edu-a');
      assert.equal(free_irq(b.irq, 'b'), 'edu-b');
    });

    it('request_irq errors: -EBUSY without IRQF_SHARED on a used line, -EINVAL for no dev_id with IRQF_SHARED or an unknown irq; free_irq twice warns', () => {
      const a = make();
      const h = (): number => IRQ_HANDLED;
      assert.equal(request_irq(a.irq, h, 0, 'one', 1), 0);
      assert.equal(request_irq(a.irq, h, IRQF_SHARED, 'two', 2), -16);
      assert.equal(request_irq(a.irq, h, IRQF_SHARED, 'three', null), -22);
      assert.equal(request_irq(999_999, h, 0, 'x', 1), -22);
      assert.equal(free_irq(a.irq, 1), 'one');
      assert.equal(free_irq(a.irq, 1), null);
      assert.ok(m.warnings.some((w) => /Trying to free already-free IRQ/.test(w.message)));
    });

    it('free_irq, disable_irq and teardown: no handler runs after them; enable_irq delivers the level still asserted', async () => {
      const a = make();
      const io = pci_iomap(a, 0, 0)!;
      const seen: number[] = [];
      assert.equal(request_irq(a.irq, eduHandler(io, seen), 0, 'edu', 'x'), 0);
      disable_irq(a.irq);
      writel(1, io, EDU_REG_IRQ_RAISE);
      await turn();
      await turn();
      assert.deepEqual(seen, [], 'disabled');
      enable_irq(a.irq);
      await turn();
      assert.deepEqual(seen, [1], 'the level was still asserted');
      free_irq(a.irq, 'x');
      writel(2, io, EDU_REG_IRQ_RAISE);
      await turn();
      assert.deepEqual(seen, [1], 'freed');
      assert.equal(request_irq(a.irq, eduHandler(io, seen), 0, 'edu', 'y'), 0);
      await turn();
      assert.deepEqual(seen, [1, 2], 'the level still high is delivered to the new handler');
      writel(4, io, EDU_REG_IRQ_RAISE);
      await a.destroy();
      await turn();
      await turn();
      assert.deepEqual(seen, [1, 2], 'teardown: no handler after destroy()');
      assert.equal(readl(io, EDU_REG_ID), 0xffffffff, 'a removed device reads as all-ones');
    });

    it('MSI: pci_alloc_irq_vectors gives one vector with its own irq; a raise is one message; disabled messages wait for enable_irq', async () => {
      const a = make();
      const io = pci_iomap(a, 0, 0)!;
      assert.equal(pci_alloc_irq_vectors(a, 2, 2, PCI_IRQ_MSI), -28, 'edu has one MSI vector');
      assert.equal(pci_alloc_irq_vectors(a, 1, 4, PCI_IRQ_MSIX | PCI_IRQ_MSI | PCI_IRQ_INTX), 1);
      const irq = pci_irq_vector(a, 0);
      assert.notEqual(irq, a.irq);
      assert.equal(pci_irq_vector(a, 1), -22);
      let calls = 0;
      assert.equal(request_irq(irq, () => { calls++; return IRQ_HANDLED; }, 0, 'edu-msi', 'x'), 0);
      writel(1, io, EDU_REG_IRQ_RAISE);
      await turn();
      assert.equal(calls, 1, 'one message, although the status was never acknowledged (edge-like)');
      disable_irq(irq);
      writel(1, io, EDU_REG_IRQ_RAISE);
      await turn();
      assert.equal(calls, 1);
      enable_irq(irq);
      await turn();
      assert.equal(calls, 2);
      free_irq(irq, 'x');
      pci_free_irq_vectors(a);
      assert.equal(pci_irq_vector(a, 0), a.irq, 'back to INTx');
    });

    it('MSI-X: a device with 4 vectors gets 4 irqs; INTx only when asked', () => {
      const r = make({ type: recorder });
      assert.equal(pci_alloc_irq_vectors(r, 1, 8, PCI_IRQ_INTX), 1);
      pci_free_irq_vectors(r);
      assert.equal(pci_alloc_irq_vectors(r, 1, 8, PCI_IRQ_MSIX), 4);
      const irqs = [0, 1, 2, 3].map((i) => pci_irq_vector(r, i));
      assert.equal(new Set(irqs).size, 4);
      pci_free_irq_vectors(r);
    });
  });

  describe('completions', () => {
    it('wait_for_completion_timeout resolves 0 on timeout and the jiffies left once completed', async () => {
      const c = init_completion();
      assert.equal(await wait_for_completion_timeout(c, msecs_to_jiffies(20)), 0);
      const p = wait_for_completion_timeout(c, msecs_to_jiffies(1000));
      setTimeout(() => complete(c), 5);
      const left = await p;
      assert.ok(left > 0 && left <= msecs_to_jiffies(1000), `left ${left}`);
      complete(c);
      assert.equal(await wait_for_completion_timeout(c, 1), 1, 'a completion before the wait is kept');
      assert.throws(() => wait_for_completion_timeout({} as never, 1), TypeError);
    });
  });
});
