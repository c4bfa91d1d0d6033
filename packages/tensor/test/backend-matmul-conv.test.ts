/**
 * matmul and conv2d at the Backend-kernel level: the CPU kernels against hand-computed results and a naive
 * loop written here (independent oracles), and the WebGPU kernels against the CPU kernels on awkward
 * shapes and layouts (transposed and non-contiguous views, batch broadcast, K = 0, unaligned offsets,
 * grids beyond the per-dimension limit, chunked im2col).
 */
import t from 'tap';
import type { Conv2dParams, View } from '../src/backend.js';
import { contiguousStrides } from '../src/backend.js';
import { CpuStorage } from '../src/backends/cpu/storage.js';
import { matmul as cpuMatmul } from '../src/backends/cpu/matmul.js';
import { conv2d as cpuConv2d, conv2dWeightGrad as cpuConv2dWeightGrad } from '../src/backends/cpu/conv2d.js';
import { GpuContext, GpuStorage } from '../src/backends/webgpu/context.js';
import { matmul as gpuMatmul } from '../src/backends/webgpu/matmul.js';
import { conv2d as gpuConv2d, conv2dWeightGrad as gpuConv2dWeightGrad, convChoice } from '../src/backends/webgpu/conv2d.js';
import { WINOGRAD_MATRICES } from '../src/backends/webgpu/winograd.js';

// ---------- helpers ----------

function rand(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = (s >>> 8) / 8388608 - 1;
  }
  return out;
}

const numel = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

/** A view over `data` (a CPU storage) with explicit shape/strides/offset. */
function cpuView(data: Float32Array, shape: number[], strides = contiguousStrides(shape), offset = 0): View {
  return { storage: new CpuStorage('float32', data), shape, strides, offset };
}

/** Element (idx) of a view, read from its host data. */
function at(v: View, data: Float32Array, idx: number[]): number {
  let off = v.offset;
  for (let d = 0; d < idx.length; d++) off += idx[d] * v.strides[d];
  return data[off];
}

function close(got: ArrayLike<number>, want: ArrayLike<number>, atol: number, rtol = 1e-4): string | null {
  if (got.length !== want.length) return `length ${got.length} vs ${want.length}`;
  for (let i = 0; i < got.length; i++) {
    const d = Math.abs(got[i] - want[i]);
    if (!(d <= atol + rtol * Math.abs(want[i]))) return `index ${i}: got ${got[i]}, want ${want[i]} (|diff| ${d.toExponential(2)})`;
  }
  return null;
}

/**
 * The WebGPU context, created once and kept in a module-level variable (Dawn's objects must stay
 * reachable). Without an adapter: fail in CI (CI=true), skip loudly elsewhere.
 */
let gpuCtx: GpuContext | undefined;
let gpuSkip: string | false = false;
try {
  gpuCtx = await GpuContext.create();
} catch (e) {
  gpuSkip = `WebGPU unavailable: ${(e as Error).message}`;
  if (process.env.CI === 'true') t.fail(`${gpuSkip} (an adapter is required in CI)`);
  else process.stderr.write(`\n!!!!! ${gpuSkip} -- SKIPPING the webgpu tests of backend-matmul-conv.test.ts !!!!!\n\n`);
}

function upload(ctx: GpuContext, data: Float32Array): GpuStorage {
  const s = ctx.alloc(data.length, 'float32');
  if (data.length) ctx.writeBuffer(s.buffer, data);
  return s;
}

async function download(ctx: GpuContext, s: GpuStorage, n: number): Promise<Float32Array> {
  return new Float32Array(await ctx.readBytes(s.buffer, 0, n * 4));
}

/** Same view geometry on a GPU storage. */
const onGpu = (v: View, s: GpuStorage): View => ({ storage: s, shape: v.shape, strides: v.strides, offset: v.offset });

// ---------- CPU kernels vs hand-computed results ----------

