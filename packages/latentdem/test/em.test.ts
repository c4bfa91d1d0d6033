/**
 * The diffusion-EM loop and LatentDEM deblurring on problems with known answers:
 * - a closed-form blind deblurring problem (stationary Gaussian latent prior with its exact noise prediction,
 *   linear decoder, circular blur): the EM must recover a symmetric blur kernel from a delta, and a flipped
 *   guidance sign, a missing M-step or missing guidance must miss the bound;
 * - determinism (same seed, same result on a backend), the per-step callback, the skip-gradient and anneal
 *   schedules as the loop applies them, the order of E and M;
 * - the device re-centring against the host one; input errors.
 */
import t from 'tap';
import * as L from '@latentdem/tensor';
import type { Tensor } from '@latentdem/tensor';
import { testBackends } from '../../tensor/test/helpers.js';
import { em } from '../src/em.js';
import { deblur, type DeblurOptions } from '../src/deblur/deblur.js';
import { kernelMse } from '../src/deblur/metrics.js';
import { recenterKernel, recenterKernelTensor } from '../src/deblur/recenter.js';
import { GAUSS, gaussProblem, type GaussProblem } from '../src/testing/gaussian-deblur.js';
import { isFullStep, releaseAnnealScale } from '../src/deblur/schedules.js';

const { size: N, channels: C, kernelSize: KS, sigma: SIGMA } = GAUSS;

async function runGauss(p: GaussProblem, o: Partial<DeblurOptions> = {}): Promise<{ kernel: Float32Array; image: Float32Array; mse: number; record: Awaited<ReturnType<typeof deblur>>['record'] }> {
  const r = await deblur({
    prior: p.prior, y: p.y, steps: 200, kernelSize: KS, kernelPrior: 'none', sigma: SIGMA, stepSize: 2, anneal: 'none',
    recenter: false, seed: 1, ...o,
  });
  const kernel = Float32Array.from(await r.kernel.data());
  const image = Float32Array.from(await r.image.data());
  r.kernel.dispose(); r.image.dispose();
  return { kernel, image, mse: kernelMse(kernel, p.kTrue), record: r.record };
}

// Measured (cpu and webgpu alike, 200 steps): recovered 3.5e-4; delta 1.7e-2; guidance sign flipped 1.7e-2;
// M-step removed 1.7e-2; guidance removed 5.5e-3. The bound sits between.
const KERNEL_MSE_BOUND = 1.5e-3;

t.test('closed-form blind deblurring: the EM recovers a blur kernel from a delta; planted bugs miss the bound', async (t) => {
  const backends = await testBackends();
  for (const backend of backends) {
    const p = gaussProblem(backend);
    const ok = await runGauss(p);
    t.ok(ok.mse < KERNEL_MSE_BOUND, `${backend.name}: kernel MSE ${ok.mse.toExponential(2)} < ${KERNEL_MSE_BOUND} (delta: ${p.deltaMse.toExponential(2)})`);
    t.equal(ok.record.steps.length, 200);
    t.ok(ok.record.steps.every((s) => s.full && Number.isFinite(s.measurement) && Number.isFinite(s.gluing)), 'every step full, losses recorded');
    const first = ok.record.steps[0].measurement!, last = ok.record.steps[199].measurement!;
    t.ok(last < first / 5, `${backend.name}: measurement loss falls ${first.toFixed(2)} -> ${last.toFixed(2)}`);
    const again = await runGauss(p);
    t.same(Array.from(again.kernel), Array.from(ok.kernel), `${backend.name}: same seed, same kernel, bit for bit`);
    t.same(Array.from(again.image), Array.from(ok.image), `${backend.name}: same seed, same image, bit for bit`);
    // The planted bugs are the same code on every backend: run them on the first (cpu), where steps are cheapest.
    if (backend === backends[0]) {
      const flipped = await runGauss(p, { stepSize: -2 });
      t.ok(flipped.mse > KERNEL_MSE_BOUND, `${backend.name}: guidance sign flipped: MSE ${flipped.mse.toExponential(2)} misses the bound`);
      const noM = await runGauss(p, { hqs: { iterations: 0 } });
      t.ok(noM.mse > KERNEL_MSE_BOUND, `${backend.name}: no M-step: MSE ${noM.mse.toExponential(2)} misses the bound`);
      const noGuide = await runGauss(p, { stepSize: 0 });
      t.ok(noGuide.mse > KERNEL_MSE_BOUND, `${backend.name}: no guidance: MSE ${noGuide.mse.toExponential(2)} misses the bound`);
      const other = await runGauss(p, { seed: 2 });
      t.not(Array.from(other.image).join(), Array.from(ok.image).join(), 'another seed gives another sample');
    }
    p.dispose();
  }
});

t.test('closed-form blind deblurring with the ReSample E-step', async (t) => {
  const backend = (await testBackends())[0];
  const p = gaussProblem(backend);
  // Shorter hard-consistency solves than ReSample's 2000 / 500 (as in @latentdem/diffusion's posterior tests).
  const o: Partial<DeblurOptions> = { steps: 100, eStep: 'resample', resample: { pixelIters: 200, latentIters: 100 } };
  const ok = await runGauss(p, o);
  t.ok(ok.mse < KERNEL_MSE_BOUND, `kernel MSE ${ok.mse.toExponential(2)} < ${KERNEL_MSE_BOUND} (delta: ${p.deltaMse.toExponential(2)})`);
  const noM = await runGauss(p, { ...o, hqs: { iterations: 0 } });
  t.ok(noM.mse > KERNEL_MSE_BOUND, `no M-step: MSE ${noM.mse.toExponential(2)} misses the bound`);
  p.dispose();
});

