/**
 * The matmul epilogue (bias + activation applied as the GEMM stores) and the fused `linear` op built on it:
 * equal to the unfused composite (matmul, add, activation) on both backends, awkward shapes included;
 * gradients against finite differences and against cpu; the trace names the fused kernel.
 */
import t from 'tap';
import * as L from '../src/index.js';
import type { Tensor } from '../src/index.js';
import { assertGradsMatchCpu, close, gradCheck, hostRandom, on, testBackends } from './helpers.js';

const ACTS = ['none', 'silu', 'gelu'] as const;
const composite = (x: Tensor, w: Tensor, b: Tensor | null, act: (typeof ACTS)[number]): Tensor => {
  let y = L.matmul(x, L.transpose(w));
  if (b) y = L.add(y, b);
  return act === 'silu' ? L.silu(y) : act === 'gelu' ? L.gelu(y) : y;
};

// [lead..., K] x [N, K]: K and N not multiples of 4, one row, 3-D input, SD-like widths.
const SHAPES: { x: number[]; n: number }[] = [
  { x: [5, 7], n: 3 }, { x: [1, 13], n: 9 }, { x: [2, 3, 6], n: 5 }, { x: [2, 77, 64], n: 40 }, { x: [128, 320], n: 320 },
];

t.test('linear (fused epilogue) equals matmul + bias + activation on every backend', async (t) => {
  for (const b of await testBackends()) {
    for (const s of SHAPES) {
      const k = s.x[s.x.length - 1];
      const xd = hostRandom(s.x.reduce((p, q) => p * q, 1), 1), wd = hostRandom(s.n * k, 2, -0.5, 0.5), bd = hostRandom(s.n, 3);
      for (const act of ACTS) {
        for (const withBias of [true, false]) {
          const x = on(b, xd, s.x), w = on(b, wd, [s.n, k]), bias = withBias ? on(b, bd, [s.n]) : null;
          const got = await L.linear(x, w, bias, act).data();
          const want = await composite(x, w, bias, act).data();
          const c = close(got, want, 1e-5 * Math.sqrt(k), 1e-5);
          t.ok(c.ok, `${b.name} x ${s.x} n ${s.n} act ${act} bias ${withBias}: ${c.message}`);
        }
      }
    }
  }
});

t.test('linear on a non-contiguous input and a strided (transposed-storage) weight', async (t) => {
  for (const b of await testBackends()) {
    const xt = L.transpose(on(b, hostRandom(6 * 5, 4), [6, 5])); // [5, 6], strides [1, 5]
    const wt = L.transpose(on(b, hostRandom(6 * 7, 5), [6, 7])); // [7, 6] viewed from [6, 7]
    const bias = on(b, hostRandom(7, 6), [7]);
    const c = close(await L.linear(xt, wt, bias, 'silu').data(), await composite(xt, wt, bias, 'silu').data(), 1e-5, 1e-5);
    t.ok(c.ok, `${b.name}: ${c.message}`);
  }
});

t.test('linear gradients: finite differences on cpu, cpu equality on webgpu, every activation', async (t) => {
  const backends = await testBackends();
  const inputs = [{ data: hostRandom(3 * 5, 7), shape: [3, 5] }, { data: hostRandom(4 * 5, 8), shape: [4, 5] }, { data: hostRandom(4, 9), shape: [4] }];
  for (const act of ACTS) {
    const f = (x: Tensor, w: Tensor, bias: Tensor): Tensor => L.linear(x, w, bias, act);
    const r = await gradCheck('cpu', f, inputs);
    t.ok(r.worst < 2e-3, `cpu ${act}: worst relative error ${r.worst.toExponential(2)} ${r.where}`);
    await assertGradsMatchCpu(t, backends, f, inputs, r.analytic);
  }
});

t.test('the trace names the fused GEMM epilogue; bad shapes are named errors', async (t) => {
  for (const b of await testBackends()) {
    const x = on(b, hostRandom(8, 1), [2, 4]), w = on(b, hostRandom(12, 2), [3, 4]), bias = on(b, hostRandom(3, 3), [3]);
    const { events } = L.trace(() => L.linear(x, w, bias, 'gelu'));
    const ev = events.find((e) => e.op === 'linear');
    t.ok(ev && /epilogue|\+bias\+gelu/.test(ev.kernel), `${b.name}: linear ran ${ev?.kernel}`);
    t.throws(() => L.linear(x, on(b, hostRandom(15, 2), [3, 5]), bias), { name: 'ShapeError', message: /linear/ });
    t.throws(() => L.linear(x, w, on(b, hostRandom(4, 2), [4])), { name: 'ShapeError', message: /bias/ });
  }
});
