// A worker thread that ends without closing what it allocated (even by terminate(), when no JS
// runs) leaves no mapping and no fd behind: the addon releases them at environment teardown.

import assert from 'node:assert/strict';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { native } from '../lib/native';
import { Region } from '../lib/os/region';
import { expectNoLeaks, fdCount, memfdMappingCount } from './helpers/leaks';

const index = path.resolve(__dirname, '..', 'lib', 'index.js');

// The worker allocates a Region, maps a Region shared by the main thread, builds a Machine with a
// VMA and a vmalloc area, says how much it holds, then waits (or returns) without closing anything.
const script = `
const { parentPort, workerData } = require('node:worker_threads');
const d = require(${JSON.stringify(index)});
const own = d.Region.allocate(1 << 20, { hugepages: 'off' });
own.view().fill(1);
const shared = d.Region.fromFd(workerData.fd, 1 << 20);
shared.view()[0] = 0x42;
const m = new d.Machine({ name: 'worker-m', ramPerNode: 4 << 20, cmaSize: 2 << 20, hugepages: 'off', emitWarnings: false });
const p = m.alloc_pages_node(0, d.GFP_KERNEL, 0);
const vma = m.createVma(4096);
d.remap_pfn_range(vma, vma.vm_start, p.pfn, 4096, vma.vm_page_prot);
m.vmalloc(3 * 4096);
globalThis.keep = [own, shared, m, vma];
parentPort.postMessage(require(${JSON.stringify(path.resolve(__dirname, '..', 'lib', 'native.js'))}).native.trackedResources());
if (!workerData.returnNormally) setInterval(() => {}, 1000);
`;

async function runWorker(fd: number, returnNormally: boolean): Promise<{ ranges: number; fds: number }> {
  const worker = new Worker(script, { eval: true, workerData: { fd, returnNormally } });
  const held = await new Promise<{ ranges: number; fds: number }>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  const exited = new Promise<number>((resolve) => worker.once('exit', resolve));
  if (!returnNormally) await worker.terminate();
  await exited;
  return held;
}

describe('24 worker teardown', function () {
  this.timeout(30000);
  expectNoLeaks();

  for (const how of ['terminate()', 'returning without close()'] as const) {
    it(`a worker ended by ${how} leaves no mapping and no fd behind`, async () => {
      using shared = Region.allocate(1 << 20, { hugepages: 'off' });
      const maps = memfdMappingCount();
      const fds = fdCount();
      const held = await runWorker(shared.fd, how !== 'terminate()');
      assert.ok(held.ranges >= 4, `the worker held its mappings (${held.ranges} ranges)`);
      assert.ok(held.fds >= 3, `the worker held its fds (${held.fds})`);
      assert.equal(shared.view()[0], 0x42, 'the worker wrote through its own mapping of the shared memfd');
      assert.equal(memfdMappingCount(), maps, "the worker's mappings are gone");
      assert.equal(fdCount(), fds, "the worker's fds are closed");
      assert.equal(shared.view()[1], 0, "the main thread's mapping of the shared memory is untouched");
    });
  }

  it('the main thread holds exactly what is open: a Region adds a range and an fd, close() removes them', () => {
    const before = native.trackedResources();
    const r = Region.allocate(1 << 20, { hugepages: 'off' });
    const during = native.trackedResources();
    assert.equal(during.fds, before.fds + 1);
    assert.ok(during.bytes >= before.bytes + (1 << 20));
    r.close();
    assert.deepEqual(native.trackedResources(), before);
  });
});
