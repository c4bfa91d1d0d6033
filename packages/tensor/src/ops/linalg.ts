/** Batched matrix multiplication with broadcast batch dims (PyTorch matmul semantics, 1-D included). */
import type { View } from '../backend.js';
import { ShapeError, fmtShape } from '../errors.js';
import { noGrad, record } from '../autodiff.js';
import { broadcastShapes, numel } from '../shape.js';
import type { Tensor } from '../tensor.js';
import { as3d, backendOf, empty, launch, requireFloat } from './core.js';
import { contiguous, expand, reshape, transpose, unsqueeze } from './views.js';
import { unbroadcast } from './broadcast.js';
import { batchedView3d } from './batched.js';
import { activationDerivative, mul } from './elementwise.js';
import { sum } from './reduce.js';


export function matmul(a: Tensor, b: Tensor): Tensor {
  const be = backendOf('matmul', a, b);
  requireFloat('matmul', a, b);
  if (a.rank === 0 || b.rank === 0) throw new ShapeError('matmul', `needs at least 1-D inputs, got ${fmtShape(a.shape)} @ ${fmtShape(b.shape)}`);
  if (a.rank === 1 || b.rank === 1) {
    // 1-D operands become matrices; the added axes are dropped again (both 1-D: a rank-0 dot product).
    const a2 = a.rank === 1 ? unsqueeze(a, 0) : a;
    const b2 = b.rank === 1 ? unsqueeze(b, 1) : b;
    const m = matmul(a2, b2);
    const r = reshape(m, m.shape.filter((_, d) => !((a.rank === 1 && d === m.rank - 2) || (b.rank === 1 && d === m.rank - 1))));
    r.own(m);
    if (a2 !== a) r.own(a2);
    if (b2 !== b) r.own(b2);
    return r;
  }
  const [m, k] = a.shape.slice(-2);
  const [k2, n] = b.shape.slice(-2);
  if (k !== k2) throw new ShapeError('matmul', `inner dimensions differ: ${fmtShape(a.shape)} @ ${fmtShape(b.shape)}`);
  const batch = broadcastShapes('matmul', a.shape.slice(0, -2), b.shape.slice(0, -2));
  const out = empty(be, [...batch, m, n], 'float32');
  noGrad(() => {
    const temps: Tensor[] = [];
    const av = batchedView3d(a, [...batch, m, k], temps);
    const bv = batchedView3d(b, [...batch, k, n], temps);
    launch('matmul', be, [a, b], [out], () => be.matmul(av, bv, out.storage));
    for (const t of temps) t.dispose();
  });
  record('matmul', [a, b], [out], ([g]) => [
    a.requiresGrad ? unbroadcast(matmul(g!, transpose(b)), a.shape) : null,
    b.requiresGrad ? unbroadcast(matmul(transpose(a), g!), b.shape) : null,
  ]);
  return out;
}


/**
 * y = act(x @ w^T + bias): x [..., K], w [N, K] (PyTorch's Linear layout), bias [N]. One GEMM whose epilogue adds
 * the bias and applies the activation as it stores (no separate elementwise passes); w^T is read through strides.
 * The backward recomputes the pre-activation when there is an activation.
 */
export function linear(x: Tensor, w: Tensor, bias?: Tensor | null, act: 'none' | 'silu' | 'gelu' = 'none'): Tensor {
  const be = backendOf('linear', x, w, ...(bias ? [bias] : []));
  requireFloat('linear', x, w, ...(bias ? [bias] : []));
  if (x.rank < 1 || w.rank !== 2 || x.shape[x.rank - 1] !== w.shape[1]) {
    throw new ShapeError('linear', `x ${fmtShape(x.shape)} and weight ${fmtShape(w.shape)} do not fit (need x [..., K], weight [N, K])`);
  }
  const [n, k] = w.shape;
  if (bias && (bias.rank !== 1 || bias.shape[0] !== n)) throw new ShapeError('linear', `bias ${fmtShape(bias.shape)} must be [${n}]`);
  const lead = x.shape.slice(0, -1);
  const m = numel(lead);
  const out = empty(be, [...lead, n], 'float32');
  noGrad(() => {
    const xc = contiguous(x);
    const x2 = reshape(xc, [m, k]);
    const xv: View = { storage: x2.storage, shape: [1, m, k], strides: [0, x2.strides[0], x2.strides[1]], offset: x2.offset };
    const wv: View = { storage: w.storage, shape: [1, k, n], strides: [0, w.strides[1], w.strides[0]], offset: w.offset };
    const bv: View | null = bias ? { storage: bias.storage, shape: [n], strides: [bias.strides[0]], offset: bias.offset } : null;
    launch('linear', be, bias ? [x, w, bias] : [x, w], [out], () => be.matmul(xv, wv, out.storage, { bias: bv, act }));
    if (x2 !== xc) x2.dispose();
    if (xc !== x) xc.dispose();
  });
  record('linear', bias ? [x, w, bias] : [x, w], [out], ([g]) => {
    let gz = g!;
    if (act !== 'none') gz = mul(gz, activationDerivative(act, noGrad(() => linear(x, w, bias, 'none'))));
    const g2 = reshape(gz, [m, n]);
    return [
      x.requiresGrad ? reshape(matmul(g2, w), x.shape) : null,
      w.requiresGrad ? matmul(transpose(g2), reshape(x, [m, k])) : null,
      ...(bias ? [bias.requiresGrad ? sum(g2, 0) : null] : []),
    ];
  });
  return out;
}
