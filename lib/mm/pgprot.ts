// pgprot_t as x86-64 page-table bits: what a mapping's PTEs would say, including the cache mode that
// dma_pgprot chooses. Userspace cannot change the caching of its pages, so the cache mode is recorded
// on the VMA (and shown) rather than applied.

export const _PAGE_PRESENT = 0x001;
export const _PAGE_RW = 0x002;
export const _PAGE_USER = 0x004;
export const _PAGE_PWT = 0x008;
export const _PAGE_PCD = 0x010;
export const _PAGE_ACCESSED = 0x020;
const _PAGE_CACHE_MASK = _PAGE_PWT | _PAGE_PCD;

export const PAGE_SHARED = _PAGE_PRESENT | _PAGE_RW | _PAGE_USER | _PAGE_ACCESSED;
export const PAGE_READONLY = _PAGE_PRESENT | _PAGE_USER | _PAGE_ACCESSED;

/** UC- (uncached, overridable by MTRR): the x86 pgprot_noncached. */
export function pgprot_noncached(prot: number): number {
  return (prot & ~_PAGE_CACHE_MASK) | _PAGE_PCD;
}

/** WC through PAT entry 1, as Linux programs the PAT. */
export function pgprot_writecombine(prot: number): number {
  return (prot & ~_PAGE_CACHE_MASK) | _PAGE_PWT;
}

/** pgprot_dmacoherent defaults to pgprot_noncached. */
export function pgprot_dmacoherent(prot: number): number {
  return pgprot_noncached(prot);
}

export type CacheMode = 'WB' | 'WC' | 'UC-' | 'UC';

/** The cache mode the PTE bits select with Linux's PAT layout. */
export function pgprot_cachemode(prot: number): CacheMode {
  switch (prot & _PAGE_CACHE_MASK) {
    case 0: return 'WB';
    case _PAGE_PWT: return 'WC';
    case _PAGE_PCD: return 'UC-';
    default: return 'UC';
  }
}
