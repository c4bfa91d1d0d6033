/**
 * CPU conv2d: the reference, with PyTorch's semantics (cross-correlation, zero padding, stride, dilation,
 * groups). Inputs are gathered to contiguous f64 arrays; each output plane is accumulated in f64 by
 * sweeping the input once per (input channel, kernel tap), so the innermost loop runs along a row.
 */
import type { Conv2dParams, View } from '../../backend.js';
import { ShapeError, fmtShape } from '../../errors.js';
import { CpuStorage, cs, offsets } from './storage.js';

function gatherF64(v: View): Float64Array {
  const src = cs(v.storage, 'conv2d').data;
  const offs = offsets(v);
  const out = new Float64Array(offs.length);
  for (let i = 0; i < offs.length; i++) out[i] = src[offs[i]];
  return out;
}

/** Output spatial size along one axis (PyTorch's formula). */
export const convOutSize = (size: number, k: number, stride: number, pad: number, dil: number): number =>
  Math.floor((size + 2 * pad - dil * (k - 1) - 1) / stride) + 1;

/** x [N,C,H,W], w [O,C/groups,kh,kw] -> out [N,O,Ho,Wo] (contiguous). */
export function conv2d(x: View, w: View, p: Conv2dParams, out: CpuStorage): void {
  if (x.shape.length !== 4 || w.shape.length !== 4) throw new ShapeError('conv2d', `expected 4D input and weight, got ${fmtShape(x.shape)} and ${fmtShape(w.shape)}`);
  const [n, c, h, wd] = x.shape;
  const [o, cg, kh, kw] = w.shape;
  const g = p.groups;
  const [sh, sw] = p.stride, [ph, pw] = p.padding, [dh, dw] = p.dilation;
  if (g < 1 || c % g !== 0 || o % g !== 0 || cg !== c / g) {
    throw new ShapeError('conv2d', `groups=${g} does not fit input ${fmtShape(x.shape)} and weight ${fmtShape(w.shape)}`);
  }
  const ho = convOutSize(h, kh, sh, ph, dh), wo = convOutSize(wd, kw, sw, pw, dw);
  if (ho <= 0 || wo <= 0) throw new ShapeError('conv2d', `empty output for input ${fmtShape(x.shape)}, kernel ${kh}x${kw}`);
  const X = gatherF64(x), Wt = gatherF64(w);
  const og = o / g;
  const plane = new Float64Array(ho * wo);
  const dst = out.data;
  for (let ni = 0; ni < n; ni++) {
    for (let oi = 0; oi < o; oi++) {
      plane.fill(0);
      const gi = Math.floor(oi / og);
      for (let ci = 0; ci < cg; ci++) {
        const xBase = (ni * c + gi * cg + ci) * h * wd;
        for (let i = 0; i < kh; i++) {
          for (let j = 0; j < kw; j++) {
            const wv = Wt[((oi * cg + ci) * kh + i) * kw + j];
            for (let y = 0; y < ho; y++) {
              const iy = y * sh - ph + i * dh;
              if (iy < 0 || iy >= h) continue;
              const xRow = xBase + iy * wd;
              const pRow = y * wo;
              for (let xo = 0; xo < wo; xo++) {
                const ix = xo * sw - pw + j * dw;
                if (ix >= 0 && ix < wd) plane[pRow + xo] += wv * X[xRow + ix];
              }
            }
          }
        }
      }
      dst.set(plane, (ni * o + oi) * ho * wo);
    }
  }
}

/**
 * Weight gradient of conv2d: dw[o, c, i, j] = sum_{n, y, x} g[n, o, y, x] * xpad[n, g*Cg + c, y*sh + i*dh - ph, x*sw + j*dw - pw]
 * for x [N,C,H,W], g [N,O,Ho,Wo] -> out [O, C/groups, kh, kw] (contiguous), f64 accumulation.
 */
export function conv2dWeightGrad(x: View, g: View, p: Conv2dParams, [kh, kw]: [number, number], out: CpuStorage): void {
  const [n, c, h, wd] = x.shape;
  const [, o, ho, wo] = g.shape;
  const G = p.groups, cg = c / G, og = o / G;
  const [sh, sw] = p.stride, [ph, pw] = p.padding, [dh, dw] = p.dilation;
  const X = gatherF64(x), Gr = gatherF64(g);
  const dst = out.data;
  for (let oi = 0; oi < o; oi++) {
    const gi = Math.floor(oi / og);
    for (let ci = 0; ci < cg; ci++) {
      for (let i = 0; i < kh; i++) {
        for (let j = 0; j < kw; j++) {
          let s = 0;
          for (let ni = 0; ni < n; ni++) {
            const xBase = (ni * c + gi * cg + ci) * h * wd, gBase = (ni * o + oi) * ho * wo;
            for (let y = 0; y < ho; y++) {
              const iy = y * sh - ph + i * dh;
              if (iy < 0 || iy >= h) continue;
              for (let xo = 0; xo < wo; xo++) {
                const ix = xo * sw - pw + j * dw;
                if (ix >= 0 && ix < wd) s += Gr[gBase + y * wo + xo] * X[xBase + iy * wd + ix];
              }
            }
          }
          dst[((oi * cg + ci) * kh + i) * kw + j] = s;
        }
      }
    }
  }
}
