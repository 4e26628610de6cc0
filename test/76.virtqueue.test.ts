// Split virtqueues, both sides wired inline: the driver (lib/drivers/virtio_ring.ts, Linux's
// virtio_ring.c) adds buffers mapped with the DMA API, its notify runs the device (lib/devices/virtio/
// virtqueue.ts, QEMU's virtqueue_pop/push) through busMaster(dev), whose interrupts run vring_interrupt.
// Direct and IOMMU devices with DMA-API debug on: bytes land, indirect tables come and go, the
// suppression counts are the ones the protocol promises, indices wrap, unused buffers come back,
// and a malformed ring breaks the queue with its reason and nothing else (random rings in a child).

import assert from 'node:assert/strict';
import * as path from 'node:path';
import { Machine } from '../lib/mm/machine';
import '../lib/dma/device';
import type { Device } from '../lib/dma/device';
import { GFP_KERNEL, PAGE_SIZE } from '../lib/mm/gfp';
import type { Page } from '../lib/mm/page';
import { dma_alloc_coherent, dma_free_coherent } from '../lib/dma/mapping';
import { type Scatterlist, sg_init_table, sg_set_page } from '../lib/dma/scatterlist';
import { kmalloc_stats } from '../lib/mm/slab';
import { busMaster } from '../lib/devices/bus_master';
import { VirtQueue, type VirtQueueElement } from '../lib/devices/virtio/virtqueue';
import {
  VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC, VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT,
  VRING_DESC_F_WRITE, VRING_USED_F_NO_NOTIFY, vring_avail_event_offset, vring_avail_size, vring_desc_size, vring_need_event,
  vring_used_size,
} from '../lib/devices/virtio/virtio_ring_layout';
import {
  ENOSPC, type Virtqueue, virtqueue_add_inbuf, virtqueue_add_outbuf, virtqueue_add_sgs, virtqueue_detach_unused_buf,
  virtqueue_disable_cb, virtqueue_enable_cb, virtqueue_enable_cb_delayed, virtqueue_get_avail_addr, virtqueue_get_buf,
  virtqueue_get_desc_addr, virtqueue_get_used_addr, virtqueue_get_vring_size, virtqueue_is_broken, virtqueue_kick,
  vring_create_virtqueue, vring_del_virtqueue, vring_interrupt,
} from '../lib/drivers/virtio_ring';
import { expectNoLeaks } from './helpers/leaks';
import { spawn } from 'node:child_process';
import type { ChildResult } from './helpers/child';

const MiB = 1024 * 1024;
const FEAT_EVENT = 1n << BigInt(VIRTIO_RING_F_EVENT_IDX);
const FEAT_INDIRECT = 1n << BigInt(VIRTIO_RING_F_INDIRECT_DESC);

interface RigOptions {
  iommu: boolean;
  num: number;
  eventIdx?: boolean;
  indirect?: boolean;
  /** The driver's callback; default: collect every used buffer with virtqueue_get_buf. null: none. */
  callback?: ((vq: Virtqueue) => void) | null;
  /** The device only notes a doorbell (and turns doorbells off) until drain() runs it. Default false. */
  defer?: boolean;
  /** A non-coherent device with strict ownership checking (the CPU works in a write-back cache). */
  nonCoherent?: boolean;
  /** What the device does at a doorbell instead of serving or deferring. */
  onKick?: (r: Rig) => void;
}

/** A driver queue and the device queue over the same rings, wired through notify and the interrupt. */
interface Rig {
  dev: Device;
  vq: Virtqueue;
  dq: VirtQueue;
  kicks: number;
  irqs: number;
  /** The used index the device had published at each interrupt. */
  irqAt: number[];
  /** What the default callback collected. */
  done: { token: unknown; len: number }[];
  /** What the device does with a chain: returns the bytes it wrote. Default: echo (see echo()). */
  handler: (e: VirtQueueElement) => number;
  /** Runs the device over everything available (the deferred work). */
  drain(): void;
  /** Debug entries live once the rings exist. */
  base: number;
}

/** The device's default work: the out bytes, XOR 0x5a, written to the in buffers (as many as fit). */
function echo(dq: VirtQueue, e: VirtQueueElement): number {
  const data = new Uint8Array(e.outBytes);
  assert.equal(dq.readOut(e, 0, data), e.outBytes);
  for (let i = 0; i < data.length; i++) data[i] = data[i]! ^ 0x5a;
  const n = Math.min(data.length, e.inBytes);
  if (n === 0) return 0;
  assert.equal(dq.writeIn(e, 0, data, 0, n), n);
  return n;
}

function makeRig(m: Machine, o: RigOptions): Rig {
  const dev = m.createDevice({
    name: o.iommu ? 'vq-iommu' : 'vq-direct', dmaMask: 64, debug: 'strict', ...(o.iommu ? { iommu: { strict: true } } : {}),
    ...(o.nonCoherent === true ? { coherent: false, ownership: 'strict' as const } : {}),
  });
  let serving = false;
  let pending = false;
  const r = {} as Rig;
  const serve = (): void => {
    if (serving) return; // a kick from inside the callback: the loop below sees it
    serving = true;
    try {
      do {
        r.dq.setNotification(false);
        for (let e = r.dq.pop(); e !== null; e = r.dq.pop()) {
          const len = r.handler(e);
          r.dq.push(e.index, len);
          r.dq.notify();
        }
        r.dq.setNotification(true);
      } while (!r.dq.isEmpty());
    } finally {
      serving = false;
    }
  };
  const collect = (vq: Virtqueue): void => {
    const len = { value: 0 };
    for (let t = virtqueue_get_buf(vq, len); t !== null; t = virtqueue_get_buf(vq, len)) r.done.push({ token: t, len: len.value });
  };
  const callback = o.callback === undefined ? collect : o.callback;
  const vq = vring_create_virtqueue(dev, o.num, () => {
    r.kicks++;
    if (o.onKick !== undefined) o.onKick(r);
    else if (o.defer !== true) serve();
    else if (!pending) {
      pending = true;
      r.dq.setNotification(false);
    }
    return true;
  }, 'vq0', { eventIdx: o.eventIdx === true, indirect: o.indirect === true, callback })!;
  assert.ok(vq !== null);
  const features = (o.eventIdx === true ? FEAT_EVENT : 0n) | (o.indirect === true ? FEAT_INDIRECT : 0n);
  const dq = new VirtQueue(busMaster(dev), {
    size: o.num, desc: virtqueue_get_desc_addr(vq), avail: virtqueue_get_avail_addr(vq), used: virtqueue_get_used_addr(vq), features,
    onNotify: () => {
      r.irqs++;
      r.irqAt.push(dq.usedIdx);
      assert.equal(vring_interrupt(11, vq), 1);
    },
  });
  Object.assign(r, {
    dev, vq, dq, kicks: 0, irqs: 0, irqAt: [], done: [], handler: (e: VirtQueueElement) => echo(dq, e), base: dev.debug.activeEntries(),
    drain: () => {
      pending = false;
      serve();
    },
  });
  return r;
}

/** Offsets where two equal-sized buffers differ (compared a page at a time, scanned where they differ). */
function changedBytes(a: Buffer, b: Buffer): number[] {
  const out: number[] = [];
  for (let p = 0; p < a.length; p += PAGE_SIZE) {
    const end = Math.min(a.length, p + PAGE_SIZE);
    if (a.subarray(p, end).equals(b.subarray(p, end))) continue;
    for (let i = p; i < end; i++) if (a[i] !== b[i]) out.push(i);
  }
  return out;
}

/** DMA-API and other warnings of the machine (the tests expect none unless they say so). */
const warnings = (m: Machine): string[] => m.warnings.map((w) => w.message);

