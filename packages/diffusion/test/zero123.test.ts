/**
 * Zero123's conditioning against the golden fixture of the original (../shared/fixtures/zero123_unet_small:
 * pose vector, cc_projection context, 8-channel UNet output), its classifier-free guidance convention, and errors.
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as L from '@latentdem/tensor';
import type { Backend, Tensor } from '@latentdem/tensor';
import { SafetensorsFile, StateDictError } from '@latentdem/nn';
import { ZERO123_CONFIG, ZERO123_GUIDANCE_SCALE, Zero123, loadZero123Weights, poseTensor, poseVector, sample } from '../src/index.js';
import type { UNetConfig, Zero123Config, Zero123Cond } from '../src/index.js';
import { testBackends } from '../../tensor/test/helpers.js';
import { thrown, fixtureErrors as errors } from './fixture-helpers.js';

const dir = fileURLToPath(new URL('../../../../shared/fixtures/zero123_unet_small/', import.meta.url));
interface Fixture { config: { unet: { args: UNetConfig }; clip_dim: number }; tolerance: { max_abs: number; max_rel_to_output_std: number } }
const fx = JSON.parse(readFileSync(`${dir}fixture.json`, 'utf8')) as Fixture;
const config: Zero123Config = { unet: fx.config.unet.args, clip_dim: fx.config.clip_dim };
const backends = await testBackends();



async function load(backend: Backend | 'cpu'): Promise<{ model: Zero123; file: SafetensorsFile }> {
  const model = L.noGrad(() => new Zero123(config, { backend })).eval();
  const file = await SafetensorsFile.open(`${dir}model.safetensors`);
  await loadZero123Weights(model, file);
  model.requireGrad(false);
  return { model, file };
}

t.test('poseVector: [radians(polar), sin(radians(azimuth)), cos(radians(azimuth)), radius] (gradio_new.py:81-82), equal to the fixture\'s pose', async (t) => {
  const file = await SafetensorsFile.open(`${dir}model.safetensors`);
  const raw = await (await file.read('__fixture__.pose_raw', { backend: 'cpu' })).data();
  const want = await (await file.read('__fixture__.pose', { backend: 'cpu' })).data();
  await file.close();
  t.same(Array.from(raw), [30, -45, Math.fround(0.3)], 'the fixture pose: polar +30 deg, azimuth -45 deg, radius +0.3');
  const v = poseVector({ polar: raw[0], azimuth: raw[1], radius: raw[2] });
  t.same(Array.from(Float32Array.from(v)), Array.from(want), 'bit-equal in float32');
  t.same(poseVector({ polar: 90, azimuth: 0, radius: 0 }), [Math.PI / 2, 0, 1, 0], 'azimuth 0: sin 0, cos 1; polar in radians');
  const [, s, c] = poseVector({ polar: 0, azimuth: 90, radius: 0 });
  t.ok(Math.abs(s - 1) < 1e-15 && Math.abs(c) < 1e-15, 'azimuth 90: sin 1, cos 0');
  const p = poseVector({ polar: 0, azimuth: -90, radius: -0.5 });
  t.ok(Math.abs(p[1] + 1) < 1e-15 && p[3] === -0.5, 'negative azimuth and radius keep their sign');
  const two = poseTensor([{ polar: 0, azimuth: 0, radius: 0 }, { polar: 180, azimuth: 180, radius: 1 }], { backend: 'cpu' });
  t.same(two.shape, [2, 4]);
  t.throws(() => poseVector({ polar: Number.NaN, azimuth: 0, radius: 0 }), /polar must be a finite number/);
  t.throws(() => poseVector({ polar: 0, azimuth: 0 } as never), /radius must be a finite number/);
});

t.test('ZERO123_CONFIG is the released model\'s (sd-objaverse-finetune-c_concat-256.yaml): 8-channel SD v1 UNet, cc_projection 772 -> 768', async (t) => {
  t.same({ ...ZERO123_CONFIG.unet, attention_resolutions: [...ZERO123_CONFIG.unet.attention_resolutions], channel_mult: [...ZERO123_CONFIG.unet.channel_mult!] }, {
    image_size: 32, in_channels: 8, out_channels: 4, model_channels: 320, attention_resolutions: [4, 2, 1], num_res_blocks: 2,
    channel_mult: [1, 2, 4, 4], num_heads: 8, use_spatial_transformer: true, transformer_depth: 1, context_dim: 768, use_checkpoint: true, legacy: false,
  });
  t.equal(ZERO123_CONFIG.clip_dim + 4, 772, 'cc_projection in_features');
  t.equal(ZERO123_GUIDANCE_SCALE, 3);
});

for (const backend of backends) {
  t.test(`zero123_unet_small ${backend.name}: context = cc_projection([clip, pose]) and the UNet output on [x_noisy, cond_latent] equal the original's within tolerance`, async (t) => {
    const { model, file } = await load(backend);
    const get = (k: string): Promise<Tensor> => file.read(`__fixture__.${k}`, { backend });
    const clip = await get('clip_embedding');
    const raw = await (await file.read('__fixture__.pose_raw', { backend: 'cpu' })).data();
    const tol = fx.tolerance;
    const ctx = L.noGrad(() => model.context(clip, { polar: raw[0], azimuth: raw[1], radius: raw[2] }));
    t.same(ctx.shape, [1, 1, 16]);
    const wantCtx = await (await get('context')).data();
    const ec = errors(await ctx.data(), wantCtx);
    t.ok(ec.maxAbs <= 1e-5, `context: max |diff| ${ec.maxAbs.toExponential(2)}, max |diff|/std ${ec.rel.toExponential(2)}`);
    // The same through pose vectors given as a tensor.
    const ctx2 = L.noGrad(() => model.context(clip, poseTensor({ polar: raw[0], azimuth: raw[1], radius: raw[2] }, { backend })));
    t.equal(errors(await ctx2.data(), await ctx.data()).maxAbs, 0, 'pose as a [1, 4] tensor gives the same context');

    const xNoisy = await get('x_noisy');
    const cond = model.conditioning(clip, { polar: raw[0], azimuth: raw[1], radius: raw[2] }, await get('cond_latent'));
    const ts = await get('timesteps');
    const before = L.memory().tensors[backend.name];
    const out = L.noGrad(() => model.forward(xNoisy, ts.cast('int32'), cond));
    t.ok(L.memory().tensors[backend.name] - before <= 2, 'under noGrad the forward leaves its output (and the int32 cast) only');
    const want = await (await get('out')).data();
    const e = errors(await out.data(), want);
    t.ok(e.maxAbs <= tol.max_abs && e.rel <= tol.max_rel_to_output_std,
      `out: max |diff| ${e.maxAbs.toExponential(2)} (tol ${tol.max_abs.toExponential(2)}), max |diff|/std ${e.rel.toExponential(2)} (tol ${tol.max_rel_to_output_std})`);
    // From the fixture's own context (isolates the UNet from cc_projection).
    const out2 = L.noGrad(() => model.forward(xNoisy, 537, { context: ctx, concat: cond.concat }));
    const e2 = errors(await out2.data(), want);
    t.ok(e2.maxAbs <= tol.max_abs, `out with t as a number: max |diff| ${e2.maxAbs.toExponential(2)}`);
    await file.close();
    model.dispose();
  });
}

t.test('guidance (cpu): guidedEps = eps_u + s (eps_c - eps_u), eps_u from a ZERO context (not cc_projection(0)) and a ZERO concat latent, batched; s = 1 is the conditional eps', async (t) => {
  const { model, file } = await load('cpu');
  const get = (k: string): Promise<Tensor> => file.read(`__fixture__.${k}`, { backend: 'cpu' });
  const x = await get('x_noisy');
  const cond = model.conditioning(await get('clip_embedding'), { polar: 30, azimuth: -45, radius: 0.3 }, await get('cond_latent'));
  const uc = model.unconditional(cond);
  t.same(Array.from(await uc.context.data()), new Array(16).fill(0), 'unconditional context: zeros [1, 1, 16]');
  t.same(uc.concat.shape, [1, 4, 16, 16]);
  t.equal((await uc.concat.data()).every((v) => v === 0), true, 'unconditional concat latent: zeros');
  const proj0 = L.noGrad(() => model.context(L.zeros([1, 16]), { polar: 0, azimuth: 0, radius: 0 }));
  t.ok((await proj0.data()).some((v) => v !== 0), 'cc_projection of a zero embedding is NOT zero (bias, cos term): the demo\'s uc is not that');

  const t0 = 537;
  const [ec, eu, g3, g1, g75] = L.noGrad(() => [
    model.forward(x, t0, cond), model.forward(x, t0, uc),
    model.guidedEps(x, t0, cond), model.guidedEps(x, t0, cond, 1), model.guidedEps(x, t0, cond, 7.5),
  ]);
  const [c, u] = [await ec.data(), await eu.data()];
  for (const [s, got] of [[3, g3], [7.5, g75]] as const) {
    const want = Array.from(c, (v, i) => u[i] + s * (v - u[i]));
    const e = errors(await got.data(), want);
    t.ok(e.maxAbs < 2e-5, `scale ${s}${s === 3 ? ' (the default)' : ''}: batched [uncond; cond] call equals eps_u + s (eps_c - eps_u) from separate calls: max |diff| ${e.maxAbs.toExponential(2)}`);
  }
  t.equal(errors(await g1.data(), c).maxAbs, 0, 'scale 1: the conditional eps, one call');
  const diff = errors(c, u).maxAbs;
  t.ok(diff > 1e-3, `the branches differ (max |eps_c - eps_u| ${diff.toExponential(2)}), so the test can tell them apart`);

  // Through the package's sample loop: two DDIM steps with the Zero123 denoiser, deterministic per seed.
  const run = (): Tensor => sample({ model: model.denoiser(cond), steps: 2, eta: 1, shape: [1, 4, 16, 16], seed: 3, backend: 'cpu' });
  const a = L.noGrad(run); const b = L.noGrad(run);
  t.same(Array.from(await a.data()), Array.from(await b.data()), 'sample() with model.denoiser(cond): same seed, same result');
  t.ok((await a.data()).every(Number.isFinite), 'finite');
  await file.close();
  model.dispose();
});

t.test('Zero123 errors: configs, shapes, and weights of another config', async (t) => {
  t.match(thrown(() => new Zero123({ unet: { ...config.unet, in_channels: 4 }, clip_dim: 16 })), { name: 'ConfigError', option: 'in_channels' });
  t.match(thrown(() => new Zero123({ unet: config.unet, clip_dim: 0 })), { name: 'ConfigError', option: 'clip_dim' });
  t.match(thrown(() => new Zero123({ clip_dim: 16 } as unknown as Zero123Config)), { name: 'ConfigError', option: 'unet' });
  const model = L.noGrad(() => new Zero123(config, { backend: 'cpu' }));
  const pose = { polar: 0, azimuth: 0, radius: 0 };
  t.match(thrown(() => model.context(L.zeros([1, 768]), pose)), { name: 'ShapeError', message: /clip embedding must be \[B, 16\]/ });
  t.match(thrown(() => model.context(L.zeros([2, 16]), [pose, pose, pose])), { name: 'ShapeError', message: /batch sizes differ/ });
  t.match(thrown(() => model.context(L.zeros([1, 16]), L.zeros([1, 3]))), { name: 'ShapeError', message: /pose vectors must be \[B, 4\]/ });
  const ctx3 = model.context(L.zeros([1, 1, 16]), [pose, pose, pose]);
  t.same(ctx3.shape, [3, 1, 16], 'one embedding, three poses: the demo\'s tile');
  t.match(thrown(() => model.conditioning(L.zeros([1, 16]), pose, L.zeros([1, 8, 16, 16]))), { name: 'ShapeError', message: /input latent must be/ });
  const cond: Zero123Cond = model.conditioning(L.zeros([1, 16]), pose, L.zeros([1, 4, 16, 16]));
  t.match(thrown(() => model.forward(L.zeros([1, 4, 8, 8]), 1, cond)), { name: 'ShapeError', message: /input-view latent \[1,4,16,16\] must match x \[1,4,8,8\]/ });
  t.match(thrown(() => model.forward(L.zeros([1, 8, 16, 16]), 1, cond)), { name: 'ShapeError', message: /x must be \[B, 4, h, w\]/ });
  t.throws(() => model.guidedEps(L.zeros([1, 4, 16, 16]), 1, cond, Number.NaN), /scale must be a finite number/);
  const other = L.noGrad(() => new Zero123({ unet: config.unet, clip_dim: 12 }, { backend: 'cpu' }));
  await t.rejects(loadZero123Weights(other, `${dir}model.safetensors`), StateDictError);
  await t.rejects(loadZero123Weights(other, `${dir}model.safetensors`), { message: /cc_projection\.weight: checkpoint \[16,20\] F32, model \[16,16\]/ });
  model.dispose(); other.dispose();
});
