/**
 * Measurements for blind deblurring.
 *
 * `releaseMeasurement` is the LatentDEM release's synthetic pipeline for experiments (ALGORITHM.md section 1,
 * "The measurement pipeline", from `SD/scripts/inference.py:414-452`):
 *   1. min-max normalise the image to [0, 1]: v - min, then / max (inference.py: `img - img.min()`,
 *      `img / img.max()`; global over all channels -- the release takes min and max before dropping an alpha
 *      channel, here the image is already RGB);
 *   2. bilinear resize to 256 x 256, align_corners = False (`F.interpolate(..., mode='bilinear')`);
 *   3. y = fft_blur(img, k): CIRCULAR convolution with the p2o centring (`blurCircular`, hqs.ts: kernel pixel
 *      (floor(ks/2), floor(ks/2)) lands on the origin; `utils_agem.py:47-54`);
 *   4. + N(0, sigma^2), sigma = 0.02 (DPS config `motion_deblur_config_psld_64_32-2.yaml:16-18`; `measurements.py:238-243`);
 *   5. nearest upsample to 512 (`F.interpolate(y_n, opt.H)`, default mode nearest);
 *   6. min-max to [-1, 1]: v - min, / max, then (v - 0.5) / 0.5 (global over the whole tensor).
 *
 * `prepareMeasurement` turns a real blurry photo of any size into the measurement the EM loop takes, and
 * `restore` maps the restored image back to the photo's size. Decisions:
 *   - channels: 1 (gray) is replicated to RGB; 3 is used as is; anything else (2 = gray+alpha, 4 = RGBA) is
 *     a ShapeError: transparent pixels hold no image, so flatten or drop the alpha channel first
 *     (@latentdem/tensor's readImage already drops alpha, so PNG files always arrive as 1 or 3 channels).
 *   - values: y = 2 photo - 1, no min-max stretch (the photo's own range is kept, so restore is its inverse).
 *   - size: when the longer side exceeds `size`, the photo is downscaled by area averaging (exact box-filter
 *     overlaps, an antialiased resize) so that the longer side equals `size` (the shorter one rounded). The
 *     kernel is then estimated at that scale: a kernel of n pixels there spans n / scale pixels of the photo.
 *     `restore` upsamples the result back bilinearly (align_corners = False), so it is softer than a run at
 *     full size would be.
 *   - padding: on the right and bottom only, to the next multiple of `factor` (for SD the VAE's 8 times the
 *     UNet's 2^(levels-1) = 8, so 64; see the CLI), by reflection (mirror without repeating the edge) by
 *     default, or `pad: 'replicate'` (repeat the edge). Reflection continues the image's texture and blur,
 *     so the padded strip looks like more of the same blurry photo to the circular forward model; the
 *     wrap-around seam of the circular convolution sits inside the padding when there is any. `restore`
 *     crops the padding before resizing, so padding -> restore is exact on an unblurred image.
 *   - minimum size: every side of the working image (after any downscale) must be at least
 *     max(minSide, factor) pixels; the CLI passes minSide = 2 x the kernel size (the M-step needs the image to
 *     be larger than the kernel, and a kernel estimated from fewer pixels than that is mostly noise).
 */
import { Generator, ShapeError, concat, fmtShape, matmul, noGrad, randn, tensor, tidy, upsample } from '@latentdem/tensor';
import type { Tensor } from '@latentdem/tensor';
import { blurCircular } from './hqs.js';

/** The release's working size of the blur (inference.py:414-452) and the size y is upsampled to (opt.H). */
export const RELEASE_MEASUREMENT = { size: 256, upTo: 512, sigma: 0.02 } as const;

export interface ReleaseMeasurementOptions {
  /** Noise std on the [0, 1] blurred image (release 0.02). */
  sigma?: number;
  /**
   * The noise: a tensor of standard-normal draws [3, size, size] (multiplied by sigma here), a Generator, or a
   * seed for a fresh Philox stream (default seed 0).
   */
  noise?: Tensor | Generator | number;
  /** Side the image is resized to and blurred at (release 256). */
  size?: number;
  /** Side y is upsampled to, nearest (release 512). */
  upTo?: number;
}

