/**
 * conv2d (a backend primitive) and what its gradient needs, written as compositions of primitives:
 * the input gradient is a transposed convolution (zero insertion + padding + conv2d with the flipped,
 * transposed kernel) and the weight gradient is a conv2d of the input with the output gradient.
 * Pooling and upsampling are compositions too, so all of them are differentiable.
 */
import type { Conv2dParams } from '../backend.js';
import { ShapeError, fmtShape } from '../errors.js';
import { noGrad, record } from '../autodiff.js';
import type { Tensor } from '../tensor.js';
import { backendOf, empty, fromData, launch, requireFloat } from './core.js';
import { composite } from './composite.js';
import { concat, contiguous, embed, expand, flip, narrow, pad, permute, reshape, slice, stack } from './views.js';
import { add, div } from './elementwise.js';
import { max } from './reduce.js';
import { matmul } from './linalg.js';

export type Pair = number | readonly [number, number];
const pair = (v: Pair | undefined, dflt: number): [number, number] => (v === undefined ? [dflt, dflt] : typeof v === 'number' ? [v, v] : [v[0], v[1]]);

export interface Conv2dOptions { stride?: Pair; padding?: Pair; dilation?: Pair; groups?: number }
export interface ConvTranspose2dOptions extends Conv2dOptions { outputPadding?: Pair }

function params(op: string, o: Conv2dOptions): Conv2dParams {
  const p: Conv2dParams = { stride: pair(o.stride, 1), padding: pair(o.padding, 0), dilation: pair(o.dilation, 1), groups: o.groups ?? 1 };
  if (p.stride.some((s) => !Number.isInteger(s) || s < 1) || p.dilation.some((s) => !Number.isInteger(s) || s < 1) ||
      p.padding.some((s) => !Number.isInteger(s) || s < 0) || !Number.isInteger(p.groups) || p.groups < 1) {
    throw new ShapeError(op, `invalid options stride [${p.stride}] padding [${p.padding}] dilation [${p.dilation}] groups ${p.groups}`);
  }
  return p;
}

/** 2-D cross-correlation as PyTorch: x [N,C,H,W], w [O,C/groups,kh,kw], optional bias [O]. */
export function conv2d(x: Tensor, w: Tensor, opts: Conv2dOptions & { bias?: Tensor | null } = {}): Tensor {
  const be = backendOf('conv2d', x, w);
  requireFloat('conv2d', x, w);
  const p = params('conv2d', opts);
  if (x.rank !== 4 || w.rank !== 4) throw new ShapeError('conv2d', `needs x [N,C,H,W] and w [O,C/groups,kh,kw], got ${fmtShape(x.shape)} and ${fmtShape(w.shape)}`);
  const [n, c, h, wd] = x.shape;
  const [o, cg, kh, kw] = w.shape;
  if (c !== cg * p.groups || o % p.groups !== 0) {
    throw new ShapeError('conv2d', `x ${fmtShape(x.shape)} and w ${fmtShape(w.shape)} do not fit groups=${p.groups} (need C = w.shape[1]*groups and O divisible by groups)`);
  }
  const ho = Math.floor((h + 2 * p.padding[0] - p.dilation[0] * (kh - 1) - 1) / p.stride[0]) + 1;
  const wo = Math.floor((wd + 2 * p.padding[1] - p.dilation[1] * (kw - 1) - 1) / p.stride[1]) + 1;
  if (ho <= 0 || wo <= 0) throw new ShapeError('conv2d', `kernel ${kh}x${kw} (dilation [${p.dilation}]) is larger than the padded input ${fmtShape(x.shape)} with padding [${p.padding}]`);
  const out = empty(be, [n, o, ho, wo], 'float32');
  noGrad(() => {
    const xc = contiguous(x); const wc = contiguous(w);
    launch('conv2d', be, [x, w], [out], () => be.conv2d(xc, wc, p, out.storage));
    if (xc !== x) xc.dispose();
    if (wc !== w) wc.dispose();
  });
  record('conv2d', [x, w], [out], ([g]) => [
    x.requiresGrad ? conv2dInputGrad(g!, w, p, [h, wd]) : null,
    w.requiresGrad ? conv2dWeightGrad(x, g!, p, [kh, kw]) : null,
  ]);
  if (!opts.bias) return out;
  const bias = opts.bias;
  if (bias.rank !== 1 || bias.shape[0] !== o) throw new ShapeError('conv2d', `bias ${fmtShape(bias.shape)} must be [${o}]`);
  return add(out, reshape(bias, [1, o, 1, 1]));
}

