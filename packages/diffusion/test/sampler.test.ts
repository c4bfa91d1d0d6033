import t from 'tap';
import * as L from '@latentdem/tensor';
import { Schedule, sample, cfgEps, dps, psld, testing as T, type Guide } from '../src/index.js';
import { close, testBackends } from '../../tensor/test/helpers.js';
import { nullSpaceProjection } from './example-guide.js';

await L.initBackend('cpu');
const d = 4;

t.test('classifier-free guidance: eps = eps_u + s (eps_c - eps_u), checked through one DDIM step by hand', async (t) => {
  // constant models: eps_c = 1, eps_u = 0.25 -> guided eps = 0.25 + 3 (0.75) = 2.5
  const model = (x: L.Tensor, _t: number, cond?: unknown): L.Tensor => L.full(x.shape, cond === 'c' ? 1 : 0.25, { backend: x.backend });
  const x = L.tensor([0.5, -1], { shape: [1, 2], backend: 'cpu' });
  t.same(Array.from(await cfgEps(model, x, 5, 'c', 'u', 3).data()), [2.5, 2.5]);
  const s = new Schedule({ steps: 1 });   // one step: t = 1 -> a_prev = alphas_cumprod[0]
  const st = s.steps[0];
  const out = await sample({ model, schedule: s, xT: x, cond: 'c', uncond: 'u', guidanceScale: 3 }).data();
  const want = [0.5, -1].map((v) => { const x0 = (v - Math.sqrt(1 - st.a) * 2.5) / Math.sqrt(st.a); return Math.sqrt(st.aPrev) * x0 + Math.sqrt(1 - st.aPrev) * 2.5; });
  const c = close(out, want, 1e-5, 1e-5);
  t.ok(c.ok, c.message);
  t.equal(x.isDisposed, false, "the caller's x_T is not disposed");
});

t.test('memory stays flat over a 300-step guided loop (tidy per step, only x kept)', async (t) => {
  const P = T.linearGaussianProblem({ d, n: 6, m: 3, sigmaY: 0.1, seed: 3 });
  const y = L.tensor(P.y, { shape: [1, 3], backend: 'cpu' });
  const Dm = T.linearMap(P.D), Am = T.linearMap(P.A);
  const s = new Schedule({ steps: 300, eta: 1 });
  const model = T.exactEps([{ weight: 1, mean: P.mu, cov: P.cov }], s);
  // warm the linearMap caches so they do not count as growth
  L.tidy(() => Am(Dm(L.zeros([1, d]))));
  const before = L.memory().tensors.cpu;
  const live: number[] = [];
  const x = sample({ model, schedule: s, shape: [64, d], seed: 1, guide: dps({ y, forward: Am, decode: Dm, scale: 0.05 }), onStep: () => { live.push(L.memory().tensors.cpu); } });
  const after = L.memory().tensors.cpu;
  x.dispose();
  t.equal(L.memory().tensors.cpu, before, `no tensor left behind (${before} before, ${L.memory().tensors.cpu} after dispose)`);
  t.equal(after, before + 1, 'only the result is alive after sampling');
  t.equal(Math.max(...live.slice(10)), Math.max(...live.slice(0, 10)), `peak live tensors per step constant (${Math.max(...live)})`);
  const body = live.slice(0, -1);   // the last step draws no noise: fewer temporaries
  t.equal(Math.min(...body), Math.max(...body), `the same live count at every step but the last (${Math.min(...live)}..${Math.max(...live)})`);
});

t.test('a new guidance rule in ~30 lines (docs/samplers.md): DDNM projection is data-consistent and near the noiseless posterior', async (t) => {
  const P = T.linearGaussianProblem({ d, n: d, m: 2, sigmaY: 0.01, seed: 5, identityDecoder: true });
  const A = T.linearMap(P.A), At = T.linearMap(T.transpose(P.A));
  const y = L.tensor(P.y, { shape: [1, 2], backend: 'cpu' });
  const s = new Schedule({ steps: 100 });
  const N = 2000;
  const x = sample({ model: T.exactEps([{ weight: 1, mean: P.mu, cov: P.cov }], s), schedule: s, shape: [N, d], seed: 2, guide: nullSpaceProjection(y, A, At) });
  const data = await x.data(); x.dispose();
  const m = T.sampleMoments(data, d);
  let dc = 0;
  for (let i = 0; i < N; i++) dc += Math.hypot(...T.matvec(P.A, Array.from(data.slice(i * d, i * d + d))).map((v, k) => v - P.y[k])) / N;
  const e = T.momentErrors(m, P.postMean, P.postCov);
  t.comment(`DDNM example: ||Ax - y|| ${dc.toFixed(4)}, mean err ${e.meanErr.toFixed(4)}, trace rel err ${e.traceRelErr.toFixed(3)}`);
  t.ok(dc < 0.05, `data consistency ${dc.toFixed(4)} (prior: ~1.1)`);
  t.ok(e.meanErr < 0.15, `mean error vs the exact posterior ${e.meanErr.toFixed(4)}`);
  t.ok(e.traceRelErr < 0.3, `trace error ${e.traceRelErr.toFixed(3)}`);
});

