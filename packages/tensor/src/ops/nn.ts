/** Neural-network composites written as math over primitives (so they differentiate for free). */
import { ShapeError, fmtShape } from '../errors.js';
import { noGrad } from '../autodiff.js';
import type { Tensor } from '../tensor.js';
import { normalizeAxis } from '../shape.js';
import { composite } from './composite.js';
import { requireFloat } from './core.js';
import { add, div, exp, mul, rsqrt, sub, where } from './elementwise.js';
import { logsumexp, max, mean, sum, variance } from './reduce.js';
import { detach, reshape, transpose } from './views.js';
import { matmul } from './linalg.js';

export function softmax(x: Tensor, axis = -1): Tensor {
  requireFloat('softmax', x);
  const a = normalizeAxis('softmax', axis, x.rank);
  return composite([x], () => {
    const m = detach(noGrad(() => max(x, a, { keepdim: true })));
    const e = exp(sub(x, m));
    return div(e, sum(e, a, { keepdim: true }));
  });
}

export function logSoftmax(x: Tensor, axis = -1): Tensor {
  requireFloat('logSoftmax', x);
  const a = normalizeAxis('logSoftmax', axis, x.rank);
  return composite([x], () => sub(x, logsumexp(x, a, { keepdim: true })));
}

/** Normalizes over the trailing `normalizedShape` axes (biased variance, as PyTorch). */
export function layerNorm(x: Tensor, normalizedShape: readonly number[], weight?: Tensor | null, bias?: Tensor | null, eps = 1e-5): Tensor {
  requireFloat('layerNorm', x);
  const k = normalizedShape.length;
  if (k > x.rank || normalizedShape.some((n, i) => n !== x.shape[x.rank - k + i])) {
    throw new ShapeError('layerNorm', `normalized shape ${fmtShape(normalizedShape)} does not match the end of ${fmtShape(x.shape)}`);
  }
  const axes = Array.from({ length: k }, (_, i) => x.rank - k + i);
  return composite([x, weight, bias], () => {
    const m = mean(x, axes, { keepdim: true });
    const v = variance(x, axes, { keepdim: true, correction: 0 });
    let y = mul(sub(x, m), rsqrt(add(v, eps)));
    if (weight) y = mul(y, weight);
    if (bias) y = add(y, bias);
    return y;
  });
}

/** Group norm over [N, C, ...]: statistics per (sample, group of C/groups channels); affine per channel. */
export function groupNorm(x: Tensor, groups: number, weight?: Tensor | null, bias?: Tensor | null, eps = 1e-5): Tensor {
  requireFloat('groupNorm', x);
  if (x.rank < 2 || x.shape[1] % groups !== 0) throw new ShapeError('groupNorm', `${groups} groups do not divide the channels of ${fmtShape(x.shape)}`);
  const [n, c] = x.shape;
  return composite([x, weight, bias], () => {
    const xg = reshape(x, [n, groups, -1]);
    const m = mean(xg, 2, { keepdim: true });
    const v = variance(xg, 2, { keepdim: true, correction: 0 });
    let y = reshape(mul(sub(xg, m), rsqrt(add(v, eps))), x.shape);
    const affine = [1, c, ...x.shape.slice(2).map(() => 1)];
    if (weight) y = mul(y, reshape(weight, affine));
    if (bias) y = add(y, reshape(bias, affine));
    return y;
  });
}

export interface AttentionOptions {
  /** Keep-mask broadcastable to [..., Lq, Lk]: nonzero = attend (PyTorch's boolean mask convention). */
  mask?: Tensor | null;
  /** Defaults to 1/sqrt(d). */
  scale?: number;
}

/** softmax(q k^T * scale [masked]) v over q [..., Lq, d], k [..., Lk, d], v [..., Lk, dv]. */
export function scaledDotProductAttention(q: Tensor, k: Tensor, v: Tensor, o: AttentionOptions = {}): Tensor {
  requireFloat('attention', q, k, v);
  const d = q.shape[q.rank - 1];
  if (k.shape[k.rank - 1] !== d || k.shape[k.rank - 2] !== v.shape[v.rank - 2]) {
    throw new ShapeError('attention', `q ${fmtShape(q.shape)}, k ${fmtShape(k.shape)}, v ${fmtShape(v.shape)} do not fit`);
  }
  const scale = o.scale ?? 1 / Math.sqrt(d);
  return composite([q, k, v], () => {
    let s = mul(matmul(q, transpose(k)), scale);
    if (o.mask) s = where(o.mask, s, -Infinity);
    return matmul(softmax(s, -1), v);
  });
}
