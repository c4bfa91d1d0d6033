/**
 * Every op on every backend against the CPU reference, on random and awkward shapes; gradients against
 * central finite differences (cpu) and webgpu gradients against cpu gradients.
 */
import t from 'tap';
import * as L from '../src/index.js';
import type { Tensor } from '../src/index.js';
import { assertGradsMatchCpu, close, gradCheck, hostRandom, on, testBackends } from './helpers.js';

const backends = await testBackends();

/** `avoid`: kinks of a non-smooth op; inputs closer than 0.05 are moved away so finite differences are valid. */
interface Input { shape: number[]; lo?: number; hi?: number; avoid?: number[] }
interface Case {
  name: string;
  inputs: Input[];
  fn: (...xs: Tensor[]) => Tensor;
  /** Check gradients (float inputs only). */
  grad?: boolean;
  atol?: number;
  /** Finite-difference tolerance (relative to max(1, |numeric|)). */
  fdTol?: number;
  /** Finite-difference step. */
  eps?: number;
}

const T = (x: Tensor): Tensor => x.transpose(0, 1);
const C: Case[] = [
  // unary
  ...(['neg', 'abs', 'exp', 'sin', 'cos', 'tanh', 'sigmoid', 'relu', 'silu', 'erf', 'square'] as const).map((op): Case => ({
    name: `${op} on a transposed [5,7] view`, inputs: [{ shape: [7, 5], lo: -2, hi: 2, avoid: [0] }], fn: (x) => { const v = T(x); return (v[op] as () => Tensor).call(v); }, grad: true,
  })),
  { name: 'log, sqrt, rsqrt, reciprocal on positive [3,1,6]', inputs: [{ shape: [3, 1, 6], lo: 0.5, hi: 2 }], fn: (x) => L.stack([x.log(), x.sqrt(), x.rsqrt(), x.reciprocal()]), grad: true },
  { name: 'gelu erf and tanh forms on [4,9]', inputs: [{ shape: [4, 9], lo: -3, hi: 3 }], fn: (x) => L.concat([x.gelu(), x.gelu('tanh')]), grad: true },
  { name: 'floor and sign on [17] (no gradient)', inputs: [{ shape: [17], lo: -3, hi: 3 }], fn: (x) => L.concat([x.floor(), x.sign()]) },
  { name: 'clamp to [-0.5, 0.3], (-inf, -0.1], [0.6, inf)', inputs: [{ shape: [6, 5], lo: -1, hi: 1, avoid: [-0.5, 0.3, -0.1, 0.6] }], fn: (x) => L.stack([x.clamp(-0.5, 0.3), x.clamp(null, -0.1), x.clamp(0.6)]), grad: true },
  // binary + broadcasting
  { name: 'add/sub/mul/div broadcast [3,1,5] with [4,1]', inputs: [{ shape: [3, 1, 5] }, { shape: [4, 1], lo: 0.5, hi: 1.5 }], fn: (a, b) => L.stack([a.add(b), a.sub(b), a.mul(b), a.div(b)]), grad: true },
  { name: 'binary with numbers and a rank-0 tensor', inputs: [{ shape: [2, 3] }, { shape: [] }], fn: (a, s) => a.mul(2).add(s).sub(0.5).div(s.add(3)), grad: true },
  { name: 'pow with positive base, broadcast exponent', inputs: [{ shape: [3, 4], lo: 0.5, hi: 2 }, { shape: [4], lo: -1.5, hi: 2.5 }], fn: (a, b) => a.pow(b), grad: true },
  { name: 'pow of negative base by integer exponents', inputs: [{ shape: [5], lo: -2, hi: -0.5 }], fn: (a) => L.stack([a.pow(2), a.pow(3), a.pow(-1)]), grad: true },
  { name: 'maximum/minimum on strided slices', inputs: [{ shape: [6, 8] }, { shape: [3, 8] }], fn: (a, b) => L.stack([a.slice([[0, 6, 2]]).maximum(b), a.slice([[1, 6, 2]]).minimum(b)]), grad: true, eps: 1e-3 },
  { name: 'comparisons produce 1/0', inputs: [{ shape: [4, 5] }, { shape: [5] }], fn: (a, b) => L.stack([a.eq(a), a.ne(b), a.lt(b), a.le(b), a.gt(b), a.ge(0)]) },
  { name: 'where with broadcast condition', inputs: [{ shape: [3, 1] }, { shape: [3, 4] }, { shape: [4] }], fn: (c, a, b) => L.where(c.gt(0), a, b), grad: true },
  // reductions
  { name: 'sum over axes [0,2] keepdim on [3,4,5]', inputs: [{ shape: [3, 4, 5] }], fn: (x) => x.sum([0, 2], { keepdim: true }), grad: true },
  { name: 'sum of everything, mean over -1, on a permuted view', inputs: [{ shape: [2, 3, 7] }], fn: (x) => L.concat([x.permute([2, 0, 1]).sum().reshape([1]), x.permute([2, 0, 1]).mean(-1).flatten()]), grad: true },
  { name: 'max/min over axis 1 and all', inputs: [{ shape: [5, 6] }], fn: (x) => L.concat([x.max(1), x.min(0), x.max().reshape([1])]), grad: true },
  { name: 'var (unbiased, population) and logsumexp', inputs: [{ shape: [4, 9] }], fn: (x) => L.concat([x.var(1), x.var(0, { correction: 0 }), x.logsumexp(1), x.logsumexp().reshape([1])]), grad: true },
  { name: 'argmax over axis and flattened', inputs: [{ shape: [7, 5] }], fn: (x) => L.concat([x.argmax(0), x.argmax(1), x.argmax().reshape([1])]) },
  { name: 'large sum (4096*37 elements)', inputs: [{ shape: [4096, 37] }], fn: (x) => L.concat([x.sum(0), x.sum(1), x.sum().reshape([1])]), atol: 1e-3 },
  // matmul
  { name: 'matmul 7x13 @ 13x5', inputs: [{ shape: [7, 13] }, { shape: [13, 5] }], fn: (a, b) => a.matmul(b), grad: true },
  { name: 'matmul with transposed B view, 64x65 @ (3x65)^T', inputs: [{ shape: [64, 65] }, { shape: [3, 65] }], fn: (a, b) => a.matmul(b.transpose()), atol: 1e-4 },
  { name: 'batched matmul broadcast [2,1,4,6] @ [3,6,5]', inputs: [{ shape: [2, 1, 4, 6] }, { shape: [3, 6, 5] }], fn: (a, b) => a.matmul(b), grad: true },
  { name: 'matmul 1-D @ 2-D and 2-D @ 1-D', inputs: [{ shape: [6] }, { shape: [6, 3] }], fn: (v, m) => L.concat([v.matmul(m), m.transpose().matmul(v)]), grad: true },
  { name: 'matmul with K = 0 gives zeros', inputs: [{ shape: [3, 0] }, { shape: [0, 4] }], fn: (a, b) => a.matmul(b) },
  // conv and friends
  { name: 'conv2d 3x3 padding 1 with bias', inputs: [{ shape: [2, 3, 7, 6] }, { shape: [4, 3, 3, 3] }, { shape: [4] }], fn: (x, w, b) => L.conv2d(x, w, { padding: 1, bias: b }), grad: true },
  { name: 'conv2d stride 2, dilation 2, groups 2', inputs: [{ shape: [1, 4, 9, 8] }, { shape: [6, 2, 3, 2] }], fn: (x, w) => L.conv2d(x, w, { stride: 2, dilation: [2, 1], padding: [1, 0], groups: 2 }), grad: true },
  { name: 'conv2d stride 3 leaving input rows unused', inputs: [{ shape: [1, 2, 8, 7] }, { shape: [3, 2, 2, 2] }], fn: (x, w) => L.conv2d(x, w, { stride: 3 }), grad: true },
  { name: 'depthwise conv2d (groups = channels)', inputs: [{ shape: [2, 3, 5, 5] }, { shape: [3, 1, 3, 3] }], fn: (x, w) => L.conv2d(x, w, { padding: 1, groups: 3 }), grad: true },
  { name: 'convTranspose2d stride 2 output padding 1 groups 2', inputs: [{ shape: [1, 4, 3, 4] }, { shape: [4, 3, 3, 3] }, { shape: [6] }], fn: (x, w, b) => L.convTranspose2d(x, w, { stride: 2, padding: 1, outputPadding: 1, groups: 2, bias: b }), grad: true },
  { name: 'maxPool2d 3x3 stride 2 padding 1, avgPool2d 2x2', inputs: [{ shape: [2, 2, 7, 6] }], fn: (x) => L.concat([L.maxPool2d(x, { kernel: 3, stride: 2, padding: 1 }).flatten(), L.avgPool2d(x, { kernel: 2 }).flatten()]), grad: true, eps: 1e-3 },
  { name: 'upsample nearest x2 and to 5x7, bilinear to 7x5 and align corners', inputs: [{ shape: [1, 2, 3, 4] }], fn: (x) => L.concat([L.upsample(x, { scaleFactor: 2 }).flatten(), L.upsample(x, { size: [5, 7] }).flatten(), L.upsample(x, { size: [7, 5], mode: 'bilinear' }).flatten(), L.upsample(x, { size: [6, 6], mode: 'bilinear', alignCorners: true }).flatten()]), grad: true },
  // nn composites
  { name: 'softmax and logSoftmax over axes -1 and 0', inputs: [{ shape: [4, 7], lo: -3, hi: 3 }], fn: (x) => L.concat([L.softmax(x, -1), L.logSoftmax(x, 0)]), grad: true },
  { name: 'layerNorm over [5] and [3,5] with affine', inputs: [{ shape: [2, 3, 5] }, { shape: [5] }, { shape: [5] }], fn: (x, w, b) => L.concat([L.layerNorm(x, [5], w, b), L.layerNorm(x, [3, 5])]), grad: true },
  { name: 'groupNorm 2 groups of [2,6,3,3] with affine', inputs: [{ shape: [2, 6, 3, 3] }, { shape: [6] }, { shape: [6] }], fn: (x, w, b) => L.groupNorm(x, 2, w, b), grad: true },
  { name: 'attention with a keep-mask', inputs: [{ shape: [2, 5, 4] }, { shape: [2, 6, 4] }, { shape: [2, 6, 3] }, { shape: [5, 6] }], fn: (q, k, v, m) => L.scaledDotProductAttention(q, k, v, { mask: m.gt(-0.6) }), grad: true },
  // views
  { name: 'reshape of a permuted view (copy) and flatten', inputs: [{ shape: [3, 4, 5] }], fn: (x) => x.permute([2, 0, 1]).reshape([5, 12]).mul(1), grad: true },
  { name: 'slice with steps and negative indices, narrow', inputs: [{ shape: [9, 10] }], fn: (x) => L.concat([x.slice([[1, -1, 3], [-7, 10, 2]]).flatten(), x.narrow(1, 2, 3).flatten()]), grad: true },
  { name: 'expand, squeeze, unsqueeze', inputs: [{ shape: [3, 1] }], fn: (x) => x.expand([2, 3, 4]).unsqueeze(1).squeeze(1).mul(x.unsqueeze(0)), grad: true },
  { name: 'flip on two axes then contiguous', inputs: [{ shape: [3, 4, 5] }], fn: (x) => x.flip([0, 2]).contiguous(), grad: true },
  { name: 'pad constant (and negative crop), reflect, circular', inputs: [{ shape: [1, 2, 4, 5] }], fn: (x) => L.concat([x.pad([1, 2, 0, 1], 'constant', 0.5).flatten(), x.pad([2, -1, 1, 0]).flatten(), x.pad([2, 3, 3, 1], 'reflect').flatten(), x.pad([4, 1, 2, 4], 'circular').flatten()]), grad: true },
  { name: 'concat, split, stack, roll', inputs: [{ shape: [2, 5] }, { shape: [2, 3] }], fn: (a, b) => { const c = L.concat([a, b], 1); const [p, q] = c.split([6, 2], 1); return L.concat([L.stack([p.narrow(1, 0, 2), q], 0).flatten(), L.roll(c, [3, -1], [1, 0]).flatten()]); }, grad: true },
  { name: 'empty tensors: add, sum, concat', inputs: [{ shape: [0, 3] }, { shape: [2, 3] }], fn: (e, x) => L.concat([e.add(1), x]).sum(0) },
  // FFT
  { name: 'fft2/ifft2 on [2,8,16] complex', inputs: [{ shape: [2, 8, 16] }, { shape: [2, 8, 16] }], fn: (re, im) => { const [a, b] = L.fft2(re, im); const [c, d] = L.ifft2(a.mul(0.7), b); return L.stack([a, b, c, d]); }, grad: true, atol: 1e-4, fdTol: 3e-2 },
  { name: 'fft2 of a non-power-of-two real [6,5]', inputs: [{ shape: [6, 5] }], fn: (x) => L.stack(L.fft2(x)), grad: true, atol: 1e-4 },
  { name: 'fftConv2d circular and same on [1,16,16] with 5x4 kernel', inputs: [{ shape: [1, 16, 16] }, { shape: [5, 4], lo: 0, hi: 1 }], fn: (x, k) => L.concat([L.fftConv2d(x, k).flatten(), L.fftConv2d(x, k, { mode: 'same' }).flatten()]), grad: true, atol: 1e-4, fdTol: 3e-2 },
];

