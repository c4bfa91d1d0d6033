/** Views (shared storage: reshape, permute, slice, expand, squeeze, flip) and copies between layouts. */
import { contiguousStrides, isContiguous } from '../backend.js';
import type { DType, TypedArray } from '../dtype.js';
import { AxisError, DTypeError, ShapeError, fmtShape } from '../errors.js';
import { record } from '../autodiff.js';
import { checkShape, normalizeAxes, normalizeAxis, numel, sameShape } from '../shape.js';
import { Tensor } from '../tensor.js';
import { backendOf, empty, launch, sameDType, viewOf } from './core.js';
import { unbroadcast } from './broadcast.js';

/** [start, end?, step?] for one axis; negative start/end count from the end; step > 0. */
export type SliceSpec = readonly [number, number?, number?];
export type PadMode = 'constant' | 'reflect' | 'circular';

export function detach(x: Tensor): Tensor {
  x.assertLive('detach');
  return viewOf(x, x.shape, x.strides, x.offset);
}

export function contiguous(x: Tensor): Tensor {
  x.assertLive('contiguous');
  if (isContiguous(x)) return x;
  return copyOf(x, 'contiguous');
}

export function clone(x: Tensor): Tensor { x.assertLive('clone'); return copyOf(x, 'clone'); }

function copyOf(x: Tensor, op: string): Tensor {
  const out = empty(x.backend, x.shape, x.dtype);
  launch(op, x.backend, [x], [out], () => x.backend.copy(x, out));
  record(op, [x], [out], ([g]) => [g]);
  return out;
}

export function cast(x: Tensor, dtype: DType): Tensor {
  x.assertLive('cast');
  if (dtype !== 'float32' && dtype !== 'int32') throw new DTypeError('cast', `unknown dtype '${String(dtype)}'`);
  if (x.dtype === dtype) return x;
  const out = empty(x.backend, x.shape, dtype);
  launch('cast', x.backend, [x], [out], () => x.backend.cast(x, out.storage));
  return out;
}

export function assign(dst: Tensor, src: Tensor): void {
  const b = backendOf('assign', dst, src);
  sameDType('assign', dst, src);
  if (!sameShape(dst.shape, src.shape)) throw new ShapeError('assign', `shapes differ: ${fmtShape(dst.shape)} <- ${fmtShape(src.shape)}`);
  if (src.storage === dst.storage) {
    const tmp = clone(src);
    launch('assign', b, [tmp], [dst], () => b.copy(tmp, dst));
    tmp.dispose();
    return;
  }
  launch('assign', b, [src], [dst], () => b.copy(src, dst));
}

/**
 * Overwrites a whole contiguous tensor with host data (same length and element type), without a temporary
 * device tensor: how checkpoint loaders fill parameters. Not recorded by autodiff.
 */
export function writeData(dst: Tensor, data: TypedArray): void {
  const want = dst.dtype === 'int32' ? Int32Array : Float32Array;
  if (!(data instanceof want)) throw new DTypeError('writeData', `${dst.dtype} tensor ${fmtShape(dst.shape)} needs a ${want.name}, got ${data.constructor.name}`);
  if (data.length !== dst.size) throw new ShapeError('writeData', `${data.length} values for a tensor of ${dst.size} ${fmtShape(dst.shape)}`);
  if (!dst.isContiguous || dst.offset !== 0 || dst.storage.size !== dst.size) throw new ShapeError('writeData', `the tensor ${fmtShape(dst.shape)} must own its whole storage contiguously (a view shares it): use assign`);
  launch('writeData', dst.backend, [], [dst], () => dst.backend.write(dst.storage, data));
}

function inferShape(op: string, x: Tensor, shape: readonly number[]): number[] {
  const out = [...shape];
  const free = out.indexOf(-1);
  if (out.indexOf(-1, free + 1) !== -1 && free !== -1) throw new ShapeError(op, `at most one -1 allowed in ${fmtShape(shape)}`);
  if (free !== -1) {
    const rest = out.reduce((a, b, i) => (i === free ? a : a * b), 1);
    if (rest === 0 || x.size % rest !== 0) throw new ShapeError(op, `cannot infer -1 in ${fmtShape(shape)} for ${x.size} elements ${fmtShape(x.shape)}`);
    out[free] = x.size / rest;
  }
  checkShape(op, out);
  if (numel(out) !== x.size) throw new ShapeError(op, `cannot reshape ${fmtShape(x.shape)} (${x.size} elements) to ${fmtShape(shape)}`);
  return out;
}

