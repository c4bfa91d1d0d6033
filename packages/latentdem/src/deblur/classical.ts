/**
 * Classical (no diffusion prior) deblurring baselines for the issue 8 evaluation (tools/eval-deblur.ts):
 *
 * `deconvolveTV` -- non-blind total-variation deconvolution with a circular boundary,
 *   min_x 1/2 ||k (*) x - y||^2 + lambda TV(x),
 * by half-quadratic splitting with continuation, as FTVd (Wang, Yang, Yin, Zhang, "A new alternating
 * minimization algorithm for total variation image reconstruction", SIAM J. Imaging Sci. 2008) and Krishnan &
 * Fergus ("Fast image deconvolution using hyper-Laplacian priors", NIPS 2009, with their alpha = 1):
 * introduce w ~ D x (forward differences, circular) and minimise
 *   1/2 ||k (*) x - y||^2 + lambda sum |w| + beta/2 ||D x - w||^2
 * alternately, with beta growing geometrically (beta_i = lambda * betaStart * betaRate^i):
 *   w-step  w = shrink(D x, lambda / beta)  (isotropic: per pixel and channel on the 2-vector (dx, dy);
 *           anisotropic: per component, soft thresholding)
 *   x-step  X = (conj(K) Y + beta FFT(D^T w)) / (|K|^2 + beta (|Dx|^2 + |Dy|^2)),  x = Re IFFT(X)
 * with K the OTF of k in the p2o centring of `blurCircular` (kernel pixel (floor(ks/2), floor(ks/2)) at the
 * origin) and |Dx|^2 + |Dy|^2 = 4 sin^2(pi u / H) + 4 sin^2(pi v / W). Scaling beta with lambda makes the
 * schedule independent of lambda: the first threshold is 1/betaStart, the last 1/(betaStart betaRate^(n-1)).
 * Krishnan & Fergus run beta from 1 to 256 times the prior weight with rate 2 sqrt(2); the defaults below
 * (DECONV_TV_DEFAULTS) were chosen by the measurement quoted there. Each iteration costs one FFT and one
 * inverse FFT of the [C, H, W] image.
 *
 * `blindDeconvolveTV` -- the classical blind baseline (row (d) of eval-deblur): coarse-to-fine alternation of
 * the TV image step above and the HQS kernel step of the LatentDEM M-step (`estimateKernel`, hqs.ts), from a
 * delta, in the spirit of Chan & Wong ("Total variation blind deconvolution", IEEE TIP 1998) and Perrone &
 * Favaro ("Total variation blind deconvolution: the devil is in the details", CVPR 2014): a large TV weight
 * first (a cartoon image whose sharp edges pin the kernel), decreased geometrically over the outer iterations;
 * after every kernel step the kernel's centre of mass is moved to the p2o centre (`recenterKernel`, as the
 * LatentDEM release's kernel_shift), which stops the kernel drifting out of its box (blind deconvolution only
 * knows the pair (x, k) up to a translation). The pyramid halves the image (2x2 average pooling) and the kernel
 * side per level; a coarse kernel is brought to the next level by bilinear interpolation that keeps the p2o
 * centre fixed (fine pixel p samples coarse position p / 2). The image and kernel steps run on the tensor
 * backend of y; re-centring and the level change read the kernel (ks^2 values) to the host, so the function
 * is async. The final image is `deconvolveTV(y, k, o.final)` at full resolution.
 *
 * Kernel-step prior: any `KernelPrior` (e.g. our DnCNN, dncnnPrior), used at the finest level only by default;
 * measured on 10 calibration pairs it raised the image PSNR by 2 dB and the MNC by 0.05 over 'none' for about
 * 1 s more per image (BLIND_TV_DEFAULTS has the numbers), so tools/eval-deblur's row (d) uses it.
 */
import { add, avgPool2d, concat, clamp, div, fft2, ifft2, maximum, mul, noGrad, psf2otf, roll, sqrt, sub, tensor, tidy, abs, sign, square } from '@latentdem/tensor';
import type { Tensor } from '@latentdem/tensor';
import { ShapeError } from '@latentdem/tensor';
import { estimateKernel, HQS_DEFAULTS, type KernelPrior } from './hqs.js';
import { recenterKernel } from './recenter.js';

