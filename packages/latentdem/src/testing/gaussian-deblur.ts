/**
 * A blind deblurring problem with a known answer, for tests and measurements of the EM loop: a stationary Gaussian
 * latent prior z ~ N(0, Sigma), Sigma diagonal in the Fourier basis with power spectrum S(f) = 1/(|f|^2 + 1) scaled
 * to unit mean variance (image-like), whose exact noise prediction is eps(z_t) = sqrt(1 - a) F^-1[F(z_t)/(a S + 1 - a)];
 * a linear decoder x = 0.5 z (the encoder its inverse); y = k (*) x + sigma n, circular, with k a Gaussian blur
 * (std 1.2, 7 x 7). Under a stationary Gaussian prior only |K| is identifiable, so the kernel is symmetric (real
 * spectrum) and a fair target for the recovered kernel.
 */
import * as L from '@latentdem/tensor';
import type { Backend, Tensor } from '@latentdem/tensor';
import { trainSchedule } from '@latentdem/diffusion';
import { blurCircular } from '../deblur/hqs.js';
import { kernelMse } from '../deblur/metrics.js';
import type { LatentPrior } from '../prior.js';

export const GAUSS = { size: 32, channels: 3, kernelSize: 7, sigma: 0.01, decoderGain: 0.5, kernelStd: 1.2 } as const;
const { size: N, channels: C, kernelSize: KS, sigma: SIGMA, decoderGain: DECODER_GAIN } = GAUSS;
const alphas = trainSchedule().alphasCumprod;

/** Power spectrum 1 / (|f|^2 + 1) on an N x N grid, scaled to unit mean variance (an image-like Gaussian prior). */
function spectrum(): Float32Array {
  const s = new Float32Array(N * N); let m = 0;
  for (let u = 0; u < N; u++) for (let v = 0; v < N; v++) {
    const fu = Math.min(u, N - u), fv = Math.min(v, N - v);
    s[u * N + v] = 1 / (fu * fu + fv * fv + 1); m += s[u * N + v];
  }
  for (let i = 0; i < s.length; i++) s[i] *= (N * N) / m;
  return s;
}

export interface GaussProblem {
  prior: LatentPrior;
  /** the measurement [3, 32, 32] and the true image it was made from */
  y: Tensor;
  xTrue: Tensor;
  kTrue: Float32Array;
  /** kernel MSE of the delta the EM starts from */
  deltaMse: number;
  /** frees y, xTrue and the prior */
  dispose(): void;
}

/** The problem on `backend`; `seed` draws the true latent (and seed + 1 the measurement noise). */
export function gaussProblem(backend: Backend, seed = 11): GaussProblem {
  const S = L.tensor(spectrum(), { shape: [N, N], backend });
  const eps = (z: Tensor, t: number): Tensor => {
    const a = alphas[t];
    const [zr, zi] = L.fft2(z);
    const filt = S.mul(a).add(1 - a).reciprocal().mul(Math.sqrt(1 - a));
    return L.ifft2(zr.mul(filt), zi.mul(filt))[0];
  };
  const prior: LatentPrior = {
    name: 'gaussian', factor: 1, latentChannels: C, latentMultiple: 1, backend, eps,
    decode: (z) => z.mul(DECODER_GAIN), encode: (x) => x.div(DECODER_GAIN), dispose: () => S.dispose(),
  };
  const [xTrue, y] = L.tidy(() => {
    const [wr, wi] = L.fft2(L.randn([C, N, N], { seed, backend }));
    const sq = S.sqrt();
    const x = L.ifft2(wr.mul(sq), wi.mul(sq))[0].mul(DECODER_GAIN);
    const k = L.tensor(gaussKernel(), { shape: [KS, KS], backend });
    return [x, blurCircular(x, k).add(L.randn([C, N, N], { seed: seed + 1, backend }).mul(SIGMA))];
  });
  const delta = new Float32Array(KS * KS); delta[(KS >> 1) * KS + (KS >> 1)] = 1;
  return { prior, y, xTrue, kTrue: gaussKernel(), deltaMse: kernelMse(delta, gaussKernel()), dispose: () => { y.dispose(); xTrue.dispose(); prior.dispose(); } };
}

/** The true kernel: a 7 x 7 Gaussian of std 1.2, sum 1. */
export function gaussKernel(): Float32Array {
  const k = new Float32Array(KS * KS); let s = 0; const c = KS >> 1;
  for (let i = 0; i < KS; i++) for (let j = 0; j < KS; j++) { const v = Math.exp(-((i - c) ** 2 + (j - c) ** 2) / (2 * GAUSS.kernelStd ** 2)); k[i * KS + j] = v; s += v; }
  for (let i = 0; i < k.length; i++) k[i] /= s;
  return k;
}

