/** Module: PyTorch state-dict names, stateDict/loadStateDict, train/eval, to(), zeroGrad/dispose, default inits. */
import t from 'tap';
import * as L from '@latentdem/tensor';
import type { Tensor } from '@latentdem/tensor';
import { Module } from '../src/module.js';
import { StateDictError } from '../src/errors.js';
import { BatchNorm2d, Conv2d, ConvTranspose2d, Dropout, Embedding, GroupNorm, LayerNorm, Linear, ModuleList, ReLU, Sequential } from '../src/layers/index.js';
import { close, testBackends } from '../../tensor/test/helpers.js';

const backends = await testBackends();
await L.setBackend('cpu');

class Net extends Module {
  readonly body: Sequential;
  readonly head: Linear;
  readonly drop = new Dropout(0.5);
  constructor(seed: number, backend: L.Backend | L.BackendName = 'cpu') {
    super();
    const generator = new L.Generator(seed);
    this.body = this.registerModule('body', new Sequential(new Conv2d(2, 3, 3, { padding: 1, generator, backend }), new BatchNorm2d(3, { backend }), new ReLU()));
    this.head = this.registerModule('head', new Linear(3, 2, { generator, backend }));
    this.registerModule('drop', this.drop);
  }
  forward(x: Tensor): Tensor { return this.head.forward(this.drop.forward(this.body.forward(x).mean([2, 3]))); }
}

const KEYS = ['body.0.weight', 'body.0.bias', 'body.1.weight', 'body.1.bias', 'body.1.running_mean', 'body.1.running_var', 'body.1.num_batches_tracked', 'head.weight', 'head.bias'];

t.test('state-dict keys are PyTorch\'s: Sequential children 0,1,..., BatchNorm buffers, int32 num_batches_tracked', async (t) => {
  const net = new Net(1);
  t.same([...net.stateDict().keys()], KEYS);
  t.same([...net.namedParameters().keys()], ['body.0.weight', 'body.0.bias', 'body.1.weight', 'body.1.bias', 'head.weight', 'head.bias']);
  t.same([...net.namedBuffers().keys()], ['body.1.running_mean', 'body.1.running_var', 'body.1.num_batches_tracked']);
  t.equal(net.stateDict().get('body.1.num_batches_tracked')!.dtype, 'int32');
  t.same(net.stateDict().get('body.1.num_batches_tracked')!.shape, []);
  t.equal(net.parameters().length, 6);
  t.ok(net.parameters().every((p) => p.requiresGrad), 'parameters require grad');
  t.equal(net.numParameters(), 3 * 2 * 9 + 3 + 3 + 3 + 6 + 2);
  t.same([...net.namedModules().keys()], ['', 'body', 'body.0', 'body.1', 'body.2', 'head', 'drop']);
  t.equal(net.getSubmodule('body.1'), net.body.at(1));
  const list = new ModuleList([new Linear(2, 2), new Linear(2, 2)]);
  t.same([...list.stateDict().keys()], ['0.weight', '0.bias', '1.weight', '1.bias']);
  t.same([...new Linear(2, 2, { bias: false }).stateDict().keys()], ['weight'], 'bias=false registers no bias');
  net.dispose(); list.dispose();
});

t.test('a shared parameter is listed once by parameters() but under both keys in stateDict', async (t) => {
  const a = new Linear(2, 2);
  const m = new Module();
  m.registerModule('a', a); m.registerModule('b', a);
  t.equal(m.parameters().length, 2);
  t.same([...m.stateDict().keys()], ['a.weight', 'a.bias', 'b.weight', 'b.bias']);
  a.dispose();
});

t.test('stateDict round trip: values copied, source untouched, outputs equal', async (t) => {
  for (const backend of backends) {
    const a = new Net(1, backend); const b = new Net(2, backend);
    a.eval(); b.eval();
    const x = L.randn([2, 2, 4, 4], { seed: 5, backend });
    const sd = a.stateDict();
    const before = await Promise.all([...sd.values()].map((v) => v.data()));
    t.notSame(await b.forward(x).data(), await a.forward(x).data(), `${backend.name}: different seeds differ`);
    const r = b.loadStateDict(sd);
    t.same(r, { missing: [], unexpected: [] });
    t.same(await b.forward(x).data(), await a.forward(x).data(), `${backend.name}: equal outputs after load`);
    for (const [k, v] of b.stateDict()) t.not(v, sd.get(k), `${k} is b's own tensor`);
    const after = await Promise.all([...sd.values()].map((v) => v.data()));
    t.same(after, before, 'source values unchanged');
    t.ok([...sd.values()].every((v) => !v.isDisposed), 'source tensors alive');
    // a Record works too
    const c = new Net(3, backend);
    c.loadStateDict(Object.fromEntries(a.stateDict()));
    c.eval();
    t.same(await c.forward(x).data(), await a.forward(x).data(), `${backend.name}: Record input`);
    a.dispose(); b.dispose(); c.dispose(); x.dispose();
  }
});

