/**
 * CPU batched matmul: the reference. Each batch's operands are gathered into contiguous f64 arrays first,
 * then multiplied in i-k-j order (the innermost loop runs along contiguous rows of B and C) with f64
 * accumulation; the result rounds once, when stored into `out`.
 */
import type { MatmulEpilogue, View } from '../../backend.js';
import { gelu, silu } from '../math.js';
import { ShapeError, fmtShape } from '../../errors.js';
import { CpuStorage, cs } from './storage.js';

/** The 2D slice v[batch] as a contiguous row-major f64 array. */
function gather2d(v: View, batch: number): Float64Array {
  const [, rows, cols] = v.shape;
  const [sb, sr, sc] = v.strides;
  const src = cs(v.storage, 'matmul').data;
  const out = new Float64Array(rows * cols);
  const base = v.offset + batch * sb;
  for (let r = 0; r < rows; r++) {
    const rowBase = base + r * sr;
    for (let c = 0; c < cols; c++) out[r * cols + c] = src[rowBase + c * sc];
  }
  return out;
}

/** out[b] = a[b] @ b[b]: a [B,M,K], b [B,K,N] (any strides, batch stride may be 0), out contiguous [B,M,N]. */
export function matmul(a: View, b: View, out: CpuStorage, epilogue?: MatmulEpilogue): void {
  if (a.shape.length !== 3 || b.shape.length !== 3) throw new ShapeError('matmul', `expected 3D views, got ${fmtShape(a.shape)} @ ${fmtShape(b.shape)}`);
  const [batch, m, k] = a.shape;
  const n = b.shape[2];
  if (b.shape[0] !== batch || b.shape[1] !== k) throw new ShapeError('matmul', `inner dimensions differ: ${fmtShape(a.shape)} @ ${fmtShape(b.shape)}`);
  const o = out.data;
  const row = new Float64Array(n);
  // Epilogue: the product rounds to float32 first, as the GPU kernel stores it, then bias and activation.
  let bias: Float64Array | null = null;
  if (epilogue?.bias) {
    if (epilogue.bias.shape.length !== 1 || epilogue.bias.shape[0] !== n) throw new ShapeError('matmul', `bias ${fmtShape(epilogue.bias.shape)} must be [${n}]`);
    bias = gather2d({ ...epilogue.bias, shape: [1, 1, n], strides: [0, 0, epilogue.bias.strides[0]] }, 0);
  }
  const act = epilogue?.act === 'silu' ? silu : epilogue?.act === 'gelu' ? gelu : null;
  // A batch stride of 0 means every batch shares one operand: gather it once.
  let aShared: Float64Array | null = null, bShared: Float64Array | null = null;
  for (let bi = 0; bi < batch; bi++) {
    const A = a.strides[0] === 0 ? (aShared ??= gather2d(a, 0)) : gather2d(a, bi);
    const B = b.strides[0] === 0 ? (bShared ??= gather2d(b, 0)) : gather2d(b, bi);
    for (let i = 0; i < m; i++) {
      row.fill(0);
      for (let p = 0; p < k; p++) {
        const aip = A[i * k + p];
        const bRow = p * n;
        for (let j = 0; j < n; j++) row[j] += aip * B[bRow + j];
      }
      const outRow = (bi * m + i) * n;
      if (!bias && !act) { for (let j = 0; j < n; j++) o[outRow + j] = row[j]; continue; }
      for (let j = 0; j < n; j++) {
        let v = Math.fround(row[j]);
        if (bias) v = Math.fround(v + bias[j]);
        o[outRow + j] = act ? act(v) : v;
      }
    }
  }
}
