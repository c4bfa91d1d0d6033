/**
 * Image and kernel quality metrics on host arrays (row-major, float64 accumulation): MSE, PSNR, SSIM
 * (Wang, Bovik, Sheikh, Simoncelli, "Image quality assessment: from error visibility to structural
 * similarity", IEEE TIP 2004, with the paper's constants K1 = 0.01, K2 = 0.03 and its 11 x 11 Gaussian
 * window of std 1.5, 'valid' filtering as in the authors' ssim_index.m), and MNC, the maximum over
 * integer shifts of the normalised cross-correlation of two kernels (as used by Hu & Yang and by the
 * kernel-estimation literature: MNC = max_s <a, shift_s(b)> / (||a|| ||b||), zero outside the support).
 * Read a tensor with `await t.data()` first.
 */

function checkSameLength(op: string, a: ArrayLike<number>, b: ArrayLike<number>): void {
  if (a.length !== b.length) throw new RangeError(`${op}: arrays differ in length (${a.length} vs ${b.length})`);
  if (a.length === 0) throw new RangeError(`${op}: empty arrays`);
}

/** Mean squared error. */
export function mse(a: ArrayLike<number>, b: ArrayLike<number>): number {
  checkSameLength('mse', a, b);
  let s = 0; for (let i = 0; i < a.length; i++) { const d = a[i] - b[i]; s += d * d; }
  return s / a.length;
}

/** Kernel MSE: the mean squared difference of two kernels of the same size (as in ALGORITHM.md section 5). */
export const kernelMse = mse;

/** PSNR in dB for data in [0, dataRange] (default 1): 10 log10(range^2 / MSE); Infinity when equal. */
export function psnr(a: ArrayLike<number>, b: ArrayLike<number>, dataRange = 1): number {
  const m = mse(a, b);
  return m === 0 ? Infinity : 10 * Math.log10((dataRange * dataRange) / m);
}

/** Wang et al. 2004 constants. */
export const SSIM_K1 = 0.01;
export const SSIM_K2 = 0.03;
export const SSIM_WINDOW = 11;
export const SSIM_SIGMA = 1.5;

function gaussianWindow1d(n: number, sigma: number): Float64Array {
  const w = new Float64Array(n); const c = (n - 1) / 2; let s = 0;
  for (let i = 0; i < n; i++) { w[i] = Math.exp(-((i - c) ** 2) / (2 * sigma * sigma)); s += w[i]; }
  for (let i = 0; i < n; i++) w[i] /= s;
  return w;
}

/** 'valid' separable filtering of an h x w plane by the normalised window (outer product of w1). */
function filterValid(p: Float64Array, h: number, w: number, w1: Float64Array): Float64Array {
  const n = w1.length; const oh = h - n + 1; const ow = w - n + 1;
  const tmp = new Float64Array(h * ow);
  for (let y = 0; y < h; y++) for (let x = 0; x < ow; x++) {
    let s = 0; for (let k = 0; k < n; k++) s += w1[k] * p[y * w + x + k]; tmp[y * ow + x] = s;
  }
  const out = new Float64Array(oh * ow);
  for (let y = 0; y < oh; y++) for (let x = 0; x < ow; x++) {
    let s = 0; for (let k = 0; k < n; k++) s += w1[k] * tmp[(y + k) * ow + x]; out[y * ow + x] = s;
  }
  return out;
}

/** Mean SSIM of one h x w plane pair (offsets into the arrays). */
function ssimPlane(a: ArrayLike<number>, b: ArrayLike<number>, off: number, h: number, w: number, dataRange: number): number {
  const n = h * w;
  const A = new Float64Array(n), B = new Float64Array(n), AA = new Float64Array(n), BB = new Float64Array(n), AB = new Float64Array(n);
  for (let i = 0; i < n; i++) { const x = a[off + i], y = b[off + i]; A[i] = x; B[i] = y; AA[i] = x * x; BB[i] = y * y; AB[i] = x * y; }
  const w1 = gaussianWindow1d(SSIM_WINDOW, SSIM_SIGMA);
  const [ma, mb, saa, sbb, sab] = [A, B, AA, BB, AB].map((p) => filterValid(p, h, w, w1));
  const c1 = (SSIM_K1 * dataRange) ** 2; const c2 = (SSIM_K2 * dataRange) ** 2;
  let total = 0;
  for (let i = 0; i < ma.length; i++) {
    const mu1 = ma[i], mu2 = mb[i];
    const v1 = saa[i] - mu1 * mu1, v2 = sbb[i] - mu2 * mu2, cov = sab[i] - mu1 * mu2;
    total += ((2 * mu1 * mu2 + c1) * (2 * cov + c2)) / ((mu1 * mu1 + mu2 * mu2 + c1) * (v1 + v2 + c2));
  }
  return total / ma.length;
}

