// The pool of struct dma_debug_entry (kernel/dma/debug.c: dma_debug_init, dma_debug_create_entries,
// dma_entry_alloc, dma_entry_free). One pool per machine, as the kernel has one: every device's
// tracker takes its entries from it. `dma_debug_entries=` (the machine's dmaDebugEntries) sets the
// preallocation; past it the pool grows a page of entries at a time from the machine's own page
// allocator (GFP_ATOMIC), and when that page cannot be had DMA-API debugging turns itself off
// ("debugging out of memory - disabling"), for every device, as global_disable does.
//
// The preallocation is not taken from the machine's RAM: a default pool is 7 MiB, larger than most
// model machines, and the kernel takes it at boot before any driver runs. The pages it grows by are
// the machine's, held until the machine is destroyed (the kernel never gives them back).

import { GFP_ATOMIC, PAGE_SIZE, __GFP_ZERO } from '../mm/gfp';
import type { Page } from '../mm/page';
import { onMachineDestroy } from '../mm/machine-teardown';

/** PREALLOC_DMA_DEBUG_ENTRIES: the default of dma_debug_entries=. */
export const PREALLOC_DMA_DEBUG_ENTRIES = 1 << 16;
/**
 * sizeof(struct dma_debug_entry) on x86-64 with CONFIG_STACKTRACE (Linux 6.17): the list head, the
 * device, dev_addr, paddr, size, five ints and five saved return addresses.
 */
export const DMA_DEBUG_ENTRY_SIZE = 112;
/** DMA_DEBUG_DYNAMIC_ENTRIES: how many entries one page holds (what the pool grows by). */
export const DMA_DEBUG_DYNAMIC_ENTRIES = Math.floor(PAGE_SIZE / DMA_DEBUG_ENTRY_SIZE);

/** What the pool needs of its machine: a page allocator, somewhere to warn, and a teardown hook. */
export interface DebugPoolHost {
  alloc_pages(gfp: number, order: number): Page | null;
  __free_pages(page: Page, order: number): void;
  warn(message: string): void;
}

/** The debugfs counters of the pool (/sys/kernel/debug/dma-api/). */
export interface DmaDebugPoolStats {
  /** nr_total_entries: entries the pool holds, free or in use. */
  readonly nr_total_entries: number;
  /** num_free_entries. */
  readonly num_free_entries: number;
  /** min_free_entries: the lowest num_free_entries has been. */
  readonly min_free_entries: number;
  /** disabled: set for good when the pool could not grow. */
  readonly disabled: boolean;
}

export class DmaDebugPool {
  readonly #host: DebugPoolHost | null;
  /** nr_prealloc_entries: what dma_debug_entries= asked for (growth messages count in its units). */
  readonly #prealloc: number;
  #total: number;
  #free: number;
  #minFree: number;
  #disabled = false;
  /** Pages the pool grew by, freed when the machine goes. */
  readonly #pages: Page[] = [];

  /**
   * dma_debug_init: preallocate whole pages' worth of `prealloc` entries. Without a host (a tracker
   * made on its own) growth takes host memory and never fails.
   */
  constructor(prealloc: number, host: DebugPoolHost | null) {
    this.#host = host;
    this.#prealloc = prealloc;
    this.#total = Math.ceil(prealloc / DMA_DEBUG_DYNAMIC_ENTRIES) * DMA_DEBUG_DYNAMIC_ENTRIES;
    this.#free = this.#total;
    this.#minFree = this.#free;
    if (this.#total === 0) this.#disable('debugging out of memory error - disabled');
  }

  /** global_disable: once set, every tracker of the machine stops tracking and checking. */
  get disabled(): boolean {
    return this.#disabled;
  }

  stats(): DmaDebugPoolStats {
    return { nr_total_entries: this.#total, num_free_entries: this.#free, min_free_entries: this.#minFree, disabled: this.#disabled };
  }

  /**
   * dma_entry_alloc: one entry, growing by a page when none is free. Returns false (and the pool
   * is disabled) when it could not grow; `onTick` hears __dma_entry_alloc_check_leak's message each
   * time the pool grows past a multiple of the preallocation.
   */
  alloc(onTick: (message: string) => void): boolean {
    if (this.#disabled) return false;
    let grown = false;
    if (this.#free === 0) {
      if (!this.#grow()) {
        this.#disable('debugging out of memory - disabling');
        return false;
      }
      grown = true;
    }
    this.#free--;
    if (this.#free < this.#minFree) this.#minFree = this.#free;
    if (grown && this.#total % this.#prealloc < DMA_DEBUG_DYNAMIC_ENTRIES) {
      onTick(`dma_debug_entry pool grown to ${this.#total} (${Math.floor(this.#total / this.#prealloc)}00%)`);
    }
    return true;
  }

  /** dma_entry_free. */
  free(count = 1): void {
    this.#free = Math.min(this.#total, this.#free + count);
  }

  /** The machine is going: give back the pages the pool grew by. */
  release(): void {
    const host = this.#host;
    if (host === null) return;
    for (const page of this.#pages.splice(0)) host.__free_pages(page, 0);
  }

  /** dma_debug_create_entries(GFP_ATOMIC): one zeroed page of entries. */
  #grow(): boolean {
    if (this.#host !== null) {
      const page = this.#host.alloc_pages(GFP_ATOMIC | __GFP_ZERO, 0);
      if (page === null) return false;
      this.#pages.push(page);
    }
    this.#total += DMA_DEBUG_DYNAMIC_ENTRIES;
    this.#free += DMA_DEBUG_DYNAMIC_ENTRIES;
    return true;
  }

  #disable(why: string): void {
    this.#disabled = true;
    this.#say(why);
  }

  #say(text: string): void {
    const message = `DMA-API: ${text}`;
    if (this.#host !== null) this.#host.warn(message);
    else process.emitWarning(message, { code: 'DMA_API_DEBUG' });
  }
}

/** The machine a pool serves: its page allocator and the preallocation it was booted with. */
export interface DebugPoolMachine extends DebugPoolHost {
  readonly dmaDebugEntries: number;
}

const pools = new WeakMap<object, DmaDebugPool>();

/** The machine's one pool, made at its first device; its pages go back when the machine is destroyed. */
export function dmaDebugPoolOf(machine: DebugPoolMachine): DmaDebugPool {
  let pool = pools.get(machine);
  if (pool === undefined) {
    const made = new DmaDebugPool(machine.dmaDebugEntries, machine);
    onMachineDestroy(machine, () => made.release());
    pools.set(machine, pool = made);
  }
  return pool;
}
