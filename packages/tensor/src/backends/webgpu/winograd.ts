/**
 * 3x3, stride-1 conv2d by Winograd's minimal filtering F(m x m, 3 x 3) (Lavin & Gray, "Fast Algorithms for
 * Convolutional Neural Networks", CVPR 2016, arXiv:1509.09308, sections 4.1-4.2):
 *   Y = A^T [ (G g G^T) . (B^T d B) ] A   per m x m output tile, d the (m+2) x (m+2) input patch.
 * Summed over input channels, the elementwise product becomes (m+2)^2 independent GEMMs
 *   M[e] (O x T) = U[e] (O x C) @ V[e] (C x T),  e = one of the (m+2)^2 transform positions, T = tiles,
 * run by the GEMM kernel of matmul.ts as one batched call. F(4x4, 3x3) does 36 multiplies per 16 outputs
 * where the direct (im2col) form does 144: the GEMM work drops 4x, F(2x2, 3x3) 2.25x. The transforms are
 * three light kernels (input, weight, output) that touch each value once.
 *
 * Why here: on lavapipe the GEMM is bound by per-lane loads (see matmul.ts), not by arithmetic, so cutting
 * the GEMM's size is the one lever that moves conv2d by a large factor. Accuracy: the transforms add a few
 * float32 roundings; F(4x4) errors measured ~1e-6 relative to the output scale on SD-like data
 * (test/backend-matmul-conv.test.ts bounds them).
 */
import type { View } from '../../backend.js';
import type { GpuContext, GpuStorage } from './context.js';
import { dispatchGrid, gemm } from './matmul.js';

export type WinogradTile = 2 | 4;

export interface Mats { BT: number[][]; G: number[][]; AT: number[][] }

