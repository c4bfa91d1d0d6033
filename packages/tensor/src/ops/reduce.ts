/** Reductions over any set of axes, with keepdim. */
import type { ReduceOp } from '../backend.js';
import { DTypeError, ShapeError, fmtShape } from '../errors.js';
import { noGrad, record } from '../autodiff.js';
import { normalizeAxes, numel } from '../shape.js';
import type { Tensor } from '../tensor.js';
import { backendOf, empty, launch } from './core.js';
import { reshape, expand, detach } from './views.js';
import { abs, div, eq, exp, log, mul, sub, square, add, where } from './elementwise.js';
import { composite } from './composite.js';

export interface ReduceOptions { keepdim?: boolean }
export interface VarOptions extends ReduceOptions {
  /** Subtracted from the count in the denominator: 1 = unbiased (PyTorch's default), 0 = population. */
  correction?: number;
}

const keptShape = (shape: readonly number[], axes: readonly number[]): number[] => shape.map((n, d) => (axes.includes(d) ? 1 : n));

/** Runs a backend reduction over `axes` (sorted, unique) and returns the keepdim-shaped result. */
function reduceKernel(op: ReduceOp, x: Tensor, axes: readonly number[]): Tensor {
  const b = backendOf(op, x);
  const kept = x.shape.map((_, d) => d).filter((d) => !axes.includes(d));
  const out = empty(b, keptShape(x.shape, axes), op === 'argmax' ? 'int32' : x.dtype);
  if (axes.length === 0) {
    if (op === 'argmax') b.fill(out.storage, 0); else b.copy(x, out);
    return out;
  }
  const order = [...kept, ...axes];
  const v = { storage: x.storage, shape: order.map((d) => x.shape[d]), strides: order.map((d) => x.strides[d]), offset: x.offset };
  launch(op, b, [x], [out], () => b.reduce(op, v, axes.length, out.storage));
  return out;
}

function finish(y: Tensor, x: Tensor, axes: readonly number[], keepdim: boolean): Tensor {
  if (keepdim) return y;
  const r = reshape(y, x.shape.filter((_, d) => !axes.includes(d)));
  r.own(y); // the keepdim intermediate goes with the result
  return r;
}

export function sum(x: Tensor, axes?: number | readonly number[], opts: ReduceOptions = {}): Tensor {
  const ax = normalizeAxes('sum', axes, x.rank);
  const y = reduceKernel('sum', x, ax);
  const inShape = x.shape;
  record('sum', [x], [y], ([g]) => [expand(g!, inShape)]);
  return finish(y, x, ax, opts.keepdim ?? false);
}

export function mean(x: Tensor, axes?: number | readonly number[], opts: ReduceOptions = {}): Tensor {
  if (x.dtype !== 'float32') throw new DTypeError('mean', `needs float32 input, got ${x.dtype} ${fmtShape(x.shape)}`);
  const ax = normalizeAxes('mean', axes, x.rank);
  const n = numel(ax.map((d) => x.shape[d]));
  return composite([x], () => div(sum(x, ax, opts), n));
}

function extremum(op: 'max' | 'min') {
  return (x: Tensor, axes?: number | readonly number[], opts: ReduceOptions = {}): Tensor => {
    const ax = normalizeAxes(op, axes, x.rank);
    if (ax.some((d) => x.shape[d] === 0)) throw new ShapeError(op, `cannot reduce over an empty axis of ${fmtShape(x.shape)}`);
    const y = reduceKernel(op, x, ax);
    record(op, [x], [y], ([g]) => {
      // Ties share the gradient equally (PyTorch's amax/amin rule).
      const mask = eq(x, y);
      const count = sum(mask, ax, { keepdim: true });
      return [mul(g!, div(mask, count))];
    });
    return finish(y, x, ax, opts.keepdim ?? false);
  };
}
export const max = extremum('max');
export const min = extremum('min');

/** Index of the first maximum along `axis` (over the flattened tensor when axis is undefined), int32. */
export function argmax(x: Tensor, axis?: number, opts: ReduceOptions = {}): Tensor {
  if (axis === undefined) {
    if (x.size === 0) throw new ShapeError('argmax', `empty tensor ${fmtShape(x.shape)}`);
    const flat = reshape(x, [x.size]);
    return reduceKernel('argmax', flat, [0]).reshape([]);
  }
  const ax = normalizeAxes('argmax', axis, x.rank);
  if (x.shape[ax[0]] === 0) throw new ShapeError('argmax', `cannot reduce over an empty axis of ${fmtShape(x.shape)}`);
  return finish(reduceKernel('argmax', x, ax), x, ax, opts.keepdim ?? false);
}

/** Variance with `correction` (default 1, unbiased, as PyTorch). */
export function variance(x: Tensor, axes?: number | readonly number[], opts: VarOptions = {}): Tensor {
  const ax = normalizeAxes('var', axes, x.rank);
  const n = numel(ax.map((d) => x.shape[d]));
  const c = opts.correction ?? 1;
  return composite([x], () => {
    const m = mean(x, ax, { keepdim: true });
    const ss = sum(square(sub(x, m)), ax, { keepdim: opts.keepdim });
    return div(ss, Math.max(n - c, 0));
  });
}

/** log(sum(exp(x))) computed stably around the maximum. */
export function logsumexp(x: Tensor, axes?: number | readonly number[], opts: ReduceOptions = {}): Tensor {
  const ax = normalizeAxes('logsumexp', axes, x.rank);
  return composite([x], () => {
    // An infinite maximum (a row of -inf, or a +inf entry) is not subtracted: x - m would be NaN.
    const m = detach(noGrad(() => { const mx = max(x, ax, { keepdim: true }); return where(eq(abs(mx), Infinity), 0, mx); }));
    const s = log(sum(exp(sub(x, m)), ax, { keepdim: true }));
    return finish(add(s, m), x, ax, opts.keepdim ?? false);
  });
}