/** Strides for viewing `x` as `shape` without a copy, or null (PyTorch's view rule). */
function viewStrides(x: Tensor, shape: readonly number[]): number[] | null {
  if (isContiguous(x)) return contiguousStrides(shape);
  // Group x's dims into contiguous chunks and match them against the new shape.
  const oldShape = x.shape.filter((n) => n !== 1);
  const oldStrides = x.strides.filter((_, i) => x.shape[i] !== 1);
  const out = new Array<number>(shape.length);
  let oi = 0;
  let ni = 0;
  while (ni < shape.length || oi < oldShape.length) {
    if (ni < shape.length && shape[ni] === 1) { out[ni] = 1; ni++; continue; }
    if (oi >= oldShape.length || ni >= shape.length) return null;
    // Take a chunk of old dims that are mutually contiguous, and new dims with the same product.
    let oldProd = oldShape[oi];
    let oj = oi;
    let newProd = shape[ni];
    let nj = ni;
    while (oldProd !== newProd) {
      if (oldProd < newProd) {
        if (oj + 1 >= oldShape.length || oldStrides[oj] !== oldStrides[oj + 1] * oldShape[oj + 1]) return null;
        oj++; oldProd *= oldShape[oj];
      } else {
        nj++; if (nj >= shape.length) return null; newProd *= shape[nj];
      }
    }
    for (let k = oi; k < oj; k++) if (oldStrides[k] !== oldStrides[k + 1] * oldShape[k + 1]) return null;
    let st = oldStrides[oj];
    for (let k = nj; k >= ni; k--) { out[k] = st; st *= shape[k]; }
    oi = oj + 1; ni = nj + 1;
  }
  return out;
}

export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  x.assertLive('reshape');
  const target = inferShape('reshape', x, shape);
  const strides = viewStrides(x, target);
  const base = strides ? x : contiguous(x);
  const out = viewOf(base, target, strides ?? contiguousStrides(target), base.offset);
  if (base !== x) out.own(base); // the copy lives as long as the view of it
  const inShape = x.shape;
  record('reshape', [x], [out], ([g]) => [reshape(g!, inShape)]);
  return out;
}

export function flatten(x: Tensor, startAxis = 0, endAxis = -1): Tensor {
  if (x.rank === 0) return reshape(x, [1]);
  const s = normalizeAxis('flatten', startAxis, x.rank);
  const e = normalizeAxis('flatten', endAxis, x.rank);
  if (e < s) throw new AxisError('flatten', `end axis ${endAxis} comes before start axis ${startAxis}`);
  return reshape(x, [...x.shape.slice(0, s), numel(x.shape.slice(s, e + 1)), ...x.shape.slice(e + 1)]);
}

export function permute(x: Tensor, axes: readonly number[]): Tensor {
  x.assertLive('permute');
  if (axes.length !== x.rank) throw new AxisError('permute', `needs ${x.rank} axes for ${fmtShape(x.shape)}, got [${axes}]`);
  const p = axes.map((a) => normalizeAxis('permute', a, x.rank));
  if (new Set(p).size !== p.length) throw new AxisError('permute', `repeated axis in [${axes}]`);
  const out = viewOf(x, p.map((a) => x.shape[a]), p.map((a) => x.strides[a]), x.offset);
  const inv = new Array<number>(p.length);
  p.forEach((a, i) => { inv[a] = i; });
  record('permute', [x], [out], ([g]) => [permute(g!, inv)]);
  return out;
}

export function transpose(x: Tensor, a = -2, b = -1): Tensor {
  const r = x.rank;
  const i = normalizeAxis('transpose', a, r);
  const j = normalizeAxis('transpose', b, r);
  const axes = Array.from({ length: r }, (_, k) => k);
  axes[i] = j; axes[j] = i;
  return permute(x, axes);
}

interface Window { starts: number[]; steps: number[]; shape: number[] }

