// `npm test` runs mocha under test/watchdog/run.ts: a test stuck in a synchronous endless loop (which
// mocha's timeout cannot stop) is named, its whole process group killed, and the run fails.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const watchdog = path.resolve(__dirname, 'watchdog', 'run.js');
const fixtures = path.resolve(__dirname, 'fixtures');

/** Alive and not a zombie (a killed orphan may linger as a zombie until init reaps it). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw e;
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

/** If the watchdog failed, the spinning mocha and its grandchild are still there: kill their group. */
function killLeftovers(pidFile: string): void {
  let pid: number;
  try {
    pid = Number(fs.readFileSync(pidFile, 'utf8'));
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const pgrp = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]);
    if (pgrp > 1 && pgrp !== process.pid) process.kill(-pgrp, 'SIGKILL');
  } catch {
    // gone already: the normal case
  }
}

describe('91 the test watchdog', function () {
  this.timeout(120000);

  it('names a test stuck in a synchronous loop, kills its process group and fails the run', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmamem-watchdog-'));
    const pidFile = path.join(dir, 'grandchild.pid');
    try {
      const r = spawnSync(process.execPath, [watchdog, '--no-config', path.join(fixtures, 'hang.spec.js')], {
        encoding: 'utf8',
        // The bound on the watchdog itself: if it does not act, spawnSync kills it and r.error is set.
        timeout: 90000,
        killSignal: 'SIGKILL',
        env: { ...process.env, MOCHA_WATCHDOG_TEST_S: '3', MOCHA_WATCHDOG_TOTAL_S: '60', HANG_FIXTURE_PID_FILE: pidFile },
      });
      const out = r.stdout + r.stderr;
      assert.equal(r.error, undefined, `the watchdog did not end the run by itself\n${out}`);
      assert.equal(r.signal, null, out);
      assert.equal(r.status, 124, out);
      assert.match(r.stderr, /watchdog: hung for more than 3 s in: hang fixture then spins forever/);
      assert.match(r.stdout, /passes first/, 'the spec reporter still prints');
      assert.doesNotMatch(out, /is never reached/);
      const pid = Number(fs.readFileSync(pidFile, 'utf8'));
      assert.ok(pid > 0);
      // SIGKILL to the group is delivered before the watchdog exits; give init a moment to reap.
      for (let i = 0; i < 50 && alive(pid); i++) spawnSync('sleep', ['0.1']);
      assert.equal(alive(pid), false, `the test's own child ${pid} outlived the run`);
    } finally {
      killLeftovers(pidFile);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('passes a clean run through: mocha\'s exit status and its summary', () => {
    const r = spawnSync(process.execPath, [watchdog, '--no-config', '--grep', 'passes first', path.join(fixtures, 'hang.spec.js')], {
      encoding: 'utf8',
      timeout: 90000,
      env: { ...process.env, MOCHA_WATCHDOG_TEST_S: '30' },
    });
    assert.equal(r.signal, null, r.stderr);
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /1 passing/);
    assert.equal(r.stderr.includes('watchdog:'), false, r.stderr);
  });

  it('passes mocha\'s failure status through', () => {
    const r = spawnSync(process.execPath, [watchdog, '--no-config', '--grep', 'fails when asked to', path.join(fixtures, 'hang.spec.js')], {
      encoding: 'utf8',
      timeout: 90000,
      env: { ...process.env, MOCHA_WATCHDOG_TEST_S: '30', HANG_FIXTURE_FAIL: '1' },
    });
    assert.equal(r.signal, null, r.stderr);
    assert.equal(r.status, 1, r.stdout + r.stderr);
    assert.match(r.stdout, /1 failing/);
    assert.equal(r.stderr.includes('watchdog:'), false, r.stderr);
  });
});
