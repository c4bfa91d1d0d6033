import t from 'tap';
import { memory, ShapeError, tensor, type Tensor } from '@latentdem/tensor';
import { testBackends, close } from '../../tensor/test/helpers.js';
import { blindDeconvolveTV, deconvolveTV } from '../src/deblur/classical.js';
import { blurCircular } from '../src/deblur/hqs.js';
import { kernelMse, mnc, psnr } from '../src/deblur/metrics.js';

/** A piecewise-constant test image [c, n, n] in [0, 1]: a background, two rectangles and a disc, per channel. */
function cartoon(n: number, c = 3): Float32Array {
  const out = new Float32Array(c * n * n);
  for (let ch = 0; ch < c; ch++) for (let y = 0; y < n; y++) for (let x = 0; x < n; x++) {
    let v = 0.2 + 0.1 * ch;
    if (y >= n / 8 && y < n / 2 && x >= n / 8 && x < (5 * n) / 8) v = 0.8 - 0.2 * ch;
    if (y >= (5 * n) / 8 && y < (15 * n) / 16 && x >= n / 4 && x < n / 2) v = 0.55;
    if ((y - 0.65 * n) ** 2 + (x - 0.72 * n) ** 2 < (0.16 * n) ** 2) v = 0.95 - 0.3 * ch;
    out[(ch * n + y) * n + x] = v;
  }
  return out;
}

/** Deterministic zero-mean noise of std `sigma` (uniform, from an LCG). */
function noise(count: number, sigma: number, seed: number): Float32Array {
  const out = new Float32Array(count); let s = seed >>> 0 || 1;
  for (let i = 0; i < count; i++) { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; out[i] = sigma * Math.sqrt(12) * ((s >>> 8) / 16777216 - 0.5); }
  return out;
}

/** A diagonal line kernel of length `len` through the centre of a ks x ks box, slightly widened; sum 1. */
function lineKernel(ks: number, len: number): Float32Array {
  const k = new Float32Array(ks * ks); const c = ks >> 1;
  for (let i = 0; i < len; i++) {
    const y = c + Math.round((i - (len - 1) / 2) * 0.6); const x = c + i - ((len - 1) >> 1);
    k[y * ks + x] += 1; if (x + 1 < ks) k[y * ks + x + 1] += 0.5;
  }
  let s = 0; for (const v of k) s += v; return k.map((v) => v / s);
}

const backends = await testBackends();
const outputs = new Map<string, Float32Array>();

for (const backend of backends) {
  t.test(`deconvolveTV ${backend.name}: recovers a piecewise-constant image from a blurred noisy one`, async (t) => {
    const n = 64; const ks = 15;
    const xd = cartoon(n); const kd = lineKernel(ks, 11);
    const x = tensor(xd, { shape: [3, n, n], backend }); const k = tensor(kd, { shape: [ks, ks], backend });
    const y = blurCircular(x, k).add(tensor(noise(3 * n * n, 0.01, 7), { shape: [3, n, n], backend }));
    const yd = await y.data();
    const before = memory();
    const est = deconvolveTV(y, k, { lambda: 5e-4, iterations: 12 });
    const ani = deconvolveTV(y, k, { lambda: 5e-4, iterations: 12, isotropic: false });
    const after = memory();
    t.equal(after.tensors[backend.name] - before.tensors[backend.name], 2, 'only the two results stay alive (tidy)');
    t.same(est.shape, [3, n, n]);
    const e = Float32Array.from(await est.data());
    const gain = psnr(e, xd) - psnr(yd, xd);
    t.ok(gain > 5, `isotropic: PSNR ${psnr(e, xd).toFixed(2)} dB vs blurry ${psnr(yd, xd).toFixed(2)} dB (gain ${gain.toFixed(2)} > 5)`);
    const ga = psnr(await ani.data(), xd) - psnr(yd, xd);
    t.ok(ga > 5, `anisotropic: gain ${ga.toFixed(2)} dB > 5`);
    // The TV weight matters: a 100x larger weight flattens the image (much lower PSNR than the tuned one).
    const flat = deconvolveTV(y, k, { lambda: 5e-2, iterations: 12 });
    t.ok(psnr(await flat.data(), xd) < psnr(e, xd) - 2, 'an over-weighted TV term is worse');
    // Warm start (init) is accepted and converges to about the same image.
    const warm = deconvolveTV(y, k, { lambda: 5e-4, iterations: 12, init: est });
    t.ok(psnr(await warm.data(), xd) > psnr(e, xd) - 0.5, 'init = the previous result keeps the quality');
    outputs.set(backend.name, e);
    for (const z of [x, k, y, est, ani, flat, warm]) z.dispose();
  });
}