/**
 * SSIM of two images of shape [H, W] (gray) or [C, H, W] (the mean of the per-channel SSIMs), data in
 * [0, dataRange] (default 1). Images must be at least 11 x 11.
 */
export function ssim(a: ArrayLike<number>, b: ArrayLike<number>, shape: readonly number[], dataRange = 1): number {
  checkSameLength('ssim', a, b);
  const [c, h, w] = shape.length === 2 ? [1, shape[0], shape[1]] : shape.length === 3 ? shape : [NaN, NaN, NaN];
  if (!(c >= 1) || c * h * w !== a.length) throw new RangeError(`ssim: shape [${shape}] does not match ${a.length} values`);
  if (h < SSIM_WINDOW || w < SSIM_WINDOW) throw new RangeError(`ssim: image ${h}x${w} is smaller than the ${SSIM_WINDOW}x${SSIM_WINDOW} window`);
  let s = 0;
  for (let ch = 0; ch < c; ch++) s += ssimPlane(a, b, ch * h * w, h, w, dataRange);
  return s / c;
}

/** The bounding box [y0, y1, x0, x1] (inclusive) of the non-zero entries, or null if all are zero. */
function support(a: ArrayLike<number>, h: number, w: number): [number, number, number, number] | null {
  let y0 = h, y1 = -1, x0 = w, x1 = -1;
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) if (a[y * w + x] !== 0) {
    if (y < y0) y0 = y; if (y > y1) y1 = y; if (x < x0) x0 = x; if (x > x1) x1 = x;
  }
  return y1 < 0 ? null : [y0, y1, x0, x1];
}

/**
 * MNC of two kernels of the same shape [h, w] ([h, w] given as `shape`, default square): the maximum over
 * all integer shifts (dy, dx) of sum a(p) b(p + (dy, dx)) / (||a|| ||b||), with zeros outside the arrays
 * (linear, not circular, correlation). 1 for a kernel and any shift of it that stays inside the box.
 */
export function mnc(a: ArrayLike<number>, b: ArrayLike<number>, shape?: readonly [number, number]): number {
  checkSameLength('mnc', a, b);
  const side = Math.round(Math.sqrt(a.length));
  const [h, w] = shape ?? [side, side];
  if (h * w !== a.length) throw new RangeError(`mnc: shape [${shape}] does not match ${a.length} values`);
  let na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) { na += a[i] * a[i]; nb += b[i] * b[i]; }
  const sa = support(a, h, w), sb = support(b, h, w);
  if (!sa || !sb) return 0;
  let best = -Infinity;
  // Shifts for which the supports overlap: b's pixel q = p + s with p in sa and q in sb.
  for (let dy = sb[0] - sa[1]; dy <= sb[1] - sa[0]; dy++) for (let dx = sb[2] - sa[3]; dx <= sb[3] - sa[2]; dx++) {
    let s = 0;
    const ylo = Math.max(sa[0], sb[0] - dy), yhi = Math.min(sa[1], sb[1] - dy);
    const xlo = Math.max(sa[2], sb[2] - dx), xhi = Math.min(sa[3], sb[3] - dx);
    for (let y = ylo; y <= yhi; y++) {
      const ra = y * w, rb = (y + dy) * w + dx;
      for (let x = xlo; x <= xhi; x++) s += a[ra + x] * b[rb + x];
    }
    if (s > best) best = s;
  }
  return best / Math.sqrt(na * nb);
}