/** Gradient of conv2d w.r.t. its input: a transposed convolution sized back to [H, W]. */
function conv2dInputGrad(g: Tensor, w: Tensor, p: Conv2dParams, [h, wd]: [number, number]): Tensor {
  const [, , kh, kw] = w.shape;
  const ho = g.shape[2]; const wo = g.shape[3];
  const outputPadding: [number, number] = [
    h - ((ho - 1) * p.stride[0] - 2 * p.padding[0] + p.dilation[0] * (kh - 1) + 1),
    wd - ((wo - 1) * p.stride[1] - 2 * p.padding[1] + p.dilation[1] * (kw - 1) + 1),
  ];
  return convTranspose2d(g, w, { ...p, outputPadding });
}

/**
 * Gradient of conv2d w.r.t. its weight: the backend's weight-gradient kernel (webgpu: im2col + GEMMs that
 * accumulate over chunks; cpu: the loop reference). Higher-order gradients are not needed, so it records nothing.
 */
function conv2dWeightGrad(x: Tensor, g: Tensor, p: Conv2dParams, [kh, kw]: [number, number]): Tensor {
  const be = backendOf('conv2d', x, g);
  const out = empty(be, [g.shape[1], x.shape[1] / p.groups, kh, kw], 'float32');
  noGrad(() => {
    const xc = contiguous(x); const gc = contiguous(g);
    launch('conv2dWeightGrad', be, [x, g], [out], () => be.conv2dWeightGrad(xc, gc, p, [kh, kw], out.storage));
    if (xc !== x) xc.dispose();
    if (gc !== g) gc.dispose();
  });
  return out;
}

/**
 * conv2d's weight gradient written as a conv2d of the input with the output gradient, per group: the reference
 * the weight-gradient kernels are tested against.
 */
export function conv2dWeightGradComposite(x: Tensor, g: Tensor, opts: Conv2dOptions, [kh, kw]: [number, number]): Tensor {
  const p = params('conv2dWeightGrad', opts);
  const groups = p.groups;
  const cg = x.shape[1] / groups;
  const og = g.shape[1] / groups;
  const parts: Tensor[] = [];
  for (let gi = 0; gi < groups; gi++) {
    // [C_g, N, H, W] as a batch of C_g images with N channels; [O_g, N, Ho, Wo] as O_g kernels.
    const xs = permute(narrow(x, 1, gi * cg, cg), [1, 0, 2, 3]);
    const gs = permute(narrow(g, 1, gi * og, og), [1, 0, 2, 3]);
    const full = conv2d(xs, gs, { stride: p.dilation, padding: p.padding, dilation: p.stride });
    // The correlation can be larger than the kernel when strides leave input rows unused: crop.
    const dw = slice(full, [null, null, [0, kh], [0, kw]]);
    parts.push(permute(dw, [1, 0, 2, 3]));
  }
  return groups === 1 ? contiguous(parts[0]) : concat(parts, 0);
}

/**
 * Transposed convolution as PyTorch: x [N,Cin,H,W], w [Cin, Cout/groups, kh, kw] ->
 * [N, Cout, (H-1)s - 2p + d(k-1) + outputPadding + 1, ...].
 */
