/** Values computed independently of the code under test: by hand, or by naive loops written here. */
import t from 'tap';
import * as L from '../src/index.js';
import { close, hostRandom, on, testBackends } from './helpers.js';

const backends = await testBackends();

for (const b of backends) {
  t.test(`${b.name}: small results known by hand`, async (t) => {
    const m = await L.tensor([[1, 2], [3, 4]], { backend: b }).matmul(L.tensor([[5, 6], [7, 8]], { backend: b })).data();
    t.same([...m], [19, 22, 43, 50], 'matmul 2x2');
    const sm = await L.softmax(L.tensor([1, 2, 3], { backend: b })).data();
    t.ok(close(sm, [0.09003057, 0.24472847, 0.66524096], 1e-6).ok, `softmax [1,2,3] = ${[...sm]}`);
    t.ok(Math.abs((await L.tensor([1, 2, 3], { backend: b }).logsumexp().item()) - 3.40760596) < 1e-5, 'logsumexp [1,2,3]');
    t.ok(Math.abs((await L.tensor([1, 2, 3, 4], { backend: b }).var().item()) - 5 / 3) < 1e-6, 'unbiased var [1,2,3,4] = 5/3');
    t.same([...await L.tensor([[[1, 2, 3, 4]]], { backend: b }).pad([2, 1], 'reflect').data()], [3, 2, 1, 2, 3, 4, 3], 'reflect pad');
    t.same([...await L.tensor([[[1, 2, 3, 4]]], { backend: b }).pad([2, 1], 'circular').data()], [3, 4, 1, 2, 3, 4, 1], 'circular pad');
    // PyTorch: F.interpolate([[1,2],[3,4]], size=4, mode='bilinear', align_corners=False)
    const up = await L.upsample(L.tensor([[[[1, 2], [3, 4]]]], { backend: b }), { size: [4, 4], mode: 'bilinear' }).data();
    t.ok(close(up, [1, 1.25, 1.75, 2, 1.5, 1.75, 2.25, 2.5, 2.5, 2.75, 3.25, 3.5, 3, 3.25, 3.75, 4], 1e-6).ok, 'bilinear 2x2 -> 4x4 as PyTorch');
    t.same([...await L.argmax(L.tensor([[1, 5, 5], [7, 0, 7]], { backend: b }), 1).data()], [1, 0], 'argmax takes the first maximum');
    t.same([...await L.arange(0, 5, 2, { backend: b }).data()], [0, 2, 4], 'arange');
    t.same([...await L.linspace(0, 1, 5, { backend: b }).data()], [0, 0.25, 0.5, 0.75, 1], 'linspace');
    t.same([...await L.eye(2, 3, { backend: b }).data()], [1, 0, 0, 0, 1, 0], 'eye');
    // x @ [1,1] over a 0/1 mask with groups: a 2x2 max pool by hand.
    const mp = await L.maxPool2d(L.tensor([[[[1, 2, 0, 1], [3, 4, 5, 0], [0, 1, 2, 2], [9, 0, 3, 1]]]], { backend: b }), { kernel: 2 }).data();
    t.same([...mp], [4, 5, 9, 3], 'maxPool2d 2x2 by hand');
  });

  t.test(`${b.name}: layerNorm, groupNorm, attention and conv2d equal naive loops`, async (t) => {
    const x = hostRandom(2 * 6 * 4, 3);
    // groupNorm with 3 groups over [2,6,2,2], no affine
    const gn = await L.groupNorm(on(b, x, [2, 6, 2, 2]), 3).data();
    const expect = new Float32Array(x.length);
    for (let n = 0; n < 2; n++) for (let g = 0; g < 3; g++) {
      const base = n * 24 + g * 8; let m = 0; let v = 0;
      for (let i = 0; i < 8; i++) m += x[base + i];
      m /= 8;
      for (let i = 0; i < 8; i++) v += (x[base + i] - m) ** 2;
      v /= 8;
      for (let i = 0; i < 8; i++) expect[base + i] = (x[base + i] - m) / Math.sqrt(v + 1e-5);
    }
    t.ok(close(gn, expect, 1e-5).ok, 'groupNorm');
    const ln = await L.layerNorm(on(b, x, [8, 6]), [6]).data();
    for (let r = 0; r < 8; r++) {
      let m = 0; let v = 0;
      for (let i = 0; i < 6; i++) m += x[r * 6 + i];
      m /= 6;
      for (let i = 0; i < 6; i++) v += (x[r * 6 + i] - m) ** 2;
      v /= 6;
      for (let i = 0; i < 6; i++) expect[r * 6 + i] = (x[r * 6 + i] - m) / Math.sqrt(v + 1e-5);
    }
    t.ok(close(ln, expect.subarray(0, 48), 1e-5).ok, 'layerNorm');
    // attention: q [3,4], k [5,4], v [5,2]
    const q = hostRandom(12, 4); const k = hostRandom(20, 5); const v = hostRandom(10, 6);
    const att = await L.scaledDotProductAttention(on(b, q, [3, 4]), on(b, k, [5, 4]), on(b, v, [5, 2])).data();
    const want: number[] = [];
    for (let i = 0; i < 3; i++) {
      const s = Array.from({ length: 5 }, (_, j) => { let d = 0; for (let c = 0; c < 4; c++) d += q[i * 4 + c] * k[j * 4 + c]; return d / 2; });
      const mx = Math.max(...s); const e = s.map((z) => Math.exp(z - mx)); const z = e.reduce((a, c) => a + c, 0);
      for (let c = 0; c < 2; c++) want.push(e.reduce((a, w, j) => a + (w / z) * v[j * 2 + c], 0));
    }
    t.ok(close(att, want, 1e-5).ok, 'attention');
    // conv2d stride 2 padding 1 dilation 1 groups 1: x [1,2,5,5], w [3,2,3,3]
    const xc = hostRandom(50, 8); const wc = hostRandom(54, 9);
    const y = await L.conv2d(on(b, xc, [1, 2, 5, 5]), on(b, wc, [3, 2, 3, 3]), { stride: 2, padding: 1 }).data();
    const yw: number[] = [];
    for (let o = 0; o < 3; o++) for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) {
      let s = 0;
      for (let c = 0; c < 2; c++) for (let u = 0; u < 3; u++) for (let w = 0; w < 3; w++) {
        const yy = i * 2 - 1 + u; const xx = j * 2 - 1 + w;
        if (yy >= 0 && yy < 5 && xx >= 0 && xx < 5) s += xc[c * 25 + yy * 5 + xx] * wc[o * 18 + c * 9 + u * 3 + w];
      }
      yw.push(s);
    }
    t.ok(close(y, yw, 1e-5).ok, 'conv2d');
  });

  t.test(`${b.name}: fftConv2d equals direct convolution (circular and zero-padded same)`, async (t) => {
    const H = 8; const W = 16; const kh = 4; const kw = 3;
    const x = hostRandom(H * W, 11); const k = hostRandom(kh * kw, 12, 0, 1);
    const ch = Math.floor(kh / 2); const cw = Math.floor(kw / 2);
    const circ = new Float32Array(H * W); const same = new Float32Array(H * W);
    for (let i = 0; i < H; i++) for (let j = 0; j < W; j++) {
      let sc = 0; let ss = 0;
      for (let u = 0; u < kh; u++) for (let v = 0; v < kw; v++) {
        const yi = i - u + ch; const xj = j - v + cw;
        sc += x[((yi % H) + H) % H * W + ((xj % W) + W) % W] * k[u * kw + v];
        if (yi >= 0 && yi < H && xj >= 0 && xj < W) ss += x[yi * W + xj] * k[u * kw + v];
      }
      circ[i * W + j] = sc; same[i * W + j] = ss;
    }
    const xt = on(b, x, [H, W]); const kt = on(b, k, [kh, kw]);
    t.ok(close(await L.fftConv2d(xt, kt).data(), circ, 1e-5).ok, 'circular');
    t.ok(close(await L.fftConv2d(xt, kt, { mode: 'same' }).data(), same, 1e-5).ok, 'same');
  });
}

