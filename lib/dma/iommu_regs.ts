// The IOMMU's register block, shared between the driver side (the IOMMU domain) and the hardware
// side (a device's bus engine, inline or in a worker): one SharedArrayBuffer of Int32 registers.
// A leaf module: the layout and the VT-d constants only, so that lib/devices reads it without cycles.

/** Int32 index of the invalidation generation: bumped by every IOTLB invalidation (Atomics.add). */
export const REG_GEN = 0;
/** Int32 index of the second-level page-table pointer: the root table's PFN, 0 when there is none. */
export const REG_ROOT_PFN = 1;
/** Int32 index of the next fault sequence number (the hardware side takes one per fault). */
export const REG_FAULT_HEAD = 2;
/** Int32 index of the primary-fault-overflow count: faults dropped because every slot was full. */
export const REG_FAULT_OVERFLOW = 3;
/** Int32 index of the domain's address width in bits (fixed at creation). */
export const REG_APERTURE_BITS = 4;
/** Int32 index of the first fault-recording slot. */
export const REG_FAULT_BASE = 16;
/** Fault-recording slots (VT-d has a small fixed number of FRCD registers too). */
export const FAULT_SLOTS = 16;
/** Int32 words per slot: valid, flags, reason, source, iova low, iova high, and two spare. */
export const FAULT_SLOT_WORDS = 8;
/** Slot word offsets. `valid` is stored last by the hardware side and cleared by the driver side. */
export const F_VALID = 0;
export const F_FLAGS = 1;
export const F_REASON = 2;
export const F_SOURCE = 3;
export const F_IOVA_LO = 4;
export const F_IOVA_HI = 5;
/** Bytes of the register block. */
export const IOMMU_REGS_BYTES = (REG_FAULT_BASE + FAULT_SLOTS * FAULT_SLOT_WORDS) * 4;

// ---- VT-d second-level page-table entries (Intel VT-d spec, "Second-Level Paging Entries") ----

/** Read permission (bit 0). An entry with neither read nor write is not present to the hardware. */
export const VTD_PTE_READ = 0x1;
/** Write permission (bit 1). */
export const VTD_PTE_WRITE = 0x2;
/** Page size (bit 7): at level 2 the entry maps a 2 MiB page instead of pointing to a table. */
export const VTD_PTE_LARGE = 0x80;
/** Snoop behaviour (bit 11), set for IOMMU_CACHE mappings. */
export const VTD_PTE_SNP = 0x800;
/**
 * Bit 9 is ignored by the hardware; the driver side marks every entry it wrote with it, so that a
 * mapping made with neither read nor write (a PTE the hardware sees as not present) still reads as
 * mapped to iommu_map / iommu_unmap, as the kernel's page-table code would see it.
 */
export const SW_PTE_MAPPED = 0x200;
/** The IOMMU_* prot of a leaf is kept in the ignored high bits 52..58 (bits 20..26 of the high word). */
export const SW_PROT_SHIFT_HI = 20;
/** PTEs per table: 4 KiB of 8-byte entries, 9 address bits per level. */
export const PTES_PER_TABLE = 512;
/** Levels of the 4-level (48-bit) second-level table. */
export const VTD_LEVELS = 4;

// ---- DMAR fault reasons (drivers/iommu/intel/dmar.c, dma_remap_fault_reasons) ----

/** The hardware walked a next-table pointer that is not memory. */
export const DMAR_REASON_NEXT_PTR_INVALID = 0x07;
/** The IOVA is beyond the domain's address width. */
export const DMAR_REASON_BEYOND_MGAW = 0x04;
/** A write met an entry without write permission (or no entry at all). */
export const DMAR_REASON_PTE_WRITE = 0x05;
/** A read met an entry without read permission (or no entry at all). */
export const DMAR_REASON_PTE_READ = 0x06;

/** The text the kernel prints for a fault reason. */
export function dmar_fault_reason_text(reason: number): string {
  switch (reason) {
    case DMAR_REASON_BEYOND_MGAW: return 'Access beyond MGAW';
    case DMAR_REASON_PTE_WRITE: return 'PTE Write access is not set';
    case DMAR_REASON_PTE_READ: return 'PTE Read access is not set';
    case DMAR_REASON_NEXT_PTR_INVALID: return 'Next page table ptr is invalid';
    default: return 'Unknown';
  }
}
