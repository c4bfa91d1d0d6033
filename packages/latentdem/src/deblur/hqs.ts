/**
 * The LatentDEM M-step for blind deblurring: kernel estimation by half-quadratic splitting (HQS), as in
 * the release's `HQS_ker` (AI4ImagingLab/LatentDEM, stable-diffusion/src/emutil/utils_agem.py:95-117,
 * itself FastEM's util/utils_agem.py). Given the current image estimate x [C,H,W] and the measurement
 * y [C,H,W] with y = k (*) x + n (circular convolution), alternate for `iterations` rounds:
 *
 *   data step   K = (conj(X) Y + alpha FFT(p2o(z))) / (|X|^2 + alpha),  k = crop(Re IFFT(K))   (:57-65, :103-104)
 *   projection  k = max(k, 0) / sum(max(k, 0))                                                 (:67-72, :105)
 *   prior step  z = prior(k, sqrt(lambda / beta)), then the same projection                    (:74-93, :110, :115)
 *
 * and return z (:117). alpha = sigma^2 beta where sigma is the measurement noise std (:97), so the
 * release's alpha = 0.02^2 * 5e6 = 2000. The data step is the minimiser of ||x (*) k - y||^2 +
 * alpha ||k - z||^2 over kernels on the whole H x W grid (HQS splits k = z with weight alpha).
 *
 * PSF -> OTF centring (p2o, utils_agem.py:20-38, and `psf2otf` in @latentdem/tensor): a ks x ks kernel is
 * zero-padded to H x W in the top-left corner and rolled by -floor(ks/2) on both axes, so kernel pixel
 * (floor(ks/2), floor(ks/2)) -- (32, 32) for 64 x 64 -- sits at (0, 0) and y = Re IFFT(FFT(x) FFT(p2o(k))).
 * The inverse (o2p, :40-45) rolls the H x W estimate by +floor(ks/2) and keeps the top-left ks x ks block.
 *
 * Channels: the release solves the data step per colour channel and averages the three kernels
 * (`.mean(axis=1)` at :103; the sums in `data_solution_deblur` run over the batch axis). That is
 * `channels: 'mean'` (default). `channels: 'joint'` solves one problem over all channels,
 * K = (sum_c conj(X_c) Y_c + alpha Z) / (sum_c |X_c|^2 + alpha). Both are linear in Z, so each iteration is
 * one FFT of z and one inverse FFT: K = A + B Z with A and B computed once per call.
 *
 * Priors: 'none' is z = k. 'l2' is plain Tikhonov regularization: the data step minimises
 * ||x (*) k - y||^2 + mu ||k||^2 + alpha ||k - z||^2, so K = (conj(X) Y + alpha Z) / (|X|^2 + alpha + mu)
 * with mu = `l2Weight` (in the same units as alpha: unnormalized DFT, so Parseval's H W factor is inside
 * both), then z = k. The release's own `how='l2'` prior step (:80-81) is not this: it minimises
 * lambda ||z||^2 + beta/2 ||z - k||^2 over z, a uniform shrink z = beta k / (2 lambda + beta) that the
 * projection to sum one undoes, so it is 'none' up to rounding (ALGORITHM.md section 5 found the same), and
 * latentdem does not offer it. A function prior(k, sigma) plugs in a denoiser (see `denoiseKernel`).
 */
import { add, clamp, complexMul, div, fft2, ifft2, maximum, mul, narrow, noGrad, psf2otf, roll, sub, sum, tensor, tidy } from '@latentdem/tensor';
import type { Tensor } from '@latentdem/tensor';
import { ShapeError } from '@latentdem/tensor';

/** A kernel prior step: the denoised kernel [ks, ks] for the noisy estimate k [ks, ks] at noise std sigma. */
export type KernelPrior = (k: Tensor, sigma: number) => Tensor;

export interface HqsOptions {
  /** Estimated kernel side (the release: 2 * 32 = 64, inference.py:433-434). */
  kernelSize?: number;
  /** HQS iterations per M-step (release: n_iter = 20, inference.py:330). */
  iterations?: number;
  /** Prior weight (release: lamb = 1, inference.py:327). */
  lambda?: number;
  /** HQS penalty (release: beta = 5e6, inference.py:328). */
  beta?: number;
  /** Measurement noise std; alpha = sigma^2 beta (release: sigma = 0.02, psld.py:325; utils_agem.py:97). */
  sigma?: number;
  /** Overrides alpha = sigma^2 beta. */
  alpha?: number;
  /** 'none' (z = k), 'l2' (Tikhonov, weight `l2Weight`), or a prior function. Default 'none'. */
  prior?: 'none' | 'l2' | KernelPrior;
  /**
   * mu of the 'l2' prior (see above); required with it. On the calibration pairs of tools/eval-mstep every
   * mu > 0 raised the kernel error, monotonically (weights/dncnn-kernel/README.md), so there is no default.
   */
  l2Weight?: number;
  /** 'mean' (per-channel solutions averaged, as the release) or 'joint' (one solution over all channels). */
  channels?: 'mean' | 'joint';
  /** Warm start z [ks, ks]; default a delta at (floor(ks/2), floor(ks/2)) (psld.py:170-171, 454-457). */
  init?: Tensor;
}

/** Defaults of the LatentDEM release (see HqsOptions). */
export const HQS_DEFAULTS = { kernelSize: 64, iterations: 20, lambda: 1, beta: 5e6, sigma: 0.02 } as const;


