// Example: a 4 MiB buffer on 2 MiB hugetlb pages when the pool has room (else THP or 4 KiB pages,
// and the reason), its virtual address and the physical frames behind it.
// Run: node dist/examples/hugepage-buffer.js

import { Region, PFN_HIDDEN, PFN_NOT_PRESENT } from '../lib/index';

using r = Region.allocate(4 << 20, { hugepages: 'auto', align2M: true });
const buf = r.view();
buf.fill(1); // pre-faulted already: a hugepage shortage was an error (or a fallback) at allocate
const pfn = r.physicalPages()[0]?.pfn ?? PFN_NOT_PRESENT;
const frame = pfn === PFN_HIDDEN ? 'hidden (needs CAP_SYS_ADMIN)' : pfn === PFN_NOT_PRESENT ? 'not present' : `0x${pfn.toString(16)}`;
process.stdout.write(`backing ${r.backing} (${r.backingReason})\n`);
process.stdout.write(`address 0x${r.address.toString(16)}, ${buf.length} bytes, first frame ${frame}\n`);
process.stdout.write(`sum of bytes ${buf.reduce((a, b) => a + b, 0)}\n`);
