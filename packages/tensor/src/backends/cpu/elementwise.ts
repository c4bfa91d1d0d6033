/**
 * CPU elementwise kernels: the reference. Every kernel walks its strided views with `offsets()` and
 * applies a scalar function in f64; storing into the output typed array rounds (float32) or wraps (int32).
 */
import type { BinaryOp, UnaryArgs, UnaryOp, View } from '../../backend.js';
import { DTypeError, ShapeError, fmtShape } from '../../errors.js';
import * as m from '../math.js';
import { CpuStorage, cs, gather, offsets } from './storage.js';

type F = (x: number) => number;

const UNARY_FLOAT: Record<Exclude<UnaryOp, 'clamp'>, F> = {
  neg: (x) => -x,
  abs: Math.abs,
  exp: Math.exp,
  log: Math.log,
  sqrt: Math.sqrt,
  rsqrt: (x) => 1 / Math.sqrt(x),
  sin: Math.sin,
  cos: Math.cos,
  tanh: Math.tanh,
  sigmoid: m.sigmoid,
  relu: (x) => (x < 0 ? 0 : x),
  silu: m.silu,
  gelu: m.gelu,
  gelu_tanh: m.geluTanh,
  erf: m.erf,
  floor: Math.floor,
  sign: Math.sign,
  square: (x) => x * x,
  reciprocal: (x) => 1 / x,
  step: (x) => (x > 0 ? 1 : 0),
  silu_grad: m.siluGrad,
  gelu_grad: m.geluGrad,
  gelu_tanh_grad: m.geluTanhGrad,
  erf_grad: m.erfGrad,
};

/** The unary ops defined on int32 (results wrap like two's complement, as in WGSL). */
export const UNARY_INT: Partial<Record<UnaryOp, F>> = {
  neg: (x) => -x | 0,
  abs: (x) => Math.abs(x) | 0,
  sign: Math.sign,
  square: (x) => Math.imul(x, x),
  relu: (x) => (x < 0 ? 0 : x),
  floor: (x) => x,
};

type F2 = (a: number, b: number) => number;
const CMP: Record<'eq' | 'ne' | 'lt' | 'le' | 'gt' | 'ge', F2> = {
  eq: (a, b) => (a === b ? 1 : 0),
  ne: (a, b) => (a !== b ? 1 : 0),
  lt: (a, b) => (a < b ? 1 : 0),
  le: (a, b) => (a <= b ? 1 : 0),
  gt: (a, b) => (a > b ? 1 : 0),
  ge: (a, b) => (a >= b ? 1 : 0),
};
const BINARY_FLOAT: Record<BinaryOp, F2> = {
  add: (a, b) => a + b,
  sub: (a, b) => a - b,
  mul: (a, b) => a * b,
  div: (a, b) => a / b,
  pow: Math.pow,
  maximum: Math.max, // NaN-propagating, like torch.maximum
  minimum: Math.min,
  ...CMP,
  add_silu: (a, b) => m.silu(a + b),
  geglu: (a, b) => a * m.gelu(b),
};
/** int32: wrapping add/sub/mul; division truncates toward zero and x / 0 = 0. */
const BINARY_INT: Partial<Record<BinaryOp, F2>> = {
  add: (a, b) => (a + b) | 0,
  sub: (a, b) => (a - b) | 0,
  mul: Math.imul,
  div: (a, b) => (b === 0 ? 0 : Math.trunc(a / b) | 0),
  maximum: Math.max,
  minimum: Math.min,
  ...CMP,
};

export const isComparison = (op: BinaryOp): boolean => op in CMP;

function sameShape(op: string, a: View, b: { shape: readonly number[] }): void {
  if (a.shape.length !== b.shape.length || a.shape.some((s, i) => s !== b.shape[i])) {
    throw new ShapeError(op, `shapes differ: ${fmtShape(a.shape)} vs ${fmtShape(b.shape)}`);
  }
}

export function copy(src: View, dst: View): void {
  if (src.storage.dtype !== dst.storage.dtype) throw new DTypeError('copy', `dtypes differ: ${src.storage.dtype} -> ${dst.storage.dtype}`);
  sameShape('copy', src, dst);
  const values = gather(src); // gathered first, so even an overlapping dst reads the old values
  const d = cs(dst.storage, 'copy').data;
  const offs = offsets(dst);
  for (let i = 0; i < offs.length; i++) d[offs[i]] = values[i];
}

export function cast(x: View, out: CpuStorage): void {
  const v = gather(x);
  const o = out.data;
  if (x.storage.dtype === 'float32' && out.dtype === 'int32') {
    for (let i = 0; i < v.length; i++) o[i] = m.f32ToI32(v[i]);
  } else {
    for (let i = 0; i < v.length; i++) o[i] = v[i];
  }
}

export function unary(op: UnaryOp, x: View, out: CpuStorage, args?: UnaryArgs): void {
  const v = gather(x);
  const o = out.data;
  let f: F | undefined;
  if (op === 'clamp') {
    const lo = args?.min ?? -Infinity, hi = args?.max ?? Infinity;
    if (x.storage.dtype === 'float32') f = (t) => Math.min(Math.max(t, lo), hi);
  } else {
    f = x.storage.dtype === 'float32' ? UNARY_FLOAT[op] : UNARY_INT[op];
  }
  if (!f) throw new DTypeError(op, `not defined for ${x.storage.dtype}`);
  for (let i = 0; i < v.length; i++) o[i] = f(v[i]);
}

export function binary(op: BinaryOp, a: View, b: View, out: CpuStorage): void {
  if (a.storage.dtype !== b.storage.dtype) throw new DTypeError(op, `dtypes differ: ${a.storage.dtype} and ${b.storage.dtype}`);
  sameShape(op, a, b);
  const f = a.storage.dtype === 'float32' ? BINARY_FLOAT[op] : BINARY_INT[op];
  if (!f) throw new DTypeError(op, `not defined for ${a.storage.dtype}`);
  const x = gather(a), y = gather(b), o = out.data;
  for (let i = 0; i < x.length; i++) o[i] = f(x[i], y[i]);
}

export function where(cond: View, a: View, b: View, out: CpuStorage): void {
  if (a.storage.dtype !== b.storage.dtype) throw new DTypeError('where', `dtypes differ: ${a.storage.dtype} and ${b.storage.dtype}`);
  sameShape('where', cond, a);
  sameShape('where', cond, b);
  const c = gather(cond), x = gather(a), y = gather(b), o = out.data;
  for (let i = 0; i < c.length; i++) o[i] = c[i] !== 0 ? x[i] : y[i];
}
