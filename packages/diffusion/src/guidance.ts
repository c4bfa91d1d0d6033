/**
 * Posterior samplers as guidance rules for `sample`: DPS (pixel and latent), PSLD, ReSample.
 * All work on a batch of independent chains [N, ...]: norms are per chain and summed, so each chain gets
 * its own gradient (the originals run one chain, batch 1).
 *
 * Sources (read, not copied):
 * - DPS: DPS2022/diffusion-posterior-sampling @ effbde73, guided_diffusion/condition_methods.py:28-32, 79-87;
 *   configs/*_config.yaml (`scale`).
 * - PSLD: LituRout/PSLD @ d734647b, stable-diffusion/ldm/models/diffusion/psld.py:270-338;
 *   stable-diffusion/scripts/inverse.py:263-271 (gamma, omega defaults).
 * - ReSample: soominkwon/resample @ 3e332b2c, ldm/models/diffusion/ddim.py:189-441,
 *   ldm_inverse/condition_methods.py:29-32, 58-64.
 */
import * as L from '@latentdem/tensor';
import type { Tensor } from '@latentdem/tensor';
import type { Guide, GuideContext } from './sampler.js';
import type { Step } from './schedule.js';

/** Per-chain Euclidean norms of r [N, ...] -> [N] (torch.linalg.norm of one chain's residual). */
export function chainNorms(r: Tensor): Tensor {
  const axes = r.shape.slice(1).map((_, i) => i + 1);
  return axes.length ? r.square().sum(axes).sqrt() : r.abs();
}

/** Per-chain mean squared error (torch.nn.MSELoss of one chain) -> [N]. */
function chainMse(r: Tensor): Tensor {
  const axes = r.shape.slice(1).map((_, i) => i + 1);
  return axes.length ? r.square().mean(axes) : r.square();
}

type Scale = number | ((s: Step) => number);
const scaleAt = (v: Scale, s: Step): number => (typeof v === 'function' ? v(s) : v);

function checkY(name: string, y: Tensor | undefined): Tensor {
  if (!y) throw new Error(`${name}: the measurement y is required`);
  return y;
}

/** Fresh measurement noise added to A(x0) before the norm (PSLD's `noiser`, psld.py:320). */
function noisy(pred: Tensor, std: number, gen: L.Generator): Tensor {
  return std > 0 ? pred.add(L.randn(pred.shape, { generator: gen, backend: pred.backend }).mul(std)) : pred;
}

function checkShape(name: string, what: string, got: Tensor, want: Tensor): void {
  const g = got.shape.slice(1).join(), w = want.shape.slice(want.shape.length - got.shape.length + 1).join();
  if (g !== w) throw new RangeError(`${name}: ${what} has shape [${got.shape}] but y is [${want.shape}]`);
}

/** DPS step size: `scale: 0.3` (configs/gaussian_deblur_config.yaml, motion_deblur, super_resolution; inpainting uses 0.5). */
export const DPS_SCALE = 0.3;

export interface DpsOptions {
  /** measurement, [m...] or [N, m...] */
  y: Tensor;
  /** the forward operator A on a batch [N, ...] */
  forward: (x: Tensor) => Tensor;
  /** latent DPS: x0 = decode(z0_hat); pixel DPS when absent */
  decode?: (z: Tensor) => Tensor;
  /** zeta: x_{t-1} -= zeta * grad_{x_t} ||y - A(x0_hat)|| (un-squared norm: the released code's zeta/||r|| normalization) */
  scale?: Scale;
  /** fresh noise std added to A(x0_hat) (0 in DPS) */
  noiseStd?: number;
}

/**
 * DPS (Chung et al. 2023): x_{t-1} = x'_{t-1} - zeta grad_{x_t} ||y - A(x0_hat(x_t))||. The released code
 * differentiates the un-squared norm (condition_methods.py:31-32), i.e. the paper's zeta/||r|| times the
 * squared-norm gradient (up to a factor 2), and subtracts scale * grad (condition_methods.py:86).
 */
export function dps(o: DpsOptions): Guide {
  const y = checkY('dps', o.y);
  const scale = o.scale ?? DPS_SCALE;
  const g: Guide = (ctx: GuideContext) => {
    const x0 = o.decode ? o.decode(ctx.x0) : ctx.x0;
    const pred = noisy(o.forward(x0), o.noiseStd ?? 0, ctx.generator);
    checkShape('dps', 'A(x0)', pred, y);
    const loss = chainNorms(y.sub(pred)).sum();
    return ctx.xPrev.sub(ctx.grad(loss).mul(scaleAt(scale, ctx.step)));
  };
  g.needsGrad = true;
  return g;
}

/** PSLD weights: `--omega` default 1, `--gamma` default 1e-1 (PSLD scripts/inverse.py:263-271). */
export const PSLD_OMEGA = 1;
export const PSLD_GAMMA = 0.1;