for (const iommu of [false, true]) {
  describe(`76 split virtqueue, ${iommu ? 'IOMMU (strict)' : 'direct'} device`, () => {
    expectNoLeaks();
    let m: Machine;
    let rigs: Rig[] = [];
    let held: Page[] = [];
    const page = (): Page => {
      const p = m.alloc_pages(GFP_KERNEL, 0)!;
      held.push(p);
      return p;
    };
    /** A scatterlist over the given (page, offset, length) pieces, end-marked. */
    const sgl = (...parts: [Page, number, number][]): Scatterlist => {
      const sg: Scatterlist[] = [];
      sg_init_table(sg, parts.length);
      parts.forEach(([p, off, len], i) => sg_set_page(sg[i]!, p, len, off));
      return sg[0]!;
    };
    const cpu = (p: Page, off = 0, len = PAGE_SIZE - off): Buffer => m.view(m.page_address(p) + off, len);
    const rig = (o: Omit<RigOptions, 'iommu'>): Rig => {
      const r = makeRig(m, { ...o, iommu });
      rigs.push(r);
      return r;
    };

    beforeEach(() => {
      m = new Machine({ name: `vq76${iommu ? 'i' : 'd'}`, ramPerNode: 16 * MiB, cmaSize: 0, hugepages: 'off', emitWarnings: false });
    });
    afterEach(() => {
      for (const r of rigs) {
        while (virtqueue_detach_unused_buf(r.vq) !== null);
        vring_del_virtqueue(r.vq);
        r.dev.destroy();
      }
      rigs = [];
      for (const p of held) m.__free_pages(p, 0);
      held = [];
      m.destroy();
    });

    it('a single out buffer, then a single in buffer: the device reads the driver\'s bytes, and its bytes land in the in buffer and nowhere else', () => {
      const r = rig({ num: 8 });
      const out = page();
      const inp = page();
      const pattern = Uint8Array.from({ length: 64 }, (_, i) => (i * 7) & 0xff);
      cpu(out, 0, 64).set(pattern);
      cpu(inp).fill(0);
      let seen: Uint8Array | null = null;
      r.handler = (e) => {
        if (e.outNum > 0) {
          seen = new Uint8Array(e.outBytes);
          assert.equal(r.dq.readOut(e, 0, seen), 64);
          return 0;
        }
        return r.dq.writeIn(e, 0, Uint8Array.from({ length: 40 }, (_, i) => 200 - i));
      };
      assert.equal(virtqueue_add_outbuf(r.vq, sgl([out, 0, 64]), 1, 'tx', GFP_KERNEL), 0);
      assert.equal(r.vq.num_free, 7);
      assert.equal(r.dev.debug.activeEntries(), r.base + 1, 'the buffer is mapped while the device owns it');
      assert.ok(virtqueue_kick(r.vq));
      assert.deepEqual(seen, pattern);
      assert.deepEqual(r.done, [{ token: 'tx', len: 0 }]);
      assert.equal(virtqueue_add_inbuf(r.vq, sgl([inp, 100, 64]), 1, 'rx', GFP_KERNEL), 0);
      virtqueue_kick(r.vq);
      assert.deepEqual(r.done[1], { token: 'rx', len: 40 });
      assert.deepEqual([...cpu(inp, 100, 40)], Array.from({ length: 40 }, (_, i) => 200 - i));
      assert.ok(cpu(inp, 0, 100).every((b) => b === 0) && cpu(inp, 140).every((b) => b === 0), 'no byte outside the 40 written');
      assert.equal(r.vq.num_free, 8);
      assert.equal(r.dev.debug.activeEntries(), r.base, 'unmapped at get_buf');
      assert.deepEqual(warnings(m), []);
    });

    it('chains: two out lists (3 entries) and two in lists (3 entries) make one chain, and the echo lands across every segment boundary', () => {
      const r = rig({ num: 16 });
      const [a, b, c, d] = [page(), page(), page(), page()];
      const hdr = Uint8Array.from({ length: 12 }, (_, i) => i + 1);
      const body = Uint8Array.from({ length: 3000 }, (_, i) => (i * 31) & 0xff);
      cpu(a, 0, 12).set(hdr);
      cpu(b, 1000, 1000).set(body.subarray(0, 1000));
      cpu(c, 0, 2000).set(body.subarray(1000));
      cpu(d).fill(0xee);
      let shape: number[] = [];
      r.handler = (e) => {
        shape = [e.outNum, e.inNum, e.outBytes, e.inBytes];
        return echo(r.dq, e);
      };
      const sgs = [sgl([a, 0, 12]), sgl([b, 1000, 1000], [c, 0, 2000]), sgl([d, 0, 5]), sgl([d, 64, 1000], [d, 2048, 2048])];
      const token = { id: 7 };
      assert.equal(virtqueue_add_sgs(r.vq, sgs, 2, 2, token, GFP_KERNEL), 0);
      assert.equal(r.vq.num_free, 10, 'six descriptors in the ring (no indirect)');
      virtqueue_kick(r.vq);
      assert.deepEqual(shape, [3, 3, 3012, 3053]);
      assert.equal(r.done.length, 1);
      assert.equal(r.done[0]!.token, token, 'the same token object comes back');
      assert.equal(r.done[0]!.len, 3012);
      const want = Buffer.from([...hdr, ...body].map((x) => x ^ 0x5a));
      assert.deepEqual(Buffer.concat([cpu(d, 0, 5), cpu(d, 64, 1000), cpu(d, 2048, 2007)]), want);
      assert.ok(cpu(d, 5, 59).every((x) => x === 0xee) && cpu(d, 1064, 984).every((x) => x === 0xee) && cpu(d, 4055).every((x) => x === 0xee));
      assert.equal(r.vq.num_free, 16);
      assert.equal(r.dev.debug.activeEntries(), r.base);
      assert.deepEqual(warnings(m), []);
    });

    it('a non-coherent device with strict ownership checking: the driver\'s maps and unmaps are the syncs it needs, chains and indirect tables included', () => {
      const r = rig({ num: 8, indirect: true, nonCoherent: true });
      const [a, b] = [page(), page()];
      for (let round = 0; round < 50; round++) {
        const fill = (round * 13) & 0xff;
        cpu(a, 0, 256).fill(fill);
        cpu(b, 0, 256).fill(0);
        const rc = virtqueue_add_sgs(r.vq, [sgl([a, 0, 128], [a, 128, 128]), sgl([b, 0, 64], [b, 128, 128]), sgl([b, 1024, 64])], 1, 2, round, GFP_KERNEL);
        assert.equal(rc, 0);
        virtqueue_kick(r.vq);
        assert.deepEqual(r.done.at(-1), { token: round, len: 256 });
        const want = fill ^ 0x5a;
        assert.ok(cpu(b, 0, 64).every((x) => x === want) && cpu(b, 128, 128).every((x) => x === want) && cpu(b, 1024, 64).every((x) => x === want), `round ${round}: the device's bytes, not stale cache lines`);
        assert.ok(cpu(b, 64, 64).every((x) => x === 0), 'and nothing between the buffers');
      }
      assert.equal(r.dev.debug.activeEntries(), r.base);
      assert.deepEqual(warnings(m), []);
    });

    it('indirect descriptors: a 4-entry chain takes one ring descriptor; its kmalloc\'d table is mapped while in flight, then unmapped and freed at get_buf', () => {
      const r = rig({ num: 4, indirect: true, defer: true });
      const slab = (): number => kmalloc_stats(m).reduce((n, cache) => n + cache.active, 0);
      const slab0 = slab();
      const [a, b] = [page(), page()];
      cpu(a, 0, 512).set(Array.from({ length: 512 }, (_, i) => i & 0xff));
      cpu(b).fill(0);
      const shapes: number[][] = [];
      r.handler = (e) => {
        shapes.push([e.outNum, e.inNum]);
        return echo(r.dq, e);
      };
      for (let k = 0; k < 4; k++) {
        const sgs = [sgl([a, k * 128, 64], [a, k * 128 + 64, 64]), sgl([b, k * 1024, 100], [b, k * 1024 + 512, 28])];
        assert.equal(virtqueue_add_sgs(r.vq, sgs, 1, 1, k, GFP_KERNEL), 0);
        assert.equal(r.vq.num_free, 3 - k, 'one ring descriptor per chain');
        virtqueue_kick(r.vq);
      }
      const desc0 = busMaster(r.dev).read16(virtqueue_get_desc_addr(r.vq) + 12n);
      assert.equal(desc0, VRING_DESC_F_INDIRECT, 'the ring descriptor points at a table');
      assert.equal(slab(), slab0 + 4, 'four tables from kmalloc');
      assert.equal(r.dev.debug.activeEntries(), r.base + 4 * 5, 'four buffers and the table per chain');
      const one = page();
      assert.equal(virtqueue_add_outbuf(r.vq, sgl([one, 0, 8]), 1, 'late', GFP_KERNEL), -ENOSPC);
      assert.equal(slab(), slab0 + 4, 'the refused add left no table behind');
      assert.equal(r.dev.debug.activeEntries(), r.base + 20);
      r.drain();
      assert.deepEqual(shapes, [[2, 2], [2, 2], [2, 2], [2, 2]]);
      assert.deepEqual(r.done.map((x) => [x.token, x.len]), [[0, 128], [1, 128], [2, 128], [3, 128]]);
      for (let k = 0; k < 4; k++) {
        const want = Buffer.from(Array.from({ length: 128 }, (_, i) => ((k * 128 + i) & 0xff) ^ 0x5a));
        assert.deepEqual(Buffer.concat([cpu(b, k * 1024, 100), cpu(b, k * 1024 + 512, 28)]), want);
      }
      assert.equal(slab(), slab0, 'every table was kfree\'d');
      assert.equal(r.dev.debug.activeEntries(), r.base, 'tables and buffers unmapped');
      assert.equal(virtqueue_add_outbuf(r.vq, sgl([one, 0, 8]), 1, 'single', GFP_KERNEL), 0);
      assert.equal(slab(), slab0, 'one sg needs no table');
      r.drain();
      const five = [page(), page(), page(), page(), page()].map((p) => sgl([p, 0, 8]));
      assert.equal(virtqueue_add_sgs(r.vq, five, 5, 0, 'five', GFP_KERNEL), -ENOSPC, 'a chain longer than the queue is refused, indirect or not');
      assert.equal(slab(), slab0);
      assert.equal(r.dev.debug.activeEntries(), r.base);
      assert.deepEqual(warnings(m), []);
    });

    it('the device reaches memory only through its bus: four 32-bit reads per ring descriptor, one read per indirect table, and the used element before used.idx', () => {
      const r = rig({ num: 8, indirect: true, defer: true });
      const [a, b] = [page(), page()];
      const log: string[] = [];
      const real = busMaster(r.dev);
      const spy = new Proxy(real, {
        get(target, key) {
          const v = Reflect.get(target, key, target) as unknown;
          if (typeof v !== 'function') return v;
          return (...args: unknown[]) => {
            log.push(`${String(key)}${key === 'read' || key === 'write' ? `:${String(args[3] ?? (args[1] as Uint8Array).length)}` : ''}`);
            return (v as (...x: unknown[]) => unknown).apply(target, args);
          };
        },
      });
      const dq = new VirtQueue(spy, { size: 8, desc: virtqueue_get_desc_addr(r.vq), avail: virtqueue_get_avail_addr(r.vq), used: virtqueue_get_used_addr(r.vq), features: FEAT_INDIRECT });
      assert.equal(virtqueue_add_outbuf(r.vq, sgl([a, 0, 16]), 1, 'one', GFP_KERNEL), 0);
      assert.equal(virtqueue_add_sgs(r.vq, [sgl([a, 64, 16], [a, 128, 16]), sgl([b, 0, 16])], 1, 1, 'three', GFP_KERNEL), 0);
      const e1 = dq.pop()!;
      assert.deepEqual(log.splice(0), ['read16', 'read16', 'read32', 'read32', 'read32', 'read32'], 'avail.idx, the ring entry, one descriptor');
      assert.equal(e1.index, 0);
      dq.push(e1.index, 0);
      assert.deepEqual(log.splice(0), ['write32', 'write32', 'write16'], 'id, len, then used.idx');
      const e2 = dq.pop()!;
      assert.deepEqual(log.splice(0), ['read16', 'read32', 'read32', 'read32', 'read32', 'read:48'], 'the ring entry, the indirect descriptor, the whole table in one read');
      assert.deepEqual([e2.outNum, e2.inNum], [2, 1]);
      dq.push(e2.index, 16);
      log.length = 0;
      assert.equal(dq.pop(), null);
      assert.deepEqual(log.splice(0), ['read16'], 'an empty ring costs one read of avail.idx');
      assert.equal(virtqueue_get_buf(r.vq, null), 'one');
      assert.equal(virtqueue_get_buf(r.vq, null), 'three');
      assert.equal(r.dev.debug.activeEntries(), r.base);
    });

    it('argument checks come before any mapping: a page of another machine or an entry without a page is a TypeError, a null token a kernel BUG', () => {
      const r = rig({ num: 8 });
      const other = new Machine({ name: 'vq76other', ramPerNode: 4 * MiB, cmaSize: 0, hugepages: 'off', emitWarnings: false });
      try {
        const foreign = other.alloc_pages(GFP_KERNEL, 0)!;
        const mine = page();
        assert.throws(() => virtqueue_add_sgs(r.vq, [sgl([mine, 0, 8]), sgl([foreign, 0, 8])], 1, 1, 'x', GFP_KERNEL), /TypeError: virtqueue_add_sgs: entry 0 of sgs\[1\] is a page of another machine/);
        const empty: Scatterlist[] = [];
        sg_init_table(empty, 1);
        assert.throws(() => virtqueue_add_outbuf(r.vq, empty[0]!, 1, 'x', GFP_KERNEL), /TypeError: .*has no page/);
        assert.throws(() => virtqueue_add_outbuf(r.vq, sgl([mine, 0, 8]), 1, null, GFP_KERNEL), /^Error: kernel BUG at drivers\/virtio\/virtio_ring.c: virtqueue_add_outbuf: data == NULL/);
        assert.throws(() => virtqueue_add_outbuf(r.vq, sgl([mine, 0, 8]), 2, 'x', GFP_KERNEL), RangeError);
        assert.throws(() => virtqueue_add_sgs(r.vq, [], 0, 0, 'x', GFP_KERNEL), /kernel BUG .*total_sg == 0/);
        assert.throws(() => virtqueue_kick({} as Virtqueue), TypeError);
        assert.equal(r.vq.num_free, 8);
        assert.equal(r.dev.debug.activeEntries(), r.base);
        other.__free_pages(foreign, 0);
      } finally {
        other.destroy();
      }
    });

    describe('notification suppression, a batch of 32 after a warm-up (doorbells counted at notify, interrupts at the device)', () => {
      type Cb = 'collect' | 'count' | 'disable';
      interface Case { name: string; eventIdx: boolean; defer: boolean; cb: Cb; driver?: 'disable_cb' | 'delayed'; kicks: number; irqs: number; at?: number }
      const cases: Case[] = [
        { name: 'no EVENT_IDX, the device serves each doorbell, callbacks on: nothing suppressed', eventIdx: false, defer: false, cb: 'collect', kicks: 32, irqs: 32 },
        { name: 'EVENT_IDX, the device serves each doorbell and the driver consumes each buffer: nothing suppressed', eventIdx: true, defer: false, cb: 'collect', kicks: 32, irqs: 32 },
        { name: 'no EVENT_IDX, a busy device sets used.flags NO_NOTIFY: one doorbell', eventIdx: false, defer: true, cb: 'collect', kicks: 1, irqs: 32 },
        { name: 'no EVENT_IDX, virtqueue_disable_cb sets avail.flags NO_INTERRUPT: one doorbell, no interrupt', eventIdx: false, defer: true, cb: 'collect', driver: 'disable_cb', kicks: 1, irqs: 0 },
        { name: 'EVENT_IDX, a busy device leaves avail_event behind and the driver does not move used_event: one doorbell, one interrupt', eventIdx: true, defer: true, cb: 'count', kicks: 1, irqs: 1, at: 1 },
        { name: 'EVENT_IDX, virtqueue_disable_cb: one doorbell, no interrupt', eventIdx: true, defer: true, cb: 'collect', driver: 'disable_cb', kicks: 1, irqs: 0 },
        { name: 'EVENT_IDX, virtqueue_enable_cb_delayed: one doorbell, one interrupt at 3/4 of the batch (the 25th buffer)', eventIdx: true, defer: true, cb: 'disable', driver: 'delayed', kicks: 1, irqs: 1, at: 25 },
      ];
      for (const c of cases) {
        it(c.name, () => {
          const callbacks: Record<Cb, (vq: Virtqueue) => void> = {
            collect: (vq) => {
              const len = { value: 0 };
              while (virtqueue_get_buf(vq, len) !== null);
            },
            count: () => {},
            disable: (vq) => virtqueue_disable_cb(vq),
          };
          const r = rig({ num: 64, eventIdx: c.eventIdx, defer: c.defer, callback: callbacks[c.cb] });
          const p = page();
          let token = 0;
          const round = (n: number, measured: boolean): { kicks: number; irqs: number; at: number[]; start: number } => {
            const k0 = r.kicks;
            const i0 = r.irqs;
            const a0 = r.irqAt.length;
            const start = r.dq.usedIdx;
            for (let i = 0; i < n; i++) {
              assert.equal(virtqueue_add_outbuf(r.vq, sgl([p, i * 64, 16]), 1, ++token, GFP_KERNEL), 0);
              virtqueue_kick(r.vq);
            }
            if (measured && c.driver === 'delayed') assert.equal(virtqueue_enable_cb_delayed(r.vq), true, 'none used yet');
            r.drain();
            if (measured && c.driver === 'disable_cb') assert.equal(virtqueue_enable_cb(r.vq), false, 'buffers are waiting: the driver must poll');
            const len = { value: 0 };
            let got = 0;
            while (virtqueue_get_buf(r.vq, len) !== null) got++;
            assert.equal(r.vq.num_free, 64, `every buffer came back (${got} by polling)`);
            return { kicks: r.kicks - k0, irqs: r.irqs - i0, at: r.irqAt.slice(a0).map((u) => (u - start) & 0xffff), start };
          };
          round(4, false);
          // As a NAPI poll ends: callbacks on again (which also forgets that the device signalled).
          assert.equal(virtqueue_enable_cb(r.vq), true);
          if (c.driver !== undefined) virtqueue_disable_cb(r.vq);
          const got = round(32, true);
          assert.deepEqual({ kicks: got.kicks, irqs: got.irqs }, { kicks: c.kicks, irqs: c.irqs });
          if (c.at !== undefined) assert.deepEqual(got.at, [c.at], 'the interrupt came with this many buffers used');
          const flags = busMaster(r.dev).read16(virtqueue_get_used_addr(r.vq));
          assert.equal(flags & VRING_USED_F_NO_NOTIFY, 0, 'the device wants doorbells again once idle');
          assert.equal(r.dev.debug.activeEntries(), r.base);
          assert.deepEqual(warnings(m), []);
        });
      }

      it('EVENT_IDX, a device that takes one chain per doorbell and leaves notifications on: each pop moves avail_event, so each add rings (32 doorbells)', () => {
        const r = rig({ num: 64, eventIdx: true, onKick: (q) => {
          const e = q.dq.pop();
          if (e !== null) q.dq.push(e.index, 0);
        } });
        const p = page();
        for (let i = 0; i < 32; i++) {
          assert.equal(virtqueue_add_outbuf(r.vq, sgl([p, i * 64, 16]), 1, i + 1, GFP_KERNEL), 0);
          virtqueue_kick(r.vq);
        }
        assert.equal(r.kicks, 32);
        assert.equal(r.dq.usedIdx, 32, 'every buffer was taken at its doorbell');
        const len = { value: 0 };
        while (virtqueue_get_buf(r.vq, len) !== null);
        assert.equal(r.vq.num_free, 64);
      });

      it('vring_need_event is modulo 2^16: an event just behind the new index fires across the wrap, one behind the old does not', () => {
        assert.equal(vring_need_event(0xffff, 0, 0xfffe), true);
        assert.equal(vring_need_event(0xfffe, 0, 0xfffe), true);
        assert.equal(vring_need_event(0xfffd, 0, 0xfffe), false);
        assert.equal(vring_need_event(0, 1, 0), true);
        assert.equal(vring_need_event(1, 1, 0), false);
        assert.equal(vring_need_event(5, 100, 0), true);
      });
    });

    for (const num of [4, 8]) {
      it(`16-bit indices wrap: 70,000 add/get cycles through a queue of ${num}${num === 8 ? ' (indirect chains)' : ''} stay in step, with EVENT_IDX doorbells and interrupts on time`, function () {
        this.timeout(120000);
        const N = 70000;
        const p = page();
        const hdr = page();
        let served = 0;
        let collected = 0;
        const check = (vq: Virtqueue): void => {
          const len = { value: 0 };
          for (let t = virtqueue_get_buf(vq, len); t !== null; t = virtqueue_get_buf(vq, len)) {
            collected++;
            assert.equal(t, collected, 'tokens come back in order');
            assert.equal(len.value, 4);
            assert.equal(cpu(p, (collected % num) * 64, 4).readUInt32LE(0), collected, 'the device\'s bytes for this buffer');
          }
        };
        const r = rig({ num, eventIdx: true, indirect: num === 8, callback: check });
        const word = new Uint8Array(4);
        r.handler = (e) => {
          new DataView(word.buffer).setUint32(0, ++served, true);
          return r.dq.writeIn(e, 0, word);
        };
        let added = 0;
        while (added < N) {
          const batch = Math.min(num, N - added);
          for (let j = 0; j < batch; j++) {
            const t = ++added;
            const rc = num === 8
              ? virtqueue_add_sgs(r.vq, [sgl([hdr, 0, 8]), sgl([p, (t % num) * 64, 4])], 1, 1, t, GFP_KERNEL)
              : virtqueue_add_inbuf(r.vq, sgl([p, (t % num) * 64, 4]), 1, t, GFP_KERNEL);
            assert.equal(rc, 0);
          }
          const kicks = r.kicks;
          virtqueue_kick(r.vq);
          assert.equal(r.kicks, kicks + 1, `a doorbell for the batch ending at ${added}`);
          assert.equal(collected, added, `the interrupts delivered every buffer up to ${added}`);
        }
        assert.equal(served, N);
        assert.equal(r.dq.lastAvailIdx, N & 0xffff);
        assert.equal(r.dq.usedIdx, N & 0xffff);
        assert.equal(r.vq.num_free, num);
        assert.equal(r.dq.inuse, 0);
        assert.equal(r.dev.debug.activeEntries(), r.base);
        assert.deepEqual(warnings(m), []);
      });
    }

    it('virtqueue_detach_unused_buf gives back every token the device did not use, and leaves nothing mapped or allocated', () => {
      const r = rig({ num: 16, indirect: true, defer: true });
      const slab = (): number => kmalloc_stats(m).reduce((n, cache) => n + cache.active, 0);
      const slab0 = slab();
      const [a, b] = [page(), page()];
      const tokens: string[] = [];
      for (let k = 0; k < 10; k++) {
        const t = `buf${k}`;
        tokens.push(t);
        const rc = k % 3 === 0 ? virtqueue_add_outbuf(r.vq, sgl([a, k * 256, 32]), 1, t, GFP_KERNEL)
          : k % 3 === 1 ? virtqueue_add_inbuf(r.vq, sgl([b, k * 256, 32]), 1, t, GFP_KERNEL)
            : virtqueue_add_sgs(r.vq, [sgl([a, k * 256, 16], [a, k * 256 + 64, 16]), sgl([b, k * 256, 64])], 1, 1, t, GFP_KERNEL);
        assert.equal(rc, 0);
      }
      virtqueue_kick(r.vq);
      assert.ok(r.dev.debug.activeEntries() > r.base);
      // The device takes three and completes them; the rest stay in the ring.
      for (let k = 0; k < 3; k++) {
        const e = r.dq.pop()!;
        r.dq.push(e.index, 0);
      }
      r.dq.notify();
      assert.deepEqual(r.done.map((x) => x.token), tokens.slice(0, 3));
      const back: unknown[] = [];
      for (let t = virtqueue_detach_unused_buf(r.vq); t !== null; t = virtqueue_detach_unused_buf(r.vq)) back.push(t);
      assert.deepEqual(back.sort(), tokens.slice(3).sort());
      assert.equal(virtqueue_detach_unused_buf(r.vq), null);
      assert.equal(r.vq.num_free, 16);
      assert.equal(r.dev.debug.activeEntries(), r.base, 'nothing mapped');
      assert.equal(slab(), slab0, 'no indirect table left');
      assert.deepEqual(warnings(m), []);
    });

    it('queue sizes: every power of two from 1 to 32768 works on both sides; anything else is refused before anything is allocated', () => {
      const dev = m.createDevice({ name: 'sizes', dmaMask: 64, debug: 'strict', ...(iommu ? { iommu: { strict: true } } : {}) });
      const bus = busMaster(dev);
      const p = page();
      for (let n = 1; n <= 32768; n *= 2) {
        const vq = vring_create_virtqueue(dev, n, () => true, `q${n}`)!;
        assert.ok(vq !== null, `size ${n}`);
        assert.equal(virtqueue_get_vring_size(vq), n);
        assert.equal(vq.num_free, n);
        const dq = new VirtQueue(bus, { size: n, desc: virtqueue_get_desc_addr(vq), avail: virtqueue_get_avail_addr(vq), used: virtqueue_get_used_addr(vq) });
        assert.equal(virtqueue_add_outbuf(vq, sgl([p, 0, 8]), 1, 'x', GFP_KERNEL), 0);
        virtqueue_kick(vq);
        const e = dq.pop()!;
        assert.ok(e !== null && e.outNum === 1 && e.len[0] === 8, `the device pops from a queue of ${n}`);
        dq.push(e.index, 0);
        assert.equal(virtqueue_get_buf(vq, null), 'x');
        vring_del_virtqueue(vq);
        vring_del_virtqueue(vq);
        assert.throws(() => virtqueue_kick(vq), /deleted/);
      }
      const free0 = m.stats().nodes[0]!.freePages;
      const entries0 = dev.debug.activeEntries();
      for (const bad of [0, 3, 6, 100, 32769, 65536, 1.5, -8, NaN, Infinity]) {
        assert.throws(() => vring_create_virtqueue(dev, bad, () => true, 'bad'), RangeError, `driver, ${bad}`);
        assert.throws(() => new VirtQueue(bus, { size: bad, desc: 0, avail: 0, used: 0 }), RangeError, `device, ${bad}`);
      }
      assert.throws(() => vring_create_virtqueue(dev, '8' as unknown as number, () => true, 'bad'), TypeError);
      assert.throws(() => vring_create_virtqueue(dev, 8, () => true, 'bad', { eventIdx: true, evenIdx: true } as never), /Unknown option 'evenIdx'/);
      assert.equal(m.stats().nodes[0]!.freePages, free0, 'no page was allocated');
      assert.equal(dev.debug.activeEntries(), entries0, 'nothing was mapped');
      assert.deepEqual(warnings(m), []);
      dev.destroy();
    });

    it('the driver refuses a device that breaks the protocol (BAD_RING): a used id out of range or of no chain in flight breaks the queue', () => {
      const r = rig({ num: 8, defer: true });
      const p = page();
      assert.equal(virtqueue_add_outbuf(r.vq, sgl([p, 0, 8]), 1, 'a', GFP_KERNEL), 0);
      const bus = busMaster(r.dev);
      const used = virtqueue_get_used_addr(r.vq);
      bus.write32(used + 4n, 3); // id 3: no chain starts there
      bus.write16(used + 2n, 1);
      assert.equal(virtqueue_get_buf(r.vq, null), null);
      assert.ok(virtqueue_is_broken(r.vq));
      assert.match(warnings(m).join('\n'), /vq0: id 3 is not a head!/);
      assert.equal(virtqueue_add_outbuf(r.vq, sgl([p, 64, 8]), 1, 'b', GFP_KERNEL), -5, '-EIO once broken');
      assert.equal(virtqueue_kick(r.vq), false);
      assert.equal(virtqueue_detach_unused_buf(r.vq), 'a', 'teardown still gets its buffers back');
      assert.equal(r.dev.debug.activeEntries(), r.base);
      const r2 = rig({ num: 8, defer: true });
      assert.equal(virtqueue_add_outbuf(r2.vq, sgl([p, 128, 8]), 1, 'c', GFP_KERNEL), 0);
      busMaster(r2.dev).write32(virtqueue_get_used_addr(r2.vq) + 4n, 9);
      busMaster(r2.dev).write16(virtqueue_get_used_addr(r2.vq) + 2n, 1);
      assert.equal(virtqueue_get_buf(r2.vq, null), null);
      assert.match(warnings(m).join('\n'), /vq0: id 9 out of range/);
      assert.ok(virtqueue_is_broken(r2.vq));
    });

    describe('a malformed ring breaks the queue with its reason, never hangs, and changes no memory', () => {
      /** Rings written by hand (no driver), in coherent memory, with a data area the descriptors point into. */
      interface Hand {
        dev: Device;
        areas: Record<'desc' | 'avail' | 'used' | 'data', { cpu: number; dma: bigint; size: number; buf: Buffer }>;
      }
      const NUM = 8;
      const UNREACHABLE = 0x7000_0000n; // no memory there, and no IOVA mapped there
      let hand: Hand | null = null;
      const makeHand = (): Hand => {
        const dev = m.createDevice({ name: 'hand', dmaMask: 64, debug: 'strict', ...(iommu ? { iommu: { strict: true } } : {}) });
        const alloc = (size: number): { cpu: number; dma: bigint; size: number; buf: Buffer } => {
          const h = { value: 0n };
          const c = dma_alloc_coherent(dev, size, h, GFP_KERNEL)!;
          const buf = m.view(c, size);
          buf.fill(0);
          return { cpu: c, dma: h.value, size, buf };
        };
        return { dev, areas: { desc: alloc(vring_desc_size(NUM)), avail: alloc(vring_avail_size(NUM)), used: alloc(vring_used_size(NUM)), data: alloc(2 * PAGE_SIZE) } };
      };
      afterEach(() => {
        if (hand === null) return;
        for (const a of Object.values(hand.areas)) dma_free_coherent(hand.dev, a.size, a.cpu, a.dma);
        hand.dev.destroy();
        hand = null;
      });
      /** Writes descriptor i of a table (the ring's, or one in the data area at byte `at`). */
      const desc = (table: Buffer, i: number, addr: bigint, len: number, flags: number, next: number): void => {
        table.writeBigUInt64LE(addr, i * 16);
        table.writeUInt32LE(len, i * 16 + 8);
        table.writeUInt16LE(flags, i * 16 + 12);
        table.writeUInt16LE(next, i * 16 + 14);
      };
      const offer = (h: Hand, ...heads: number[]): void => {
        const av = h.areas.avail.buf;
        let idx = av.readUInt16LE(2);
        for (const head of heads) av.writeUInt16LE(head, 4 + 2 * (idx++ % NUM));
        av.writeUInt16LE(idx & 0xffff, 2);
      };
      const ram = (): Buffer[] => m.segments.map((s) => m.read(s.address, s.pages * PAGE_SIZE));
      const TABLE_AT = 1024; // an indirect table inside the data area
      const memtx = iommu ? 4 : 2;

      interface Bad { name: string; features?: bigint; config?: Partial<Record<'desc' | 'avail' | 'used', bigint>>; set(h: Hand, d: bigint, t: Buffer): void; reason: RegExp; }
      const cases: Bad[] = [
        { name: 'a descriptor loop (0 -> 1 -> 0)', set: (h, d) => { desc(h.areas.desc.buf, 0, d, 16, VRING_DESC_F_NEXT, 1); desc(h.areas.desc.buf, 1, d + 16n, 16, VRING_DESC_F_NEXT, 0); offer(h, 0); }, reason: /^Looped descriptor$/ },
        { name: 'a descriptor chained to itself', set: (h, d) => { desc(h.areas.desc.buf, 5, d, 16, VRING_DESC_F_NEXT, 5); offer(h, 5); }, reason: /^Looped descriptor$/ },
        { name: 'a next index >= the queue size', set: (h, d) => { desc(h.areas.desc.buf, 0, d, 16, VRING_DESC_F_NEXT, NUM); offer(h, 0); }, reason: /^Desc next is 8$/ },
        { name: 'a head index >= the queue size', set: (h) => offer(h, 0xffff), reason: /^Guest says index 65535 is available$/ },
        { name: 'avail.idx more than the queue size ahead', set: (h, d) => { desc(h.areas.desc.buf, 0, d, 16, 0, 0); h.areas.avail.buf.writeUInt16LE(NUM + 1, 2); }, reason: /^Guest moved avail index from 0 to 9 \(more than the queue size 8 ahead\)$/ },
        { name: 'a chain longer than the queue size (an indirect table of 9)', features: FEAT_INDIRECT, set: (h, d, t) => { for (let i = 0; i < 9; i++) desc(t, i, d, 8, VRING_DESC_F_NEXT, i + 1); desc(h.areas.desc.buf, 0, d + BigInt(TABLE_AT), 9 * 16, VRING_DESC_F_INDIRECT, 0); offer(h, 0); }, reason: /^Looped descriptor \(an indirect table of 9 makes the chain longer than the queue size 8\)$/ },
        { name: 'a chain longer than the queue size (2 direct, then a table of 7)', features: FEAT_INDIRECT, set: (h, d, t) => { for (let i = 0; i < 7; i++) desc(t, i, d, 8, i < 6 ? VRING_DESC_F_NEXT : 0, i + 1); desc(h.areas.desc.buf, 0, d, 8, VRING_DESC_F_NEXT, 1); desc(h.areas.desc.buf, 1, d, 8, VRING_DESC_F_NEXT, 2); desc(h.areas.desc.buf, 2, d + BigInt(TABLE_AT), 7 * 16, VRING_DESC_F_INDIRECT, 0); offer(h, 0); }, reason: /^Looped descriptor \(an indirect table of 7 makes the chain longer than the queue size 8\)$/ },
        { name: 'a loop inside an indirect table', features: FEAT_INDIRECT, set: (h, d, t) => { desc(t, 0, d, 8, VRING_DESC_F_NEXT, 1); desc(t, 1, d, 8, VRING_DESC_F_NEXT, 0); desc(h.areas.desc.buf, 0, d + BigInt(TABLE_AT), 32, VRING_DESC_F_INDIRECT, 0); offer(h, 0); }, reason: /^Looped descriptor$/ },
        { name: 'an indirect descriptor with NEXT set', features: FEAT_INDIRECT, set: (h, d, t) => { desc(t, 0, d, 8, 0, 0); desc(h.areas.desc.buf, 0, d + BigInt(TABLE_AT), 16, VRING_DESC_F_INDIRECT | VRING_DESC_F_NEXT, 1); desc(h.areas.desc.buf, 1, d, 8, 0, 0); offer(h, 0); }, reason: /^Indirect descriptor 0 has VRING_DESC_F_NEXT set$/ },
        { name: 'a nested indirect descriptor', features: FEAT_INDIRECT, set: (h, d, t) => { desc(t, 0, d, 8, VRING_DESC_F_NEXT, 1); desc(t, 1, d + BigInt(TABLE_AT), 32, VRING_DESC_F_INDIRECT, 0); desc(h.areas.desc.buf, 0, d + BigInt(TABLE_AT), 32, VRING_DESC_F_INDIRECT, 0); offer(h, 0); }, reason: /^Nested indirect descriptor \(entry 1 of the indirect table\)$/ },
        { name: 'an indirect table of 24 bytes (not a multiple of 16)', features: FEAT_INDIRECT, set: (h, d) => { desc(h.areas.desc.buf, 0, d + BigInt(TABLE_AT), 24, VRING_DESC_F_INDIRECT, 0); offer(h, 0); }, reason: /^Invalid size for indirect buffer table \(24 bytes\)$/ },
        { name: 'an indirect table of 0 bytes', features: FEAT_INDIRECT, set: (h, d) => { desc(h.areas.desc.buf, 0, d + BigInt(TABLE_AT), 0, VRING_DESC_F_INDIRECT, 0); offer(h, 0); }, reason: /^Invalid size for indirect buffer table \(0 bytes\)$/ },
        { name: 'an indirect descriptor without VIRTIO_RING_F_INDIRECT_DESC', set: (h, d, t) => { desc(t, 0, d, 8, 0, 0); desc(h.areas.desc.buf, 0, d + BigInt(TABLE_AT), 16, VRING_DESC_F_INDIRECT, 0); offer(h, 0); }, reason: /^Indirect descriptor 0 but VIRTIO_RING_F_INDIRECT_DESC was not negotiated$/ },
        { name: 'a zero-length buffer', set: (h, d) => { desc(h.areas.desc.buf, 0, d, 0, 0, 0); offer(h, 0); }, reason: /^virtio: zero sized buffers are not allowed$/ },
        { name: 'a zero-length buffer inside an indirect table', features: FEAT_INDIRECT, set: (h, d, t) => { desc(t, 0, d, 8, VRING_DESC_F_NEXT, 1); desc(t, 1, d, 0, VRING_DESC_F_WRITE, 0); desc(h.areas.desc.buf, 0, d + BigInt(TABLE_AT), 32, VRING_DESC_F_INDIRECT, 0); offer(h, 0); }, reason: /^virtio: zero sized buffers are not allowed$/ },
        { name: 'a readable buffer after a writable one', set: (h, d) => { desc(h.areas.desc.buf, 0, d, 16, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 1); desc(h.areas.desc.buf, 1, d, 16, 0, 0); offer(h, 0); }, reason: /^Incorrect order for descriptors$/ },
        { name: 'a buffer address beyond 2^53', set: (h) => { desc(h.areas.desc.buf, 0, 1n << 60n, 16, 0, 0); offer(h, 0); }, reason: /^virtio: bogus descriptor or out of resources/ },
        { name: 'a descriptor table the device cannot reach', config: { desc: UNREACHABLE }, set: (h) => offer(h, 0), reason: new RegExp(`^virtio: bus error \\(MEMTX ${memtx}\\) reading descriptor 0 at 0x70000000$`) },
        { name: 'an available ring the device cannot reach', config: { avail: UNREACHABLE }, set: () => {}, reason: new RegExp(`^virtio: bus error \\(MEMTX ${memtx}\\) reading avail.idx at 0x70000002$`) },
        { name: 'an indirect table the device cannot reach', features: FEAT_INDIRECT, set: (h) => { desc(h.areas.desc.buf, 0, UNREACHABLE, 32, VRING_DESC_F_INDIRECT, 0); offer(h, 0); }, reason: new RegExp(`^Cannot map indirect buffer \\(bus error MEMTX ${memtx} at 0x70000000\\)$`) },
      ];
      for (const c of cases) {
        for (const eventIdx of [false, true]) {
          it(`${c.name}${eventIdx ? ' (EVENT_IDX: only avail_event may change)' : ''}`, () => {
            const h = (hand = makeHand());
            const d = h.areas.data.dma;
            c.set(h, d, h.areas.data.buf.subarray(TABLE_AT));
            const faults0 = h.dev.iommu?.faults.length ?? 0;
            const reasons: string[] = [];
            const before = ram();
            const dq = new VirtQueue(busMaster(h.dev), {
              size: NUM,
              desc: c.config?.desc ?? h.areas.desc.dma,
              avail: c.config?.avail ?? h.areas.avail.dma,
              used: c.config?.used ?? h.areas.used.dma,
              features: (c.features ?? 0n) | (eventIdx ? FEAT_EVENT : 0n),
              onError: (why) => reasons.push(why),
            });
            const t0 = Date.now();
            let pops = 0;
            for (let k = 0; k < 4 * NUM; k++) if (dq.pop() !== null) pops++;
            assert.ok(Date.now() - t0 < 1000, 'no hang');
            assert.equal(pops, 0, 'no chain was handed out');
            assert.equal(dq.broken, true);
            assert.match(dq.error ?? '', c.reason);
            assert.deepEqual(reasons, [dq.error], 'onError once, with the reason');
            assert.equal(dq.isEmpty(), true);
            assert.equal(dq.shouldNotify(), false);
            // Memory: identical, except avail_event with EVENT_IDX (written before the chain is read).
            const after = ram();
            // Where avail_event is in the linear map (through the IOMMU the CPU sees the ring in vmalloc space).
            const eventAt = m.phys_to_virt(BigInt(busMaster(h.dev).translate(h.areas.used.dma + BigInt(vring_avail_event_offset(NUM)))));
            m.segments.forEach((s, i) => {
              const a = before[i]!;
              const b = after[i]!;
              for (const off of changedBytes(a, b)) {
                const addr = s.address + off;
                assert.ok(eventIdx && addr >= eventAt && addr < eventAt + 2, `byte 0x${addr.toString(16)} changed`);
              }
            });
            if (iommu && /MEMTX 4/.test(dq.error ?? '')) assert.equal(h.dev.iommu!.faults.length, faults0 + 1, 'the IOMMU recorded the fault');
            assert.deepEqual(warnings(m).filter((w) => w.startsWith('DMA-API')), []);
          });
        }
      }

      it('well formed, for contrast: direct descriptors followed by an indirect table (VIRTIO 1.2 §2.7.5.3.2) pop as one chain of exactly the queue size', () => {
        const h = (hand = makeHand());
        const d = h.areas.data.dma;
        const t = h.areas.data.buf.subarray(TABLE_AT);
        for (let i = 0; i < 7; i++) desc(t, i, d + BigInt(16 * i), 16, (i < 6 ? VRING_DESC_F_NEXT : 0) | (i >= 3 ? VRING_DESC_F_WRITE : 0), i + 1);
        desc(h.areas.desc.buf, 4, d + 512n, 32, VRING_DESC_F_NEXT, 6);
        desc(h.areas.desc.buf, 6, d + BigInt(TABLE_AT), 7 * 16, VRING_DESC_F_INDIRECT | VRING_DESC_F_WRITE, 0);
        offer(h, 4);
        const dq = new VirtQueue(busMaster(h.dev), { size: NUM, desc: h.areas.desc.dma, avail: h.areas.avail.dma, used: h.areas.used.dma, features: FEAT_INDIRECT });
        const e = dq.pop();
        assert.equal(dq.error, null);
        assert.ok(e !== null);
        assert.deepEqual([e.index, e.outNum, e.inNum, e.outBytes, e.inBytes], [4, 4, 4, 32 + 48, 64]);
        assert.deepEqual([...e.addr.subarray(0, 8)], [d + 512n, d, d + 16n, d + 32n, d + 48n, d + 64n, d + 80n, d + 96n].map(Number));
        dq.push(e.index, 64);
        assert.equal(h.areas.used.buf.readUInt16LE(2), 1);
        assert.deepEqual([h.areas.used.buf.readUInt32LE(4), h.areas.used.buf.readUInt32LE(8)], [4, 64]);
      });

      it('a used ring the device cannot reach: the chain pops, the push breaks the queue', () => {
        const h = (hand = makeHand());
        desc(h.areas.desc.buf, 0, h.areas.data.dma, 16, 0, 0);
        offer(h, 0, 0);
        const dq = new VirtQueue(busMaster(h.dev), { size: NUM, desc: h.areas.desc.dma, avail: h.areas.avail.dma, used: UNREACHABLE });
        const e = dq.pop();
        assert.ok(e !== null && e.outNum === 1);
        dq.push(e.index, 0);
        assert.match(dq.error ?? '', new RegExp(`^virtio: bus error \\(MEMTX ${memtx}\\) writing the used ring at 0x70000004$`));
        assert.equal(dq.pop(), null);
        assert.equal(dq.inuse, 0);
      });

      it('a buffer the device cannot reach: readOut / writeIn give -1 and break the queue', () => {
        const h = (hand = makeHand());
        desc(h.areas.desc.buf, 0, h.areas.data.dma, 16, VRING_DESC_F_NEXT, 1);
        desc(h.areas.desc.buf, 1, UNREACHABLE, 16, VRING_DESC_F_WRITE, 0);
        offer(h, 0, 0);
        const dq = new VirtQueue(busMaster(h.dev), { size: NUM, desc: h.areas.desc.dma, avail: h.areas.avail.dma, used: h.areas.used.dma });
        const e = dq.pop()!;
        assert.equal(dq.readOut(e, 0, new Uint8Array(16)), 16, 'the readable one is fine');
        assert.equal(dq.writeIn(e, 0, new Uint8Array(16)), -1);
        assert.match(dq.error ?? '', new RegExp(`^virtio: bus error \\(MEMTX ${memtx}\\) writing a buffer at 0x70000000$`));
        assert.equal(dq.pop(), null);
      });
    });
  });
}

