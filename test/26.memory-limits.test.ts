// Sizes are checked against what the machine can back before anything is populated: physical
// memory, the memory cgroup's limit (a real cgroup, with a real child process in it) and RLIMIT_AS
// fail at once with ENOMEM naming the figures, and nothing is left behind.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Machine } from '../lib/mm/machine';
import { native } from '../lib/native';
import { memoryLimits, resetMemoryBudget } from '../lib/os/memory-limits';
import { Region } from '../lib/os/region';
import { expectNoLeaks, fdCount } from './helpers/leaks';

const MiB = 2 ** 20;
const INDEX_JS = JSON.stringify(path.resolve(__dirname, '..', 'lib', 'index.js'));
/** Internal: the backing policy, called directly to stand for a caller whose size check counted on the pool. */
const BACKING_JS = JSON.stringify(path.resolve(__dirname, '..', 'lib', 'os', 'backing.js'));

interface Enomem extends Error {
  code: string;
  errno: number;
  syscall: string;
}
const enomem = (re: RegExp) => (e: Enomem) => e.code === 'ENOMEM' && e.errno === -12 && e.syscall === 'mmap' && re.test(e.message);

/** The memory cgroup (v1) directory of this process, or null. */
function ownMemoryCgroup(): string | null {
  const m = /^\d+:(?:[^:]*,)?memory(?:,[^:]*)?:(.*)$/m.exec(fs.readFileSync('/proc/self/cgroup', 'utf8'));
  if (m?.[1] === undefined) return null;
  const dir = `/sys/fs/cgroup/memory${m[1] === '/' ? '' : m[1]}`;
  return fs.existsSync(`${dir}/memory.limit_in_bytes`) ? dir : null;
}