export interface ReleaseMeasurementResult {
  /** The measurement [3, upTo, upTo] in [-1, 1] (min-max normalised), what the EM loop sees. */
  y: Tensor;
  /** The clean image after steps 1-2 [3, size, size] in [0, 1]: the ground truth at the blur's scale. */
  clean: Tensor;
  /** The noise-free blurred image [3, size, size] (step 3). */
  blurred: Tensor;
  /** The noisy blurred image [3, size, size] (step 4), before the upsampling. */
  noisy: Tensor;
}

/** (v - min) / max(v - min) over the whole tensor; a constant tensor maps to 0 instead of NaN. */
function minMax01(x: Tensor): Tensor {
  const s = x.sub(x.min());
  return s.div(s.max().maximum(1e-30));
}

/**
 * The release's synthetic measurement (see the header): image [3, H, W] in [0, 1] (any range: it is min-max
 * normalised first) and kernel [ks, ks] (sum 1, p2o-centred at (floor(ks/2), floor(ks/2))) on the same
 * backend. Runs without autodiff; every returned tensor is owned by the caller.
 */
export function releaseMeasurement(image: Tensor, kernel: Tensor, o: ReleaseMeasurementOptions = {}): ReleaseMeasurementResult {
  const size = o.size ?? RELEASE_MEASUREMENT.size;
  const upTo = o.upTo ?? RELEASE_MEASUREMENT.upTo;
  const sigma = o.sigma ?? RELEASE_MEASUREMENT.sigma;
  if (image.rank !== 3 || image.shape[0] !== 3) throw new ShapeError('releaseMeasurement', `needs an RGB image [3,H,W], got ${fmtShape(image.shape)}`);
  if (kernel.rank !== 2 || kernel.shape[0] !== kernel.shape[1]) throw new ShapeError('releaseMeasurement', `needs a square kernel [ks,ks], got ${fmtShape(kernel.shape)}`);
  if (kernel.shape[0] > size) throw new ShapeError('releaseMeasurement', `kernel ${fmtShape(kernel.shape)} exceeds the ${size}x${size} working size`);
  if (!Number.isInteger(size) || !Number.isInteger(upTo) || size < 1 || upTo < 1) throw new ShapeError('releaseMeasurement', `size and upTo must be positive integers, got ${size}, ${upTo}`);
  if (!(sigma >= 0)) throw new RangeError(`releaseMeasurement: sigma must be >= 0, got ${sigma}`);
  if (o.noise && typeof o.noise === 'object' && 'shape' in o.noise) {
    const n = o.noise;
    if (n.rank !== 3 || n.shape[0] !== 3 || n.shape[1] !== size || n.shape[2] !== size) throw new ShapeError('releaseMeasurement', `noise must be [3,${size},${size}], got ${fmtShape(n.shape)}`);
  }
  return noGrad(() => tidy(() => {
    // 1-2: min-max to [0, 1], bilinear to size x size (align_corners=False).
    const clean = upsample(minMax01(image).unsqueeze(0), { size: [size, size], mode: 'bilinear', alignCorners: false }).squeeze([0]);
    // 3: circular blur with the p2o centring.
    const blurred = blurCircular(clean, kernel);
    // 4: + N(0, sigma^2).
    const noise = o.noise;
    const z = noise !== undefined && typeof noise === 'object' && 'shape' in noise
      ? noise
      : randn([3, size, size], { backend: image.backend, generator: noise instanceof Generator ? noise : new Generator(typeof noise === 'number' ? noise : 0) });
    const noisy = blurred.add(z.mul(sigma));
    // 5: nearest to upTo x upTo; 6: min-max to [-1, 1].
    const up = upsample(noisy.unsqueeze(0), { size: [upTo, upTo], mode: 'nearest' }).squeeze([0]);
    const y = minMax01(up).sub(0.5).div(0.5);
    return { y, clean, blurred, noisy };
  }));
}

