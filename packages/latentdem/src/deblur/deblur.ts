/**
 * LatentDEM blind deblurring: `em()` with the blur operator A_k(x) = k (*) x (circular, p2o centring), the
 * release's E-step and its M-step. Sources: ../shared/data/latentdem-release/ALGORITHM.md (release
 * AI4ImagingLab/LatentDEM @ c7eb775c, SD/ldm/models/diffusion/psld.py and SD/src/emutil/utils_agem.py; the
 * line numbers below are the release's, as ALGORITHM.md cites them).
 *
 * E-step ('psld', psld.py:232-361): DDIM with eta 0; z0 = Tweedie; x0 = D(z0) differentiable;
 *   L = s (omega ||A_k(x0) + n - y|| + gamma ||E(y + x0 - A_k(x0)) - z0||), un-squared norms, n fresh
 *   N(0, sigma^2), E a posterior sample, omega 1, gamma 0.1; z_{t-1} = DDIM(z_t) - step * dL/dz_t, step 1;
 *   s the annealing factor. The M-step runs first (psld.py:325-331), so the loss uses the new kernel.
 * E-step ('resample'): @latentdem/diffusion's ReSample guidance with A_k, its DPS scale times s.
 * M-step: `estimateKernel` (HQS, release constants: lambda 1, beta 5e6, alpha = sigma^2 beta, 20 iterations,
 *   64 x 64, delta init, warm start) with latentdem's kernel denoiser at its calibrated lambda by default,
 *   then re-centring (`recenterKernelTensor`).
 */
import * as L from '@latentdem/tensor';
import type { Tensor } from '@latentdem/tensor';
import { resample, Schedule, type GuideContext, type ResampleOptions } from '@latentdem/diffusion';
import type { LatentPrior } from '../prior.js';
import { em, type EStepContext, type EmParams, type EmStepInfo } from '../em.js';
import { annealScale, isFullStep, type AnnealKind, type PaperAnnealOptions, type SkipGradientOptions } from './schedules.js';
import { estimateKernel, HQS_DEFAULTS, type HqsOptions, type KernelPrior } from './hqs.js';
import { recenterKernelTensor } from './recenter.js';
import { dncnnPrior, KERNEL_DNCNN_LAMBDA, loadDnCNN } from './dncnn.js';
import { fileURLToPath } from 'node:url';

/** PSLD weights as the LatentDEM release sets them: omega 1, gamma 0.1 (inference.py:267-278), step 1 (psld.py:360-361). */
export const RELEASE_ESTEP = { omega: 1, gamma: 0.1, stepSize: 1, sigma: 0.02 } as const;

/** The shipped kernel denoiser (weights/dncnn-kernel, trained here; model card there). */
export const DEFAULT_KERNEL_DENOISER = fileURLToPath(new URL('../../../../weights/dncnn-kernel/dncnn-kernel.safetensors', import.meta.url));

/** The blur operator x [..., H, W] -> k (*) x, circular with the p2o centring, differentiable in x (k is fixed). */
export function blurOperator(k: Tensor, hw: readonly [number, number]): (x: Tensor) => Tensor {
  const [or, oi] = L.noGrad(() => L.psf2otf(k.detach(), [hw[0], hw[1]]));
  return (x: Tensor) => {
    const [xr, xi] = L.fft2(x);
    const [yr, yi] = L.complexMul(xr, xi, or, oi);
    return L.ifft2(yr, yi)[0];
  };
}

const frob = (r: Tensor): Tensor => r.square().sum().sqrt();

export interface DeblurOptions {
  prior: LatentPrior;
  /** The measurement [3, H, W] in [-1, 1] on the prior's backend; H and W multiples of prior.factor. */
  y: Tensor;
  /** DDIM steps (release: 1000). */
  steps?: number;
  seed?: number;
  /** 'release' (default), 'paper' or 'none'. */
  anneal?: AnnealKind;
  /** Skip-gradient; false (default, as the release) runs every step in full. */
  skip?: SkipGradientOptions | false;
  /** 'psld' (release, default) or 'resample'. */
  eStep?: 'psld' | 'resample';
  /** ReSample settings (iterations, learning rates...; @latentdem/diffusion's RESAMPLE defaults) for eStep 'resample'. */
  resample?: Partial<Omit<ResampleOptions, 'y' | 'forward' | 'decode' | 'encode'>>;
  /** Estimated kernel side (default 64). */
  kernelSize?: number;
  /** Measurement noise std in the units of y (release: 0.02 on the [-1, 1] image). */
  sigma?: number;
  /** The M-step's kernel prior: 'dncnn' (latentdem's trained denoiser, default), 'none', or a KernelPrior (e.g. the release's FDnCNN through dncnnPrior). */
  kernelPrior?: 'dncnn' | 'none' | KernelPrior;
  /** Re-centring after each M-step: 'origin' (default), 'release', or false. */
  recenter?: 'origin' | 'release' | false;
  /** Paper-anneal options (range of the linear 10 -> 1 ramp). */
  paperAnneal?: PaperAnnealOptions;
  /** PSLD weights (release: omega 1, gamma 0.1, step 1). */
  omega?: number;
  gamma?: number;
  stepSize?: number;
  /** Further HQS options (iterations, beta, lambda, channels...). */
  hqs?: HqsOptions;
  /** The initial kernel [ks, ks] (default a delta at the centre). */
  initKernel?: Tensor;
  /** z_T (default drawn from the seed). */
  zT?: Tensor;
  /** Called after every step; tensors are valid only during the call. May be async. */
  onStep?: (s: DeblurStep) => void | Promise<void>;
}

