/**
 * Adversarial edge cases for the op layer and autodiff: views of views, rank 0, size-1 and zero-size
 * dims, gradients through chains of views, special values, conv/pool/upsample/FFT corner cases,
 * assign/tidy/dispose accounting, and typed errors. Every expectation comes from hand computation, a
 * naive loop in this file or a mathematical identity (webgpu gradients are compared with cpu ones).
 */
import t from 'tap';
import * as L from '../src/index.js';
import type { Backend, Tensor } from '../src/index.js';
import { assertGradsMatchCpu, close, gradCheck, hostRandom, on, testBackends } from './helpers.js';

const backends = await testBackends();

type Arr = ArrayLike<number>;
const numel = (s: readonly number[]): number => s.reduce((a, b) => a * b, 1);
const vals = async (x: Tensor): Promise<number[]> => Array.from(await x.data());
const f32 = (a: Arr): Float32Array => Float32Array.from(a);
const iota = (n: number, start = 0): number[] => Array.from({ length: n }, (_, i) => start + i);
const T = (b: Backend, data: Arr, shape: readonly number[], requiresGrad = false): Tensor => on(b, f32(data), shape, requiresGrad);

function near(t: { ok(v: any, ...rest: any[]): any }, got: Arr, want: Arr, msg: string, atol = 1e-5, rtol = 1e-5): void {
  const r = close(got, want, atol, rtol);
  t.ok(r.ok, `${msg}: ${r.message}`);
}