t.test('em(): callback fields, skip schedule, anneal values, and the order of E and M', async (t) => {
  const backend = (await testBackends())[0];
  const p = gaussProblem(backend);
  const seen: { i: number; index: number; full: boolean; anneal: number; hasX0: boolean; kernelSum: number }[] = [];
  await deblur({
    prior: p.prior, y: p.y, steps: 1000, kernelSize: KS, kernelPrior: 'none', sigma: SIGMA, stepSize: 0.01, anneal: 'release', recenter: 'origin',
    skip: { every: 16, cutoff: 40 }, hqs: { iterations: 1 },
    onStep: async (s) => {
      seen.push({ i: s.i, index: s.index, full: s.full, anneal: s.anneal, hasX0: s.x0 !== null, kernelSum: 0 });
      if (s.i % 250 === 0) seen[seen.length - 1].kernelSum = Array.from(await s.kernel.data()).reduce((a, b) => a + b, 0);
      if (s.z0.shape.join() !== `1,${C},${N},${N}`) t.fail(`z0 shape [${s.z0.shape}]`);
    },
  });
  t.equal(seen.length, 1000);
  const full = seen.filter((s) => s.full);
  t.equal(full.length, 101, '101 of 1000 steps run in full (index % 16 == 0 or index <= 40)');
  t.ok(seen.every((s) => s.full === isFullStep(s.index, { every: 16, cutoff: 40 })), 'full steps are where isFullStep says');
  t.ok(seen.every((s) => s.hasX0 === s.full), 'x0 is decoded exactly on full steps');
  t.ok(full.every((s) => Math.abs(s.anneal - releaseAnnealScale(s.index)) < 1e-12), 'full steps get the release anneal factor of their index');
  t.ok(seen.filter((s) => s.i % 250 === 0).every((s) => Math.abs(s.kernelSum - 1) < 1e-5), 'the kernel stays a sum-1 kernel');

  // Generic em(): the M-step result reaches the E-step of the same step with 'm-first' and the next step with 'e-first'.
  for (const order of ['m-first', 'e-first'] as const) {
    const got: number[] = [];
    const r = await em<{ c: Tensor }>({
      eps: (z) => z.mul(0), steps: 5, shape: [1, 1, 2, 2], seed: 0, backend, order,
      params: { c: L.tensor([0], { shape: [1], backend }) },
      eStep: (ctx) => ({ zPrev: ctx.zPrev, losses: { c: ctx.params.c.sum() } }),
      mStep: (ctx) => ({ c: ctx.params.c.add(1) }),
      onStep: (s) => { got.push(s.losses.c); },
    });
    t.same(got, order === 'm-first' ? [1, 2, 3, 4, 5] : [0, 1, 2, 3, 4], `${order}: the E-step sees the parameters of the right M-step`);
    t.same(Array.from(await r.params.c.data()), [5]);
    r.z.dispose(); r.params.c.dispose();
  }
  p.dispose();
});

t.test('recenterKernelTensor equals the host recenterKernel on each backend', async (t) => {
  const h = 16;
  const k = new Float32Array(h * h);
  for (let i = 0; i < h; i++) for (let j = 0; j < h; j++) k[i * h + j] = Math.exp(-((i - 4.3) ** 2) / 3 - ((j - 10.6) ** 2) / 5) + (i === 9 && j === 2 ? 0.3 : 0);
  for (const target of ['origin', 'release'] as const) {
    const want = recenterKernel(k, h, h, { target });
    for (const backend of await testBackends()) {
      const got = recenterKernelTensor(L.tensor(k, { shape: [h, h], backend }), { target });
      const g = await got.data(); got.dispose();
      let worst = 0; for (let i = 0; i < g.length; i++) worst = Math.max(worst, Math.abs(g[i] - want[i]));
      t.ok(worst < 2e-6, `${target}, ${backend.name}: max |device - host| = ${worst.toExponential(1)}`);
    }
  }
});

t.test('deblur: bad inputs are named', async (t) => {
  const backend = (await testBackends())[0];
  const p = gaussProblem(backend);
  const cases: [string, Partial<DeblurOptions>, RegExp][] = [
    ['2-D measurement', { y: L.zeros([N, N], { backend }) }, /\[3, H, W\]/],
    ['kernel larger than the image', { kernelSize: 40 }, /kernel size 40 exceeds/],
  ];
  for (const [what, o, re] of cases) {
    const err = await deblur({ prior: p.prior, y: p.y, steps: 2, kernelSize: KS, kernelPrior: 'none', ...o }).then(() => null, (e: Error) => e);
    t.ok(err instanceof L.ShapeError && re.test(err.message), `${what}: ${err?.message}`);
  }
  const odd = { ...p.prior, factor: 8 };
  const err = await deblur({ prior: odd, y: p.y.narrow(1, 0, 30), steps: 2, kernelSize: KS, kernelPrior: 'none' }).then(() => null, (e: Error) => e);
  t.ok(err instanceof L.ShapeError && /multiple of 8 \(the prior's factor 8/.test(err.message), `not a multiple of the factor: ${err?.message}`);
  p.dispose();
});
