import t from 'tap';
import * as math from 'mathjs';
import { contiguousStrides, type View } from '../src/backend.js';
import { CpuStorage } from '../src/backends/cpu/storage.js';
import { fft2 as cpuFft2 } from '../src/backends/cpu/fft.js';
import { gpuContext } from './helpers.js';
import type { GpuContext, GpuStorage } from '../src/backends/webgpu/context.js';
import { ShapeError } from '../src/errors.js';

const { ctx: gpuCtx, skip: gpuSkip } = await gpuContext();

/** Deterministic values in [-1, 1) (a 32-bit LCG), so failures reproduce. */
function randomArray(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; out[i] = s / 2 ** 31 - 1; }
  return out;
}

const numel = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);
const cpuView = (data: Float32Array, shape: number[], strides = contiguousStrides(shape), offset = 0): View =>
  ({ storage: new CpuStorage('float32', data), shape, strides, offset });

function cpuRun(re: View, im: View, inverse: boolean): [Float32Array, Float32Array] {
  const n = numel(re.shape);
  const oR = new CpuStorage('float32', new Float32Array(n)), oI = new CpuStorage('float32', new Float32Array(n));
  cpuFft2(re, im, inverse, oR, oI);
  return [oR.data as Float32Array, oI.data as Float32Array];
}

/** max |a - b| over both parts, divided by the largest |b|. */
function relErr(aR: ArrayLike<number>, aI: ArrayLike<number>, bR: ArrayLike<number>, bI: ArrayLike<number>): number {
  let err = 0, mag = 0;
  for (let i = 0; i < bR.length; i++) {
    err = Math.max(err, Math.abs(aR[i] - bR[i]), Math.abs(aI[i] - bI[i]));
    mag = Math.max(mag, Math.hypot(bR[i], bI[i]));
  }
  return err / Math.max(mag, 1e-30);
}

t.test('fft2 cpu: equals mathjs fft on 4x8, 16x16, 5x6 (non power of two), 3x1, 1x7', async (t) => {
  for (const [h, w] of [[4, 8], [16, 16], [5, 6], [3, 1], [1, 7]]) {
    const re = randomArray(h * w, h * 100 + w), im = randomArray(h * w, h * 100 + w + 1);
    const [oR, oI] = cpuRun(cpuView(re, [h, w]), cpuView(im, [h, w]), false);
    const m = Array.from({ length: h }, (_, r) => Array.from({ length: w }, (_, c) => math.complex(re[r * w + c], im[r * w + c])));
    const f = (math.fft(m) as unknown as math.Complex[][]).flat();
    const e = relErr(oR, oI, f.map((z) => z.re), f.map((z) => z.im));
    t.ok(e < 1e-6, `${h}x${w}: relative error vs mathjs ${e.toExponential(2)}`);
  }
});

t.test('fft2 cpu: the inverse divides by H*W and undoes the forward, batched [2,3,8,8] and [2,6,5]', async (t) => {
  for (const shape of [[2, 3, 8, 8], [2, 6, 5]]) {
    const n = numel(shape);
    const re = randomArray(n, 1), im = randomArray(n, 2);
    const [fR, fI] = cpuRun(cpuView(re, shape), cpuView(im, shape), false);
    const [bR, bI] = cpuRun(cpuView(fR, shape), cpuView(fI, shape), true);
    const e = relErr(bR, bI, re, im);
    t.ok(e < 1e-6, `[${shape}]: relative round-trip error ${e.toExponential(2)}`);
    // the DC term of the forward transform of one slice is its sum
    const [h, w] = shape.slice(-2);
    let sum = 0;
    for (let i = 0; i < h * w; i++) sum += re[i];
    t.ok(Math.abs(fR[0] - sum) < 1e-4, `[${shape}]: DC term ${fR[0]} equals the sum ${sum}`);
  }
});

t.test('fft2 cpu: strided (transposed, offset) inputs equal contiguous ones', async (t) => {
  const [h, w] = [6, 8];
  const base = randomArray(2 * h * w + 3, 9);
  // storage holds re^T then im^T as [w, h] blocks after 3 padding elements; the views transpose back
  const reT: View = { storage: new CpuStorage('float32', base), shape: [h, w], strides: [1, h], offset: 3 };
  const imT: View = { storage: reT.storage, shape: [h, w], strides: [1, h], offset: 3 + h * w };
  const re = new Float32Array(h * w), im = new Float32Array(h * w);
  for (let r = 0; r < h; r++) for (let c = 0; c < w; c++) { re[r * w + c] = base[3 + c * h + r]; im[r * w + c] = base[3 + h * w + c * h + r]; }
  const [aR, aI] = cpuRun(reT, imT, false);
  const [bR, bI] = cpuRun(cpuView(re, [h, w]), cpuView(im, [h, w]), false);
  t.same(Array.from(aR), Array.from(bR));
  t.same(Array.from(aI), Array.from(bI));
});

