/**
 * The generic diffusion-EM loop (LatentDEM, Bai, Chen, Chen, Sun 2024; ../shared/DESIGN.md "packages/latentdem").
 * Per reverse DDIM step:
 *
 *   eps = eps(z_t, t); z0 = Tweedie(z_t, eps); zPrev = DDIM(z0, eps)           the prior step
 *   if full(index):                                                          (skip-gradient decides)
 *     x0 = decode(z0)                                                        (on z_t's tape)
 *     params = mStep(x0, params)           when order is 'm-first' (the release: psld.py:325-331 before the loss)
 *     zPrev  = eStep(z_t, z0, x0, zPrev, params, anneal(index))              (guidance through the tape)
 *     params = mStep(x0, params)           when order is 'e-first'
 *
 * Operator parameters are a record of tensors (deblurring: { kernel }, pose-free 3D: { poses }). Each step runs
 * in one `tidy`; only z and the parameters survive it, so memory is flat however many steps run. The per-step
 * callback sees every quantity of the step (k-diffusion style) and may be async; its tensors live only during
 * the call. Same seed, same result: every random draw comes from one Philox generator.
 */
import * as L from '@latentdem/tensor';
import type { Tensor } from '@latentdem/tensor';
import { Schedule } from '@latentdem/diffusion';
import type { Step } from '@latentdem/diffusion';

export type EmParams = Record<string, Tensor>;

/** What the E-step sees on a full step. */
export interface EStepContext<P extends EmParams> {
  step: Step;
  schedule: Schedule;
  generator: L.Generator;
  /** z_t, a leaf watched by `grad` */
  zt: Tensor;
  eps: Tensor;
  /** Tweedie z0 on z_t's tape */
  z0: Tensor;
  /** decode(z0) on z_t's tape */
  x0: Tensor;
  /** the unguided DDIM update (detached) */
  zPrev: Tensor;
  /** the operator parameters this step uses (detached) */
  params: P;
  /** the data-term multiplier of this step (annealing consistency) */
  anneal: number;
  /** d loss / d z_t through the model and the decoder */
  grad(loss: Tensor): Tensor;
  /** eps and z0 at another step, without tape (for rules that move along the trajectory) */
  denoise(z: Tensor, step: Step): { eps: Tensor; x0: Tensor };
}

export interface EStepResult {
  zPrev: Tensor;
  /** one-element loss tensors to report (read back after the step) */
  losses?: Record<string, Tensor>;
}

export interface MStepContext<P extends EmParams> {
  step: Step;
  generator: L.Generator;
  /** the decoded image estimate, detached */
  x0: Tensor;
  params: P;
}

export interface EmStepInfo<P extends EmParams> {
  /** 0-based step number and the number of steps */
  i: number;
  steps: number;
  /** DDIM index (steps - 1 .. 0) and training timestep */
  index: number;
  t: number;
  full: boolean;
  zt: Tensor;
  z0: Tensor;
  /** decode(z0) when this step decoded it, else null */
  x0: Tensor | null;
  /** the parameters after this step */
  params: P;
  anneal: number;
  losses: Record<string, number>;
  /** wall seconds of this step (its device work included: the losses are read back) */
  seconds: number;
  /** wall seconds of the M-step within it */
  mStepSeconds: number;
}

export interface EmOptions<P extends EmParams> {
  /** the prior's noise prediction (conditioning and CFG applied) */
  eps: (z: Tensor, t: number) => Tensor;
  /** latent -> image (identity for pixel-space priors) */
  decode?: (z: Tensor) => Tensor;
  /** a Schedule, or `steps` for SD's DDIM schedule with eta 0 (the release: 1000 steps, eta 0) */
  schedule?: Schedule;
  steps?: number;
  /** z_T; else drawn with `shape` from the generator */
  zT?: Tensor;
  shape?: readonly number[];
  seed?: number;
  generator?: L.Generator;
  backend?: L.BackendName | L.Backend;
  /** the initial operator parameters (the caller keeps ownership of these tensors) */
  params: P;
  eStep: (ctx: EStepContext<P>) => EStepResult;
  mStep?: (ctx: MStepContext<P>) => P;
  /** 'm-first' (default, the release) or 'e-first' */
  order?: 'm-first' | 'e-first';
  /** whether step `index` runs the full E+M step (default: every step) */
  isFull?: (index: number) => boolean;
  /** the data-term multiplier at `index` (default 1) */
  anneal?: (index: number) => number;
  onStep?: (info: EmStepInfo<P>) => void | Promise<void>;
}

export interface EmResult<P extends EmParams> {
  /** z_0, owned by the caller */
  z: Tensor;
  /** the final parameters, owned by the caller */
  params: P;
  generator: L.Generator;
}

function checkParams(op: string, p: EmParams): void {
  if (typeof p !== 'object' || p === null) throw new TypeError(`${op}: params must be a record of tensors`);
  for (const [k, v] of Object.entries(p)) if (!(v instanceof L.Tensor)) throw new TypeError(`${op}: params.${k} is not a tensor`);
}

const now = (): number => performance.now() / 1000;