export interface PsldOptions extends DpsOptions {
  /** D: latent -> pixels (SD: decoder(z / 0.18215)) */
  decode: (z: Tensor) => Tensor;
  /** E: pixels -> latent, a SAMPLE of the encoder posterior (SD: 0.18215 * sample(encoder(x)); psld.py:328-329) */
  encode: (x: Tensor, generator: L.Generator) => Tensor;
  /** A^T; the LatentDEM release's blur uses identity there (ALGORITHM.md step 11) */
  transpose?: (y: Tensor) => Tensor;
  omega?: number;
  gamma?: number;
  /** overall step on the gradient (1 in PSLD, psld.py:335; LatentDEM anneals it, ALGORITHM.md step 6) */
  scale?: Scale;
}

/**
 * PSLD (Rout et al. 2023), psld.py:318-335:
 *   L = omega ||A(D(z0)) + n - y|| + gamma ||E(A^T y + D(z0) - A^T A D(z0)) - z0||,  z_{t-1} = DDIM(z_t) - grad_{z_t} L
 * with un-squared norms, fresh noise n (`noiser`), and a sampled encoder posterior.
 */
export function psld(o: PsldOptions): Guide {
  const y = checkY('psld', o.y);
  if (!o.decode || !o.encode) throw new Error('psld: decode and encode are required (latent sampler)');
  const omega = o.omega ?? PSLD_OMEGA, gamma = o.gamma ?? PSLD_GAMMA, scale = o.scale ?? 1;
  if (!(omega >= 0) || !(gamma >= 0)) throw new RangeError(`psld: omega and gamma must be >= 0, got ${omega}, ${gamma}`);
  const At = o.transpose ?? ((v: Tensor) => v);
  const g: Guide = (ctx: GuideContext) => {
    const x0 = o.decode(ctx.x0);
    const ax0 = o.forward(x0);
    checkShape('psld', 'A(D(z0))', ax0, y);
    const meas = chainNorms(noisy(ax0, o.noiseStd ?? 0, ctx.generator).sub(y));
    const glued = At(y).add(x0.sub(At(ax0)));
    if (glued.shape.slice(1).join() !== x0.shape.slice(1).join()) throw new RangeError(`psld: A^T y has shape [${glued.shape}], D(z0) is [${x0.shape}] (give transpose)`);
    const glue = chainNorms(o.encode(glued, ctx.generator).sub(ctx.x0));
    const loss = meas.mul(omega).add(glue.mul(gamma)).sum();
    return ctx.xPrev.sub(ctx.grad(loss).mul(scaleAt(scale, ctx.step)));
  };
  g.needsGrad = true;
  return g;
}

/** AdamW defaults of torch.optim.AdamW (betas 0.9/0.999, eps 1e-8, weight_decay 1e-2), as ReSample uses it. */
const ADAMW = { b1: 0.9, b2: 0.999, eps: 1e-8, weightDecay: 1e-2 };

/**
 * argmin_v sum_chains MSE(y, f(v)) by AdamW from `init`, a fixed number of iterations (the original also
 * stops early when the loss < eps^2 or stalls: not reproduced, as that would need a read-back per step).
 */
export function adamwMinimize(init: Tensor, loss: (v: Tensor) => Tensor, lr: number, iters: number): Tensor {
  let v = init.detach().clone(), m = L.zerosLike(v), s = L.zerosLike(v);
  for (let k = 1; k <= iters; k++) {
    const out = L.tidy(() => {
      const [g] = L.grad(loss)(v);
      const m2 = m.mul(ADAMW.b1).add(g.mul(1 - ADAMW.b1));
      const s2 = s.mul(ADAMW.b2).add(g.square().mul(1 - ADAMW.b2));
      const step = m2.div(1 - ADAMW.b1 ** k).div(s2.div(1 - ADAMW.b2 ** k).sqrt().add(ADAMW.eps));
      return [v.mul(1 - lr * ADAMW.weightDecay).sub(step.mul(lr)), m2, s2];
    });
    v.dispose(); m.dispose(); s.dispose();
    [v, m, s] = out;
  }
  m.dispose(); s.dispose();
  return v;
}

/** ReSample constants, soominkwon/resample ldm/models/diffusion/ddim.py. */
export const RESAMPLE = {
  /** DPS step each iteration: scale = a_t * 0.5 (ddim.py:259) */
  dpsScale: (s: Step): number => 0.5 * s.a,
  /** time-travel length: inter_timesteps = 5 (ddim.py:206, overriding the argument's 10) */
  interTimesteps: 5,
  /** hard consistency every 10th step (ddim.py:271) */
  every: 10,
  /** three stages: none in the first third, pixel opt in the second, latent opt in the last (ddim.py:264-268, 294, 310) */
  splits: 3,
  /** sigma = 40 (1 - a_prev)/(1 - a_t)(1 - a_t/a_prev) (ddim.py:289, 318) */
  gamma: 40,
  /** latent_optimization: AdamW lr 5e-3, max_iters 500 (ddim.py:373, 394) */
  latentLr: 5e-3, latentIters: 500,
  /** pixel_optimization: AdamW lr 1e-2, max_iters 2000 (ddim.py:337, 353) */
  pixelLr: 1e-2, pixelIters: 2000,
};