t.test('fft2 cpu: rejects rank < 2 and mismatched shapes with ShapeError', async (t) => {
  const x = cpuView(new Float32Array(4), [4]);
  t.throws(() => cpuRun(x, x, false), ShapeError);
  t.throws(() => cpuRun(cpuView(new Float32Array(4), [2, 2]), cpuView(new Float32Array(4), [1, 4]), false), ShapeError);
});

async function gpuRun(ctx: GpuContext, re: View, im: View, inverse: boolean): Promise<[Float32Array, Float32Array]> {
  const { fft2 } = await import('../src/backends/webgpu/fft.js');
  const n = numel(re.shape);
  const oR = ctx.alloc(n, 'float32'), oI = ctx.alloc(n, 'float32');
  fft2(ctx, re, im, inverse, oR, oI);
  const [a, b] = await Promise.all([ctx.readBytes(oR.buffer, 0, n * 4), ctx.readBytes(oI.buffer, 0, n * 4)]);
  ctx.free(oR); ctx.free(oI);
  return [new Float32Array(a), new Float32Array(b)];
}

function upload(ctx: GpuContext, data: Float32Array): GpuStorage {
  const s = ctx.alloc(data.length, 'float32');
  ctx.writeBuffer(s.buffer, data);
  return s;
}

/** The same logical [..., H, W] data as a contiguous view, or stored as [..., W, H] and viewed transposed. */
function layouts(data: Float32Array, shape: number[], transposed: boolean): { stored: Float32Array; strides: number[] } {
  if (!transposed) return { stored: data, strides: contiguousStrides(shape) };
  const r = shape.length, h = shape[r - 2], w = shape[r - 1];
  const stored = new Float32Array(data.length);
  for (let b = 0; b < data.length / (h * w); b++)
    for (let i = 0; i < h; i++) for (let j = 0; j < w; j++) stored[b * h * w + j * h + i] = data[b * h * w + i * w + j];
  const strides = contiguousStrides([...shape.slice(0, -2), w, h]);
  return { stored, strides: [...strides.slice(0, -2), strides[r - 1], strides[r - 2]] };
}

t.test('fft2 webgpu: equals cpu on [3,2,64,32], [1,256,256], non-pow2 [2,12,10], [1,240,250], [2,7,9], [5,1,1], [2,1,16], transposed views, forward and inverse',
  { skip: gpuSkip }, async (t) => {
    const ctx = gpuCtx!;
    const cases: Array<[number[], boolean]> = [
      [[3, 2, 64, 32], false], [[1, 256, 256], false], [[2, 12, 10], false], [[1, 240, 250], false], [[2, 7, 9], false],
      [[5, 1, 1], false], [[2, 1, 16], false],
      [[2, 12, 10], true], [[3, 2, 64, 32], true], [[2, 8, 3], true],
    ];
    const live0 = ctx.liveBytes;
    for (const [shape, transposed] of cases) {
      const n = numel(shape);
      const re = randomArray(n, n + 1), im = randomArray(n, n + 2);
      const R = layouts(re, shape, transposed), I = layouts(im, shape, transposed);
      const sR = upload(ctx, R.stored), sI = upload(ctx, I.stored);
      for (const inverse of [false, true]) {
        const [cR, cI] = cpuRun(cpuView(R.stored, shape, R.strides), cpuView(I.stored, shape, I.strides), inverse);
        const [gR, gI] = await gpuRun(ctx,
          { storage: sR, shape, strides: R.strides, offset: 0 }, { storage: sI, shape, strides: I.strides, offset: 0 }, inverse);
        const e = relErr(gR, gI, cR, cI);
        t.ok(e < 1e-5, `[${shape}]${transposed ? ' transposed' : ''} ${inverse ? 'inverse' : 'forward'}: max error / max |X| = ${e.toExponential(2)}`);
      }
      ctx.free(sR); ctx.free(sI);
    }
    t.equal(ctx.liveBytes, live0, 'temporaries are freed');
  });

t.test('fft2 webgpu: re and im at offsets in one storage; inverse(forward(x)) == x', { skip: gpuSkip }, async (t) => {
  const ctx = gpuCtx!;
  const shape = [2, 16, 24];
  const n = numel(shape);
  const both = randomArray(2 * n + 5, 77);
  const s = upload(ctx, both);
  const strides = contiguousStrides(shape);
  const re: View = { storage: s, shape, strides, offset: 5 }, im: View = { storage: s, shape, strides, offset: 5 + n };
  const [gR, gI] = await gpuRun(ctx, re, im, false);
  const [cR, cI] = cpuRun(cpuView(both, shape, strides, 5), cpuView(both, shape, strides, 5 + n), false);
  t.ok(relErr(gR, gI, cR, cI) < 1e-5, 'forward equals cpu');
  const fR = upload(ctx, gR), fI = upload(ctx, gI);
  const [bR, bI] = await gpuRun(ctx, { storage: fR, shape, strides, offset: 0 }, { storage: fI, shape, strides, offset: 0 }, true);
  const e = relErr(bR, bI, both.subarray(5, 5 + n), both.subarray(5 + n, 5 + 2 * n));
  t.ok(e < 1e-6, `round trip relative error ${e.toExponential(2)}`);
  ctx.free(s); ctx.free(fR); ctx.free(fI);
});