t.test('strict loadStateDict names every missing, unexpected and mis-shaped key, and loads nothing', async (t) => {
  const a = new Net(1); const b = new Net(2);
  const sd = new Map(a.stateDict());
  sd.delete('head.bias');
  sd.delete('body.1.running_var');
  sd.set('head.extra', L.zeros([1]));
  sd.set('body.0.weight', L.zeros([3, 2, 5, 5]));
  sd.set('body.1.num_batches_tracked', L.zeros([]));
  const want = await b.head.weight.data();
  const err = t.throws(() => b.loadStateDict(sd)) as unknown as StateDictError;
  t.ok(err instanceof StateDictError, 'a StateDictError');
  t.same(err.missing, ['body.1.running_var', 'head.bias']);
  t.same(err.unexpected, ['head.extra']);
  t.equal(err.mismatched.length, 2);
  for (const s of ['body.1.running_var', 'head.bias', 'head.extra', 'body.0.weight: checkpoint [3,2,5,5] float32, model [3,2,3,3] float32', 'body.1.num_batches_tracked: checkpoint [] float32, model [] int32']) {
    t.match(err.message, s, `message names ${s}`);
  }
  t.same(await b.head.weight.data(), want, 'nothing loaded');
  t.throws(() => b.loadStateDict(sd, { strict: false }), StateDictError, 'mis-shaped keys throw even when not strict (as PyTorch)');
  sd.set('body.0.weight', a.body.at(0).getParameter('weight')!);
  sd.set('body.1.num_batches_tracked', a.stateDict().get('body.1.num_batches_tracked')!);
  const r = b.loadStateDict(sd, { strict: false });
  t.same(r, { missing: ['body.1.running_var', 'head.bias'], unexpected: ['head.extra'] });
  t.same(await b.head.weight.data(), await a.head.weight.data(), 'the matching keys were loaded');
  a.dispose(); b.dispose();
});

t.test('non-persistent buffers stay out of stateDict but are buffers', async (t) => {
  const m = new Module();
  m.registerBuffer('kept', L.zeros([2]));
  m.registerBuffer('scratch', L.zeros([2]), { persistent: false });
  t.same([...m.stateDict().keys()], ['kept']);
  t.same([...m.namedBuffers().keys()], ['kept', 'scratch']);
  t.throws(() => m.registerBuffer('a.b', null), /invalid name/);
  t.throws(() => m.registerParameter('kept', null), /already registered/, 'a name is one kind only');
  m.dispose();
});

t.test('loadStateDict names a key whose tensor lives on another backend', { skip: backends.length > 1 ? false : 'no webgpu adapter' }, async (t) => {
  const gpuNet = new Linear(2, 2, { backend: backends[1] });
  const err = t.throws(() => gpuNet.loadStateDict(new Linear(2, 2).stateDict())) as unknown as StateDictError;
  t.match(err.message, 'weight: checkpoint on cpu, model on webgpu');
  gpuNet.dispose();
});

t.test('train()/eval() propagate to every descendant', async (t) => {
  const net = new Net(1);
  t.ok(net.modules().every((m) => m.training));
  net.eval();
  t.ok(net.modules().every((m) => !m.training), 'eval');
  net.body.train();
  t.ok(net.body.at(1).training && !net.head.training, 'train on a subtree only');
  net.dispose();
});

