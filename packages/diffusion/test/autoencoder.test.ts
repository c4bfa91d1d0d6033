/** AutoencoderKL against the original's outputs (sd_vae_small), seeded sampling, gradients, and errors. */
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as L from '@latentdem/tensor';
import { SafetensorsFile, StateDictError, loadWeights, withoutInit } from '@latentdem/nn';
import { AutoencoderKL, ConfigError, DiagonalGaussian, SD15_VAE_CONFIG, SD_LATENT_SCALE } from '../src/index.js';
import type { AutoencoderKLConfig } from '../src/index.js';
import { close, hostRandom, testBackends } from '../../tensor/test/helpers.js';
import { fixtureErrors as diff } from './fixture-helpers.js';

const FIXTURE = join(process.cwd(), '..', 'shared', 'fixtures', 'sd_vae_small');
const WEIGHTS = join(FIXTURE, 'model.safetensors');
const fx = JSON.parse(readFileSync(join(FIXTURE, 'fixture.json'), 'utf8')) as {
  config: AutoencoderKLConfig; tolerance: { max_abs: number; max_rel_to_output_std: number };
};
const TOL = fx.tolerance;
const backends = await testBackends();
const file = await SafetensorsFile.open(WEIGHTS);
t.teardown(() => file.close());

/** The fixture's VAE with its weights, on `b`, in eval mode. */
async function fixtureVae(b: L.Backend): Promise<AutoencoderKL> {
  const vae = new AutoencoderKL(fx.config, { backend: b });
  await loadWeights(vae, file, { prefix: 'first_stage_model.' });
  return vae.eval();
}
const fixtureTensor = (name: string, b: L.Backend): Promise<L.Tensor> => file.read(`__fixture__.${name}`, { backend: b });


t.test('SD15_VAE_CONFIG: v1-inference.yaml first_stage_config, downsampling factor 8', async (t) => {
  t.same(SD15_VAE_CONFIG, { embed_dim: 4, ddconfig: { double_z: true, z_channels: 4, resolution: 256, in_channels: 3, out_ch: 3, ch: 128, ch_mult: [1, 2, 4, 4], num_res_blocks: 2, attn_resolutions: [], dropout: 0 } });
  t.equal(SD_LATENT_SCALE, 0.18215);
  // withoutInit: zeros instead of 84M random draws (~14 s on cpu); the model is disposed at once.
  const vae = withoutInit(() => new AutoencoderKL(SD15_VAE_CONFIG, { backend: 'cpu' }));
  const keys = [...vae.stateDict().keys()];
  t.equal(vae.downsampleFactor, 8);
  t.equal(keys.length, 248, 'tensors under first_stage_model.*');
  t.equal(vae.numParameters(), 83_653_863, 'parameters (83.7M, the size of SD v1 VAE)');
  t.same(keys.filter((k) => k.endsWith('nin_shortcut.weight')), ['encoder.down.1.block.0.nin_shortcut.weight', 'encoder.down.2.block.0.nin_shortcut.weight',
    'decoder.up.0.block.0.nin_shortcut.weight', 'decoder.up.1.block.0.nin_shortcut.weight'], 'shortcuts where the channels change');
  t.same(vae.decoder.up.at(3).block.at(0).conv1.weight.shape, [512, 512, 3, 3], 'up.3 is the deepest level (512 channels)');
  vae.dispose();
});

for (const b of backends) {
  t.test(`${b.name}: AutoencoderKL(sd_vae_small) equals the original's encoder_out, moments, mean, logvar, z_sample, decoded`, async (t) => {
    const vae = await fixtureVae(b);
    t.equal(vae.downsampleFactor, 4, 'ch_mult [1,1,2] -> factor 4');
    const image = await fixtureTensor('image', b);
    const noise = await fixtureTensor('noise', b);
    const z = await fixtureTensor('z', b);
    const ours = L.noGrad(() => {
      const post = vae.encode(image);
      return {
        encoder_out: vae.encoder.forward(image), moments: post.moments, mean: post.mean, logvar: post.logvar,
        z_sample: post.sample({ noise }), decoded: vae.decode(z),
      };
    });
    for (const [name, got] of Object.entries(ours)) {
      const want = await fixtureTensor(name, 'cpu' as never as L.Backend);
      t.same(got.shape, want.shape, `${name} shape ${L.fmtShape(want.shape)}`);
      const d = diff(await got.data(), await want.data());
      t.ok(d.maxAbs <= TOL.max_abs && d.rel <= TOL.max_rel_to_output_std,
        `${name}: max abs ${d.maxAbs.toExponential(2)} (<= ${TOL.max_abs}), max abs / std ${d.rel.toExponential(2)} (<= ${TOL.max_rel_to_output_std})`);
    }
  });
}

