import t from 'tap';
import { Generator, ShapeError, initBackend, randn, tensor, type Backend, type Tensor } from '@latentdem/tensor';
import { RELEASE_MEASUREMENT, prepareMeasurement, releaseMeasurement, resizeArea, workingSize } from '../src/deblur/measurement.js';

async function backends(): Promise<Backend[]> {
  const list: Backend[] = [await initBackend('cpu')];
  try { list.push(await initBackend('webgpu')); } catch (e) {
    if (process.env.CI === 'true') throw e;
    process.stderr.write(`\n*** WEBGPU TESTS SKIPPED: ${(e as Error).message} ***\n\n`);
  }
  return list;
}

/** Deterministic values in [lo, hi) from a small LCG. */
function lcg(n: number, seed: number, lo = 0, hi = 1): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; out[i] = lo + (hi - lo) * (s / 4294967296); }
  return out;
}

const maxAbs = (a: ArrayLike<number>, b: ArrayLike<number>): number => { let m = 0; for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i])); return m; };
const data = async (x: Tensor): Promise<Float32Array> => new Float32Array(await x.data());

// ---- an independent float64 reference of the release pipeline (ALGORITHM.md section 1) ----
function minMax(a: Float64Array): Float64Array { let lo = Infinity; for (const v of a) lo = Math.min(lo, v); const s = a.map((v) => v - lo); let hi = 0; for (const v of s) hi = Math.max(hi, v); return s.map((v) => v / hi); }
/** PyTorch bilinear, align_corners=False, no antialias: [C,H,W] -> [C,n,n]. */
function bilinear(a: Float64Array, C: number, H: number, W: number, n: number): Float64Array {
  const out = new Float64Array(C * n * n);
  const src = (i: number, nin: number): [number, number, number] => {
    let s = (i + 0.5) * (nin / n) - 0.5; if (s < 0) s = 0;
    const i0 = Math.min(Math.floor(s), nin - 1); return [i0, Math.min(i0 + 1, nin - 1), s - i0];
  };
  for (let c = 0; c < C; c++) for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) {
    const [y0, y1, ly] = src(i, H), [x0, x1, lx] = src(j, W);
    const g = (y: number, x: number): number => a[c * H * W + y * W + x];
    out[c * n * n + i * n + j] = (1 - ly) * ((1 - lx) * g(y0, x0) + lx * g(y0, x1)) + ly * ((1 - lx) * g(y1, x0) + lx * g(y1, x1));
  }
  return out;
}
/** Circular convolution with the p2o centre c = floor(ks/2): y[i,j] = sum_ab k[a,b] x[(i-a+c) mod n, (j-b+c) mod n]. */
function circConv(x: Float64Array, C: number, n: number, k: Float32Array, ks: number): Float64Array {
  const out = new Float64Array(C * n * n); const c0 = Math.floor(ks / 2);
  const mod = (v: number): number => ((v % n) + n) % n;
  for (let c = 0; c < C; c++) for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) {
    let s = 0;
    for (let a = 0; a < ks; a++) for (let b = 0; b < ks; b++) s += k[a * ks + b] * x[c * n * n + mod(i - a + c0) * n + mod(j - b + c0)];
    out[c * n * n + i * n + j] = s;
  }
  return out;
}
function nearestUp(a: Float64Array, C: number, n: number, m: number): Float64Array {
  const out = new Float64Array(C * m * m);
  for (let c = 0; c < C; c++) for (let i = 0; i < m; i++) for (let j = 0; j < m; j++) out[c * m * m + i * m + j] = a[c * n * n + Math.floor((i * n) / m) * n + Math.floor((j * n) / m)];
  return out;
}

t.test('releaseMeasurement equals an independent float64 computation of the release pipeline (small sizes, both backends)', async (t) => {
  const H = 11, W = 7, n = 8, m = 16, ks = 3, sigma = 0.05;
  const img = lcg(3 * H * W, 3, 0.2, 0.9);
  const kraw = lcg(ks * ks, 5); const ksum = kraw.reduce((a, b) => a + b, 0); const k = kraw.map((v) => v / ksum);
  const noise = lcg(3 * n * n, 9, -2, 2);
  // reference
  const clean = bilinear(minMax(Float64Array.from(img)), 3, H, W, n);
  const blurred = circConv(clean, 3, n, k, ks);
  const noisy = blurred.map((v, i) => v + sigma * noise[i]);
  const yRef = minMax(nearestUp(noisy, 3, n, m)).map((v) => (v - 0.5) / 0.5);
  for (const backend of await backends()) {
    const r = releaseMeasurement(tensor(img, { shape: [3, H, W], backend }), tensor(k, { shape: [ks, ks], backend }),
      { size: n, upTo: m, sigma, noise: tensor(noise, { shape: [3, n, n], backend }) });
    t.same(r.y.shape, [3, m, m], `${backend.name}: y shape`);
    t.same(r.clean.shape, [3, n, n]);
    t.ok(maxAbs(await data(r.clean), clean) < 1e-5, `${backend.name}: steps 1-2 (min-max, bilinear) match`);
    t.ok(maxAbs(await data(r.blurred), blurred) < 1e-5, `${backend.name}: step 3 (circular blur, p2o centre) matches`);
    t.ok(maxAbs(await data(r.noisy), noisy) < 1e-5, `${backend.name}: step 4 (+ sigma noise) matches`);
    const y = await data(r.y);
    t.ok(maxAbs(y, yRef) < 2e-5, `${backend.name}: y (nearest up, min-max to [-1,1]) matches: ${maxAbs(y, yRef)}`);
    t.equal(Math.min(...y), -1); t.equal(Math.max(...y), 1);
    for (const x of Object.values(r)) x.dispose();
  }
});

