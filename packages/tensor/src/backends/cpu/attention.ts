/**
 * CPU fused attention: the reference for the flash-attention kernels. Each (batch, query row) gathers its
 * scores against every key in f64, so this backend does hold one row of Lk scores at a time (never the
 * Lq x Lk matrix); the backward recomputes P from the saved logsumexp as the GPU kernels do.
 */
import type { View } from '../../backend.js';
import { ShapeError, fmtShape } from '../../errors.js';
import { CpuStorage, cs } from './storage.js';

/** The 2D slice v[batch] as a contiguous row-major f64 array. */
function slice2d(v: View, batch: number, op: string): Float64Array {
  const [, rows, cols] = v.shape;
  const [sb, sr, sc] = v.strides;
  const src = cs(v.storage, op).data;
  const out = new Float64Array(rows * cols);
  const base = v.offset + batch * sb;
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[r * cols + c] = src[base + r * sr + c * sc];
  return out;
}

function dims(q: View, k: View, v: View, op: string): [number, number, number, number, number] {
  if (q.shape.length !== 3 || k.shape.length !== 3 || v.shape.length !== 3) {
    throw new ShapeError(op, `expected 3D views, got q ${fmtShape(q.shape)}, k ${fmtShape(k.shape)}, v ${fmtShape(v.shape)}`);
  }
  const [b, lq, d] = q.shape;
  const [, lk, dv] = v.shape;
  if (k.shape[0] !== b || v.shape[0] !== b || k.shape[2] !== d || k.shape[1] !== lk) {
    throw new ShapeError(op, `q ${fmtShape(q.shape)}, k ${fmtShape(k.shape)}, v ${fmtShape(v.shape)} do not fit`);
  }
  return [b, lq, lk, d, dv];
}

/** Scaled scores of query row i against every key: s[j] = scale * q_i . k_j. */
function scores(Q: Float64Array, K: Float64Array, i: number, lk: number, d: number, scale: number, s: Float64Array): void {
  for (let j = 0; j < lk; j++) {
    let acc = 0;
    for (let c = 0; c < d; c++) acc += Q[i * d + c] * K[j * d + c];
    s[j] = acc * scale;
  }
}

export function attention(q: View, k: View, v: View, scale: number, out: CpuStorage, lse: CpuStorage): void {
  const [b, lq, lk, d, dv] = dims(q, k, v, 'attention');
  const o = out.data; const l = lse.data;
  const s = new Float64Array(lk);
  const row = new Float64Array(dv);
  for (let bi = 0; bi < b; bi++) {
    const Q = slice2d(q, bi, 'attention'); const K = slice2d(k, bi, 'attention'); const V = slice2d(v, bi, 'attention');
    for (let i = 0; i < lq; i++) {
      scores(Q, K, i, lk, d, scale, s);
      let m = -Infinity;
      for (let j = 0; j < lk; j++) m = Math.max(m, s[j]);
      let sum = 0;
      row.fill(0);
      for (let j = 0; j < lk; j++) {
        const p = Math.exp(s[j] - m);
        sum += p;
        for (let c = 0; c < dv; c++) row[c] += p * V[j * dv + c];
      }
      for (let c = 0; c < dv; c++) o[(bi * lq + i) * dv + c] = row[c] / sum;
      l[bi * lq + i] = m + Math.log(sum);
    }
  }
}

export function attentionBackward(q: View, k: View, v: View, out: View, lse: View, dout: View, scale: number,
  dq: CpuStorage, dk: CpuStorage, dvOut: CpuStorage): void {
  const [b, lq, lk, d, dv] = dims(q, k, v, 'attentionBackward');
  const s = new Float64Array(lk);
  const lseData = cs(lse.storage, 'attentionBackward').data;
  for (let bi = 0; bi < b; bi++) {
    const Q = slice2d(q, bi, 'attentionBackward'); const K = slice2d(k, bi, 'attentionBackward'); const V = slice2d(v, bi, 'attentionBackward');
    const O = slice2d(out, bi, 'attentionBackward'); const G = slice2d(dout, bi, 'attentionBackward');
    const dQ = new Float64Array(lq * d); const dK = new Float64Array(lk * d); const dV = new Float64Array(lk * dv);
    for (let i = 0; i < lq; i++) {
      scores(Q, K, i, lk, d, scale, s);
      const li = lseData[lse.offset + bi * lse.strides[0] + i * lse.strides[1]];
      let rowDot = 0;
      for (let c = 0; c < dv; c++) rowDot += G[i * dv + c] * O[i * dv + c];
      for (let j = 0; j < lk; j++) {
        const p = Math.exp(s[j] - li);
        let dp = 0;
        for (let c = 0; c < dv; c++) { dp += G[i * dv + c] * V[j * dv + c]; dV[j * dv + c] += p * G[i * dv + c]; }
        const ds = p * (dp - rowDot) * scale;
        for (let c = 0; c < d; c++) { dQ[i * d + c] += ds * K[j * d + c]; dK[j * d + c] += ds * Q[i * d + c]; }
      }
    }
    dq.data.set(dQ, bi * lq * d); dk.data.set(dK, bi * lk * d); dvOut.data.set(dV, bi * lk * dv);
  }
}
