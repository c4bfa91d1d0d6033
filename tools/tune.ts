/**
 * `npm run tune`: times the webgpu backend's GEMM tiles and conv2d algorithms on this adapter and caches the
 * choice (packages/tensor/src/backends/webgpu/tuning.ts). Run it on an idle machine; later processes use it.
 */
import { loadavg } from 'node:os';
import { tuneWebGpu } from '@latentdem/tensor';

const load0 = loadavg()[0];
const { path } = await tuneWebGpu({ runs: Number(process.env.TUNE_RUNS ?? 3), log: (l) => process.stderr.write(l + '\n') });
process.stderr.write(`tune: load average ${load0.toFixed(2)} -> ${loadavg()[0].toFixed(2)}; ${path ? `wrote ${path}` : 'not saved'}\n`);
process.exit(0);
