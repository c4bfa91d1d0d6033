/**
 * One guided step of DPS and PSLD against the gradient derived by hand for the linear-Gaussian problem:
 * z0(z) = (I - (1-a) C^{-1}) z / sqrt(a) + const, so d z0 / d z = J = (I - (1-a) C^{-1}) / sqrt(a) (symmetric), and
 *   DPS:  grad = J H^T r / ||r||,                                   r = H z0 - y,  H = A D
 *   PSLD: grad = J [omega H^T r / ||r|| - gamma M^T g / ||g||],       g = E A^T (y - H z0),  M = E A^T A D
 * (the gluing residual E(A^T y + D z0 - A^T A D z0) - z0 equals g because E D = I). Catches a wrong sign,
 * weight or transpose in either term, which the posterior-moment bounds cannot all see (a PSLD without its
 * gluing term stays within them on this problem: mean err 0.115, trace err 0.21, ||ADz - y|| 0.29).
 */
import t from 'tap';
import * as L from '@latentdem/tensor';
import { Schedule, sample, dps, psld, testing as T, type Guide } from '../src/index.js';

await L.initBackend('cpu');
const d = 4;
const P = T.linearGaussianProblem({ d, n: 6, m: 3, sigmaY: 0.1, seed: 3 });
const Dm = T.linearMap(P.D), Am = T.linearMap(P.A), Em = T.linearMap(P.E), Atm = T.linearMap(T.transpose(P.A));
const y = L.tensor(P.y, { shape: [1, 3], backend: 'cpu' });
const H = T.matmul(P.A, P.D);
const M = T.matmul(T.matmul(P.E, T.transpose(P.A)), H);
const EAt = T.matmul(P.E, T.transpose(P.A));
const unit = (v: number[]): number[] => { const n = Math.hypot(...v); return v.map((x) => x / n); };

/** x_{t-1} after the first of 4 DDIM steps (eta 0), with and without the guide, for 8 chains. */
async function firstStep(guide: Guide | undefined, xT: L.Tensor, s: Schedule): Promise<number[][]> {
  let got: L.Tensor | null = null;
  const out = sample({ model: T.exactEps([{ weight: 1, mean: P.mu, cov: P.cov }], s), schedule: s, xT, guide, onStep: (i) => { if (i.step.i === 0) got = L.keep(i.x.clone()); } });
  out.dispose();
  const data = await got!.data(); got!.dispose();
  return Array.from({ length: 8 }, (_, i) => Array.from(data.slice(i * d, i * d + d)));
}

for (const kind of ['dps', 'psld'] as const) {
  t.test(`${kind}: one guided step equals the unguided step minus the hand-derived gradient`, async (t) => {
    const s = new Schedule({ steps: 4 });
    const st = s.steps[0];
    const zT = T.hostNormals(8 * d, 5).map((v) => v * 1.5);
    const xT = L.tensor(zT, { shape: [8, d], backend: 'cpu' });
    const scale = 0.07, omega = 0.8, gamma = 0.3;
    const guide = kind === 'dps' ? dps({ y, forward: Am, decode: Dm, scale })
      : psld({ y, forward: Am, transpose: Atm, decode: Dm, encode: (x) => Em(x), noiseStd: 0, omega, gamma, scale });
    const plain = await firstStep(undefined, xT, s), guided = await firstStep(guide, xT, s);
    const C = T.addMat(T.scaleMat(P.cov, st.a), T.scaleMat(T.eyeMat(d), 1 - st.a));
    const J = T.scaleMat(T.addMat(T.eyeMat(d), T.scaleMat(T.inverse(C), 1 - st.a), -1), 1 / Math.sqrt(st.a));
    const Ci = T.inverse(C);
    let worst = 0;
    for (let i = 0; i < 8; i++) {
      const z = zT.slice(i * d, i * d + d);
      const eps = T.matvec(Ci, z.map((v, k) => v - Math.sqrt(st.a) * P.mu[k])).map((v) => v * Math.sqrt(1 - st.a));
      const z0 = z.map((v, k) => (v - Math.sqrt(1 - st.a) * eps[k]) / Math.sqrt(st.a));
      const r = T.matvec(H, z0).map((v, k) => v - P.y[k]);
      let gz0 = T.matvec(T.transpose(H), unit(r)).map((v) => v * (kind === 'psld' ? omega : 1));
      if (kind === 'psld') {
        const g = T.matvec(EAt, r.map((v) => -v));
        gz0 = gz0.map((v, k) => v - gamma * T.matvec(T.transpose(M), unit(g))[k]);
      }
      const grad = T.matvec(J, gz0);
      const want = plain[i].map((v, k) => v - scale * grad[k]);
      worst = Math.max(worst, ...want.map((v, k) => Math.abs(v - guided[i][k])));
      // the guidance moved the chain by a visible amount (so the comparison is not vacuous)
      t.ok(Math.hypot(...grad) * scale > 1e-3, `chain ${i}: step length ${(Math.hypot(...grad) * scale).toFixed(4)}`);
    }
    t.ok(worst < 2e-5, `max |guided - (plain - scale * grad)| = ${worst.toExponential(2)}`);
    xT.dispose();
  });
}