t.test('matmul cpu: hand-computed 2x2 products, batch broadcast and a transposed view', async (t) => {
  const a = cpuView(new Float32Array([1, 2, 3, 4]), [1, 2, 2]);
  const b = cpuView(new Float32Array([5, 6, 7, 8]), [1, 2, 2]);
  const out = new CpuStorage('float32', new Float32Array(4));
  cpuMatmul(a, b, out);
  t.same([...out.data], [19, 22, 43, 50]);

  // b^T through strides: [[5,7],[6,8]]
  const bt = cpuView(new Float32Array([5, 6, 7, 8]), [1, 2, 2], [4, 1, 2]);
  cpuMatmul(a, bt, out);
  t.same([...out.data], [17, 23, 39, 53]);

  // batch of 2 sharing `a` (stride 0), b differs per batch: [[1,0],[0,1]] and [[0,1],[1,0]]
  const ab = cpuView(new Float32Array([1, 2, 3, 4]), [2, 2, 2], [0, 2, 1]);
  const bb = cpuView(new Float32Array([1, 0, 0, 1, 0, 1, 1, 0]), [2, 2, 2]);
  const out2 = new CpuStorage('float32', new Float32Array(8));
  cpuMatmul(ab, bb, out2);
  t.same([...out2.data], [1, 2, 3, 4, 2, 1, 4, 3]);

  // K = 0 gives zeros; a 1x3 @ 3x1 dot product.
  const z = new CpuStorage('float32', new Float32Array([9, 9, 9, 9]));
  cpuMatmul(cpuView(new Float32Array(0), [1, 2, 0]), cpuView(new Float32Array(0), [1, 0, 2]), z);
  t.same([...z.data], [0, 0, 0, 0]);
  const d = new CpuStorage('float32', new Float32Array(1));
  cpuMatmul(cpuView(new Float32Array([1, 2, 3]), [1, 1, 3]), cpuView(new Float32Array([4, 5, 6]), [1, 3, 1]), d);
  t.same([...d.data], [32]);
});

t.test('conv2d cpu: hand-computed cases (padding, stride, dilation, groups)', async (t) => {
  // x = 1..9 as 3x3, w = [[1,0],[0,-1]]: out[i,j] = x[i,j] - x[i+1,j+1] = -4 everywhere (2x2).
  const x = cpuView(new Float32Array([1, 2, 3, 4, 5, 6, 7, 8, 9]), [1, 1, 3, 3]);
  const w = cpuView(new Float32Array([1, 0, 0, -1]), [1, 1, 2, 2]);
  const p: Conv2dParams = { stride: [1, 1], padding: [0, 0], dilation: [1, 1], groups: 1 };
  const out = new CpuStorage('float32', new Float32Array(4));
  cpuConv2d(x, w, p, out);
  t.same([...out.data], [-4, -4, -4, -4]);

  // 3x3 box of ones with padding 1: sums of 3x3 neighbourhoods.
  const ones = cpuView(new Float32Array(9).fill(1), [1, 1, 3, 3]);
  const out9 = new CpuStorage('float32', new Float32Array(9));
  cpuConv2d(x, ones, { ...p, padding: [1, 1] }, out9);
  t.same([...out9.data], [12, 21, 16, 27, 45, 33, 24, 39, 28]);

  // stride 2 with padding 1 picks the corners and centre neighbourhoods: Ho = Wo = 2.
  const outS = new CpuStorage('float32', new Float32Array(4));
  cpuConv2d(x, ones, { ...p, padding: [1, 1], stride: [2, 2] }, outS);
  t.same([...outS.data], [12, 16, 24, 28]);

  // dilation 2 of a 2x2 kernel of ones on 3x3: the four corners, one output.
  const outD = new CpuStorage('float32', new Float32Array(1));
  cpuConv2d(x, cpuView(new Float32Array(4).fill(1), [1, 1, 2, 2]), { ...p, dilation: [2, 2] }, outD);
  t.same([...outD.data], [1 + 3 + 7 + 9]);

  // groups = 2 (depthwise): channel 0 scaled by 2, channel 1 by -1.
  const x2 = cpuView(new Float32Array([1, 2, 3, 4, 10, 20, 30, 40]), [1, 2, 2, 2]);
  const w2 = cpuView(new Float32Array([2, -1]), [2, 1, 1, 1]);
  const out2 = new CpuStorage('float32', new Float32Array(8));
  cpuConv2d(x2, w2, { ...p, groups: 2 }, out2);
  t.same([...out2.data], [2, 4, 6, 8, -10, -20, -30, -40]);
});

