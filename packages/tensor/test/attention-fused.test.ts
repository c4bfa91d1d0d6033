/** The fused attention primitive (flash attention) equals the composite attention, values and gradients, on every backend. */
import t from 'tap';
import * as L from '../src/index.js';
import { close, gpuContext, gradCheck, hostRandom, on, testBackends } from './helpers.js';

const backends = await testBackends();
// Every unmasked shape below runs the fused kernels, wide heads included.
L.attentionTuning.fusedMaxDim = Infinity;
const size = (s: readonly number[]): number => s.reduce((a, n) => a * n, 1);

interface Case { name: string; q: number[]; k: number[]; v: number[]; permute?: boolean }
const cases: Case[] = [
  { name: 'SD-like heads [2,8,64,40]', q: [2, 8, 64, 40], k: [2, 8, 64, 40], v: [2, 8, 64, 40] },
  { name: 'Lq != Lk, cross-attention [2,3,17,40] x [2,3,33,40]', q: [2, 3, 17, 40], k: [2, 3, 33, 40], v: [2, 3, 33, 40] },
  { name: 'd = 7, dv = 5 (not multiples of 4)', q: [3, 5, 7], k: [3, 9, 7], v: [3, 9, 5] },
  { name: 'Lq = 1', q: [4, 1, 16], k: [4, 19, 16], v: [4, 19, 16] },
  { name: 'Lk = 1', q: [2, 13, 8], k: [2, 1, 8], v: [2, 1, 8] },
  { name: 'Lq = Lk = 3, d = 1', q: [1, 3, 1], k: [1, 3, 1], v: [1, 3, 1] },
  { name: 'broadcast batch: k/v [1,3,5,*] against q [2,3,7,4]', q: [2, 3, 7, 4], k: [1, 3, 5, 4], v: [1, 3, 5, 2] },
  { name: 'broadcast batch: 2-D k/v [5,4] against q [2,3,7,4]', q: [2, 3, 7, 4], k: [5, 4], v: [5, 3] },
  { name: 'permuted head views [b,h,n,d] of [b,n,h*d]', q: [2, 37, 2, 12], k: [2, 37, 2, 12], v: [2, 37, 2, 12], permute: true },
  { name: 'd = dv = 80 (UNet level 2)', q: [2, 21, 80], k: [2, 45, 80], v: [2, 45, 80] },
  { name: 'd = dv = 160 (UNet level 3)', q: [1, 9, 160], k: [1, 50, 160], v: [1, 50, 160] },
  { name: 'd = dv = 512 (VAE mid attention)', q: [1, 20, 512], k: [1, 37, 512], v: [1, 37, 512] },
];

/** Forward and q/k/v gradients of sum(attn(q, k, v) * r) through `f`. */
async function run(b: L.Backend, c: Case, data: Float32Array[], f: (q: L.Tensor, k: L.Tensor, v: L.Tensor) => L.Tensor): Promise<{ out: ArrayLike<number>; grads: ArrayLike<number>[] }> {
  const xs = data.map((d, i) => on(b, d, [c.q, c.k, c.v][i], true));
  // 'b n h d -> b h n d' views, as the UNet's heads() makes them
  const view = (x: L.Tensor): L.Tensor => (c.permute ? x.permute([0, 2, 1, 3]) : x);
  const out = f(view(xs[0]), view(xs[1]), view(xs[2]));
  const r = on(b, hostRandom(out.size, 9, 0.5, 1.5), out.shape);
  out.mul(r).sum().backward();
  return { out: await out.data(), grads: await Promise.all(xs.map(async (x) => x.grad!.data())) };
}

for (const b of backends) {
  for (const c of cases) {
    t.test(`${b.name}: fused attention equals the composite on ${c.name}, forward and gradients`, async (t) => {
      const data = [c.q, c.k, c.v].map((s, i) => hostRandom(size(s), 31 + i, -2, 2));
      const fused = await run(b, c, data, (q, k, v) => L.scaledDotProductAttention(q, k, v));
      const ref = await run(b, c, data, (q, k, v) => L.attentionComposite(q, k, v));
      const o = close(fused.out, ref.out, 1e-5, 1e-4);
      t.ok(o.ok, `output: ${o.message}`);
      ['dq', 'dk', 'dv'].forEach((name, i) => {
        const g = close(fused.grads[i], ref.grads[i], 1e-5, 1e-4);
        t.ok(g.ok, `${name}: ${g.message}`);
      });
    });
  }

  t.test(`${b.name}: fused attention gradients match finite differences`, async (t) => {
    const shapes = [[2, 5, 3], [2, 4, 3], [2, 4, 2]];
    const inputs = shapes.map((shape, i) => ({ shape, data: hostRandom(size(shape), 20 + i) }));
    const { worst, where } = await gradCheck(b, (q, k, v) => L.scaledDotProductAttention(q, k, v, { scale: 0.7 }), inputs, 1e-2);
    t.ok(worst < 2e-3, `worst relative error ${worst.toExponential(2)} (${where})`);
  });

  t.test(`${b.name}: a mask still takes the composite path, and the fused path leaves no tensors behind`, async (t) => {
    const q = on(b, hostRandom(2 * 6 * 4, 1), [2, 6, 4]); const k = on(b, hostRandom(2 * 5 * 4, 2), [2, 5, 4]);
    const mask = L.ones([6, 5], { backend: b });
    const { events } = L.trace(() => L.tidy(() => L.scaledDotProductAttention(q, k, k, { mask })));
    t.notOk(events.some((e) => e.op === 'attention'), 'no fused launch with a mask');
    const before = L.memory().tensors[b.name];
    L.tidy(() => { L.scaledDotProductAttention(q, k, k); });
    t.equal(L.memory().tensors[b.name], before, 'live tensors unchanged after a tidy fused forward');
    const qg = on(b, hostRandom(2 * 6 * 4, 1), [2, 6, 4], true);
    L.tidy(() => { L.scaledDotProductAttention(qg, k, k).sum().backward(); });
    qg.grad!.dispose();
    t.equal(L.memory().tensors[b.name], before + 1, 'only the leaf remains after a tidy forward + backward');
    for (const x of [q, k, qg, mask]) x.dispose();
  });
}

