// The capabilities this process holds, read from /proc (no native code: `dmamem info` works
// without the addon).

import { readFileSync } from 'node:fs';

const CAP_SYS_ADMIN = 21;
let visible: boolean | null = null;

/** The effective capability mask of this process (CapEff in /proc/self/status), 0n if unreadable. */
export function effectiveCapabilities(): bigint {
  try {
    const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'));
    return m?.[1] ? BigInt(`0x${m[1]}`) : 0n;
  } catch {
    return 0n;
  }
}

/**
 * Whether pagemap shows real PFNs to this process (CAP_SYS_ADMIN since Linux 4.0). Decided once.
 * @example if (!pfnVisible()) console.log('run as root to see physical addresses')
 */
export function pfnVisible(): boolean {
  if (visible === null) visible = (effectiveCapabilities() & (1n << BigInt(CAP_SYS_ADMIN))) !== 0n;
  return visible;
}