export interface DeconvTVOptions {
  /** TV weight lambda in 1/2 ||k x - y||^2 + lambda TV(x) (image data in [0, 1]). */
  lambda?: number;
  /** HQS iterations (one beta value each). */
  iterations?: number;
  /** First beta / lambda (Krishnan & Fergus: 1). */
  betaStart?: number;
  /** Geometric growth of beta per iteration (Krishnan & Fergus: 2 sqrt(2)). */
  betaRate?: number;
  /** Isotropic TV (default) or anisotropic (|dx| + |dy|). */
  isotropic?: boolean;
  /** Start image [C, H, W] for the first w-step; default y. */
  init?: Tensor;
}

/**
 * Defaults of `deconvolveTV`. lambda 2e-3 is the best TV weight for sigma 0.02 (on [0, 1] images) among 1e-3,
 * 2e-3, 3e-3, 4e-3, 1e-2, with the true kernel, on 4 calibration pairs (shared/data/train-images every 7th, our
 * motion kernels 64 x 64; never the evaluation pairs); for sigma 0.01 5e-4 was best, so tools/eval-deblur uses
 * lambda = 5 sigma^2 (its header has the measured PSNRs). 10 iterations with betaRate 2 sqrt(2) span
 * beta / lambda = 1 .. 1.1e4; 16 iterations gave the same PSNR to 0.01 dB.
 */
export const DECONV_TV_DEFAULTS = { lambda: 2e-3, iterations: 10, betaStart: 1, betaRate: 2 * Math.SQRT2, isotropic: true } as const;

function checkImage(op: string, y: Tensor): void {
  if (y.rank !== 3) throw new ShapeError(op, `needs y [C,H,W], got [${y.shape}]`);
}

/** |Dx|^2 + |Dy|^2 of the circular forward differences on an H x W grid, [H, W] on the backend of `like`. */
function laplacianSymbol(h: number, w: number, like: Tensor): Tensor {
  const d = new Float32Array(h * w);
  for (let u = 0; u < h; u++) {
    const su = 4 * Math.sin((Math.PI * u) / h) ** 2;
    for (let v = 0; v < w; v++) d[u * w + v] = su + 4 * Math.sin((Math.PI * v) / w) ** 2;
  }
  return tensor(d, { shape: [h, w], backend: like.backend });
}

/** Forward differences (circular): dx[i, j] = x[i, j+1] - x[i, j], dy[i, j] = x[i+1, j] - x[i, j]. */
function grad2(x: Tensor): [Tensor, Tensor] {
  return [sub(roll(x, [-1], [-1]), x), sub(roll(x, [-1], [-2]), x)];
}

/** D^T (wx, wy) = (wx[j-1] - wx[j]) + (wy[i-1] - wy[i]). */
function gradT(wx: Tensor, wy: Tensor): Tensor {
  return add(sub(roll(wx, [1], [-1]), wx), sub(roll(wy, [1], [-2]), wy));
}

/** The w-step: shrink (dx, dy) by t (isotropic: the 2-vector's length; anisotropic: each component). */
function shrink(dx: Tensor, dy: Tensor, t: number, isotropic: boolean): [Tensor, Tensor] {
  if (isotropic) {
    const mag = sqrt(add(square(dx), square(dy)));
    const s = div(clamp(sub(mag, t), 0), maximum(mag, 1e-12));
    return [mul(dx, s), mul(dy, s)];
  }
  const soft = (d: Tensor): Tensor => mul(sign(d), clamp(sub(abs(d), t), 0));
  return [soft(dx), soft(dy)];
}

/**
 * Non-blind TV deconvolution of y [C, H, W] blurred circularly by k [ks, ks] (p2o centring, as
 * `blurCircular`); returns x [C, H, W] on y's backend. No autodiff; every intermediate is freed.
 */
