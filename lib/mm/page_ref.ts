// Page references (include/linux/page_ref.h, mm.h): get_page, put_page and page_ref_count on the
// head page of an allocation. The last reference frees the allocation, and __free_pages only drops
// a reference while others remain (machine.ts), as the kernel's ___free_pages does.

import { Machine } from './machine';
import { Page, pageState } from './page';
import { getUserPage, isUserPage, putUserPage } from './gup';
import { describeValue } from './validate';

const ps = pageState();

function checkAllocatedHead(fn: string, page: unknown): Page {
  if (!(page instanceof Page)) throw new TypeError(`${fn}: Expected a struct page (Page) for page but received ${describeValue(page)}`);
  (page.machine as Machine).assertAlive();
  if (page.refcount <= 0) throw new Error(`kernel BUG at include/linux/mm.h: ${fn}: page 0x${page.pfn.toString(16)} has no reference (refcount ${page.refcount}): it is free, or not the head of an allocation`);
  return page;
}

/** page_ref_count: the page's reference count (0 for a free page). */
export function page_ref_count(page: Page): number {
  if (!(page instanceof Page)) throw new TypeError(`page_ref_count: Expected a struct page (Page) for page but received ${describeValue(page)}`);
  return page.refcount;
}

/** get_page: one more reference to an allocated page (a kernel BUG on a free page). */
export function get_page(page: Page): void {
  const p = checkAllocatedHead('get_page', page);
  if (isUserPage(p)) return getUserPage(p); // a user page's references keep its Region pinned
  ps.setRefcount(p, p.refcount + 1);
}

/**
 * put_page: drops a reference; the last one frees the allocation the page heads (its whole block,
 * as for a compound page).
 */
export function put_page(page: Page): void {
  const p = checkAllocatedHead('put_page', page);
  if (isUserPage(p)) return putUserPage(p); // a get_user_pages reference: never to the page allocator
  if (p.refcount > 1) {
    ps.setRefcount(p, p.refcount - 1);
    return;
  }
  if (p.allocOrder < 0) throw new Error(`kernel BUG at include/linux/mm.h: put_page: page 0x${p.pfn.toString(16)} heads no allocation of the page allocator`);
  (p.machine as Machine).__free_pages(p, p.allocOrder);
}
