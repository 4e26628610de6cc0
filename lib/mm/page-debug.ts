// Debugging of the page allocators: page poisoning (mm/page_poison.c: freed pages are filled with
// PAGE_POISON and checked when handed out again) and the teardown report of what is still allocated.

import type { Segment } from './segment';
import type { VmallocArea } from './vmalloc';
import type { VmArea } from './vma';

/** PAGE_POISON (include/linux/poison.h): the byte freed pages are filled with. */
export const PAGE_POISON = 0xaa;

const PAGE_SIZE = 4096;
/** One page of PAGE_POISON, compared against with Buffer#compare (memcmp, no loop in JS). */
const poisonPage = Buffer.alloc(PAGE_SIZE, PAGE_POISON);
/** How many list items a teardown report names per kind before "and N more". */
const REPORT_ITEMS = 8;

const hex = (n: number): string => `0x${n.toString(16)}`;

/** kernel_poison_pages: fills [offset, offset+length) of a segment's bytes with PAGE_POISON. */
export function poisonPages(bytes: Uint8Array, offset: number, length: number): void {
  bytes.fill(PAGE_POISON, offset, offset + length);
}

/**
 * check_poison_mem over pages [pfn, pfn+count) of a segment starting at startPfn: null when all
 * bytes still hold PAGE_POISON, else the report for the first corrupted page ("pagealloc: memory
 * corruption", or "single bit error" for one flipped bit), with the differing range and its bytes.
 */
export function pageCorruption(bytes: Uint8Array, startPfn: number, pfn: number, count: number): string | null {
  for (let i = 0; i < count; i++) {
    const off = (pfn + i - startPfn) * PAGE_SIZE;
    if (poisonPage.compare(bytes, off, off + PAGE_SIZE) === 0) continue;
    let first = off;
    while (bytes[first] === PAGE_POISON) first++;
    let last = off + PAGE_SIZE - 1;
    while (bytes[last] === PAGE_POISON) last--;
    const flipped = (bytes[first]! ^ PAGE_POISON);
    const single = first === last && (flipped & (flipped - 1)) === 0;
    const shown = Array.from(bytes.subarray(first, Math.min(last + 1, first + 32)), (b) => b.toString(16).padStart(2, '0')).join(' ');
    const more = last + 1 - first > 32 ? ' ...' : '';
    return `pagealloc: ${single ? 'single bit error' : 'memory corruption'}: pfn ${hex(pfn + i)} bytes ${hex(first - off)}..${hex(last - off)} ` +
      `were written after the page was freed (expected PAGE_POISON 0xaa): ${shown}${more}`;
  }
  return null;
}

/** "3 buddy blocks (a, b, c)" with at most REPORT_ITEMS named. */
function listed(count: number, what: string, items: string[]): string {
  const named = items.slice(0, REPORT_ITEMS).join(', ');
  const rest = items.length > REPORT_ITEMS ? `, and ${items.length - REPORT_ITEMS} more` : '';
  return `${count} ${what}${count === 1 ? '' : 's'} (${named}${rest})`;
}

/**
 * What a machine still has allocated or mapped at teardown, as one WARN-style line, or null when
 * nothing: buddy blocks (heads of allocated blocks), CMA pages handed out (as runs), vmalloc /
 * vmap areas and VMAs.
 */
export function leakReport(name: string, segments: readonly Segment[], areas: readonly VmallocArea[], vmas: readonly VmArea[]): string | null {
  const blocks: string[] = [];
  const runs: string[] = [];
  let cmaPages = 0;
  const user: string[] = [];
  for (const seg of segments) {
    if (seg.kind === 'user') {
      // pin_user_pages / get_user_pages references not released (a user page's own is its mapping's).
      let held = 0;
      for (const page of seg.createdPages()) if (page.refcount > 1) held++;
      if (held > 0) user.push(`${held} user page${held === 1 ? '' : 's'} still referenced (pinned or got) in ${seg.name}`);
      continue;
    }
    let runStart = -1;
    let runEnd = -1;
    const flush = (): void => {
      if (runStart >= 0) runs.push(`pfn ${hex(runStart)} x${runEnd - runStart} in ${seg.name}`);
      runStart = -1;
    };
    for (const page of seg.createdPages()) {
      if (seg.kind === 'ram') {
        if (page.allocOrder >= 0) blocks.push(`pfn ${hex(page.pfn)} order ${page.allocOrder}`);
      } else if (seg.kind === 'cma' && page.refcount > 0) {
        cmaPages++;
        if (page.pfn !== runEnd) flush();
        if (runStart < 0) runStart = page.pfn;
        runEnd = page.pfn + 1;
      }
    }
    flush();
  }
  const live = vmas.filter((v) => !v.isUnmapped);
  if (blocks.length + runs.length + areas.length + live.length + user.length === 0) return null;
  const parts: string[] = [...user];
  if (blocks.length > 0) parts.push(listed(blocks.length, 'buddy block', blocks));
  if (runs.length > 0) parts.push(`${cmaPages} CMA page${cmaPages === 1 ? '' : 's'} in ${listed(runs.length, 'run', runs)}`);
  if (areas.length > 0) parts.push(listed(areas.length, 'vmalloc area', areas.map((a) => `${hex(a.addr)} ${a.size} bytes${a.ownsPages ? '' : ' vmap'}`)));
  if (live.length > 0) parts.push(listed(live.length, 'VMA', live.map((v) => `${hex(v.vm_start)} ${v.length} bytes, ${v.mappedPages()} pages mapped`)));
  return `WARNING: mm: ${name} destroyed with memory still allocated or mapped: ${parts.join('; ')}`;
}
