// createBackedMemfd maps with MAP_FIXED only over dmamem's own reservations: an address of node's
// code, of a JS heap page or of nothing is refused before any side effect (no memfd, no mapping).

import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { createBackedMemfd } from '../lib/os/backing';
import { native } from '../lib/native';
import { expectNoLeaks, fdCount } from './helpers/leaks';

const PAGE = 4096;

/** The first executable mapping of the node binary itself (what the reproducer overwrote). */
function nodeCodeAddress(): number {
  const line = fs.readFileSync('/proc/self/maps', 'utf8').split('\n').find((l) => l.split(/\s+/)[1] === 'r-xp' && l.endsWith(process.execPath));
  assert.ok(line, 'node has an r-xp mapping of its binary');
  return Number.parseInt(line.split('-')[0]!, 16);
}

describe('27 createBackedMemfd fixedAddress', () => {
  expectNoLeaks();

  it("refuses node's own code pages, a JS heap address and an unmapped address, before any side effect", () => {
    const heap = native.addressOf(new ArrayBuffer(64 * PAGE));
    const unmapped = native.reserve(PAGE, PAGE);
    native.munmap(unmapped, PAGE);
    const fds = fdCount();
    for (const addr of [nodeCodeAddress(), Math.ceil(heap / PAGE) * PAGE, unmapped]) {
      assert.throws(() => createBackedMemfd('x', PAGE, 'off', { fixedAddress: addr }), (e: Error) => e instanceof RangeError && /reserved by dmamem/.test(e.message));
    }
    assert.equal(fdCount(), fds, 'no memfd was created');
  });

  it('refuses a range that only starts inside a reservation', () => {
    const res = native.reserve(2 * PAGE, PAGE);
    try {
      assert.throws(() => createBackedMemfd('x', 2 * PAGE, 'off', { fixedAddress: res + PAGE }), RangeError);
      const m = createBackedMemfd('x', PAGE, 'off', { fixedAddress: res + PAGE });
      new Uint8Array(native.externalArrayBuffer(m.address, PAGE))[0] = 1;
      assert.equal(m.address, res + PAGE);
      native.close(m.fd);
    } finally {
      native.munmap(res, 2 * PAGE);
    }
  });

  it('maps over its own reservation (as Region.allocate({ align2M }) and Machine segments do)', () => {
    const res = native.reserve(4 * PAGE, 2 * 1024 * 1024);
    try {
      const m = createBackedMemfd('x', 4 * PAGE, 'off', { fixedAddress: res });
      assert.equal(m.address, res);
      native.close(m.fd);
    } finally {
      native.munmap(res, 4 * PAGE);
    }
  });
});
