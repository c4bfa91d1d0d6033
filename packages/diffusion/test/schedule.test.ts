import t, { type Test } from 'tap';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as L from '@latentdem/tensor';
import { Schedule, ddimSigma, ddimTimesteps, diffusersAlphasCumprod, diffusersVariance, scaledLinearBetas, trainSchedule, epsToX0, x0ToEps, vToEps, vToX0, epsX0ToV } from '../src/index.js';

interface Arr { values: number[]; dtype: string }
const fx = JSON.parse(readFileSync(fileURLToPath(new URL('../../../../shared/fixtures/ddim_schedule.json', import.meta.url)), 'utf8'));

/** Exact float32 equality: the fixture's float32 values parsed as double and rounded (fixture number_format). */
function exactF32(t: Test, name: string, got: ArrayLike<number>, want: Arr): void {
  t.equal(got.length, want.values.length, `${name}: length`);
  let bad = -1;
  for (let i = 0; i < want.values.length; i++) if (Math.fround(got[i]) !== Math.fround(want.values[i])) { bad = i; break; }
  t.equal(bad, -1, `${name}: every value equal in float32${bad >= 0 ? ` (first mismatch at ${bad}: ${got[bad]} vs ${want.values[bad]})` : ''}`);
}

t.test('train schedule: betas, alphas_cumprod (+prev, sqrt(1-.)) equal the CompVis buffers exactly in float32', async (t) => {
  const s = trainSchedule();
  exactF32(t, 'betas', s.betas, fx.schedule.betas);
  exactF32(t, 'alphas_cumprod', s.alphasCumprod, fx.schedule.alphas_cumprod);
  exactF32(t, 'alphas_cumprod_prev', s.alphasCumprodPrev, fx.schedule.alphas_cumprod_prev);
  exactF32(t, 'sqrt_one_minus_alphas_cumprod', s.sqrtOneMinusAlphasCumprod, fx.schedule.sqrt_one_minus_alphas_cumprod);
  // float64 intermediates: equal to a few ulps (torch's float64 linspace rounding)
  const b = scaledLinearBetas(); let m = 0;
  fx.schedule.betas_f64.values.forEach((v: number, i: number) => { m = Math.max(m, Math.abs(b[i] - v) / v); });
  t.ok(m < 1e-14, `betas_f64 relative error ${m}`);
  m = 0; fx.schedule.alphas_cumprod_f64.values.forEach((v: number, i: number) => { m = Math.max(m, Math.abs(s.alphasCumprodF64[i] - v) / v); });
  t.ok(m < 1e-12, `alphas_cumprod_f64 relative error ${m}`);
});

for (const run of fx.ddim) {
  t.test(run.error ? `DDIM ${run.steps} steps: CompVis timesteps 1..1000 (the original's IndexError, recorded); ours run t = 999..0` : `DDIM ${run.steps} steps eta ${run.eta}: timesteps, alphas, alphas_prev, sigmas, sqrt(1-alphas) equal CompVis exactly`, async (t) => {
    const ts = ddimTimesteps(run.steps, 'uniform');
    t.same(ts, run.ddim_timesteps.values, 'make_ddim_timesteps');
    if (run.error) {
      // The original raises IndexError (timestep 1000 of 1000): we shift to 0..999 instead, documented in Schedule.
      t.match(run.error, /IndexError/);
      t.equal(ts[ts.length - 1], 1000, 'the raw CompVis timesteps reach 1000, out of range');
      const s = new Schedule({ steps: 1000, eta: run.eta });
      t.same(s.steps.map((x) => x.t), Array.from({ length: 1000 }, (_, i) => 999 - i), 'ours: every t in 999..0 once');
      t.ok(s.steps.every((x) => x.t >= 0 && x.t <= 999), 't within 0..999');
      return;
    }
    const s = new Schedule({ steps: run.steps, eta: run.eta });
    const asc = [...s.steps].reverse();
    exactF32(t, 'alphas', asc.map((x) => x.a), run.alphas);
    exactF32(t, 'alphas_prev', asc.map((x) => x.aPrev), run.alphas_prev);
    exactF32(t, 'sigmas', asc.map((x) => x.sigma), run.sigmas);
    // float64 sigmas as returned (before the float32 cast), to 1e-15 relative
    const sig64 = asc.map((x) => ddimSigma(x.a, x.aPrev, run.eta));
    t.ok(sig64.every((v, i) => Math.abs(v - run.sigmas.values[i]) <= 1e-15 * Math.max(1, Math.abs(v))), 'sigmas (float64) match');
    exactF32(t, 'sqrt_one_minus_alphas', asc.map((x) => Math.fround(Math.sqrt(Math.fround(1 - x.a)))), run.sqrt_one_minus_alphas);
    for (const k of ['ddim_alphas', 'ddim_alphas_prev', 'ddim_sigmas', 'ddim_sqrt_one_minus_alphas'] as const) {
      const got = asc.map((x) => k === 'ddim_alphas' ? x.a : k === 'ddim_alphas_prev' ? x.aPrev : k === 'ddim_sigmas' ? x.sigma : Math.sqrt(Math.fround(1 - x.a)));
      exactF32(t, `used_float32.${k}`, got, run.used_float32[k]);
    }
  });
}