/** The naive definition, written independently of both backends. */
function naiveConv(xd: Float32Array, xv: View, wd: Float32Array, wv: View, p: Conv2dParams): Float64Array {
  const [N, , H, W] = xv.shape, [O, Cg, kh, kw] = wv.shape;
  const Ho = Math.floor((H + 2 * p.padding[0] - p.dilation[0] * (kh - 1) - 1) / p.stride[0]) + 1;
  const Wo = Math.floor((W + 2 * p.padding[1] - p.dilation[1] * (kw - 1) - 1) / p.stride[1]) + 1;
  const Og = O / p.groups;
  const out = new Float64Array(N * O * Ho * Wo);
  for (let n = 0; n < N; n++) for (let o = 0; o < O; o++) for (let y = 0; y < Ho; y++) for (let xo = 0; xo < Wo; xo++) {
    let s = 0;
    const g = Math.floor(o / Og);
    for (let c = 0; c < Cg; c++) for (let i = 0; i < kh; i++) for (let j = 0; j < kw; j++) {
      const iy = y * p.stride[0] - p.padding[0] + i * p.dilation[0];
      const ix = xo * p.stride[1] - p.padding[1] + j * p.dilation[1];
      if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
      s += at(wv, wd, [o, c, i, j]) * at(xv, xd, [n, g * Cg + c, iy, ix]);
    }
    out[((n * O + o) * Ho + y) * Wo + xo] = s;
  }
  return out;
}

t.test('conv2d cpu equals the naive loop on stride/padding/dilation/groups combinations', async (t) => {
  const cases: Array<[number[], number[], Conv2dParams]> = [
    [[2, 3, 7, 6], [4, 3, 3, 3], { stride: [1, 1], padding: [1, 1], dilation: [1, 1], groups: 1 }],
    [[1, 4, 9, 8], [6, 2, 3, 2], { stride: [2, 3], padding: [1, 2], dilation: [1, 1], groups: 2 }],
    [[1, 3, 10, 9], [3, 1, 3, 3], { stride: [1, 2], padding: [2, 1], dilation: [2, 3], groups: 3 }],
  ];
  for (const [xs, ws, p] of cases) {
    const xd = rand(numel(xs), 3), wd = rand(numel(ws), 4);
    const xv = cpuView(xd, xs), wv = cpuView(wd, ws);
    const want = naiveConv(xd, xv, wd, wv, p);
    const out = new CpuStorage('float32', new Float32Array(want.length));
    cpuConv2d(xv, wv, p, out);
    t.equal(close(out.data, want, 1e-5), null, `x ${xs} w ${ws} ${JSON.stringify(p)}`);
  }
});

// ---------- WebGPU vs CPU ----------

interface MmCase { name: string; batch: number; m: number; k: number; n: number;
  /** Build the operand views over host arrays (returned with those arrays). */
  a?: (b: number, m: number, k: number) => [Float32Array, View]; b?: (b: number, k: number, n: number) => [Float32Array, View] }

const contiguous = (seed: number) => (b: number, r: number, c: number): [Float32Array, View] => {
  const d = rand(b * r * c, seed); return [d, cpuView(d, [b, r, c])];
};
/** Stored as [b, c, r] and viewed transposed: strides [r*c, 1, r]. */
const transposed = (seed: number) => (b: number, r: number, c: number): [Float32Array, View] => {
  const d = rand(b * r * c, seed); return [d, cpuView(d, [b, r, c], [r * c, 1, r])];
};
/** One matrix shared by every batch (batch stride 0). */
const broadcast = (seed: number) => (b: number, r: number, c: number): [Float32Array, View] => {
  const d = rand(r * c, seed); return [d, cpuView(d, [b, r, c], [0, c, 1])];
};
/** A slice out of a bigger buffer: odd offset, padded rows and batches (non-contiguous batch). */
const strided = (seed: number) => (b: number, r: number, c: number): [Float32Array, View] => {
  const rs = c + 3, bs = (r + 2) * rs;
  const d = rand(5 + b * bs, seed); return [d, cpuView(d, [b, r, c], [bs, rs, 1], 5)];
};
/** Negative strides (a flipped view). */
const flipped = (seed: number) => (b: number, r: number, c: number): [Float32Array, View] => {
  const d = rand(b * r * c, seed); return [d, cpuView(d, [b, r, c], [r * c, c, -1], c - 1)];
};

