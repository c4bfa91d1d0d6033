/**
 * metrics.ts against values computed independently in Python (numpy 1.24 / scipy 1.10, Debian bookworm) on
 * inputs given by closed-form formulas, so both sides build the same float64 arrays without an RNG. The
 * reference script (SSIM by Wang et al.'s definition with scipy's 'valid' 2-D correlation against the explicit
 * 11 x 11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03; MNC as the maximum of scipy.signal.correlate(mode='full')
 * over the norms):
 *
 *   import numpy as np
 *   from scipy.signal import correlate2d, correlate
 *   C, H, W = 3, 20, 24
 *   c, y, x = np.meshgrid(np.arange(C), np.arange(H), np.arange(W), indexing='ij')
 *   a = 0.5 + 0.3 * np.sin(0.7 * x + 0.3 * y + c) * np.cos(0.11 * x * y)
 *   b = np.clip(a + 0.08 * np.cos(1.3 * x - 0.9 * y + 2 * c) + 0.02 * np.sin(0.5 * y), 0, 1)
 *   g = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5 ** 2)); g /= g.sum(); win = np.outer(g, g)
 *   def ssim_plane(p, q, L=1.0):
 *       f = lambda z: correlate2d(z, win, mode='valid')
 *       mp, mq = f(p), f(q)
 *       vp, vq, cpq = f(p * p) - mp ** 2, f(q * q) - mq ** 2, f(p * q) - mp * mq
 *       C1, C2 = (0.01 * L) ** 2, (0.03 * L) ** 2
 *       return (((2 * mp * mq + C1) * (2 * cpq + C2)) / ((mp ** 2 + mq ** 2 + C1) * (vp + vq + C2))).mean()
 *   print('ssim_rgb', repr(np.mean([ssim_plane(a[i], b[i]) for i in range(C)])))
 *   print('ssim_gray0', repr(ssim_plane(a[0], b[0])))
 *   print('ssim_rgb_255', repr(np.mean([ssim_plane(255 * a[i], 255 * b[i], 255.0) for i in range(C)])))
 *   m = np.mean((a - b) ** 2)
 *   print('mse', repr(m), 'psnr', repr(10 * np.log10(1 / m)), 'psnr255', repr(10 * np.log10(255.0 ** 2 / np.mean((255 * a - 255 * b) ** 2))))
 *   ky, kx = np.meshgrid(np.arange(7), np.arange(9), indexing='ij')
 *   k1 = np.maximum(0, np.cos(0.6 * (kx - 4)) * np.exp(-0.3 * (ky - 3) ** 2) - 0.2)
 *   k2 = np.maximum(0, np.sin(0.5 * kx + 0.4 * ky) ** 3)
 *   def mnc_ref(p, q): return correlate(p, q, mode='full').max() / np.sqrt((p * p).sum() * (q * q).sum())
 *   print('mnc_79', repr(mnc_ref(k1, k2)))
 *   print('kmse_79', repr(np.mean((k1 - k2) ** 2)))
 *   sy, sx = np.meshgrid(np.arange(15), np.arange(15), indexing='ij')
 *   l1 = np.exp(-((sy - 0.5 * sx - 3) ** 2) / 0.8) * (sx > 2) * (sx < 13)
 *   l2 = np.exp(-((sy - 7) ** 2 + (sx - 6) ** 2) / 6.0)
 *   print('mnc_15', repr(mnc_ref(l1, l2)), 'kmse_15', repr(np.mean((l1 - l2) ** 2)))
 *   d = 0.5 + 0.4 * np.cos(0.37 * x - 0.21 * y * y / 7 + c)
 *   print('ssim_far', repr(np.mean([ssim_plane(a[i], d[i]) for i in range(C)])))
 *
 * Basic properties (symmetry, SSIM(x, x) = 1, shift invariance of MNC, ...) are in hqs.test.ts.
 */
import t from 'tap';
import { kernelMse, mnc, mse, psnr, ssim } from '../src/deblur/metrics.js';

