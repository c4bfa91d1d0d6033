/**
 * CPU GroupNorm (+ optional SiLU): the reference for the fused kernel. Statistics in f64 over each
 * (sample, group), two passes (mean, then the mean of squared deviations), so a large mean costs no precision.
 */
import type { NormAct, View } from '../../backend.js';
import { ShapeError, fmtShape } from '../../errors.js';
import * as m from '../math.js';
import { CpuStorage, gather } from './storage.js';

export function groupNorm(x: View, groups: number, weight: View | null, bias: View | null, eps: number, act: NormAct, out: CpuStorage, stats: CpuStorage): void {
  const [n, c] = x.shape;
  if (x.shape.length < 2 || !(groups > 0) || c % groups !== 0) throw new ShapeError('groupNorm', `${groups} groups do not divide the channels of ${fmtShape(x.shape)}`);
  const spatial = x.shape.slice(2).reduce((a, b) => a * b, 1);
  const cpg = c / groups;
  const len = cpg * spatial;
  const v = gather(x); // row-major, so group (i, g) is v[(i * groups + g) * len ..][0 .. len)
  const w = weight ? gather(weight) : null;
  const b = bias ? gather(bias) : null;
  const o = out.data, st = stats.data;
  for (let gi = 0; gi < n * groups; gi++) {
    const base = gi * len;
    let s = 0;
    for (let j = 0; j < len; j++) s += v[base + j];
    const mean = s / len;
    let ss = 0;
    for (let j = 0; j < len; j++) { const d = v[base + j] - mean; ss += d * d; }
    const rstd = 1 / Math.sqrt(ss / len + eps);
    st[2 * gi] = mean;
    st[2 * gi + 1] = rstd;
    for (let k = 0; k < cpg; k++) {
      const ch = (gi % groups) * cpg + k;
      const scale = rstd * (w ? w[ch] : 1);
      const shift = b ? b[ch] : 0;
      const rb = base + k * spatial;
      for (let j = rb; j < rb + spatial; j++) {
        const y = (v[j] - mean) * scale + shift;
        o[j] = act === 'silu' ? m.silu(y) : y;
      }
    }
  }
}

/** Backward of groupNorm from the saved (mean, rstd); see Backend.groupNormBackward. Sums in f64. */
export function groupNormBackward(x: View, dy: View, stats: View, groups: number, weight: View | null, bias: View | null, act: NormAct,
  dx: CpuStorage | null, dwdb: CpuStorage): void {
  const [n, c] = x.shape;
  const spatial = x.shape.slice(2).reduce((a, b) => a * b, 1);
  const cpg = c / groups;
  const len = cpg * spatial;
  const v = gather(x), g = gather(dy), st = gather(stats);
  const w = weight ? gather(weight) : null;
  const b = bias ? gather(bias) : null;
  const dW = new Float64Array(c), dB = new Float64Array(c);
  const dz = new Float64Array(len), xh = new Float64Array(len);
  for (let gi = 0; gi < n * groups; gi++) {
    const mean = st[2 * gi], rstd = st[2 * gi + 1];
    let m1 = 0, m2 = 0;
    for (let k = 0; k < cpg; k++) {
      const ch = (gi % groups) * cpg + k;
      const wc = w ? w[ch] : 1, bc = b ? b[ch] : 0;
      for (let j = k * spatial; j < (k + 1) * spatial; j++) {
        const i = gi * len + j;
        const h = (v[i] - mean) * rstd;
        const d = act === 'silu' ? g[i] * m.siluGrad(h * wc + bc) : g[i];
        xh[j] = h; dz[j] = d;
        dW[ch] += d * h; dB[ch] += d;
        m1 += d * wc; m2 += d * wc * h;
      }
    }
    if (!dx) continue;
    m1 /= len; m2 /= len;
    for (let k = 0; k < cpg; k++) {
      const wc = w ? w[(gi % groups) * cpg + k] : 1;
      for (let j = k * spatial; j < (k + 1) * spatial; j++) dx.data[gi * len + j] = rstd * (dz[j] * wc - m1 - xh[j] * m2);
    }
  }
  dwdb.data.set(dW, 0);
  dwdb.data.set(dB, c);
}