function resolveSlice(op: string, x: Tensor, specs: readonly (SliceSpec | null)[]): Window {
  if (specs.length > x.rank) throw new AxisError(op, `${specs.length} slice specs for a tensor of rank ${x.rank} ${fmtShape(x.shape)}`);
  const starts: number[] = []; const steps: number[] = []; const shape: number[] = [];
  for (let d = 0; d < x.rank; d++) {
    const n = x.shape[d];
    const spec = specs[d] ?? null;
    let [start, end, step] = spec ?? [0, n, 1];
    end ??= n; step ??= 1;
    if (!Number.isInteger(start) || !Number.isInteger(end) || !Number.isInteger(step) || step <= 0) {
      throw new ShapeError(op, `axis ${d} of ${fmtShape(x.shape)}: slice [${spec}] needs integers and a positive step`);
    }
    if (start < 0) start += n;
    if (end < 0) end += n;
    start = Math.min(Math.max(start, 0), n);
    end = Math.min(Math.max(end, start), n);
    starts.push(start); steps.push(step); shape.push(Math.ceil((end - start) / step));
  }
  return { starts, steps, shape };
}

/** x[start:end:step, ...] per axis (null or missing = whole axis), a view. */
export function slice(x: Tensor, specs: readonly (SliceSpec | null)[]): Tensor {
  x.assertLive('slice');
  const w = resolveSlice('slice', x, specs);
  let offset = x.offset;
  for (let d = 0; d < x.rank; d++) if (w.shape[d] > 0) offset += w.starts[d] * x.strides[d];
  const out = viewOf(x, w.shape, x.strides.map((s, d) => s * w.steps[d]), offset);
  const inShape = x.shape;
  record('slice', [x], [out], ([g]) => [embed(g!, inShape, w.starts, w.steps, 0)]);
  return out;
}

export function narrow(x: Tensor, axis: number, start: number, length: number): Tensor {
  const a = normalizeAxis('narrow', axis, x.rank);
  if (start < 0) start += x.shape[a];
  if (start < 0 || length < 0 || start + length > x.shape[a]) {
    throw new ShapeError('narrow', `axis ${axis}: [${start}, ${start + length}) is outside 0..${x.shape[a]} of ${fmtShape(x.shape)}`);
  }
  const specs: (SliceSpec | null)[] = x.shape.map(() => null);
  specs[a] = [start, start + length, 1];
  return slice(x, specs);
}

/**
 * A tensor of `shape` filled with `fill`, with `x` written at starts[d] + i*steps[d]. The adjoint of
 * slice; also constant padding and zero insertion for transposed convolution.
 */
export function embed(x: Tensor, shape: readonly number[], starts: readonly number[], steps: readonly number[], fill: number): Tensor {
  const b = backendOf('embed', x);
  if (shape.length !== x.rank) throw new ShapeError('embed', `rank of ${fmtShape(x.shape)} differs from ${fmtShape(shape)}`);
  for (let d = 0; d < x.rank; d++) {
    if (x.shape[d] > 0 && starts[d] + (x.shape[d] - 1) * steps[d] >= shape[d]) {
      throw new ShapeError('embed', `axis ${d}: ${x.shape[d]} elements from ${starts[d]} step ${steps[d]} do not fit in ${shape[d]}`);
    }
  }
  const out = empty(b, shape, x.dtype);
  launch('embed', b, [x], [out], () => {
    b.fill(out.storage, fill);
    if (x.size === 0) return;
    let off = 0;
    for (let d = 0; d < x.rank; d++) off += starts[d] * out.strides[d];
    b.copy(x, { storage: out.storage, shape: x.shape, strides: out.strides.map((s, d) => s * steps[d]), offset: off });
  });
  record('embed', [x], [out], ([g]) => [slice(g!, x.shape.map((n, d) => [starts[d], starts[d] + (n - 1) * steps[d] + 1, steps[d]] as const))]);
  return out;
}