for (const spacing of ['leading', 'trailing', 'linspace'] as const) {
  t.test(`diffusers ${spacing} spacing (50 steps): timesteps, prev, alpha_prod_t(_prev), variance equal exactly`, async (t) => {
    const d = fx.diffusers_ddim[spacing];
    // diffusers' own float32 alphas_cumprod as recorded (ours is within 2.5 ulp, see the next test)
    const ac = Float32Array.from(fx.diffusers_ddim.alphas_cumprod.values);
    const ts = ddimTimesteps(50, spacing).reverse();
    t.same(ts, d.timesteps.values, 'timesteps');
    const prev = ts.map((x) => x - Math.floor(1000 / 50));
    t.same(prev, d.prev_timesteps.values, 'prev timesteps');
    const final = ac[0];
    const a = ts.map((x) => ac[x]), ap = prev.map((p) => (p >= 0 ? ac[p] : final));
    exactF32(t, 'alpha_prod_t', a, d.alpha_prod_t);
    exactF32(t, 'alpha_prod_t_prev', ap, d.alpha_prod_t_prev);
    exactF32(t, 'variance', a.map((x, i) => diffusersVariance(x, ap[i])), d.variance);
  });
}

t.test('diffusers alphas_cumprod (float32 linspace) within 2.5 float32 ulp (not bitwise); leading == CompVis uniform', async (t) => {
  const got = diffusersAlphasCumprod(); let worst = 0;
  fx.diffusers_ddim.alphas_cumprod.values.forEach((v: number, i: number) => { worst = Math.max(worst, Math.abs(got[i] - v) / (v * 2 ** -23)); });
  t.ok(worst <= 2.5, `max error ${worst.toFixed(2)} ulp`);
  // and ours differs from CompVis' float64-cumprod values as the fixture says (max 4.77e-7)
  const cv = trainSchedule().alphasCumprod; let d = 0;
  got.forEach((v, i) => { d = Math.max(d, Math.abs(v - cv[i])); });
  t.ok(d > 1e-7 && d < 1e-6, `diffusers vs CompVis max |diff| ${d}`);
  t.same(ddimTimesteps(50, 'leading'), ddimTimesteps(50, 'uniform'));
});

t.test('parameterizations: eps <-> x0 <-> v round trips on known values', async (t) => {
  const a = 0.3;
  const x0 = L.tensor([1, -2, 0.5], { backend: 'cpu' }), eps = L.tensor([0.1, 0.7, -1], { backend: 'cpu' });
  const x = x0.mul(Math.sqrt(a)).add(eps.mul(Math.sqrt(1 - a)));
  const near = async (u: L.Tensor, v: L.Tensor, what: string): Promise<void> => {
    const [p, q] = [await u.data(), await v.data()];
    t.ok(Array.from(p).every((z, i) => Math.abs(z - q[i]) < 1e-5), what);
  };
  await near(epsToX0(x, eps, a), x0, 'eps -> x0');
  await near(x0ToEps(x, x0, a), eps, 'x0 -> eps');
  const v = epsX0ToV(eps, x0, a);
  await near(vToEps(x, v, a), eps, 'v -> eps');
  await near(vToX0(x, v, a), x0, 'v -> x0');
  // v by hand for the first element: sqrt(.3)*0.1 - sqrt(.7)*1
  t.ok(Math.abs((await v.data())[0] - (Math.sqrt(0.3) * 0.1 - Math.sqrt(0.7))) < 1e-6, 'v formula');
});

t.test('bad input: clear errors', async (t) => {
  t.throws(() => new Schedule({ steps: 1001 }), /steps must be an integer in 1\.\.1000/);
  t.throws(() => new Schedule({ steps: 0 }), /steps/);
  t.throws(() => new Schedule({ steps: 50, eta: -0.1 }), /eta must be >= 0/);
  t.throws(() => ddimTimesteps(50, 'bogus' as never), /unknown spacing/);
  t.throws(() => new Schedule({ steps: 10, prediction: 'x' as never }), /unknown prediction/);
});
