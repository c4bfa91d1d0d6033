/** Batched matrix multiplication with broadcast batch dims (PyTorch matmul semantics, 1-D included). */
import type { View } from '../backend.js';
import { ShapeError, fmtShape } from '../errors.js';
import { noGrad, record } from '../autodiff.js';
import { broadcastShapes, numel } from '../shape.js';
import type { Tensor } from '../tensor.js';
import { backendOf, empty, launch, requireFloat } from './core.js';
import { contiguous, expand, reshape, transpose, unsqueeze } from './views.js';
import { unbroadcast } from './broadcast.js';

/** Views a [...batch, R, C] tensor as [B, R, C] when its batch dims merge into one stride, else null. */
function as3d(x: Tensor): View | null {
  const r = x.rank;
  const batch = x.shape.slice(0, r - 2);
  let stride = 0;
  let seen = false;
  for (let d = batch.length - 1; d >= 0; d--) {
    if (batch[d] === 1) continue;
    if (!seen) { stride = x.strides[d]; seen = true; continue; }
    // Merging needs stride[d] == stride[d+1] * size[d+1] over non-trivial dims (0 for fully broadcast).
    let inner = d + 1; while (batch[inner] === 1) inner++;
    if (x.strides[d] !== x.strides[inner] * batch[inner]) return null;
  }
  return { storage: x.storage, shape: [numel(batch), x.shape[r - 2], x.shape[r - 1]], strides: [stride, x.strides[r - 2], x.strides[r - 1]], offset: x.offset };
}

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
    const view3d = (x: Tensor, shape: number[]): View => {
      const e = expand(x, shape);
      if (e !== x) temps.push(e);
      const v = as3d(e);
      if (v) return v;
      const c = contiguous(e);
      temps.push(c);
      return as3d(c)!;
    };
    const av = view3d(a, [...batch, m, k]);
    const bv = view3d(b, [...batch, k, n]);
    launch('matmul', be, [a, b], [out], () => be.matmul(av, bv, out.storage));
    for (const t of temps) t.dispose();
  });
  record('matmul', [a, b], [out], ([g]) => [
    a.requiresGrad ? unbroadcast(matmul(g!, transpose(b)), a.shape) : null,
    b.requiresGrad ? unbroadcast(matmul(transpose(a), g!), b.shape) : null,
  ]);
  return out;
}

