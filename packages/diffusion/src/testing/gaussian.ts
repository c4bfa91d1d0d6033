/**
 * Test problems whose answers are known in closed form: a Gaussian (or Gaussian-mixture) latent prior, a
 * linear "decoder" D, its pseudo-inverse as "encoder", and a linear measurement y = A D z + n, n ~ N(0, sy^2 I).
 *
 * Under the VP forward process x_t = sqrt(a) x0 + sqrt(1-a) e, a Gaussian prior N(mu, S) gives
 * x_t ~ N(sqrt(a) mu, C_t = a S + (1-a) I), so the exact noise prediction is
 *   eps*(x_t) = -sqrt(1-a) grad log p_t(x_t) = sqrt(1-a) C_t^{-1} (x_t - sqrt(a) mu);
 * for a mixture, the score is the responsibility-weighted sum of the components' scores.
 * Host linear algebra is in float64 on small matrices (row-major number[][]).
 */
import * as L from '@latentdem/tensor';
import type { Tensor } from '@latentdem/tensor';
import type { NoiseModel } from '../sampler.js';
import type { Schedule } from '../schedule.js';

export type Mat = number[][];

export const matmul = (a: Mat, b: Mat): Mat => a.map((r) => b[0].map((_, j) => r.reduce((s, v, k) => s + v * b[k][j], 0)));
export const transpose = (a: Mat): Mat => a[0].map((_, j) => a.map((r) => r[j]));
export const matvec = (a: Mat, v: number[]): number[] => a.map((r) => r.reduce((s, x, k) => s + x * v[k], 0));
export const addMat = (a: Mat, b: Mat, sb = 1): Mat => a.map((r, i) => r.map((v, j) => v + sb * b[i][j]));
export const scaleMat = (a: Mat, s: number): Mat => a.map((r) => r.map((v) => v * s));
export const eyeMat = (n: number): Mat => Array.from({ length: n }, (_, i) => Array.from({ length: n }, (_, j) => (i === j ? 1 : 0)));
export const trace = (a: Mat): number => a.reduce((s, r, i) => s + r[i], 0);

/** Gauss-Jordan inverse with partial pivoting. */
export function inverse(a: Mat): Mat {
  const n = a.length;
  if (a.some((r) => r.length !== n)) throw new RangeError(`inverse: matrix is not square (${n}x${a[0]?.length})`);
  const m = a.map((r, i) => [...r, ...eyeMat(n)[i]]);
  for (let c = 0; c < n; c++) {
    let p = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(m[r][c]) > Math.abs(m[p][c])) p = r;
    if (Math.abs(m[p][c]) < 1e-14) throw new RangeError('inverse: matrix is singular');
    [m[c], m[p]] = [m[p], m[c]];
    const d = m[c][c];
    for (let j = 0; j < 2 * n; j++) m[c][j] /= d;
    for (let r = 0; r < n; r++) if (r !== c) { const f = m[r][c]; if (f) for (let j = 0; j < 2 * n; j++) m[r][j] -= f * m[c][j]; }
  }
  return m.map((r) => r.slice(n));
}

/** Lower Cholesky factor of a symmetric positive definite matrix. */
export function cholesky(a: Mat): Mat {
  const n = a.length, l = Array.from({ length: n }, () => new Array<number>(n).fill(0));
  for (let i = 0; i < n; i++) for (let j = 0; j <= i; j++) {
    let s = a[i][j];
    for (let k = 0; k < j; k++) s -= l[i][k] * l[j][k];
    if (i === j) { if (!(s > 0)) throw new RangeError('cholesky: matrix is not positive definite'); l[i][i] = Math.sqrt(s); } else l[i][j] = s / l[j][j];
  }
  return l;
}

export const logdet = (a: Mat): number => 2 * cholesky(a).reduce((s, r, i) => s + Math.log(r[i]), 0);

/** Deterministic host normals (a small LCG + Box-Muller): problem construction independent of any backend. */
export function hostNormals(n: number, seed: number): number[] {
  let s = (seed * 2654435761) >>> 0 || 1;
  const u = (): number => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return (s + 0.5) / 4294967296; };
  return Array.from({ length: n }, () => Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u()));
}

