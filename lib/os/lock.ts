// Run-time read-only fields: what TypeScript's `readonly` promises at compile time, kept at run time,
// so that plain JavaScript cannot rewrite a field the model computes addresses, counts or teardown from.

/** Makes each named own data property non-writable and non-configurable. */
export function lockFields<T extends object>(obj: T, ...keys: (keyof T & string)[]): void {
  for (const key of keys) Object.defineProperty(obj, key, { writable: false, configurable: false });
}

/** A frozen copy of a list, rebuilt only after the list changed (for getters over private arrays). */
export class FrozenList<T> {
  readonly #items: T[] = [];
  #view: readonly T[] | null = null;

  push(item: T): void {
    this.#items.push(item);
    this.#view = null;
  }

  /** The live items, for the owner's own iteration. */
  get items(): readonly T[] {
    return this.#items;
  }

  /** What callers get: a frozen snapshot. */
  get view(): readonly T[] {
    if (this.#view === null) this.#view = Object.freeze(this.#items.slice());
    return this.#view;
  }
}