t.test('zeroGrad clears gradients; dispose frees every tensor; parameters survive tidy', async (t) => {
  const before = L.memory().tensors.cpu;
  const net = L.tidy(() => new Net(1));
  t.ok(net.parameters().every((p) => !p.isDisposed), 'parameters created inside tidy survive it');
  net.eval();
  L.tidy(() => { net.forward(L.randn([1, 2, 3, 3], { seed: 2 })).sum().backward(); });
  t.ok(net.parameters().every((p) => p.grad), 'gradients');
  net.zeroGrad();
  t.ok(net.parameters().every((p) => p.grad === null), 'cleared');
  net.dispose();
  t.equal(L.memory().tensors.cpu, before, 'no tensor left');
});

const gpu = backends.find((b) => b.name === 'webgpu');
t.test('to(backend) moves parameters and buffers; outputs agree', { skip: gpu ? false : 'no webgpu adapter' }, async (t) => {
  if (!gpu) return;
  const net = new Net(1);
  net.eval();
  const x = L.randn([2, 2, 4, 4], { seed: 9 });
  const want = await net.forward(x).data();
  const head = net.head;
  await net.to(gpu);
  t.ok([...net.stateDict().values()].every((v) => v.backendName === 'webgpu'), 'all on webgpu');
  t.ok(net.parameters().every((p) => p.requiresGrad), 'still require grad');
  t.equal(head.weight.backendName, 'webgpu', 'layer getters see the moved tensor');
  const got = await net.forward(await x.to(gpu)).data();
  const c = close(got, want, 1e-5, 1e-4);
  t.ok(c.ok, c.message);
  net.dispose();
});

t.test('to() updates plain fields of user modules', { skip: gpu ? false : 'no webgpu adapter' }, async (t) => {
  if (!gpu) return;
  class Scale extends Module {
    s = this.registerParameter('s', L.ones([2]));
    forward(x: Tensor): Tensor { return x.mul(this.s); }
  }
  const m = new Scale();
  const old = m.s;
  await m.to(gpu);
  t.not(m.s, old); t.equal(m.s.backendName, 'webgpu'); t.ok(old.isDisposed);
  m.dispose();
});

const stats = async (x: Tensor): Promise<{ min: number; max: number; mean: number; var: number }> => {
  const d = await x.data();
  let mn = Infinity; let mx = -Infinity; let s = 0; let s2 = 0;
  for (const v of d) { mn = Math.min(mn, v); mx = Math.max(mx, v); s += v; s2 += v * v; }
  const mean = s / d.length;
  return { min: mn, max: mx, mean, var: s2 / d.length - mean * mean };
};

t.test('default inits: PyTorch distributions (kaiming_uniform a=sqrt(5), fan-in bounds, N(0,1), ones/zeros)', async (t) => {
  const generator = new L.Generator(11);
  const checkUniform = async (x: Tensor, bound: number, what: string): Promise<void> => {
    const s = await stats(x);
    t.ok(s.min >= -bound && s.max <= bound, `${what}: inside +-${bound.toFixed(4)} (${s.min.toFixed(4)}, ${s.max.toFixed(4)})`);
    t.ok(s.max > 0.95 * bound && s.min < -0.95 * bound, `${what}: fills the interval`);
    t.ok(Math.abs(s.var / (bound * bound / 3) - 1) < 0.06, `${what}: variance ${s.var} vs bound^2/3 ${bound * bound / 3}`);
    t.ok(Math.abs(s.mean) < 0.05 * bound, `${what}: mean ${s.mean}`);
  };
  const lin = new Linear(256, 128, { generator });
  await checkUniform(lin.weight, 1 / 16, 'Linear(256,128).weight');
  const linB = new Linear(64, 4096, { generator });
  await checkUniform(linB.bias!, 1 / 8, 'Linear(64,4096).bias');
  const conv = new Conv2d(32, 48, 3, { groups: 2, generator });
  t.same(conv.weight.shape, [48, 16, 3, 3]);
  await checkUniform(conv.weight, 1 / 12, 'Conv2d(32,48,3,groups=2).weight (fan_in 16*9)');
  const ct = new ConvTranspose2d(16, 64, 4, { generator });
  t.same(ct.weight.shape, [16, 64, 4, 4]);
  await checkUniform(ct.weight, 1 / 32, 'ConvTranspose2d(16,64,4).weight (fan_in 64*16)');
  t.same(ct.bias!.shape, [64]);
  const emb = new Embedding(100, 100, { generator });
  const e = await stats(emb.weight);
  t.ok(Math.abs(e.mean) < 0.03 && Math.abs(e.var - 1) < 0.05, `Embedding N(0,1): mean ${e.mean}, var ${e.var}`);
  const pad = new Embedding(5, 3, { generator, paddingIdx: 2 });
  t.same([...(await pad.weight.data())].slice(6, 9), [0, 0, 0], 'padding row zero');
  for (const m of [new GroupNorm(2, 4), new LayerNorm([4]), new BatchNorm2d(4)]) {
    t.same([...(await m.getParameter('weight')!.data())], [1, 1, 1, 1], `${m.constructor.name} weight ones`);
    t.same([...(await m.getParameter('bias')!.data())], [0, 0, 0, 0], `${m.constructor.name} bias zeros`);
  }
  const bn = new BatchNorm2d(2);
  t.same([...(await bn.runningVar!.data())], [1, 1]);
  t.same([...(await bn.runningMean!.data())], [0, 0]);
  // reproducible from the generator's seed
  const w1 = await new Linear(8, 8, { generator: new L.Generator(3) }).weight.data();
  const w2 = await new Linear(8, 8, { generator: new L.Generator(3) }).weight.data();
  const w3 = await new Linear(8, 8, { generator: new L.Generator(4) }).weight.data();
  t.same(w1, w2, 'same seed, same weights');
  t.notSame(w1, w3, 'other seed, other weights');
});

