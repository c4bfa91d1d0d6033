/** 2-D FFT of complex data held as (re, im) pairs, and image-kernel convolution through it. */
import { ShapeError, fmtShape } from '../errors.js';
import { record } from '../autodiff.js';
import { sameShape } from '../shape.js';
import type { Tensor } from '../tensor.js';
import { backendOf, empty, launch, requireFloat, scalarOn } from './core.js';
import { composite } from './composite.js';
import { add, mul, sub } from './elementwise.js';
import { expand, narrow, pad, roll } from './views.js';

function fftPrimitive(re: Tensor, im: Tensor | null, inverse: boolean): [Tensor, Tensor] {
  const name = inverse ? 'ifft2' : 'fft2';
  const zero = im ? null : scalarOn(0, re.backend);
  const imag = im ?? expand(zero!, re.shape);
  const b = backendOf(name, re, imag);
  requireFloat(name, re, imag);
  if (re.rank < 2 || !sameShape(re.shape, imag.shape)) throw new ShapeError(name, `needs re and im of equal shape [..., H, W], got ${fmtShape(re.shape)} and ${fmtShape(imag.shape)}`);
  const outRe = empty(b, re.shape, 'float32');
  const outIm = empty(b, re.shape, 'float32');
  launch(name, b, [re, imag], [outRe, outIm], () => b.fft2(re, imag, inverse, outRe.storage, outIm.storage));
  if (zero) { outRe.own(zero); outRe.own(imag); }
  const hw = re.shape[re.rank - 1] * re.shape[re.rank - 2];
  // The adjoint of the unnormalized DFT F is conj(F) = HW * ifft; the adjoint of ifft is fft / HW.
  record(name, im ? [re, im] : [re], [outRe, outIm], ([gr, gi]) => {
    const r = gr ?? mul(outRe, 0);
    const i = gi ?? mul(outIm, 0);
    const [ar, ai] = fftPrimitive(r, i, !inverse);
    const s = inverse ? 1 / hw : hw;
    return im ? [mul(ar, s), mul(ai, s)] : [mul(ar, s)];
  });
  return [outRe, outIm];
}

/** Forward 2-D DFT over the last two axes: sum x e^{-2 pi i (k n / N)}. `im` defaults to zeros. */
export function fft2(re: Tensor, im: Tensor | null = null): [Tensor, Tensor] { return fftPrimitive(re, im, false); }
/** Inverse 2-D DFT (divides by H*W). */
export function ifft2(re: Tensor, im: Tensor | null = null): [Tensor, Tensor] { return fftPrimitive(re, im, true); }

/** (a + ib)(c + id). */
export function complexMul(ar: Tensor, ai: Tensor, br: Tensor, bi: Tensor): [Tensor, Tensor] {
  return [sub(mul(ar, br), mul(ai, bi)), add(mul(ar, bi), mul(ai, br))];
}

/**
 * The transfer function (OTF) of a point-spread function `psf` [..., kh, kw] on an [H, W] grid: the kernel
 * zero-padded to H x W and rolled so its centre (floor(kh/2), floor(kw/2)) sits at (0, 0) — MATLAB's
 * psf2otf convention. Returns the (re, im) of its FFT.
 */
export function psf2otf(psf: Tensor, [h, w]: readonly [number, number]): [Tensor, Tensor] {
  const kh = psf.shape[psf.rank - 2];
  const kw = psf.shape[psf.rank - 1];
  if (kh > h || kw > w) throw new ShapeError('psf2otf', `kernel ${fmtShape(psf.shape)} is larger than the ${h}x${w} grid`);
  return composite([psf], () => {
    const padded = pad(psf, [0, w - kw, 0, h - kh]);
    const centred = roll(padded, [-Math.floor(kh / 2), -Math.floor(kw / 2)], [-2, -1]);
    return fft2(centred);
  });
}

export interface FftConvOptions {
  /**
   * 'circular': periodic boundary (output = ifft(fft(x) * otf)); 'same': zero padding, output the size of
   * the image, i.e. y[i,j] = sum_{u,v} x[i-u+ch, j-v+cw] k[u,v] with x = 0 outside (ch = floor(kh/2)).
   */
  mode?: 'circular' | 'same';
}

const nextPow2 = (n: number): number => 2 ** Math.ceil(Math.log2(Math.max(n, 1)));

/** Convolution of images [..., H, W] with a kernel [..., kh, kw] (broadcast over leading axes) through the FFT. */
export function fftConv2d(x: Tensor, kernel: Tensor, o: FftConvOptions = {}): Tensor {
  requireFloat('fftConv2d', x, kernel);
  if (x.rank < 2 || kernel.rank < 2) throw new ShapeError('fftConv2d', `needs [..., H, W] inputs, got ${fmtShape(x.shape)} and ${fmtShape(kernel.shape)}`);
  const mode = o.mode ?? 'circular';
  const h = x.shape[x.rank - 2]; const w = x.shape[x.rank - 1];
  const kh = kernel.shape[kernel.rank - 2]; const kw = kernel.shape[kernel.rank - 1];
  return composite([x, kernel], () => {
    if (mode === 'circular') {
      const [or, oi] = psf2otf(kernel, [h, w]);
      const [xr, xi] = fft2(x);
      const [yr, yi] = complexMul(xr, xi, or, oi);
      return ifft2(yr, yi)[0];
    }
    if (mode !== 'same') throw new ShapeError('fftConv2d', `unknown mode '${String(mode)}'`);
    // Padding to >= H + kh - 1 removes wrap-around; powers of two keep the FFT fast.
    const ph = nextPow2(h + kh - 1); const pw = nextPow2(w + kw - 1);
    const xp = pad(x, [0, pw - w, 0, ph - h]);
    const [or, oi] = psf2otf(kernel, [ph, pw]);
    const [xr, xi] = fft2(xp);
    const [yr, yi] = complexMul(xr, xi, or, oi);
    const y = ifft2(yr, yi)[0];
    return narrow(narrow(y, -2, 0, h), -1, 0, w);
  });
}