t.test('releaseMeasurement at the release sizes: y [3,512,512] in [-1,1], seeded noise reproducible', async (t) => {
  const backend = await initBackend('cpu');
  const img = tensor(lcg(3 * 40 * 30, 1), { shape: [3, 40, 30], backend });
  const kd = new Float32Array(32 * 32); kd[16 * 32 + 16] = 0.5; kd[16 * 32 + 17] = 0.5;
  const k = tensor(kd, { shape: [32, 32], backend });
  const a = releaseMeasurement(img, k, { noise: 7 });
  const b = releaseMeasurement(img, k, { noise: new Generator(7) });
  t.same(a.y.shape, [3, RELEASE_MEASUREMENT.upTo, RELEASE_MEASUREMENT.upTo]);
  t.same(a.noisy.shape, [3, 256, 256]);
  const ya = await data(a.y);
  t.equal(maxAbs(ya, await data(b.y)), 0, 'seed 7 and Generator(7) draw the same noise');
  let lo = Infinity, hi = -Infinity; for (const v of ya) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  t.equal(lo, -1); t.equal(hi, 1);
  // nearest 2x: each 2x2 block is constant
  t.equal(ya[0], ya[1]); t.equal(ya[0], ya[512]); t.equal(ya[0], ya[513]);
  // noise std about 0.02 on [0,1]
  const nb = await data(a.noisy), bb = await data(a.blurred);
  let s2 = 0; for (let i = 0; i < nb.length; i++) s2 += (nb[i] - bb[i]) ** 2;
  const std = Math.sqrt(s2 / nb.length);
  t.ok(Math.abs(std - 0.02) < 0.001, `noise std ${std}`);
  t.throws(() => releaseMeasurement(img, tensor(new Float32Array(6), { shape: [2, 3], backend })), ShapeError);
  t.throws(() => releaseMeasurement(tensor(new Float32Array(4), { shape: [1, 2, 2], backend }), k), ShapeError);
  for (const r of [a, b]) for (const x of Object.values(r)) x.dispose();
});

t.test('resizeArea: box-filter averages (integer and fractional factors)', async (t) => {
  const backend = await initBackend('cpu');
  const x = tensor(Float32Array.from({ length: 16 }, (_, i) => i), { shape: [1, 4, 4], backend });
  t.same([...await resizeArea(x, 2, 2).data()], [2.5, 4.5, 10.5, 12.5]);
  const r = tensor(Float32Array.from([0, 3, 6]), { shape: [1, 1, 3], backend });
  const v = await resizeArea(r, 1, 2).data();
  t.ok(Math.abs(v[0] - 1) < 1e-6 && Math.abs(v[1] - 5) < 1e-6, `3 -> 2: (0 + 0.5*3)/1.5 = 1 and (0.5*3 + 6)/1.5 = 5, got ${[...v]}`);
  t.throws(() => resizeArea(x, 5, 2), ShapeError);
});

t.test('workingSize: the longer side becomes size, the other scales and rounds', async (t) => {
  t.same(workingSize(300, 200, 512), { height: 300, width: 200, scale: 1, resized: false });
  t.same(workingSize(600, 1000, 512), { height: 307, width: 512, scale: 0.512, resized: true });
  t.same(workingSize(1000, 1000, 256), { height: 256, width: 256, scale: 0.256, resized: true });
});

