// The machine the DMA-layer tests (60-62) share: one node of 8 MiB RAM plus 8 MiB CMA, no
// hugepages, warnings collected rather than printed; and what a test takes from it, given back after.

import assert from 'node:assert/strict';
import { Machine } from '../../lib/mm/machine';
import '../../lib/dma/device';
import type { Device } from '../../lib/dma/device';
import { GFP_KERNEL, PAGE_SIZE } from '../../lib/mm/gfp';
import type { Page } from '../../lib/mm/page';
import type { VmArea } from '../../lib/mm/vma';
import type { SpyCall } from './spy-ops';

const MiB = 1024 * 1024;

export interface DmaMachineFixture {
  /** The machine; set by the fixture's before hook, destroyed by its after hook. */
  readonly m: Machine;
  /** What spy ops record: emptied before each test (pass it to spyOps). */
  readonly calls: SpyCall[];
  /** Pages taken with buffer(), freed after each test; a test that frees one itself removes it here. */
  readonly held: { page: Page; order: number }[];
  /** 2^order buddy pages on node 0, freed after the test; returns the page and its linear address. */
  buffer(order: number): { page: Page; cpu: number };
  /** A user VMA of `pages` pages at vm_pgoff `pgoff` (shared unless told), unmapped after the test. */
  vma(pages: number, pgoff?: number, shared?: boolean): VmArea;
  /** A device on the machine, destroyed after the test (after its VMAs and pages are given back). */
  device(opts?: Parameters<Machine['createDevice']>[0]): Device;
}

/**
 * Registers hooks in the current describe(): the machine `name` is made before its tests and
 * destroyed after them; after each test, VMAs are unmapped, then pages freed, then devices
 * destroyed. Call it inside a describe nested in the one that calls expectNoLeaks(), so that the
 * machine is gone before the leak check runs. Hooks the caller registers afterwards run after these.
 * @example const fx = useDmaMachine('oh60'); const { calls, buffer, vma } = fx;
 */
export function useDmaMachine(name: string): DmaMachineFixture {
  let machine: Machine | null = null;
  const calls: SpyCall[] = [];
  const held: { page: Page; order: number }[] = [];
  const vmas: VmArea[] = [];
  const devs: Device[] = [];
  const m = (): Machine => {
    assert.ok(machine !== null, `machine ${name} is used outside its describe's hooks and tests`);
    return machine;
  };

  before(() => {
    machine = new Machine({ name, ramPerNode: 8 * MiB, cmaSize: 8 * MiB, hugepages: 'off', emitWarnings: false });
  });
  after(() => {
    machine?.destroy();
    machine = null;
  });
  beforeEach(() => {
    calls.length = 0;
  });
  afterEach(() => {
    for (const v of vmas.splice(0)) v.unmap();
    for (const { page, order } of held.splice(0)) m().__free_pages(page, order);
    for (const d of devs.splice(0)) d.destroy();
  });

  return {
    get m() {
      return m();
    },
    calls,
    held,
    buffer(order) {
      const page = m().alloc_pages_node(0, GFP_KERNEL, order);
      assert.ok(page);
      held.push({ page, order });
      return { page, cpu: m().page_address(page) };
    },
    vma(pages, pgoff = 0, shared = true) {
      const v = m().createVma(pages * PAGE_SIZE, { pgoff, shared });
      vmas.push(v);
      return v;
    },
    device(opts) {
      const d = m().createDevice(opts);
      devs.push(d);
      return d;
    },
  };
}
