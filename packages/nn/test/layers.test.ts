/**
 * Layers against PyTorch reference values (packages/nn/test/fixtures/nn/layers.json, written by
 * tools/fixtures/make-nn-reference.py with torch 1.13; weights are in the file), on every backend.
 */
import t from 'tap';
import type { Test } from 'tap';
import { readFileSync } from 'node:fs';
import * as L from '@latentdem/tensor';
import type { Backend, Tensor } from '@latentdem/tensor';
import type { Module } from '../src/module.js';
import { BatchNorm2d, Conv2d, ConvTranspose2d, Dropout, Embedding, GroupNorm, LayerNorm, Linear, Sequential, ReLU } from '../src/layers/index.js';
import { close, testBackends } from '../../tensor/test/helpers.js';

interface Arr { shape: number[]; data: number[] }
/* eslint-disable @typescript-eslint/no-explicit-any */
const F = JSON.parse(readFileSync(new URL('./fixtures/nn/layers.json', import.meta.url), 'utf8')) as Record<string, any>;
const backends = await testBackends();
await L.setBackend('cpu');
const on = (b: Backend, a: Arr): Tensor => L.tensor(Float32Array.from(a.data), { shape: a.shape, backend: b });

async function expectClose(t: Test, got: Tensor, want: Arr, what: string, atol = 1e-5, rtol = 1e-4): Promise<void> {
  t.same(got.shape, want.shape, `${what}: shape`);
  const c = close(await got.data(), want.data, atol, rtol);
  t.ok(c.ok, `${what}: ${c.message}`);
}

/** Elementwise equality (tap's deep comparison is slow on 20000-element arrays). */
const sameValues = (a: ArrayLike<number>, b: ArrayLike<number>): boolean => a.length === b.length && Array.prototype.every.call(a, (v: number, i: number) => v === b[i]);

function load(m: Module, b: Backend, entries: Record<string, Arr | undefined>): void {
  const sd = new Map<string, Tensor>();
  for (const [k, v] of Object.entries(entries)) if (v) sd.set(k, on(b, v));
  m.loadStateDict(sd, { strict: false });
  for (const v of sd.values()) v.dispose();
}