describe('26 memory limits', function () {
  this.timeout(60000);
  expectNoLeaks();
  beforeEach(() => resetMemoryBudget());

  it('Region.allocate(2 ** 46) fails at once with ENOMEM naming MemTotal, and creates nothing', () => {
    const fds = fdCount();
    const total = memoryLimits().memTotal;
    assert.ok(total > 0);
    assert.throws(() => Region.allocate(2 ** 46), enomem(new RegExp(`Region\\.allocate\\(70368744177664\\) needs 70368744177664 bytes .*more than physical memory \\(MemTotal ${(total / MiB).toFixed(total % MiB === 0 ? 0 : 1)} MiB\\)`)));
    assert.throws(() => Region.allocate(2 ** 46, { hugepages: 'off' }), { code: 'ENOMEM' });
    assert.equal(fdCount(), fds);
  });

  it("a request above what is available now (but below MemTotal) is ENOMEM naming MemAvailable", function () {
    const l = memoryLimits();
    const bytes = Math.floor((l.memAvailable + l.hugetlbFree + l.memTotal) / 2 / MiB) * MiB;
    if (bytes >= l.memTotal || bytes <= l.memAvailable + l.hugetlbFree) this.skip();
    assert.throws(() => Region.allocate(bytes, { hugepages: 'off' }), enomem(/more than the memory available now \(MemAvailable/));
  });

  it('new Machine({ ramPerNode: 2 ** 40 }) and a huge cma_declare fail at once with ENOMEM; nothing is reserved', () => {
    assert.throws(() => new Machine({ ramPerNode: 2 ** 40 }), enomem(/new Machine\(\{ name: 'machine' \}\) RAM \(1 x 1099511627776 bytes\) needs 1099511627776 bytes .*MemTotal/));
    assert.throws(() => new Machine({ nodes: 64, ramPerNode: 2 ** 34, cmaSize: 0 }), { code: 'ENOMEM' });
    const m = new Machine({ ramPerNode: 4 * MiB, cmaSize: 0, emitWarnings: false });
    try {
      const segments = m.segments.length;
      assert.throws(() => m.cma_declare('huge', 2 ** 42, 0), enomem(/cma_declare\('huge', 4398046511104\)/));
      assert.equal(m.segments.length, segments);
    } finally {
      m.destroy();
    }
  });

  it('a growing resize() beyond physical memory is ENOMEM and leaves the region as it was', () => {
    using r = Region.allocate(4096, { hugepages: 'off' });
    r.view()[0] = 1;
    assert.throws(() => r.resize(2 ** 46), enomem(/resize\(70368744177664\)/));
    assert.equal(r.length, 4096);
    assert.equal(r.view()[0], 1);
  });

  it('RLIMIT_AS: a request larger than the address space left is ENOMEM naming the limit (child under prlimit --as)', function () {
    if (spawnSync('prlimit', ['--version']).status !== 0) this.skip();
    const limit = 4 * 1024 * MiB;
    const r = spawnSync('prlimit', [`--as=${limit}`, process.execPath, '-e', `
      const d = require(${INDEX_JS});
      try { d.Region.allocate(${limit}, { hugepages: 'off' }); console.log('allocated'); } catch (e) { console.log(e.code + ' ' + e.message); }`], { encoding: 'utf8' });
    assert.equal(r.signal, null, r.stderr);
    assert.match(r.stdout, new RegExp(`^ENOMEM .*more than RLIMIT_AS \\(${limit} = 4096 MiB, [\\d.]+ MiB of address space in use`), r.stderr);
  });

  it('memory cgroup: a child limited to 192 MiB gets ENOMEM naming memory.limit_in_bytes, is not OOM-killed, and still allocates below the limit', async function () {
    const parent = ownMemoryCgroup();
    if (parent === null || process.getuid?.() !== 0) {
      if (this.test) this.test.title += ' [skipped: needs root and the cgroup v1 memory controller]';
      this.skip();
    }
    const dir = `${parent}/dmamem-test-${process.pid}`;
    const limit = 192 * MiB;
    fs.mkdirSync(dir);
    try {
      fs.writeFileSync(`${dir}/memory.limit_in_bytes`, String(limit));
      const child = spawn(process.execPath, ['-e', `
        const d = require(${INDEX_JS});
        process.stdin.once('data', () => {
          const out = {};
          const small = d.Region.allocate(32 << 20, { hugepages: 'off' });
          small.view().fill(1);
          out.small = small.length;
          const tryIt = (f) => { try { f(); return 'allocated'; } catch (e) { return e.code + ' ' + e.message; } };
          out.above = tryIt(() => d.Region.allocate(512 << 20, { hugepages: 'off' }));
          out.nearLimit = tryIt(() => d.Region.allocate(180 << 20, { hugepages: 'off' }));
          out.machine = tryIt(() => new d.Machine({ ramPerNode: 256 << 20, cmaSize: 0 }));
          out.grow = tryIt(() => small.resize(300 << 20));
          // The pool emptied between a caller's size check and the hugetlb attempt (another process
          // took it): the fall-back to ordinary pages is checked again, never populated into an OOM kill.
          const free = d.hugepagePoolFree();
          const hog = free > 0 ? d.Region.allocate(free * 2097152, { hugepages: 'require' }) : null;
          out.fallback = tryIt(() => require(${BACKING_JS}).createBackedMemfd('dmamem:fallback', 256 << 20, 'auto'));
          hog?.close();
          small.close();
          process.stdout.write(JSON.stringify(out));
          process.stdin.destroy();
        });`], { stdio: ['pipe', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
      fs.writeFileSync(`${dir}/cgroup.procs`, String(child.pid));
      assert.equal(fs.readFileSync(`/proc/${child.pid}/cgroup`, 'utf8').match(/memory:(.*)/)?.[1], dir.replace('/sys/fs/cgroup/memory', ''));
      child.stdin.write('go\n');
      const { code, signal } = await exited;
      assert.equal(signal, null, `the child was killed by ${signal} (OOM?)\n${stdout}\n${stderr}\n${fs.readFileSync(`${dir}/memory.oom_control`, "utf8")}`);
      assert.equal(code, 0, stderr);
      const out = JSON.parse(stdout) as Record<string, string | number>;
      assert.equal(out.small, 32 * MiB, 'below the limit, allocation works');
      const named = new RegExp(`^ENOMEM .*more than the memory cgroup's limit \\(${dir}: memory\\.limit_in_bytes ${limit} = 192 MiB, [\\d.]+ MiB in use`);
      assert.match(String(out.above), named);
      assert.match(String(out.nearLimit), named, 'below the limit but above what is left in the cgroup');
      assert.match(String(out.machine), named);
      assert.match(String(out.grow), /^ENOMEM .*resize\(314572800\).*memory cgroup/);
      assert.match(String(out.fallback), /^ENOMEM ENOMEM: dmamem:fallback: 268435456 bytes on ordinary pages after the hugetlb pool fell short .*memory cgroup's limit/);
      assert.match(fs.readFileSync(`${dir}/memory.oom_control`, 'utf8'), /^oom_kill 0$/m, 'the OOM killer never ran in the cgroup');
    } finally {
      // Empty by now (the child exited); a cgroup directory is removed with rmdir.
      for (let i = 0; i < 50; i++) {
        try {
          fs.rmdirSync(dir);
          break;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EBUSY') throw err;
          await new Promise((r) => setTimeout(r, 20));
        }
      }
    }
    assert.equal(fs.existsSync(dir), false, 'the test cgroup was removed');
  });

  it('figures: MemTotal and MemAvailable from /proc/meminfo, no cgroup limit here unless one is set', () => {
    const l = memoryLimits();
    const meminfo = fs.readFileSync('/proc/meminfo', 'utf8');
    assert.equal(l.memTotal, Number(/^MemTotal:\s+(\d+)/m.exec(meminfo)![1]) * 1024);
    assert.ok(l.memAvailable > 0 && l.memAvailable <= l.memTotal);
    assert.equal(l.hugetlbFree % (2 * MiB), 0);
    if (l.cgroup !== null) assert.ok(l.cgroup.limit > 0 && l.cgroup.usage >= 0);
    assert.ok(native.pageSize > 0);
  });
});