export function convTranspose2d(x: Tensor, w: Tensor, opts: ConvTranspose2dOptions & { bias?: Tensor | null } = {}): Tensor {
  backendOf('convTranspose2d', x, w);
  requireFloat('convTranspose2d', x, w);
  const p = params('convTranspose2d', opts);
  const op = pair(opts.outputPadding, 0);
  if (x.rank !== 4 || w.rank !== 4) throw new ShapeError('convTranspose2d', `needs x [N,Cin,H,W] and w [Cin,Cout/groups,kh,kw], got ${fmtShape(x.shape)} and ${fmtShape(w.shape)}`);
  const [, cin, h, wd] = x.shape;
  const [wcin, coutg, kh, kw] = w.shape;
  const G = p.groups;
  if (cin !== wcin || cin % G !== 0) throw new ShapeError('convTranspose2d', `x ${fmtShape(x.shape)} and w ${fmtShape(w.shape)} do not fit groups=${G}`);
  if (op.some((v, i) => v < 0 || v >= Math.max(p.stride[i], p.dilation[i]))) {
    throw new ShapeError('convTranspose2d', `outputPadding [${op}] must be smaller than stride or dilation`);
  }
  return composite([x, w, opts.bias], () => {
    // 1. zero insertion for the stride.
    let z = x;
    if (p.stride[0] > 1 || p.stride[1] > 1) {
      const shape = [x.shape[0], cin, (h - 1) * p.stride[0] + 1, (wd - 1) * p.stride[1] + 1];
      z = embed(x, shape, [0, 0, 0, 0], [1, 1, p.stride[0], p.stride[1]], 0);
    }
    // 2. pad by d(k-1) - p (negative crops), plus outputPadding at the end.
    const qh = p.dilation[0] * (kh - 1) - p.padding[0];
    const qw = p.dilation[1] * (kw - 1) - p.padding[1];
    z = pad(z, [qw, qw + op[1], qh, qh + op[0]]);
    // 3. the kernel per group transposed to [Cout, Cin/G, kh, kw] and flipped.
    const wt = flip(reshape(permute(reshape(w, [G, cin / G, coutg, kh, kw]), [0, 2, 1, 3, 4]), [G * coutg, cin / G, kh, kw]), [2, 3]);
    const y = conv2d(z, wt, { dilation: p.dilation, groups: G });
    if (!opts.bias) return y;
    if (opts.bias.rank !== 1 || opts.bias.shape[0] !== G * coutg) throw new ShapeError('convTranspose2d', `bias ${fmtShape(opts.bias.shape)} must be [${G * coutg}]`);
    return add(y, reshape(opts.bias, [1, G * coutg, 1, 1]));
  });
}

export interface Pool2dOptions { kernel: Pair; stride?: Pair; padding?: Pair; dilation?: Pair }

/**
 * The k*k strided slices ("taps") of the padded input that a window op sees: tap (i, j) is
 * xp[..., i*d : i*d + (Ho-1)*s + 1 : s, j*d : ...], each [N, C, Ho, Wo]. Shared by pooling and the conv weight gradient.
 */
function windowTaps(x: Tensor, k: [number, number], s: [number, number], pd: [number, number], d: [number, number], fill: number): Tensor[] {
  const [, , h, w] = x.shape;
  const ho = Math.floor((h + 2 * pd[0] - d[0] * (k[0] - 1) - 1) / s[0]) + 1;
  const wo = Math.floor((w + 2 * pd[1] - d[1] * (k[1] - 1) - 1) / s[1]) + 1;
  const xp = pd[0] || pd[1] ? pad(x, [pd[1], pd[1], pd[0], pd[0]], 'constant', fill) : x;
  const taps: Tensor[] = [];
  for (let i = 0; i < k[0]; i++) {
    for (let j = 0; j < k[1]; j++) {
      taps.push(slice(xp, [null, null, [i * d[0], i * d[0] + (ho - 1) * s[0] + 1, s[0]], [j * d[1], j * d[1] + (wo - 1) * s[1] + 1, s[1]]]));
    }
  }
  return taps;
}

/** Windows of a pooling op, one tap per kernel position. */
function poolTaps(op: string, x: Tensor, o: Pool2dOptions, fill: number): { taps: Tensor[]; count: number } {
  requireFloat(op, x);
  if (x.rank !== 4) throw new ShapeError(op, `needs x [N,C,H,W], got ${fmtShape(x.shape)}`);
  const k = pair(o.kernel, 1); const s = pair(o.stride, 0); const pd = pair(o.padding, 0); const d = pair(o.dilation, 1);
  if (s[0] === 0) { s[0] = k[0]; s[1] = k[1]; }
  if (pd[0] * 2 > k[0] || pd[1] * 2 > k[1]) throw new ShapeError(op, `padding [${pd}] must be at most half the kernel [${k}]`);
  const [, , h, w] = x.shape;
  const ho = Math.floor((h + 2 * pd[0] - d[0] * (k[0] - 1) - 1) / s[0]) + 1;
  const wo = Math.floor((w + 2 * pd[1] - d[1] * (k[1] - 1) - 1) / s[1]) + 1;
  if (ho <= 0 || wo <= 0) throw new ShapeError(op, `kernel [${k}] does not fit input ${fmtShape(x.shape)} with padding [${pd}]`);
  return { taps: windowTaps(x, k, s, pd, d, fill), count: k[0] * k[1] };
}