export interface PrepareMeasurementOptions {
  /** The working image's sides are padded to a multiple of this (the prior's spatial multiple). */
  factor: number;
  /** Largest working side: a photo whose longer side exceeds it is downscaled so that side equals it. Default: no limit. */
  size?: number;
  /** Smallest working side (after any downscale); the effective minimum is max(minSide, factor). */
  minSide?: number;
  /** 'reflect' (default) or 'replicate'. */
  pad?: 'reflect' | 'replicate';
}

export interface MeasurementInfo {
  /** The photo: channels, height, width. */
  channels: number;
  height: number;
  width: number;
  /** After any downscale (before padding). */
  workHeight: number;
  workWidth: number;
  /** workSide / inputSide (1 when not resized). */
  scale: number;
  resized: boolean;
  /** The measurement's size (after padding). */
  paddedHeight: number;
  paddedWidth: number;
  padBottom: number;
  padRight: number;
  padMode: 'reflect' | 'replicate';
  factor: number;
  minSide: number;
}

export interface PreparedMeasurement {
  /** The measurement [3, H', W'] in [-1, 1], H' and W' multiples of `factor`. Owned by the caller. */
  y: Tensor;
  /** [3, H', W'] (or [1, 3, H', W']) in [-1, 1] -> [3, H, W] in [0, 1]: crop the padding, resize back, clamp. */
  restore(x: Tensor): Tensor;
  info: MeasurementInfo;
}

/** Area (box-filter) resampling matrix [nOut, nIn]: out pixel i averages input [i r, (i+1) r), r = nIn / nOut. */
function areaMatrix(nIn: number, nOut: number): Float32Array {
  const m = new Float32Array(nOut * nIn);
  const r = nIn / nOut;
  for (let i = 0; i < nOut; i++) {
    const a = i * r, b = (i + 1) * r;
    for (let j = Math.floor(a); j < Math.min(Math.ceil(b), nIn); j++) {
      const overlap = Math.min(b, j + 1) - Math.max(a, j);
      if (overlap > 0) m[i * nIn + j] = overlap / r;
    }
  }
  return m;
}

/** Area downscale of [C, H, W] to [C, h, w] (h <= H, w <= W). */
export function resizeArea(x: Tensor, h: number, w: number): Tensor {
  if (x.rank !== 3) throw new ShapeError('resizeArea', `needs [C,H,W], got ${fmtShape(x.shape)}`);
  const [, H, W] = x.shape;
  if (!(h >= 1 && w >= 1 && h <= H && w <= W)) throw new ShapeError('resizeArea', `downscales only: ${H}x${W} -> ${h}x${w}`);
  return tidy(() => {
    const mh = tensor(areaMatrix(H, h), { shape: [h, H], backend: x.backend });
    const mwT = tensor(areaMatrix(W, w), { shape: [w, W], backend: x.backend }).transpose(0, 1);
    return matmul(mh, matmul(x, mwT));
  });
}

/** Pads [C, H, W] at the bottom and on the right, mirroring (reflect) or repeating (replicate) the edge. */
function padEdge(x: Tensor, bottom: number, right: number, mode: 'reflect' | 'replicate'): Tensor {
  if (mode === 'reflect') return x.pad([0, right, 0, bottom], 'reflect');
  const edge = (t: Tensor, axis: number, n: number): Tensor => {
    if (n === 0) return t;
    const shape = [...t.shape]; shape[axis] = n;
    return concat([t, t.narrow(axis, t.shape[axis] - 1, 1).expand(shape)], axis);
  };
  return edge(edge(x, 2, right), 1, bottom);
}

/**
 * The working size of an H x W photo for a largest side `size` (none: no limit): unchanged when it fits, else the
 * longer side becomes `size` and the shorter one is scaled by the same factor (rounded, at least 1).
 */