const MM_CASES: MmCase[] = [
  { name: '1x1x1', batch: 1, m: 1, k: 1, n: 1 },
  { name: '7x13 @ 13x5', batch: 1, m: 7, k: 13, n: 5 },
  { name: '64x65 @ 65x3', batch: 1, m: 64, k: 65, n: 3 },
  { name: '4x0 @ 0x4 (K = 0)', batch: 2, m: 4, k: 0, n: 4 },
  { name: 'aligned 32x64 @ 64x48 (fast path)', batch: 2, m: 32, k: 64, n: 48 },
  { name: '33x20 @ 20x70, row-broadcast A', batch: 3, m: 33, k: 20, n: 70, a: broadcast(1) },
  { name: '17x36 @ 36x40, broadcast B', batch: 3, m: 17, k: 36, n: 40, b: broadcast(2) },
  { name: '40x24 @ transposed 24x36 (x.matmul(w.T), read in place)', batch: 2, m: 40, k: 24, n: 36, b: transposed(2) },
  { name: '30x20 @ transposed 20x13 (in place, N not a multiple of 4)', batch: 3, m: 30, k: 20, n: 13, b: transposed(3) },
  { name: '9x12 @ transposed 12x6 (in place, one B^T shared across the batch)', batch: 2, m: 9, k: 12, n: 6, b: (b, r, c) => { const d = rand(r * c, 4); return [d, cpuView(d, [b, r, c], [0, 1, r])]; } },
  { name: 'transposed A 19x11 @ 11x9', batch: 2, m: 19, k: 11, n: 9, a: transposed(1) },
  { name: 'non-contiguous batch slices 9x10 @ 10x12', batch: 3, m: 9, k: 10, n: 12, a: strided(1), b: strided(2) },
  { name: 'flipped views 6x8 @ 8x8', batch: 2, m: 6, k: 8, n: 8, a: flipped(1), b: flipped(2) },
  { name: '130x67 @ 67x129', batch: 1, m: 130, k: 67, n: 129 },
  { name: '1x256 @ 256x260 (row vector)', batch: 2, m: 1, k: 256, n: 260 },
  { name: '200x8 @ transposed 8x1', batch: 1, m: 200, k: 8, n: 1, b: transposed(2) },
];

/**
 * The default tile, then a small tile without subgroup operations and one with a 3-step unrolled k loop
 * (both through the LATENTDEM_GEMM_TILE override), so every kernel variant meets the awkward shapes.
 */
const TILES = [undefined, '4,1,8,1,0', '8,2,8,3'];

t.test('matmul webgpu equals cpu on awkward shapes and layouts', { skip: gpuSkip }, async (t) => {
  const ctx = gpuCtx!;
  const saved = process.env.LATENTDEM_GEMM_TILE;
  t.teardown(() => { if (saved === undefined) delete process.env.LATENTDEM_GEMM_TILE; else process.env.LATENTDEM_GEMM_TILE = saved; });
  for (const tile of TILES) for (const c of MM_CASES) {
    if (tile === undefined) delete process.env.LATENTDEM_GEMM_TILE; else process.env.LATENTDEM_GEMM_TILE = tile;
    const [ad, av] = (c.a ?? contiguous(1))(c.batch, c.m, c.k);
    const [bd, bv] = (c.b ?? contiguous(2))(c.batch, c.k, c.n);
    const size = c.batch * c.m * c.n;
    const want = new CpuStorage('float32', new Float32Array(size));
    cpuMatmul(av, bv, want);
    const ga = upload(ctx, ad), gb = upload(ctx, bd);
    const out = ctx.alloc(size, 'float32');
    // Poison the output so a missed element shows up.
    ctx.writeBuffer(out.buffer, new Float32Array(size).fill(NaN));
    gpuMatmul(ctx, onGpu(av, ga), onGpu(bv, gb), out);
    const got = await download(ctx, out, size);
    t.equal(close(got, want.data, 1e-5 * Math.max(1, Math.sqrt(c.k))), null, `${c.name} (batch ${c.batch}, tile ${tile ?? 'default'})`);
    ctx.free(ga); ctx.free(gb); ctx.free(out);
  }
});