const gpu = backends.find((b) => b.name === 'webgpu');
const cpu = backends.find((b) => b.name === 'cpu')!;
const noGpu = gpu ? false : 'no WebGPU adapter';

t.test('webgpu: fused attention at Lq = Lk = 1024, d = 40 equals the cpu composite (rows subset) and the webgpu composite gradients', { skip: noGpu }, async (t) => {
  const shape = [1, 1024, 40];
  const data = [1, 2, 3].map((s) => hostRandom(size(shape), 50 + s, -2, 2));
  const c: Case = { name: 'large', q: shape, k: shape, v: shape };
  const fused = await run(gpu!, c, data, (q, k, v) => L.scaledDotProductAttention(q, k, v));
  // Rows 0..63 and 960..1023 of the output from the cpu composite (attention rows are independent).
  for (const r0 of [0, 960]) {
    const ref = L.noGrad(() => L.attentionComposite(on(cpu, data[0], shape).narrow(1, r0, 64), on(cpu, data[1], shape), on(cpu, data[2], shape)));
    const o = close((fused.out as Float32Array).subarray(r0 * 40, (r0 + 64) * 40), await ref.data(), 1e-5, 1e-4);
    t.ok(o.ok, `output rows ${r0}..${r0 + 63} vs cpu composite: ${o.message}`);
  }
  const ref = await run(gpu!, c, data, (q, k, v) => L.attentionComposite(q, k, v));
  ['dq', 'dk', 'dv'].forEach((name, i) => {
    const g = close(fused.grads[i], ref.grads[i], 1e-5, 1e-4);
    t.ok(g.ok, `${name} vs webgpu composite: ${g.message}`);
  });
});

t.test('webgpu: the kernels without subgroup operations (LATENTDEM_ATTN_TILE=4,2,0) equal the composite', { skip: noGpu }, async (t) => {
  const c: Case = { name: 'no subgroups', q: [2, 9, 6], k: [2, 11, 6], v: [2, 11, 5] };
  const data = [c.q, c.k, c.v].map((s, i) => hostRandom(size(s), 61 + i, -2, 2));
  process.env.LATENTDEM_ATTN_TILE = '4,2,0';
  let fused;
  try { fused = await run(gpu!, c, data, (q, k, v) => L.scaledDotProductAttention(q, k, v)); } finally { delete process.env.LATENTDEM_ATTN_TILE; }
  const ref = await run(gpu!, c, data, (q, k, v) => L.attentionComposite(q, k, v));
  const o = close(fused.out, ref.out, 1e-5, 1e-4);
  t.ok(o.ok, `output: ${o.message}`);
  ['dq', 'dk', 'dv'].forEach((name, i) => {
    const g = close(fused.grads[i], ref.grads[i], 1e-5, 1e-4);
    t.ok(g.ok, `${name}: ${g.message}`);
  });
});

t.test('webgpu: the op trace names the flash-attention kernels', { skip: noGpu }, async (t) => {
  const x = on(gpu!, hostRandom(2 * 9 * 8, 7), [2, 9, 8], true);
  const { events } = L.trace(() => { L.scaledDotProductAttention(x, x, x).sum().backward(); });
  const kernels = events.filter((e) => e.op.startsWith('attention')).map((e) => e.kernel);
  t.ok(kernels.includes('attention.flash_fwd'), `forward kernel in ${JSON.stringify(kernels)}`);
  t.ok(kernels.some((k) => k.startsWith('attention.flash_bwd')), `backward kernel in ${JSON.stringify(kernels)}`);
  x.grad!.dispose(); x.dispose();
});

t.test('webgpu: the fused forward at Lq = Lk = 4096, d = 40 never allocates the 64 MiB score matrix', { skip: noGpu }, async (t) => {
  const { ctx } = await gpuContext();
  const shape = [1, 4096, 40];
  const xs = [1, 2, 3].map((s) => on(gpu!, hostRandom(size(shape), 70 + s), shape));
  const peakOf = async (f: () => L.Tensor): Promise<number> => {
    await gpu!.sync();
    ctx!.trimPool();
    L.resetPeakMemory();
    const start = L.memory().gpu!.peakBufferBytes;
    const out = L.noGrad(f);
    await out.data();
    const grown = L.memory().gpu!.peakBufferBytes - start;
    out.dispose();
    return grown;
  };
  const scores = 4096 * 4096 * 4;
  const fused = await peakOf(() => L.scaledDotProductAttention(xs[0], xs[1], xs[2]));
  t.ok(fused < scores / 8, `fused forward grew device memory by ${(fused / 2 ** 20).toFixed(1)} MiB (< ${scores / 8 / 2 ** 20} MiB)`);
  const budget = L.attentionTuning.maxScoreBytes;
  L.attentionTuning.maxScoreBytes = 2 * scores;
  try {
    const composite = await peakOf(() => L.attentionComposite(xs[0], xs[1], xs[2]));
    t.ok(composite >= scores, `the one-matrix composite does grow by >= 64 MiB (${(composite / 2 ** 20).toFixed(1)} MiB): the check can fail`);
  } finally {
    L.attentionTuning.maxScoreBytes = budget;
  }
  for (const x of xs) x.dispose();
});
