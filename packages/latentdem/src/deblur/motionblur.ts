/**
 * Camera-shake blur kernels: a random trajectory in the spirit of Boracchi & Foi, "Modeling the
 * performance of image restoration from motion blur" (IEEE TIP 2012), following the generator that
 * BlindDPS / DPS / LatentDEM use: LeviBorodenko/motionblur `motionblur.py` (commit 5781378,
 * `Kernel._createPath` and `Kernel._createKernel`), with size 64 and intensity 0.5 by default.
 *
 * Same as the original: the distributions and constants of the trajectory (max path length
 * 0.75 * diagonal * (U(0,1) + U(0, I^2)); steps Beta(1,30) * (1 - I + 0.1) * diagonal, kept only when shorter
 * than the max length; max angle U(0, I pi); jitter Beta(2,20); first angle U(-max, max); next angles
 * |.| ~ Triangular(0, I max, max + 0.1) with a sign flip of probability jitter; path = cumulative sum of
 * the increments, centred on the mean of its vertices, rotated by U(0, pi), moved to the canvas centre),
 * drawn on a canvas of twice the size, line width floor(diag/150), Gaussian blur of std floor(diag/100),
 * downscaled by two, quantised to 8 bits (which cuts the faint tails as the original's uint8 image does),
 * normalised to sum 1. `diag` is the diagonal of the 2x canvas. `eps` = 0.1 as in the original.
 *
 * Differences (bit-exactness with numpy + PIL is not a goal):
 * - Random numbers come from splitmix64 (the portable generator of noise.ts) instead of numpy's MT19937,
 *   and Beta/triangular draws use inverse CDFs / sums of exponentials instead of numpy's samplers.
 * - The polyline is rasterised by splatting points every 1/4 pixel along each segment with bilinear
 *   weights and taking the per-pixel maximum (an anti-aliased line of width ~1 whose value is 1 on the
 *   path), instead of PIL's aliased `ImageDraw.line`; wider lines (sizes >= 107) use a disk of that width.
 * - PIL's GaussianBlur (an extended box-blur approximation) is replaced by an exact sampled Gaussian
 *   (truncated at 3 std), and the Lanczos downscale by a 2x2 box average.
 * - Pixel centres are at integer canvas coordinates (PIL's convention for drawing), so the canvas centre
 *   (size, size) lands at kernel coordinate (size - 0.5) / 2, about as in the original.
 */
import { tensor, type Backend, type BackendName, type Tensor } from '@latentdem/tensor';
import { portableUniform } from './noise.js';

export interface MotionKernelOptions {
  /** Kernel side in pixels (default 64, as LatentDEM's M-step kernel). */
  size?: number;
  /** 0 = nearly straight motion, 1 = highly curved (default 0.5, the DPS / LatentDEM setting). */
  intensity?: number;
  /** Seed of the splitmix64 stream (default 0). */
  seed?: number;
}

/** motionblur.py: `eps = 0.1` ("tiny error used for numerical stability"). */
const EPS = 0.1;

/** A seeded stream of float64 uniforms in (0, 1) with the samplers the generator needs. */
class Rng {
  private i = 0;
  private readonly s: bigint;
  constructor(seed: number) { this.s = BigInt(seed) << 32n; }
  uniform(lo = 0, hi = 1): number { return lo + (hi - lo) * portableUniform(this.s, this.i++); }
  /** Beta(1, b) by inverse CDF: 1 - (1-u)^(1/b). */
  beta1(b: number): number { return 1 - Math.pow(this.uniform(), 1 / b); }
  /** Beta(a, b) for integer a, b from Gamma(n) = sum of n Exp(1). */
  betaInt(a: number, b: number): number {
    const gamma = (n: number): number => { let s = 0; for (let k = 0; k < n; k++) s -= Math.log(this.uniform()); return s; };
    const x = gamma(a); return x / (x + gamma(b));
  }
  /** Triangular(left, mode, right) by inverse CDF. */
  triangular(left: number, mode: number, right: number): number {
    const u = this.uniform(); const f = (mode - left) / (right - left);
    return u < f ? left + Math.sqrt(u * (right - left) * (mode - left)) : right - Math.sqrt((1 - u) * (right - left) * (right - mode));
  }
}

/** The trajectory's vertices on the 2x canvas (x = column, y = row). */
function trajectory(rng: Rng, canvas: number, intensity: number): [number, number][] {
  const diag = Math.SQRT2 * canvas;
  const maxLen = 0.75 * diag * (rng.uniform() + rng.uniform(0, intensity ** 2));
  const steps: number[] = [];
  let total = 0;
  while (total < maxLen) {
    const step = rng.beta1(30) * (1 - intensity + EPS) * diag;
    if (step < maxLen) { steps.push(step); total += step; }
  }
  const maxAngle = rng.uniform(0, intensity * Math.PI);
  const jitter = rng.betaInt(2, 20);
  const angles = [rng.uniform(-maxAngle, maxAngle)];
  while (angles.length < steps.length) {
    let a = rng.triangular(0, intensity * maxAngle, maxAngle + EPS);
    const prevSign = Math.sign(angles[angles.length - 1]);
    a *= rng.uniform() < jitter ? -prevSign : prevSign;
    angles.push(a);
  }
  let re = 0, im = 0;
  const path: [number, number][] = [];
  for (let i = 0; i < steps.length; i++) { re += steps[i] * Math.cos(angles[i]); im += steps[i] * Math.sin(angles[i]); path.push([re, im]); }
  const cx = path.reduce((s, p) => s + p[0], 0) / path.length;
  const cy = path.reduce((s, p) => s + p[1], 0) / path.length;
  const rot = rng.uniform(0, Math.PI);
  const c = Math.cos(rot), s = Math.sin(rot);
  return path.map(([x, y]) => { const dx = x - cx, dy = y - cy; return [dx * c - dy * s + canvas / 2, dx * s + dy * c + canvas / 2]; });
}

