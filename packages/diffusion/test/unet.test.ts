/**
 * SD v1 UNet against the golden fixtures of the original CompVis UNetModel (../shared/fixtures/sd_unet_small*),
 * its input gradient against finite differences, and its errors.
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as L from '@latentdem/tensor';
import type { Backend, Tensor } from '@latentdem/tensor';
import { SafetensorsFile, StateDictError, loadWeights } from '@latentdem/nn';
import { ConfigError, SD15_UNET_CONFIG, UNet, timestepEmbedding } from '../src/index.js';
import type { UNetConfig } from '../src/index.js';
import { close, hostRandom, testBackends } from '../../tensor/test/helpers.js';
import { thrown, fixtureErrors as errors } from './fixture-helpers.js';

const fixtureDir = (name: string): string => fileURLToPath(new URL(`../../../../shared/fixtures/${name}/`, import.meta.url));
interface Fixture { config: UNetConfig; tolerance: { max_abs: number; max_rel_to_output_std: number } }
const readFixture = (name: string): Fixture => JSON.parse(readFileSync(`${fixtureDir(name)}fixture.json`, 'utf8')) as Fixture;
const PREFIX = 'model.diffusion_model.';

const backends = await testBackends();

/** The error fn throws (or null); tap's t.throws takes error classes or patterns, not predicates. */

async function loadUNet(name: string, backend: Backend): Promise<{ unet: UNet; file: SafetensorsFile; fx: Fixture }> {
  const fx = readFixture(name);
  const unet = new UNet(fx.config, { backend }).eval();
  const file = await SafetensorsFile.open(`${fixtureDir(name)}model.safetensors`);
  await loadWeights(unet, file, { prefix: PREFIX });
  return { unet, file, fx };
}


for (const name of ['sd_unet_small', 'sd_unet_small_headch']) {
  for (const backend of backends) {
    t.test(`${name} ${backend.name}: out, t_sinusoid, temb, input_block0/1, middle_block equal the original's within the fixture tolerance`, async (t) => {
      const { unet, file, fx } = await loadUNet(name, backend);
      const get = (k: string): Promise<Tensor> => file.read(`__fixture__.${k}`, { backend });
      const [x, ts, ctx] = [await get('x'), await get('timesteps'), await get('context')];
      const taps = new Map<string, Tensor>();
      const out = L.noGrad(() => unet.forward(x, ts, ctx, { tap: (n, v) => taps.set(n, v) }));
      taps.set('out', out);
      const tol = fx.tolerance;
      for (const k of ['out', 't_sinusoid', 'temb', 'input_block0', 'input_block1', 'middle_block']) {
        const want = await get(k);
        const got = taps.get(k);
        t.ok(got, `${k} was tapped`);
        if (!got) continue;
        t.same(got.shape, want.shape, `${k} shape`);
        const { maxAbs, rel } = errors(await got.data(), await want.data());
        t.ok(maxAbs <= tol.max_abs && rel <= tol.max_rel_to_output_std,
          `${k}: max |diff| ${maxAbs.toExponential(2)} (tol ${tol.max_abs}), max |diff|/std ${rel.toExponential(2)} (tol ${tol.max_rel_to_output_std})`);
        want.dispose();
      }
      await file.close();
    });
  }
}

t.test('timestepEmbedding: numbers and an int32 tensor give the same [cos | sin] embedding; odd dim pads a zero column', async (t) => {
  const fromNumbers = await timestepEmbedding([999, 37, 0.5], 32, { backend: 'cpu' }).data();
  const fromTensor = await timestepEmbedding(L.tensor(new Int32Array([999, 37, 0]), { backend: 'cpu' }), 32).data();
  const c = close(fromNumbers.subarray(0, 64), fromTensor.subarray(0, 64), 1e-6, 0);
  t.ok(c.ok, c.message);
  // t = 0: cos half is 1, sin half is 0.
  t.same(Array.from(fromTensor.subarray(64, 96)), [...new Array(16).fill(1), ...new Array(16).fill(0)]);
  // t = 0.5, i = 0: freq 1 -> cos(0.5) first, sin(0.5) at half.
  t.ok(Math.abs(fromNumbers[64] - Math.cos(0.5)) < 1e-7 && Math.abs(fromNumbers[64 + 16] - Math.sin(0.5)) < 1e-7, 'cos first, sin second');
  const odd = timestepEmbedding([3], 5, { backend: 'cpu' });
  t.same(odd.shape, [1, 5]);
  t.equal((await odd.data())[4], 0, 'odd dim: last column zero');
});