/** Runs the diffusion-EM loop and returns z_0 and the final operator parameters. */
export async function em<P extends EmParams>(o: EmOptions<P>): Promise<EmResult<P>> {
  const op = 'em';
  if (typeof o.eps !== 'function') throw new TypeError(`${op}: eps (the prior's noise prediction) is required`);
  if (typeof o.eStep !== 'function') throw new TypeError(`${op}: eStep is required`);
  checkParams(op, o.params);
  const schedule = o.schedule ?? new Schedule({ steps: o.steps ?? 1000, eta: 0 });
  if (o.schedule && o.steps !== undefined && o.steps !== schedule.length) throw new RangeError(`${op}: steps (${o.steps}) disagrees with the schedule's ${schedule.length}`);
  const generator = o.generator ?? new L.Generator(o.seed ?? 0);
  const decode = o.decode ?? ((z: Tensor) => z);
  const order = o.order ?? 'm-first';
  let z: Tensor;
  if (o.zT) z = o.zT;
  else {
    if (!o.shape) throw new Error(`${op}: give zT or a shape`);
    z = L.randn(o.shape, { generator, backend: o.backend });
  }
  let ownZ = !o.zT;
  let params = o.params;
  let ownParams = false;
  const denoise = (zt: Tensor, s: Step): { eps: Tensor; x0: Tensor } => L.noGrad(() => {
    const e = schedule.toEps(o.eps(zt, s.t), zt, s);
    return { eps: e, x0: schedule.predictX0(zt, e, s) };
  });
  const total = schedule.length;
  for (const s of schedule.steps) {
    const t0 = now();
    const full = o.isFull ? o.isFull(s.index) : true;
    const anneal = full ? (o.anneal ? o.anneal(s.index) : 1) : 0;
    let mStepSeconds = 0;
    const out = L.tidy(() => {
      if (!full) {
        return L.noGrad(() => {
          const e = schedule.toEps(o.eps(z, s.t), z, s);
          const z0 = schedule.predictX0(z, e, s);
          return { zPrev: schedule.ddimStep(z0, e, s, 0, generator, z), z0, x0: null as Tensor | null, params: null as P | null, losses: {} as Record<string, Tensor>, zt: z };
        });
      }
      const zt = z.detach().requireGrad();
      const e = schedule.toEps(o.eps(zt, s.t), zt, s);
      const z0 = schedule.predictX0(zt, e, s);
      const x0 = decode(z0);
      const zPrev = L.noGrad(() => schedule.ddimStep(z0.detach(), e.detach(), s, 0, generator, zt.detach()));
      let p = params;
      const runM = (): void => {
        if (!o.mStep) return;
        const tm = now();
        const next = L.noGrad(() => o.mStep!({ step: s, generator, x0: x0.detach(), params: p }));
        checkParams('em: mStep result', next);
        p = next;
        mStepSeconds += now() - tm;
      };
      if (order === 'm-first') runM();
      const grad = (loss: Tensor): Tensor => {
        loss.backward();
        const g = zt.grad;
        if (!g) throw new Error('em: the E-step loss does not depend on z_t');
        zt.grad = null;
        const c = g.clone(); g.dispose();
        return c;
      };
      const r = o.eStep({ step: s, schedule, generator, zt, eps: e, z0, x0, zPrev, params: p, anneal, grad, denoise });
      if (!r || !(r.zPrev instanceof L.Tensor)) throw new TypeError('em: eStep must return { zPrev }');
      if (r.zPrev.shape.join() !== z.shape.join()) throw new RangeError(`em: eStep returned z of shape [${r.zPrev.shape}], expected [${z.shape}]`);
      if (order === 'e-first') runM();
      const losses: Record<string, Tensor> = {};
      for (const [k, v] of Object.entries(r.losses ?? {})) losses[k] = v.detach();
      return { zPrev: r.zPrev.detach(), z0: z0.detach(), x0: x0.detach() as Tensor | null, params: p === params ? null : p, losses, zt: zt.detach() };
    });
    const lossValues: Record<string, number> = {};
    for (const [k, v] of Object.entries(out.losses)) lossValues[k] = (await v.data())[0];
    if (!full || Object.keys(lossValues).length === 0) await out.zPrev.data();   // the step's device work is done before timing it
    const newParams = out.params;
    if (newParams) {
      if (ownParams) for (const [k, v] of Object.entries(params)) if (newParams[k] !== v) v.dispose();
      params = newParams; ownParams = true;
    }
    if (o.onStep) {
      await o.onStep({
        i: s.i, steps: total, index: s.index, t: s.t, full, zt: out.zt, z0: out.z0, x0: out.x0, params,
        anneal, losses: lossValues, seconds: now() - t0, mStepSeconds,
      });
    }
    for (const v of Object.values(out.losses)) v.dispose();
    out.z0.dispose(); out.x0?.dispose();
    if (out.zt !== z) out.zt.dispose();
    if (ownZ) z.dispose();
    z = out.zPrev; ownZ = true;
  }
  // The caller owns what comes back: copy parameters that are still the caller's own initial tensors.
  if (!ownParams) params = Object.fromEntries(Object.entries(params).map(([k, v]) => [k, v.clone()])) as P;
  if (!ownZ) z = z.clone();
  return { z, params, generator };
}