// F(2x2,3x3): Lavin & Gray (2016), section 4.1 (interpolation points 0, 1, -1, inf).
// F(4x4,3x3): Toom-Cook at the points 0, 1, -1, 1/2, -2, inf: AT[i][j] = a_j^i, G[j][k] = a_j^k / prod_{l!=j}(a_j - a_l),
// BT solved from the identity sum_j AT[i][j] G[j][k] BT[j][l] = [l == i + k] (exact in float64). Measured on SD-like
// data (C = 320) this set's float32 error is 2.7x smaller than Lavin & Gray's 0, +-1, +-2 (1.2e-5 vs 3.3e-5 of the
// output's std); F(2x2) has 2e-6. The identity is checked in test/backend-matmul-conv.test.ts.
export const WINOGRAD_MATRICES: Record<WinogradTile, Mats> = {
  2: {
    BT: [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
    G: [[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]],
    AT: [[1, 1, 1, 0], [0, 1, -1, -1]],
  },
  4: {
    BT: [[1, -1.5, -2, 1.5, 1, 0], [0, -1, 0.5, 2.5, 1, 0], [0, 1, -2.5, 0.5, 1, 0], [0, -2, -1, 2, 1, 0], [0, 0.5, -1, -0.5, 1, 0], [0, 1, -1.5, -2, 1.5, 1]],
    G: [[1, 0, 0], [1 / 3, 1 / 3, 1 / 3], [-1 / 3, 1 / 3, -1 / 3], [-16 / 15, -8 / 15, -4 / 15], [1 / 15, -2 / 15, 4 / 15], [0, 0, 1]],
    AT: [[1, 1, 1, 1, 1, 0], [0, 1, -1, 0.5, -2, 0], [0, 1, 1, 0.25, 4, 0], [0, 1, -1, 0.125, -8, 1]],
  },
};
const MATS = WINOGRAD_MATRICES;

/** A WGSL expression for sum_k coef[k] * terms[k], skipping zeros and writing +-1 as plain adds. */
function lin(coef: number[], terms: string[]): string {
  const parts: string[] = [];
  coef.forEach((c, k) => {
    if (c === 0) return;
    const mag = Math.abs(c);
    const t = mag === 1 ? terms[k] : `${Number.isInteger(mag) ? mag.toFixed(1) : mag.toPrecision(9)} * ${terms[k]}`;
    parts.push(parts.length === 0 ? (c < 0 ? `-(${t})` : t) : `${c < 0 ? '-' : '+'} ${t}`);
  });
  return parts.length ? parts.join(' ') : '0.0';
}

const WG = 64;

/** V[e, c, tl] = (B^T d B)[e] for the tiles [t0, t0 + tc) of every image. */
function inputSource(m: WinogradTile): string {
  const { BT } = MATS[m]; const a = m + 2;
  const L: string[] = [`@group(0) @binding(0) var<storage, read> X: array<f32>;
@group(0) @binding(1) var<storage, read_write> V: array<f32>;
@group(0) @binding(2) var<storage, read> p: array<u32>;
// p: C H W ph pw th tw xOff sN sC sH sW t0 tc C4 tc4 T y0 z0
fn pi(i: u32) -> i32 { return bitcast<i32>(p[i]); }
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  let C = p[0]; let H = pi(1u); let W = pi(2u); let th = p[5]; let tw = p[6];
  let tl = gid.x; let c = wid.y + p[17]; let tc4 = p[15]; let C4 = p[14];
  if (tl >= tc4) { return; }
  let t = min(p[12] + tl, p[16] - 1u);
  let n = t / (th * tw); let r = t % (th * tw);
  let y0 = i32((r / tw) * ${m}u) - pi(3u); let x0 = i32((r % tw) * ${m}u) - pi(4u);
  let ok = tl < p[13] && c < C;
  let base = pi(7u) + i32(n) * pi(8u) + i32(min(c, C - 1u)) * pi(9u);
  let sH = pi(10u); let sW = pi(11u);`];
  for (let i = 0; i < a; i++) {
    L.push(`  let iy${i} = y0 + ${i}; let ry${i} = ok && iy${i} >= 0 && iy${i} < H; let oy${i} = base + clamp(iy${i}, 0, H - 1) * sH;`);
  }
  for (let j = 0; j < a; j++) L.push(`  let ix${j} = x0 + ${j}; let rx${j} = ix${j} >= 0 && ix${j} < W; let ox${j} = clamp(ix${j}, 0, W - 1) * sW;`);
  for (let i = 0; i < a; i++) for (let j = 0; j < a; j++) L.push(`  let d${i}_${j} = select(0.0, X[u32(oy${i} + ox${j})], ry${i} && rx${j});`);
  // t = d B (row i, column j: sum_k d[i][k] BT[j][k]), then v = B^T t.
  for (let i = 0; i < a; i++) for (let j = 0; j < a; j++) L.push(`  let t${i}_${j} = ${lin(BT[j], Array.from({ length: a }, (_, k) => `d${i}_${k}`))};`);
  L.push(`  let stride = C4 * tc4; let o = c * tc4 + tl;`);
  for (let i = 0; i < a; i++) for (let j = 0; j < a; j++) {
    L.push(`  V[${i * a + j}u * stride + o] = ${lin(BT[i], Array.from({ length: a }, (_, k) => `t${k}_${j}`))};`);
  }
  L.push('}');
  return L.join('\n');
}

/** U[e, o, c] = (G g G^T)[e], zero for c >= C (the GEMM's K is padded to C4). */
function weightSource(m: WinogradTile): string {
  const { G } = MATS[m]; const a = m + 2;
  const L: string[] = [`@group(0) @binding(0) var<storage, read> Wt: array<f32>;
@group(0) @binding(1) var<storage, read_write> U: array<f32>;
@group(0) @binding(2) var<storage, read> p: array<u32>;
// p: C O C4 off sO sC sH sW y0 z0
fn pi(i: u32) -> i32 { return bitcast<i32>(p[i]); }
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  let C = p[0]; let O = p[1]; let C4 = p[2];
  let c = gid.x; let o = wid.y + p[8];
  if (c >= C4) { return; }
  let ok = c < C;
  let base = pi(3u) + i32(o) * pi(4u) + i32(min(c, C - 1u)) * pi(5u);`];
  for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) L.push(`  let g${i}_${j} = select(0.0, Wt[u32(base + ${i} * pi(6u) + ${j} * pi(7u))], ok);`);
  for (let i = 0; i < a; i++) for (let j = 0; j < 3; j++) L.push(`  let t${i}_${j} = ${lin(G[i], [0, 1, 2].map((k) => `g${k}_${j}`))};`);
  L.push(`  let stride = O * C4; let q = o * C4 + c;`);
  for (let i = 0; i < a; i++) for (let j = 0; j < a; j++) L.push(`  U[${i * a + j}u * stride + q] = ${lin(G[j], [0, 1, 2].map((k) => `t${i}_${k}`))};`);
  L.push('}');
  return L.join('\n');
}

/** out[n, o, ty*m + i, tx*m + j] = (A^T M A)[i, j] for the tiles of one chunk. */
function outputSource(m: WinogradTile): string {
  const { AT } = MATS[m]; const a = m + 2;
  const L: string[] = [`@group(0) @binding(0) var<storage, read> Mv: array<f32>;
@group(0) @binding(1) var<storage, read_write> Y: array<f32>;
@group(0) @binding(2) var<storage, read> p: array<u32>;
// p: Ob Ho Wo th tw t0 tc tc4 y0 z0 O o0 (Ob: the output channels of this block, o0 its first, O all of them)
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  let Ob = p[0]; let Ho = p[1]; let Wo = p[2]; let th = p[3]; let tw = p[4]; let tc4 = p[7]; let O = p[10];
  let tl = gid.x; let o = wid.y + p[8];
  if (tl >= p[6]) { return; }
  let t = p[5] + tl;
  let n = t / (th * tw); let r = t % (th * tw);
  let y0 = (r / tw) * ${m}u; let x0 = (r % tw) * ${m}u;
  let stride = Ob * tc4; let q = o * tc4 + tl;`];
  for (let i = 0; i < a; i++) for (let j = 0; j < a; j++) L.push(`  let m${i}_${j} = Mv[${i * a + j}u * stride + q];`);
  for (let i = 0; i < m; i++) for (let j = 0; j < a; j++) L.push(`  let t${i}_${j} = ${lin(AT[i], Array.from({ length: a }, (_, k) => `m${k}_${j}`))};`);
  L.push(`  let ob = (n * O + p[11] + o) * Ho;`);
  for (let i = 0; i < m; i++) {
    L.push(`  if (y0 + ${i}u < Ho) {`);
    L.push(`    let row = (ob + y0 + ${i}u) * Wo + x0;`);
    for (let j = 0; j < m; j++) L.push(`    if (x0 + ${j}u < Wo) { Y[row + ${j}u] = ${lin(AT[j], Array.from({ length: a }, (_, k) => `t${i}_${k}`))}; }`);
    L.push('  }');
  }
  L.push('}');
  return L.join('\n');
}

