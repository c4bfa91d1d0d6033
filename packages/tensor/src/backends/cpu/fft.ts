/**
 * CPU 2D DFT over the last two axes, batched over the leading ones, in float64. Power-of-two lengths use
 * an iterative radix-2 FFT, other lengths a direct O(N^2) DFT, so every size works. Twiddles come from
 * a table of e^{-2 pi i k / N} indexed by (n k) mod N, which keeps them exact to double rounding.
 */
import type { View } from '../../backend.js';
import { DTypeError, ShapeError, fmtShape } from '../../errors.js';
import { offsets, cs, type CpuStorage } from './storage.js';

interface Plan { n: number; cos: Float64Array; sin: Float64Array; rev: Uint32Array | null }

const isPow2 = (n: number): boolean => n > 0 && (n & (n - 1)) === 0;

function plan(n: number): Plan {
  const cos = new Float64Array(n), sin = new Float64Array(n);
  for (let k = 0; k < n; k++) {
    const a = (2 * Math.PI * k) / n;
    cos[k] = Math.cos(a); sin[k] = -Math.sin(a);
  }
  let rev: Uint32Array | null = null;
  if (isPow2(n)) {
    const bits = Math.log2(n);
    rev = new Uint32Array(n);
    for (let i = 0; i < n; i++) {
      let r = 0;
      for (let b = 0, x = i; b < bits; b++, x >>= 1) r = (r << 1) | (x & 1);
      rev[i] = r;
    }
  }
  return { n, cos, sin, rev };
}

/**
 * In-place 1D transform of the n elements at base + k * stride of (re, im). `sign` = -1 forward
 * (e^{-i...}), +1 inverse (unscaled). `sr`, `si` are scratch arrays of length >= n.
 */
function transform1d(pl: Plan, re: Float64Array, im: Float64Array, base: number, stride: number, sign: number,
  sr: Float64Array, si: Float64Array): void {
  const n = pl.n;
  if (n === 1) return;
  if (pl.rev) {
    for (let k = 0; k < n; k++) { const src = base + pl.rev[k] * stride; sr[k] = re[src]; si[k] = im[src]; }
    for (let half = 1; half < n; half *= 2) {
      const step = n / (2 * half);
      for (let start = 0; start < n; start += 2 * half) {
        for (let j = 0; j < half; j++) {
          const wr = pl.cos[j * step], wi = -sign * pl.sin[j * step];
          const a = start + j, b = a + half;
          const tr = sr[b] * wr - si[b] * wi, ti = sr[b] * wi + si[b] * wr;
          sr[b] = sr[a] - tr; si[b] = si[a] - ti;
          sr[a] += tr; si[a] += ti;
        }
      }
    }
  } else {
    for (let k = 0; k < n; k++) {
      let accR = 0, accI = 0, idx = 0;
      for (let m = 0; m < n; m++) {
        const wr = pl.cos[idx], wi = -sign * pl.sin[idx];
        const xr = re[base + m * stride], xi = im[base + m * stride];
        accR += xr * wr - xi * wi; accI += xr * wi + xi * wr;
        idx += k; if (idx >= n) idx -= n;
      }
      sr[k] = accR; si[k] = accI;
    }
  }
  for (let k = 0; k < n; k++) { re[base + k * stride] = sr[k]; im[base + k * stride] = si[k]; }
}

export function fft2(re: View, im: View, inverse: boolean, outRe: CpuStorage, outIm: CpuStorage): void {
  const shape = re.shape;
  if (shape.length < 2) throw new ShapeError('fft2', `needs at least 2 dimensions, got ${fmtShape(shape)}`);
  if (im.shape.length !== shape.length || im.shape.some((d, i) => d !== shape[i])) {
    throw new ShapeError('fft2', `real and imaginary parts differ in shape: ${fmtShape(shape)} vs ${fmtShape(im.shape)}`);
  }
  for (const v of [re, im]) if (v.storage.dtype !== 'float32') throw new DTypeError('fft2', `expected float32 inputs, got ${v.storage.dtype}`);
  const h = shape[shape.length - 2], w = shape[shape.length - 1];
  const total = shape.reduce((a, b) => a * b, 1);
  if (total === 0) return;
  const xr = new Float64Array(total), xi = new Float64Array(total);
  const srcR = cs(re.storage, 'fft2').data, srcI = cs(im.storage, 'fft2').data;
  const offR = offsets(re), offI = offsets(im);
  for (let i = 0; i < total; i++) { xr[i] = srcR[offR[i]]; xi[i] = srcI[offI[i]]; }

  const sign = inverse ? 1 : -1;
  const pw = plan(w), ph = h === w ? pw : plan(h);
  const sr = new Float64Array(Math.max(h, w)), si = new Float64Array(Math.max(h, w));
  const batch = total / (h * w);
  for (let b = 0; b < batch; b++) {
    const base = b * h * w;
    for (let r = 0; r < h; r++) transform1d(pw, xr, xi, base + r * w, 1, sign, sr, si);
    for (let c = 0; c < w; c++) transform1d(ph, xr, xi, base + c, w, sign, sr, si);
  }
  const scale = inverse ? 1 / (h * w) : 1;
  const dr = outRe.data, di = outIm.data;
  for (let i = 0; i < total; i++) { dr[i] = xr[i] * scale; di[i] = xi[i] * scale; }
}
