// The DMA layer as the benchmarks use it, gathered in one object.

import '../lib/dma/device'; // installs Machine.prototype.createDevice
import * as constants from '../lib/dma/constants';
import * as mapping from '../lib/dma/mapping';
import * as helpers from '../lib/dma/ops_helpers';
import * as scatter from '../lib/dma/scatterlist';

export interface DmaLayer {
  mapping: typeof mapping;
  helpers: typeof helpers;
  scatter: typeof scatter;
  constants: typeof constants;
}

const layer: DmaLayer = { mapping, helpers, scatter, constants };

/** The DMA layer. */
export function loadDma(): DmaLayer {
  return layer;
}
