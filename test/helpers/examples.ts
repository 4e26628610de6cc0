// What each runnable example in examples/ prints when it works: test 73 runs them from this
// checkout, test 92 compiles them in a fresh project against the installed package and runs them
// on both Node versions.

/** What each example must print (an example added to the folder without a line here fails). */
export const EXAMPLE_OUTPUT: Readonly<Record<string, RegExp>> = {
  'hugepage-buffer.js': /^backing (hugetlb-2M|thp|4k) \(.+\)\naddress 0x[0-9a-f]+, 4194304 bytes, first frame (0x[0-9a-f]+|hidden .*)\nsum of bytes 4194304\n$/,
  'share-worker-and-child.js': /^ok: worker wrote 0xa0, child wrote 0xa1\n$/,
  'dma-quickstart.js': /^iova 0x([0-9a-f]+) -> phys 0x([0-9a-f]+) \(page phys 0x\2\)\ndma_common_mmap 0; byte written through the VMA, read through the kernel address: 42\n$/,
  'channel.js': /^ok: sent 20000 records, the child received 20000 \(checksum equal\)\n$/,
};