function drawPolyline(img: Float64Array, n: number, path: readonly [number, number][], width: number): void {
  const r = Math.max(0, (width - 1) / 2);
  const plot = (x: number, y: number, v: number): void => {
    if (x < 0 || y < 0 || x >= n || y >= n) return;
    const i = y * n + x; if (v > img[i]) img[i] = v;
  };
  const splat = (px: number, py: number): void => {
    if (r >= 0.5) {
      for (let y = Math.floor(py - r); y <= Math.ceil(py + r); y++) for (let x = Math.floor(px - r); x <= Math.ceil(px + r); x++) {
        const d = Math.hypot(x - px, y - py); plot(x, y, Math.min(1, Math.max(0, r + 0.5 - d)));
      }
      return;
    }
    const x0 = Math.floor(px), y0 = Math.floor(py), fx = px - x0, fy = py - y0;
    plot(x0, y0, (1 - fx) * (1 - fy)); plot(x0 + 1, y0, fx * (1 - fy));
    plot(x0, y0 + 1, (1 - fx) * fy); plot(x0 + 1, y0 + 1, fx * fy);
  };
  if (path.length === 1) splat(path[0][0], path[0][1]);
  for (let k = 1; k < path.length; k++) {
    const [ax, ay] = path[k - 1]; const [bx, by] = path[k];
    const m = Math.max(1, Math.ceil(4 * Math.hypot(bx - ax, by - ay)));
    for (let t = 0; t <= m; t++) splat(ax + ((bx - ax) * t) / m, ay + ((by - ay) * t) / m);
  }
}

/** Separable Gaussian blur with zero boundary, std `sigma`, truncated at 3 std. */
function gaussianBlur(img: Float64Array, n: number, sigma: number): Float64Array {
  if (sigma <= 0) return img;
  const rad = Math.ceil(3 * sigma);
  const w = Array.from({ length: 2 * rad + 1 }, (_, i) => Math.exp(-((i - rad) ** 2) / (2 * sigma * sigma)));
  const ws = w.reduce((a, b) => a + b, 0);
  const tmp = new Float64Array(n * n); const out = new Float64Array(n * n);
  for (let y = 0; y < n; y++) for (let x = 0; x < n; x++) {
    let s = 0; for (let k = -rad; k <= rad; k++) { const xx = x + k; if (xx >= 0 && xx < n) s += w[k + rad] * img[y * n + xx]; }
    tmp[y * n + x] = s / ws;
  }
  for (let y = 0; y < n; y++) for (let x = 0; x < n; x++) {
    let s = 0; for (let k = -rad; k <= rad; k++) { const yy = y + k; if (yy >= 0 && yy < n) s += w[k + rad] * tmp[yy * n + x]; }
    out[y * n + x] = s / ws;
  }
  return out;
}

/** A camera-shake kernel [size * size] (row-major), non-negative, summing to one; same seed, same kernel. */
export function motionKernelData(o: MotionKernelOptions = {}): Float32Array {
  const size = o.size ?? 64; const intensity = o.intensity ?? 0.5; const seed = o.seed ?? 0;
  if (!Number.isInteger(size) || size < 1) throw new RangeError(`motionKernel: size ${size} is not a positive integer`);
  if (!(intensity >= 0 && intensity <= 1)) throw new RangeError(`motionKernel: intensity ${intensity} is not in [0, 1]`);
  if (!Number.isInteger(seed) || seed < 0 || seed >= 2 ** 31) throw new RangeError(`motionKernel: seed ${seed} is not an integer in [0, 2^31)`);
  const n = 2 * size;
  const diag = Math.SQRT2 * n;
  const rng = new Rng(seed);
  const canvas = new Float64Array(n * n);
  // motionblur.py `_createKernel`: line width int(DIAGONAL / 150), GaussianBlur radius int(DIAGONAL * 0.01).
  drawPolyline(canvas, n, trajectory(rng, n, intensity), Math.max(1, Math.floor(diag / 150)));
  const blurred = gaussianBlur(canvas, n, Math.floor(diag * 0.01));
  const out = new Float32Array(size * size);
  const q = new Float64Array(size * size);
  let total = 0;
  for (let y = 0; y < size; y++) for (let x = 0; x < size; x++) {
    const i = 2 * y * n + 2 * x;
    const v = (blurred[i] + blurred[i + 1] + blurred[i + n] + blurred[i + n + 1]) / 4;
    q[y * size + x] = Math.round(255 * Math.min(1, v));
    total += q[y * size + x];
  }
  if (total === 0) { out[Math.floor(size / 2) * size + Math.floor(size / 2)] = 1; return out; }
  for (let i = 0; i < q.length; i++) out[i] = q[i] / total;
  return out;
}

/** The kernel of `motionKernelData` as a float32 tensor [size, size]. */
export function motionKernel(o: MotionKernelOptions & { backend?: BackendName | Backend } = {}): Tensor {
  const size = o.size ?? 64;
  return tensor(motionKernelData(o), { shape: [size, size], backend: o.backend });
}