t.test('bad input: clear errors', async (t) => {
  const s = new Schedule({ steps: 5 });
  const model = (x: L.Tensor): L.Tensor => x.mul(0);
  t.throws(() => sample({ model, schedule: s }), /give x_T or a shape/);
  t.throws(() => sample({ model, schedule: s, shape: [2, 2], eta: -1 }), /eta must be >= 0/);
  t.throws(() => sample({ model, schedule: s, steps: 7, shape: [2, 2] }), /disagrees with the schedule/);
  t.throws(() => sample({ model, steps: 1001, shape: [2, 2] }), /steps must be an integer in 1\.\.1000/);
  const xT = L.zeros([2, 2]);
  t.throws(() => sample({ model, schedule: s, xT, shape: [3, 2] }), /does not match x_T/);
  const y = L.zeros([1, 3]);
  t.throws(() => sample({ model, schedule: s, shape: [2, 2], guide: dps({ y, forward: (x) => x }) }), /A\(x0\) has shape \[2,2\] but y is \[1,3\]/);
  const bad: Guide = (ctx) => ctx.xPrev.sum(1);
  t.throws(() => sample({ model, schedule: s, shape: [2, 2], guide: bad }), /guide returned shape/);
  t.throws(() => psld({ y, forward: (x) => x, decode: undefined as never, encode: undefined as never }), /decode and encode are required/);
  t.throws(() => T.exactEps([{ weight: 1, mean: [0, 0], cov: T.eyeMat(2) }], s)(L.zeros([2, 3]), 1), /x must be \[N, 2\]/);
  t.throws(() => T.exactEps([{ weight: 1, mean: [0, 0], cov: T.eyeMat(2) }], s)(L.zeros([2, 2]), 1000), /t = 1000 out of range/);
  const dd = new Schedule({ steps: 5, kind: 'ddpm' });
  t.throws(() => dd.ddimStep(xT, xT, dd.steps[0]), /needs x_t/);
  t.throws(() => s.ddimStep(xT, xT, s.steps[0], 1), /needs a generator/);
});

t.test('cpu and webgpu agree: DDIM (eta 1) with DPS and PSLD guidance, same seed', async (t) => {
  const list = await testBackends();
  const gpu = list.find((b) => b.name === 'webgpu');
  if (!gpu) { t.pass('SKIPPED: no webgpu adapter (testBackends throws in CI instead)'); return; }
  const P = T.linearGaussianProblem({ d, n: 6, m: 3, sigmaY: 0.1, seed: 3 });
  const E = T.linearMap(P.E);
  const s = new Schedule({ steps: 20, eta: 1 });
  const model = T.exactEps([{ weight: 1, mean: P.mu, cov: P.cov }], s);
  const runOn = async (backend: L.Backend, kind: 'none' | 'dps' | 'psld'): Promise<Float32Array> => {
    const y = L.tensor(P.y, { shape: [1, 3], backend });
    const Dm = T.linearMap(P.D), Am = T.linearMap(P.A), At = T.linearMap(T.transpose(P.A));
    const encode = (x: L.Tensor, g: L.Generator): L.Tensor => E(x).add(L.randn([x.shape[0], d], { generator: g, backend: x.backend }).mul(0.01));
    const guide = kind === 'dps' ? dps({ y, forward: Am, decode: Dm, scale: 0.05 }) : kind === 'psld' ? psld({ y, forward: Am, transpose: At, decode: Dm, encode, noiseStd: 0.1, scale: 0.03 }) : undefined;
    const x = sample({ model, schedule: s, shape: [256, d], seed: 9, backend, guide });
    const out = await x.data() as Float32Array; x.dispose(); y.dispose();
    return out;
  };
  for (const kind of ['none', 'dps', 'psld'] as const) {
    const a = await runOn(list[0], kind), b = await runOn(gpu, kind);
    const c = close(b, a, 1e-3, 1e-3);
    t.ok(c.ok, `${kind}: webgpu vs cpu ${c.message}`);
  }
});

t.test("v- and x0-predicting models give the eps model's samples (Schedule.toEps)", async (t) => {
  const P = T.linearGaussianProblem({ d, n: 6, m: 3, sigmaY: 0.1, seed: 3 });
  const comps = [{ weight: 1, mean: P.mu, cov: P.cov }];
  const base = new Schedule({ steps: 30, eta: 1 });
  const epsModel = T.exactEps(comps, base);
  const ac = base.train.alphasCumprod;
  // v = sqrt(a) eps - sqrt(1-a) x0 and x0 = (x - sqrt(1-a) eps)/sqrt(a), written out by hand
  const vModel = (x: L.Tensor, tt: number): L.Tensor => { const a = ac[tt], e = epsModel(x, tt); const x0 = x.sub(e.mul(Math.sqrt(1 - a))).div(Math.sqrt(a)); return e.mul(Math.sqrt(a)).sub(x0.mul(Math.sqrt(1 - a))); };
  const x0Model = (x: L.Tensor, tt: number): L.Tensor => { const a = ac[tt]; return x.sub(epsModel(x, tt).mul(Math.sqrt(1 - a))).div(Math.sqrt(a)); };
  const run = async (model: (x: L.Tensor, t: number) => L.Tensor, prediction: 'epsilon' | 'v_prediction' | 'sample'): Promise<Float32Array> => {
    const x = sample({ model, schedule: new Schedule({ steps: 30, eta: 1, prediction }), shape: [64, d], seed: 4 });
    const out = await x.data() as Float32Array; x.dispose(); return out;
  };
  const ref = await run(epsModel, 'epsilon');
  for (const [name, m, p] of [['v', vModel, 'v_prediction'], ['x0', x0Model, 'sample']] as const) {
    const c = close(await run(m, p), ref, 2e-3, 2e-3);
    t.ok(c.ok, `${name}: ${c.message}`);
  }
  // and a wrong parameterization is caught: the v model read as eps gives different samples
  t.notOk(close(await run(vModel, 'epsilon'), ref, 2e-3, 2e-3).ok, 'v read as eps differs');
});
