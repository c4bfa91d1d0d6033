/**
 * conv2d on WebGPU as im2col + the GEMM of matmul.ts, per group:
 *   out[n, g*Og + o, p] = sum_k W[g*Og + o, k] * cols[n, g, k, p],  k = (c, i, j), p = (oh, ow).
 * The im2col kernel writes `cols` zero-padded to vec4-aligned rows (K4 x Pc4) so the GEMM runs its fast
 * path; it is chunked over images and output positions so that no buffer exceeds the device's binding
 * limit. A 1x1, stride-1, unpadded convolution of a contiguous input skips im2col (the input already is
 * the B operand). im2col costs ~10-15% of the GEMM at SD shapes (a direct kernel would need unaligned,
 * scalar loads for the shifted input windows, which cost more on lavapipe) and keeps one tuned kernel.
 */
import type { Conv2dParams, View } from '../../backend.js';
import { isContiguous } from '../../backend.js';
import { DTypeError, ShapeError, fmtShape } from '../../errors.js';
import type { GpuContext, GpuStorage } from './context.js';
import { dispatchGrid, gemm, pack, zeroFill } from './matmul.js';
import { copy as ewCopy } from './elementwise.js';
import { winogradConv2d, type WinogradTile } from './winograd.js';
import { tuningFor } from './tuning.js';

const ceil4 = (x: number): number => Math.ceil(x / 4) * 4;
const WG = 64;

/** cols[z, k, q*4 + j] for z = image*G + group over a chunk of output positions [p0, p0 + pc). */
const im2colSource = (): string => `@group(0) @binding(0) var<storage, read> X: array<f32>;
@group(0) @binding(1) var<storage, read_write> D: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> p: array<u32>;
// p: Cg H W kh kw sh sw ph pw dh dw Wo Kg K4 cq p0 pc G xOff sN sC sH sW n0 y0 z0
fn pi(i: u32) -> i32 { return bitcast<i32>(p[i]); }
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  let H = pi(1u); let W = pi(2u); let kh = p[3]; let kw = p[4];
  let Wo = p[11]; let Kg = p[12]; let K4 = p[13]; let cq = p[14]; let p0 = p[15]; let pc = p[16]; let G = p[17];
  let q = gid.x; let k = wid.y + p[24]; let z = wid.z + p[25];
  if (q >= cq) { return; }
  let n = p[23] + z / G; let g = z % G;
  let kk = min(k, Kg - 1u);
  let c = kk / (kh * kw); let r = kk % (kh * kw); let ki = r / kw; let kj = r % kw;
  let base = pi(18u) + i32(n) * pi(19u) + i32(g * p[0] + c) * pi(20u);
  let dy = i32(ki * p[9]) - pi(7u); let dx = i32(kj * p[10]) - pi(8u);
  var pl = q * 4u;
  var oh = (p0 + pl) / Wo; var ow = (p0 + pl) % Wo;
  var v = vec4<f32>(0.0);
  for (var j = 0u; j < 4u; j++) {
    let ih = i32(oh) * pi(5u) + dy; let iw = i32(ow) * pi(6u) + dx;
    let ok = k < Kg && pl + j < pc && ih >= 0 && ih < H && iw >= 0 && iw < W;
    let x = X[u32(base + clamp(ih, 0, H - 1) * pi(21u) + clamp(iw, 0, W - 1) * pi(22u))];
    v[j] = select(0.0, x, ok);
    ow = ow + 1u;
    if (ow == Wo) { ow = 0u; oh = oh + 1u; }
  }
  D[(z * K4 + k) * cq + q] = v;
}`;

/** Packs any strided weight view [O, Cg, kh, kw] into contiguous [O, K4] rows (zero-padded). */
const wpackSource = (): string => `@group(0) @binding(0) var<storage, read> S: array<f32>;
@group(0) @binding(1) var<storage, read_write> D: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> p: array<u32>;
// p: Kg kh kw cq off sO sC sH sW y0 z0
fn pi(i: u32) -> i32 { return bitcast<i32>(p[i]); }
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  let Kg = p[0]; let khw = p[1] * p[2]; let cq = p[3];
  let q = gid.x; let o = wid.y + p[9];
  if (q >= cq) { return; }
  var v = vec4<f32>(0.0);
  for (var j = 0u; j < 4u; j++) {
    let k = min(q * 4u + j, Kg - 1u);
    let c = k / khw; let r = k % khw;
    let x = S[u32(pi(4u) + i32(o) * pi(5u) + i32(c) * pi(6u) + i32(r / p[2]) * pi(7u) + i32(r % p[2]) * pi(8u))];
    v[j] = select(0.0, x, q * 4u + j < Kg);
  }
  D[o * cq + q] = v;
}`;

