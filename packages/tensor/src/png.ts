/**
 * PNG <-> float32 arrays in CHW layout with values in [0, 1], through pngjs. Images are 1 channel
 * (gray) or 3 (RGB); alpha is dropped. Any PNG colour type and bit depth decodes (16-bit samples keep
 * their precision); encoding writes 8-bit gray or RGB.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { PNG } from 'pngjs';
import { ImageError, ShapeError, fmtShape } from './errors.js';

export interface DecodedImage {
  /** [channels, height, width], row-major, values in [0, 1]. */
  data: Float32Array;
  channels: 1 | 3;
  height: number;
  width: number;
}

export interface DecodeOptions {
  /**
   * Channels wanted: 1 converts colour to luma (ITU-R BT.601 weights 0.299, 0.587, 0.114, as PIL's
   * convert('L')), 3 replicates gray. Default: 1 for gray PNGs, 3 for colour ones.
   */
  channels?: 1 | 3;
}

/** Decodes PNG bytes. `source` names the file (or stream) in error messages. */
export function decodePng(bytes: Uint8Array, options: DecodeOptions = {}, source = '<bytes>'): DecodedImage {
  const op = `decodePng(${source})`;
  if (options.channels !== undefined && options.channels !== 1 && options.channels !== 3) {
    throw new ImageError(op, `channels must be 1 or 3, got ${String(options.channels)}`);
  }
  let png: ReturnType<typeof PNG.sync.read>;
  try {
    const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    // skipRescale keeps 16-bit (and 1/2/4-bit) samples as they are; we scale by the depth's maximum below.
    png = PNG.sync.read(buf, { skipRescale: true });
  } catch (e) {
    throw new ImageError(op, `not a valid PNG file (${(e as Error).message})`);
  }
  const { width, height } = png;
  const color = png.color || png.palette;
  const channels = options.channels ?? (color ? 3 : 1);
  // Palette entries are 8-bit whatever the index depth; other samples use the full bit depth.
  const maxSample = png.palette ? 255 : 2 ** png.depth - 1;
  const src = png.data as unknown as ArrayLike<number>; // RGBA per pixel (Uint16Array for 16-bit)
  const plane = width * height;
  const data = new Float32Array(channels * plane);
  const inv = 1 / maxSample;
  for (let i = 0; i < plane; i++) {
    const r = src[4 * i] * inv, g = src[4 * i + 1] * inv, b = src[4 * i + 2] * inv;
    if (channels === 3) { data[i] = r; data[plane + i] = g; data[2 * plane + i] = b; }
    else data[i] = color ? 0.299 * r + 0.587 * g + 0.114 * b : r;
  }
  return { data, channels, height, width };
}

/** Encodes [C, H, W] (C = 1 gray or 3 RGB) or [H, W] float data as an 8-bit PNG; values are clamped to [0, 1] (NaN -> 0). */
export function encodePng(data: Float32Array, shape: readonly number[], target = '<bytes>'): Buffer {
  const op = `encodePng(${target})`;
  if (shape.length !== 2 && shape.length !== 3) {
    throw new ShapeError(op, `expected [C,H,W] or [H,W], got ${fmtShape(shape)}`);
  }
  const [c, h, w] = shape.length === 3 ? shape : [1, shape[0], shape[1]];
  if (c !== 1 && c !== 3) throw new ShapeError(op, `expected 1 (gray) or 3 (RGB) channels, got shape ${fmtShape(shape)}`);
  if (!Number.isInteger(h) || !Number.isInteger(w) || h < 1 || w < 1) {
    throw new ShapeError(op, `height and width must be positive integers, got shape ${fmtShape(shape)}`);
  }
  if (data.length !== c * h * w) {
    throw new ShapeError(op, `data has ${data.length} elements but shape ${fmtShape(shape)} needs ${c * h * w}`);
  }
  const plane = h * w;
  const to8 = (v: number): number => (v > 0 ? (v < 1 ? Math.round(v * 255) : 255) : 0);
  const png = new PNG({ width: w, height: h });
  const px = Buffer.alloc(plane * c);
  for (let i = 0; i < plane; i++) {
    for (let k = 0; k < c; k++) px[i * c + k] = to8(data[k * plane + i]);
  }
  png.data = px;
  const colorType = c === 3 ? 2 : 0;
  return PNG.sync.write(png, { colorType, inputColorType: colorType, inputHasAlpha: false, bitDepth: 8 });
}

/** Reads and decodes a PNG file. */
export function readPng(path: string, options: DecodeOptions = {}): DecodedImage {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (e) {
    throw new ImageError(`readPng(${path})`, `cannot read the file (${(e as Error).message})`);
  }
  return decodePng(bytes, options, path);
}

/** Encodes and writes a PNG file; see encodePng for the accepted shapes. */
export function writePng(path: string, data: Float32Array, shape: readonly number[]): void {
  const bytes = encodePng(data, shape, path);
  try {
    writeFileSync(path, bytes);
  } catch (e) {
    throw new ImageError(`writePng(${path})`, `cannot write the file (${(e as Error).message})`);
  }
}
