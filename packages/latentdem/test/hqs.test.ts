import t from 'tap';
import { initBackend, memory, tensor, type Backend, type Tensor } from '@latentdem/tensor';
import { blurCircular, estimateKernel, otfToPsfCrop, projectKernel } from '../src/deblur/hqs.js';
import { motionKernelData } from '../src/deblur/motionblur.js';
import { kernelMse, mnc, mse, psnr, ssim } from '../src/deblur/metrics.js';

async function backends(): Promise<Backend[]> {
  const list: Backend[] = [await initBackend('cpu')];
  try { list.push(await initBackend('webgpu')); } catch (e) {
    if (process.env.CI === 'true') throw e;
    process.stderr.write(`\n*** WEBGPU TESTS SKIPPED: ${(e as Error).message} ***\n\n`);
  }
  return list;
}

/** A smooth-plus-texture test image [3, n, n] in [0, 1] from a small LCG (deterministic on every backend). */
function testImage(n: number, seed: number): Float32Array {
  const out = new Float32Array(3 * n * n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < out.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const c = Math.floor(i / (n * n)), p = i % (n * n), y = Math.floor(p / n), x = p % n;
    out[i] = 0.5 + 0.25 * Math.sin((x + 2 * c) / 5) * Math.cos(y / 7) + 0.25 * ((s >>> 8) / 16777216 - 0.5);
  }
  return out;
}

const argmax = (a: ArrayLike<number>): number => { let b = 0; for (let i = 1; i < a.length; i++) if (a[i] > a[b]) b = i; return b; };

t.test('blurCircular: the p2o centring moves kernel pixel (floor(ks/2), floor(ks/2)) to (0, 0)', async (t) => {
  const n = 16; const ks = 5;
  const img = new Float32Array(n * n); img[3 * n + 4] = 1;
  const k = new Float32Array(ks * ks); k[1 * ks + 3] = 1; // offset (-1, +1) from the centre (2, 2)
  const y = await blurCircular(tensor(img, { shape: [1, n, n], backend: 'cpu' }), tensor(k, { shape: [ks, ks], backend: 'cpu' })).data();
  t.equal(argmax(y), 2 * n + 5, 'impulse at (3,4) moves to (2,5)');
  t.ok(Math.abs(y[2 * n + 5] - 1) < 1e-5);
});

t.test('otfToPsfCrop inverts the p2o placement', async (t) => {
  const ks = 7; const n = 20;
  const k = Float32Array.from({ length: ks * ks }, (_, i) => i + 1);
  const full = new Float32Array(n * n);
  for (let y = 0; y < ks; y++) for (let x = 0; x < ks; x++) full[((y - 3 + n) % n) * n + ((x - 3 + n) % n)] = k[y * ks + x];
  const crop = otfToPsfCrop(tensor(full, { shape: [n, n], backend: 'cpu' }), ks);
  t.same(Array.from(await crop.contiguous().data()), Array.from(k));
});

t.test('projectKernel: non-negative, sum one', async (t) => {
  const p = await projectKernel(tensor([[-1, 1], [2, 1]], { backend: 'cpu' })).data();
  t.same(Array.from(p), [0, 0.25, 0.5, 0.25]);
});

