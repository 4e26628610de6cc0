// Device models in worker threads: the same model runs inline and in a worker; the worker maps the
// machine's memory by fd and walks the shared I/O page tables itself; doorbells and interrupts cross
// threads through the shared control page (no postMessage per event); a worker (or an inline model)
// that throws, or a terminated worker, leaves a dead device (all-ones) and a consistent machine;
// teardown stops the worker.

import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { Worker, threadId } from 'node:worker_threads';
import { Machine } from '../lib/mm/machine';
import '../lib/dma/device';
import { GFP_KERNEL, PAGE_SIZE } from '../lib/mm/gfp';
import type { Page } from '../lib/mm/page';
import { page_to_phys } from '../lib/mm/kernel';
import { DMA_FROM_DEVICE } from '../lib/dma/constants';
import { dma_map_page, dma_unmap_page } from '../lib/dma/mapping';
import { MEMTX_ACCESS_ERROR, MEMTX_OK } from '../lib/devices/bus_engine';
import { createPciDevice, type PciDev, type PciDeviceOptions } from '../lib/devices/pci_dev';
import { pci_iomap, readl, readq, writel, writeq, type IoMem } from '../lib/drivers/io';
import { IRQ_HANDLED, IRQ_NONE, free_irq, request_irq } from '../lib/drivers/irq';
import { DB_ACK, DB_ADDR, DB_COUNT, DB_CRASH, DB_DOORBELL, DB_STATUS, DB_THREAD } from './fixtures/device-models';
import { expectNoLeaks } from './helpers/leaks';
import { until } from './helpers/until';
import { native } from '../lib/native';
import { W_IRQ_SLEEP } from '../lib/devices/pci_state';

const MiB = 1024 * 1024;
const doorbellType = { module: require.resolve('./fixtures/device-models'), export: 'doorbell' };
const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

/** Mappings of a memfd of this process (every thread's), by the name its fd links to. */
function mappingsOf(fd: number): number {
  const name = fs.readlinkSync(`/proc/self/fd/${fd}`);
  return fs.readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l.endsWith(name)).length;
}