const REF = {
  ssim_rgb: 0.9250408528834867,
  ssim_gray0: 0.9255195238696333,
  ssim_rgb_255: 0.9250408528834866,
  ssim_far: 0.006024889945475312,
  mse: 0.00338870698399218,
  psnr: 24.699659822800385,
  psnr255: 24.699659822800378,
  mnc_79: 0.6951258928928314,
  kmse_79: 0.1866875040360031,
  mnc_15: 0.568234900815193,
  kmse_15: 0.045879746997627535,
};

const C = 3, H = 20, W = 24;
/** Builds a float64 [C, H, W] array from f(c, y, x) in CHW order (numpy's meshgrid 'ij' order). */
function image(f: (c: number, y: number, x: number) => number): Float64Array {
  const out = new Float64Array(C * H * W);
  for (let c = 0; c < C; c++) for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) out[(c * H + y) * W + x] = f(c, y, x);
  return out;
}
const fa = (c: number, y: number, x: number): number => 0.5 + 0.3 * Math.sin(0.7 * x + 0.3 * y + c) * Math.cos(0.11 * x * y);
const A = image(fa);
const B = image((c, y, x) => Math.min(1, Math.max(0, fa(c, y, x) + 0.08 * Math.cos(1.3 * x - 0.9 * y + 2 * c) + 0.02 * Math.sin(0.5 * y))));
const D = image((c, y, x) => 0.5 + 0.4 * Math.cos(0.37 * x - (0.21 * y * y) / 7 + c));

function kernel(h: number, w: number, f: (y: number, x: number) => number): Float64Array {
  const out = new Float64Array(h * w);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) out[y * w + x] = f(y, x);
  return out;
}
const K1 = kernel(7, 9, (y, x) => Math.max(0, Math.cos(0.6 * (x - 4)) * Math.exp(-0.3 * (y - 3) ** 2) - 0.2));
const K2 = kernel(7, 9, (y, x) => Math.max(0, Math.sin(0.5 * x + 0.4 * y) ** 3));
const L1 = kernel(15, 15, (y, x) => Math.exp(-((y - 0.5 * x - 3) ** 2) / 0.8) * (x > 2 && x < 13 ? 1 : 0));
const L2 = kernel(15, 15, (y, x) => Math.exp(-((y - 7) ** 2 + (x - 6) ** 2) / 6.0));

const rel = (got: number, want: number): number => Math.abs(got - want) / Math.abs(want);
const TOL = 1e-9;

t.test('SSIM equals the scipy reference (Wang et al. 2004, Gaussian 11x11 sigma 1.5, valid)', async (t) => {
  const cases: [string, number, number][] = [
    ['RGB [3,20,24]', ssim(A, B, [C, H, W]), REF.ssim_rgb],
    ['gray [20,24] (channel 0)', ssim(A.subarray(0, H * W), B.subarray(0, H * W), [H, W]), REF.ssim_gray0],
    ['RGB x255 with dataRange 255', ssim(A.map((v) => 255 * v), B.map((v) => 255 * v), [C, H, W], 255), REF.ssim_rgb_255],
    ['dissimilar images (SSIM near 0)', ssim(A, D, [C, H, W]), REF.ssim_far],
  ];
  for (const [name, got, want] of cases) t.ok(rel(got, want) < TOL, `${name}: ${got} vs ${want} (rel ${rel(got, want).toExponential(1)})`);
  // The same numbers read as [24, 20] planes are other images: the [H, W] order is used (20 x 24 is not square).
  const g0 = ssim(A.subarray(0, H * W), B.subarray(0, H * W), [W, H]);
  t.ok(rel(g0, REF.ssim_gray0) > 1e-6, `reading the plane as 24x20 changes the value (${g0})`);
  t.ok(Math.abs(ssim(A, B, [C, H, W]) - ssim(A, B, [C, H, W], 255)) > 1e-3, 'dataRange enters through C1 and C2');
});

