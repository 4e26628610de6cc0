// Real MAP_FIXED mappings of machine pages at chosen addresses: the one mechanism behind vmap,
// vmalloc and remap_pfn_range. Physically consecutive pages become one mmap call (per segment).

import { native, C } from '../native';
import { PAGE_SIZE } from './gfp';
import type { Machine } from './machine';
import type { Segment } from './segment';
import { HUGE_2M } from '../os/backing';

/** One 2 MiB huge page (the granule hugetlb memory is mapped in). */
const HUGE = HUGE_2M;

/** A run of `pages` physically consecutive pages starting at `pfn`, to be mapped at `va`. */
export interface Run {
  va: number;
  pfn: number;
  pages: number;
}

/** Coalesces a list of PFNs to be mapped back to back from `va` into runs. */
export function buildRuns(va: number, pfns: ArrayLike<number>): Run[] {
  const runs: Run[] = [];
  let cur: Run | null = null;
  for (let i = 0; i < pfns.length; i++) {
    const pfn = pfns[i]!;
    if (cur !== null && pfn === cur.pfn + cur.pages) {
      cur.pages++;
    } else {
      cur = { va: va + i * PAGE_SIZE, pfn, pages: 1 };
      runs.push(cur);
    }
  }
  return runs;
}

/** One real mapping made by mapRuns: [va, va+length) of `fd` from file offset `offset`. */
export interface Extent {
  va: number;
  length: number;
  fd: number;
  offset: number;
}

/** Where a mapping may spill past its range to map hugetlb pages whole (a VMA's guard zones). */
export interface SpillBounds {
  lo: number;
  hi: number;
  /**
   * The mappings already made in these bounds. A new piece may not overlap one unless it maps the
   * same file bytes at the same addresses (MAP_FIXED would silently replace other pages, or fail on
   * a hugetlb mapping it cannot split). Pieces mapped by this call are appended.
   */
  extents: Extent[];
}

/** Whether a planned piece would replace other bytes of an existing extent. */
function clobbers(extents: readonly Extent[], va: number, length: number, fd: number, offset: number): boolean {
  return extents.some((e) => va < e.va + e.length && e.va < va + length && (e.fd !== fd || e.va - e.offset !== va - offset));
}

/**
 * Maps the runs with MAP_FIXED | MAP_SHARED (or MAP_PRIVATE) of each segment's memfd.
 * Every run is checked before anything is mapped: returns -EINVAL, mapping nothing, when a run is
 * not memory of the machine, lies in a hugetlb segment and cannot be mapped in whole, congruent
 * huge pages within `spill`, or would replace other pages already mapped in `spill` (the reason
 * is WARNed). An OS failure undoes what this call mapped
 * and throws. Returns 0 on success.
 */
export function mapRuns(machine: Machine, runs: readonly Run[], prot: number, shared: boolean, spill: SpillBounds | null): number {
  const flags = (shared ? C.MAP_SHARED : C.MAP_PRIVATE) | C.MAP_FIXED;
  // Plan: one [addr, length, offset] triple per run piece, grouped by segment for batching.
  const groups: { seg: Segment; triples: number[] }[] = [];
  for (const run of runs) {
    let { va, pfn, pages } = run;
    while (pages > 0) {
      const seg = machine.segmentOfPfn(pfn);
      if (seg === null) {
        machine.warn(`remap: pfn 0x${pfn.toString(16)} is not memory of ${machine.name}`);
        return -22;
      }
      const n = Math.min(pages, seg.startPfn + seg.pages - pfn);
      let mapVa = va;
      let offset = (pfn - seg.startPfn) * PAGE_SIZE;
      let len = n * PAGE_SIZE;
      if (seg.mapGranule > PAGE_SIZE) {
        // Linux maps a hugetlb page only whole: VA and file offset must agree modulo 2 MiB, and the
        // mapping grows to whole huge pages, which must stay inside the caller's spill bounds.
        const head = offset % HUGE;
        if ((mapVa % HUGE) !== head) {
          machine.warn(`remap: ${seg.name} is hugetlb-backed: address 0x${mapVa.toString(16)} and physical 0x${(pfn * PAGE_SIZE).toString(16)} differ modulo 2 MiB, so its huge pages cannot be mapped there`);
          return -22;
        }
        mapVa -= head;
        offset -= head;
        len = Math.ceil((len + head) / HUGE) * HUGE;
        if (spill === null ? (mapVa !== va || len !== n * PAGE_SIZE) : (mapVa < spill.lo || mapVa + len > spill.hi)) {
          machine.warn(`remap: ${seg.name} is hugetlb-backed and can only be mapped in whole 2 MiB pages; ${n} pages at pfn 0x${pfn.toString(16)} would need more room`);
          return -22;
        }
      }
      if (spill !== null && clobbers(spill.extents, mapVa, len, seg.fd, offset)) {
        machine.warn(`remap: mapping ${seg.name} at 0x${mapVa.toString(16)} (${len} bytes) would replace other pages already mapped there (a hugetlb mapping covers whole 2 MiB pages)`);
        return -22;
      }
      const last = groups[groups.length - 1];
      if (last !== undefined && last.seg === seg) last.triples.push(mapVa, len, offset);
      else groups.push({ seg, triples: [mapVa, len, offset] });
      va += n * PAGE_SIZE;
      pfn += n;
      pages -= n;
    }
  }
  const done: number[] = [];
  try {
    for (const g of groups) {
      native.mapFixedBatch(g.seg.fd, prot, flags, Float64Array.from(g.triples));
      machine.counters.mmapCalls += g.triples.length / 3;
      done.push(...g.triples);
    }
  } catch (err) {
    // Undo: the whole extents, so hugetlb mappings are replaced whole too.
    for (let i = 0; i < done.length; i += 3) zapRange(done[i]!, done[i + 1]!);
    throw err;
  }
  if (spill !== null) {
    for (const g of groups) {
      for (let i = 0; i < g.triples.length; i += 3) spill.extents.push({ va: g.triples[i]!, length: g.triples[i + 1]!, fd: g.seg.fd, offset: g.triples[i + 2]! });
    }
  }
  return 0;
}

/** Replaces [addr, addr+length) with a PROT_NONE reservation again (one syscall). */
export function zapRange(addr: number, length: number): void {
  native.reserveFixed(addr, length);
}