describe('76 split virtqueue: a mapping failure unwinds', () => {
  expectNoLeaks();

  it('an add whose second mapping fails returns -ENOMEM with the first unmapped, and the ring is as before', () => {
    // RAM straddles 8 GiB; a 33-bit streaming mask reaches the pages below only, and with no swiotlb
    // a page above cannot be mapped.
    const m = new Machine({ name: 'vq76enomem', physBase: 2 ** 33 - 8 * MiB, ramPerNode: 16 * MiB, cmaSize: 0, hugepages: 'off', emitWarnings: false, swiotlb: 'off' });
    const dev = m.createDevice({ name: 'narrow', dmaMask: 33, coherentDmaMask: 33, debug: 'strict' });
    const all: Page[] = [];
    try {
      // Take every page, keep one on each side of 8 GiB and give the low ones back, so that the rings
      // come from below 8 GiB too (the device reaches nothing above).
      for (let p = m.alloc_pages(GFP_KERNEL, 0); p !== null; p = m.alloc_pages(GFP_KERNEL, 0)) all.push(p);
      const isLow = (p: Page): boolean => p.pfn * PAGE_SIZE + PAGE_SIZE <= 2 ** 33;
      const low = all.find(isLow)!;
      const high = all.find((p) => !isLow(p))!;
      assert.ok(low !== undefined && high !== undefined, 'pages on both sides of 8 GiB');
      for (const p of all.filter((q) => isLow(q) && q !== low)) m.__free_pages(p, 0);
      all.splice(0, all.length, ...all.filter((q) => !isLow(q) || q === low));
      const vq = vring_create_virtqueue(dev, 8, () => true, 'q')!;
      const base = dev.debug.activeEntries();
      const one = (p: Page): Scatterlist => {
        const sg: Scatterlist[] = [];
        sg_init_table(sg, 1);
        sg_set_page(sg[0]!, p, 64, 0);
        return sg[0]!;
      };
      assert.equal(virtqueue_add_sgs(vq, [one(low), one(high)], 1, 1, 'x', GFP_KERNEL), -12);
      assert.equal(vq.num_free, 8);
      assert.equal(dev.debug.activeEntries(), base, 'the first mapping was undone');
      assert.equal(virtqueue_add_sgs(vq, [one(low), one(low)], 1, 1, 'y', GFP_KERNEL), 0);
      const dq = new VirtQueue(busMaster(dev), { size: 8, desc: virtqueue_get_desc_addr(vq), avail: virtqueue_get_avail_addr(vq), used: virtqueue_get_used_addr(vq) });
      const e = dq.pop()!;
      assert.deepEqual([e.index, e.outNum, e.inNum], [0, 1, 1], 'the next add starts at the same free head');
      dq.push(e.index, 0);
      assert.equal(virtqueue_get_buf(vq, null), 'y');
      vring_del_virtqueue(vq);
      assert.equal(dev.debug.activeEntries(), 0);
      dev.destroy();
    } finally {
      for (const p of all) m.__free_pages(p, 0);
      m.destroy();
    }
  });
});