for (const b of backends) {
  t.test(`${b.name}: Linear(5,3), Conv2d(4,6,3,s2,p1,groups2), ConvTranspose2d(4,3,3,s2,p1,op1) equal PyTorch`, async (t) => {
    const f = F.linear;
    const lin = new Linear(f.in, f.out, { backend: b });
    load(lin, b, { weight: f.weight, bias: f.bias });
    await expectClose(t, lin.forward(on(b, f.x)), f.y, 'Linear');
    const c = F.conv2d;
    const conv = new Conv2d(c.in, c.out, c.kernel, { stride: c.stride, padding: c.padding, groups: c.groups, backend: b });
    load(conv, b, { weight: c.weight, bias: c.bias });
    await expectClose(t, conv.forward(on(b, c.x)), c.y, 'Conv2d');
    const d = F.convTranspose2d;
    const ct = new ConvTranspose2d(d.in, d.out, d.kernel, { stride: d.stride, padding: d.padding, outputPadding: d.outputPadding, backend: b });
    load(ct, b, { weight: d.weight, bias: d.bias });
    await expectClose(t, ct.forward(on(b, d.x)), d.y, 'ConvTranspose2d');
    lin.dispose(); conv.dispose(); ct.dispose();
  });

  t.test(`${b.name}: GroupNorm(3,6) and LayerNorm([4,5]) with affine weights equal PyTorch`, async (t) => {
    const g = F.groupNorm;
    const gn = new GroupNorm(g.groups, g.channels, { eps: g.eps, backend: b });
    load(gn, b, { weight: g.weight, bias: g.bias });
    await expectClose(t, gn.forward(on(b, g.x)), g.y, 'GroupNorm', 1e-4);
    const l = F.layerNorm;
    const ln = new LayerNorm(l.shape, { eps: l.eps, backend: b });
    load(ln, b, { weight: l.weight, bias: l.bias });
    await expectClose(t, ln.forward(on(b, l.x)), l.y, 'LayerNorm', 1e-4);
    gn.dispose(); ln.dispose();
  });

  for (const f of F.batchNorm2d as any[]) {
    t.test(`${b.name}: BatchNorm2d(eps ${f.eps}, momentum ${f.momentum}) train (2 batches) then eval equal PyTorch`, async (t) => {
      const bn = new BatchNorm2d(3, { eps: f.eps, momentum: f.momentum, backend: b });
      load(bn, b, { weight: f.weight, bias: f.bias });
      for (let i = 0; i < 2; i++) await expectClose(t, bn.forward(on(b, f.xTrain[i])), f.yTrain[i], `train batch ${i}`, 1e-4);
      await expectClose(t, bn.runningMean!, f.runningMean, 'running_mean');
      await expectClose(t, bn.runningVar!, f.runningVar, 'running_var');
      t.equal(await bn.getBuffer('num_batches_tracked')!.item(), f.numBatchesTracked, 'num_batches_tracked');
      bn.eval();
      await expectClose(t, bn.forward(on(b, f.xEval)), f.yEval, 'eval uses running statistics', 1e-4);
      t.equal(await bn.getBuffer('num_batches_tracked')!.item(), f.numBatchesTracked, 'eval does not count');
      bn.dispose();
    });
  }

  t.test(`${b.name}: BatchNorm2d with momentum null keeps the cumulative average of batch statistics`, async (t) => {
    const bn = new BatchNorm2d(2, { momentum: null, backend: b });
    const xs = [L.randn([4, 2, 3, 3], { seed: 31, backend: b }), L.randn([4, 2, 3, 3], { seed: 32, backend: b }).mul(2).add(1)];
    for (const x of xs) bn.forward(x);
    // running = 1/1 * mean1 after batch 1, then (1 - 1/2) * running + 1/2 * mean2: the average of the two.
    const means = await Promise.all(xs.map((x) => x.mean([0, 2, 3]).data()));
    const vars = await Promise.all(xs.map((x) => x.var([0, 2, 3]).data()));
    const c1 = close(await bn.runningMean!.data(), [0, 1].map((c) => (means[0][c] + means[1][c]) / 2), 1e-5);
    const c2 = close(await bn.runningVar!.data(), [0, 1].map((c) => (vars[0][c] + vars[1][c]) / 2), 1e-5);
    t.ok(c1.ok, `running_mean ${c1.message}`); t.ok(c2.ok, `running_var (unbiased) ${c2.message}`);
    bn.dispose();
  });

  t.test(`${b.name}: BatchNorm2d gradient through the batch statistics matches finite differences`, async (t) => {
    const bn = new BatchNorm2d(2, { backend: b });
    const x0 = L.randn([3, 2, 2, 2], { seed: 4, backend: b });
    const r = L.randn([3, 2, 2, 2], { seed: 5, backend: b });
    const x = x0.clone().requireGrad();
    bn.forward(x).mul(r).sum().backward();
    const g = await x.grad!.data();
    const base = await x0.data();
    const lossAt = async (d: Float32Array): Promise<number> => L.noGrad(() => bn.forward(L.tensor(d, { shape: x0.shape, backend: b })).mul(r).sum()).item();
    let worst = 0;
    for (const i of [0, 5, 11, 23]) {
      const p = base.slice() as Float32Array; p[i] += 1e-2;
      const m = base.slice() as Float32Array; m[i] -= 1e-2;
      const num = ((await lossAt(p)) - (await lossAt(m))) / 2e-2;
      worst = Math.max(worst, Math.abs(num - g[i]));
    }
    t.ok(worst < 2e-2, `worst |autodiff - numeric| ${worst}`);
    bn.dispose();
  });

  t.test(`${b.name}: Embedding lookup and weight gradient (one-hot matmul) equal PyTorch`, async (t) => {
    const e = F.embedding;
    const emb = new Embedding(e.num, e.dim, { backend: b });
    load(emb, b, { weight: e.weight });
    const ids = L.tensor(Int32Array.from(e.ids), { shape: e.idsShape, backend: b });
    const y = emb.forward(ids);
    await expectClose(t, y, e.y, 'lookup', 1e-6);
    y.mul(on(b, e.r)).sum().backward();
    await expectClose(t, emb.weight.grad!, e.weightGrad, 'weight gradient', 1e-5);
    t.throws(() => emb.forward(L.zeros([2], { backend: b })), L.DTypeError, 'float ids are refused');
    // padding_idx: its row reads as usual but gets no gradient (PyTorch semantics)
    const pad = new Embedding(e.num, e.dim, { backend: b, paddingIdx: 3 });
    load(pad, b, { weight: e.weight });
    const yp = pad.forward(ids);
    await expectClose(t, yp, e.y, 'lookup with padding_idx', 1e-6);
    yp.mul(on(b, e.r)).sum().backward();
    const gp = await pad.weight.grad!.data();
    const want = Float32Array.from((e.weightGrad as Arr).data);
    want.fill(0, 3 * e.dim, 4 * e.dim);
    const c = close(gp, want, 1e-5, 1e-4);
    t.ok(c.ok, `padding row gradient zero, others as PyTorch: ${c.message}`);
    emb.dispose(); pad.dispose();
  });

  t.test(`${b.name}: Dropout keeps 1-p of the elements scaled by 1/(1-p); eval is the identity`, async (t) => {
    const p = 0.3;
    const drop = new Dropout(p, { generator: new L.Generator(21) });
    const x = L.ones([200, 100], { backend: b });
    const y = await drop.forward(x).data();
    let zeros = 0; let bad = 0; let sum = 0;
    for (const v of y) { if (v === 0) zeros++; else if (Math.abs(v - 1 / (1 - p)) > 1e-6) bad++; sum += v; }
    const frac = zeros / y.length;
    // binomial sd of the fraction: sqrt(0.3*0.7/20000) = 0.0032; allow 5 sd
    t.ok(Math.abs(frac - p) < 0.016, `dropped fraction ${frac}`);
    t.equal(bad, 0, 'kept values are 1/(1-p)');
    t.ok(Math.abs(sum / y.length - 1) < 0.03, `mean preserved: ${sum / y.length}`);
    const again = await new Dropout(p, { generator: new L.Generator(21) }).forward(x).data();
    t.ok(sameValues(again, y), 'same generator seed, same mask');
    const next = await drop.forward(x).data();
    t.notOk(sameValues(next, y), 'the generator advances: a new mask per call');
    drop.eval();
    const id = drop.forward(x);
    t.equal(id, x, 'eval returns the input');
    t.equal(new Dropout(0).forward(x), x, 'p = 0 is the identity');
    x.dispose();
  });

  t.test(`${b.name}: a forward under noGrad outside tidy leaves only its output alive`, async (t) => {
    const g = new L.Generator(2);
    const bnTrain = new BatchNorm2d(3, { backend: b });
    const bnEval = new BatchNorm2d(3, { backend: b }).eval();
    const cases: [string, { forward(x: Tensor): Tensor; dispose(): void }, Tensor][] = [
      ['Linear', new Linear(4, 3, { generator: g, backend: b }), L.randn([2, 4], { seed: 1, backend: b })],
      ['Conv2d', new Conv2d(3, 2, 3, { generator: g, backend: b, padding: 1 }), L.randn([1, 3, 4, 4], { seed: 1, backend: b })],
      ['ConvTranspose2d', new ConvTranspose2d(3, 2, 3, { generator: g, backend: b, stride: 2 }), L.randn([1, 3, 4, 4], { seed: 1, backend: b })],
      ['GroupNorm', new GroupNorm(1, 3, { backend: b }), L.randn([1, 3, 4, 4], { seed: 1, backend: b })],
      ['LayerNorm', new LayerNorm(4, { backend: b }), L.randn([2, 4], { seed: 1, backend: b })],
      ['BatchNorm2d train', bnTrain, L.randn([2, 3, 2, 2], { seed: 1, backend: b })],
      ['BatchNorm2d eval', bnEval, L.randn([2, 3, 2, 2], { seed: 1, backend: b })],
      ['Embedding', new Embedding(5, 3, { generator: g, backend: b, paddingIdx: 0 }), L.tensor(Int32Array.of(1, 0, 4), { backend: b })],
      ['Dropout', new Dropout(0.5, { generator: g }), L.randn([2, 4], { seed: 1, backend: b })],
    ];
    for (const [name, m, x] of cases) {
      const before = L.memory().tensors[b.name];
      const y = L.noGrad(() => m.forward(x));
      t.equal(L.memory().tensors[b.name] - before, 1, `${name}: one new tensor`);
      y.dispose(); x.dispose(); m.dispose();
    }
  });

  t.test(`${b.name}: Sequential chains its children in order`, async (t) => {
    const g = new L.Generator(1);
    const seq = new Sequential(new Linear(3, 4, { generator: g, backend: b }), new ReLU(), new Linear(4, 2, { generator: g, backend: b }));
    const x = L.randn([5, 3], { seed: 2, backend: b });
    const [l0, l2] = [seq.at(0) as Linear, seq.at(2) as Linear];
    const want = l2.forward(l0.forward(x).relu());
    const c = close(await seq.forward(x).data(), await want.data(), 0, 0);
    t.ok(c.ok, c.message);
    t.equal(seq.length, 3);
    seq.dispose();
  });
}