t.test('prepareMeasurement: pad to the factor, restore crops it back exactly (reflect, replicate; both backends)', async (t) => {
  const H = 37, W = 53;
  const img = lcg(3 * H * W, 11);
  for (const backend of await backends()) for (const pad of ['reflect', 'replicate'] as const) {
    const p = prepareMeasurement(tensor(img, { shape: [3, H, W], backend }), { factor: 8, pad });
    t.same(p.y.shape, [3, 40, 56], `${backend.name} ${pad}: padded to multiples of 8`);
    t.same([p.info.padBottom, p.info.padRight, p.info.resized], [3, 3, false]);
    const y = await data(p.y);
    t.ok(Math.abs(y[0] - (2 * img[0] - 1)) < 1e-6, 'y = 2 photo - 1');
    // the padded strip
    const row = 10;
    const at = (c: number, i: number, j: number): number => y[c * 40 * 56 + i * 56 + j];
    const src = (c: number, i: number, j: number): number => 2 * img[c * H * W + i * W + j] - 1;
    if (pad === 'reflect') t.ok(Math.abs(at(1, row, 53) - src(1, row, 51)) < 1e-6 && Math.abs(at(2, 38, 4) - src(2, 34, 4)) < 1e-6, 'reflect mirrors without the edge');
    else t.ok(Math.abs(at(1, row, 55) - src(1, row, 52)) < 1e-6 && Math.abs(at(2, 39, 4) - src(2, 36, 4)) < 1e-6, 'replicate repeats the edge');
    const back = p.restore(p.y);
    t.same(back.shape, [3, H, W]);
    const b = await data(back);
    t.ok(maxAbs(b, img) < 1e-6, `${backend.name} ${pad}: restore(y) = photo to ${maxAbs(b, img)}`);
    t.ok(b.every((v, i) => Math.round(v * 255) === Math.round(img[i] * 255)), 'identical after 8-bit rounding');
    const batched = p.restore(p.y.unsqueeze(0));
    t.equal(maxAbs(await data(batched), b), 0, 'a batch of one is accepted');
    t.throws(() => p.restore(randn([3, 40, 48], { backend })), ShapeError);
    for (const x of [p.y, back, batched]) x.dispose();
  }
});

t.test('prepareMeasurement: gray -> RGB, downscale to size, restore to the input size', async (t) => {
  const backend = await initBackend('cpu');
  const g = lcg(20 * 30, 2);
  const p = prepareMeasurement(tensor(g, { shape: [1, 20, 30], backend }), { factor: 4 });
  t.same(p.y.shape, [3, 20, 32]);
  const y = await data(p.y);
  t.equal(maxAbs(y.subarray(0, 640), y.subarray(640, 1280)), 0, 'gray replicated');
  t.equal(p.info.channels, 1);
  const r = await data(p.restore(p.y));
  t.ok(maxAbs(r.subarray(0, 600), g) < 1e-6 && maxAbs(r.subarray(1200), g) < 1e-6, 'restore gives the gray photo in each channel');

  // 60 x 100 with size 50: working 30 x 50, padded to 32 x 56 (factor 8); restore back to 60 x 100.
  const c = new Float32Array(3 * 60 * 100).fill(0.25);
  const q = prepareMeasurement(tensor(c, { shape: [3, 60, 100], backend }), { factor: 8, size: 50 });
  t.same(q.y.shape, [3, 32, 56]);
  t.same([q.info.workHeight, q.info.workWidth, q.info.scale, q.info.resized], [30, 50, 0.5, true]);
  const back = await data(q.restore(q.y));
  t.equal(back.length, 3 * 60 * 100);
  t.ok(maxAbs(back, c) < 1e-6, 'a constant photo survives downscale + upscale');
  // a photo within size is not resized
  t.equal(prepareMeasurement(tensor(c, { shape: [3, 60, 100], backend }), { factor: 8, size: 100 }).info.resized, false);
});

t.test('prepareMeasurement: unsupported channels and too-small images are ShapeErrors that say so', async (t) => {
  const backend = await initBackend('cpu');
  t.throws(() => prepareMeasurement(tensor(new Float32Array(2 * 16 * 16), { shape: [2, 16, 16], backend }), { factor: 8 }), { name: 'ShapeError', message: /unsupported channel count 2/ });
  t.throws(() => prepareMeasurement(tensor(new Float32Array(4 * 16 * 16), { shape: [4, 16, 16], backend }), { factor: 8 }), { name: 'ShapeError', message: /unsupported channel count 4 \(RGBA\?\)/ });
  t.throws(() => prepareMeasurement(tensor(new Float32Array(16 * 16), { shape: [16, 16], backend }), { factor: 8 }), ShapeError);
  t.throws(() => prepareMeasurement(tensor(new Float32Array(3 * 12 * 40), { shape: [3, 12, 40], backend }), { factor: 8, minSide: 16 }), { name: 'ShapeError', message: /40x12 is too small: each side must be at least 16 px/ });
  t.throws(() => prepareMeasurement(tensor(new Float32Array(3 * 5 * 40), { shape: [3, 5, 40], backend }), { factor: 8 }), { message: /at least 8 px/ }, 'the minimum is at least the factor');
  t.throws(() => prepareMeasurement(tensor(new Float32Array(3 * 40 * 400), { shape: [3, 40, 400], backend }), { factor: 8, size: 200, minSide: 32 }), { message: /400x40 \(200x20 after downscaling to the working size 200\) is too small/ });
  t.throws(() => prepareMeasurement(tensor(new Float32Array(3 * 16 * 16), { shape: [3, 16, 16], backend }), { factor: 0 }), RangeError);
});