/** Gradients on cpu, kept for the webgpu comparison. */
const cpuGrads: { x?: Float32Array; ctx?: Float32Array } = {};

for (const backend of backends) {
  t.test(`sd_unet_small ${backend.name}: d/dx of sum(unet(x) * r) agrees with central differences along random directions; context gradient finite`, async (t) => {
    const { unet, file } = await loadUNet('sd_unet_small', backend);
    unet.requireGrad(false);
    const xData = await (await file.read('__fixture__.x', { backend: 'cpu' })).data() as Float32Array;
    const ctxData = await (await file.read('__fixture__.context', { backend: 'cpu' })).data() as Float32Array;
    await file.close();
    const xShape = [2, 4, 16, 16]; const ctxShape = [2, 7, 24];
    const steps = [999, 37];
    // Zero-mean weights: a larger directional derivative against the same float32 round-off in L.
    const r = hostRandom(xData.length, 7, -1, 1);
    const rT = L.tensor(r, { shape: xShape, backend });

    const x = L.tensor(xData, { shape: xShape, backend, requiresGrad: true });
    const ctx = L.tensor(ctxData, { shape: ctxShape, backend, requiresGrad: true });
    L.tidy(() => { unet.forward(x, steps, ctx).mul(rT).sum().backward(); });
    const gx = await x.grad!.data() as Float32Array;
    const gc = await ctx.grad!.data() as Float32Array;

    // L(x) in float64 on the host from float32 evaluations.
    const lossAt = async (data: Float64Array): Promise<number> => {
      const out = L.noGrad(() => unet.forward(L.tensor(Float32Array.from(data), { shape: xShape, backend }), steps, L.tensor(ctxData, { shape: ctxShape, backend })));
      const o = await out.data();
      out.dispose();
      let s = 0;
      for (let i = 0; i < o.length; i++) s += o[i] * r[i];
      return s;
    };
    // The random-weight network is strongly curved: the central difference's O(h^2) error is ~2e-3 relative at
    // h = 0.03, and float32 round-off (~1e-6 per output) dominates below h ~ 0.005. Richardson extrapolation of
    // D(h) and D(2h) cancels the h^2 term: (4 D(h) - D(2h)) / 3.
    const h = 1e-2;
    const central = async (v: Float32Array, step: number): Promise<number> =>
      ((await lossAt(Float64Array.from(xData, (xi, i) => xi + step * v[i]))) - (await lossAt(Float64Array.from(xData, (xi, i) => xi - step * v[i])))) / (2 * step);
    for (const seed of [11, 12]) {
      const v = hostRandom(xData.length, seed);
      let auto = 0;
      for (let i = 0; i < v.length; i++) auto += gx[i] * v[i];
      const d1 = await central(v, h);
      const d2 = await central(v, 2 * h);
      const fd = (4 * d1 - d2) / 3;
      const rel = Math.abs(auto - fd) / Math.abs(fd);
      t.ok(rel < 3e-4, `direction ${seed}: autodiff <grad, v> ${auto.toPrecision(8)}; central differences D(${h}) ${d1.toPrecision(8)}, D(${2 * h}) ${d2.toPrecision(8)}, Richardson ${fd.toPrecision(8)}: relative difference ${rel.toExponential(2)} (D(${h}) alone ${(Math.abs(auto - d1) / Math.abs(d1)).toExponential(2)})`);
    }

    let finite = true; let maxAbs = 0;
    for (const g of gc) { finite &&= Number.isFinite(g); maxAbs = Math.max(maxAbs, Math.abs(g)); }
    t.ok(finite && maxAbs > 0, `context gradient is finite and non-zero (max |g| ${maxAbs.toExponential(2)})`);

    if (backend.name === 'cpu') { cpuGrads.x = gx; cpuGrads.ctx = gc; } else if (cpuGrads.x && cpuGrads.ctx) {
      for (const [k, got, want] of [['x', gx, cpuGrads.x], ['context', gc, cpuGrads.ctx]] as const) {
        let scale = 0;
        for (const w of want) scale = Math.max(scale, Math.abs(w));
        const c = close(got, want, 1e-4 * scale, 1e-3);
        t.ok(c.ok, `${backend.name} gradient w.r.t. ${k} equals cpu elementwise (atol 1e-4 * max|g| = ${(1e-4 * scale).toExponential(2)}): ${c.message}`);
      }
    }
  });
}