for (const b of backends) {
  t.test(`${b.name}: int32 tensors for indices: arithmetic, comparisons, reductions, casts`, async (t) => {
    const a = L.tensor(Int32Array.of(7, -7, 3, 0), { backend: b, shape: [2, 2] });
    const c = L.tensor(Int32Array.of(2, 2, -2, 5), { backend: b, shape: [2, 2] });
    t.equal(a.dtype, 'int32');
    t.same([...await a.add(c).data()], [9, -5, 1, 5], 'add');
    t.same([...await a.mul(c).data()], [14, -14, -6, 0], 'mul');
    t.same([...await a.div(c).data()], [3, -3, -1, 0], 'div truncates toward zero');
    t.same([...await a.neg().abs().data()], [7, 7, 3, 0], 'neg, abs');
    t.same([...await a.maximum(c).data()], [7, 2, 3, 5], 'maximum');
    const lt = a.lt(c);
    t.equal(lt.dtype, 'float32', 'comparisons give float32 masks');
    t.same([...await lt.data()], [0, 1, 0, 1]);
    t.same([...await a.sum(1).data()], [0, 3], 'sum');
    t.same([...await a.max(0).data()], [7, 0], 'max');
    t.same([...await L.where(lt, a, c).data()], [2, -7, -2, 0], 'where');
    t.same([...await L.tensor([1.7, -1.7, 2.5], { backend: b }).cast('int32').data()], [1, -1, 2], 'float -> int truncates');
    t.same([...await a.cast('float32').data()], [7, -7, 3, 0], 'int -> float');
    t.same([...await a.transpose().contiguous().data()], [7, 3, -7, 0], 'views');
    t.same([...await L.arange(4, { backend: b }).data()], [0, 1, 2, 3]);
    t.equal(L.arange(4, { backend: b }).dtype, 'int32', 'integer arange is int32');
  });
}

t.test('maxPool2d: tied maxima share the gradient equally', async (t) => {
  for (const b of backends) {
    const x = L.tensor([[[[2, 2], [2, 2]]]], { backend: b, requiresGrad: true });
    L.maxPool2d(x, { kernel: 2 }).sum().backward();
    t.same([...await x.grad!.data()], [0.25, 0.25, 0.25, 0.25], `${b.name}`);
  }
});
