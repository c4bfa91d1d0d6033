/**
 * Noise schedules (SD's scaled-linear betas), DDIM/DDPM timestep selection and update rules, and the
 * epsilon / x0 / v conversions. Scalars are computed on the host in the originals' precision (see
 * ../shared/fixtures/ddim_schedule.json, which this file must reproduce bit for bit in float32).
 *
 * Sources: CompVis/stable-diffusion @ 21f890f9 (`ldm/modules/diffusionmodules/util.py`,
 * `ldm/models/diffusion/ddim.py`, `ldm/models/diffusion/ddpm.py`, `configs/stable-diffusion/v1-inference.yaml`);
 * huggingface/diffusers @ 58eb52c0 (`src/diffusers/schedulers/scheduling_ddim.py`).
 */
import * as L from '@latentdem/tensor';
import type { Tensor } from '@latentdem/tensor';

/** SD v1 beta range: `linear_start: 0.00085`, `linear_end: 0.0120` (CompVis v1-inference.yaml:5-6). */
export const SD_BETA_START = 0.00085;
export const SD_BETA_END = 0.012;
/** `timesteps: 1000` (CompVis v1-inference.yaml:9). */
export const NUM_TRAIN_TIMESTEPS = 1000;
/** diffusers `steps_offset=1` for SD (the fixture's diffusers config); CompVis adds the same +1 (util.py:57). */
export const SD_STEPS_OFFSET = 1;
/** SD's latent scale: D(z) = decoder(z / 0.18215), E(x) = 0.18215 * sample(encoder(x)) (v1-inference.yaml:17). */
export const SD_LATENT_SCALE = 0.18215;

const f32 = Math.fround;

/** torch.linspace's CPU kernel: start + step*i for the first half, end - step*(n-1-i) for the second. */
function torchLinspace(start: number, end: number, n: number, round: (v: number) => number = (v) => v): number[] {
  const s = round(start), e = round(end);
  const step = round(round(e - s) / (n - 1));
  const half = Math.floor(n / 2);
  return Array.from({ length: n }, (_, i) => (i < half ? round(s + round(step * i)) : round(e - round(step * (n - 1 - i)))));
}

/**
 * SD's "scaled linear" betas in float64: linspace(sqrt(b0), sqrt(b1), n, float64) ** 2
 * (CompVis util.py:21-24, `make_beta_schedule('linear', ...)`).
 */
export function scaledLinearBetas(n = NUM_TRAIN_TIMESTEPS, start = SD_BETA_START, end = SD_BETA_END): Float64Array {
  if (!Number.isInteger(n) || n < 2) throw new RangeError(`scaledLinearBetas: n must be an integer >= 2, got ${n}`);
  if (!(start > 0 && end > start && end < 1)) throw new RangeError(`scaledLinearBetas: need 0 < start < end < 1, got ${start}, ${end}`);
  return Float64Array.from(torchLinspace(Math.sqrt(start), Math.sqrt(end), n), (v) => v * v);
}

/** The DDPM buffers as CompVis registers them: cumprod in float64, then cast to float32 (ddpm.py register_schedule). */
export interface TrainSchedule {
  betas: Float32Array;
  alphasCumprod: Float32Array;
  /** float32(append(1, alphas_cumprod_f64[:-1])) */
  alphasCumprodPrev: Float32Array;
  sqrtOneMinusAlphasCumprod: Float32Array;
  alphasCumprodF64: Float64Array;
}

export function trainSchedule(n = NUM_TRAIN_TIMESTEPS, start = SD_BETA_START, end = SD_BETA_END): TrainSchedule {
  const b = scaledLinearBetas(n, start, end);
  const ac = new Float64Array(n);
  let p = 1;
  for (let i = 0; i < n; i++) { p *= 1 - b[i]; ac[i] = p; }
  return {
    betas: Float32Array.from(b),
    alphasCumprod: Float32Array.from(ac),
    alphasCumprodPrev: Float32Array.from([1, ...ac.subarray(0, n - 1)]),
    sqrtOneMinusAlphasCumprod: Float32Array.from(ac, (a) => Math.sqrt(1 - a)),
    alphasCumprodF64: ac,
  };
}

