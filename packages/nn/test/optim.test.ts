/**
 * Optimizers, schedules and clipping against PyTorch (packages/nn/test/fixtures/nn/optim.json, written by
 * tools/fixtures/make-nn-reference.py with torch 1.13), bit-identical resume, EMA by hand, flat memory.
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import * as L from '@latentdem/tensor';
import type { Backend, Tensor } from '@latentdem/tensor';
import { Linear, Sequential, Tanh } from '../src/layers/index.js';
import { Adam, AdamW, CosineAnnealingLR, EMA, SGD, StepLR, clipGradNorm } from '../src/optim/index.js';
import type { Optimizer } from '../src/optim/index.js';
import { close, testBackends } from '../../tensor/test/helpers.js';

interface Arr { shape: number[]; data: number[] }
/* eslint-disable @typescript-eslint/no-explicit-any */
const F = JSON.parse(readFileSync(new URL('./fixtures/nn/optim.json', import.meta.url), 'utf8')) as Record<string, any>;
const backends = await testBackends();
await L.setBackend('cpu');
const on = (b: Backend, a: Arr): Tensor => L.tensor(Float32Array.from(a.data), { shape: a.shape, backend: b });

function makeNet(b: Backend): Sequential {
  const net = new Sequential(new Linear(3, 4, { backend: b }), new Tanh(), new Linear(4, 2, { backend: b }));
  const sd = new Map(Object.entries(F.net.init as Record<string, Arr>).map(([k, v]) => [k, on(b, v)]));
  net.loadStateDict(sd);
  for (const v of sd.values()) v.dispose();
  return net;
}

const OPTS: Record<string, (p: Tensor[]) => Optimizer> = {
  sgd: (p) => new SGD(p, { lr: 0.1 }),
  sgdMomentum: (p) => new SGD(p, { lr: 0.1, momentum: 0.9, dampening: 0.1, weightDecay: 0.01 }),
  sgdNesterov: (p) => new SGD(p, { lr: 0.05, momentum: 0.8, nesterov: true }),
  adam: (p) => new Adam(p, { lr: 0.02, betas: [0.9, 0.99], eps: 1e-8, weightDecay: 0.01 }),
  adamW: (p) => new AdamW(p, { lr: 0.02, betas: [0.8, 0.95], eps: 1e-6, weightDecay: 0.1 }),
};

async function trainSteps(net: Sequential, opt: Optimizer, x: Tensor, y: Tensor, n: number): Promise<number[]> {
  const losses: number[] = [];
  for (let i = 0; i < n; i++) {
    opt.zeroGrad();
    const loss = L.tidy(() => { const l = net.forward(x).sub(y).square().mean(); l.backward(); return l; });
    losses.push(await loss.item());
    loss.dispose();
    opt.step();
  }
  return losses;
}

for (const b of backends) {
  for (const [name, make] of Object.entries(OPTS)) {
    t.test(`${b.name}: ${name} on a Linear-Tanh-Linear net, 6 steps, follows PyTorch's losses and weights`, async (t) => {
      const ref = F.runs[name];
      const net = makeNet(b);
      const opt = make(net.parameters());
      const x = on(b, F.net.x); const y = on(b, F.net.y);
      const losses = await trainSteps(net, opt, x, y, 6);
      const cl = close(losses, ref.losses, 1e-6, 1e-5);
      t.ok(cl.ok, `losses ${cl.message}`);
      t.ok(losses[5] < losses[0], 'the loss goes down');
      for (const [k, v] of net.stateDict()) {
        const c = close(await v.data(), (ref.final[k] as Arr).data, 1e-5, 1e-4);
        t.ok(c.ok, `${k}: ${c.message}`);
      }
      opt.dispose(); net.dispose(); x.dispose(); y.dispose();
    });
  }
}

t.test('optimizer state dict: 3 steps, save, load into a fresh optimizer, 3 more = 6 steps bit-identically', async (t) => {
  const b = backends[0];
  for (const name of ['sgdMomentum', 'adam', 'adamW']) {
    const x = on(b, F.net.x); const y = on(b, F.net.y);
    const full = makeNet(b); const optFull = OPTS[name](full.parameters());
    await trainSteps(full, optFull, x, y, 6);
    const first = makeNet(b); const opt1 = OPTS[name](first.parameters());
    await trainSteps(first, opt1, x, y, 3);
    const sd = opt1.stateDict();
    t.same(sd.steps, [3, 3, 3, 3]);
    t.ok([...sd.state.keys()].every((k) => /^\d\.(momentum_buffer|exp_avg|exp_avg_sq)$/.test(k)), `${name}: PyTorch state names`);
    const second = makeNet(b);
    second.loadStateDict(first.stateDict());
    const opt2 = OPTS[name](second.parameters());
    opt2.lr = 123;
    opt2.loadStateDict(sd);
    t.equal(opt2.lr, opt1.lr, 'lr restored');
    opt1.dispose(); first.dispose();
    await trainSteps(second, opt2, x, y, 3);
    for (const [k, v] of second.stateDict()) t.same(await v.data(), await full.stateDict().get(k)!.data(), `${name}: ${k} bit-identical`);
    const bad = { ...opt2.stateDict(), state: new Map([['0.exp_avg', L.zeros([9])], ['7.exp_avg', L.zeros([1])]]) };
    t.throws(() => opt2.loadStateDict(bad), /7\.exp_avg[\s\S]*0\.exp_avg: \[9\]/, 'wrong keys and shapes are named');
    opt2.dispose(); second.dispose(); optFull.dispose(); full.dispose(); x.dispose(); y.dispose();
  }
});