/** Which conv2d algorithm runs: `convChoice.algorithm`, else env LATENTDEM_CONV=im2col|winograd2|winograd4, else automatic. */
export type ConvAlgorithm = 'im2col' | 'winograd2' | 'winograd4';

/**
 * Winograd serves 3x3, stride-1, undilated, ungrouped convolutions with at least the tuned number of input
 * and output channels (below that the transforms cost more than the GEMM work they save); `auto` takes the
 * algorithm the tuner chose (tuning.ts).
 */
export const convChoice = { algorithm: 'auto' as ConvAlgorithm | 'auto' };

function winogradTileFor(ctx: GpuContext, xs: readonly number[], ws: readonly number[], p: Conv2dParams): WinogradTile | null {
  const algo = convChoice.algorithm !== 'auto' ? convChoice.algorithm : (process.env.LATENTDEM_CONV as ConvAlgorithm | undefined) ?? 'auto';
  if (algo === 'im2col') return null;
  const [, C] = xs; const [O, , kh, kw] = ws;
  const fits = kh === 3 && kw === 3 && p.stride[0] === 1 && p.stride[1] === 1 && p.dilation[0] === 1 && p.dilation[1] === 1 && p.groups === 1;
  if (!fits) return null;
  if (algo === 'winograd2') return 2;
  if (algo === 'winograd4') return 4;
  const tuned = tuningFor(ctx).conv;
  if (tuned.algorithm === 'im2col' || C < tuned.minChannels || O < tuned.minChannels) return null;
  return tuned.algorithm === 'winograd2' ? 2 : 4;
}

/**
 * x [N,C,H,W], w [O,C/groups,kh,kw] -> out [N,O,Ho,Wo]. `chunkBytes` caps the im2col buffer (tests lower
 * it to exercise chunking); it never exceeds the device's binding limit.
 */
