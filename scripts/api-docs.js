#!/usr/bin/env node
// Builds the API reference (TypeDoc, from the TSDoc comments) into docs/api/, grouped in five areas:
// real buffers, sharing, the kernel memory model, the DMA API, devices. What belongs where comes
// from the README's API index (test 44 keeps that index equal to the package's exports): each of
// its sections is given an area here, and one entry module per area re-exports its names from
// lib/index.ts. Warnings fail the build (a broken {@link}, a section no area claims).
// Run: npm run docs
'use strict';
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');

/** Areas, in the reference's order, and which README sections they take (first match wins). */
const AREAS = [
  { file: 'real-buffers', title: 'Real buffers', doc: 'Region, the arena, pagemap frames and what this machine offers.', match: /^Real buffers/ },
  { file: 'sharing', title: 'Sharing', doc: 'Channels between threads and processes (Region shares and futex waits are Region methods).', match: /^Channels/ },
  {
    file: 'memory-model', title: 'Kernel memory model', doc: 'The machine: struct page, gfp flags, the page allocator, vmalloc, kmalloc, CMA, user mappings, pinning.',
    match: /^(The machine|gfp flags|Kernel-named memory|kmalloc|Page references|Pinning user memory|CMA \(|User mappings)/,
  },
  {
    file: 'dma-api', title: 'DMA API', doc: 'kernel/dma and drivers/iommu: mapping, helpers, limits, swiotlb, scatterlists, pools, DMA-API debug, the simulated CPU cache of non-coherent devices and ownership checking, the IOMMU.',
    match: /^(DMA constants|Devices and dma_map_ops|The driver API|Generic helpers|Limits, dma_parms|swiotlb|Scatterlist helpers|Noncontiguous|DMA pools|Scatter-gather|DMA-API debug|Non-coherent devices|IOMMU|Two-step IOVA)/,
  },
  { file: 'devices', title: 'Devices', doc: 'The device side (bus mastering, PCI device models, edu) and the driver side (MMIO, interrupts, the PCI core).', match: /^(Devices:|Driver side:)/ },
];

/** The README's API index: [section title, value names, type names]. */
function apiIndex() {
  const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');
  const index = readme.slice(readme.indexOf('## API index'), readme.indexOf('\n## ', readme.indexOf('## API index') + 1));
  const sections = [];
  for (const line of index.split('\n')) {
    const head = /^- \*\*(.+?)\*\*(.*)$/.exec(line);
    const types = /^ {2}- types: (.*)$/.exec(line);
    const names = (text) => [...text.matchAll(/`([^`]+)`/g)].map((m) => m[1]).filter((n) => /^[A-Za-z_$][\w$]*$/.test(n));
    if (head) sections.push({ title: head[1], values: names(head[2].slice(head[2].indexOf(':') + 1)), types: [] });
    else if (types && sections.length > 0) sections[sections.length - 1].types.push(...names(types[1]));
  }
  return sections;
}

const entries = path.join(root, '.apidoc');
fs.rmSync(entries, { recursive: true, force: true });
fs.mkdirSync(entries);
const byArea = new Map(AREAS.map((a) => [a, { values: [], types: [] }]));
for (const s of apiIndex()) {
  const area = AREAS.find((a) => a.match.test(s.title));
  if (area === undefined) throw new Error(`api-docs: README section "${s.title}" belongs to no area: add it to AREAS in scripts/api-docs.js`);
  byArea.get(area).values.push(...s.values);
  byArea.get(area).types.push(...s.types);
}
for (const [area, { values, types }] of byArea) {
  const lines = [`/**\n * ${area.doc}\n * @module ${area.title}\n */`];
  if (values.length > 0) lines.push(`export { ${values.join(', ')} } from '../lib/index';`);
  if (types.length > 0) lines.push(`export type { ${types.join(', ')} } from '../lib/index';`);
  fs.writeFileSync(path.join(entries, `${area.file}.ts`), `${lines.join('\n')}\n`);
}
fs.writeFileSync(path.join(entries, 'tsconfig.json'), JSON.stringify({ extends: '../tsconfig.json', include: ['*.ts', '../lib/**/*.ts'], compilerOptions: { noEmit: true } }));
const typedoc = path.join(root, 'node_modules', 'typedoc', 'bin', 'typedoc');
try {
  execFileSync(process.execPath, [typedoc,
    '--tsconfig', path.join(entries, 'tsconfig.json'),
    ...AREAS.flatMap((a) => ['--entryPoints', path.join(entries, `${a.file}.ts`)]),
    '--out', path.join(root, 'docs', 'api'), '--name', 'dmamem', '--readme', 'none', '--disableSources',
    '--validation.notExported', 'false', '--treatWarningsAsErrors', '--logLevel', 'Warn',
  ], { cwd: root, stdio: 'inherit' });
} finally {
  fs.rmSync(entries, { recursive: true, force: true });
}
process.stdout.write('api-docs: docs/api/index.html\n');
