// Root hooks for the whole suite: the default machine is torn down at the end, and no machine a
// test file created may outlive the run (each file also checks its own mappings and fds).

import assert from 'node:assert/strict';
import { destroyDefaultMachine } from '../lib/mm/default';
import { liveMachines } from '../lib/mm/registry';

export const mochaHooks = {
  afterAll(): void {
    destroyDefaultMachine();
    const left = liveMachines().map((m) => m.name);
    assert.deepEqual(left, [], `machines left alive by the tests: ${left.join(', ')}`);
  },
};