async function inputsFor(c: Case): Promise<{ data: Float32Array; shape: number[] }[]> {
  return c.inputs.map((inp, k) => {
    const data = hostRandom(inp.shape.reduce((a, b) => a * b, 1), k + 7 * c.name.length, inp.lo ?? -1, inp.hi ?? 1);
    for (const kink of inp.avoid ?? []) for (let i = 0; i < data.length; i++) if (Math.abs(data[i] - kink) < 0.05) data[i] = kink + (data[i] < kink ? -0.1 : 0.1);
    return { data, shape: inp.shape };
  });
}

for (const c of C) {
  t.test(c.name, async (t) => {
    const inputs = await inputsFor(c);
    const cpuOut = await L.noGrad(() => c.fn(...inputs.map((i) => on('cpu', i.data, i.shape)))).data();
    t.ok(cpuOut.length >= 0);
    for (const b of backends) {
      if (b.name === 'cpu') continue;
      const out = await L.noGrad(() => c.fn(...inputs.map((i) => on(b, i.data, i.shape)))).data();
      const r = close(out, cpuOut, c.atol ?? 2e-5, 1e-4);
      t.ok(r.ok, `${b.name} equals cpu: ${r.message}`);
    }
    if (!c.grad) return;
    const fd = await gradCheck('cpu', c.fn, inputs, c.eps);
    t.ok(fd.worst < (c.fdTol ?? 1e-2), `cpu gradient matches finite differences (worst ${fd.worst.toExponential(2)} ${fd.where})`);
    await assertGradsMatchCpu(t, backends, c.fn, inputs, fd.analytic, c.atol ? c.atol * 10 : 1e-4);
  });
}

