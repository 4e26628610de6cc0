// The public OS layer ("real buffers"): wiring only.

export { Region } from './region';
export { PROTECTIONS } from './region-options';
export type { AllocateOptions, FromFdOptions, Protection, Advice, Seal, ReadOnlyShare } from './region-options';
export { createBackedMemfd, hugepagePoolFree, HUGE_2M, HUGEPAGE_POLICIES } from './backing';
export type { Backing, HugepagePolicy, BackingOptions, BackedMemfd } from './backing';
// ViewWindow and trackExternalMemory stay internal (lib/mm uses them): a ViewWindow over an
// arbitrary address would let a program write to memory that is not mapped (SIGSEGV).
export { trackedExternalMemory, viewAddress } from './views';
export {
  readPagemap, readPfns, PFN_NOT_PRESENT, PFN_HIDDEN, readKpageflags, hasKpageflag, pfnVisible, effectiveCapabilities,
  KPF_LOCKED, KPF_DIRTY, KPF_LRU, KPF_MMAP, KPF_ANON, KPF_SWAPBACKED, KPF_COMPOUND_HEAD, KPF_COMPOUND_TAIL,
  KPF_HUGE, KPF_UNEVICTABLE, KPF_NOPAGE, KPF_THP, KPF_ZERO_PAGE,
} from './pagemap';
export type { PageInfo } from './pagemap';
export { systemInfo, explainMissing, thpMode } from './sysinfo';
export type { SystemInfo, HugepagePool, NumaNode, MissingCapability } from './sysinfo';
export { isErrno, errnoError, DmamemError } from './errors';
export type { ErrnoError, DmamemErrorCode } from './errors';