describe('76 split virtqueue: random rings (fuzz, in a child process)', () => {
  expectNoLeaks();

  it('pop over random descriptor and available ring contents never throws, never loops, and the child ends normally', async function () {
    this.timeout(180000);
    const lib = JSON.stringify(path.resolve(__dirname, '..', 'lib'));
    const iterations = Number(process.env.DMAMEM_VQ_FUZZ ?? 20000);
    const seed = Number(process.env.DMAMEM_FUZZ_SEED ?? 76076);
    const res = await runChildWithin(`${FUZZ_CHILD}\nmain(${lib}, ${iterations}, ${seed});`, 120000);
    assert.equal(res.hung, false, `the child finished within 120 s (a pop that loops never returns): ${res.stderr}`);
    assert.equal(res.signal, null, `no signal: ${res.stderr}`);
    assert.equal(res.code, 0, `exit 0: ${res.stderr}${res.stdout}`);
    const r = JSON.parse(res.stdout) as { iterations: number; broken: number; pops: number; reasons: Record<string, number>; maxMs: number };
    assert.equal(r.iterations, iterations);
    assert.ok(r.pops > iterations / 8, `valid chains were popped too (${r.pops})`);
    assert.ok(r.broken > iterations / 4, `and many rings broke (${r.broken})`);
    const kinds = Object.keys(r.reasons);
    for (const want of ['Looped descriptor', 'Desc next is N', 'Guest says index N is available', 'Guest moved avail index', 'zero sized buffers', 'Incorrect order', 'Invalid size for indirect buffer table', 'Nested indirect', 'VRING_DESC_F_NEXT set', 'reading descriptor', 'reading avail', 'Cannot map indirect buffer', 'bogus descriptor']) {
      assert.ok(kinds.some((k) => k.includes(want)), `the fuzzer reached '${want}': ${JSON.stringify(r.reasons)}`);
    }
    assert.ok(r.maxMs < 2000, `the slowest ring took ${r.maxMs.toFixed(1)} ms`);
  });
});