/** A random SPD matrix with eigenvalues spread over [lo, hi]. */
export function randomSpd(d: number, seed: number, lo = 0.2, hi = 1.5): Mat {
  const q = orthonormalRows(d, d, seed);
  const ev = Array.from({ length: d }, (_, i) => lo + (hi - lo) * (d === 1 ? 1 : i / (d - 1)));
  return matmul(transpose(q), q.map((r, i) => r.map((v) => v * ev[i])));
}

/** m orthonormal rows in R^n (Gram-Schmidt of host normals): A A^T = I. */
export function orthonormalRows(m: number, n: number, seed: number): Mat {
  const g = hostNormals(m * n, seed);
  const rows: Mat = [];
  for (let i = 0; i < m; i++) {
    let v = g.slice(i * n, (i + 1) * n);
    for (const r of rows) { const d = r.reduce((s, x, k) => s + x * v[k], 0); v = v.map((x, k) => x - d * r[k]); }
    const nv = Math.hypot(...v);
    rows.push(v.map((x) => x / nv));
  }
  return rows;
}

export interface GaussianComponent { weight: number; mean: number[]; cov: Mat }

/** The exact eps of a Gaussian-mixture prior (one component: a Gaussian) under `schedule`'s VP process. */
export function exactEps(components: readonly GaussianComponent[], schedule: Schedule): NoiseModel {
  const d = components[0].mean.length;
  if (components.some((c) => c.mean.length !== d || c.cov.length !== d)) throw new RangeError('exactEps: components disagree in dimension');
  const wsum = components.reduce((s, c) => s + c.weight, 0);
  return (x: Tensor, t: number): Tensor => {
    if (x.shape.length !== 2 || x.shape[1] !== d) throw new RangeError(`exactEps: x must be [N, ${d}], got [${x.shape}]`);
    if (!Number.isInteger(t) || t < 0 || t >= schedule.train.alphasCumprod.length) throw new RangeError(`exactEps: t = ${t} out of range 0..${schedule.train.alphasCumprod.length - 1}`);
    const a = schedule.train.alphasCumprod[t];
    const be = x.backend;
    const parts = components.map((c) => {
      const ct = addMat(scaleMat(c.cov, a), scaleMat(eyeMat(d), 1 - a));
      const p = inverse(ct);
      const diff = x.sub(L.tensor(c.mean.map((m) => Math.sqrt(a) * m), { shape: [1, d], backend: be }));
      const sol = diff.matmul(L.tensor(p.flat(), { shape: [d, d], backend: be }));   // C^{-1} symmetric
      const logp = sol.mul(diff).sum(1, { keepdim: true }).mul(-0.5).add(Math.log(c.weight / wsum) - 0.5 * logdet(ct));
      return { sol, logp };
    });
    if (parts.length === 1) return parts[0].sol.mul(Math.sqrt(1 - a));
    const r = L.softmax(L.concat(parts.map((q) => q.logp), 1), 1);   // responsibilities [N, K]
    let score: Tensor | null = null;
    parts.forEach((q, k) => { const term = q.sol.mul(r.narrow(1, k, 1)); score = score ? score.add(term) : term; });
    return score!.mul(Math.sqrt(1 - a));
  };
}

export interface LinearGaussianProblem {
  /** latent prior N(mu, S) */
  mu: number[];
  cov: Mat;
  /** decoder D [n x d], encoder E = pinv(D) [d x n], measurement A [m x n] (orthonormal rows), noise sy */
  D: Mat;
  E: Mat;
  A: Mat;
  sigmaY: number;
  /** the measured y [m] and the z it came from */
  y: number[];
  zTrue: number[];
  /** exact posterior p(z | y) = N(postMean, postCov) */
  postMean: number[];
  postCov: Mat;
}

/**
 * A latent-Gaussian inverse problem: z ~ N(mu, S) in R^d, x = D z in R^n, y = A x + sy n in R^m.
 * Posterior: Cov = (S^{-1} + H^T H / sy^2)^{-1}, mean = Cov (S^{-1} mu + H^T y / sy^2), H = A D.
 * With D = I (n = d) it is a pixel-space problem.
 */
