// Loads the DMA layer lazily, so that the benchmarks of lib/os and lib/mm still run while lib/dma is
// incomplete (a missing module makes the DMA rows report themselves skipped instead of failing).

import type * as Mapping from '../lib/dma/mapping';
import type * as Helpers from '../lib/dma/ops_helpers';
import type * as Scatter from '../lib/dma/scatterlist';
import type * as Constants from '../lib/dma/constants';

export interface DmaLayer {
  mapping: typeof Mapping;
  helpers: typeof Helpers;
  scatter: typeof Scatter;
  constants: typeof Constants;
}

let cached: DmaLayer | null | undefined;
let why = '';

/** The DMA layer, or null (with the reason in loadDmaError()) when it cannot be loaded yet. */
export function loadDma(): DmaLayer | null {
  if (cached !== undefined) return cached;
  try {
    /* eslint-disable @typescript-eslint/no-require-imports */
    require('../lib/dma/device'); // installs Machine.prototype.createDevice
    cached = {
      mapping: require('../lib/dma/mapping') as typeof Mapping,
      helpers: require('../lib/dma/ops_helpers') as typeof Helpers,
      scatter: require('../lib/dma/scatterlist') as typeof Scatter,
      constants: require('../lib/dma/constants') as typeof Constants,
    };
    /* eslint-enable @typescript-eslint/no-require-imports */
  } catch (err) {
    why = err instanceof Error ? err.message.split('\n')[0]! : String(err);
    cached = null;
  }
  return cached;
}

/** Why loadDma() returned null. */
export function loadDmaError(): string {
  return why;
}
