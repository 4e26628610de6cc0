// Deferred loading: modules a program may never need load on first use. onFirstUse for a module's
// own optional imports; deferRequires for lib/index.ts (what `import` and direct loads of the index
// get; `require('dmamem')` goes through lib/entry.ts): while it runs, its requires of the kernel
// model, the DMA layer, channels and devices return stand-ins that load the real module on the
// first property read, and the index's export list stays the plain, checked TypeScript one.

/**
 * A module loaded on the first call instead of at start-up, for modules a program may never need
 * (the loader is a closure so that `require` resolves relative to the caller).
 * @example const pagemap = onFirstUse(() => require('./pagemap') as typeof import('./pagemap')); pagemap().readPfns(...)
 */
export function onFirstUse<T>(load: () => T): () => T {
  let loaded: T | undefined;
  return () => (loaded ??= load());
}

/** A stand-in for a module's exports that loads it on first use. */
function deferred(load: () => object): object {
  let real: object | undefined;
  const get = (): object => (real ??= load());
  return new Proxy(Object.create(null) as object, {
    get: (_t, key) => Reflect.get(get(), key),
    has: (_t, key) => Reflect.has(get(), key),
    ownKeys: () => Reflect.ownKeys(get()),
    getOwnPropertyDescriptor: (_t, key) => {
      const d = Reflect.getOwnPropertyDescriptor(get(), key);
      return d === undefined ? undefined : { ...d, configurable: true };
    },
  });
}

/**
 * Makes `mod`'s requires of ids for which `lazy` is true return deferred stand-ins (CommonJS: the
 * module's local require calls mod.require); the first property read of any of them loads them all.
 * Returns the function that puts the real require back.
 * @example const restore = deferRequires(module, (id) => id.startsWith('./mm/')); ...; restore();
 */
export function deferRequires(mod: NodeModule, lazy: (id: string) => boolean): () => void {
  const original = mod.require;
  // The first use loads every deferred module, in the index's order: some extend others when they
  // load (lib/dma/device.ts adds Machine.prototype.createDevice), so they come and go together.
  const ids: string[] = [];
  const loadAll = (): void => {
    for (const other of ids) original.call(mod, other);
  };
  const replacement = function (this: unknown, id: string): unknown {
    if (!lazy(id)) return original.call(mod, id);
    ids.push(id);
    return deferred(() => {
      loadAll();
      return original.call(mod, id) as object;
    });
  };
  mod.require = Object.assign(replacement, original) as NodeRequire;
  return () => {
    mod.require = original;
  };
}