t.test('DiagonalGaussian.sample: the same seed gives the same sample on every backend, another seed another one', async (t) => {
  const samples: { name: string; a: ArrayLike<number>; gen: ArrayLike<number> }[] = [];
  for (const b of backends) {
    const post = new DiagonalGaussian(await fixtureTensor('moments', b));
    const a = await post.sample({ seed: 7 }).data();
    const again = await post.sample({ seed: 7 }).data();
    const other = await post.sample({ seed: 8 }).data();
    const gen = new L.Generator(7);
    const g1 = await post.sample({ generator: gen }).data();
    const g2 = await post.sample({ generator: gen }).data();
    t.same(Array.from(again), Array.from(a), `${b.name}: seed 7 twice, identical`);
    t.ok(diff(other, a).maxAbs > 0.1, `${b.name}: seed 8 differs from seed 7`);
    t.same(Array.from(g1), Array.from(a), `${b.name}: a fresh Generator(7) draws what seed 7 draws`);
    t.ok(diff(g2, g1).maxAbs > 0.1, `${b.name}: a generator advances between draws`);
    // The draw is the standard normal: (sample - mean) / std has mean ~0 and std ~1 over the 256 values.
    const m = await post.mean.data(); const s = await post.std.data();
    const e = Array.from(a, (v, i) => (v - m[i]) / s[i]);
    const mu = e.reduce((p, q) => p + q, 0) / e.length;
    const sd = Math.sqrt(e.reduce((p, q) => p + (q - mu) ** 2, 0) / e.length);
    t.ok(Math.abs(mu) < 0.25 && Math.abs(sd - 1) < 0.2, `${b.name}: noise mean ${mu.toFixed(3)}, std ${sd.toFixed(3)}`);
    samples.push({ name: b.name, a, gen: g2 });
  }
  for (const s of samples.slice(1)) {
    const c = close(s.a, samples[0].a, 1e-5, 1e-5);
    t.ok(c.ok, `${s.name} sample (seed 7) equals cpu: ${c.message}`);
    const cg = close(s.gen, samples[0].gen, 1e-5, 1e-5);
    t.ok(cg.ok, `${s.name} second generator draw equals cpu: ${cg.message}`);
  }
});

t.test('encodeLatent / decodeLatent: SD_LATENT_SCALE * mode (or sample), decode(z / SD_LATENT_SCALE)', async (t) => {
  const b = backends[0];
  const vae = await fixtureVae(b);
  const image = await fixtureTensor('image', b);
  const z = await fixtureTensor('z', b);
  const [mean, lat, latS, sample, dec, decL] = await Promise.all(L.noGrad(() => {
    const post = vae.encode(image);
    return [post.mean, vae.encodeLatent(image), vae.encodeLatent(image, { sample: true, seed: 3 }), post.sample({ seed: 3 }),
      vae.decode(z), vae.decodeLatent(z.mul(SD_LATENT_SCALE))];
  }).map((x) => x.data()));
  t.ok(close(lat, Array.from(mean, (v) => v * SD_LATENT_SCALE), 1e-6, 1e-5).ok, 'mode latent = 0.18215 * mean');
  t.ok(close(latS, Array.from(sample, (v) => v * SD_LATENT_SCALE), 1e-6, 1e-5).ok, 'sampled latent = 0.18215 * sample(seed)');
  const c = close(decL, dec, 1e-5, 1e-4);
  t.ok(c.ok, `decodeLatent(0.18215 z) = decode(z): ${c.message}`);
});

/**
 * Directional finite differences of L(x) = sum(f(x) * r): autodiff <grad L, v> against
 * (L(x + h v) - L(x - h v)) / 2h for unit random directions v, with L summed on the host in float64.
 */