t.test('MSE, PSNR and kernel MSE equal the numpy reference', async (t) => {
  t.ok(rel(mse(A, B), REF.mse) < TOL, `mse ${mse(A, B)}`);
  t.ok(rel(psnr(A, B), REF.psnr) < TOL, `psnr ${psnr(A, B)}`);
  t.ok(rel(psnr(A.map((v) => 255 * v), B.map((v) => 255 * v), 255), REF.psnr255) < TOL, 'psnr with dataRange 255');
  t.ok(rel(kernelMse(K1, K2), REF.kmse_79) < TOL, `kernel mse 7x9 ${kernelMse(K1, K2)}`);
  t.ok(rel(kernelMse(L1, L2), REF.kmse_15) < TOL, `kernel mse 15x15 ${kernelMse(L1, L2)}`);
});

t.test('MNC equals max of scipy.signal.correlate(full) over the norms', async (t) => {
  t.ok(rel(mnc(K1, K2, [7, 9]), REF.mnc_79) < TOL, `7x9 kernels: ${mnc(K1, K2, [7, 9])}`);
  t.ok(rel(mnc(K2, K1, [7, 9]), REF.mnc_79) < TOL, 'symmetric on the 7x9 pair');
  t.ok(rel(mnc(L1, L2), REF.mnc_15) < TOL, `15x15 kernels (square shape inferred): ${mnc(L1, L2)}`);
  // Read as 9x7 the same numbers are different kernels: the shape argument is used.
  t.ok(Math.abs(mnc(K1, K2, [9, 7]) - REF.mnc_79) > 1e-6, 'reading the 7x9 kernels as 9x7 changes the value');
});

t.test('hand-computed values', async (t) => {
  // A constant offset of 0.05: MSE 0.0025, PSNR = 10 log10(1 / 0.0025) = 20 log10(20).
  const z = new Float64Array(50).fill(0.3);
  t.ok(Math.abs(psnr(z, z.map((v) => v + 0.05)) - 20 * Math.log10(20)) < 1e-9, 'PSNR of a 0.05 offset = 26.0206 dB');
  // Kernel MSE of a delta and the uniform 2x2 kernel: ((1 - 1/4)^2 + 3 (1/4)^2) / 4 = (9/16 + 3/16) / 4 = 3/16.
  t.ok(Math.abs(kernelMse([1, 0, 0, 0], [0.25, 0.25, 0.25, 0.25]) - 3 / 16) < 1e-15, 'kernel MSE delta vs box = 3/16');
  // MNC of [1 2] and [2 1] (shape [1, 2]): correlations at the three shifts are 1*1 = 1, 1*2 + 2*1 = 4
  // and 2*2 = 4; norms sqrt(5) each, so MNC = 4 / 5.
  t.ok(Math.abs(mnc([1, 2], [2, 1], [1, 2]) - 0.8) < 1e-15, 'MNC([1 2], [2 1]) = 0.8');
  // MNC of [1 1 1] and [1 0 1] (row kernels): best overlap 2 (no shift) over sqrt(3) sqrt(2).
  t.ok(Math.abs(mnc([1, 1, 1], [1, 0, 1], [1, 3]) - 2 / Math.sqrt(6)) < 1e-15, 'MNC([1 1 1], [1 0 1]) = 2 / sqrt(6)');
  // SSIM of two constant 11x11 planes 0.2 and 0.6 with dataRange 2: C1 = (0.02)^2, variance terms cancel.
  const C1 = 0.02 ** 2;
  const s = ssim(new Float64Array(121).fill(0.2), new Float64Array(121).fill(0.6), [11, 11], 2);
  t.ok(Math.abs(s - (2 * 0.2 * 0.6 + C1) / (0.04 + 0.36 + C1)) < 1e-12, `constant planes, dataRange 2: ${s}`);
  t.throws(() => ssim(new Float64Array(100), new Float64Array(100), [10, 10]), RangeError, 'an image smaller than the window is refused');
  t.throws(() => mnc([1, 2, 3], [1, 2], [1, 3]), RangeError, 'length mismatch is refused');
});
