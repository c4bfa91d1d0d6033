/**
 * Writes a 4 x 4 sheet of camera-shake kernels (seeds S .. S+15) as a gray PNG, each kernel scaled to its
 * own maximum for display, with 2-pixel gaps.
 *
 *   node --conditions=latentdem-src --import tsx tools/kernel-sheet.ts OUT.png [--size 64] [--intensity 0.5] [--seed 0]
 */
import { tensor, writeImage } from '@latentdem/tensor';
import { motionKernelData } from 'latentdem';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return fallback;
  const v = Number(process.argv[i + 1]);
  if (!Number.isFinite(v)) throw new Error(`kernel-sheet: --${name} needs a number, got '${process.argv[i + 1]}'`);
  return v;
}

const out = process.argv[2];
if (!out || out.startsWith('--')) {
  process.stderr.write('usage: kernel-sheet.ts OUT.png [--size 64] [--intensity 0.5] [--seed 0]\n');
  process.exit(2);
}
const size = arg('size', 64); const intensity = arg('intensity', 0.5); const seed0 = arg('seed', 0);
const gap = 2; const grid = 4; const side = grid * size + (grid + 1) * gap;
const sheet = new Float32Array(side * side).fill(0.25);
for (let g = 0; g < grid * grid; g++) {
  const k = motionKernelData({ size, intensity, seed: seed0 + g });
  let max = 0; for (const v of k) max = Math.max(max, v);
  const oy = gap + Math.floor(g / grid) * (size + gap); const ox = gap + (g % grid) * (size + gap);
  for (let y = 0; y < size; y++) for (let x = 0; x < size; x++) sheet[(oy + y) * side + ox + x] = max > 0 ? k[y * size + x] / max : 0;
}
await writeImage(out, tensor(sheet, { shape: [1, side, side], backend: 'cpu' }));
process.stderr.write(`kernel-sheet: wrote ${out} (${grid * grid} kernels ${size}x${size}, intensity ${intensity}, seeds ${seed0}..${seed0 + grid * grid - 1})\n`);