/** What `onStep` sees: em()'s step information, with the kernel in place of the parameter record. */
export interface DeblurStep extends Omit<EmStepInfo<{ kernel: Tensor }>, 'params' | 'mStepSeconds' | 'losses'> {
  kernel: Tensor;
  losses: { measurement?: number; gluing?: number };
}

export interface DeblurStepRecord { i: number; index: number; t: number; full: boolean; measurement?: number; gluing?: number; seconds: number }

export interface DeblurRecord {
  settings: Record<string, unknown>;
  steps: DeblurStepRecord[];
  seconds: { total: number; full: number; prior: number; mStep: number };
}

export interface DeblurResult {
  /** The restored image [3, H, W] in [-1, 1] (D(z_0)), owned by the caller. */
  image: Tensor;
  /** The kernel [ks, ks], >= 0, sum 1, owned by the caller. */
  kernel: Tensor;
  record: DeblurRecord;
}

export async function deblur(o: DeblurOptions): Promise<DeblurResult> {
  const op = 'deblur';
  const prior = o.prior;
  const y = o.y;
  if (!prior) throw new TypeError(`${op}: a prior is required`);
  if (y.rank !== 3 || y.shape[0] !== 3) throw new L.ShapeError(op, `needs a measurement [3, H, W] in [-1, 1], got [${y.shape}]`);
  const [, H, W] = y.shape;
  const f = prior.factor;
  const m = f * (prior.latentMultiple ?? 1);
  if (H % m !== 0 || W % m !== 0) throw new L.ShapeError(op, `the measurement's ${H}x${W} must be a multiple of ${m} (the prior's factor ${f} times its latent multiple ${prior.latentMultiple ?? 1}; pad it: prepareMeasurement)`);
  const ks = o.kernelSize ?? HQS_DEFAULTS.kernelSize;
  if (ks > H || ks > W) throw new L.ShapeError(op, `kernel size ${ks} exceeds the ${H}x${W} image`);
  const schedule = new Schedule({ steps: o.steps ?? 1000, eta: 0 });
  const steps = schedule.length;
  const annealKind: AnnealKind = o.anneal ?? 'release';
  const skip = o.skip ?? false;
  const sigma = o.sigma ?? RELEASE_ESTEP.sigma;
  const omega = o.omega ?? RELEASE_ESTEP.omega, gamma = o.gamma ?? RELEASE_ESTEP.gamma, stepSize = o.stepSize ?? RELEASE_ESTEP.stepSize;
  const eStepKind = o.eStep ?? 'psld';
  const recenter = o.recenter ?? 'origin';
  // Schedules are functions of the DDIM index of a 1000-step run; a shorter run maps its index onto that range.
  const indexScale = 1000 / steps;
  const at = (index: number): number => Math.round(index * indexScale);
  let kernelPrior: KernelPrior | null = null;
  let lambda = o.hqs?.lambda;
  let ownNet: { parameters(): Tensor[] } | null = null;
  const kp = o.kernelPrior ?? 'dncnn';
  if (kp === 'dncnn') {
    const net = await loadDnCNN(DEFAULT_KERNEL_DENOISER, { backend: y.backend });
    ownNet = net; kernelPrior = dncnnPrior(net); lambda ??= KERNEL_DNCNN_LAMBDA;
  } else if (typeof kp === 'function') kernelPrior = kp;
  const hqs: HqsOptions = { ...o.hqs, kernelSize: ks, sigma, lambda: lambda ?? HQS_DEFAULTS.lambda, prior: kernelPrior ?? 'none' };
  const y4 = y.reshape([1, 3, H, W]);
  const init = o.initKernel ?? L.tensor(Float32Array.from({ length: ks * ks }, (_, q) => (q === Math.floor(ks / 2) * ks + Math.floor(ks / 2) ? 1 : 0)), { shape: [ks, ks], backend: y.backend });
  const records: DeblurStepRecord[] = [];
  const seconds = { total: 0, full: 0, prior: 0, mStep: 0 };
  const t0 = performance.now();

  const psldStep = (ctx: EStepContext<{ kernel: Tensor }>) => {
    const A = blurOperator(ctx.params.kernel, [H, W]);
    const ax0 = A(ctx.x0);
    const noise = sigma > 0 ? L.randn(ax0.shape, { generator: ctx.generator, backend: ax0.backend }).mul(sigma) : null;
    const measurement = frob((noise ? ax0.add(noise) : ax0).sub(y4));                       // psld.py:338-344
    const glued = y4.add(ctx.x0.sub(ax0));                                                   // psld.py:347
    const gluing = frob(prior.encode(glued, ctx.generator).sub(ctx.z0));                     // psld.py:347-354
    const loss = measurement.mul(omega).add(gluing.mul(gamma)).mul(ctx.anneal);              // psld.py:356
    const zPrev = ctx.zPrev.sub(ctx.grad(loss).mul(stepSize));                               // psld.py:360-361
    return { zPrev, losses: { measurement, gluing } };
  };
  const resampleStep = (ctx: EStepContext<{ kernel: Tensor }>) => {
    const A = blurOperator(ctx.params.kernel, [H, W]);
    const guide = resample({ ...o.resample, y: y4, forward: A, decode: prior.decode, encode: prior.encode, dpsScale: (s) => 0.5 * s.a * ctx.anneal, finalOptimization: false });
    const gctx: GuideContext = { x: ctx.zt, eps: ctx.eps, x0: ctx.z0, xPrev: ctx.zPrev, step: ctx.step, schedule: ctx.schedule, generator: ctx.generator, grad: ctx.grad, denoise: ctx.denoise };
    const measurement = L.noGrad(() => frob(A(ctx.x0.detach()).sub(y4)));
    return { zPrev: guide(gctx), losses: { measurement } };
  };

  const result = await em<{ kernel: Tensor } & EmParams>({
    eps: prior.eps,
    decode: prior.decode,
    schedule,
    zT: o.zT,
    shape: [1, prior.latentChannels, H / f, W / f],
    seed: o.seed ?? 0,
    backend: y.backend,
    params: { kernel: init },
    // Skip-gradient counts in this run's steps: every `every` steps, plus the last `cutoff` (default the release's
    // 40 of 1000, scaled to the run's length).
    isFull: skip === false ? undefined : (index) => isFullStep(index, { every: skip.every ?? 16, cutoff: skip.cutoff ?? Math.round(40 / indexScale) }),
    anneal: (index) => annealScale(annealKind, at(index), o.paperAnneal),
    eStep: eStepKind === 'resample' ? resampleStep : psldStep,
    mStep: ({ x0, params }) => {
      const k = estimateKernel(x0.reshape([3, H, W]), y, { ...hqs, init: params.kernel });
      if (recenter === false) return { kernel: k };
      const c = recenterKernelTensor(k, { target: recenter });
      k.dispose();
      return { kernel: c };
    },
    onStep: async (s) => {
      records.push({ i: s.i, index: s.index, t: s.t, full: s.full, ...s.losses, seconds: s.seconds });
      if (s.full) { seconds.full += s.seconds; seconds.mStep += s.mStepSeconds; } else seconds.prior += s.seconds;
      if (o.onStep) {
        const { params, mStepSeconds: _m, ...rest } = s;
        await o.onStep({ ...rest, kernel: params.kernel });
      }
    },
  });
  if (!o.initKernel) init.dispose();
  if (ownNet) for (const q of ownNet.parameters()) q.dispose();
  const image = L.noGrad(() => L.tidy(() => prior.decode(result.z).reshape([3, H, W])));
  result.z.dispose();
  seconds.total = (performance.now() - t0) / 1000;
  const settings = {
    prior: prior.name, size: [H, W], steps, seed: o.seed ?? 0, anneal: annealKind, skip, eStep: eStepKind, kernelSize: ks, sigma,
    omega, gamma, stepSize, recenter, kernelPrior: typeof kp === 'function' ? 'custom' : kp,
    hqs: { iterations: hqs.iterations ?? HQS_DEFAULTS.iterations, beta: hqs.beta ?? HQS_DEFAULTS.beta, lambda: hqs.lambda, channels: hqs.channels ?? 'mean' },
  };
  return { image, kernel: result.params.kernel, record: { settings, steps: records, seconds } };
}
