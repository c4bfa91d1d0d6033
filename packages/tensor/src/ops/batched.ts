/** Internal: batched operands as 3D views for the backends' batched kernels (matmul, attention). Not exported. */
import type { View } from '../backend.js';
import type { Tensor } from '../tensor.js';
import { as3d } from './core.js';
import { contiguous, expand } from './views.js';

/** x expanded to `shape` [...batch, R, C] as a 3D view, copying (into `temps`) only when the batch dims do not merge. */
export function batchedView3d(x: Tensor, shape: readonly number[], temps: Tensor[]): View {
  const e = expand(x, shape);
  if (e !== x) temps.push(e);
  const v = as3d(e);
  if (v) return v;
  const c = contiguous(e);
  temps.push(c);
  return as3d(c)!;
}