export function expand(x: Tensor, shape: readonly number[]): Tensor {
  x.assertLive('expand');
  if (shape.length < x.rank) throw new ShapeError('expand', `cannot expand ${fmtShape(x.shape)} to fewer dims ${fmtShape(shape)}`);
  const lead = shape.length - x.rank;
  const target: number[] = [];
  const strides: number[] = [];
  for (let d = 0; d < shape.length; d++) {
    const want = shape[d];
    if (d < lead) {
      if (want < 0) throw new ShapeError('expand', `-1 is not allowed for new leading axis ${d} in ${fmtShape(shape)}`);
      target.push(want); strides.push(0); continue;
    }
    const have = x.shape[d - lead];
    if (want === -1 || want === have) { target.push(have); strides.push(x.strides[d - lead]); continue; }
    if (have !== 1) throw new ShapeError('expand', `cannot expand ${fmtShape(x.shape)} to ${fmtShape(shape)} (axis ${d}: ${have} -> ${want})`);
    target.push(want); strides.push(0);
  }
  checkShape('expand', target);
  const out = viewOf(x, target, strides, x.offset);
  const inShape = x.shape;
  record('expand', [x], [out], ([g]) => [unbroadcast(g!, inShape)]);
  return out;
}

export function squeeze(x: Tensor, axes?: number | readonly number[]): Tensor {
  const list = axes === undefined ? x.shape.map((n, i) => (n === 1 ? i : -1)).filter((i) => i >= 0) : normalizeAxes('squeeze', axes, x.rank);
  for (const a of list) if (x.shape[a] !== 1) throw new ShapeError('squeeze', `axis ${a} of ${fmtShape(x.shape)} has size ${x.shape[a]}, not 1`);
  return reshape(x, x.shape.filter((_, i) => !list.includes(i)));
}

export function unsqueeze(x: Tensor, axis: number): Tensor {
  const a = normalizeAxis('unsqueeze', axis, x.rank + 1);
  const shape = [...x.shape];
  shape.splice(a, 0, 1);
  return reshape(x, shape);
}

export function flip(x: Tensor, axes: number | readonly number[]): Tensor {
  x.assertLive('flip');
  const list = normalizeAxes('flip', axes, x.rank);
  let offset = x.offset;
  const strides = [...x.strides];
  for (const a of list) {
    if (x.shape[a] > 0) offset += (x.shape[a] - 1) * strides[a];
    strides[a] = -strides[a];
  }
  const out = viewOf(x, x.shape, strides, offset);
  record('flip', [x], [out], ([g]) => [flip(g!, list)]);
  return out;
}

export function concat(xs: readonly Tensor[], axis = 0): Tensor {
  if (xs.length === 0) throw new ShapeError('concat', 'needs at least one tensor');
  const b = backendOf('concat', ...xs);
  const dtype = sameDType('concat', ...xs);
  const first = xs[0];
  if (first.rank === 0) throw new ShapeError('concat', `zero-dimensional tensors ${xs.map((u) => fmtShape(u.shape)).join(', ')} cannot be concatenated (use stack)`);
  const a = normalizeAxis('concat', axis, first.rank);
  for (const t of xs) {
    if (t.rank !== first.rank || t.shape.some((n, d) => d !== a && n !== first.shape[d])) {
      throw new ShapeError('concat', `shapes ${xs.map((u) => fmtShape(u.shape)).join(', ')} differ outside axis ${a}`);
    }
  }
  const sizes = xs.map((t) => t.shape[a]);
  const shape = [...first.shape];
  shape[a] = sizes.reduce((p, q) => p + q, 0);
  const out = empty(b, shape, dtype);
  launch('concat', b, xs, [out], () => {
    let start = 0;
    for (const t of xs) {
      if (t.size) b.copy(t, { storage: out.storage, shape: t.shape, strides: out.strides, offset: start * out.strides[a] });
      start += t.shape[a];
    }
  });
  record('concat', xs, [out], ([g]) => split(g!, sizes, a));
  return out;
}

export function stack(xs: readonly Tensor[], axis = 0): Tensor {
  if (xs.length === 0) throw new ShapeError('stack', 'needs at least one tensor');
  const a = normalizeAxis('stack', axis, xs[0].rank + 1);
  return concat(xs.map((t) => unsqueeze(t, a)), a);
}

/** Views of consecutive pieces along `axis`: equal pieces of `sizes` (the last may be smaller) or the given sizes. */
export function split(x: Tensor, sizes: number | readonly number[], axis = 0): Tensor[] {
  const a = normalizeAxis('split', axis, x.rank);
  const n = x.shape[a];
  let list: number[];
  if (typeof sizes === 'number') {
    if (!Number.isInteger(sizes) || sizes <= 0) throw new ShapeError('split', `piece size ${sizes} must be a positive integer`);
    list = [];
    for (let s = 0; s < n; s += sizes) list.push(Math.min(sizes, n - s));
  } else {
    list = [...sizes];
    if (list.reduce((p, q) => p + q, 0) !== n || list.some((s) => s < 0)) {
      throw new ShapeError('split', `sizes [${list}] do not add up to ${n} (axis ${a} of ${fmtShape(x.shape)})`);
    }
  }
  let start = 0;
  return list.map((len) => { const t = narrow(x, a, start, len); start += len; return t; });
}