export function linearGaussianProblem(o: { d: number; n: number; m: number; sigmaY: number; seed: number; identityDecoder?: boolean }): LinearGaussianProblem {
  const { d, n, m, sigmaY, seed } = o;
  if (o.identityDecoder && n !== d) throw new RangeError('linearGaussianProblem: an identity decoder needs n = d');
  if (m > n) throw new RangeError(`linearGaussianProblem: m (${m}) > n (${n}): A cannot have orthonormal rows`);
  const g = hostNormals(d + n * d + d + m, seed + 7);
  const mu = g.slice(0, d).map((v) => 0.5 * v);
  const cov = randomSpd(d, seed + 1);
  const D = o.identityDecoder ? eyeMat(d) : Array.from({ length: n }, (_, i) => g.slice(d + i * d, d + (i + 1) * d).map((v) => v / Math.sqrt(d)));
  const E = matmul(inverse(matmul(transpose(D), D)), transpose(D));
  const A = orthonormalRows(m, n, seed + 2);
  const lc = cholesky(cov);
  const zTrue = matvec(lc, g.slice(d + n * d, 2 * d + n * d)).map((v, i) => v + mu[i]);
  const noise = g.slice(2 * d + n * d);
  const H = matmul(A, D);
  const y = matvec(H, zTrue).map((v, i) => v + sigmaY * noise[i]);
  const si = inverse(cov);
  const postCov = inverse(addMat(si, scaleMat(matmul(transpose(H), H), 1 / sigmaY ** 2)));
  const rhs = matvec(si, mu).map((v, i) => v + matvec(transpose(H), y)[i] / sigmaY ** 2);
  return { mu, cov, D, E, A, sigmaY, y, zTrue, postMean: matvec(postCov, rhs), postCov };
}

/** Row-batch linear map x [N, k] -> x M^T [N, rows(M)] as a tensor op (M given host-side). */
export function linearMap(M: Mat, backend?: L.BackendName | L.Backend): (x: Tensor) => Tensor {
  const mt = transpose(M);
  let cached: Tensor | null = null;
  return (x: Tensor): Tensor => {
    if (x.shape[x.shape.length - 1] !== M[0].length) throw new RangeError(`linearMap: x has ${x.shape[x.shape.length - 1]} columns, the matrix takes ${M[0].length}`);
    if (!cached || cached.isDisposed || cached.backend !== x.backend) cached = L.keep(L.tensor(mt.flat(), { shape: [mt.length, mt[0].length], backend: backend ?? x.backend }));
    return x.matmul(cached);
  };
}

/** Sample mean and covariance (unbiased) of rows of a host array [N x d]. */
export function sampleMoments(data: ArrayLike<number>, d: number): { mean: number[]; cov: Mat; n: number } {
  const n = data.length / d;
  const mean = new Array<number>(d).fill(0);
  for (let i = 0; i < n; i++) for (let j = 0; j < d; j++) mean[j] += data[i * d + j] / n;
  const cov = Array.from({ length: d }, () => new Array<number>(d).fill(0));
  for (let i = 0; i < n; i++) for (let j = 0; j < d; j++) for (let k = 0; k < d; k++) cov[j][k] += (data[i * d + j] - mean[j]) * (data[i * d + k] - mean[k]) / (n - 1);
  return { mean, cov, n };
}

/** Mahalanobis-free summary errors: ||mean - m||, |tr(cov) - tr(C)|/tr(C), max |cov - C| entry. */
export function momentErrors(got: { mean: number[]; cov: Mat }, mean: number[], cov: Mat): { meanErr: number; traceRelErr: number; covMaxErr: number } {
  return {
    meanErr: Math.hypot(...got.mean.map((v, i) => v - mean[i])),
    traceRelErr: Math.abs(trace(got.cov) - trace(cov)) / trace(cov),
    covMaxErr: Math.max(...got.cov.flatMap((r, i) => r.map((v, j) => Math.abs(v - cov[i][j])))),
  };
}