/**
 * diffusers' alphas_cumprod: betas = linspace(sqrt(b0), sqrt(b1), n, float32)**2, cumprod of float32
 * values (scheduling_ddim.py, `beta_schedule == "scaled_linear"`); differs from CompVis by up to 5e-7.
 * torch's CPU cumprod accumulates in double. Matches the fixture to 2.1 float32 ulp, not bitwise: torch's
 * vectorized float32 linspace rounding is not reproduced (use CompVis' `trainSchedule` for exact values).
 */
export function diffusersAlphasCumprod(n = NUM_TRAIN_TIMESTEPS, start = SD_BETA_START, end = SD_BETA_END): Float32Array {
  const lin = torchLinspace(Math.sqrt(start), Math.sqrt(end), n, f32);
  const out = new Float32Array(n);
  let p = 1;
  for (let i = 0; i < n; i++) { p *= f32(1 - f32(lin[i] * lin[i])); out[i] = p; }
  return out;
}

/** numpy's round (half to even). */
function roundHalfEven(v: number): number {
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * 'uniform' is CompVis' `make_ddim_timesteps('uniform')`: range(0, T, T // steps) + 1 (util.py:46-57); note it
 * yields more than `steps` values when steps does not divide T, as the original does.
 * 'leading' / 'trailing' / 'linspace' are diffusers' `timestep_spacing` (scheduling_ddim.py set_timesteps);
 * 'leading' adds `stepsOffset` (SD: 1), and equals 'uniform' for steps dividing T.
 */
export type Spacing = 'uniform' | 'leading' | 'trailing' | 'linspace';

/** DDIM timesteps in ascending order. */
export function ddimTimesteps(steps: number, spacing: Spacing = 'uniform', numTrain = NUM_TRAIN_TIMESTEPS, stepsOffset = SD_STEPS_OFFSET): number[] {
  if (!Number.isInteger(steps) || steps < 1) throw new RangeError(`ddimTimesteps: steps must be a positive integer, got ${steps}`);
  if (steps > numTrain) throw new RangeError(`ddimTimesteps: steps (${steps}) > number of training timesteps (${numTrain})`);
  switch (spacing) {
    case 'uniform': {
      const c = Math.floor(numTrain / steps);
      const out: number[] = [];
      for (let t = 0; t < numTrain; t += c) out.push(t + 1);
      return out;
    }
    case 'leading': {
      const r = Math.floor(numTrain / steps);
      return Array.from({ length: steps }, (_, i) => i * r + stepsOffset);
    }
    case 'trailing': {
      // np.round(np.arange(T, 0, -T/steps)) - 1
      const r = numTrain / steps;
      const n = Math.ceil(numTrain / r);
      return Array.from({ length: n }, (_, i) => roundHalfEven(numTrain - i * r) - 1).reverse();
    }
    case 'linspace': {
      // np.linspace(0, T-1, steps).round()
      if (steps === 1) return [0];
      const d = (numTrain - 1) / (steps - 1);
      return Array.from({ length: steps }, (_, i) => roundHalfEven(i === steps - 1 ? numTrain - 1 : i * d));
    }
    default: throw new RangeError(`ddimTimesteps: unknown spacing '${spacing as string}' (uniform, leading, trailing, linspace)`);
  }
}

/** DDIM sigma: eta * sqrt((1 - a_prev)/(1 - a_t) * (1 - a_t/a_prev)), float64 from float32 alphas (util.py:69). */
export function ddimSigma(a: number, aPrev: number, eta: number): number {
  if (!(eta >= 0)) throw new RangeError(`ddimSigma: eta must be >= 0, got ${eta}`);
  // There `alphas` is a float32 tensor and `alphas_prev` a float64 ndarray: ndarray / tensor runs torch's
  // __rtruediv__ = reciprocal (float32) * other; the rest promotes to float64. Reproduced for bit equality.
  return eta * Math.sqrt(f32(1 / f32(1 - a)) * (1 - aPrev) * (1 - a / aPrev));
}

/** diffusers `_get_variance(t, prev)` in float32 arithmetic (std_dev_t = eta * sqrt(variance)). */
export function diffusersVariance(a: number, aPrev: number): number {
  const bt = f32(1 - a), bp = f32(1 - aPrev);
  return f32(f32(bp / bt) * f32(1 - f32(a / aPrev)));
}

export type Prediction = 'epsilon' | 'sample' | 'v_prediction';

/** One reverse step: the model is called at `t`; the update lands at `tPrev` (a_prev = alphas_cumprod there). */
export interface Step {
  /** position in sampling order: 0 is the first (noisiest) step */
  i: number;
  /** CompVis' `index`: steps - 1 - i */
  index: number;
  t: number;
  tPrev: number;
  /** alpha-bar at t and at the target of the step (float32 values) */
  a: number;
  aPrev: number;
  /** sigma for this schedule's eta, rounded to float32 as p_sample_ddim reads it */
  sigma: number;
}

export interface ScheduleOptions {
  /** number of reverse steps (1..1000) */
  steps: number;
  spacing?: Spacing;
  /** DDIM stochasticity: 0 deterministic, 1 DDPM-like; 'ddpm' kind ignores it */
  eta?: number;
  /**
   * 'ddim' (CompVis: the last step goes to alphas_cumprod[0], not 1) or 'ddpm' (ancestral steps on the
   * chosen timesteps with the posterior variance beta-tilde; the last step goes to a_prev = 1).
   */
  kind?: 'ddim' | 'ddpm';
  prediction?: Prediction;
  numTrain?: number;
  betaStart?: number;
  betaEnd?: number;
}

/**
 * A sampling schedule: the steps in sampling order and the update rules. With 1000 'uniform' DDIM steps the
 * CompVis timesteps are 1..1000 and the original raises IndexError (fixture ddim[3]); here the timesteps are
 * clamped to 999 ... 0 instead (t = 1000 → 999), i.e. every training timestep once, which is what PSLD's
 * 1000-step loop needs (t must stay within 0..999).
 */
export class Schedule {
  readonly train: TrainSchedule;
  readonly steps: readonly Step[];
  readonly eta: number;
  readonly kind: 'ddim' | 'ddpm';
  readonly prediction: Prediction;

  constructor(o: ScheduleOptions) {
    const numTrain = o.numTrain ?? NUM_TRAIN_TIMESTEPS;
    const eta = o.eta ?? 0;
    if (!(eta >= 0)) throw new RangeError(`Schedule: eta must be >= 0, got ${eta}`);
    if (!Number.isInteger(o.steps) || o.steps < 1 || o.steps > numTrain) throw new RangeError(`Schedule: steps must be an integer in 1..${numTrain}, got ${o.steps}`);
    this.eta = eta;
    this.kind = o.kind ?? 'ddim';
    this.prediction = o.prediction ?? 'epsilon';
    if (!['epsilon', 'sample', 'v_prediction'].includes(this.prediction)) throw new RangeError(`Schedule: unknown prediction '${this.prediction}'`);
    this.train = trainSchedule(numTrain, o.betaStart, o.betaEnd);
    let ts = ddimTimesteps(o.steps, o.spacing ?? 'uniform', numTrain);
    // 1000 uniform steps: 1..1000 is out of range (the original's IndexError): use 0..999.
    if (ts[ts.length - 1] >= numTrain) ts = ts.map((t) => t - 1);
    const ac = this.train.alphasCumprod;
    const n = ts.length;
    this.steps = Array.from({ length: n }, (_, i) => {
      const index = n - 1 - i;
      const t = ts[index];
      const tPrev = index > 0 ? ts[index - 1] : -1;
      const a = ac[t];
      // DDIM: alphas_prev[0] = alphas_cumprod[0] (util.py:66); DDPM: alphas_cumprod_prev[0] = 1 (ddpm.py)
      const aPrev = tPrev >= 0 ? ac[tPrev] : this.kind === 'ddim' ? ac[0] : 1;
      const sigma = f32(this.kind === 'ddpm' ? Math.sqrt((1 - aPrev) / (1 - a) * (1 - a / aPrev)) : ddimSigma(a, aPrev, eta));
      return { i, index, t, tPrev, a, aPrev, sigma };
    });
  }

  /** Number of reverse steps. */
  get length(): number { return this.steps.length; }

  /** The model output converted to epsilon (CompVis ddim.py: `predict_eps_from_z_and_v` for v). */
  toEps(out: Tensor, x: Tensor, s: Step): Tensor {
    if (this.prediction === 'epsilon') return out;
    if (this.prediction === 'v_prediction') return vToEps(x, out, s.a);
    return x0ToEps(x, out, s.a);
  }

  /** Tweedie / DDIM x0: (x - sqrt(1-a) eps) / sqrt(a) (CompVis ddim.py:195). */
  predictX0(x: Tensor, eps: Tensor, s: Step): Tensor { return epsToX0(x, eps, s.a); }

  /**
   * x_{t-1} = sqrt(a_prev) x0 + sqrt(1 - a_prev - sigma^2) eps + sigma z (CompVis ddim.py:199-203).
   * `eta` overrides the schedule's eta for this step. 'ddpm' schedules take the ancestral step instead.
   */
  ddimStep(x0: Tensor, eps: Tensor, s: Step, eta: number = this.eta, generator?: L.Generator, x?: Tensor): Tensor {
    if (this.kind === 'ddpm') {
      if (!x) throw new Error('Schedule.ddimStep: a ddpm schedule needs x_t (pass it as the last argument)');
      return ddpmStep(x, x0, s, generator);
    }
    if (!(eta >= 0)) throw new RangeError(`ddimStep: eta must be >= 0, got ${eta}`);
    const sigma = eta === this.eta ? s.sigma : f32(ddimSigma(s.a, s.aPrev, eta));
    const dir = Math.sqrt(Math.max(0, 1 - s.aPrev - sigma * sigma));
    let out = x0.mul(Math.sqrt(s.aPrev)).add(eps.mul(dir));
    if (sigma > 0) {
      if (!generator) throw new Error('ddimStep: eta > 0 needs a generator for the noise');
      out = out.add(L.randn(x0.shape, { generator, backend: x0.backend }).mul(sigma));
    }
    return out;
  }
}

/**
 * DDPM ancestral step on a (possibly strided) schedule: x_{t-1} ~ q(x_{t-1} | x_t, x0) with
 * beta = 1 - a/a_prev, mean = sqrt(a_prev) beta/(1-a) x0 + sqrt(1-beta)(1-a_prev)/(1-a) x_t,
 * variance (1-a_prev)/(1-a) beta (Ho et al. 2020 eq. 7; CompVis ddpm.py `q_posterior`).
 */
export function ddpmStep(x: Tensor, x0: Tensor, s: Step, generator?: L.Generator): Tensor {
  const beta = 1 - s.a / s.aPrev;
  const c0 = Math.sqrt(s.aPrev) * beta / (1 - s.a);
  const ct = Math.sqrt(1 - beta) * (1 - s.aPrev) / (1 - s.a);
  const std = Math.sqrt((1 - s.aPrev) / (1 - s.a) * beta);
  let out = x0.mul(c0).add(x.mul(ct));
  if (s.tPrev >= 0 && std > 0) {   // no noise on the last step (CompVis p_sample: nonzero_mask)
    if (!generator) throw new Error('ddpmStep: needs a generator for the noise');
    out = out.add(L.randn(x.shape, { generator, backend: x.backend }).mul(std));
  }
  return out;
}

// Parameterization conversions (x_t = sqrt(a) x0 + sqrt(1-a) eps; v = sqrt(a) eps - sqrt(1-a) x0).
export const epsToX0 = (x: Tensor, eps: Tensor, a: number): Tensor => x.sub(eps.mul(Math.sqrt(1 - a))).div(Math.sqrt(a));
export const x0ToEps = (x: Tensor, x0: Tensor, a: number): Tensor => x.sub(x0.mul(Math.sqrt(a))).div(Math.sqrt(1 - a));
export const vToEps = (x: Tensor, v: Tensor, a: number): Tensor => x.mul(Math.sqrt(1 - a)).add(v.mul(Math.sqrt(a)));
export const vToX0 = (x: Tensor, v: Tensor, a: number): Tensor => x.mul(Math.sqrt(a)).sub(v.mul(Math.sqrt(1 - a)));
export const epsX0ToV = (eps: Tensor, x0: Tensor, a: number): Tensor => eps.mul(Math.sqrt(a)).sub(x0.mul(Math.sqrt(1 - a)));