export function deconvolveTV(y: Tensor, k: Tensor, o: DeconvTVOptions = {}): Tensor {
  checkImage('deconvolveTV', y);
  const [, H, W] = y.shape;
  if (k.rank !== 2 || k.shape[0] > H || k.shape[1] > W) throw new ShapeError('deconvolveTV', `needs a kernel [ks,ks] no larger than the ${H}x${W} image, got [${k.shape}]`);
  if (o.init && (o.init.rank !== 3 || o.init.shape.some((d, i) => d !== y.shape[i]))) throw new ShapeError('deconvolveTV', `init must be [${y.shape}], got [${o.init.shape}]`);
  const lambda = o.lambda ?? DECONV_TV_DEFAULTS.lambda;
  const iterations = o.iterations ?? DECONV_TV_DEFAULTS.iterations;
  const betaStart = o.betaStart ?? DECONV_TV_DEFAULTS.betaStart;
  const betaRate = o.betaRate ?? DECONV_TV_DEFAULTS.betaRate;
  const isotropic = o.isotropic ?? DECONV_TV_DEFAULTS.isotropic;
  if (!(lambda > 0) || !(betaStart > 0) || !(betaRate >= 1) || !(iterations >= 1)) {
    throw new RangeError(`deconvolveTV: needs lambda > 0, betaStart > 0, betaRate >= 1, iterations >= 1; got ${lambda}, ${betaStart}, ${betaRate}, ${iterations}`);
  }
  return noGrad(() => tidy(() => {
    const [kr, ki] = psf2otf(k, [H, W]);
    const [yr, yi] = fft2(y);
    // conj(K) Y = (kr - i ki)(yr + i yi)
    const nr = add(mul(kr, yr), mul(ki, yi));
    const ni = sub(mul(kr, yi), mul(ki, yr));
    const k2 = add(square(kr), square(ki));
    const d2 = laplacianSymbol(H, W, y);
    let x = o.init ?? y;
    for (let i = 0; i < iterations; i++) {
      const beta = lambda * betaStart * betaRate ** i;
      const next = tidy(() => {
        const [dx, dy] = grad2(x);
        const [wx, wy] = shrink(dx, dy, lambda / beta, isotropic);
        const [gr, gi] = fft2(gradT(wx, wy));
        const den = maximum(add(k2, mul(d2, beta)), 1e-12);
        const xr = div(add(nr, mul(gr, beta)), den);
        const xi = div(add(ni, mul(gi, beta)), den);
        return ifft2(xr, xi)[0];
      });
      if (x !== y && x !== o.init) x.dispose();
      x = next;
    }
    return x;
  }));
}

export interface BlindTVOptions {
  /** Measurement noise std (sets the kernel step's alpha = sigma^2 beta as in estimateKernel). */
  sigma?: number;
  /** Estimated kernel side at full resolution (even; default 64). */
  kernelSize?: number;
  /** Pyramid levels (1 = full resolution only). The image side must be divisible by 2^(levels-1). */
  levels?: number;
  /** Outer (image step + kernel step) iterations per level, coarsest first; length `levels`. */
  outer?: readonly number[];
  /** TV weight of the first and of the last outer image step (geometric in between). */
  lambdaStart?: number;
  lambdaEnd?: number;
  /** HQS iterations of each outer image step. */
  imageIterations?: number;
  /** HQS iterations of each kernel step (estimateKernel). */
  kernelIterations?: number;
  /** Kernel-step prior (estimateKernel's `prior`), and its lambda. */
  prior?: 'none' | KernelPrior;
  priorLambda?: number;
  /** Use `prior` only at the finest level (default true: the coarse kernels are not the sizes it was trained on, and it is the costly part). */
  priorFinestOnly?: boolean;
  /** Move the kernel's centre of mass to (ks/2, ks/2) after each kernel step (default true). */
  recenter?: boolean;
  /**
   * What the kernel step fits: 'gradient' (default) the horizontal and vertical differences of x and y as 6
   * channels solved jointly (the edges carry the kernel; the smooth low frequencies that favour a delta drop
   * out), or 'image' x and y themselves (channels averaged, as the M-step).
   */
  kernelDomain?: 'gradient' | 'image';
  /** Options of the final full-resolution non-blind step (default DECONV_TV_DEFAULTS). */
  final?: DeconvTVOptions;
}