t.test('conv2d weight gradient: the backend kernel equals the composite (a conv2d of x with the output gradient)', async (t) => {
  const { conv2dWeightGradComposite } = await import('../src/ops/conv.js');
  const configs: { x: number[]; w: number[]; o: L.Conv2dOptions }[] = [
    { x: [2, 4, 9, 8], w: [6, 2, 3, 2], o: { stride: 2, dilation: [2, 1], padding: [1, 0], groups: 2 } },
    { x: [1, 2, 8, 7], w: [3, 2, 2, 2], o: { stride: 3 } },
    { x: [2, 3, 5, 5], w: [3, 1, 3, 3], o: { padding: 1, groups: 3 } },
    { x: [2, 5, 7, 6], w: [7, 5, 3, 3], o: { padding: 1 } },
    { x: [1, 32, 16, 16], w: [24, 32, 3, 3], o: { padding: 1 } },
    { x: [1, 8, 9, 9], w: [4, 8, 1, 1], o: {} },
  ];
  for (const b of backends) {
    for (const c of configs) {
      const x = on(b, hostRandom(c.x.reduce((p, q) => p * q, 1), 1), c.x);
      const w = on(b, hostRandom(c.w.reduce((p, q) => p * q, 1), 2), c.w);
      const y = L.conv2d(x, w, c.o);
      const g = on(b, hostRandom(y.size, 3), y.shape);
      const [dw] = L.grad((ww) => L.conv2d(x, ww, c.o).mul(g).sum())(w);
      const want = conv2dWeightGradComposite(x, g, c.o, [c.w[2], c.w[3]]);
      const r = close(await dw.data(), await want.data(), 1e-4 * Math.sqrt(y.size / c.w[0]), 1e-4);
      t.ok(r.ok, `${b.name} x [${c.x}] w [${c.w}] ${JSON.stringify(c.o)}: ${r.message}`);
    }
  }
});