/** max(k, 0) / sum(max(k, 0)) (utils_agem.py:67-72); an all-zero kernel stays zero instead of NaN. */
export function projectKernel(k: Tensor): Tensor {
  return tidy(() => {
    const p = clamp(k, 0);
    return div(p, maximum(sum(p), 1e-30));
  });
}


/** o2p (utils_agem.py:40-45): roll the H x W array by +floor(ks/2) and keep the top-left ks x ks block. */
export function otfToPsfCrop(full: Tensor, ks: number): Tensor {
  const h = Math.floor(ks / 2);
  return narrow(narrow(roll(full, [h, h], [-2, -1]), -2, 0, ks), -1, 0, ks);
}

/** y = Re IFFT(FFT(x) FFT(p2o(k))): the circular blur of x [..., H, W] by k [ks, ks] with the p2o centring. */
export function blurCircular(x: Tensor, k: Tensor): Tensor {
  return noGrad(() => tidy(() => {
    const h = x.shape[x.rank - 2], w = x.shape[x.rank - 1];
    const [or, oi] = psf2otf(k, [h, w]);
    const [xr, xi] = fft2(x);
    const [yr, yi] = complexMul(xr, xi, or, oi);
    return ifft2(yr, yi)[0];
  }));
}

/** A delta kernel [ks, ks] at (floor(ks/2), floor(ks/2)) on x's backend. */
function delta(ks: number, like: Tensor): Tensor {
  const d = new Float32Array(ks * ks); d[Math.floor(ks / 2) * ks + Math.floor(ks / 2)] = 1;
  return tensor(d, { shape: [ks, ks], backend: like.backend });
}

/**
 * One M-step: the kernel [ks, ks] (>= 0, sum 1) estimated from image x and measurement y, both [C, H, W]
 * on the same backend. Runs without autodiff; every intermediate tensor is freed.
 */
export function estimateKernel(x: Tensor, y: Tensor, o: HqsOptions = {}): Tensor {
  const ks = o.kernelSize ?? HQS_DEFAULTS.kernelSize;
  const iterations = o.iterations ?? HQS_DEFAULTS.iterations;
  const lambda = o.lambda ?? HQS_DEFAULTS.lambda;
  const beta = o.beta ?? HQS_DEFAULTS.beta;
  const sigma = o.sigma ?? HQS_DEFAULTS.sigma;
  const alpha = o.alpha ?? sigma * sigma * beta;
  const priorOpt = o.prior ?? 'none';
  const prior: KernelPrior | null = typeof priorOpt === 'function' ? priorOpt : null;
  if (priorOpt === 'l2' && o.l2Weight === undefined) throw new RangeError("estimateKernel: prior 'l2' needs l2Weight (mu)");
  const mu = priorOpt === 'l2' ? o.l2Weight! : 0;
  if (!(mu >= 0) || !(alpha > 0)) throw new RangeError(`estimateKernel: needs alpha > 0 and l2Weight >= 0, got alpha ${alpha}, l2Weight ${mu}`);
  const priorSigma = Math.sqrt(lambda / beta);
  if (x.rank !== 3 || y.rank !== 3 || x.shape.some((d, i) => d !== y.shape[i])) {
    throw new ShapeError('estimateKernel', `needs x and y of equal shape [C,H,W], got [${x.shape}] and [${y.shape}]`);
  }
  const [, H, W] = x.shape;
  if (ks > H || ks > W) throw new ShapeError('estimateKernel', `kernel size ${ks} exceeds the ${H}x${W} image`);
  if (o.init && (o.init.rank !== 2 || o.init.shape[0] !== ks || o.init.shape[1] !== ks)) {
    throw new ShapeError('estimateKernel', `init must be [${ks},${ks}], got [${o.init.shape}]`);
  }
  return noGrad(() => tidy(() => {
    // K = A + B Z, A and B per channel then averaged ('mean') or summed over channels first ('joint').
    const [xr, xi] = fft2(x);
    const [yr, yi] = fft2(y);
    // conj(X) Y = (xr - i xi)(yr + i yi)
    const nr = add(mul(xr, yr), mul(xi, yi));
    const ni = sub(mul(xr, yi), mul(xi, yr));
    const x2 = add(mul(xr, xr), mul(xi, xi));
    let ar: Tensor, ai: Tensor, b: Tensor;
    if ((o.channels ?? 'mean') === 'joint') {
      const den = add(sum(x2, 0), alpha + mu);
      ar = div(sum(nr, 0), den); ai = div(sum(ni, 0), den); b = div(alpha, den);
    } else {
      const den = add(x2, alpha + mu);
      const c = x.shape[0];
      ar = div(sum(div(nr, den), 0), c); ai = div(sum(div(ni, den), 0), c); b = div(sum(div(alpha, den), 0), c);
    }
    let z = o.init ? projectKernel(o.init) : delta(ks, x);
    for (let it = 0; it < iterations; it++) {
      const next = tidy(() => {
        const [zr, zi] = psf2otf(z, [H, W]);
        const kr = add(ar, mul(b, zr)); const ki = add(ai, mul(b, zi));
        const kFull = ifft2(kr, ki)[0];
        const k = projectKernel(otfToPsfCrop(kFull, ks));
        return prior ? projectKernel(prior(k, priorSigma)) : k;
      });
      z.dispose();
      z = next;
    }
    return z;
  }));
}
