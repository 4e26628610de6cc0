// The embedded default machine: created on first use with sensible sizes and reused after, so a
// newcomer can call the kernel API without configuring anything.

import { Machine, type MachineOptions } from './machine';

/** What defaultMachine() builds: one node, 64 MiB of RAM, a 64 MiB default CMA area (hugetlb when the pool has room). */
export const DEFAULT_MACHINE_OPTIONS: Readonly<MachineOptions> = Object.freeze({
  name: 'default',
  nodes: 1,
  ramPerNode: 64 * 1024 * 1024,
  cmaSize: 64 * 1024 * 1024,
  hugepages: 'auto',
});

let instance: Machine | null = null;

/** The default machine, created on first use (and again after it was destroyed). */
export function defaultMachine(): Machine {
  if (instance === null || instance.isDestroyed) instance = new Machine(DEFAULT_MACHINE_OPTIONS);
  return instance;
}

/** Destroys the default machine if it exists (tests and short-lived tools call this at the end). */
export function destroyDefaultMachine(): void {
  instance?.destroy();
  instance = null;
}
