/**
 * CPU reductions over the last `reducedRank` axes: the reference. Float sums accumulate in f64 and
 * round once; int32 sums wrap like two's complement (as on the GPU). max/min propagate NaN; argmax
 * returns the first index of the maximum, counting NaN as the maximum (as PyTorch does).
 */
import type { ReduceOp, View } from '../../backend.js';
import { ShapeError, fmtShape } from '../../errors.js';
import { CpuStorage, cs, offsets } from './storage.js';

export function reduce(op: ReduceOp, x: View, reducedRank: number, out: CpuStorage): void {
  const rank = x.shape.length;
  if (reducedRank < 0 || reducedRank > rank) throw new ShapeError(op, `cannot reduce ${reducedRank} axes of ${fmtShape(x.shape)}`);
  const inner = x.shape.slice(rank - reducedRank).reduce((a, b) => a * b, 1);
  const nOut = x.shape.slice(0, rank - reducedRank).reduce((a, b) => a * b, 1);
  if (nOut === 0) return;
  if (inner === 0 && op !== 'sum') throw new ShapeError(op, `reduction over zero elements of ${fmtShape(x.shape)}`);
  const src = cs(x.storage, op).data;
  const offs = offsets(x); // row-major, so output o owns offs[o * inner .. (o + 1) * inner)
  const o = out.data;
  const isInt = x.storage.dtype === 'int32';
  for (let r = 0; r < nOut; r++) {
    const base = r * inner;
    if (op === 'sum') {
      let s = 0;
      if (isInt) for (let j = 0; j < inner; j++) s = (s + src[offs[base + j]]) | 0;
      else for (let j = 0; j < inner; j++) s += src[offs[base + j]];
      o[r] = s;
    } else if (op === 'max' || op === 'min') {
      let best = src[offs[base]];
      for (let j = 1; j < inner; j++) {
        const v = src[offs[base + j]];
        if (Number.isNaN(v) || (op === 'max' ? v > best : v < best)) best = Number.isNaN(best) ? best : v;
      }
      o[r] = best;
    } else {
      let best = src[offs[base]], idx = 0;
      for (let j = 1; j < inner; j++) {
        const v = src[offs[base + j]];
        if (v > best || (Number.isNaN(v) && !Number.isNaN(best))) { best = v; idx = j; }
      }
      o[r] = idx;
    }
  }
}
