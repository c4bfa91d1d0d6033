/**
 * CLIP's VisionTransformer against the golden fixture of the original (../shared/fixtures/clip_vision_small,
 * openai/CLIP encode_image under Zero123's keys), Zero123's preprocessing against values worked out by hand,
 * and the errors.
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as L from '@latentdem/tensor';
import type { Backend } from '@latentdem/tensor';
import { SafetensorsFile, StateDictError, loadWeights } from '@latentdem/nn';
import { CLIP_MEAN, CLIP_STD, ClipVisionEncoder, ConfigError, ZERO123_CLIP_VISION_CONFIG, ZERO123_CLIP_VISION_PREFIX, bicubicMatrix, zero123ClipPreprocess } from '../src/index.js';
import type { ClipVisionConfig } from '../src/index.js';
import { testBackends } from '../../tensor/test/helpers.js';
import { thrown, fixtureErrors as errors } from './fixture-helpers.js';

const dir = fileURLToPath(new URL('../../../../shared/fixtures/clip_vision_small/', import.meta.url));
interface Fixture { config: { args: ClipVisionConfig }; tolerance: { max_abs: number; max_rel_to_output_std: number } }
const fx = JSON.parse(readFileSync(`${dir}fixture.json`, 'utf8')) as Fixture;
const backends = await testBackends();



async function load(backend: Backend): Promise<{ enc: ClipVisionEncoder; file: SafetensorsFile }> {
  const enc = new ClipVisionEncoder(fx.config.args, { backend }).eval();
  const file = await SafetensorsFile.open(`${dir}model.safetensors`);
  await loadWeights(enc, file, { prefix: ZERO123_CLIP_VISION_PREFIX });
  return { enc, file };
}

for (const backend of backends) {
  t.test(`clip_vision_small ${backend.name}: the projected embedding equals openai/CLIP's encode_image within the fixture tolerance; a batch of 2 gives it twice`, async (t) => {
    const { enc, file } = await load(backend);
    const pixels = await file.read('__fixture__.pixels', { backend });
    const want = await (await file.read('__fixture__.embedding', { backend: 'cpu' })).data();
    const out = L.noGrad(() => enc.forward(pixels));
    t.same(out.shape, [1, 16]);
    const { maxAbs, rel } = errors(await out.data(), want);
    const tol = fx.tolerance;
    t.ok(maxAbs <= tol.max_abs && rel <= tol.max_rel_to_output_std,
      `embedding: max |diff| ${maxAbs.toExponential(2)} (tol ${tol.max_abs.toExponential(2)}), max |diff|/std ${rel.toExponential(2)} (tol ${tol.max_rel_to_output_std})`);
    const batch = L.concat([pixels, pixels], 0);
    const before = L.memory().tensors[backend.name];
    const two = L.noGrad(() => enc.forward(batch));
    t.equal(L.memory().tensors[backend.name] - before, 1, 'under noGrad the forward leaves only its output (intermediates freed)');
    const d = await two.data();
    const e2 = errors(d.subarray(16, 32), want);
    t.ok(e2.maxAbs <= tol.max_abs, `batch item 1: max |diff| ${e2.maxAbs.toExponential(2)}`);
    two.dispose(); batch.dispose(); out.dispose(); pixels.dispose();
    await file.close();
    enc.dispose();
  });
}

t.test('ZERO123_CLIP_VISION_CONFIG is ViT-L/14 (224 px, patch 14, width 1024, 24 layers, 16 heads, 768 out): 303,966,208 parameters', async (t) => {
  t.same({ ...ZERO123_CLIP_VISION_CONFIG }, { input_resolution: 224, patch_size: 14, width: 1024, layers: 24, heads: 16, output_dim: 768 });
  // conv1 3 p^2 w, class w, positional (g^2 + 1) w, ln_pre/ln_post 4 w, per layer attn 4 w^2 + 4 w, mlp 8 w^2 + 5 w,
  // ln_1/ln_2 4 w; proj w out.
  const count = (c: ClipVisionConfig): number => {
    const w = c.width; const g = c.input_resolution / c.patch_size;
    return 3 * c.patch_size ** 2 * w + w + (g * g + 1) * w + 4 * w + c.layers * (12 * w * w + 13 * w) + w * c.output_dim;
  };
  const small = new ClipVisionEncoder(fx.config.args, { backend: 'cpu' });
  let n = 0;
  for (const p of small.parameters()) n += p.size;
  t.equal(n, count(fx.config.args), `the formula counts the small model's ${n} parameters`);
  small.dispose();
  t.equal(count(ZERO123_CLIP_VISION_CONFIG), 303_966_208, 'ViT-L/14 visual tower (CLIP reports ~304M)');
});

t.test('bicubicMatrix: Keys cubic with A = -0.75, align_corners=True, border taps clamped (worked by hand)', async (t) => {
  // 4 -> 3 with align_corners: sources 0, 1.5, 3. At t = 0.5 the weights are
  // cc2(1.5) = -0.09375, cc1(0.5) = 0.59375, cc1(0.5), cc2(1.5); at t = 0 they are 0, 1, 0, 0.
  t.same(Array.from(bicubicMatrix(4, 3, true)), [1, 0, 0, 0, -0.09375, 0.59375, 0.59375, -0.09375, 0, 0, 0, 1]);
  // 2 -> 3: source 0.5 with taps -1, 0, 1, 2 clamped to 0, 0, 1, 1: (-0.09375 + 0.59375) each = 0.5.
  t.same(Array.from(bicubicMatrix(2, 3, true)), [1, 0, 0.5, 0.5, 0, 1]);
  // Same size: identity.
  t.same(Array.from(bicubicMatrix(3, 3, true)), [1, 0, 0, 0, 1, 0, 0, 0, 1]);
  // Rows sum to 1.
  const m = bicubicMatrix(7, 5, true);
  for (let i = 0; i < 5; i++) t.ok(Math.abs(m.subarray(i * 7, i * 7 + 7).reduce((a, b) => a + b, 0) - 1) < 1e-6, `row ${i} sums to 1`);
});

for (const backend of backends) {
  t.test(`zero123ClipPreprocess ${backend.name}: bicubic resize of the [-1, 1] image (overshoot kept), then (x + 1) / 2, then CLIP mean/std`, async (t) => {
    // A 4x4 image, channel c = row pattern r = [-1, 1, 1, -1] times column pattern k = [1, 1, -1, -1] (+ c/10).
    // Resized to 3x3 (separable): rows r -> [-1, 1.375, -1] (1.375 = 0.09375 + 0.59375 + 0.59375 + 0.09375:
    // bicubic overshoots and nothing clamps), columns k -> [1, -0.09375 + 0.59375 - 0.59375 + 0.09375 = 0, -1].
    const r = [-1, 1, 1, -1]; const k = [1, 1, -1, -1];
    const data = new Float32Array(3 * 16);
    for (let c = 0; c < 3; c++) for (let y = 0; y < 4; y++) for (let x = 0; x < 4; x++) data[c * 16 + y * 4 + x] = r[y] * k[x] * (1 - c / 10);
    const img = L.tensor(data, { shape: [1, 3, 4, 4], backend });
    const out = zero123ClipPreprocess(img, { size: 3 });
    t.same(out.shape, [1, 3, 3, 3]);
    const got = await out.data();
    const rr = [-1, 1.375, -1]; const kk = [1, 0, -1];
    const want: number[] = [];
    for (let c = 0; c < 3; c++) for (let y = 0; y < 3; y++) for (let x = 0; x < 3; x++) want.push(((rr[y] * kk[x] * (1 - c / 10) + 1) / 2 - CLIP_MEAN[c]) / CLIP_STD[c]);
    const e = errors(got, want);
    t.ok(e.maxAbs < 2e-6, `max |diff| ${e.maxAbs.toExponential(2)} against the hand-computed values`);
    t.ok(Math.abs(got[3] - ((1.375 * 1 + 1) / 2 - CLIP_MEAN[0]) / CLIP_STD[0]) < 2e-6, 'pixel (1, 0) of channel 0 holds the overshoot 1.375 (> 1) before normalizing');
    // Default size 224: a 224x224 input is only normalized.
    const flat = L.full([1, 3, 224, 224], 0.5, { backend });
    const n = await zero123ClipPreprocess(flat).data();
    t.ok(Math.abs(n[0] - (0.75 - CLIP_MEAN[0]) / CLIP_STD[0]) < 1e-6 && Math.abs(n[2 * 224 * 224] - (0.75 - CLIP_MEAN[2]) / CLIP_STD[2]) < 1e-6, '0.5 -> ((0.5 + 1) / 2 - mean) / std per channel');
    const up = zero123ClipPreprocess(L.full([2, 3, 5, 7], -1, { backend }));
    t.same(up.shape, [2, 3, 224, 224], 'any size is resized to 224x224');
    t.ok(Math.abs((await up.data())[12345] - (0 - CLIP_MEAN[0]) / CLIP_STD[0]) < 1e-5, 'a constant image stays constant (rows of the matrix sum to 1)');
  });
}

t.test('ClipVisionEncoder errors: bad configs (ConfigError naming the argument), wrong pixel shapes, weights of another config', async (t) => {
  const cfg = fx.config.args;
  t.match(thrown(() => new ClipVisionEncoder({ ...cfg, heads: 3 })), { name: 'ConfigError', option: 'heads' });
  t.match(thrown(() => new ClipVisionEncoder({ ...cfg, input_resolution: 30 })), { name: 'ConfigError', option: 'input_resolution' });
  t.match(thrown(() => new ClipVisionEncoder({ ...cfg, layers: 0 })), { name: 'ConfigError', option: 'layers' });
  t.match(thrown(() => new ClipVisionEncoder({ ...cfg, image_resolution: 32 } as unknown as ClipVisionConfig)), { name: 'ConfigError', option: 'image_resolution' });
  t.ok(thrown(() => new ClipVisionEncoder({ ...cfg, heads: 3 })) instanceof ConfigError);
  const enc = new ClipVisionEncoder(cfg, { backend: 'cpu' });
  t.match(thrown(() => enc.forward(L.zeros([1, 3, 224, 224]))), { name: 'ShapeError', message: /\[B, 3, 32, 32\].*got \[1,3,224,224\]/ });
  t.match(thrown(() => zero123ClipPreprocess(L.zeros([3, 8, 8]))), { name: 'ShapeError', message: /\[N, 3, H, W\]/ });
  const wider = new ClipVisionEncoder({ ...cfg, output_dim: 8 }, { backend: 'cpu' });
  await t.rejects(loadWeights(wider, `${dir}model.safetensors`, { prefix: ZERO123_CLIP_VISION_PREFIX }), StateDictError);
  await t.rejects(loadWeights(wider, `${dir}model.safetensors`, { prefix: ZERO123_CLIP_VISION_PREFIX }), { message: /visual\.proj: checkpoint \[32,16\] F32, model \[32,8\]/ });
  enc.dispose(); wider.dispose();
});
