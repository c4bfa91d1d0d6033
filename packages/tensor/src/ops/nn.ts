/** Neural-network composites written as math over primitives (so they differentiate for free). */
import { ShapeError, fmtShape } from '../errors.js';
import { isGradEnabled, noGrad, record } from '../autodiff.js';
import type { Tensor } from '../tensor.js';
import { normalizeAxis } from '../shape.js';
import { composite } from './composite.js';
import { requireFloat } from './core.js';
import { add, div, exp, mul, rsqrt, sub, where } from './elementwise.js';
import { logsumexp, max, mean, sum, variance } from './reduce.js';
import { concat, contiguous, detach, expand, narrow, reshape, transpose } from './views.js';
import { zerosLike } from './creation.js';
import { unbroadcast } from './broadcast.js';
import { broadcastShapes, numel } from '../shape.js';
import { keep, tidy } from '../memory.js';
import { matmul } from './linalg.js';
import { batchedView3d } from './batched.js';
import { checkGroupNorm } from './norm.js';
import type { View } from '../backend.js';
import { as3d, backendOf, empty, launch } from './core.js';

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

// groupNorm and groupNormSilu are one fused backend kernel each (ops/norm.ts).
export { groupNorm, groupNormSilu } from './norm.js';

/**
 * Group norm over [N, C, ...] written as math over primitives: the reference the fused groupNorm is tested
 * against. Statistics per (sample, group of C/groups channels); affine per channel.
 */