/**
 * Defaults of `blindDeconvolveTV`: 4 levels (32, 64, 128, 256 px; kernels 8, 16, 32, 64) with 3, 3, 2, 1 outer
 * iterations, TV weight 0.1 -> 0.02 over the 9 outer steps, 5 image and 10 kernel iterations per outer step,
 * the kernel step on image gradients. Chosen on 10 calibration pairs (shared/data/train-images every 7th, our
 * motion kernels 64 x 64 seeds 7000000+, sigma 0.02; never the evaluation pairs), final TV weight 2e-3, mean
 * image PSNR / kernel MNC / s per image on webgpu-lavapipe with 2 busy cores (the blurry y: 19.7 dB):
 *   3 levels [4,3,2], TV 0.03 -> 0.006, kernel step on the image (4 pairs)  18.8 dB / 0.57 / 3.8 s
 *   the same, kernel step on gradients (4 pairs)                            16.2 dB / 0.66 / 6.7 s
 *   4 levels [3,3,2,1], 5 image its, TV 0.06 -> 0.01                         15.5 dB / 0.77 / 3.4 s
 *   4 levels [3,3,2,1], 5 image its, TV 0.1 -> 0.02                          16.9 dB / 0.75 / 3.4 s
 *   the same with our DnCNN kernel prior (lambda 16) at every level          18.8 dB / 0.73 / 6.1 s  (TV 0.06 -> 0.01)
 *   the same with our DnCNN kernel prior at the finest level only            18.9 dB / 0.80 / 4.5 s  (TV 0.1 -> 0.02)
 * PSNR below the blurry input comes from kernel errors (ringing) and from the translation ambiguity: the
 * estimate is re-centred to the p2o centre while the true kernels' centres of mass spread by about 1.5 px, and
 * deconvolving with the re-centred TRUE kernel already gives 22.7 dB instead of 25.1 dB (6 calibration pairs,
 * sigma 0.02). MNC is shift-invariant; kernel MSE is not.
 * The library default prior is 'none' (no weights needed); tools/eval-deblur passes our DnCNN (finest level).
 */
export const BLIND_TV_DEFAULTS = {
  kernelSize: 64, levels: 4, outer: [3, 3, 2, 1], lambdaStart: 0.1, lambdaEnd: 0.02, imageIterations: 5, kernelIterations: 10, recenter: true,
  kernelDomain: 'gradient',
} as const;

/** Bilinear 2x upsampling of a kernel (side ks -> 2 ks) that keeps the p2o centre: fine p samples coarse p / 2. */
function upsampleKernel(k: ArrayLike<number>, ks: number): Float32Array {
  const n = 2 * ks; const out = new Float32Array(n * n);
  const at = (y: number, x: number): number => (y < ks && x < ks ? k[y * ks + x] : 0);
  let s = 0;
  for (let p = 0; p < n; p++) for (let q = 0; q < n; q++) {
    const y0 = p >> 1, x0 = q >> 1, fy = (p & 1) / 2, fx = (q & 1) / 2;
    const v = (1 - fy) * ((1 - fx) * at(y0, x0) + fx * at(y0, x0 + 1)) + fy * ((1 - fx) * at(y0 + 1, x0) + fx * at(y0 + 1, x0 + 1));
    out[p * n + q] = v; s += v;
  }
  if (s > 0) for (let i = 0; i < out.length; i++) out[i] /= s;
  return out;
}

function deltaData(ks: number): Float32Array {
  const d = new Float32Array(ks * ks); d[(ks >> 1) * ks + (ks >> 1)] = 1; return d;
}

/**
 * Classical blind deconvolution of y [C, H, W]: the image x [C, H, W] and the kernel [ks, ks] (>= 0, sum 1),
 * both on y's backend (the caller disposes them). See the file comment for the algorithm.
 */
