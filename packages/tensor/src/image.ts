/** Tensor <-> PNG. Images are float32 [C, H, W] in [0, 1] (C = 1 gray or 3 RGB); writing clamps and rounds to 8 bits. */
import type { Backend, BackendName } from './backend.js';
import { ShapeError, fmtShape } from './errors.js';
import type { Tensor } from './tensor.js';
import { decodePng, encodePng, readPng, writePng } from './png.js';
import { fromData } from './ops/core.js';
import { getBackend } from './runtime.js';

export interface ImageOptions { channels?: 1 | 3; backend?: BackendName | Backend }

function checkImage(op: string, t: Tensor): void {
  const ok = (t.rank === 3 && (t.shape[0] === 1 || t.shape[0] === 3)) || t.rank === 2;
  if (!ok) throw new ShapeError(op, `needs an image [C,H,W] with C = 1 or 3, or [H,W]; got ${fmtShape(t.shape)}`);
}

/** PNG bytes of an image tensor. */
export async function toPng(t: Tensor): Promise<Buffer> {
  checkImage('toPng', t);
  return encodePng(new Float32Array(await t.data()), t.shape);
}

export function fromPng(bytes: Uint8Array, o: ImageOptions = {}): Tensor {
  const img = decodePng(bytes, { channels: o.channels });
  return fromData(img.data, [img.channels, img.height, img.width], getBackend(o.backend));
}

export async function readImage(path: string, o: ImageOptions = {}): Promise<Tensor> {
  const img = await readPng(path, { channels: o.channels });
  return fromData(img.data, [img.channels, img.height, img.width], getBackend(o.backend));
}

/** Writes a PNG (refuses nothing it cannot encode; the caller chooses the path). */
export async function writeImage(path: string, t: Tensor): Promise<void> {
  checkImage('writeImage', t);
  await writePng(path, new Float32Array(await t.data()), t.shape);
}