export interface ResampleOptions {
  y: Tensor;
  forward: (x: Tensor) => Tensor;
  decode: (z: Tensor) => Tensor;
  /** pixel -> latent for the second stage (ddim.py:304, encode_first_stage); without it the latent optimization runs there too */
  encode?: (x: Tensor, generator: L.Generator) => Tensor;
  dpsScale?: Scale;
  interTimesteps?: number;
  every?: number;
  splits?: number;
  gamma?: number;
  latentLr?: number; latentIters?: number;
  pixelLr?: number; pixelIters?: number;
  /** run the final latent optimization on the last sample (ddim.py:327-330); default true */
  finalOptimization?: boolean;
}

/**
 * ReSample's stochastic resampling (ddim.py:435-441): x ~ N(mean, var) with
 * mean = (sigma sqrt(a) x0 + (1 - a) x_t)/(sigma + 1 - a), var = 1/(1/sigma + 1/(1 - a)).
 */
export function stochasticResample(x0: Tensor, xt: Tensor, a: number, sigma: number, gen: L.Generator): Tensor {
  const mean = x0.mul(sigma * Math.sqrt(a)).add(xt.mul(1 - a)).div(sigma + 1 - a);
  const std = Math.sqrt(1 / (1 / sigma + 1 / (1 - a)));
  return mean.add(L.randn(x0.shape, { generator: gen, backend: x0.backend }).mul(std));
}

/**
 * ReSample (Song et al. 2024): each step a latent DPS step (scale 0.5 a_t) on ReSample's x0 estimate
 * (x_t - (1 - a_t) eps)/sqrt(a_t) (ddim.py:541, as released); every 10th step in the last two thirds,
 * time-travel `interTimesteps` unguided DDIM steps ahead, solve the hard data-consistency problem from that
 * x0 (pixel space in the middle third, latent space in the last), and resample x_{t-1} around it.
 */
export function resample(o: ResampleOptions): Guide {
  const y = checkY('resample', o.y);
  if (!o.decode) throw new Error('resample: decode is required');
  const c = { ...RESAMPLE, ...Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) } as typeof RESAMPLE & ResampleOptions;
  const latentLoss = (z: Tensor): Tensor => chainMse(y.sub(o.forward(o.decode(z)))).sum();
  const pixelLoss = (x: Tensor): Tensor => chainMse(y.sub(o.forward(x))).sum();
  const g: Guide = (ctx: GuideContext) => {
    const s = ctx.step, steps = ctx.schedule.steps, total = steps.length;
    // ReSample's pseudo_x0 (ddim.py:541): (x - (1 - a) eps)/sqrt(a)
    const pseudo = ctx.x.sub(ctx.eps.mul(1 - s.a)).div(Math.sqrt(s.a));
    const pred = o.forward(o.decode(pseudo));
    checkShape('resample', 'A(D(z0))', pred, y);
    let img = ctx.xPrev.sub(ctx.grad(chainNorms(y.sub(pred)).sum()).mul(scaleAt(c.dpsScale, s)));
    const split = Math.floor(total / c.splits);
    if (s.index <= total - split && s.index > 0 && s.index % c.every === 0) {
      const xt = img.detach();
      let z0 = L.noGrad(() => {
        let cur = xt, p = pseudo.detach();
        for (let k = s.i; k < Math.min(s.i + c.interTimesteps, total - 1); k++) {
          const sk = steps[k + 1];
          const { eps, x0 } = ctx.denoise(cur, sk);
          p = cur.sub(eps.mul(1 - sk.a)).div(Math.sqrt(sk.a));
          cur = ctx.schedule.ddimStep(x0, eps, sk, 0);
        }
        return p;
      });
      if (s.index >= split && o.encode) {
        const xOpt = adamwMinimize(L.noGrad(() => o.decode(z0)), pixelLoss, c.pixelLr, c.pixelIters);
        z0 = L.noGrad(() => o.encode!(xOpt, ctx.generator));
      } else {
        z0 = adamwMinimize(z0, latentLoss, c.latentLr, c.latentIters);
      }
      const sigma = c.gamma * (1 - s.aPrev) / (1 - s.a) * (1 - s.a / s.aPrev);
      img = L.noGrad(() => stochasticResample(z0, xt, s.aPrev, sigma, ctx.generator));
    }
    return img;
  };
  g.needsGrad = true;
  if (o.finalOptimization ?? true) g.finish = (x) => adamwMinimize(x, latentLoss, c.latentLr, c.latentIters);
  return g;
}
