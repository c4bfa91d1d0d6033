import type { Storage, View } from '../../backend.js';
import type { DType, TypedArray } from '../../dtype.js';
import { BackendMismatchError } from '../../errors.js';

export class CpuStorage implements Storage {
  readonly backend = 'cpu' as const;
  refs = 0;
  freed = false;
  constructor(readonly dtype: DType, readonly data: TypedArray) {}
  get size(): number { return this.data.length; }
}

export function cs(s: Storage, op: string): CpuStorage {
  if (!(s instanceof CpuStorage)) throw new BackendMismatchError(op, `expected a cpu storage, got ${s.backend}`);
  return s;
}

/** Storage element offsets of every element of `v`, in row-major order. The one strided walk of the CPU backend. */
export function offsets(v: View): Int32Array | number[] {
  const rank = v.shape.length;
  const n = v.shape.reduce((a, b) => a * b, 1);
  const out = new Int32Array(n);
  if (n === 0) return out;
  const idx = new Array<number>(rank).fill(0);
  let off = v.offset;
  for (let i = 0; i < n; i++) {
    out[i] = off;
    for (let d = rank - 1; d >= 0; d--) {
      idx[d]++; off += v.strides[d];
      if (idx[d] < v.shape[d]) break;
      off -= v.strides[d] * v.shape[d]; idx[d] = 0;
    }
  }
  return out;
}

/** The view's elements as a new row-major array. */
export function gather(v: View): TypedArray {
  const src = cs(v.storage, 'read').data;
  const offs = offsets(v);
  const out = src instanceof Float32Array ? new Float32Array(offs.length) : new Int32Array(offs.length);
  for (let i = 0; i < offs.length; i++) out[i] = src[offs[i]];
  return out;
}
