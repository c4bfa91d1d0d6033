import t from 'tap';
import { motionKernel, motionKernelData } from '../src/deblur/motionblur.js';
import { mnc } from '../src/deblur/metrics.js';

const stats = (k: Float32Array, n: number) => {
  let sum = 0, min = Infinity, max = 0, y0 = n, y1 = -1, x0 = n, x1 = -1;
  for (let y = 0; y < n; y++) for (let x = 0; x < n; x++) {
    const v = k[y * n + x]; sum += v; min = Math.min(min, v); max = Math.max(max, v);
    if (v > 0) { y0 = Math.min(y0, y); y1 = Math.max(y1, y); x0 = Math.min(x0, x); x1 = Math.max(x1, x); }
  }
  return { sum, min, max, extent: Math.max(y1 - y0 + 1, x1 - x0 + 1), box: [y0, y1, x0, x1] };
};

t.test('motionKernel: 64x64 default kernels are >= 0, sum to 1, finite and non-trivial for 40 seeds', async (t) => {
  for (let seed = 0; seed < 40; seed++) {
    const k = motionKernelData({ seed });
    t.equal(k.length, 64 * 64);
    const s = stats(k, 64);
    if (!(Math.abs(s.sum - 1) < 1e-5 && s.min >= 0 && s.max < 0.5 && s.extent >= 3 && k.every(Number.isFinite))) {
      t.fail(`seed ${seed}: sum ${s.sum}, min ${s.min}, max ${s.max}, extent ${s.extent}`);
    }
  }
  t.pass('all seeds valid');
});

t.test('motionKernel: the same seed gives the same kernel, different seeds differ (extents, MNC < 0.9)', async (t) => {
  t.same(motionKernelData({ seed: 7 }), motionKernelData({ seed: 7 }));
  const ks = Array.from({ length: 12 }, (_, s) => motionKernelData({ seed: 100 + s }));
  const extents = new Set(ks.map((k) => stats(k, 64).extent));
  t.ok(extents.size >= 5, `extents vary: ${[...extents].join(',')}`);
  let maxSim = 0;
  for (let i = 0; i < ks.length; i++) for (let j = i + 1; j < ks.length; j++) maxSim = Math.max(maxSim, mnc(ks[i], ks[j]));
  t.ok(maxSim < 0.9, `max pairwise MNC ${maxSim.toFixed(3)} < 0.9 (shift-invariant distinctness)`);
});

t.test('motionKernel: other sizes and intensities; tensor form; support inside the box', async (t) => {
  for (const size of [15, 32, 33, 128]) {
    const k = motionKernelData({ size, seed: 3 });
    const s = stats(k, size);
    t.equal(k.length, size * size);
    t.ok(Math.abs(s.sum - 1) < 1e-5 && s.min >= 0, `size ${size}: sum ${s.sum}`);
    t.ok(s.box[0] >= 0 && s.box[1] < size && s.box[2] >= 0 && s.box[3] < size, `size ${size}: support ${s.box}`);
  }
  const straight = stats(motionKernelData({ seed: 5, intensity: 0 }), 64);
  t.ok(Math.abs(straight.sum - 1) < 1e-5, 'intensity 0 valid');
  const kt = motionKernel({ size: 21, seed: 2, backend: 'cpu' });
  t.same(kt.shape, [21, 21]);
  t.same(await kt.data(), motionKernelData({ size: 21, seed: 2 }));
  kt.dispose();
  t.throws(() => motionKernelData({ intensity: 2 }), RangeError);
  t.throws(() => motionKernelData({ size: 0 }), RangeError);
});