/** Circular shift along axes (like torch.roll). */
export function roll(x: Tensor, shifts: number | readonly number[], axes: number | readonly number[]): Tensor {
  const sh = typeof shifts === 'number' ? [shifts] : [...shifts];
  const ax = (typeof axes === 'number' ? [axes] : [...axes]).map((a) => normalizeAxis('roll', a, x.rank));
  if (sh.length !== ax.length) throw new ShapeError('roll', `${sh.length} shifts for ${ax.length} axes`);
  let y = x;
  ax.forEach((a, i) => {
    const n = y.shape[a];
    if (n === 0) return;
    const s = ((sh[i] % n) + n) % n;
    if (s === 0) return;
    y = concat([narrow(y, a, n - s, s), narrow(y, a, 0, n - s)], a);
  });
  return y;
}

/**
 * Pads the last axes, PyTorch F.pad order: [left, right] for the last axis, then [top, bottom] for the
 * one before, etc. Modes: constant (value), reflect (mirror without the edge), circular (wrap).
 */
export function pad(x: Tensor, pads: readonly number[], mode: PadMode = 'constant', value = 0): Tensor {
  x.assertLive('pad');
  if (pads.length % 2 !== 0 || pads.length / 2 > x.rank) throw new ShapeError('pad', `pads [${pads}] must be pairs for at most ${x.rank} axes of ${fmtShape(x.shape)}`);
  const naxes = pads.length / 2;
  if (mode === 'constant') {
    const starts = x.shape.map(() => 0);
    const shape = [...x.shape];
    let y = x;
    // Negative pads crop.
    const crop: (SliceSpec | null)[] = x.shape.map(() => null);
    for (let i = 0; i < naxes; i++) {
      const d = x.rank - 1 - i;
      const [lo, hi] = [pads[2 * i], pads[2 * i + 1]];
      crop[d] = [Math.max(0, -lo), x.shape[d] - Math.max(0, -hi), 1];
      starts[d] = Math.max(0, lo);
      shape[d] = x.shape[d] + lo + hi;
      if (shape[d] < 0) throw new ShapeError('pad', `axis ${d} would have negative size with pads [${pads}] on ${fmtShape(x.shape)}`);
    }
    if (pads.some((p) => p < 0)) y = slice(x, crop);
    return embed(y, shape, starts, shape.map(() => 1), value);
  }
  if (mode !== 'reflect' && mode !== 'circular') throw new ShapeError('pad', `unknown mode '${String(mode)}'`);
  let y = x;
  for (let i = 0; i < naxes; i++) {
    const d = x.rank - 1 - i;
    const [lo, hi] = [pads[2 * i], pads[2 * i + 1]];
    const n = x.shape[d];
    if (lo < 0 || hi < 0) throw new ShapeError('pad', `${mode} padding needs non-negative pads, got [${pads}]`);
    if (lo === 0 && hi === 0) continue;
    if (mode === 'reflect' && (lo >= n || hi >= n)) throw new ShapeError('pad', `reflect padding [${lo}, ${hi}] must be smaller than axis ${d} of ${fmtShape(x.shape)}`);
    if (mode === 'circular' && (lo > n || hi > n)) throw new ShapeError('pad', `circular padding [${lo}, ${hi}] must not exceed axis ${d} of ${fmtShape(x.shape)}`);
    const parts: Tensor[] = [];
    if (mode === 'reflect') {
      if (lo) parts.push(flip(narrow(y, d, 1, lo), d));
      parts.push(y);
      if (hi) parts.push(flip(narrow(y, d, n - 1 - hi, hi), d));
    } else {
      if (lo) parts.push(narrow(y, d, n - lo, lo));
      parts.push(y);
      if (hi) parts.push(narrow(y, d, 0, hi));
    }
    y = concat(parts, d);
  }
  return y;
}