const ceil4 = (x: number): number => Math.ceil(x / 4) * 4;

/**
 * out [N, O, Ho, Wo] = conv2d(x [N, C, H, W], w [O, C, 3, 3]) with stride 1, dilation 1, one group and
 * padding (ph, pw); x and w may be any strided views. `chunkBytes` caps the transformed-tile buffers.
 */
export function winogradConv2d(ctx: GpuContext, x: View, w: View, [ph, pw]: [number, number], out: GpuStorage, m: WinogradTile,
  chunkBytes: number, xBuf: GPUBuffer, wBuf: GPUBuffer): void {
  const [N, C, H, W] = x.shape;
  const O = w.shape[0];
  const Ho = H + 2 * ph - 2, Wo = W + 2 * pw - 2;
  const a = m + 2, E = a * a;
  const th = Math.ceil(Ho / m), tw = Math.ceil(Wo / m), T = N * th * tw;
  const C4 = ceil4(C);
  // Output channels in blocks so that each transformed-weight buffer U (E x Ob x C4) fits one binding: SD's
  // 1280-channel layers need 236 MB at F(4x4). One block's U lives at a time (they are 4x the weights' size).
  const budget = Math.min(ctx.limits.maxStorageBufferBindingSize, chunkBytes);
  const ob = Math.max(1, Math.min(O, Math.floor(budget / (E * C4 * 4))));
  // Tiles per chunk: the transformed input (E x C4 x tc4) and one block's GEMM output (E x Ob x tc4) must fit.
  const tc = Math.max(4, Math.min(ceil4(T), Math.floor(budget / (E * Math.max(C4, ob) * 4) / 4) * 4));
  const transformInput = (t0: number, tcc: number, tc4: number): GPUBuffer => {
    const V = ctx.acquire(E * C4 * tc4 * 4, 'conv2d');
    dispatchGrid(ctx, { key: `conv2d.wino${m}.input`, source: () => inputSource(m), buffers: [xBuf, V], kernel: `conv2d.winograd${m}.input` },
      [C, H, W, ph, pw, th, tw, x.offset, ...x.strides, t0, tcc, C4, tc4, T, 0, 0], 17, [Math.ceil(tc4 / WG), C4, 1]);
    return V;
  };
  // With one tile chunk (the usual case) the transformed input is made once and shared by every block.
  const shared = tc >= T ? transformInput(0, T, ceil4(T)) : null;
  for (let o0 = 0; o0 < O; o0 += ob) {
    const n = Math.min(ob, O - o0);
    const U = ctx.acquire(E * n * C4 * 4, 'conv2d');
    dispatchGrid(ctx, { key: `conv2d.wino${m}.weight`, source: () => weightSource(m), buffers: [wBuf, U], kernel: `conv2d.winograd${m}.weight` },
      [C, n, C4, w.offset + o0 * w.strides[0], ...w.strides, 0, 0], 8, [Math.ceil(C4 / WG), n, 1]);
    for (let t0 = 0; t0 < T; t0 += tc) {
      const tcc = Math.min(tc, T - t0), tc4 = ceil4(tcc);
      const V = shared ?? transformInput(t0, tcc, tc4);
      const Mb = ctx.acquire(E * n * tc4 * 4, 'conv2d');
      gemm(ctx, { batch: E, m: n, n: tcc, k: C4, a: U, aOff: 0, aSb: n * C4, aSm: C4, b: V, bOff: 0, bSb: C4 * tc4, bSk: tc4, bCols: tc4,
        c: Mb, cOff: 0, cSb: n * tc4, cSm: tc4 });
      dispatchGrid(ctx, { key: `conv2d.wino${m}.output`, source: () => outputSource(m), buffers: [Mb, out.buffer], kernel: `conv2d.winograd${m}.output` },
        [n, Ho, Wo, th, tw, t0, tcc, tc4, 0, 0, O, o0], 8, [Math.ceil(tc4 / WG), n, 1]);
      ctx.release(Mb);
      if (!shared) ctx.release(V);
    }
    ctx.release(U);
  }
  if (shared) ctx.release(shared);
  ctx.lastKernel = `conv2d.winograd${m}`;
}