for (const backend of await backends()) {
  t.test(`estimateKernel ${backend.name}: noiseless, x known -> the true kernel (small MSE, same argmax, MNC > 0.99)`, async (t) => {
    const n = 64; const ks = 15;
    const kTrue = motionKernelData({ size: ks, seed: 11 });
    const x = tensor(testImage(n, 5), { shape: [3, n, n], backend });
    const k = tensor(kTrue, { shape: [ks, ks], backend });
    const y = blurCircular(x, k);
    for (const channels of ['mean', 'joint'] as const) {
      const est = estimateKernel(x, y, { kernelSize: ks, iterations: 30, sigma: 1e-3, channels });
      const e = await est.data();
      const err = kernelMse(e, kTrue);
      let peak = 0; for (const v of kTrue) peak = Math.max(peak, v * v);
      t.ok(err < 1e-3 * peak, `${channels}: kernel MSE ${err.toExponential(2)} << peak^2 ${peak.toExponential(2)}`);
      t.equal(argmax(e), argmax(kTrue), `${channels}: argmax matches (a centring error would shift it)`);
      t.ok(mnc(e, kTrue) > 0.99, `${channels}: MNC ${mnc(e, kTrue).toFixed(4)}`);
      let s = 0, mn = Infinity; for (const v of e) { s += v; mn = Math.min(mn, v); }
      t.ok(Math.abs(s - 1) < 1e-4 && mn >= 0, `${channels}: projected (sum ${s}, min ${mn})`);
      est.dispose();
    }
    // A measurement whose kernel was placed with a different centre is recovered shifted.
    const shiftedY = blurCircular(x, tensor(kTrue, { shape: [ks, ks], backend }).pad([1, 0, 0, 0]).narrow(1, 0, ks));
    const eShift = await estimateKernel(x, shiftedY, { kernelSize: ks, iterations: 30, sigma: 1e-3 }).data();
    t.not(argmax(eShift), argmax(kTrue), 'a one-pixel centring error moves the argmax');
  });

  t.test(`estimateKernel ${backend.name}: one 'l2' (Tikhonov) iteration equals a float64 naive-DFT oracle`, async (t) => {
    const n = 8; const ks = 3; const h = 1; const alpha = 0.7; const mu = 1.3;
    const xs = testImage(n, 21).subarray(0, n * n); const ys = testImage(n, 22).subarray(0, n * n);
    // Naive DFT in float64: F[u][v] = sum x[p][q] e^{-2 pi i (u p + v q) / n}.
    const dft = (a: ArrayLike<number>): [number[], number[]] => {
      const re: number[] = []; const im: number[] = [];
      for (let u = 0; u < n; u++) for (let v = 0; v < n; v++) {
        let r = 0, i = 0;
        for (let p = 0; p < n; p++) for (let q = 0; q < n; q++) { const ph = (-2 * Math.PI * (u * p + v * q)) / n; r += a[p * n + q] * Math.cos(ph); i += a[p * n + q] * Math.sin(ph); }
        re.push(r); im.push(i);
      }
      return [re, im];
    };
    const [xr, xi] = dft(xs); const [yr, yi] = dft(ys);
    // The delta init at (h, h) becomes Z = 1 everywhere after p2o. K = (conj(X) Y + alpha Z) / (|X|^2 + alpha + mu).
    const kr = xr.map((_, f) => (xr[f] * yr[f] + xi[f] * yi[f] + alpha) / (xr[f] ** 2 + xi[f] ** 2 + alpha + mu));
    const ki = xr.map((_, f) => (xr[f] * yi[f] - xi[f] * yr[f]) / (xr[f] ** 2 + xi[f] ** 2 + alpha + mu));
    const full = (p: number, q: number): number => {
      let r = 0;
      for (let u = 0; u < n; u++) for (let v = 0; v < n; v++) { const ph = (2 * Math.PI * (u * p + v * q)) / n; r += kr[u * n + v] * Math.cos(ph) - ki[u * n + v] * Math.sin(ph); }
      return r / (n * n);
    };
    const crop: number[] = [];
    for (let i = 0; i < ks; i++) for (let j = 0; j < ks; j++) crop.push(Math.max(0, full((i - h + n) % n, (j - h + n) % n)));
    const total = crop.reduce((a, b) => a + b, 0);
    const want = crop.map((v) => v / total);
    const x = tensor(xs, { shape: [1, n, n], backend }); const y = tensor(ys, { shape: [1, n, n], backend });
    const got = await estimateKernel(x, y, { kernelSize: ks, iterations: 1, alpha, prior: 'l2', l2Weight: mu }).data();
    let err = 0; for (let i = 0; i < want.length; i++) err = Math.max(err, Math.abs(got[i] - want[i]));
    t.ok(err < 1e-5, `max |error| ${err.toExponential(2)}`);
    const none = await estimateKernel(x, y, { kernelSize: ks, iterations: 1, alpha, prior: 'none' }).data();
    t.ok(kernelMse(none, want) > 1e-6, `'none' differs from the Tikhonov step (mse ${kernelMse(none, want).toExponential(1)})`);
    t.throws(() => estimateKernel(x, y, { kernelSize: ks, alpha, prior: 'l2', l2Weight: -1 }), RangeError, 'negative l2Weight is refused');
    t.throws(() => estimateKernel(x, y, { kernelSize: ks, alpha, prior: 'l2' }), /needs l2Weight/, 'l2 without a weight is refused');
  });

  t.test(`estimateKernel ${backend.name}: release defaults with noise give a useful kernel; 'l2' with weight 0 equals 'none'; tidy`, async (t) => {
    const n = 128; const ks = 32;
    const kTrue = motionKernelData({ size: ks, seed: 4 });
    const x = tensor(testImage(n, 9), { shape: [3, n, n], backend });
    const yClean = blurCircular(x, tensor(kTrue, { shape: [ks, ks], backend }));
    const noise = new Float32Array(3 * n * n); let s = 12345;
    for (let i = 0; i < noise.length; i++) { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; noise[i] = 0.01 * Math.sqrt(12) * ((s >>> 8) / 16777216 - 0.5); }
    const y = yClean.add(tensor(noise, { shape: [3, n, n], backend }));
    const before = memory();
    const kNone = estimateKernel(x, y, { kernelSize: ks, sigma: 0.01, alpha: 1, iterations: 40 });
    const kL2 = estimateKernel(x, y, { kernelSize: ks, sigma: 0.01, alpha: 1, iterations: 40, prior: 'l2', l2Weight: 0 });
    let seenSigma = -1;
    const kFn = estimateKernel(x, y, { kernelSize: ks, iterations: 2, prior: (k, sg) => { seenSigma = sg; return k.mul(2); } });
    const after = memory();
    t.equal(after.tensors[backend.name] - before.tensors[backend.name], 3, 'only the three results stay alive');
    t.equal(seenSigma, Math.sqrt(1 / 5e6), 'prior sees sigma = sqrt(lambda / beta)');
    const a = await kNone.data(); const b = await kL2.data();
    t.ok(kernelMse(a, b) < 1e-14, `'l2' with weight 0 matches 'none' (mse ${kernelMse(a, b).toExponential(1)})`);
    const m = mnc(a, kTrue);
    t.ok(m > 0.8, `noisy recovery MNC ${m.toFixed(3)}`);
    for (const k of [kNone, kL2, kFn, x, y, yClean]) k.dispose();
  });
}

