/** Creating tensors: from data, constants, ranges, identity, and seeded random draws. */
import type { Backend, BackendName } from '../backend.js';
import type { DType, TypedArray } from '../dtype.js';
import { typedArrayFor } from '../dtype.js';
import { DTypeError, ShapeError, fmtShape } from '../errors.js';
import { checkShape, numel } from '../shape.js';
import type { Tensor, NestedArray } from '../tensor.js';
import { getBackend } from '../runtime.js';
import { keyFromSeed } from '../random/philox.js';
import { empty, fromData, launch } from './core.js';

export interface CreateOptions { dtype?: DType; backend?: BackendName | Backend; requiresGrad?: boolean }

function finish(t: Tensor, o: CreateOptions): Tensor {
  if (o.requiresGrad) {
    if (t.dtype !== 'float32') throw new DTypeError('tensor', `only float32 tensors can require grad, got ${t.dtype}`);
    t.requiresGrad = true;
  }
  return t;
}

function flattenNested(data: NestedArray, shape: readonly number[], out: number[], depth: number): void {
  if (typeof data === 'number') {
    if (depth !== shape.length) throw new ShapeError('tensor', `ragged nested array: a number at depth ${depth}, expected depth ${shape.length}`);
    out.push(data);
    return;
  }
  if (depth >= shape.length || data.length !== shape[depth]) throw new ShapeError('tensor', `ragged nested array: length ${data.length} at depth ${depth}, expected ${shape[depth] ?? 'a number'}`);
  for (const d of data) flattenNested(d, shape, out, depth + 1);
}

function inferNestedShape(data: NestedArray): number[] {
  const shape: number[] = [];
  let d: NestedArray = data;
  while (Array.isArray(d)) { shape.push(d.length); if (d.length === 0) break; d = d[0]; }
  return shape;
}

/** A tensor from a number, nested arrays or a typed array (with `shape`, default 1-D). */
export function tensor(data: NestedArray | TypedArray | readonly number[], opts: CreateOptions & { shape?: readonly number[] } = {}): Tensor {
  const backend = getBackend(opts.backend);
  let flat: number[] | TypedArray;
  let shape: number[];
  if (ArrayBuffer.isView(data)) {
    flat = data as TypedArray;
    shape = opts.shape ? [...opts.shape] : [flat.length];
  } else {
    shape = inferNestedShape(data as NestedArray);
    const out: number[] = [];
    flattenNested(data as NestedArray, shape, out, 0);
    flat = out;
    if (opts.shape) {
      if (numel(opts.shape) !== out.length) throw new ShapeError('tensor', `${out.length} values do not fill shape ${fmtShape(opts.shape)}`);
      shape = [...opts.shape];
    }
  }
  checkShape('tensor', shape);
  if (numel(shape) !== flat.length) throw new ShapeError('tensor', `${flat.length} values do not fill shape ${fmtShape(shape)}`);
  const dtype = opts.dtype ?? (flat instanceof Int32Array ? 'int32' : 'float32');
  const arr = dtype === 'float32' ? (flat instanceof Float32Array ? flat : Float32Array.from(flat)) : flat instanceof Int32Array ? flat : Int32Array.from(flat as ArrayLike<number>, (v) => Math.trunc(v));
  return finish(fromData(arr, shape, backend), opts);
}

export function full(shape: readonly number[], value: number, opts: CreateOptions = {}): Tensor {
  checkShape('full', shape);
  const backend = getBackend(opts.backend);
  const t = empty(backend, shape, opts.dtype ?? 'float32');
  launch('full', backend, [], [t], () => backend.fill(t.storage, value));
  return finish(t, opts);
}
export const zeros = (shape: readonly number[], opts: CreateOptions = {}): Tensor => full(shape, 0, opts);
export const ones = (shape: readonly number[], opts: CreateOptions = {}): Tensor => full(shape, 1, opts);
export const zerosLike = (x: Tensor, opts: CreateOptions = {}): Tensor => full(x.shape, 0, { dtype: x.dtype, backend: x.backend, ...opts });
export const onesLike = (x: Tensor, opts: CreateOptions = {}): Tensor => full(x.shape, 1, { dtype: x.dtype, backend: x.backend, ...opts });

/** start, start+step, ... < end (like torch.arange). */
export function arange(start: number, end?: number | CreateOptions, step = 1, opts: CreateOptions = {}): Tensor {
  if (typeof end === 'object') { opts = end; end = undefined; }
  if (end === undefined) { end = start; start = 0; }
  if (step === 0 || !Number.isFinite(step)) throw new ShapeError('arange', `step must be finite and non-zero, got ${step}`);
  const n = Math.max(0, Math.ceil((end - start) / step));
  const dtype = opts.dtype ?? (Number.isInteger(start) && Number.isInteger(end) && Number.isInteger(step) ? 'int32' : 'float32');
  const a = typedArrayFor(dtype, n);
  for (let i = 0; i < n; i++) a[i] = start + i * step;
  return finish(fromData(a, [n], getBackend(opts.backend)), opts);
}

/** n evenly spaced values from start to end inclusive. */
export function linspace(start: number, end: number, n: number, opts: CreateOptions = {}): Tensor {
  if (!Number.isInteger(n) || n < 0) throw new ShapeError('linspace', `count must be a non-negative integer, got ${n}`);
  const a = new Float32Array(n);
  const step = n > 1 ? (end - start) / (n - 1) : 0;
  for (let i = 0; i < n; i++) a[i] = i === n - 1 && n > 1 ? end : start + i * step;
  return finish(fromData(a, [n], getBackend(opts.backend)), opts);
}

export function eye(n: number, m = n, opts: CreateOptions = {}): Tensor {
  checkShape('eye', [n, m]);
  const a = typedArrayFor(opts.dtype ?? 'float32', n * m);
  for (let i = 0; i < Math.min(n, m); i++) a[i * m + i] = 1;
  return finish(fromData(a, [n, m], getBackend(opts.backend)), opts);
}

/**
 * A reproducible stream of random numbers: Philox-4x32-10 keyed by the seed, advanced by the number of
 * elements drawn, so the same seed gives the same draws on every backend.
 */
export class Generator {
  readonly key: [number, number];
  offset = 0;
  constructor(readonly seed: number) { this.key = keyFromSeed(seed); }
  /** Reserves `n` stream elements and returns the first one's index. */
  take(n: number): number { const o = this.offset; this.offset += n; return o; }
}

export interface RandomOptions extends CreateOptions { seed?: number; generator?: Generator }

function draw(kind: 'uniform' | 'normal', shape: readonly number[], o: RandomOptions): Tensor {
  checkShape(kind === 'uniform' ? 'rand' : 'randn', shape);
  if (o.dtype && o.dtype !== 'float32') throw new DTypeError(kind === 'uniform' ? 'rand' : 'randn', `draws float32, not ${o.dtype}`);
  const backend = getBackend(o.backend);
  const gen = o.generator ?? new Generator(o.seed ?? 0);
  const n = numel(shape);
  const offset = gen.take(n);
  const t = empty(backend, shape, 'float32');
  launch(kind === 'uniform' ? 'rand' : 'randn', backend, [], [t], () => { if (n) backend.random({ kind, key: gen.key, offset }, t.storage); });
  return finish(t, o);
}

/** Uniform [0, 1) draws (from `generator`, or a fresh stream of `seed`, default 0). */
export const rand = (shape: readonly number[], o: RandomOptions = {}): Tensor => draw('uniform', shape, o);
/** Standard normal draws (Box-Muller over the Philox stream). */
export const randn = (shape: readonly number[], o: RandomOptions = {}): Tensor => draw('normal', shape, o);