export function workingSize(H: number, W: number, size?: number): { height: number; width: number; scale: number; resized: boolean } {
  if (size === undefined || Math.max(H, W) <= size) return { height: H, width: W, scale: 1, resized: false };
  const scale = size / Math.max(H, W);
  const height = H >= W ? size : Math.max(1, Math.round(H * scale));
  const width = W >= H ? size : Math.max(1, Math.round(W * scale));
  return { height, width, scale, resized: true };
}

/**
 * A real photo [C, H, W] in [0, 1] (C = 1 or 3) as a measurement for the EM loop; see the header for the
 * decisions (gray -> RGB, downscale to `size`, padding to `factor`, the minimum size). Runs without autodiff.
 */
export function prepareMeasurement(photo: Tensor, o: PrepareMeasurementOptions): PreparedMeasurement {
  const op = 'prepareMeasurement';
  const factor = o.factor;
  if (!Number.isInteger(factor) || factor < 1) throw new RangeError(`${op}: factor must be a positive integer, got ${factor}`);
  if (o.size !== undefined && (!Number.isInteger(o.size) || o.size < 1)) throw new RangeError(`${op}: size must be a positive integer, got ${o.size}`);
  const padMode = o.pad ?? 'reflect';
  if (padMode !== 'reflect' && padMode !== 'replicate') throw new RangeError(`${op}: pad must be 'reflect' or 'replicate', got ${String(padMode)}`);
  if (photo.rank !== 3) throw new ShapeError(op, `needs an image [C,H,W], got ${fmtShape(photo.shape)}`);
  const [c, H, W] = photo.shape;
  if (c !== 1 && c !== 3) {
    const what = c === 2 ? ' (gray + alpha?)' : c === 4 ? ' (RGBA?)' : '';
    throw new ShapeError(op, `unsupported channel count ${c}${what} in ${fmtShape(photo.shape)}: needs 1 (gray) or 3 (RGB); flatten or drop an alpha channel first`);
  }
  const minSide = Math.max(o.minSide ?? factor, factor);
  const { height: h, width: w, scale, resized } = workingSize(H, W, o.size);
  if (Math.min(h, w) < minSide) {
    const at = resized ? ` (${w}x${h} after downscaling to the working size ${o.size})` : '';
    throw new ShapeError(op, `image ${W}x${H}${at} is too small: each side must be at least ${minSide} px`);
  }
  const ph = (factor - (h % factor)) % factor, pw = (factor - (w % factor)) % factor;
  const y = noGrad(() => tidy(() => {
    let x = photo;
    if (resized) x = resizeArea(x, h, w);
    if (c === 1) x = x.expand([3, h, w]).contiguous();
    x = x.mul(2).sub(1);
    return padEdge(x, ph, pw, padMode);
  }));
  const info: MeasurementInfo = {
    channels: c, height: H, width: W, workHeight: h, workWidth: w, scale, resized,
    paddedHeight: h + ph, paddedWidth: w + pw, padBottom: ph, padRight: pw, padMode, factor, minSide,
  };
  const restore = (x: Tensor): Tensor => {
    const r = x.rank === 4 && x.shape[0] === 1 ? x.shape.slice(1) : x.shape;
    if (r.length !== 3 || r[0] !== 3 || r[1] !== h + ph || r[2] !== w + pw) {
      throw new ShapeError('restore', `needs [3,${h + ph},${w + pw}] (or with a batch of 1), got ${fmtShape(x.shape)}`);
    }
    return noGrad(() => tidy(() => {
      let v = (x.rank === 4 ? x.squeeze([0]) : x).narrow(1, 0, h).narrow(2, 0, w);
      if (resized) v = upsample(v.unsqueeze(0), { size: [H, W], mode: 'bilinear', alignCorners: false }).squeeze([0]);
      return v.add(1).div(2).clamp(0, 1);
    }));
  };
  return { y, restore, info };
}