async function directionalCheck(b: L.Backend, f: (x: L.Tensor) => L.Tensor, x0: Float32Array, shape: number[], h: number, dirs: number):
  Promise<{ grad: Float32Array; worst: number; lines: string[] }> {
  const x = L.tensor(x0, { shape, backend: b, requiresGrad: true });
  const y = f(x);
  const rData = hostRandom(y.size, 99, 0.5, 1.5);
  const r = L.tensor(rData, { shape: y.shape, backend: b });
  y.mul(r).sum().backward();
  const grad = new Float32Array(await x.grad!.data());
  const lossAt = async (data: Float32Array): Promise<number> => {
    const out = await L.noGrad(() => L.tidy(() => f(L.tensor(data, { shape, backend: b })))).data();
    let s = 0;
    for (let i = 0; i < out.length; i++) s += out[i] * rData[i];
    return s;
  };
  let worst = 0; const lines: string[] = [];
  for (let k = 0; k < dirs; k++) {
    // Direction 0 is the gradient itself (the largest change, so the best-conditioned check); the others are random.
    const v = k === 0 ? Float32Array.from(grad) : hostRandom(x0.length, 1000 + k);
    const norm = Math.hypot(...v);
    let ad = 0;
    for (let i = 0; i < v.length; i++) { v[i] /= norm; ad += grad[i] * v[i]; }
    const plus = x0.map((xi, i) => xi + h * v[i]); const minus = x0.map((xi, i) => xi - h * v[i]);
    const fd = ((await lossAt(plus)) - (await lossAt(minus))) / (2 * h);
    const err = Math.abs(fd - ad) / Math.max(Math.abs(fd), 1e-3 * Math.hypot(...grad));
    worst = Math.max(worst, err);
    lines.push(`<grad, v${k}> autodiff ${ad.toFixed(5)} vs finite difference ${fd.toFixed(5)} (rel ${err.toExponential(2)})`);
  }
  return { grad, worst, lines };
}

t.test('gradients: d/dz sum(decode(z) r) and d/dimage sum(encode(image).mean r) match finite differences; webgpu equals cpu', async (t) => {
  const zData = new Float32Array(await (await fixtureTensor('z', 'cpu' as never as L.Backend)).data());
  const imgData = new Float32Array(await (await fixtureTensor('image', 'cpu' as never as L.Backend)).data());
  const cases = [
    { name: 'decode: d/dz', data: zData, shape: [1, 4, 8, 8], f: (vae: AutoencoderKL) => (z: L.Tensor) => vae.decode(z) },
    { name: 'encode: d/dimage of the mean', data: imgData, shape: [1, 3, 32, 32], f: (vae: AutoencoderKL) => (x: L.Tensor) => vae.encode(x).mean },
  ];
  // h (a step of norm h): large enough that float32 rounding of the outputs (each ~1e-6 off, as the fixture's
  // float32-vs-float64 spread; L summed on the host in float64) stays far below the change, small enough that the
  // O(h^2) curvature term is negligible.
  const H = 0.1; const DIRS = 4; const REL_TOL = 2e-3;
  const grads = new Map<string, Float32Array>();
  for (const b of backends) {
    const vae = (await fixtureVae(b)).requireGrad(false);
    for (const c of cases) {
      const r = await directionalCheck(b, c.f(vae), c.data, c.shape, H, DIRS);
      t.ok(r.worst <= REL_TOL, `${b.name} ${c.name}: worst relative error ${r.worst.toExponential(2)} (<= ${REL_TOL}); ${r.lines.join('; ')}`);
      const cpu = grads.get(c.name);
      if (!cpu) { grads.set(c.name, r.grad); continue; }
      const scale = cpu.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      const cc = close(r.grad, cpu, 1e-4 * scale, 1e-3);
      t.ok(cc.ok, `${b.name} ${c.name}: gradient equals cpu elementwise (max |grad| ${scale.toExponential(2)}): ${cc.message}`);
    }
  }
});

t.test('attn_resolutions: AttnBlocks inside the levels at those resolutions, under the original key names', async (t) => {
  const config: AutoencoderKLConfig = { ...fx.config, ddconfig: { ...fx.config.ddconfig, attn_resolutions: [16] } };
  const vae = new AutoencoderKL(config, { backend: 'cpu' });
  const keys = [...vae.stateDict().keys()];
  const attn = keys.filter((k) => /\.attn\.\d+\.q\.weight$/.test(k));
  // Encoder level 1 (16x16) has num_res_blocks = 2 AttnBlocks; the decoder's level 1 has 3.
  t.same(attn, ['encoder.down.1.attn.0.q.weight', 'encoder.down.1.attn.1.q.weight',
    'decoder.up.1.attn.0.q.weight', 'decoder.up.1.attn.1.q.weight', 'decoder.up.1.attn.2.q.weight']);
  const out = L.noGrad(() => vae.decode(vae.encode(L.randn([1, 3, 16, 24], { seed: 1, backend: 'cpu' })).mode()));
  t.same(out.shape, [1, 3, 16, 24], 'a non-square image round-trips to its own size');
});