t.test('metrics: MSE / PSNR / SSIM / MNC identities and hand-computed values', async (t) => {
  t.equal(mse([0, 1, 2], [1, 1, 0]), 5 / 3);
  t.equal(psnr([0, 0, 0, 0], [0.1, 0.1, 0.1, 0.1]), 20);
  t.equal(psnr([0.5], [0.5]), Infinity);
  t.ok(Math.abs(psnr([0], [2]) - 10 * Math.log10(1 / 4)) < 1e-12, 'dataRange 1 by default');
  t.ok(Math.abs(psnr([0], [2], 255) - 10 * Math.log10(255 * 255 / 4)) < 1e-12, 'dataRange 255');
  const n = 24; const img = testImage(n, 3);
  t.ok(Math.abs(ssim(img, img, [3, n, n]) - 1) < 1e-12, 'SSIM(x, x) = 1');
  t.ok(Math.abs(ssim(img.subarray(0, n * n), img.subarray(0, n * n), [n, n]) - 1) < 1e-12, 'gray SSIM(x, x) = 1');
  // Constant images c1, c2: SSIM = (2 c1 c2 + C1) / (c1^2 + c2^2 + C1) (variances and covariance are zero).
  const c1 = 0.2, c2 = 0.6, C1 = 0.01 ** 2;
  const sc = ssim(new Float32Array(n * n).fill(c1), new Float32Array(n * n).fill(c2), [n, n]);
  t.ok(Math.abs(sc - (2 * c1 * c2 + C1) / (c1 * c1 + c2 * c2 + C1)) < 1e-6, `constant images: ${sc}`);
  const noisy = img.map((v, i) => v + 0.1 * Math.sin(i * 12.9898));
  const sn = ssim(img, noisy, [3, n, n]);
  t.ok(sn < 0.99 && sn > 0, `noisy SSIM ${sn} in (0, 0.99)`);
  t.ok(Math.abs(ssim(img, noisy, [3, n, n]) - ssim(noisy, img, [3, n, n])) < 1e-12, 'symmetric');
  // MNC: 1 for shifted copies, invariant to shifts, < 1 for different kernels, scale-invariant.
  const small = motionKernelData({ size: 16, seed: 8 });
  const embed = (oy: number, ox: number): Float32Array => {
    const out = new Float32Array(32 * 32);
    for (let y = 0; y < 16; y++) for (let x = 0; x < 16; x++) out[(y + oy) * 32 + x + ox] = small[y * 16 + x];
    return out;
  };
  const k = embed(4, 4); const shifted = embed(10, 13);
  t.ok(Math.abs(mnc(k, k) - 1) < 1e-12, 'MNC(k, k) = 1');
  t.ok(Math.abs(mnc(k, shifted) - 1) < 1e-6, `MNC(k, shift(k)) = 1: ${mnc(k, shifted)}`);
  t.ok(Math.abs(mnc(k, k.map((v) => 3 * v)) - 1) < 1e-12, 'scale-invariant');
  const other = motionKernelData({ size: 32, seed: 9 });
  t.ok(mnc(k, other) < 0.99, `different kernels: ${mnc(k, other)}`);
  t.ok(Math.abs(mnc(k, other) - mnc(other, k)) < 1e-12, 'symmetric');
  const a2 = [0, 0, 0, 1, 0, 0, 0, 0, 0]; const b2 = [0, 0, 0, 0, 0, 1, 0, 0, 0];
  t.equal(mnc(a2, b2), 1, 'two deltas at different places');
  t.equal(mnc([1, 1, 0, 0], [1, 0, 1, 0]), 0.5, 'hand value: [1 1; 0 0] vs [1 0; 1 0]');
});
