/**
 * Re-centring a kernel after the M-step: move its centre of mass to the kernel centre with a sub-pixel shift
 * (the release's `kernel_shift(k, sf=1)`, utils_agem.py:251-277, ALGORITHM.md section 2 step 8).
 *
 * Two deliberate differences from the release, documented in docs/deblur.md with a measured comparison:
 * - Target: the release moves the centre of mass to h//2 + 0.5 (1 - h mod 2), i.e. 32.5 for 64x64, half a
 *   pixel off the pixel (h//2, w//2) that the PSF-to-OTF padding maps to the origin. `target: 'release'` keeps
 *   its value; the default 'origin' uses h//2, so a re-centred kernel blurs without a shift.
 * - Interpolation: bilinear (order 1) instead of scipy's cubic spline (order 3, prefiltered): it never makes
 *   negative values, and the result is clamped and renormalised to sum 1 (the release does neither, leaving
 *   negatives and sums below one).
 */

import { matmul, noGrad, sum, tensor, tidy } from '@latentdem/tensor';
import type { Tensor } from '@latentdem/tensor';
import { ShapeError } from '@latentdem/tensor';

export interface RecenterOptions {
  /** 'origin' (default): the centre of mass goes to (h//2, w//2); 'release': h//2 + 0.5 (1 - h mod 2). */
  target?: 'origin' | 'release';
}

/** Centre of mass (row, column) in index coordinates, as scipy.ndimage.center_of_mass. */
export function centerOfMass(k: ArrayLike<number>, h: number, w: number): [number, number] {
  let s = 0; let r = 0; let c = 0;
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) { const v = k[y * w + x]; s += v; r += v * y; c += v * x; }
  if (s === 0) throw new RangeError(`centerOfMass: the ${h}x${w} kernel sums to zero`);
  return [r / s, c / s];
}

/** The kernel [h*w] shifted by (dy, dx) pixels, bilinear, zeros outside. */
export function shiftBilinear(k: ArrayLike<number>, h: number, w: number, dy: number, dx: number): Float64Array {
  const out = new Float64Array(h * w);
  const at = (y: number, x: number): number => (y >= 0 && y < h && x >= 0 && x < w ? k[y * w + x] : 0);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
    const sy = y - dy; const sx = x - dx;
    const y0 = Math.floor(sy); const x0 = Math.floor(sx);
    const fy = sy - y0; const fx = sx - x0;
    out[y * w + x] = (1 - fy) * ((1 - fx) * at(y0, x0) + fx * at(y0, x0 + 1)) + fy * ((1 - fx) * at(y0 + 1, x0) + fx * at(y0 + 1, x0 + 1));
  }
  return out;
}

/** Moves the centre of mass of a non-negative kernel [h*w] to the target centre; returns a sum-1 kernel. */
export function recenterKernel(k: ArrayLike<number>, h: number, w: number, o: RecenterOptions = {}): Float32Array {
  if (k.length !== h * w) throw new RangeError(`recenterKernel: ${k.length} values for a ${h}x${w} kernel`);
  const release = o.target === 'release';
  const ty = Math.floor(h / 2) + (release ? 0.5 * (1 - (h % 2)) : 0);
  const tx = Math.floor(w / 2) + (release ? 0.5 * (1 - (w % 2)) : 0);
  const [cy, cx] = centerOfMass(k, h, w);
  const shifted = shiftBilinear(k, h, w, ty - cy, tx - cx);
  let s = 0;
  for (let i = 0; i < shifted.length; i++) { shifted[i] = Math.max(0, shifted[i]); s += shifted[i]; }
  const out = new Float32Array(h * w);
  if (s === 0) throw new RangeError('recenterKernel: the shift moved all of the kernel out of its support');
  for (let i = 0; i < out.length; i++) out[i] = shifted[i] / s;
  return out;
}

/** The target centre of an h x w kernel. */
function targetCentre(h: number, w: number, o: RecenterOptions): [number, number] {
  const release = o.target === 'release';
  return [Math.floor(h / 2) + (release ? 0.5 * (1 - (h % 2)) : 0), Math.floor(w / 2) + (release ? 0.5 * (1 - (w % 2)) : 0)];
}

/**
 * `recenterKernel` on the device, with no read-back (so the EM loop never waits on the GPU for it): the centre of
 * mass from two weighted sums, then the same bilinear shift written as T_y k T_x^T with the tent matrices
 * T[i, j] = max(0, 1 - |i - j - d|) built from the device scalar d, then clamp and renormalise.
 */
export function recenterKernelTensor(k: Tensor, o: RecenterOptions = {}): Tensor {
  if (k.rank !== 2) throw new ShapeError('recenterKernelTensor', `needs a kernel [h, w], got [${k.shape}]`);
  const [h, w] = k.shape;
  const [ty, tx] = targetCentre(h, w, o);
  return noGrad(() => tidy(() => {
    const rows = tensor(Float32Array.from({ length: h }, (_, i) => i), { shape: [h, 1], backend: k.backend });
    const cols = tensor(Float32Array.from({ length: w }, (_, i) => i), { shape: [1, w], backend: k.backend });
    const total = sum(k).maximum(1e-30);
    const dy = sum(k.mul(rows)).div(total).neg().add(ty);     // ty - cy
    const dx = sum(k.mul(cols)).div(total).neg().add(tx);
    const diff = (n: number): Tensor => tensor(Float32Array.from({ length: n * n }, (_, q) => Math.floor(q / n) - (q % n)), { shape: [n, n], backend: k.backend });
    const tent = (n: number, d: Tensor): Tensor => diff(n).sub(d).abs().neg().add(1).clamp(0);
    const shifted = matmul(matmul(tent(h, dy), k), tent(w, dx).transpose(0, 1)).clamp(0);
    return shifted.div(sum(shifted).maximum(1e-30));
  }));
}
