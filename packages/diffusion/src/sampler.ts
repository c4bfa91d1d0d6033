/**
 * The sampling loop: a noise model, a schedule and an optional guidance rule.
 *
 *   for each step t -> tPrev:
 *     eps   = model(x, t, cond)            (classifier-free guidance: eps_u + s (eps_c - eps_u))
 *     x0    = schedule.predictX0(x, eps)
 *     xPrev = schedule.ddimStep(x0, eps)   (or the DDPM ancestral step)
 *     xPrev = guide({ x, eps, x0, xPrev, ... })   DPS / PSLD / ReSample plug in here
 *
 * A guidance rule is a function returning the new x_{t-1}. If it sets `needsGrad`, the model runs with
 * x_t watched and `grad(loss)` returns d loss / d x_t through the model (DPS-style). Each step runs in a
 * `tidy` scope and only x survives it, so memory stays flat however many steps run.
 */
import * as L from '@latentdem/tensor';
import type { Tensor } from '@latentdem/tensor';
import { Schedule, type Step } from './schedule.js';

/** eps-prediction network (or whatever `schedule.prediction` says it predicts). */
export type NoiseModel = (x: Tensor, t: number, cond?: unknown) => Tensor;

export interface GuideContext {
  /** x_t; when the guide `needsGrad`, a leaf watched by `grad` */
  x: Tensor;
  eps: Tensor;
  /** Tweedie estimate of x_0 from x_t (attached to x_t's graph when `needsGrad`) */
  x0: Tensor;
  /** the unguided update x_{t-1} (detached) */
  xPrev: Tensor;
  step: Step;
  schedule: Schedule;
  generator: L.Generator;
  /** d loss / d x_t (loss: a one-element tensor built from x0 or eps); only when the guide `needsGrad` */
  grad(loss: Tensor): Tensor;
  /** eps and x0 at another step (no grad): for rules that move along the trajectory (ReSample) */
  denoise(x: Tensor, step: Step): { eps: Tensor; x0: Tensor };
}

export interface Guide {
  (ctx: GuideContext): Tensor;
  /** run the model with autodiff on x_t so `ctx.grad` works */
  needsGrad?: boolean;
  /** applied once to the final sample (ReSample's last latent optimization) */
  finish?: (x: Tensor, generator: L.Generator) => Tensor;
}

export interface StepInfo { step: Step; x: Tensor; x0: Tensor }

export interface SampleOptions {
  model: NoiseModel;
  /** a Schedule, or `steps` (+ `eta`) for a default SD DDIM schedule */
  schedule?: Schedule;
  steps?: number;
  eta?: number;
  /** the starting noise x_T; else drawn with `shape` from `generator` (or `seed`) on `backend` */
  xT?: Tensor;
  shape?: readonly number[];
  generator?: L.Generator;
  seed?: number;
  backend?: L.BackendName | L.Backend;
  cond?: unknown;
  /** classifier-free guidance: with `uncond` and a scale != 1, eps = eps_u + s (eps_c - eps_u) (CompVis ddim.py:178) */
  uncond?: unknown;
  guidanceScale?: number;
  guide?: Guide;
  /** called inside each step; the tensors are valid only during the call */
  onStep?: (info: StepInfo) => void;
}

/** eps with classifier-free guidance (two model calls when a scale != 1 and an `uncond` are given). */
export function cfgEps(model: NoiseModel, x: Tensor, t: number, cond: unknown, uncond: unknown, scale: number): Tensor {
  if (uncond === undefined || scale === 1) return model(x, t, cond);
  const eu = model(x, t, uncond), ec = model(x, t, cond);
  return eu.add(ec.sub(eu).mul(scale));
}

/** Runs the reverse process and returns x_0 (a tensor the caller owns). */
export function sample(o: SampleOptions): Tensor {
  if (!o.model) throw new Error('sample: a noise model is required');
  const schedule = o.schedule ?? new Schedule({ steps: o.steps ?? 50, eta: o.eta ?? 0 });
  if (o.schedule && o.steps !== undefined && o.steps !== schedule.length) throw new RangeError(`sample: steps (${o.steps}) disagrees with the schedule's ${schedule.length} steps`);
  const eta = o.eta ?? schedule.eta;
  if (!(eta >= 0)) throw new RangeError(`sample: eta must be >= 0, got ${eta}`);
  const generator = o.generator ?? new L.Generator(o.seed ?? 0);
  const scale = o.guidanceScale ?? 1;
  let x: Tensor;
  if (o.xT) {
    if (o.shape && o.shape.join() !== o.xT.shape.join()) throw new RangeError(`sample: shape [${o.shape}] does not match x_T [${o.xT.shape}]`);
    x = o.xT;
  } else {
    if (!o.shape) throw new Error('sample: give x_T or a shape');
    x = L.randn(o.shape, { generator, backend: o.backend });
  }
  let own = !o.xT;   // x_T belongs to the caller
  const eps = (xt: Tensor, s: Step): Tensor => schedule.toEps(cfgEps(o.model, xt, s.t, o.cond, o.uncond, scale), xt, s);
  const denoise = (xt: Tensor, s: Step): { eps: Tensor; x0: Tensor } => L.noGrad(() => {
    const e = eps(xt, s);
    return { eps: e, x0: schedule.predictX0(xt, e, s) };
  });
  for (const s of schedule.steps) {
    const next = L.tidy(() => {
      const guide = o.guide;
      const xt = guide?.needsGrad ? x.detach().requireGrad() : x;
      const run = (): { e: Tensor; x0: Tensor } => { const e = eps(xt, s); return { e, x0: schedule.predictX0(xt, e, s) }; };
      const { e, x0 } = guide?.needsGrad ? run() : L.noGrad(run);
      let xPrev = L.noGrad(() => schedule.ddimStep(x0.detach(), e.detach(), s, eta, generator, xt.detach()));
      if (guide) {
        const grad = (loss: Tensor): Tensor => {
          if (!guide.needsGrad) throw new Error('guide: ctx.grad needs the guide to set needsGrad = true');
          loss.backward();
          const g = xt.grad;
          if (!g) throw new Error('guide: the loss does not depend on x_t');
          xt.grad = null;
          const c = g.clone(); g.dispose();
          return c;
        };
        xPrev = guide({ x: xt, eps: e, x0, xPrev, step: s, schedule, generator, grad, denoise });
        if (xPrev.shape.join() !== x.shape.join()) throw new RangeError(`guide returned shape [${xPrev.shape}], expected [${x.shape}]`);
      }
      o.onStep?.({ step: s, x: xPrev, x0 });
      return xPrev.detach();
    });
    if (own) x.dispose();
    x = next; own = true;
  }
  if (o.guide?.finish) {
    const fin = o.guide.finish;
    const out = L.tidy(() => fin(x, generator).detach());
    if (own) x.dispose();
    x = out;
  }
  return x;
}