t.test('matmul webgpu: a batch beyond the 65535-workgroup grid limit is split correctly', { skip: gpuSkip }, async (t) => {
  const ctx = gpuCtx!;
  const batch = ctx.limits.maxComputeWorkgroupsPerDimension + 7;
  const [ad, av] = contiguous(5)(batch, 2, 3);
  const [bd, bv] = transposed(6)(batch, 3, 2);
  const want = new CpuStorage('float32', new Float32Array(batch * 4));
  cpuMatmul(av, bv, want);
  const ga = upload(ctx, ad), gb = upload(ctx, bd), out = ctx.alloc(batch * 4, 'float32');
  gpuMatmul(ctx, onGpu(av, ga), onGpu(bv, gb), out);
  t.equal(close(await download(ctx, out, batch * 4), want.data, 1e-5), null);
  ctx.free(ga); ctx.free(gb); ctx.free(out);
});

interface ConvCase { x: number[]; w: number[]; p: Partial<Conv2dParams>; xLayout?: 'nhwc'; wLayout?: 'flip'; chunk?: number }
const CONV_CASES: ConvCase[] = [
  { x: [2, 3, 7, 6], w: [4, 3, 3, 3], p: { padding: [1, 1] } },
  { x: [1, 8, 9, 8], w: [8, 8, 1, 1], p: {} },                                   // 1x1 fast path
  { x: [2, 8, 5, 4], w: [12, 4, 1, 1], p: { groups: 2 } },                       // 1x1 fast path, groups
  { x: [1, 4, 9, 8], w: [6, 2, 3, 2], p: { stride: [2, 3], padding: [1, 2], groups: 2 } },
  { x: [1, 3, 10, 9], w: [3, 1, 3, 3], p: { stride: [1, 2], padding: [2, 1], dilation: [2, 3], groups: 3 } },
  { x: [2, 6, 8, 8], w: [6, 1, 3, 3], p: { padding: [1, 1], groups: 6 } },      // depthwise
  { x: [1, 5, 6, 7], w: [3, 5, 2, 2], p: { stride: [2, 2] }, xLayout: 'nhwc' },  // channels-last input view
  { x: [1, 2, 5, 5], w: [3, 2, 3, 3], p: { padding: [1, 1] }, wLayout: 'flip' },  // flipped weight view (packed)
  { x: [3, 4, 12, 11], w: [5, 4, 3, 3], p: { padding: [1, 1] }, chunk: 4096 },   // im2col chunked over positions
  { x: [3, 4, 6, 6], w: [5, 4, 3, 3], p: { padding: [1, 1] }, chunk: 2 * 36 * 36 * 4 }, // chunked over images
  { x: [1, 16, 16, 16], w: [32, 16, 3, 3], p: { padding: [1, 1] } },
];

t.test('conv2d webgpu equals cpu and the naive loop (stride/padding/dilation/groups, layouts, chunking)', { skip: gpuSkip }, async (t) => {
  const ctx = gpuCtx!;
  for (const c of CONV_CASES) {
    const p: Conv2dParams = { stride: [1, 1], padding: [0, 0], dilation: [1, 1], groups: 1, ...c.p };
    const xd = rand(numel(c.x), 11), wd = rand(numel(c.w), 12);
    let xv = cpuView(xd, c.x);
    if (c.xLayout === 'nhwc') {
      const [, C, H, W] = c.x;
      xv = cpuView(xd, c.x, [H * W * C, 1, W * C, C]);
    }
    let wv = cpuView(wd, c.w);
    if (c.wLayout === 'flip') {
      const [, Cg, kh, kw] = c.w;
      wv = cpuView(wd, c.w, [Cg * kh * kw, kh * kw, -kw, -1], kh * kw - 1);
    }
    const naive = naiveConv(xd, xv, wd, wv, p);
    const cpuOut = new CpuStorage('float32', new Float32Array(naive.length));
    cpuConv2d(xv, wv, p, cpuOut);
    const label = `x ${c.x} w ${c.w} ${JSON.stringify(c.p)}${c.xLayout ? ' ' + c.xLayout : ''}${c.wLayout ? ' ' + c.wLayout : ''}${c.chunk ? ' chunk ' + c.chunk : ''}`;
    t.equal(close(cpuOut.data, naive, 1e-5), null, `cpu: ${label}`);
    const gx = upload(ctx, xd), gw = upload(ctx, wd), out = ctx.alloc(naive.length, 'float32');
    ctx.writeBuffer(out.buffer, new Float32Array(naive.length).fill(NaN));
    gpuConv2d(ctx, onGpu(xv, gx), onGpu(wv, gw), p, out, c.chunk);
    const got = await download(ctx, out, naive.length);
    const k = c.w[1] * c.w[2] * c.w[3];
    t.equal(close(got, cpuOut.data, 1e-5 * Math.max(1, Math.sqrt(k))), null, `webgpu: ${label}`);
    ctx.free(gx); ctx.free(gw); ctx.free(out);
  }
});