t.test('deconvolveTV: cpu and webgpu agree', { skip: backends.length < 2 ? 'no webgpu backend' : false }, async (t) => {
  const a = outputs.get('cpu')!; const b = outputs.get('webgpu')!;
  const c = close(b, a, 2e-3, 0);
  t.ok(c.ok, c.message);
});

t.test('blindDeconvolveTV: recovers a line kernel much better than the delta start', async (t) => {
  // webgpu when there is one (the evaluation's backend), else cpu.
  const backend = backends[backends.length - 1];
  const n = 64; const ks = 16;
  const xd = cartoon(n); const kd = lineKernel(ks, 9);
  const x = tensor(xd, { shape: [3, n, n], backend });
  const y = blurCircular(x, tensor(kd, { shape: [ks, ks], backend })).add(tensor(noise(3 * n * n, 0.005, 3), { shape: [3, n, n], backend }));
  const yd = await y.data();
  const before = memory();
  const { image, kernel } = await blindDeconvolveTV(y, {
    sigma: 0.005, kernelSize: ks, levels: 2, outer: [4, 3], lambdaStart: 0.02, lambdaEnd: 0.003, imageIterations: 8, kernelIterations: 15, final: { lambda: 2e-4 },
  });
  t.equal(memory().tensors[backend.name] - before.tensors[backend.name], 2, 'only image and kernel stay alive');
  t.same(kernel.shape, [ks, ks]); t.same(image.shape, [3, n, n]);
  const k = await kernel.data();
  let s = 0, mn = Infinity; for (const v of k) { s += v; mn = Math.min(mn, v); }
  t.ok(Math.abs(s - 1) < 1e-4 && mn >= 0, `a projected kernel (sum ${s.toFixed(6)}, min ${mn})`);
  const delta = new Float32Array(ks * ks); delta[(ks >> 1) * ks + (ks >> 1)] = 1;
  const errDelta = kernelMse(delta, kd); const err = kernelMse(k, kd);
  t.ok(err < 0.15 * errDelta, `kernel MSE ${err.toExponential(2)} < 0.15 x the delta's ${errDelta.toExponential(2)}`);
  t.ok(mnc(k, kd) > mnc(delta, kd) + 0.2, `MNC ${mnc(k, kd).toFixed(3)} > delta's ${mnc(delta, kd).toFixed(3)} + 0.2`);
  // The image is the final non-blind step with the returned kernel. (Its PSNR is not bounded here: the kernel is
  // re-centred, and a sub-pixel translation of the pair (x, k) costs PSNR without changing y.)
  const again = deconvolveTV(y, kernel, { lambda: 2e-4 });
  const c = close(await image.data(), await again.data(), 1e-5, 0);
  t.ok(c.ok, `image = deconvolveTV(y, kernel, final): ${c.message}`);
  t.ok(psnr(await image.data(), xd) > 10, 'a plausible image');
  void yd;
  for (const z of [x, y, image, kernel, again]) z.dispose();
});

t.test('bad shapes and options are refused', async (t) => {
  const y3 = tensor(new Float32Array(3 * 16 * 16), { shape: [3, 16, 16], backend: 'cpu' });
  const k = tensor(new Float32Array(25).fill(0.04), { shape: [5, 5], backend: 'cpu' });
  const bad: [string, () => unknown][] = [
    ['y without a channel axis', () => deconvolveTV(tensor(new Float32Array(256), { shape: [16, 16], backend: 'cpu' }), k)],
    ['a 3-D kernel', () => deconvolveTV(y3, tensor(new Float32Array(25), { shape: [1, 5, 5], backend: 'cpu' }))],
    ['a kernel larger than the image', () => deconvolveTV(y3, tensor(new Float32Array(17 * 17), { shape: [17, 17], backend: 'cpu' }))],
    ['init of another shape', () => deconvolveTV(y3, k, { init: tensor(new Float32Array(256), { shape: [1, 16, 16], backend: 'cpu' }) })],
  ];
  for (const [name, f] of bad) t.throws(f, ShapeError, name);
  t.throws(() => deconvolveTV(y3, k, { lambda: 0 }), RangeError, 'lambda 0');
  await t.rejects(blindDeconvolveTV(tensor(new Float32Array(256), { shape: [16, 16], backend: 'cpu' })), ShapeError, 'blind: y [H, W]');
  await t.rejects(blindDeconvolveTV(tensor(new Float32Array(3 * 18 * 18), { shape: [3, 18, 18], backend: 'cpu' }), { kernelSize: 8, levels: 3 }), ShapeError, 'blind: 18 not divisible by 4');
  await t.rejects(blindDeconvolveTV(y3, { kernelSize: 32, levels: 1, outer: [1] }), ShapeError, 'blind: kernel larger than the image');
  await t.rejects(blindDeconvolveTV(y3, { kernelSize: 8, levels: 2, outer: [1] }), RangeError, 'blind: one outer count per level');
  for (const z of [y3, k]) z.dispose();
});