export function conv2d(ctx: GpuContext, x: View, w: View, p: Conv2dParams, out: GpuStorage, chunkBytes = 64 * 1024 * 1024): void {
  if (x.shape.length !== 4 || w.shape.length !== 4) throw new ShapeError('conv2d', `expected 4D input and weight, got ${fmtShape(x.shape)} and ${fmtShape(w.shape)}`);
  if (x.storage.dtype !== 'float32' || w.storage.dtype !== 'float32') throw new DTypeError('conv2d', 'webgpu conv2d needs float32 input and weight');
  const [N, C, H, W] = x.shape;
  const [O, Cg, kh, kw] = w.shape;
  const G = p.groups;
  const [sh, sw] = p.stride, [ph, pw] = p.padding, [dh, dw] = p.dilation;
  if (G < 1 || C % G !== 0 || O % G !== 0 || Cg !== C / G) {
    throw new ShapeError('conv2d', `groups=${G} does not fit input ${fmtShape(x.shape)} and weight ${fmtShape(w.shape)}`);
  }
  const Ho = Math.floor((H + 2 * ph - dh * (kh - 1) - 1) / sh) + 1;
  const Wo = Math.floor((W + 2 * pw - dw * (kw - 1) - 1) / sw) + 1;
  if (Ho <= 0 || Wo <= 0) throw new ShapeError('conv2d', `empty output for input ${fmtShape(x.shape)}, kernel ${kh}x${kw}`);
  const P = Ho * Wo, Og = O / G, Kg = Cg * kh * kw, K4 = ceil4(Kg);
  if (N === 0 || O === 0) return;
  if (Kg === 0) { zeroFill(ctx, out.buffer, N * O * P); return; }
  const temps: GPUBuffer[] = [];
  const xBuf = (x.storage as GpuStorage).buffer;

  const wino = winogradTileFor(ctx, x.shape, w.shape, p);
  if (wino) {
    winogradConv2d(ctx, x, w, [ph, pw], out, wino, chunkBytes, xBuf, (w.storage as GpuStorage).buffer);
    return;
  }

  // A operand: the weights as [O, K4] rows, used in place when already contiguous and aligned.
  let wBuf: GPUBuffer, wOff: number;
  if (isContiguous(w) && Kg % 4 === 0 && w.offset % 4 === 0) {
    wBuf = (w.storage as GpuStorage).buffer; wOff = w.offset;
  } else {
    wBuf = ctx.acquire(O * K4 * 4, 'conv2d'); temps.push(wBuf); wOff = 0;
    dispatchGrid(ctx, { key: 'conv2d.wpack', source: wpackSource, buffers: [(w.storage as GpuStorage).buffer, wBuf], kernel: 'conv2d.wpack' },
      [Kg, kh, kw, K4 / 4, w.offset, ...w.strides, 0, 0], 9, [Math.ceil(K4 / 4 / WG), O, 1]);
  }

  // 1x1 / stride 1 / no padding over a contiguous input: x[n] already is the [C, H*W] B operand.
  if (kh === 1 && kw === 1 && sh === 1 && sw === 1 && ph === 0 && pw === 0 && isContiguous(x) && Cg % 4 === 0 && P % 4 === 0 && x.offset % 4 === 0) {
    if (G === 1) {
      gemm(ctx, { batch: N, m: O, n: P, k: K4, a: wBuf, aOff: wOff, aSb: 0, aSm: K4, b: xBuf, bOff: x.offset, bSb: C * P, bSk: P, bCols: P,
        c: out.buffer, cOff: 0, cSb: O * P, cSm: P });
    } else {
      for (let n = 0; n < N; n++) {
        gemm(ctx, { batch: G, m: Og, n: P, k: K4, a: wBuf, aOff: wOff, aSb: Og * K4, aSm: K4, b: xBuf, bOff: x.offset + n * C * P, bSb: Cg * P, bSk: P, bCols: P,
          c: out.buffer, cOff: n * O * P, cSb: Og * P, cSm: P });
      }
    }
    for (const t of temps) ctx.release(t);
    return;
  }

  // im2col in chunks: as many whole images as fit (groups > 1: one image at a time), else a run of positions.
  const budget = Math.min(ctx.limits.maxStorageBufferBindingSize, chunkBytes);
  const perPos = G * K4 * 4;
  let pc = P, nb = 1;
  const P4 = ceil4(P);
  if (perPos * P4 > budget) pc = Math.max(4, Math.floor(budget / perPos / 4) * 4);
  else if (G === 1) nb = Math.max(1, Math.min(N, Math.floor(budget / (perPos * P4))));
  for (let n0 = 0; n0 < N; n0 += nb) {
    const nbc = Math.min(nb, N - n0);
    for (let p0 = 0; p0 < P; p0 += pc) {
      const pcc = Math.min(pc, P - p0), pc4 = ceil4(pcc);
      const cols = ctx.acquire(nbc * G * K4 * pc4 * 4, 'conv2d');
      const params = [Cg, H, W, kh, kw, sh, sw, ph, pw, dh, dw, Wo, Kg, K4, pc4 / 4, p0, pcc, G,
        x.offset, x.strides[0], x.strides[1], x.strides[2], x.strides[3], n0, 0, 0];
      dispatchGrid(ctx, { key: 'conv2d.im2col', source: im2colSource, buffers: [xBuf, cols], kernel: 'conv2d.im2col' },
        params, 24, [Math.ceil(pc4 / 4 / WG), K4, nbc * G]);
      if (G === 1) {
        gemm(ctx, { batch: nbc, m: O, n: pcc, k: K4, a: wBuf, aOff: wOff, aSb: 0, aSm: K4, b: cols, bOff: 0, bSb: K4 * pc4, bSk: pc4, bCols: pc4,
          c: out.buffer, cOff: n0 * O * P + p0, cSb: O * P, cSm: P });
      } else {
        gemm(ctx, { batch: G, m: Og, n: pcc, k: K4, a: wBuf, aOff: wOff, aSb: Og * K4, aSm: K4, b: cols, bOff: 0, bSb: K4 * pc4, bSk: pc4, bCols: pc4,
          c: out.buffer, cOff: n0 * O * P + p0, cSb: Og * P, cSm: P });
      }
      ctx.release(cols);
    }
  }
  for (const t of temps) ctx.release(t);
  ctx.lastKernel = 'conv2d.im2col+gemm';
}