t.test('withoutInit builds zero weights without drawing; the default generator is left where it was', async (t) => {
  const { withoutInit, defaultGenerator, manualSeed } = await import('../src/init.js');
  manualSeed(5);
  const before = defaultGenerator().offset;
  const lin = withoutInit(() => new Linear(4, 3));
  t.same([...await lin.weight.data()], new Array(12).fill(0), 'weight zeros');
  t.same([...await lin.bias!.data()], [0, 0, 0], 'bias zeros');
  t.equal(defaultGenerator().offset, before, 'nothing drawn');
  const drawn = new Linear(4, 3);
  t.ok((await drawn.weight.data()).some((v) => v !== 0), 'outside it, layers draw again');
});

t.test('loadWeights: a file under a prefix loads tensor by tensor; keys and shapes are checked before anything is read', async (t) => {
  const { loadWeights, saveSafetensors } = await import('../src/index.js');
  const { mkdtempSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const dir = mkdtempSync(join(tmpdir(), 'ld-loadweights-'));
  const src = new Net(1);
  const file = join(dir, 'full.safetensors');
  const entries = new Map<string, Tensor>([['other_model.x', L.ones([2])]]);
  for (const [k, v] of src.stateDict()) entries.set(`net.${k}`, v);
  await saveSafetensors(file, entries);
  for (const b of backends) {
    const dst = new Net(2, b);
    const r = await loadWeights(dst, file, { prefix: 'net.' });
    t.same(r, { missing: [], unexpected: [] }, `${b.name}: keys outside the prefix are ignored`);
    for (const [k, v] of src.stateDict()) {
      const got = await dst.stateDict().get(k)!.data();
      t.same([...got], [...await v.data()], `${b.name}: ${k}`);
    }
  }
  // mis-shaped and missing keys: one error, nothing loaded
  const wrong = new Map<string, Tensor>([...src.stateDict()].map(([k, v]) => [`net.${k}`, k === 'head.weight' ? L.zeros([5, 5]) : v]));
  wrong.delete('net.head.bias');
  const wrongFile = join(dir, 'wrong.safetensors');
  await saveSafetensors(wrongFile, wrong);
  const dst = new Net(3);
  const before = [...await dst.body.stateDict().get('0.weight')!.data()];
  const err = await loadWeights(dst, wrongFile, { prefix: 'net.' }).catch((e: unknown) => e);
  t.ok(err instanceof StateDictError, 'StateDictError');
  t.match((err as Error).message, /net\.head\.bias/, 'names the missing key with its prefix');
  t.match((err as Error).message, /net\.head\.weight: checkpoint \[5,5\]/, 'names the mis-shaped key and both shapes');
  t.same([...await dst.body.stateDict().get('0.weight')!.data()], before, 'nothing was loaded');
  const loose = await loadWeights(new Net(4), join(dir, 'full.safetensors'), { prefix: 'nope.', strict: false });
  t.ok(loose.missing.includes('nope.head.weight'), 'strict: false returns the missing keys');
});