t.test('errors: image channels and sizes (ShapeError), mis-sized weights (StateDictError naming keys), configs (ConfigError)', async (t) => {
  const vae = await fixtureVae(backends[0]);
  const on = { backend: backends[0] };
  t.throws(() => vae.encode(L.zeros([1, 4, 32, 32], on)), { name: 'ShapeError', message: /4 channels, the model takes 3/ });
  t.throws(() => vae.encode(L.zeros([1, 3, 30, 32], on)), { name: 'ShapeError', message: /multiples of the downsampling factor 4/ });
  t.throws(() => vae.encode(L.zeros([3, 32, 32], on)), { name: 'ShapeError' });
  t.throws(() => vae.decode(L.zeros([1, 3, 8, 8], on)), { name: 'ShapeError', message: /embed_dim 4/ });
  t.throws(() => new DiagonalGaussian(L.zeros([1, 8, 2, 2], on)).sample({ noise: L.zeros([1, 4, 2, 3], on) }), { name: 'ShapeError' });

  const wider = new AutoencoderKL({ ...fx.config, ddconfig: { ...fx.config.ddconfig, ch_mult: [1, 2, 2] } }, on);
  const err = await loadWeights(wider, file, { prefix: 'first_stage_model.' }).then(() => null, (e: unknown) => e);
  t.ok(err instanceof StateDictError, 'a checkpoint of another shape: StateDictError');
  t.match((err as Error).message, /first_stage_model\.encoder\.down\.1\.block\.0\.conv1\.weight: checkpoint \[32,32,3,3\] F32, model \[64,32,3,3\]/, 'the message names the key and both shapes');

  const dd = fx.config.ddconfig;
  t.throws(() => new AutoencoderKL({ ...fx.config, ddconfig: { ...dd, double_z: false } }), { name: 'ConfigError', message: /double_z/ });
  t.throws(() => new AutoencoderKL({ ...fx.config, ddconfig: { ...dd, use_linear_attn: true } }), { name: 'ConfigError', message: /use_linear_attn/ });
  t.throws(() => new AutoencoderKL({ ...fx.config, ddconfig: { ...dd, resamp_with_conv: false } }), { name: 'ConfigError', message: /resamp_with_conv/ });
  t.throws(() => new AutoencoderKL({ ...fx.config, ddconfig: { ...dd, ch: 40 } }), { name: 'ConfigError', message: /ch: .*32 groups/ });
  t.throws(() => new AutoencoderKL({ ...fx.config, ddconfig: { ...dd, chmult: [1] } as never }), { name: 'ConfigError', message: /chmult/ });
  t.ok(new ConfigError('x', 'y', 'z') instanceof L.LatentdemError);
});

for (const b of backends) {
  t.test(`${b.name}: gradientCheckpointing() gives the plain tape's gradients through decode and encode, with a shorter tape`, async (t) => {
    const run = async (ck: boolean): Promise<{ gz: ArrayLike<number>; gx: ArrayLike<number>; nodes: number }> => {
      const vae = (await fixtureVae(b)).gradientCheckpointing(ck);
      const z = L.tensor(hostRandom(4 * 8 * 8, 31), { shape: [1, 4, 8, 8], backend: b, requiresGrad: true });
      const x = L.tensor(hostRandom(3 * 32 * 32, 32), { shape: [1, 3, 32, 32], backend: b, requiresGrad: true });
      const loss = vae.decode(z).square().sum().add(vae.encode(x).mean.mul(2).sum());
      const seen = new Set<unknown>();
      const walk = (y: L.Tensor): void => { const n = y.node; if (!n || seen.has(n)) return; seen.add(n); n.inputs.forEach(walk); };
      walk(loss);
      loss.backward();
      const out = { gz: await z.grad!.data(), gx: await x.grad!.data(), nodes: seen.size };
      vae.dispose();
      return out;
    };
    const plain = await run(false);
    const ck = await run(true);
    for (const k of ['gz', 'gx'] as const) {
      let scale = 0;
      for (const v of plain[k] as ArrayLike<number> & Iterable<number>) scale = Math.max(scale, Math.abs(v));
      const c = close(ck[k], plain[k], 1e-5 * scale, 1e-4);
      t.ok(c.ok, `${k}: ${c.message}`);
    }
    t.ok(ck.nodes * 3 < plain.nodes, `tape nodes ${ck.nodes} with checkpointing, ${plain.nodes} without`);
  });
}