describe('59 device models in worker threads', () => {
  expectNoLeaks();
  let m: Machine;
  const devs: PciDev[] = [];
  const held: Page[] = [];
  const make = (opts: PciDeviceOptions): PciDev => {
    const p = createPciDevice(m, opts);
    devs.push(p);
    return p;
  };
  const take = (): Page => {
    const p = m.alloc_pages(GFP_KERNEL, 0)!;
    held.push(p);
    return p;
  };
  beforeEach(() => {
    m = new Machine({ name: 'dw59', ramPerNode: 8 * MiB, cmaSize: 0, hugepages: 'off', emitWarnings: false });
  });
  afterEach(async () => {
    for (const p of devs.splice(0)) await p.destroy();
    if (!m.isDestroyed) for (const p of held.splice(0)) m.__free_pages(p, 0);
    held.length = 0;
    m.destroy();
  });

  /** A driver for the doorbell device: its INTx handler acknowledges and counts. */
  function bind(pdev: PciDev, after?: () => void): { io: IoMem; calls: number[]; id: object } {
    const io = pci_iomap(pdev, 0, 0)!;
    const calls: number[] = [];
    const id = {};
    assert.equal(request_irq(pdev.irq, () => {
      const n = readl(io, DB_COUNT);
      if (n === 0xffffffff) return IRQ_NONE;
      writel(1, io, DB_ACK);
      calls.push(n);
      after?.();
      return IRQ_HANDLED;
    }, 0, 'doorbell', id), 0);
    return { io, calls, id };
  }

  for (const worker of [false, true]) {
    for (const iommu of [false, true]) {
      it(`${worker ? 'worker' : 'inline'}, ${iommu ? 'IOMMU' : 'direct'}: doorbell -> bus write -> interrupt -> handler; the model runs in ${worker ? 'another' : 'this'} thread`, async () => {
        const pdev = make({ type: doorbellType, worker, device: { dmaMask: 48, iommu: iommu ? { strict: true } : false } });
        const { io, calls, id } = bind(pdev);
        assert.equal(readl(io, DB_THREAD) === threadId, !worker, 'where the model runs');
        // Mapped after the device (and its worker) started: the device walks the live tables.
        const page = take();
        const h = dma_map_page(pdev.dev, page, 0, PAGE_SIZE, DMA_FROM_DEVICE);
        const cpu = m.view(m.page_address(page), PAGE_SIZE);
        cpu.fill(0);
        writeq(h + 16n, io, DB_ADDR);
        for (let i = 1; i <= 5; i++) {
          writel(0xc0de0000 + i, io, DB_DOORBELL);
          await until(() => calls.length === i, `interrupt ${i}`);
          assert.equal(readl(io, DB_STATUS), MEMTX_OK);
          assert.equal(Buffer.from(cpu).readUInt32LE(16), 0xc0de0000 + i, 'the device wrote the value through the bus');
        }
        assert.deepEqual(calls, [1, 2, 3, 4, 5], 'one handler call per doorbell, acknowledged each time');
        dma_unmap_page(pdev.dev, h, PAGE_SIZE, DMA_FROM_DEVICE);
        writel(0xbad, io, DB_DOORBELL);
        await until(() => calls.length === 6, 'the interrupt after the unmap');
        // Hardware behind an IOMMU is blocked; without one, the bus lets it through (DMA-API debug reports it, test 57).
        assert.equal(Buffer.from(cpu).readUInt32LE(16), iommu ? 0xc0de0005 : 0xbad, iommu ? 'no byte changed after the unmap' : 'a direct device still reaches the page');
        if (iommu) {
          assert.equal(readl(io, DB_STATUS), MEMTX_ACCESS_ERROR, 'the device sees the fault as an error status');
          await until(() => pdev.dev.iommu!.faults.length === 1, 'the fault record');
          const f = pdev.dev.iommu!.faults[0]!;
          assert.equal(f.iova, h, 'the faulting page, as VT-d records it');
          assert.equal(f.write, true);
          assert.equal(f.reason, 0x05);
        } else {
          assert.equal(readl(io, DB_STATUS), MEMTX_OK, 'a direct device reaches memory whatever the driver unmapped');
        }
        free_irq(pdev.irq, id);
      });
    }
  }

  it('doorbells and interrupts cross threads without a postMessage per event (counted both ways)', async () => {
    let posted = 0;
    let received = 0;
    const origPost = Worker.prototype.postMessage;
    const origEmit = Worker.prototype.emit;
    Worker.prototype.postMessage = function (this: Worker, ...args: Parameters<Worker['postMessage']>) {
      posted++;
      return origPost.apply(this, args);
    };
    Worker.prototype.emit = function (this: Worker, event: string | symbol, ...args: unknown[]) {
      if (event === 'message') received++;
      return origEmit.call(this, event, ...args);
    };
    try {
      const pdev = make({ type: doorbellType, worker: true, device: { dmaMask: 48, iommu: true } });
      const { io, calls, id } = bind(pdev);
      const page = take();
      const h = dma_map_page(pdev.dev, page, 0, PAGE_SIZE, DMA_FROM_DEVICE);
      writeq(h, io, DB_ADDR);
      for (let i = 1; i <= 100; i++) {
        writel(i, io, DB_DOORBELL);
        await until(() => calls.length === i, `interrupt ${i}`);
      }
      assert.equal(readl(io, DB_COUNT), 100);
      assert.equal(calls.length, 100);
      assert.equal(posted, 0, 'no postMessage to the device thread');
      assert.equal(received, 0, 'no message from the device thread');
      free_irq(pdev.irq, id);
      dma_unmap_page(pdev.dev, h, PAGE_SIZE, DMA_FROM_DEVICE);
    } finally {
      Worker.prototype.postMessage = origPost;
      Worker.prototype.emit = origEmit;
    }
  });

  it('after an interrupt the driver side polls the wire (no kernel wait armed), then sleeps in the kernel; the device wakes it only then', async () => {
    const pdev = make({ type: doorbellType, worker: true, device: { dmaMask: 48 } });
    // Seen in the loop turn of the handler (immediates run in order: before the poll's first look).
    const seen: [number, number][] = [];
    const { io, calls, id } = bind(pdev, () => setImmediate(() => { seen.push([pdev.controlWords[W_IRQ_SLEEP]!, native.futexStats().pending]); }));
    const page = take();
    const h = dma_map_page(pdev.dev, page, 0, PAGE_SIZE, DMA_FROM_DEVICE);
    writeq(h, io, DB_ADDR);
    const asleep = (): boolean => pdev.controlWords[W_IRQ_SLEEP] === 1 && native.futexStats().pending > 0;
    await until(asleep, 'the wire asleep at start');
    const pending = native.futexStats().pending;
    for (let i = 1; i <= 3; i++) {
      writel(i, io, DB_DOORBELL);
      await until(() => seen.length === i, `interrupt ${i}`);
      assert.deepEqual(seen[i - 1], [0, pending - 1], 'polling after the interrupt: no kernel wait armed');
      await until(asleep, `asleep again after interrupt ${i}`);
      assert.equal(native.futexStats().pending, pending);
      await new Promise((r) => setTimeout(r, 5));
    }
    assert.deepEqual(calls, [1, 2, 3]);
    free_irq(pdev.irq, id);
    dma_unmap_page(pdev.dev, h, PAGE_SIZE, DMA_FROM_DEVICE);
  });

  it("the worker maps the machine's memory by fd itself (one more mapping of the segment memfd while it runs, none after destroy)", async () => {
    const fd = m.segments[0]!.fd;
    const before = mappingsOf(fd);
    const pdev = make({ type: doorbellType, worker: true });
    const io = pci_iomap(pdev, 0, 0)!;
    assert.notEqual(readl(io, DB_THREAD), threadId, 'the device thread answers');
    assert.equal(mappingsOf(fd), before + 1, 'the worker mapped the segment from its fd');
    await pdev.destroy();
    assert.equal(mappingsOf(fd), before, 'and unmapped it when it stopped');
    assert.equal(readl(io, DB_COUNT), 0xffffffff, 'a removed device reads as all-ones');
  });

  const deaths = [
    [true, 'throws in a register write'], [true, 'throws in its own timer'], [true, 'is terminated'],
    [false, 'throws in a register write'], [false, 'throws in its own timer'],
  ] as const;
  for (const [worker, how] of deaths) {
    it(`a device ${worker ? 'worker' : 'model (inline)'} that ${how}: the device reads all-ones, no handler runs, the machine stays usable`, async () => {
      const pdev = make({ type: doorbellType, worker, device: { dmaMask: 48, iommu: true } });
      const { io, calls, id } = bind(pdev);
      const page = take();
      const h = dma_map_page(pdev.dev, page, 0, PAGE_SIZE, DMA_FROM_DEVICE);
      writeq(h, io, DB_ADDR);
      writel(7, io, DB_DOORBELL);
      await until(() => calls.length === 1, 'the first interrupt');
      if (how === 'is terminated') await pdev.terminateWorker();
      else writel(how === 'throws in a register write' ? 1 : 2, io, DB_CRASH);
      await until(() => !pdev.alive, 'the device to be seen dead');
      assert.equal(readl(io, DB_COUNT), 0xffffffff, 'surprise removal: all-ones');
      assert.equal(readq(io, DB_ADDR), 0xffff_ffff_ffff_ffffn);
      writel(9, io, DB_DOORBELL); // dropped
      await turn();
      await turn();
      assert.deepEqual(calls, [1], 'no handler after the death');
      if (how !== 'is terminated') await until(() => m.warnings.some((w) => /device (worker|model) died: doorbell model: crash/.test(w.message)), 'the warning');
      // The machine is consistent: unmap, free, allocate and read its memory as usual.
      dma_unmap_page(pdev.dev, h, PAGE_SIZE, DMA_FROM_DEVICE);
      assert.equal(Buffer.from(m.view(m.page_address(page), PAGE_SIZE)).readUInt32LE(0), 7);
      const p2 = take();
      assert.ok(p2 !== null);
      free_irq(pdev.irq, id);
      await pdev.destroy();
      assert.equal(pdev.isDestroyed, true);
    });
  }

  it('no handler runs after free_irq, even for an interrupt raised before it; destroy() stops the worker', async () => {
    const pdev = make({ type: doorbellType, worker: true });
    const { io, calls, id } = bind(pdev);
    const page = take();
    const h = dma_map_page(pdev.dev, page, 0, PAGE_SIZE, DMA_FROM_DEVICE);
    writeq(h, io, DB_ADDR);
    writel(1, io, DB_DOORBELL);
    assert.equal(readl(io, DB_COUNT), 1, 'the read flushed the doorbell: the line is asserted now');
    free_irq(pdev.irq, id);
    for (let i = 0; i < 20; i++) await turn();
    assert.deepEqual(calls, [], 'freed before delivery: never called');
    dma_unmap_page(pdev.dev, h, PAGE_SIZE, DMA_FROM_DEVICE);
    const fd = m.segments[0]!.fd;
    const running = mappingsOf(fd);
    await pdev.destroy();
    assert.equal(mappingsOf(fd), running - 1, "the worker's mapping is gone: it ended");
  });

  it('machine.destroy() removes its devices and stops their workers; no handler runs after', async () => {
    const pdev = make({ type: doorbellType, worker: true });
    const { io, calls } = bind(pdev);
    const fd = m.segments[0]!.fd;
    const path = fs.readlinkSync(`/proc/self/fd/${fd}`);
    const page = take();
    writeq(page_to_phys(page), io, DB_ADDR);
    writel(1, io, DB_DOORBELL);
    assert.equal(readl(io, DB_COUNT), 1);
    m.__free_pages(page, 0);
    held.length = 0;
    m.destroy();
    assert.equal(pdev.isDestroyed, true, 'the device was removed with its machine');
    await pdev.destroy(); // settles once the worker has exited
    assert.equal(fs.readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l.endsWith(path)).length, 0, 'no thread maps the machine any more');
    for (let i = 0; i < 10; i++) await turn();
    assert.deepEqual(calls, [], 'no handler after teardown');
    assert.equal(readl(io, DB_COUNT), 0xffffffff);
  });
});
