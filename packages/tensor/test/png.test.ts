import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PNG } from 'pngjs';
import { ImageError, ShapeError } from '../src/errors.js';
import { decodePng, encodePng, readPng, writePng } from '../src/png.js';

/** Values on the 8-bit grid k/255, so an encode/decode round trip is exact up to float32 rounding. */
function grid(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = ((i * 37 + seed * 11) % 256) / 255;
  return out;
}

const maxAbs = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
};

t.test('png: gray [1,H,W] and [H,W] and RGB [3,H,W] round-trip through bytes', async (t) => {
  const gray = grid(5 * 7, 1);
  for (const shape of [[1, 5, 7], [5, 7]]) {
    const img = decodePng(encodePng(gray, shape));
    t.same([img.channels, img.height, img.width], [1, 5, 7], `[${shape}] decodes as 1x5x7`);
    t.ok(maxAbs(img.data, gray) < 1e-7, `[${shape}] values survive`);
  }
  const rgb = grid(3 * 4 * 6, 2);
  const img = decodePng(encodePng(rgb, [3, 4, 6]));
  t.same([img.channels, img.height, img.width], [3, 4, 6]);
  t.ok(maxAbs(img.data, rgb) < 1e-7, 'RGB values survive, CHW order kept');
  t.equal(img.data[0], rgb[0]);
  t.equal(img.data[4 * 6], rgb[4 * 6], 'first green sample is the start of plane 1');
});

t.test('png: encode clamps to [0,1], rounds to 8 bits and maps NaN to 0', async (t) => {
  const data = new Float32Array([-0.5, 0, 0.5, 1, 2, Number.NaN, 0.2 / 255, 0.7 / 255]);
  const img = decodePng(encodePng(data, [2, 4]));
  t.same(Array.from(img.data).map((v) => Math.round(v * 255)), [0, 0, 128, 255, 255, 0, 0, 1]);
});

t.test('png: channels option converts RGB to BT.601 luma and gray to RGB; alpha is dropped', async (t) => {
  const rgb = new Float32Array([1, 0, 0, /* G */ 0, 1, 0, /* B */ 0, 0, 1]); // 3 pixels: red, green, blue
  const luma = decodePng(encodePng(rgb, [3, 1, 3]), { channels: 1 });
  t.equal(luma.channels, 1);
  t.ok(maxAbs(luma.data, [0.299, 0.587, 0.114]) < 1e-6, `luma ${Array.from(luma.data)}`);
  const gray = new Float32Array([0, 0.4, 1]);
  const asRgb = decodePng(encodePng(gray, [1, 3]), { channels: 3 });
  t.equal(asRgb.channels, 3);
  t.ok(maxAbs(asRgb.data, [0, 0.4, 1, 0, 0.4, 1, 0, 0.4, 1]) < 1e-6);

  // an RGBA PNG written with pngjs directly: alpha must not leak into the colour
  const png = new PNG({ width: 2, height: 1 });
  png.data = Buffer.from([255, 0, 51, 0, /* */ 0, 255, 0, 128]);
  const rgba = decodePng(PNG.sync.write(png));
  t.same([rgba.channels, rgba.height, rgba.width], [3, 1, 2]);
  t.ok(maxAbs(rgba.data, [1, 0, 0, 1, 0.2, 0]) < 1e-6, 'RGB planes of an RGBA image');
});

t.test('png: 16-bit images keep their precision', async (t) => {
  const png = new PNG({ width: 3, height: 1 });
  const samples = new Uint16Array([0, 1, 65535]);
  png.data = Buffer.from(samples.buffer);
  const bytes = PNG.sync.write(png, { colorType: 0, inputColorType: 0, inputHasAlpha: false, bitDepth: 16 });
  const img = decodePng(bytes);
  t.equal(img.channels, 1);
  t.ok(maxAbs(img.data, [0, 1 / 65535, 1]) < 1e-9, `values ${Array.from(img.data)}`);
});

t.test('png: writePng / readPng round-trip through a file', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'latentdem-png-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'x.png');
  const rgb = grid(3 * 9 * 8, 3);
  writePng(path, rgb, [3, 9, 8]);
  const img = readPng(path);
  t.same([img.channels, img.height, img.width], [3, 9, 8]);
  t.ok(maxAbs(img.data, rgb) < 1e-7);
});

t.test('png: errors name the file and the shape', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'latentdem-png-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const bad = join(dir, 'not-a-png.png');
  writeFileSync(bad, 'hello, I am text');
  t.throws(() => readPng(bad), { name: 'ImageError', message: /not-a-png\.png.*not a valid PNG/ });
  t.throws(() => readPng(join(dir, 'missing.png')), { message: /missing\.png.*cannot read/ });
  t.throws(() => decodePng(new Uint8Array([1, 2, 3])), ImageError);
  const truncated = encodePng(grid(64, 4), [8, 8]).subarray(0, 40);
  t.throws(() => decodePng(truncated, {}, 'cut.png'), { message: /cut\.png/ });

  t.throws(() => encodePng(new Float32Array(8), [2, 2, 2]), ShapeError, '2 channels');
  t.throws(() => encodePng(new Float32Array(8), [8]), ShapeError, 'rank 1');
  t.throws(() => encodePng(new Float32Array(5), [2, 2]), { name: 'ShapeError', message: /5 elements.*\[2,2\]/ });
  t.throws(() => encodePng(new Float32Array(0), [0, 3]), ShapeError, 'empty image');
  t.throws(() => writePng(join(dir, 'y.png'), new Float32Array(5), [1, 2, 2]), { message: /y\.png/ });
  t.throws(() => writePng(join(dir, 'no-such-dir', 'z.png'), new Float32Array(4), [2, 2]), { message: /z\.png.*cannot write/ });
});