for (const backend of backends) {
  t.test(`sd_unet_small ${backend.name}: use_checkpoint (ResBlocks recomputed in backward) gives the plain tape's gradients for x, context and weights`, async (t) => {
    const run = async (useCheckpoint: boolean): Promise<Float32Array[]> => {
      const fx = readFixture('sd_unet_small');
      const unet = new UNet({ ...fx.config, use_checkpoint: useCheckpoint }, { backend }).eval();
      await loadWeights(unet, `${fixtureDir('sd_unet_small')}model.safetensors`, { prefix: PREFIX });
      const x = L.tensor(hostRandom(2 * 4 * 16 * 16, 3), { shape: [2, 4, 16, 16], backend, requiresGrad: true });
      const ctx = L.tensor(hostRandom(2 * 7 * 24, 4), { shape: [2, 7, 24], backend, requiresGrad: true });
      const r = L.tensor(hostRandom(2 * 4 * 16 * 16, 5), { shape: [2, 4, 16, 16], backend });
      L.tidy(() => { unet.forward(x, [999, 37], ctx).mul(r).sum().backward(); });
      const w = unet.input_blocks.at(4).at(0) as unknown as { in_layers: { at(i: number): { weight: L.Tensor } } };
      const out = [await x.grad!.data(), await ctx.grad!.data(), await w.in_layers.at(2).weight.grad!.data()] as Float32Array[];
      unet.dispose();
      return out;
    };
    const plain = await run(false);
    const ck = await run(true);
    ['x', 'context', 'input_blocks.4.0.in_layers.2.weight'].forEach((name, i) => {
      let scale = 0;
      for (const v of plain[i]) scale = Math.max(scale, Math.abs(v));
      const c = close(ck[i], plain[i], 1e-5 * scale, 1e-4);
      t.ok(c.ok, `d/d ${name}: ${c.message}`);
    });
  });
}

t.test('unsupported config options throw ConfigError naming the option', async (t) => {
  const base = readFixture('sd_unet_small').config;
  const cases: [string, Partial<Record<keyof UNetConfig, unknown>>][] = [
    ['use_scale_shift_norm', { use_scale_shift_norm: true }],
    ['resblock_updown', { resblock_updown: true }],
    ['num_classes', { num_classes: 10 }],
    ['use_new_attention_order', { use_new_attention_order: true }],
    ['dims', { dims: 3 }],
    ['use_spatial_transformer', { use_spatial_transformer: false }],
    ['use_fp16', { use_fp16: true }],
    ['n_embed', { n_embed: 16 }],
    ['num_heads', { num_heads: -1, num_head_channels: -1 }],
    ['context_dim', { context_dim: null }],
  ];
  for (const [option, change] of cases) {
    const config = { ...base, ...change } as UNetConfig;
    const e = thrown(() => new UNet(config, { backend: 'cpu' }));
    t.ok(e instanceof ConfigError && e.option === option && e.message.includes(option), `${option}: ${JSON.stringify(change)} -> ${String(e)}`);
  }
  // Defaults are the original's: use_spatial_transformer defaults to false there.
  const { use_spatial_transformer: _, ...noFlag } = base;
  t.throws(() => new UNet(noFlag as UNetConfig, { backend: 'cpu' }), ConfigError, 'use_spatial_transformer omitted (original default false)');
});