/** Row-major tensor data as a function of the multi-index. */
function build(shape: readonly number[], f: (...idx: number[]) => number): number[] {
  const out: number[] = [];
  const idx = shape.map(() => 0);
  const n = numel(shape);
  for (let i = 0; i < n; i++) {
    out.push(f(...idx));
    for (let d = shape.length - 1; d >= 0; d--) { if (++idx[d] < shape[d]) break; idx[d] = 0; }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Naive references.
// ---------------------------------------------------------------------------------------------------
interface ConvP { stride?: [number, number]; padding?: [number, number]; dilation?: [number, number]; groups?: number; outputPadding?: [number, number] }

function naiveConv2d(x: Arr, [N, C, H, W]: number[], w: Arr, [O, Cg, kh, kw]: number[], p: ConvP = {}, bias?: Arr): { data: number[]; shape: number[] } {
  const [sh, sw] = p.stride ?? [1, 1]; const [ph, pw] = p.padding ?? [0, 0]; const [dh, dw] = p.dilation ?? [1, 1]; const G = p.groups ?? 1;
  const Ho = Math.floor((H + 2 * ph - dh * (kh - 1) - 1) / sh) + 1;
  const Wo = Math.floor((W + 2 * pw - dw * (kw - 1) - 1) / sw) + 1;
  const out: number[] = [];
  for (let n = 0; n < N; n++) for (let o = 0; o < O; o++) for (let i = 0; i < Ho; i++) for (let j = 0; j < Wo; j++) {
    const g = Math.floor(o / (O / G));
    let s = bias ? bias[o] : 0;
    for (let c = 0; c < Cg; c++) for (let u = 0; u < kh; u++) for (let v = 0; v < kw; v++) {
      const y = i * sh - ph + u * dh; const xx = j * sw - pw + v * dw;
      if (y < 0 || y >= H || xx < 0 || xx >= W) continue;
      s += x[((n * C + g * Cg + c) * H + y) * W + xx] * w[((o * Cg + c) * kh + u) * kw + v];
    }
    out.push(s);
  }
  return { data: out, shape: [N, O, Ho, Wo] };
}

/** Transposed convolution by scattering every input element (PyTorch's definition). */
function naiveConvTranspose2d(x: Arr, [N, Cin, H, W]: number[], w: Arr, [, Coutg, kh, kw]: number[], p: ConvP = {}): { data: number[]; shape: number[] } {
  const [sh, sw] = p.stride ?? [1, 1]; const [ph, pw] = p.padding ?? [0, 0]; const [dh, dw] = p.dilation ?? [1, 1];
  const [oph, opw] = p.outputPadding ?? [0, 0]; const G = p.groups ?? 1;
  const Ho = (H - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1;
  const Wo = (W - 1) * sw - 2 * pw + dw * (kw - 1) + opw + 1;
  const Cout = Coutg * G; const cinG = Cin / G;
  const out = new Array<number>(N * Cout * Ho * Wo).fill(0);
  for (let n = 0; n < N; n++) for (let ci = 0; ci < Cin; ci++) for (let i = 0; i < H; i++) for (let j = 0; j < W; j++) {
    const g = Math.floor(ci / cinG);
    for (let oc = 0; oc < Coutg; oc++) for (let u = 0; u < kh; u++) for (let v = 0; v < kw; v++) {
      const y = i * sh - ph + u * dh; const xx = j * sw - pw + v * dw;
      if (y < 0 || y >= Ho || xx < 0 || xx >= Wo) continue;
      out[((n * Cout + g * Coutg + oc) * Ho + y) * Wo + xx] += x[((n * Cin + ci) * H + i) * W + j] * w[((ci * Coutg + oc) * kh + u) * kw + v];
    }
  }
  return { data: out, shape: [N, Cout, Ho, Wo] };
}

/** y[b,i,j] = sum_{u,v} x[b, i-u+ch, j-v+cw] k[u,v], indices wrapped (circular) or zero outside (same). */
function naiveFftConv(x: Arr, [B, H, W]: number[], k: Arr, [kh, kw]: number[], mode: 'circular' | 'same'): number[] {
  const ch = Math.floor(kh / 2); const cw = Math.floor(kw / 2);
  const mod = (a: number, n: number): number => ((a % n) + n) % n;
  const out: number[] = [];
  for (let b = 0; b < B; b++) for (let i = 0; i < H; i++) for (let j = 0; j < W; j++) {
    let s = 0;
    for (let u = 0; u < kh; u++) for (let v = 0; v < kw; v++) {
      let y = i - u + ch; let xx = j - v + cw;
      if (mode === 'circular') { y = mod(y, H); xx = mod(xx, W); } else if (y < 0 || y >= H || xx < 0 || xx >= W) continue;
      s += x[(b * H + y) * W + xx] * k[u * kw + v];
    }
    out.push(s);
  }
  return out;
}

/** PyTorch's bilinear source coordinate and the resulting 1-D weights. */
function bilinearWeights(nIn: number, nOut: number, alignCorners: boolean, scale?: number): [number, number, number][] {
  const out: [number, number, number][] = [];
  for (let i = 0; i < nOut; i++) {
    let src: number;
    if (alignCorners) src = nOut > 1 ? (i * (nIn - 1)) / (nOut - 1) : 0;
    else src = Math.max(0, (i + 0.5) * (scale !== undefined ? 1 / scale : nIn / nOut) - 0.5);
    const i0 = Math.min(Math.floor(src), nIn - 1);
    const i1 = i0 < nIn - 1 ? i0 + 1 : i0;
    out.push([i0, i1, src - i0]);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Forward cases, on every backend against hand/naive values.
// ---------------------------------------------------------------------------------------------------
for (const b of backends) {
  t.test(`${b.name}: slice of a flipped transposed tensor, then reshape`, async (t) => {
    const x = T(b, iota(24), [4, 6]); // X[i][j] = 6i + j
    const f = x.transpose().flip(0); // f[a][c] = X[c][5 - a]
    const s = f.slice([[1, 6, 2], [0, 4, 3]]); // rows a = 1,3,5; cols c = 0,3 -> s[i][j] = X[3j][4 - 2i]
    t.same(s.shape, [3, 2]);
    const want = build([3, 2], (i, j) => 18 * j + 4 - 2 * i);
    t.same(await vals(s), want, 'values of the strided view');
    t.same(await vals(s.reshape([6])), want, 'reshape [6]');
    t.same(await vals(s.reshape([2, 3])), want, 'reshape [2,3]');
    t.same(await vals(s.contiguous()), want, 'contiguous');
    t.same(await vals(f.reshape([24])), build([6, 4], (a, c) => 6 * c + 5 - a), 'reshape of the flipped transposed view');
    t.same(await vals(s.mul(1).add(0)), want, 'elementwise on the view');
    t.same(await vals(s.sum(0)), [4 + 2 + 0, 22 + 20 + 18], 'sum over the view');
  });

  t.test(`${b.name}: reshapes of non-contiguous views that can stay views`, async (t) => {
    const base = T(b, iota(24), [4, 3, 2]);
    const y = base.slice([[1, 4, 2]]); // rows 1 and 3: strides [12, 2, 1]
    const r = y.reshape([2, 6]);
    t.equal(r.storage, base.storage, 'merging the inner dims of an outer-sliced tensor is a view');
    t.same(await vals(r), [...iota(6, 6), ...iota(6, 18)]);
    t.same(await vals(y.flatten(1)), [...iota(6, 6), ...iota(6, 18)], 'flatten(1)');
    t.same(await vals(y.reshape([12])), [...iota(6, 6), ...iota(6, 18)], 'flattening everything needs a copy, same values');
    const z = base.reshape([4, 6]).slice([null, [0, 6, 2]]); // [4,3] strides [6,2]
    const zs = z.reshape([2, 2, 3]);
    t.equal(zs.storage, base.storage, 'splitting the outer dim of a column-strided view is a view');
    t.same(await vals(zs), build([2, 2, 3], (i, k, j) => 6 * (2 * i + k) + 2 * j));
    const rev = base.reshape([4, 6]).flip([0, 1]).reshape([24]);
    t.equal(rev.storage, base.storage, 'flipping every axis then flattening is a view with stride -1');
    t.same(await vals(rev), iota(24).reverse());
    t.same(await vals(rev.reshape([2, 12]).slice([null, [0, 12, 5]])), [23, 18, 13, 11, 6, 1], 'strided slice of the reversed view');
    const p = base.reshape([2, 3, 4]).permute([0, 2, 1]).reshape([2, 12]);
    t.same(await vals(p), build([2, 4, 3], (i, k, j) => 12 * i + 4 * j + k), 'reshape of a permuted view copies correctly');
    // writes through the base are seen by a view (proves r is a view, not a stale copy)
    base.assign(T(b, iota(24).map((v) => -v), [4, 3, 2]));
    t.same(await vals(r), [...iota(6, 6), ...iota(6, 18)].map((v) => -v), 'the view sees assign() into the base');
  });

  t.test(`${b.name}: expand then contiguous / reshape / reduce`, async (t) => {
    const a = T(b, [1, 2, 3], [3, 1]);
    const e = a.expand([2, 3, 4]);
    const want = build([2, 3, 4], (_i, j) => j + 1);
    t.same(await vals(e.contiguous()), want);
    t.same(await vals(e.reshape([24])), want, 'reshape of a stride-0 view');
    t.same(await vals(e.sum([0, 2])), [8, 16, 24]);
    t.same(await vals(e.transpose(0, 2).contiguous()), build([4, 3, 2], (_k, j) => j + 1));
    const s = T(b, [5], []).expand([2, 2]).reshape([4]);
    t.same(await vals(s), [5, 5, 5, 5], 'rank 0 expanded then flattened');
    const z = a.expand([0, 3, 4]);
    t.same(z.shape, [0, 3, 4]);
    t.same(await vals(z.contiguous()), []);
  });

  t.test(`${b.name}: rank-0 tensors through ops`, async (t) => {
    const s = T(b, [2.5], []);
    t.same(s.shape, []);
    t.equal(await s.item(), 2.5);
    t.same(await s.array(), 2.5, 'array() of a scalar is a number');
    t.equal(await s.add(1).item(), 3.5);
    t.equal(await s.mul(s).item(), 6.25);
    near(t, await s.exp().data(), [Math.exp(2.5)], 'exp');
    t.same(s.exp().shape, []);
    t.same(await s.reshape([1, 1]).array(), [[2.5]]);
    t.same(s.unsqueeze(0).shape, [1]);
    t.same(s.unsqueeze(-1).shape, [1]);
    t.same(s.flatten().shape, [1]);
    t.same(await s.expand([2, 3]).array(), [[2.5, 2.5, 2.5], [2.5, 2.5, 2.5]]);
    t.same(s.permute([]).shape, []);
    t.equal(await s.sum().item(), 2.5);
    t.same(s.sum().shape, []);
    t.equal(await s.mean().item(), 2.5);
    t.equal(await s.max().item(), 2.5);
    t.equal(await s.logsumexp().item(), 2.5);
    t.equal(await s.argmax().item(), 0);
    t.same(await L.stack([s, s.neg()]).array(), [2.5, -2.5]);
    t.same(await T(b, [1, 2, 3], [3]).add(s).array(), [3.5, 4.5, 5.5], 'broadcast with a rank-0 tensor');
    const m = T(b, iota(6), [1, 6, 1]).max(1);
    t.same(m.shape, [1, 1]);
    t.same(await T(b, [7], [1, 1, 1]).squeeze().array(), 7, 'squeeze of all-1 dims gives rank 0');
  });

  t.test(`${b.name}: reductions and softmax on a rank-0 tensor with an explicit axis (PyTorch accepts dim 0 and -1)`, async (t) => {
    const s = T(b, [2.5], []);
    const attempt = async (name: string, f: () => Tensor, want: number): Promise<void> => {
      try {
        const y = f();
        t.same(y.shape, [], `${name} keeps rank 0`);
        near(t, [await y.item()], [want], name);
      } catch (e) { t.fail(`${name} threw ${(e as Error).name}: ${(e as Error).message}`); }
    };
    await attempt('sum(0)', () => s.sum(0), 2.5);
    await attempt('sum(-1)', () => s.sum(-1), 2.5);
    await attempt('mean(0)', () => s.mean(0), 2.5);
    await attempt('max(0)', () => s.max(0), 2.5);
    await attempt('min(-1)', () => s.min(-1), 2.5);
    await attempt('softmax(s) (default axis -1)', () => L.softmax(s), 1);
    await attempt('softmax(s, 0)', () => L.softmax(s, 0), 1);
    await attempt('logSoftmax(s, 0)', () => L.logSoftmax(s, 0), 0);
    await attempt('flip(0)', () => s.flip(0), 2.5);
    await attempt('squeeze(0)', () => s.squeeze(0), 2.5);
  });

  t.test(`${b.name}: size-1 dims everywhere`, async (t) => {
    const a = T(b, [1, 2, 3], [1, 1, 3]);
    const c = T(b, [10, 20, 30], [3, 1, 1]);
    const y = a.add(c);
    t.same(y.shape, [3, 1, 3]);
    t.same(await vals(y), build([3, 1, 3], (i, _j, k) => 10 * (i + 1) + k + 1));
    t.same(await vals(a.sum([0, 1])), [1, 2, 3], 'sum over size-1 axes');
    t.same(await vals(a.max([0, 1], { keepdim: true })), [1, 2, 3]);
    t.same(await vals(L.softmax(c, 1)), [1, 1, 1], 'softmax over a size-1 axis');
    t.same(await vals(T(b, [2], [1, 1]).matmul(T(b, [3], [1, 1]))), [6], '[1,1] @ [1,1]');
    t.same(await vals(T(b, iota(5), [1, 5]).transpose().contiguous()), iota(5));
    t.same(await vals(T(b, iota(5), [1, 5]).transpose().matmul(T(b, [2], [1, 1]))), iota(5).map((v) => 2 * v));
    t.same(await vals(a.expand([2, 1, 3]).var(0, { correction: 0 })), [0, 0, 0]);
  });

  t.test(`${b.name}: zero-size dims through every op that allows them`, async (t) => {
    const z20 = L.zeros([2, 0], { backend: b });
    t.same(await vals(z20.sum(1)), [0, 0], 'sum over an empty axis is 0');
    t.same(z20.sum(0).shape, [0]);
    t.same(await vals(z20.sum()), [0]);
    t.same(await vals(L.zeros([0, 3], { backend: b }).sum(0)), [0, 0, 0]);
    const mean = await vals(L.zeros([0, 3], { backend: b }).mean(0));
    t.ok(mean.length === 3 && mean.every(Number.isNaN), `mean over an empty axis is NaN (as PyTorch): ${mean}`);
    t.same(L.zeros([0, 3], { backend: b }).max(1).shape, [0], 'max over a non-empty axis of an empty tensor');
    t.same(L.zeros([0, 3], { backend: b }).argmax(1).shape, [0]);
    const a03 = T(b, [], [0, 3]);
    const m34 = T(b, hostRandom(12, 1), [3, 4]);
    const mm = a03.matmul(m34);
    t.same(mm.shape, [0, 4], 'matmul with M = 0');
    t.same(await vals(mm), []);
    t.same(m34.matmul(L.zeros([4, 0], { backend: b })).shape, [3, 0], 'matmul with N = 0');
    t.same(L.zeros([0, 2, 3], { backend: b }).matmul(m34).shape, [0, 2, 4], 'batched matmul with batch 0');
    const x = T(b, iota(6), [2, 3]);
    t.same(await vals(L.concat([L.zeros([2, 0], { backend: b }), x, L.zeros([2, 0], { backend: b })], 1)), iota(6), 'concat with empty parts along the axis');
    t.same(await vals(L.concat([L.zeros([0, 3], { backend: b }), x], 0)), iota(6));
    const p = L.zeros([0, 2], { backend: b }).pad([1, 1]);
    t.same(p.shape, [0, 4], 'pad of an empty tensor');
    const q = T(b, [], [3, 0]).pad([1, 2], 'constant', 7);
    t.same(q.shape, [3, 3]);
    t.same(await vals(q), new Array(9).fill(7), 'padding an empty axis fills with the value');
    const e = x.slice([[2, 2]]);
    t.same(e.shape, [0, 3]);
    t.same(await vals(e.exp().add(1).mul(e)), []);
    t.same(L.where(e.gt(0), e, 1).shape, [0, 3]);
    t.same(e.flip(0).shape, [0, 3]);
    t.same(L.roll(e, 1, 0).shape, [0, 3]);
    t.same(L.softmax(e, 1).shape, [0, 3]);
    t.same(x.split([0, 2, 0], 0).map((s) => s.shape), [[0, 3], [2, 3], [0, 3]]);
    t.same(L.stack([T(b, [], [0]), T(b, [], [0])]).shape, [2, 0]);
    t.same(e.transpose().reshape([3, 0]).shape, [3, 0]);
  });

  t.test(`${b.name}: gradients through zero-size pieces`, async (t) => {
    const a = T(b, [], [2, 0], true);
    const c = T(b, iota(6), [2, 3], true);
    const w = T(b, [1, 2, 3, 4, 5, 6], [2, 3]);
    L.concat([a, c], 1).mul(w).sum().backward();
    t.same(a.grad!.shape, [2, 0]);
    t.same(await vals(c.grad!), [1, 2, 3, 4, 5, 6]);
    const e = T(b, [], [2, 0], true);
    e.sum(1).sum().backward();
    t.same(e.grad!.shape, [2, 0], 'sum over an empty axis backpropagates an empty gradient');
    const m = T(b, [], [0, 3], true);
    const k = T(b, iota(12), [3, 4], true);
    m.matmul(k).sum().backward();
    t.same(m.grad!.shape, [0, 3]);
    t.same(await vals(k.grad!), new Array(12).fill(0), 'weight gradient of an M = 0 matmul is 0');
  });

  t.test(`${b.name}: matmul of two vectors is their dot product (rank 0)`, async (t) => {
    const u = T(b, [1, 2, 3], [3]);
    const v = T(b, [4, 5, 6], [3]);
    try {
      const d = u.matmul(v);
      t.same(d.shape, []);
      t.equal(await d.item(), 32);
    } catch (e) { t.fail(`vector @ vector threw ${(e as Error).name}: ${(e as Error).message}`); }
  });

  t.test(`${b.name}: softmax and logsumexp with -Infinity and large values`, async (t) => {
    const rows = [[-Infinity, 0, 1e4, 1e4], [-Infinity, 1, 2, -Infinity], [1e4, -1e4, 0, 5]];
    const x = T(b, rows.flat(), [3, 4]);
    const e = Math.E;
    near(t, await L.softmax(x, -1).data(), [0, 0, 0.5, 0.5, 0, 1 / (1 + e), e / (1 + e), 0, 1, 0, 0, 0], 'softmax rows', 1e-6);
    const ls = await vals(L.logSoftmax(T(b, [-Infinity, 0, 0], [3])));
    t.equal(ls[0], -Infinity, 'logSoftmax keeps -inf');
    near(t, ls.slice(1), [-Math.LN2, -Math.LN2], 'logSoftmax of the finite entries');
    const big = T(b, [1e4, 1e4 + 1, 1e4 - 1, -1e4, -1e4, -Infinity], [2, 3]);
    near(t, await big.logsumexp(1).data(), [1e4 + Math.log(1 + e + 1 / e), -1e4 + Math.LN2], 'logsumexp of large values', 2e-3, 0);
    // gradient of sum(softmax(x) * r): s_i (r_i - sum_j s_j r_j); no NaN anywhere
    const xg = T(b, rows.flat(), [3, 4], true);
    const r = [0.5, 1.5, -1, 2, 1, -2, 0.25, 3, 2, 1, -1, 0.5];
    L.softmax(xg, -1).mul(T(b, r, [3, 4])).sum().backward();
    const s = [[0, 0, 0.5, 0.5], [0, 1 / (1 + e), e / (1 + e), 0], [1, 0, 0, 0]];
    const want = s.flatMap((row, i) => { const dot = row.reduce((acc, v, j) => acc + v * r[4 * i + j], 0); return row.map((v, j) => v * (r[4 * i + j] - dot)); });
    near(t, await xg.grad!.data(), want, 'softmax gradient with -inf and 1e4 entries', 1e-6);
  });

  t.test(`${b.name}: logsumexp of rows that are all -Infinity or contain +Infinity (PyTorch: -inf, +inf)`, async (t) => {
    const x = T(b, [-Infinity, -Infinity, Infinity, 1], [2, 2]);
    t.same(await vals(x.logsumexp(1)), [-Infinity, Infinity]);
  });

  t.test(`${b.name}: var of one element and max/min ties`, async (t) => {
    const one = await vals(T(b, [3], [1]).var());
    t.ok(Number.isNaN(one[0]), `var of one element with correction 1 is NaN (torch.var gives nan), got ${one}`);
    t.same(await vals(T(b, [3], [1]).var(0, { correction: 0 })), [0]);
    const col = await vals(T(b, [1, 2], [2, 1]).var(1));
    t.ok(col.every(Number.isNaN), 'var over a size-1 axis is NaN per row');
    const x = T(b, [1, 3, 3, 2], [4], true);
    x.max().backward();
    t.same(await vals(x.grad!), [0, 0.5, 0.5, 0], 'amax splits the gradient between ties');
    const y = T(b, [5, 5, 5, 1, 2, 2], [2, 3], true);
    y.max(1).sum().backward();
    near(t, await y.grad!.data(), [1 / 3, 1 / 3, 1 / 3, 0, 0.5, 0.5], 'row-wise max ties');
    const z = T(b, [0, 1, 4, 0], [2, 2], true);
    z.min(0).mul(T(b, [2, 3], [2])).sum().backward();
    t.same(await vals(z.grad!), [2, 0, 0, 3], 'column-wise min without ties');
    const w = T(b, [1, 1, 1], [3], true);
    w.min().backward();
    near(t, await w.grad!.data(), [1 / 3, 1 / 3, 1 / 3], 'min of three equal values');
    const a = T(b, [1, 2, 3], [3], true);
    const c = T(b, [1, 5, 0], [3], true);
    L.maximum(a, c).sum().backward();
    t.same(await vals(a.grad!), [0.5, 0, 1], 'maximum: ties split equally');
    t.same(await vals(c.grad!), [0.5, 1, 0]);
    const d = T(b, [-1, 2], [2], true);
    L.minimum(d, d).sum().backward();
    t.same(await vals(d.grad!), [1, 1], 'minimum(x, x): the halves add up to 1');
  });

  t.test(`${b.name}: pow(x, 0) has gradient 0 everywhere, including x = 0 (d/dx 1 = 0; PyTorch masks exponent == 0)`, async (t) => {
    const x = T(b, [0, 1, -2], [3], true);
    x.pow(0).sum().backward();
    t.same(await vals(x.grad!), [0, 0, 0]);
  });

  t.test(`${b.name}: gradient accumulation and partial requiresGrad`, async (t) => {
    const x = T(b, [1, -2, 3], [3], true);
    // x used four times: d/dx (x*x + 3x + x*flip(x)) = 2x + 3 + flip(x) + flip(x)
    x.mul(x).add(x.mul(3)).add(x.mul(x.flip(0))).sum().backward();
    t.same(await vals(x.grad!), [2 + 3 + 6, -4 + 3 - 4, 6 + 3 + 2]);
    const a = T(b, [1, 2], [2], true);
    const c = T(b, [3, 4], [2]);
    a.mul(c).add(c.exp()).sum().backward();
    t.same(await vals(a.grad!), [3, 4], 'gradient wrt the only input that requires it');
    t.equal(c.grad, null, 'no gradient for an input that does not require it');
    const w = T(b, [1, 2, 3, 4], [2, 2], true);
    const m = T(b, [1, 0, 2, 1], [2, 2]);
    m.matmul(w).sum().backward();
    t.same(await vals(w.grad!), [3, 3, 1, 1], 'matmul weight gradient with a constant left side');
    // backward twice through a live graph accumulates (as documented)
    const u = T(b, [0, 1], [2], true);
    const l = u.exp().sum();
    l.backward(); l.backward();
    near(t, await u.grad!.data(), [2, 2 * Math.E], 'two backward calls accumulate', 1e-6);
    // functional grad wrt both arguments when one is used twice
    const [ga, gb] = L.grad((p, q) => p.mul(p).mul(q).sum())(T(b, [2, 3], [2]), T(b, [5, 7], [2]));
    t.same(await vals(ga), [20, 42]);
    t.same(await vals(gb), [4, 9]);
    // a leaf used as both operands of where's branches
    const v = T(b, [1, 2, 3], [3], true);
    L.where(T(b, [1, 0, 1], [3]), v, v.mul(2)).sum().backward();
    t.same(await vals(v.grad!), [1, 2, 1]);
  });

  t.test(`${b.name}: where() with a broadcast condition, gradients by hand`, async (t) => {
    const cond = T(b, [1, 0, 1], [3, 1]);
    const a = T(b, iota(12), [3, 4], true);
    const c = T(b, [-1, -2, -3, -4], [4], true);
    const y = L.where(cond, a, c);
    t.same(await vals(y), [0, 1, 2, 3, -1, -2, -3, -4, 8, 9, 10, 11]);
    y.mul(2).sum().backward();
    t.same(await vals(a.grad!), [2, 2, 2, 2, 0, 0, 0, 0, 2, 2, 2, 2]);
    t.same(await vals(c.grad!), [2, 2, 2, 2], 'the broadcast branch sums over the rows where it was chosen');
    t.same(await vals(L.where(T(b, [0, 2], [2]), 1, 0)), [0, 1], 'two number branches');
  });

  t.test(`${b.name}: conv2d with 1x1 kernels, batch 1, kernel equal to the input size, stride larger than the kernel`, async (t) => {
    const x = hostRandom(60, 3); const w = hostRandom(6, 4); const bias = [0.5, -0.25];
    const r1 = naiveConv2d(x, [1, 3, 4, 5], w, [2, 3, 1, 1], {}, bias);
    const y1 = L.conv2d(T(b, x, [1, 3, 4, 5]), T(b, w, [2, 3, 1, 1]), { bias: T(b, bias, [2]) });
    t.same(y1.shape, r1.shape);
    near(t, await y1.data(), r1.data, '1x1 conv', 1e-5);
    const xf = hostRandom(48, 5); const wf = hostRandom(72, 6);
    const r2 = naiveConv2d(xf, [2, 2, 3, 4], wf, [3, 2, 3, 4]);
    const y2 = L.conv2d(T(b, xf, [2, 2, 3, 4]), T(b, wf, [3, 2, 3, 4]));
    t.same(y2.shape, [2, 3, 1, 1]);
    near(t, await y2.data(), r2.data, 'kernel equal to the input size', 1e-5);
    const r3 = naiveConv2d(xf, [2, 2, 3, 4], wf, [3, 2, 3, 4], { padding: [1, 2] });
    near(t, await L.conv2d(T(b, xf, [2, 2, 3, 4]), T(b, wf, [3, 2, 3, 4]), { padding: [1, 2] }).data(), r3.data, 'same, with padding', 1e-5);
    const xs = hostRandom(49, 7);
    const r4 = naiveConv2d(xs, [1, 1, 7, 7], [2], [1, 1, 1, 1], { stride: [3, 3] });
    t.same(r4.shape, [1, 1, 3, 3]);
    near(t, await L.conv2d(T(b, xs, [1, 1, 7, 7]), T(b, [2], [1, 1, 1, 1]), { stride: 3 }).data(), r4.data, '1x1 kernel stride 3');
    const xg = T(b, xs, [1, 1, 7, 7], true);
    L.conv2d(xg, T(b, [2], [1, 1, 1, 1]), { stride: 3 }).sum().backward();
    t.same(await vals(xg.grad!), build([1, 1, 7, 7], (_n, _c, i, j) => (i % 3 === 0 && j % 3 === 0 ? 2 : 0)), 'input gradient is zero on the skipped pixels');
  });

  t.test(`${b.name}: convTranspose2d with stride 3, dilation 2, padding, output padding, groups`, async (t) => {
    const x = hostRandom(12, 8); const w = hostRandom(36, 9);
    const p: ConvP = { stride: [3, 3], dilation: [2, 2], padding: [1, 1], outputPadding: [2, 1] };
    const r = naiveConvTranspose2d(x, [1, 2, 3, 2], w, [2, 3, 2, 3], p);
    const y = L.convTranspose2d(T(b, x, [1, 2, 3, 2]), T(b, w, [2, 3, 2, 3]), p);
    t.same(y.shape, r.shape);
    near(t, await y.data(), r.data, 'stride 3 dilation 2', 1e-5);
    const xg = hostRandom(36, 10); const wg = hostRandom(48, 11);
    const pg: ConvP = { stride: [3, 2], dilation: [2, 3], padding: [0, 2], groups: 2 };
    const rg = naiveConvTranspose2d(xg, [1, 4, 3, 3], wg, [4, 3, 2, 2], pg);
    const yg = L.convTranspose2d(T(b, xg, [1, 4, 3, 3]), T(b, wg, [4, 3, 2, 2]), pg);
    t.same(yg.shape, rg.shape);
    near(t, await yg.data(), rg.data, 'groups 2, padding larger than d(k-1) on one axis', 1e-5);
  });

  t.test(`${b.name}: pooling with kernel 1`, async (t) => {
    const d = hostRandom(2 * 3 * 5 * 4, 12);
    const x = T(b, d, [2, 3, 5, 4]);
    near(t, await L.maxPool2d(x, { kernel: 1 }).data(), d, 'maxPool kernel 1 is the identity', 0, 0);
    near(t, await L.avgPool2d(x, { kernel: 1 }).data(), d, 'avgPool kernel 1 is the identity', 1e-7);
    const sub = build([2, 3, 3, 2], (n, c, i, j) => d[((n * 3 + c) * 5 + 2 * i) * 4 + 2 * j]);
    near(t, await L.maxPool2d(x, { kernel: 1, stride: 2 }).data(), sub, 'kernel 1 stride 2 subsamples', 0, 0);
    near(t, await L.avgPool2d(x, { kernel: [1, 1], stride: [2, 2] }).data(), sub, 'avg kernel 1 stride 2', 1e-7);
  });

  t.test(`${b.name}: upsample by non-integer factors (PyTorch index rules)`, async (t) => {
    const d = [1, 2, 3, 4, 5, 6];
    const x = T(b, d, [1, 1, 2, 3]);
    // nearest, scale 1.5: out 3x4; src row floor(i / 1.5) = 0,0,1; src col floor(j / 1.5) = 0,0,1,2
    const n15 = L.upsample(x, { scaleFactor: 1.5 });
    t.same(n15.shape, [1, 1, 3, 4]);
    t.same(await vals(n15), [1, 1, 2, 3, 1, 1, 2, 3, 4, 4, 5, 6]);
    // nearest to size [5, 2]: rows floor(i * 2/5) = 0,0,0,1,1; cols floor(j * 3/2) = 0,1
    t.same(await vals(L.upsample(x, { size: [5, 2] })), [1, 2, 1, 2, 1, 2, 4, 5, 4, 5]);
    // nearest, scale 2.5 on the rows only
    t.same(await vals(L.upsample(x, { scaleFactor: [2.5, 1] })), [1, 2, 3, 1, 2, 3, 1, 2, 3, 4, 5, 6, 4, 5, 6]);
    // bilinear by hand: [[0,1],[4,9]] to 3x3 (align corners, and scale 1.5 without) is the midpoint grid
    const g = T(b, [0, 1, 4, 9], [1, 1, 2, 2]);
    const mid = [0, 0.5, 1, 2, 3.5, 5, 4, 6.5, 9];
    near(t, await L.upsample(g, { size: [3, 3], mode: 'bilinear', alignCorners: true }).data(), mid, 'bilinear align corners');
    near(t, await L.upsample(g, { scaleFactor: 1.5, mode: 'bilinear' }).data(), mid, 'bilinear scale 1.5');
    // bilinear scale 1.75 on [3,4] -> [5,7] against PyTorch's formula
    const e = hostRandom(12, 13);
    const wh = bilinearWeights(3, 5, false, 1.75); const ww = bilinearWeights(4, 7, false, 1.75);
    const want = build([5, 7], (i, j) => {
      const [a0, a1, la] = wh[i]; const [b0, b1, lb] = ww[j];
      const at = (r: number, c: number): number => e[r * 4 + c];
      return (1 - la) * ((1 - lb) * at(a0, b0) + lb * at(a0, b1)) + la * ((1 - lb) * at(a1, b0) + lb * at(a1, b1));
    });
    const up = L.upsample(T(b, e, [1, 1, 3, 4]), { scaleFactor: 1.75, mode: 'bilinear' });
    t.same(up.shape, [1, 1, 5, 7]);
    near(t, await up.data(), want, 'bilinear scale 1.75', 1e-5);
  });

  t.test(`${b.name}: nearest upsample whose output size is a multiple of the input but whose factor is not an integer`, async (t) => {
    // PyTorch: scale_factor 2.1 on width 5 gives 10 columns from floor(j / 2.1) = 0,0,0,1,1,2,2,3,3,4 (not the x2 repeat)
    const x = T(b, iota(5), [1, 1, 1, 5]);
    t.same(await vals(L.upsample(x, { scaleFactor: [1, 2.1] })), [0, 0, 0, 1, 1, 2, 2, 3, 3, 4]);
    t.same(await vals(L.upsample(x, { scaleFactor: [1, 2] })), [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]);
  });

  t.test(`${b.name}: kernels on flipped, offset and strided views`, async (t) => {
    const A = hostRandom(4 * 6, 21); const B = hostRandom(5 * 8, 22);
    const a = T(b, A, [4, 6]).flip(1).slice([[1, 4]]); // a[i][k] = A[i+1][5-k], [3,6]
    const bm = T(b, B, [5, 8]).transpose().slice([[1, 7]]).flip(1); // bm[k][j] = B[4-j][k+1], [6,5]
    const mm = build([3, 5], (i, j) => { let s = 0; for (let k = 0; k < 6; k++) s += A[(i + 1) * 6 + 5 - k] * B[(4 - j) * 8 + k + 1]; return s; });
    near(t, await a.matmul(bm).data(), mm, 'matmul of flipped/sliced/transposed views', 1e-5);
    const cond = T(b, [1, 0, 0, 1, 1, 0], [6]).flip(0); // [0,1,1,0,0,1]
    const w = L.where(cond, a, bm.transpose().slice([[0, 3]]));
    near(t, await w.data(), build([3, 6], (i, k) => ([0, 1, 1, 0, 0, 1][k] ? A[(i + 1) * 6 + 5 - k] : B[(4 - i) * 8 + k + 1])), 'where on views');
    const red = T(b, [1, 3, 2, 3, 0, -1, -1, 5], [2, 4]).flip([0, 1]); // [[5,-1,-1,0],[3,2,3,1]]
    t.same(await vals(red.max(1)), [5, 3]);
    t.same(await vals(red.min(1)), [-1, 1]);
    t.same(await vals(red.argmax(1)), [0, 0]);
    t.same(await vals(red.sum(0)), [8, 1, 2, 1]);
    // conv2d on a flipped, offset input
    const X = hostRandom(2 * 6 * 5, 23); const Wt = hostRandom(2 * 2 * 2 * 3, 24);
    const xv = T(b, X, [1, 2, 6, 5]).flip(2).slice([null, null, [1, 6]]); // xv[0][c][i][j] = X[c][4-i][j], [1,2,5,5]
    const xd = build([1, 2, 5, 5], (_n, c, i, j) => X[(c * 6 + 4 - i) * 5 + j]);
    near(t, await L.conv2d(xv, T(b, Wt, [2, 2, 2, 3]), { padding: 1 }).data(), naiveConv2d(xd, [1, 2, 5, 5], Wt, [2, 2, 2, 3], { padding: [1, 1] }).data, 'conv2d on a flipped view', 1e-5);
    // 2-D DFT of a flipped view against the definition
    const F = hostRandom(12, 25);
    const fv = T(b, F, [3, 4]).flip(1); // fv[i][j] = F[i][3-j]
    const [re, im] = L.fft2(fv);
    const wre: number[] = []; const wim: number[] = [];
    for (let k = 0; k < 3; k++) for (let l = 0; l < 4; l++) {
      let sr = 0; let si = 0;
      for (let i = 0; i < 3; i++) for (let j = 0; j < 4; j++) { const ph = -2 * Math.PI * (k * i / 3 + l * j / 4); const v = F[i * 4 + 3 - j]; sr += v * Math.cos(ph); si += v * Math.sin(ph); }
      wre.push(sr); wim.push(si);
    }
    near(t, await re.data(), wre, 'fft2 real part on a flipped view', 1e-5);
    near(t, await im.data(), wim, 'fft2 imaginary part on a flipped view', 1e-5);
  });

  t.test(`${b.name}: reductions over non-adjacent and permuted axes`, async (t) => {
    for (const shape of [[2, 3, 4], [3, 2, 4], [2, 5, 3, 4]]) {
      const d = hostRandom(numel(shape), 26 + shape.length);
      const x = T(b, d, shape);
      const r = shape.length;
      for (const axes of [[0, r - 1], [0, 2], [1, r - 1]]) {
        const keptShape = shape.map((n, k) => (axes.includes(k) ? 1 : n));
        const sums = new Array<number>(numel(keptShape)).fill(0);
        const maxs = new Array<number>(numel(keptShape)).fill(-Infinity);
        build(shape, (...idx) => {
          let o = 0;
          for (let k = 0; k < r; k++) o = o * keptShape[k] + (axes.includes(k) ? 0 : idx[k]);
          const v = d[idx.reduce((acc, i, k) => acc * shape[k] + i, 0)];
          sums[o] += v; maxs[o] = Math.max(maxs[o], v);
          return 0;
        });
        near(t, await x.sum(axes).data(), sums, `sum ${JSON.stringify(shape)} over ${JSON.stringify(axes)}`, 1e-5);
        near(t, await x.max(axes).data(), maxs, `max ${JSON.stringify(shape)} over ${JSON.stringify(axes)}`, 0, 0);
        // the same reduction on the reversed permutation leaves the kept axes reversed
        const kept = shape.filter((_, k) => !axes.includes(k));
        const sumAt = (idx: number[]): number => sums[idx.reduce((acc, v, k) => acc * kept[k] + v, 0)];
        const revWant = build([...kept].reverse(), (...idx) => sumAt([...idx].reverse()));
        near(t, await x.permute(iota(r).reverse()).sum(axes.map((a) => r - 1 - a)).data(), revWant, `sum over the same axes of the reversed permutation of ${JSON.stringify(shape)}`, 1e-5);
      }
    }
  });

  t.test(`${b.name}: numbers combined with int32 tensors are not silently truncated`, async (t) => {
    const i = L.tensor([1, 2, 3], { dtype: 'int32', backend: b });
    const check = async (label: string, f: () => Tensor, promoted: number[]): Promise<void> => {
      let y: Tensor;
      try { y = f(); } catch (e) { t.equal((e as Error).name, 'DTypeError', `${label}: rejecting the mix is fine if it is a DTypeError`); return; }
      t.same(await vals(y), promoted, `${label}: a result must equal the promoted (PyTorch) result`);
    };
    await check('int < 2.5', () => i.lt(2.5), [1, 1, 0]);
    await check('int * 0.5', () => i.mul(0.5), [0.5, 1, 1.5]);
    await check('where(c, int, 0.5)', () => L.where(L.tensor([1, 0, 1], { backend: b }), i, 0.5), [1, 0.5, 3]);
    t.same(await vals(i.mul(2)), [2, 4, 6], 'integral numbers still work');
  });

  t.test(`${b.name}: fftConv2d with a kernel larger than half the image`, async (t) => {
    const x = hostRandom(2 * 6 * 7, 14); const k = hostRandom(30, 15, 0, 1);
    const xt = T(b, x, [2, 6, 7]); const kt = T(b, k, [5, 6]);
    near(t, await L.fftConv2d(xt, kt).data(), naiveFftConv(x, [2, 6, 7], k, [5, 6], 'circular'), 'circular, 5x6 kernel on 6x7', 1e-4);
    near(t, await L.fftConv2d(xt, kt, { mode: 'same' }).data(), naiveFftConv(x, [2, 6, 7], k, [5, 6], 'same'), 'same, 5x6 kernel on 6x7', 1e-4);
    const kf = hostRandom(42, 16);
    near(t, await L.fftConv2d(xt, T(b, kf, [6, 7])).data(), naiveFftConv(x, [2, 6, 7], kf, [6, 7], 'circular'), 'circular, kernel the size of the image', 1e-4);
  });

  t.test(`${b.name}: assign() into storage shared with other views`, async (t) => {
    const base = L.zeros([2, 3], { backend: b });
    const flat = base.reshape([6]);
    base.transpose().assign(T(b, [1, 2, 3, 4, 5, 6], [3, 2]));
    t.same(await vals(base), [1, 3, 5, 2, 4, 6], 'assign through a transposed view writes the base');
    t.same(await vals(flat), [1, 3, 5, 2, 4, 6], 'and another view of the base sees it');
    const v = T(b, [0, 0, 0, 0], [4]);
    v.slice([[1, 4, 2]]).assign(T(b, [7, 8], [2]));
    t.same(await vals(v), [0, 7, 0, 8], 'assign into a strided slice leaves the rest');
    const r = T(b, [1, 2, 3, 4], [4]);
    r.assign(r.flip(0));
    t.same(await vals(r), [4, 3, 2, 1], 'overlapping self-assign (flip) reads the old values');
    const m = T(b, [1, 2, 3, 4], [2, 2]);
    m.assign(m.transpose());
    t.same(await vals(m), [1, 3, 2, 4], 'overlapping self-assign (transpose)');
    const s = T(b, [1, 2, 3, 4, 5], [5]);
    s.slice([[0, 4]]).assign(s.slice([[1, 5]]));
    t.same(await vals(s), [2, 3, 4, 5, 5], 'shifted overlapping assign');
  });

  t.test(`${b.name}: tidy, dispose of views and bases, memory() returns to baseline`, async (t) => {
    const name = b.name;
    const m0 = L.memory();
    const base = L.ones([2, 3], { backend: b });
    const view = base.transpose();
    let m = L.memory();
    t.equal(m.tensors[name] - m0.tensors[name], 2, 'two tensors');
    t.equal(m.storages[name] - m0.storages[name], 1, 'one shared storage');
    base.dispose();
    const doubled = view.mul(2);
    t.same(await vals(doubled), [2, 2, 2, 2, 2, 2], 'the view outlives its base');
    doubled.dispose();
    m = L.memory();
    t.equal(m.storages[name] - m0.storages[name], 1, 'storage alive while a view is');
    view.dispose();
    m = L.memory();
    t.equal(m.tensors[name], m0.tensors[name]); t.equal(m.storages[name], m0.storages[name]); t.equal(m.bytes[name], m0.bytes[name]);
    const b2 = L.ones([4], { backend: b });
    const v2 = b2.slice([[1, 3]]);
    v2.dispose();
    t.same(await vals(b2), [1, 1, 1, 1], 'the base outlives its view');
    b2.dispose();
    // nested tidy with gradients, composites, views and lifted numbers
    const r = L.tidy(() => {
      const x = L.tensor(hostRandom(2 * 3 * 5 * 5, 17), { shape: [2, 3, 5, 5], backend: b, requiresGrad: true });
      const inner = L.tidy(() => {
        const y = L.softmax(x.flip(3).slice([null, null, [1, 4]]).mul(2), -1).sum();
        y.backward();
        return { y, g: x.grad! };
      });
      return inner.y.add(inner.g.sum()).add(1);
    });
    m = L.memory();
    t.equal(m.tensors[name] - m0.tensors[name], 1, `only the result survives the tidy (${m.tensors[name] - m0.tensors[name]} live)`);
    t.ok(Number.isFinite(await r.item()));
    r.dispose();
    m = L.memory();
    t.equal(m.tensors[name], m0.tensors[name], 'tensors back to baseline');
    t.equal(m.storages[name], m0.storages[name], 'storages back to baseline');
    t.equal(m.bytes[name], m0.bytes[name], 'bytes back to baseline');
  });

  t.test(`${b.name}: a nested tidy must not hand the outer tidy a returned tensor it did not own (created outside, or keep()-ed)`, async (t) => {
    const w = L.ones([2], { backend: b });
    L.tidy(() => { L.tidy(() => w); return null; });
    t.equal(w.isDisposed, false, 'w was created outside any tidy and must survive');
    const u = L.ones([2], { backend: b });
    L.tidy(() => { const inner = L.tidy(() => ({ u, v: u.add(1) })); return inner.v; });
    t.equal(u.isDisposed, false);
    let kept: Tensor | null = null;
    L.tidy(() => { kept = L.tidy(() => L.keep(L.ones([2], { backend: b }).mul(3))); return null; });
    t.equal(kept!.isDisposed, false, 'a keep()-ed tensor returned from a nested tidy escapes the outer tidy too (as tf.tidy)');
    kept!.dispose(); w.dispose(); u.dispose();
  });

  t.test(`${b.name}: ops outside tidy do not leak once their result is disposed`, async (t) => {
    const name = b.name;
    const x = T(b, iota(12), [3, 4]);
    const check = (label: string, f: () => Tensor): void => {
      const m0 = L.memory();
      f().dispose();
      const m1 = L.memory();
      t.equal(m1.tensors[name] - m0.tensors[name], 0, `${label}: live tensors`);
      t.equal(m1.bytes[name] - m0.bytes[name], 0, `${label}: live bytes`);
    };
    check('x.mul(2) (documented not to leak)', () => x.mul(2));
    check('x.sum(0)', () => x.sum(0));
    check('x.max(1)', () => x.max(1));
    check('x.mean(0)', () => x.mean(0));
    const xt = x.transpose();
    check('x.transpose().reshape([12]) (a copy, then a view of it)', () => xt.reshape([12]));
    const v3 = T(b, [1, 2, 3], [3]);
    check('vector @ matrix', () => v3.matmul(x));
  });

  t.test(`${b.name}: a leaf's .grad survives the tidy in which backward ran, and keeps accumulating`, async (t) => {
    const x = T(b, [1, 2], [2], true);
    L.tidy(() => { x.mul(2).sum().backward(); });
    try { t.same(await vals(x.grad!), [2, 2], 'readable after the tidy'); } catch (e) { t.fail(`reading x.grad after tidy: ${(e as Error).message}`); }
    try {
      L.tidy(() => { x.mul(3).sum().backward(); });
      t.same(await vals(x.grad!), [5, 5], 'accumulated over two tidy scopes (PyTorch semantics)');
    } catch (e) { t.fail(`second backward: ${(e as Error).name}: ${(e as Error).message}`); }
  });

  t.test(`${b.name}: valueAndGrad of a function returning its argument`, async (t) => {
    const s = T(b, [3], []);
    const { value, grads } = L.valueAndGrad((v) => v)(s);
    t.equal(await grads[0].item(), 1);
    try { t.equal(await value.item(), 3, 'value is readable'); } catch (e) { t.fail(`value: ${(e as Error).name}: ${(e as Error).message}`); }
  });
}

// ---------------------------------------------------------------------------------------------------
// Gradients against finite differences (cpu) and webgpu against cpu.
// ---------------------------------------------------------------------------------------------------
interface GCase { name: string; shapes: { shape: number[]; lo?: number; hi?: number; data?: number[] }[]; fn: (...xs: Tensor[]) => Tensor; tol?: number; eps?: number; atol?: number }

const G: GCase[] = [
  {
    name: 'permute -> slice -> expand -> reshape -> flip -> square',
    shapes: [{ shape: [3, 4, 2] }],
    fn: (x) => x.permute([2, 0, 1]).slice([[1, 2], [0, 3, 2], [1, 4]]).expand([4, 2, 3]).reshape([8, 3]).flip([0, 1]).square(),
  },
  {
    name: 'slice of flip of transpose, reshaped, used twice',
    shapes: [{ shape: [4, 6] }],
    fn: (x) => { const s = x.transpose().flip(0).slice([[1, 6, 2], [0, 4, 3]]).reshape([6]); return s.mul(s.flip(0)).add(s.exp()); },
  },
  {
    name: 'a tensor used in several branches (x*flip(x) + exp(x) + x^T*x)',
    shapes: [{ shape: [3, 3] }],
    fn: (x) => x.mul(x.flip(0)).add(x.exp()).add(x.transpose().mul(x)),
  },
  {
    name: 'split, stack, roll, narrow',
    shapes: [{ shape: [2, 7] }],
    fn: (x) => { const [p, q, r] = x.split([2, 3, 2], 1); return L.stack([L.roll(q, 2, 1), q.flip(1), L.concat([r, p.narrow(1, 1, 1)], 1)], 0).mul(q.sum(1, { keepdim: true })); },
  },
  {
    name: 'pad reflect (maximal) and circular (full wrap) on two axes',
    shapes: [{ shape: [1, 2, 4, 5] }],
    fn: (x) => L.concat([x.pad([4, 3, 3, 2], 'reflect').flatten(), x.pad([5, 5, 4, 1], 'circular').flatten(), L.roll(x, [-7, 9], [2, 3]).flatten()]),
  },
  {
    name: 'where with broadcast condition and scalar branch',
    shapes: [{ shape: [3, 1], data: [-0.8, 0.3, 0.9] }, { shape: [3, 4] }, { shape: [4] }],
    fn: (c, a, d) => L.where(c.gt(0), a.mul(d), L.where(c.lt(0.5), d, 2)),
  },
  {
    name: 'rank-0 and size-1 broadcasting in a chain',
    shapes: [{ shape: [] }, { shape: [1, 3, 1] }, { shape: [2, 1, 4] }],
    fn: (s, a, c) => a.mul(s).add(c).mul(c.sum(2, { keepdim: true })).sum(0).div(s.exp()),
  },
  {
    name: 'softmax/logSoftmax/logsumexp of large inputs',
    shapes: [{ shape: [3, 5], lo: 50, hi: 60 }],
    fn: (x) => L.concat([L.softmax(x, 0).flatten(), L.logSoftmax(x, 1).flatten(), x.logsumexp(1)]),
    eps: 1e-2, tol: 2e-2,
  },
  {
    name: 'var with correction 0 and 2 over several axes',
    shapes: [{ shape: [3, 2, 4] }],
    fn: (x) => L.concat([x.var([0, 2]).flatten(), x.var(1, { correction: 0 }).flatten(), x.var([0, 1, 2], { correction: 2 }).reshape([1])]),
  },
  {
    name: 'conv2d 1x1 kernel, batch 1, with bias',
    shapes: [{ shape: [1, 3, 3, 4] }, { shape: [2, 3, 1, 1] }, { shape: [2] }],
    fn: (x, w, c) => L.conv2d(x, w, { bias: c }),
  },
  {
    name: 'conv2d kernel equal to the input size, padding 1',
    shapes: [{ shape: [2, 2, 3, 3] }, { shape: [2, 2, 3, 3] }],
    fn: (x, w) => L.conv2d(x, w, { padding: 1 }),
  },
  {
    name: 'conv2d padding larger than the kernel reach, stride 2, on a flipped view',
    shapes: [{ shape: [1, 2, 5, 4] }, { shape: [3, 2, 2, 1] }],
    fn: (x, w) => L.conv2d(x.flip(2), w.transpose(2, 3).transpose(2, 3), { padding: [2, 3], stride: 2 }),
  },
  {
    name: 'convTranspose2d stride 3 dilation 2 output padding 2',
    shapes: [{ shape: [1, 2, 2, 3] }, { shape: [2, 2, 2, 2] }],
    fn: (x, w) => L.convTranspose2d(x, w, { stride: 3, dilation: 2, padding: 1, outputPadding: 2 }),
  },
  {
    name: 'pooling kernel 1 with stride, upsample non-integer (nearest and bilinear)',
    shapes: [{ shape: [1, 2, 3, 4] }],
    fn: (x) => L.concat([L.maxPool2d(x, { kernel: 1, stride: 2 }).flatten(), L.avgPool2d(x, { kernel: 1, stride: [1, 3] }).flatten(), L.upsample(x, { scaleFactor: 1.5 }).flatten(), L.upsample(x, { scaleFactor: [1.7, 0.6], mode: 'bilinear' }).flatten()]),
  },
  {
    name: 'fftConv2d same and circular with a kernel larger than half the image',
    shapes: [{ shape: [1, 5, 6] }, { shape: [4, 5], lo: 0, hi: 1 }],
    fn: (x, k) => L.concat([L.fftConv2d(x, k, { mode: 'same' }).flatten(), L.fftConv2d(x, k).flatten()]),
    tol: 3e-2, atol: 1e-4,
  },
];

for (const c of G) {
  t.test(`gradient: ${c.name}`, async (t) => {
    const inputs = c.shapes.map((s, k) => ({ data: s.data ? f32(s.data) : hostRandom(numel(s.shape), 101 + 13 * k + c.name.length, s.lo ?? -1, s.hi ?? 1), shape: s.shape }));
    const fd = await gradCheck('cpu', c.fn, inputs, c.eps);
    t.ok(fd.worst < (c.tol ?? 1e-2), `cpu autodiff matches finite differences (worst ${fd.worst.toExponential(2)} ${fd.where})`);
    t.ok(fd.analytic.every((g) => g.every(Number.isFinite)), 'gradients are finite');
    await assertGradsMatchCpu(t, backends, c.fn, inputs, fd.analytic, c.atol ?? 1e-4);
  });
}

// ---------------------------------------------------------------------------------------------------
// Typed errors naming the op and the shapes.
// ---------------------------------------------------------------------------------------------------
t.test('errors are typed and name the op and the shapes', async (t) => {
  const x = L.zeros([2, 3], { backend: 'cpu' });
  t.throws(() => x.slice([[0, 2, 0]]), { name: 'ShapeError', message: /^slice: .*positive step/ }, 'slice with step 0');
  t.throws(() => x.slice([null, [0, 3, -1]]), { name: 'ShapeError', message: /^slice: / }, 'negative step');
  t.throws(() => x.slice([null, null, null]), { name: 'AxisError', message: /slice: 3 slice specs .*\[2,3\]/ });
  t.throws(() => x.split([1, 1], 1), { name: 'ShapeError', message: /split: sizes \[1,1\] do not add up to 3 \(axis 1 of \[2,3\]\)/ });
  t.throws(() => x.split([4, -1], 1), { name: 'ShapeError', message: /split: .*\[2,3\]/ }, 'negative split size');
  t.throws(() => x.squeeze(0), { name: 'ShapeError', message: /squeeze: axis 0 of \[2,3\] has size 2, not 1/ });
  t.throws(() => L.tensor(3).matmul(x), { name: 'ShapeError', message: /matmul: needs at least 1-D inputs, got \[\] @ \[2,3\]/ });
  t.throws(() => x.matmul(L.tensor(3)), { name: 'ShapeError', message: /matmul: .*\[2,3\] @ \[\]/ });
  t.throws(() => L.conv2d(L.zeros([1, 3, 5, 5]), L.zeros([4, 1, 3, 3]), { groups: 2 }), { name: 'ShapeError', message: /conv2d: x \[1,3,5,5\] and w \[4,1,3,3\] do not fit groups=2/ });
  t.throws(() => L.conv2d(L.zeros([1, 4, 5, 5]), L.zeros([3, 2, 3, 3]), { groups: 2 }), { name: 'ShapeError', message: /conv2d: .*groups=2/ }, 'O not divisible by groups');
  t.throws(() => L.conv2d(L.zeros([1, 4, 5, 5]), L.zeros([4, 4, 3, 3]), { stride: 0 }), { name: 'ShapeError', message: /conv2d: invalid options/ });
  t.throws(() => L.concat([L.zeros([2]), L.zeros([2, 1])]), { name: 'ShapeError', message: /concat: shapes \[2\], \[2,1\]/ });
  t.throws(() => L.stack([L.zeros([2]), L.zeros([3])]), { name: 'ShapeError', message: /concat: shapes \[1,2\], \[1,3\]/ });
  t.throws(() => L.where(L.zeros([3]), L.zeros([2]), 0), { name: 'ShapeError', message: /where: shapes \[3\] and \[2\]/ });
  await t.rejects(x.item(), { name: 'ShapeError', message: /item: needs a one-element tensor, got \[2,3\]/ });
  t.throws(() => x.reshape([-1, -1]), { name: 'ShapeError', message: /reshape: at most one -1/ });
  t.throws(() => L.zeros([0, 3]).reshape([-1, 0]), { name: 'ShapeError', message: /reshape: cannot infer -1/ });
  t.throws(() => x.flip([1, -1]), { name: 'AxisError', message: /flip: repeated axis/ });
  t.throws(() => x.expand([3, 3]), { name: 'ShapeError', message: /expand: cannot expand \[2,3\] to \[3,3\]/ });
  t.throws(() => L.maxPool2d(L.zeros([1, 1, 4, 4]), { kernel: 2, padding: 2 }), { name: 'ShapeError', message: /maxPool2d: padding/ });
  t.throws(() => L.upsample(L.zeros([1, 1, 2, 2]), { scaleFactor: 0.2 }), { name: 'ShapeError', message: /upsample: needs a positive size/ });
  t.throws(() => L.fftConv2d(L.zeros([4, 4]), L.zeros([5, 3])), { name: 'ShapeError', message: /psf2otf: kernel \[5,3\] is larger than the 4x4 grid/ });
});

t.test('the slice-step error names the tensor shape (DESIGN.md: errors name the op and the shapes)', async (t) => {
  t.throws(() => L.zeros([2, 3], { backend: 'cpu' }).slice([[0, 2, 0]]), { name: 'ShapeError', message: /\[2,3\]/ });
});

t.test('concat of rank-0 tensors is a ShapeError (torch.cat: zero-dimensional tensors cannot be concatenated)', async (t) => {
  t.throws(() => L.concat([L.tensor(1), L.tensor(2)]), { name: 'ShapeError', message: /concat: / });
});

t.test('use after dispose and backward through a disposed graph are DisposedErrors', async (t) => {
  const a = L.zeros([2, 3], { backend: 'cpu' });
  a.dispose();
  await t.rejects(a.data(), { name: 'DisposedError', message: /data: tensor #\d+ \[2,3\] was used after dispose\(\)/ });
  await t.rejects(a.item(), { name: 'ShapeError' }, 'item on [2,3] still reports the shape problem first');
  t.throws(() => a.slice([[0, 1]]), { name: 'DisposedError', message: /slice: tensor #\d+ \[2,3\]/ });
  t.throws(() => a.transpose(), { name: 'DisposedError', message: /permute: / });
  t.throws(() => L.concat([L.zeros([1, 3]), a]), { name: 'DisposedError', message: /concat: / });
  t.throws(() => L.zeros([2, 3]).assign(a), { name: 'DisposedError', message: /assign: / });
  const x = L.tensor([1, 2, 3], { backend: 'cpu', requiresGrad: true });
  const e = x.exp();
  const l = e.sum();
  e.dispose();
  t.throws(() => l.backward(), { name: 'DisposedError', message: /backward through sum: tensor #\d+ \[3\] was used after dispose\(\)/ });
  const y = L.tensor([1, 2], { backend: 'cpu', requiresGrad: true });
  const loss = L.tidy(() => y.mul(y.exp()).sum());
  t.throws(() => loss.backward(), { name: 'DisposedError', message: /backward through/ }, 'the tape of a tidy that has ended is gone');
  const z = L.tensor([1, 2], { backend: 'cpu', requiresGrad: true });
  const ze = z.exp();
  const zl = ze.sum();
  zl.backward();
  ze.dispose();
  t.throws(() => zl.backward(), { name: 'DisposedError' }, 'a second backward after disposing an intermediate');
  near(t, await z.grad!.data(), [Math.E, Math.E ** 2], 'the first backward had accumulated the right gradient', 1e-5);
});