/** Max pooling (padding counts as -infinity, as PyTorch). */
export function maxPool2d(x: Tensor, o: Pool2dOptions): Tensor {
  return composite([x], () => {
    const { taps } = poolTaps('maxPool2d', x, o, -Infinity);
    // One max over a stacked tap axis: tied maxima share the gradient equally (pairwise maximum would not).
    return max(stack(taps, -1), -1);
  });
}

/** Average pooling; padding counts in the divisor (PyTorch's count_include_pad=True). */
export function avgPool2d(x: Tensor, o: Omit<Pool2dOptions, 'dilation'>): Tensor {
  return composite([x], () => {
    const { taps, count } = poolTaps('avgPool2d', x, o, 0);
    return div(taps.reduce((m, t) => add(m, t)), count);
  });
}

export interface UpsampleOptions { size?: readonly [number, number]; scaleFactor?: number | readonly [number, number]; mode?: 'nearest' | 'bilinear'; alignCorners?: boolean }

/** Interpolation matrix [out, in] for one axis, PyTorch's index conventions. */
function interpMatrix(nIn: number, nOut: number, mode: 'nearest' | 'bilinear', alignCorners: boolean, scale: number | undefined): Float32Array {
  const m = new Float32Array(nOut * nIn);
  // PyTorch uses 1/scale_factor when given, else in/out.
  const ratio = scale !== undefined ? 1 / scale : nIn / nOut;
  for (let i = 0; i < nOut; i++) {
    if (mode === 'nearest') {
      m[i * nIn + Math.min(Math.floor(i * ratio), nIn - 1)] = 1;
      continue;
    }
    let src = alignCorners ? (nOut > 1 ? (i * (nIn - 1)) / (nOut - 1) : 0) : (i + 0.5) * ratio - 0.5;
    if (src < 0) src = 0;
    const i0 = Math.min(Math.floor(src), nIn - 1);
    const i1 = Math.min(i0 + 1, nIn - 1);
    const l = src - i0;
    m[i * nIn + i0] += 1 - l;
    m[i * nIn + i1] += l;
  }
  return m;
}

/** Nearest or bilinear resize of [N,C,H,W] (PyTorch F.interpolate semantics). */
export function upsample(x: Tensor, o: UpsampleOptions): Tensor {
  requireFloat('upsample', x);
  if (x.rank !== 4) throw new ShapeError('upsample', `needs x [N,C,H,W], got ${fmtShape(x.shape)}`);
  const [n, c, h, w] = x.shape;
  const mode = o.mode ?? 'nearest';
  const sf = o.scaleFactor === undefined ? undefined : pair(o.scaleFactor, 1);
  const size = o.size ?? (sf ? [Math.floor(h * sf[0]), Math.floor(w * sf[1])] as const : undefined);
  if (!size || size[0] <= 0 || size[1] <= 0) throw new ShapeError('upsample', `needs a positive size or scaleFactor, got size ${o.size} scaleFactor ${o.scaleFactor}`);
  const [ho, wo] = size;
  return composite([x], () => {
    if (mode === 'nearest' && ho % h === 0 && wo % w === 0 && (!sf || (sf[0] === ho / h && sf[1] === wo / w))) {
      // Integer factors: a broadcast view, no arithmetic.
      const fh = ho / h; const fw = wo / w;
      return reshape(contiguous(expand(reshape(x, [n, c, h, 1, w, 1]), [n, c, h, fh, w, fw])), [n, c, ho, wo]);
    }
    const ac = o.alignCorners ?? false;
    const mh = fromData(interpMatrix(h, ho, mode, ac, sf?.[0]), [ho, h], x.backend);
    const mwT = permute(fromData(interpMatrix(w, wo, mode, ac, sf?.[1]), [wo, w], x.backend), [1, 0]);
    return matmul(mh, matmul(x, mwT));
  });
}