export function groupNormComposite(x: Tensor, groups: number, weight?: Tensor | null, bias?: Tensor | null, eps = 1e-5): Tensor {
  checkGroupNorm('groupNorm', x, groups, weight ?? null, bias ?? null);
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

/**
 * Largest score matrix (batch x Lq x Lk float32) the composite attention materializes at once. Above it the queries run in
 * chunks of rows and the backward recomputes each chunk's probabilities (flash-attention's recompute, at the
 * granularity of ops), so memory stays near this bound however long the sequence: SD's first level at a
 * 64x64 latent, batch 2, 8 heads would need 1 GiB for the full matrix. Tests lower it to run both paths.
 */
export const attentionTuning = {
  maxScoreBytes: 32 * 1024 * 1024,
  /** Unmasked attention runs the backend's fused kernel (flash attention); false forces the composite. */
  fused: true,
  /**
   * Largest head dim (max of d, dv) the fused kernels take; above it the composite runs. Measured on lavapipe
   * (2 loaded cores, fused vs composite): B=16 L=1024 d=40 forward 0.48 vs 0.54 s, forward+backward 1.88 vs
   * 1.85 s; B=2 L=4096 d=40 forward 1.04 vs 1.40 s; B=16 L=1024 d=80 forward 0.56 vs 0.68 s but backward
   * slower; B=1 L=1024 d=512 forward 0.55 vs 0.19 s, forward+backward 4.2 vs 0.6 s (wide heads are split into
   * column slices that each recompute the scores). Tests raise it to run the fused kernels on every shape.
   */
  fusedMaxDim: 64,
};

/**
 * softmax(q k^T * scale [masked]) v over q [..., Lq, d], k [..., Lk, d], v [..., Lk, dv]. Without a mask (and
 * head dims up to `attentionTuning.fusedMaxDim`) it is one fused primitive (the backend's flash-attention
 * kernels, which never hold the Lq x Lk scores); otherwise it is `attentionComposite`.
 */
export function scaledDotProductAttention(q: Tensor, k: Tensor, v: Tensor, o: AttentionOptions = {}): Tensor {
  const { scale, batch } = attentionShapes(q, k, v, o);
  const dim = Math.max(q.shape[q.rank - 1], v.shape[v.rank - 1]);
  if (!o.mask && attentionTuning.fused && dim <= attentionTuning.fusedMaxDim && k.shape[k.rank - 2] > 0) return fusedAttention(q, k, v, scale, batch);
  return attentionComposite(q, k, v, o);
}

function attentionShapes(q: Tensor, k: Tensor, v: Tensor, o: AttentionOptions): { scale: number; batch: number[] } {
  requireFloat('attention', q, k, v);
  if (q.rank < 2 || k.rank < 2 || v.rank < 2) throw new ShapeError('attention', `q ${fmtShape(q.shape)}, k ${fmtShape(k.shape)}, v ${fmtShape(v.shape)} need at least 2 dims`);
  const d = q.shape[q.rank - 1];
  if (k.shape[k.rank - 1] !== d || k.shape[k.rank - 2] !== v.shape[v.rank - 2]) {
    throw new ShapeError('attention', `q ${fmtShape(q.shape)}, k ${fmtShape(k.shape)}, v ${fmtShape(v.shape)} do not fit`);
  }
  const batch = broadcastShapes('attention', q.shape.slice(0, -2), k.shape.slice(0, -2), v.shape.slice(0, -2));
  return { scale: o.scale ?? 1 / Math.sqrt(d), batch };
}



/**
 * The fused primitive: the backend's `attention` kernel forward, its `attentionBackward` kernel backward
 * (from the saved row logsumexp, recomputing the probabilities), gradients summed over broadcast batch axes.
 */
function fusedAttention(q: Tensor, k: Tensor, v: Tensor, scale: number, batch: number[]): Tensor {
  const be = backendOf('attention', q, k, v);
  const lq = q.shape[q.rank - 2];
  const b = numel(batch);
  const out = empty(be, [...batch, lq, v.shape[v.rank - 1]], 'float32');
  // The logsumexp lives exactly as long as `out` when the backward will read it (not in the caller's tidy scope).
  const lse = keep(empty(be, [b, lq], 'float32'));
  const recording = isGradEnabled() && [q, k, v].some((t) => t.requiresGrad);
  const views = (f: (qv: View, kv: View, vv: View) => void): void => noGrad(() => {
    const temps: Tensor[] = [];
    try { f(batchedView3d(q, [...batch, ...q.shape.slice(-2)], temps), batchedView3d(k, [...batch, ...k.shape.slice(-2)], temps), batchedView3d(v, [...batch, ...v.shape.slice(-2)], temps)); } finally { for (const t of temps) t.dispose(); }
  });
  views((qv, kv, vv) => launch('attention', be, [q, k, v], [out], () => be.attention(qv, kv, vv, scale, out.storage, lse.storage)));
  if (!recording) { lse.dispose(); return out; }
  out.own(lse);
  record('attention', [q, k, v], [out], ([g]) => {
    const dq = empty(be, [...batch, ...q.shape.slice(-2)], 'float32');
    const dk = empty(be, [...batch, ...k.shape.slice(-2)], 'float32');
    const dv = empty(be, [...batch, ...v.shape.slice(-2)], 'float32');
    const temps: Tensor[] = [];
    const gv = batchedView3d(g!, [...batch, ...g!.shape.slice(-2)], temps);
    views((qv, kv, vv) => launch('attentionBackward', be, [q, k, v, g!], [dq, dk, dv], () => be.attentionBackward(qv, kv, vv, as3d(out)!, lse, gv, scale, dq.storage, dk.storage, dv.storage)));
    for (const t of temps) t.dispose();
    return [unbroadcast(dq, q.shape), unbroadcast(dk, k.shape), unbroadcast(dv, v.shape)];
  });
  return out;
}

/**
 * The composite attention (matmul, softmax, matmul; chunked over query rows above `attentionTuning.maxScoreBytes`):
 * the masked path and the reference the fused kernels are tested against.
 */
export function attentionComposite(q: Tensor, k: Tensor, v: Tensor, o: AttentionOptions = {}): Tensor {
  const { scale, batch } = attentionShapes(q, k, v, o);
  const lq = q.shape[q.rank - 2];
  const lk = k.shape[k.rank - 2];
  const rowBytes = numel(batch) * lk * 4;
  const rows = Math.max(1, Math.floor(attentionTuning.maxScoreBytes / rowBytes));
  if (rows >= lq) return composite([q, k, v], () => attentionRows(q, k, v, scale, o.mask ?? null));
  return chunkedAttention(q, k, v, scale, o.mask ?? null, batch, rows);
}

/** softmax(q k^T * scale) v for the rows of q given (mask rows already matching q's). */
function attentionRows(q: Tensor, k: Tensor, v: Tensor, scale: number, mask: Tensor | null): Tensor {
  return matmul(attentionProbs(q, k, scale, mask), v);
}

function attentionProbs(q: Tensor, k: Tensor, scale: number, mask: Tensor | null): Tensor {
  let s = mul(matmul(q, transpose(k)), scale);
  if (mask) s = where(mask, s, -Infinity);
  return softmax(s, -1);
}

/** The mask rows [r0, r0 + n) along its query axis (all of it when that axis broadcasts). */
function maskRows(mask: Tensor | null, r0: number, n: number): Tensor | null {
  if (!mask || mask.rank < 2 || mask.shape[mask.rank - 2] === 1) return mask;
  return narrow(mask, mask.rank - 2, r0, n);
}

/**
 * Attention over chunks of query rows. The forward keeps only q, k, v and the output; the backward recomputes
 * each chunk's probabilities P and uses dS = P * (dP - rowsum(dO * O)), dQ = dS K scale, dK += dS^T Q scale,
 * dV += P^T dO (the flash-attention backward).
 */
function chunkedAttention(q: Tensor, k: Tensor, v: Tensor, scale: number, mask: Tensor | null, batch: number[], rows: number): Tensor {
  const lq = q.shape[q.rank - 2];
  const axis = batch.length;
  const qe = expand(q, [...batch, ...q.shape.slice(-2)]);
  const ke = expand(k, [...batch, ...k.shape.slice(-2)]);
  const ve = expand(v, [...batch, ...v.shape.slice(-2)]);
  const starts: number[] = [];
  for (let r = 0; r < lq; r += rows) starts.push(r);
  const out = noGrad(() => {
    const parts = starts.map((r0) => tidy(() => {
      const n = Math.min(rows, lq - r0);
      return contiguous(attentionRows(narrow(qe, axis, r0, n), ke, ve, scale, maskRows(mask, r0, n)));
    }));
    const o = concat(parts, axis);
    for (const p of parts) p.dispose();
    return o;
  });
  for (const t of [qe, ke, ve]) if (t !== q && t !== k && t !== v) out.own(t);
  record('attention', [q, k, v], [out], ([g]) => {
    let dk = zerosLike(ke);
    let dv = zerosLike(ve);
    const dqParts: Tensor[] = [];
    for (const r0 of starts) {
      const n = Math.min(rows, lq - r0);
      const [dq, dkNext, dvNext] = tidy(() => {
        const qc = narrow(qe, axis, r0, n);
        const gc = narrow(g!, axis, r0, n);
        const p = attentionProbs(qc, ke, scale, maskRows(mask, r0, n));
        const dp = matmul(gc, transpose(ve));
        const rowDot = sum(mul(gc, narrow(out, axis, r0, n)), -1, { keepdim: true });
        const ds = mul(mul(p, sub(dp, rowDot)), scale);
        return [matmul(ds, ke), add(dk, matmul(transpose(ds), qc)), add(dv, matmul(transpose(p), gc))];
      });
      dk.dispose(); dv.dispose();
      dk = dkNext; dv = dvNext;
      dqParts.push(dq);
    }
    const dq = concat(dqParts, axis);
    for (const p of dqParts) p.dispose();
    return [unbroadcast(dq, q.shape), unbroadcast(dk, k.shape), unbroadcast(dv, v.shape)];
  });
  return out;
}