/**
 * conv2d's weight gradient: x [N,C,H,W], g [N,O,Ho,Wo] contiguous -> out [O, C/groups, kh, kw]. Per group,
 * dW^T [Kg, Og] = sum over chunks of im2col(x) [Kg, positions] @ g^T [positions, Og]: the im2col kernel of the
 * forward, the output gradient packed transposed (small), and GEMMs that accumulate across image/position
 * chunks in their epilogue; one strided copy writes dW. Chunks keep every buffer under the binding limit.
 */
export function conv2dWeightGrad(ctx: GpuContext, x: View, g: View, p: Conv2dParams, [kh, kw]: [number, number], out: GpuStorage,
  chunkBytes = 64 * 1024 * 1024): void {
  if (x.storage.dtype !== 'float32' || g.storage.dtype !== 'float32') throw new DTypeError('conv2dWeightGrad', 'webgpu conv2d gradients need float32');
  if (!isContiguous(g)) throw new ShapeError('conv2dWeightGrad', 'internal: the output gradient must be contiguous');
  const [N, C, H, W] = x.shape;
  const [, O, Ho, Wo] = g.shape;
  const G = p.groups, Cg = C / G, Og = O / G, Kg = Cg * kh * kw, K4 = ceil4(Kg), Og4 = ceil4(Og), P = Ho * Wo;
  const [sh, sw] = p.stride, [ph, pw] = p.padding, [dh, dw] = p.dilation;
  if (O === 0 || Kg === 0) return;
  const acc = ctx.alloc(G * K4 * Og4, 'float32');
  if (N === 0 || P === 0) { zeroFill(ctx, acc.buffer, G * K4 * Og4); }
  const written = new Array<boolean>(G).fill(false);
  const xBuf = (x.storage as GpuStorage).buffer;
  const budget = Math.min(ctx.limits.maxStorageBufferBindingSize, chunkBytes);
  const perPos = G * K4 * 4;
  let pc = P, nb = 1;
  const P4 = ceil4(P);
  if (perPos * P4 > budget) pc = Math.max(4, Math.floor(budget / perPos / 4) * 4);
  else nb = Math.max(1, Math.min(N, Math.floor(budget / (perPos * P4))));
  for (let n0 = 0; n0 < N; n0 += nb) {
    const nbc = Math.min(nb, N - n0);
    for (let p0 = 0; p0 < P; p0 += pc) {
      const pcc = Math.min(pc, P - p0), pc4 = ceil4(pcc);
      const cols = ctx.acquire(nbc * G * K4 * pc4 * 4, 'conv2dWeightGrad');
      dispatchGrid(ctx, { key: 'conv2d.im2col', source: im2colSource, buffers: [xBuf, cols], kernel: 'conv2d.im2col' },
        [Cg, H, W, kh, kw, sh, sw, ph, pw, dh, dw, Wo, Kg, K4, pc4 / 4, p0, pcc, G, x.offset, x.strides[0], x.strides[1], x.strides[2], x.strides[3], n0, 0, 0],
        24, [Math.ceil(pc4 / 4 / WG), K4, nbc * G]);
      for (let ni = 0; ni < nbc; ni++) {
        for (let gi = 0; gi < G; gi++) {
          // g^T for this image, group and position chunk: [pcc, Og] read with strides (1, P), packed to [pc4, Og4].
          const gT = pack(ctx, { storage: g.storage, shape: [1, pcc, Og], strides: [0, 1, P], offset: g.offset + ((n0 + ni) * O + gi * Og) * P + p0 }, pc4, Og4, 'conv2dWeightGrad');
          gemm(ctx, { batch: 1, m: Kg, n: Og, k: pc4, a: cols, aOff: (ni * G + gi) * K4 * pc4, aSb: 0, aSm: pc4, b: gT, bOff: 0, bSb: 0, bSk: Og4, bCols: Og4,
            c: acc.buffer, cOff: gi * K4 * Og4, cSb: 0, cSm: Og4 }, undefined, { bias: null, act: 'none', accumulate: written[gi] });
          written[gi] = true;
          ctx.release(gT);
        }
      }
      ctx.release(cols);
    }
  }
  // out[gi*Og + o, kk] = acc[gi, kk, o]
  ewCopy(ctx, { storage: acc, shape: [G, Og, Kg], strides: [K4 * Og4, 1, Og4], offset: 0 }, { storage: out, shape: [G, Og, Kg], strides: [Og * Kg, Kg, 1], offset: 0 });
  ctx.free(acc);
  ctx.lastKernel = 'conv2d.weight_grad(im2col+gemm)';
}
