import type { Tensor } from '../tensor.js';
import { sameShape } from '../shape.js';
import { reshape } from './views.js';
import { sum } from './reduce.js';

/** Sums `g` over the axes along which a tensor of `shape` was broadcast to g.shape. */
export function unbroadcast(g: Tensor, shape: readonly number[]): Tensor {
  if (sameShape(g.shape, shape)) return g;
  const lead = g.rank - shape.length;
  const axes: number[] = [];
  for (let d = 0; d < g.rank; d++) if (d < lead || (shape[d - lead] === 1 && g.shape[d] !== 1)) axes.push(d);
  const s = axes.length ? sum(g, axes, { keepdim: true }) : g;
  return reshape(s, shape);
}