t.test('winograd transform matrices satisfy the bilinear identity of F(m x m, 3 x 3) exactly (float64)', async (t) => {
  for (const m of [2, 4] as const) {
    const { AT, G, BT } = WINOGRAD_MATRICES[m];
    let worst = 0;
    // y_i = sum_k g_k d_{i+k} for every g, d  <=>  sum_j AT[i][j] G[j][k] BT[j][l] = [l == i + k].
    for (let i = 0; i < m; i++) for (let k = 0; k < 3; k++) for (let l = 0; l < m + 2; l++) {
      let s = 0;
      for (let j = 0; j < m + 2; j++) s += AT[i][j] * G[j][k] * BT[j][l];
      worst = Math.max(worst, Math.abs(s - (l === i + k ? 1 : 0)));
    }
    t.ok(worst < 1e-12, `F(${m}x${m},3x3): worst identity residual ${worst.toExponential(2)}`);
  }
});

// Winograd serves 3x3 stride-1 ungrouped convs: odd sizes (partial edge tiles), every padding, strided input and
// weight views, tile chunks and output-channel blocks (a small chunkBytes), tiles smaller than one GEMM column block, SD-like widths.
const WINO_CASES: ConvCase[] = [
  { x: [2, 20, 13, 11], w: [24, 20, 3, 3], p: { padding: [1, 1] } },
  { x: [1, 16, 9, 10], w: [17, 16, 3, 3], p: { padding: [0, 0] } },
  { x: [1, 18, 5, 6], w: [16, 18, 3, 3], p: { padding: [2, 1] } },
  { x: [1, 16, 7, 6], w: [16, 16, 3, 3], p: { padding: [1, 1] }, xLayout: 'nhwc' },
  { x: [1, 16, 6, 6], w: [20, 16, 3, 3], p: { padding: [1, 1] }, wLayout: 'flip' },
  { x: [3, 16, 12, 11], w: [16, 16, 3, 3], p: { padding: [1, 1] }, chunk: 36 * 16 * 4 * 8 },
  { x: [1, 16, 6, 7], w: [22, 16, 3, 3], p: { padding: [1, 1] }, chunk: 36 * 16 * 4 * 5 }, // output channels in blocks of 5
  { x: [2, 1, 4, 4], w: [3, 1, 3, 3], p: { padding: [1, 1] } },
  { x: [1, 128, 32, 32], w: [64, 128, 3, 3], p: { padding: [1, 1] } },
];

