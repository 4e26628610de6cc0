// Teardown hooks of a machine: what upper layers attached to it (a PCI device and its worker
// thread) stops first when machine.destroy() runs, without lib/mm importing those layers.

const hooks = new WeakMap<object, Set<() => void>>();

/** Runs `fn` at the start of `machine`'s destroy(); returns the function that unregisters it. */
export function onMachineDestroy(machine: object, fn: () => void): () => void {
  let set = hooks.get(machine);
  if (set === undefined) hooks.set(machine, set = new Set());
  set.add(fn);
  return () => { set.delete(fn); };
}

/** Called by Machine.destroy(): every hook once, in registration order; a throwing hook does not stop the others. */
export function runMachineTeardown(machine: object): unknown[] {
  const set = hooks.get(machine);
  if (set === undefined) return [];
  hooks.delete(machine);
  const errors: unknown[] = [];
  for (const fn of set) {
    try {
      fn();
    } catch (err) {
      errors.push(err);
    }
  }
  return errors;
}