/** runChild (test/helpers/child.ts) with a deadline: a child still running after `ms` is killed and reported as hung. */
function runChildWithin(script: string, ms: number): Promise<ChildResult & { hung: boolean }> {
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  let hung = false;
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => {
    hung = true;
    child.kill('SIGKILL');
  }, ms);
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, hung });
    });
  });
}

/**
 * The fuzz child: random ring contents (fully random, or random but shaped like descriptors so
 * that chains get deep) for queues of 1 to 256 entries, random features, on a direct and an IOMMU
 * device; the device pops, reads, writes and pushes under an iteration cap. Any exception exits 3.
 */
const FUZZ_CHILD = String.raw`
function main(lib, iterations, seed) {
  const { Machine } = require(lib + '/mm/machine.js');
  require(lib + '/dma/device.js');
  const { dma_alloc_coherent, dma_free_coherent } = require(lib + '/dma/mapping.js');
  const { busMaster } = require(lib + '/devices/bus_master.js');
  const { VirtQueue } = require(lib + '/devices/virtio/virtqueue.js');
  let s = seed >>> 0 || 1;
  const rnd = () => { s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0; return s; };
  const below = (n) => rnd() % n;
  const m = new Machine({ name: 'vqfuzz', ramPerNode: 16 << 20, cmaSize: 0, hugepages: 'off', emitWarnings: false });
  const AREA = 64 * 1024;
  const sides = [
    m.createDevice({ name: 'fd', dmaMask: 64 }),
    m.createDevice({ name: 'fi', dmaMask: 64, iommu: { strict: true } }),
  ].map((dev) => {
    const h = { value: 0n };
    const cpu = dma_alloc_coherent(dev, AREA, h, 0xcc0);
    return { dev, cpu, dma: h.value, buf: m.view(cpu, AREA), bus: busMaster(dev) };
  });
  const scratch = new Uint8Array(8192);
  const out = { iterations: 0, broken: 0, pops: 0, reasons: {}, maxMs: 0 };
  for (let it = 0; it < iterations; it++) {
    const side = sides[it & 1];
    const size = 1 << below(9);
    const base = Number(side.dma);
    const DESC = 0, AVAIL = 8192, USED = 12288, DATA = 16384;
    const addr = () => {
      switch (below(6)) {
        case 0: return BigInt(below(2 ** 31)) * 4096n + BigInt(below(4096));
        case 1: return BigInt.asUintN(64, (BigInt(rnd()) << 32n) | BigInt(rnd()));
        default: return BigInt(base + DATA + below(AREA - DATA));
      }
    };
    const descs = (at, n) => {
      for (let i = 0; i < n; i++) {
        const o = at + i * 16;
        if (o + 16 > AREA) return;
        if (below(8) === 0) { for (let k = 0; k < 16; k++) side.buf[o + k] = below(256); continue; }
        side.buf.writeBigUInt64LE(addr(), o);
        side.buf.writeUInt32LE(below(8) === 0 ? rnd() : below(16) === 0 ? 0 : below(9) === 0 ? 16 * below(size + 3) : 1 + below(600), o + 8);
        side.buf.writeUInt16LE(below(16) === 0 ? below(65536) : below(8) === 0 ? 4 | below(4) : below(4), o + 12);
        side.buf.writeUInt16LE(below(8) === 0 ? below(65536) : below(size + 2), o + 14);
      }
    };
    descs(DESC, size);
    descs(DATA + below(4) * 4096, size + 2);
    side.buf.writeUInt16LE(below(4), AVAIL);
    side.buf.writeUInt16LE(below(4) === 0 ? below(65536) : (below(size + 2)) & 0xffff, AVAIL + 2);
    for (let i = 0; i < size + 1; i++) side.buf.writeUInt16LE(below(8) === 0 ? below(65536) : below(size), AVAIL + 4 + 2 * i);
    for (let k = USED; k < USED + 6 + 8 * size + 2 && k < DATA; k++) side.buf[k] = below(256);
    const features = (below(2) ? 1n << 29n : 0n) | (below(4) ? 1n << 28n : 0n);
    const t0 = performance.now();
    try {
      const ring = (off) => (below(32) === 0 ? addr() : side.dma + BigInt(off));
      const vq = new VirtQueue(side.bus, { size, desc: ring(DESC), avail: ring(AVAIL), used: ring(USED), features });
      const cap = 2 * size + 8;
      for (let k = 0; k < cap; k++) {
        const e = vq.pop();
        if (e === null) break;
        out.pops++;
        if (below(2)) vq.readOut(e, below(64), scratch, 0, Math.min(scratch.length, e.outBytes));
        if (below(2)) vq.writeIn(e, below(64), scratch, 0, Math.min(scratch.length, below(e.inBytes + 1)));
        if (below(3)) vq.push(e.index, below(5000));
        if (below(2)) vq.notify();
        if (below(4) === 0) vq.setNotification(below(2) === 1);
        if (below(8) === 0) vq.isEmpty();
      }
      vq.shouldNotify();
      if (vq.broken) {
        out.broken++;
        const k = vq.error.replace(/0x[0-9a-f]+|\d+/g, 'N');
        out.reasons[k] = (out.reasons[k] || 0) + 1;
      }
    } catch (e) {
      process.stderr.write('iteration ' + it + ' (seed ' + seed + ') threw: ' + (e && e.stack) + '\n');
      process.exit(3);
    }
    const ms = performance.now() - t0;
    if (ms > out.maxMs) out.maxMs = ms;
    out.iterations++;
  }
  for (const side of sides) { dma_free_coherent(side.dev, AREA, side.cpu, side.dma); side.dev.destroy(); }
  m.destroy();
  process.stdout.write(JSON.stringify(out));
}
`;