t.test('SD15_UNET_CONFIG is v1-inference.yaml unet_config.params, field for field', async (t) => {
  t.same(SD15_UNET_CONFIG, {
    image_size: 32, in_channels: 4, out_channels: 4, model_channels: 320, attention_resolutions: [4, 2, 1], num_res_blocks: 2,
    channel_mult: [1, 2, 4, 4], num_heads: 8, use_spatial_transformer: true, transformer_depth: 1, context_dim: 768, use_checkpoint: true, legacy: false,
  });
  // Its structure at a tenth of the width (the full model is 860M parameters): the 686 UNet tensors of an SD 1.x
  // checkpoint, with the original names at the block boundaries.
  const small = new UNet({ ...SD15_UNET_CONFIG, model_channels: 32, context_dim: 8 }, { backend: 'cpu' });
  const keys = [...small.stateDict().keys()];
  t.equal(keys.length, 686, 'SD 1.x has 686 UNet tensors');
  for (const k of ['time_embed.2.weight', 'input_blocks.3.0.op.weight', 'input_blocks.11.0.out_layers.3.weight', 'middle_block.1.transformer_blocks.0.attn2.to_k.weight',
    'output_blocks.2.1.conv.weight', 'output_blocks.5.2.conv.weight', 'output_blocks.8.2.conv.weight', 'output_blocks.11.1.transformer_blocks.0.ff.net.0.proj.weight', 'out.2.bias']) {
    t.ok(keys.includes(k), k);
  }
  t.notOk(keys.some((k) => k.startsWith('input_blocks.10.1') || k.startsWith('output_blocks.0.1')), 'no transformer at the deepest level (ds 8 not in [4,2,1])');
});

t.test('weights for a different config: StateDictError listing the mis-shaped keys', async (t) => {
  const config = { ...readFixture('sd_unet_small').config, model_channels: 64 };
  const unet = new UNet(config, { backend: 'cpu' });
  const err = await loadWeights(unet, `${fixtureDir('sd_unet_small')}model.safetensors`, { prefix: PREFIX }).then(() => null, (e: unknown) => e);
  t.ok(err instanceof StateDictError, `throws StateDictError (${String(err).slice(0, 200)}...)`);
  if (err instanceof StateDictError) {
    t.ok(err.mismatched.length > 0 && err.mismatched.some((m) => m.startsWith(`${PREFIX}input_blocks.0.0.weight: checkpoint [32,4,3,3]`)), `mis-shaped keys listed (${err.mismatched.length}), e.g. ${err.mismatched[0]}`);
    t.same([err.missing.length, err.unexpected.length], [0, 0], 'same key set: nothing missing or unexpected');
  }
});

t.test('wrong inputs throw ShapeError naming the problem', async (t) => {
  const unet = new UNet(readFixture('sd_unet_small').config, { backend: 'cpu' });
  const ctx = L.zeros([2, 7, 24], { backend: 'cpu' });
  const z = (shape: number[]): Tensor => L.zeros(shape, { backend: 'cpu' });
  const cases: [string, () => unknown, RegExp][] = [
    ['input channels', () => unet.forward(z([2, 3, 16, 16]), [1, 2], ctx), /3 channels.*in_channels is 4/],
    ['odd spatial size', () => unet.forward(z([2, 4, 15, 16]), [1, 2], ctx), /divisible by 2/],
    ['context width', () => unet.forward(z([2, 4, 16, 16]), [1, 2], z([2, 7, 25])), /context_dim/],
    ['context batch', () => unet.forward(z([2, 4, 16, 16]), [1, 2], z([1, 7, 24])), /batch sizes differ/],
    ['timesteps length', () => unet.forward(z([2, 4, 16, 16]), [1, 2, 3], ctx), /timesteps must be \[2\]/],
  ];
  for (const [what, fn, pattern] of cases) {
    const e = thrown(fn);
    t.ok(e instanceof L.ShapeError && pattern.test(e.message), `${what}: ${String(e)}`);
  }
});