t.test('conv2d webgpu Winograd F(2x2) and F(4x4) equal the cpu reference; the trace names the algorithm', { skip: gpuSkip }, async (t) => {
  const ctx = gpuCtx!;
  try {
    for (const algo of ['winograd2', 'winograd4'] as const) {
      convChoice.algorithm = algo;
      for (const c of WINO_CASES) {
        const p: Conv2dParams = { stride: [1, 1], padding: [0, 0], dilation: [1, 1], groups: 1, ...c.p };
        const xd = rand(numel(c.x), 21), wd = rand(numel(c.w), 22);
        const [, C, H, W] = c.x;
        const xv = c.xLayout === 'nhwc' ? cpuView(xd, c.x, [H * W * C, 1, W * C, C]) : cpuView(xd, c.x);
        const [, Cg, kh, kw] = c.w;
        const wv = c.wLayout === 'flip' ? cpuView(wd, c.w, [Cg * kh * kw, kh * kw, -kw, -1], kh * kw - 1) : cpuView(wd, c.w);
        const want = new CpuStorage('float32', new Float32Array(numel([c.x[0], c.w[0], H + 2 * p.padding[0] - 2, W + 2 * p.padding[1] - 2])));
        cpuConv2d(xv, wv, p, want);
        const gx = upload(ctx, xd), gw = upload(ctx, wd), out = ctx.alloc(want.data.length, 'float32');
        ctx.writeBuffer(out.buffer, new Float32Array(want.data.length).fill(NaN));
        gpuConv2d(ctx, onGpu(xv, gx), onGpu(wv, gw), p, out, c.chunk);
        t.equal(ctx.lastKernel, `conv2d.${algo}`, `${algo} ran for x ${c.x}`);
        const got = await download(ctx, out, want.data.length);
        // F(4x4)'s transforms scale values by up to ~10 before the GEMM: a few more float32 roundings than im2col.
        const k = C * 9;
        t.equal(close(got, want.data, (algo === 'winograd4' ? 4e-5 : 1e-5) * Math.sqrt(k)), null, `${algo}: x ${c.x} w ${c.w} ${JSON.stringify(c.p)}${c.xLayout ?? ''}${c.wLayout ?? ''}${c.chunk ? ' chunk ' + c.chunk : ''}`);
        ctx.free(gx); ctx.free(gw); ctx.free(out);
      }
    }
  } finally {
    convChoice.algorithm = 'auto';
  }
});

t.test('conv2d weight gradient webgpu equals cpu, with chunks over images and over positions', { skip: gpuSkip }, async (t) => {
  const ctx = gpuCtx!;
  const cases: { x: number[]; o: number; k: [number, number]; p: Partial<Conv2dParams>; chunk?: number }[] = [
    { x: [3, 4, 12, 11], o: 5, k: [3, 3], p: { padding: [1, 1] } },
    { x: [3, 4, 12, 11], o: 5, k: [3, 3], p: { padding: [1, 1] }, chunk: 4096 },            // positions chunked
    { x: [3, 4, 6, 6], o: 6, k: [3, 3], p: { padding: [1, 1], groups: 2 }, chunk: 2 * 36 * 20 * 4 }, // images chunked, groups
    { x: [2, 6, 9, 8], o: 4, k: [2, 3], p: { stride: [2, 1], dilation: [1, 2], padding: [0, 2] } },
  ];
  for (const c of cases) {
    const p: Conv2dParams = { stride: [1, 1], padding: [0, 0], dilation: [1, 1], groups: 1, ...c.p };
    const [N, C, H, W] = c.x;
    const Ho = Math.floor((H + 2 * p.padding[0] - p.dilation[0] * (c.k[0] - 1) - 1) / p.stride[0]) + 1;
    const Wo = Math.floor((W + 2 * p.padding[1] - p.dilation[1] * (c.k[1] - 1) - 1) / p.stride[1]) + 1;
    const xd = rand(numel(c.x), 31), gd = rand(N * c.o * Ho * Wo, 32);
    const xv = cpuView(xd, c.x), gv = cpuView(gd, [N, c.o, Ho, Wo]);
    const want = new CpuStorage('float32', new Float32Array(c.o * (C / p.groups) * c.k[0] * c.k[1]));
    cpuConv2dWeightGrad(xv, gv, p, c.k, want);
    const gx = upload(ctx, xd), gg = upload(ctx, gd), out = ctx.alloc(want.data.length, 'float32');
    ctx.writeBuffer(out.buffer, new Float32Array(want.data.length).fill(NaN));
    gpuConv2dWeightGrad(ctx, onGpu(xv, gx), onGpu(gv, gg), p, c.k, out, c.chunk);
    const got = await download(ctx, out, want.data.length);
    t.equal(close(got, want.data, 1e-5 * Math.sqrt(N * Ho * Wo)), null, `x ${c.x} o ${c.o} k ${c.k} ${JSON.stringify(c.p)}${c.chunk ? ' chunk ' + c.chunk : ''}`);
    ctx.free(gx); ctx.free(gg); ctx.free(out);
  }
});