export async function blindDeconvolveTV(y: Tensor, o: BlindTVOptions = {}): Promise<{ image: Tensor; kernel: Tensor }> {
  checkImage('blindDeconvolveTV', y);
  const [, H, W] = y.shape;
  const ks = o.kernelSize ?? BLIND_TV_DEFAULTS.kernelSize;
  const levels = o.levels ?? BLIND_TV_DEFAULTS.levels;
  const outer = o.outer ?? (levels === BLIND_TV_DEFAULTS.levels ? BLIND_TV_DEFAULTS.outer : Array.from({ length: levels }, () => 3));
  const sigma = o.sigma ?? HQS_DEFAULTS.sigma;
  const f = 2 ** (levels - 1);
  if (!(levels >= 1) || outer.length !== levels) throw new RangeError(`blindDeconvolveTV: needs levels >= 1 and one outer count per level, got ${levels} and [${outer}]`);
  if (ks % f !== 0 || H % f !== 0 || W % f !== 0 || ks > H || ks > W) {
    throw new ShapeError('blindDeconvolveTV', `kernel side ${ks} and image ${H}x${W} must be divisible by 2^(levels-1) = ${f}, kernel no larger than the image`);
  }
  const lambdaStart = o.lambdaStart ?? BLIND_TV_DEFAULTS.lambdaStart;
  const lambdaEnd = o.lambdaEnd ?? BLIND_TV_DEFAULTS.lambdaEnd;
  const imageIterations = o.imageIterations ?? BLIND_TV_DEFAULTS.imageIterations;
  const kernelIterations = o.kernelIterations ?? BLIND_TV_DEFAULTS.kernelIterations;
  const recenter = o.recenter ?? BLIND_TV_DEFAULTS.recenter;
  const gradientDomain = (o.kernelDomain ?? BLIND_TV_DEFAULTS.kernelDomain) === 'gradient';
  const totalOuter = outer.reduce((a, b) => a + b, 0);
  const lambdaAt = (t: number): number => (totalOuter <= 1 ? lambdaEnd : lambdaStart * (lambdaEnd / lambdaStart) ** (t / (totalOuter - 1)));
  const backend = y.backend;

  let kData = deltaData(ks / f);
  let t = 0;
  for (let level = levels - 1; level >= 0; level--) {
    const s = 2 ** level; const kl = ks / s;
    if (level < levels - 1) kData = upsampleKernel(kData, kl / 2);
    // y at this level: 2x2 average pooling `level` times (the noise std halves each time).
    const yl = level === 0 ? y : noGrad(() => tidy(() => avgPool2d(y.unsqueeze(0), { kernel: s, stride: s }).squeeze(0)));
    let x: Tensor | null = null;
    for (let it = 0; it < outer[levels - 1 - level]; it++, t++) {
      const k = tensor(kData, { shape: [kl, kl], backend });
      const xNew = deconvolveTV(yl, k, { lambda: lambdaAt(t), iterations: imageIterations, init: x ?? undefined });
      x?.dispose();
      x = xNew;
      const kOpts = { kernelSize: kl, iterations: kernelIterations, sigma: sigma / s, init: k, prior: level > 0 && (o.priorFinestOnly ?? true) ? 'none' as const : o.prior ?? 'none', lambda: o.priorLambda ?? HQS_DEFAULTS.lambda };
      const kNew = gradientDomain
        ? noGrad(() => tidy(() => estimateKernel(concat(grad2(x!), 0), concat(grad2(yl), 0), { ...kOpts, channels: 'joint' })))
        : estimateKernel(x, yl, kOpts);
      k.dispose();
      const est = await kNew.data();
      kNew.dispose();
      kData = recenter ? recenterKernel(est, kl, kl) : Float32Array.from(est);
    }
    x?.dispose();
    if (yl !== y) yl.dispose();
  }
  const kernel = tensor(kData, { shape: [ks, ks], backend });
  const image = deconvolveTV(y, kernel, o.final ?? {});
  return { image, kernel };
}