t.test('a training step leaves memory flat; zeroGrad disposes the gradients', async (t) => {
  const b = backends[backends.length - 1];
  const net = makeNet(b); const opt = new Adam(net.parameters(), { lr: 0.01 });
  const x = on(b, F.net.x); const y = on(b, F.net.y);
  await trainSteps(net, opt, x, y, 2);
  const before = L.memory().tensors[b.name];
  await trainSteps(net, opt, x, y, 3);
  t.equal(L.memory().tensors[b.name], before, `${b.name}: live tensors after 3 more steps`);
  const g = net.parameters()[0].grad!;
  opt.zeroGrad();
  t.ok(g.isDisposed && net.parameters().every((p) => p.grad === null));
  opt.dispose(); net.dispose(); x.dispose(); y.dispose();
});

t.test('a parameter without a gradient is not stepped (its step count stays)', async (t) => {
  const a = L.ones([2]); const c = L.ones([2]);
  const opt = new Adam([a, c], { lr: 0.1 });
  a.grad = L.ones([2]);
  opt.step();
  t.same(opt.stateDict().steps, [1, 0]);
  t.same([...(await c.data())], [1, 1]);
  t.ok((await a.data())[0] < 1);
  opt.dispose(); a.dispose(); c.dispose();
});

t.test('StepLR and CosineAnnealingLR set the lrs PyTorch sets', async (t) => {
  const s = F.schedules;
  const check = (sched: StepLR | CosineAnnealingLR, opt: { lr: number }, want: number[], what: string): void => {
    const got = [opt.lr];
    for (let i = 1; i < want.length; i++) got.push(sched.step());
    const c = close(got, want, 1e-12, 1e-9);
    t.ok(c.ok, `${what}: ${c.message} (${got.map((v) => v.toPrecision(6)).join(', ')})`);
  };
  const o1 = { lr: s.baseLr };
  check(new StepLR(o1, { stepSize: s.step.stepSize, gamma: s.step.gamma }), o1, s.step.lrs, 'StepLR');
  const o2 = new SGD([L.zeros([1])], { lr: s.baseLr });
  check(new CosineAnnealingLR(o2, { tMax: s.cosine.tMax, etaMin: s.cosine.etaMin }), o2, s.cosine.lrs, 'CosineAnnealingLR');
  const sch = new CosineAnnealingLR({ lr: 1 }, { tMax: 10 });
  t.equal(sch.step(5), 0.5 + 0.5 * Math.cos(Math.PI / 2), 'jump to an epoch');
});

for (const b of backends) {
  t.test(`${b.name}: clipGradNorm returns PyTorch's total norm and scales the gradients as PyTorch`, async (t) => {
    for (const c of F.clip as any[]) {
      const ps = (c.grads as Arr[]).map((g) => { const p = L.zeros(g.shape, { backend: b }); p.grad = on(b, g); return p; });
      const total = clipGradNorm(ps, c.maxNorm, c.normType === 'inf' ? Infinity : c.normType)!;
      const what = `maxNorm ${c.maxNorm}, norm ${c.normType}`;
      t.ok(Math.abs((await total.item()) - c.total) < 1e-5 * Math.max(1, c.total), `${what}: total ${await total.item()} vs ${c.total}`);
      for (let i = 0; i < ps.length; i++) {
        const r = close(await ps[i].grad!.data(), (c.clipped[i] as Arr).data, 1e-6, 1e-5);
        t.ok(r.ok, `${what}: gradient ${i} ${r.message}`);
      }
      total.dispose(); for (const p of ps) p.dispose();
    }
    t.equal(clipGradNorm([L.zeros([1])], 1), null, 'no gradients: null');
  });

  t.test(`${b.name}: EMA update, copyTo and swap by hand`, async (t) => {
    const p = L.tensor([1, 2, 3], { backend: b });
    const q = L.tensor([[4]], { backend: b });
    const ema = new EMA([p, q], 0.9);
    p.assign(L.tensor([11, 12, 13], { backend: b })); q.assign(L.tensor([[0]], { backend: b }));
    ema.update();   // 0.9*[1,2,3] + 0.1*[11,12,13] = [2,3,4]; 0.9*4 = 3.6
    const c1 = close(await ema.shadow[0].data(), [2, 3, 4], 1e-6); t.ok(c1.ok, `shadow ${c1.message}`);
    const c2 = close(await ema.shadow[1].data(), [3.6], 1e-6); t.ok(c2.ok, `shadow ${c2.message}`);
    ema.update();   // 0.9*[2,3,4] + 0.1*[11,12,13] = [2.9,3.9,4.9]
    const c3 = close(await ema.shadow[0].data(), [2.9, 3.9, 4.9], 1e-6); t.ok(c3.ok, `second update ${c3.message}`);
    ema.swap();
    t.ok(close(await p.data(), [2.9, 3.9, 4.9], 1e-6).ok, 'swap puts the averages into the parameters');
    t.ok(close(await ema.shadow[0].data(), [11, 12, 13], 0).ok, 'and the parameters into the shadow');
    ema.swap();
    t.ok(close(await p.data(), [11, 12, 13], 0).ok, 'swapping twice restores');
    const out = [L.zeros([3], { backend: b }), L.zeros([1, 1], { backend: b })];
    ema.copyTo(out);
    t.ok(close(await out[0].data(), [2.9, 3.9, 4.9], 1e-6).ok, 'copyTo targets');
    const warm = new EMA([p], 0.999, { useNumUpdates: true });
    t.equal(warm.currentDecay(), 2 / 11, 'LitEma warm-up decay min(decay, (1+n)/(10+n))');
    ema.dispose(); warm.dispose(); p.dispose(); q.dispose(); for (const o of out) o.dispose();
  });
}
