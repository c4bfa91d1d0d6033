/** Elementwise ops: unary math, broadcasting binary arithmetic and comparisons, where. */
import type { BinaryOp, UnaryArgs, UnaryOp } from '../backend.js';
import { DTypeError, fmtShape } from '../errors.js';
import { record } from '../autodiff.js';
import { broadcastShapes } from '../shape.js';
import { Tensor } from '../tensor.js';
import { backendOf, empty, launch, lift, requireFloat, sameDType, scalarOn } from './core.js';
import { expand } from './views.js';
import { unbroadcast } from './broadcast.js';

/** Ops that also accept int32. */
const INT_UNARY = new Set<UnaryOp>(['neg', 'abs', 'sign', 'square']);

function unaryKernel(op: UnaryOp, x: Tensor, args?: UnaryArgs, name: string = op): Tensor {
  const b = backendOf(name, x);
  if (x.dtype !== 'float32' && !INT_UNARY.has(op)) throw new DTypeError(name, `needs float32 input, got ${x.dtype} ${fmtShape(x.shape)}`);
  const out = empty(b, x.shape, x.dtype);
  launch(name, b, [x], [out], () => b.unary(op, x, out.storage, args));
  return out;
}

/** Defines a differentiable unary op whose backward is `g * dydx(x, y)`. */
function unary(op: UnaryOp, dydx: ((x: Tensor, y: Tensor) => Tensor) | null): (x: Tensor) => Tensor {
  return (x: Tensor) => {
    const y = unaryKernel(op, x);
    record(op, [x], [y], ([g]) => [dydx ? mul(g!, dydx(x, y)) : null]);
    return y;
  };
}

export const neg: (x: Tensor) => Tensor = (x) => {
  const y = unaryKernel('neg', x);
  record('neg', [x], [y], ([g]) => [neg(g!)]);
  return y;
};
export const abs = unary('abs', (x) => sign(x));
export const exp = unary('exp', (_x, y) => y);
export const log = unary('log', (x) => reciprocal(x));
export const sqrt = unary('sqrt', (_x, y) => div(0.5, y));
export const rsqrt = unary('rsqrt', (_x, y) => mul(-0.5, mul(y, square(y))));
export const sin = unary('sin', (x) => cos(x));
export const cos = unary('cos', (x) => neg(sin(x)));
export const tanh = unary('tanh', (_x, y) => sub(1, square(y)));
export const sigmoid = unary('sigmoid', (_x, y) => mul(y, sub(1, y)));
export const relu = unary('relu', (x) => unaryKernel('step', x));
export const silu = unary('silu', (x) => unaryKernel('silu_grad', x));
export const erf = unary('erf', (x) => unaryKernel('erf_grad', x));
export const floor = unary('floor', null);
export const sign = unary('sign', null);
export const square: (x: Tensor) => Tensor = (x) => {
  const y = unaryKernel('square', x);
  record('square', [x], [y], ([g]) => [mul(g!, mul(x, 2))]);
  return y;
};
export const reciprocal = unary('reciprocal', (_x, y) => neg(square(y)));
const geluErf = unary('gelu', (x) => unaryKernel('gelu_grad', x));
const geluTanh = unary('gelu_tanh', (x) => unaryKernel('gelu_tanh_grad', x));
/** GELU, exact (erf) form or PyTorch's approximate='tanh' form. */
/** d act / dz at z, for the activations a matmul epilogue can apply (linear's backward). */
export const activationDerivative = (act: 'silu' | 'gelu', z: Tensor): Tensor => unaryKernel(act === 'silu' ? 'silu_grad' : 'gelu_grad', z);

export function gelu(x: Tensor, approximate: 'none' | 'tanh' = 'none'): Tensor {
  return approximate === 'tanh' ? geluTanh(x) : geluErf(x);
}

/** Clamps to [min, max]; null leaves that side open. The gradient passes where min <= x <= max. */
export function clamp(x: Tensor, min: number | null, max: number | null = null): Tensor {
  requireFloat('clamp', x);
  const args = { min: min ?? -Infinity, max: max ?? Infinity };
  const y = unaryKernel('clamp', x, args);
  record('clamp', [x], [y], ([g]) => [mul(g!, mul(ge(x, args.min), le(x, args.max)))]);
  return y;
}

function binaryKernel(op: BinaryOp, a: Tensor, b: Tensor, outDType = a.dtype): Tensor {
  const be = backendOf(op, a, b);
  sameDType(op, a, b);
  const shape = broadcastShapes(op, a.shape, b.shape);
  const out = empty(be, shape, outDType);
  const av = expandView(a, shape);
  const bv = expandView(b, shape);
  launch(op, be, [a, b], [out], () => be.binary(op, av, bv, out.storage));
  return out;
}

/** A broadcast view (stride 0 on new/size-1 axes) without recording a tape node. */
function expandView(x: Tensor, shape: readonly number[]): { storage: Tensor['storage']; shape: readonly number[]; strides: number[]; offset: number } {
  const lead = shape.length - x.rank;
  const strides = shape.map((n, d) => (d < lead || x.shape[d - lead] !== n ? 0 : x.strides[d - lead]));
  return { storage: x.storage, shape, strides, offset: x.offset };
}

type Arg = Tensor | number;
const lhs = (a: Arg, b: Arg, op?: string): Tensor => (a instanceof Tensor ? a : lift(a, b as Tensor, op));
const rhs = (a: Arg, b: Arg, op?: string): Tensor => (b instanceof Tensor ? b : lift(b, a as Tensor, op));

function binary(op: BinaryOp, grads: ((a: Tensor, b: Tensor, y: Tensor, g: Tensor) => [Tensor | null, Tensor | null]) | null) {
  return (a: Arg, b: Arg): Tensor => {
    const x = lhs(a, b, op);
    const z = rhs(a, b, op);
    if (op !== 'add' && op !== 'sub' && op !== 'mul' && op !== 'div' && op !== 'maximum' && op !== 'minimum') requireFloat(op, x, z);
    const y = binaryKernel(op, x, z);
    adopt(y, x, a); adopt(y, z, b);
    if (grads) {
      record(op, [x, z], [y], ([g]) => {
        const [ga, gb] = grads(x, z, y, g!);
        return [ga && x.requiresGrad ? unbroadcast(ga, x.shape) : null, gb && z.requiresGrad ? unbroadcast(gb, z.shape) : null];
      });
    }
    return y;
  };
}

export const add = binary('add', (_a, _b, _y, g) => [g, g]);
export const sub = binary('sub', (_a, _b, _y, g) => [g, neg(g)]);
export const mul = binary('mul', (a, b, _y, g) => [mul(g, b), mul(g, a)]);
export const div = binary('div', (a, b, y, g) => [div(g, b), neg(mul(g, div(y, b)))]);
export const pow = binary('pow', (a, b, y, g) => [
  // b a^(b-1), taken as 0 where b == 0 (d/da a^0 = 0; PyTorch masks it the same way; 0 * 0^-1 would be NaN).
  mul(g, where(eq(b, 0), 0, mul(b, pow(a, sub(b, 1))))),
  // d/db a^b = a^b log a, taken as 0 where a <= 0 (as PyTorch does for a == 0).
  mul(g, where(gt(a, 0), mul(y, log(maximum(a, 1e-38))), 0)),
]);
/** Ties split the gradient equally, as PyTorch does. */
export const maximum = binary('maximum', (a, b, _y, g) => {
  const w = add(gt(a, b), mul(eq(a, b), 0.5));
  return [mul(g, w), mul(g, sub(1, w))];
});
export const minimum = binary('minimum', (a, b, _y, g) => {
  const w = add(lt(a, b), mul(eq(a, b), 0.5));
  return [mul(g, w), mul(g, sub(1, w))];
});

function comparison(op: BinaryOp) {
  return (a: Arg, b: Arg): Tensor => {
    const x = lhs(a, b, op); const z = rhs(a, b, op);
    const y = binaryKernel(op, x, z, 'float32');
    adopt(y, x, a); adopt(y, z, b);
    return y;
  };
}

/** A scalar lifted from a number lives as long as the op's output (the tape may need it). */
function adopt(y: Tensor, lifted: Tensor, original: Arg): void {
  if (!(original instanceof Tensor)) y.own(lifted);
}
/** Comparisons return float32 1/0 masks and are not differentiable. */
export const eq = comparison('eq');
export const ne = comparison('ne');
export const lt = comparison('lt');
export const le = comparison('le');
export const gt = comparison('gt');
export const ge = comparison('ge');

/** cond != 0 ? a : b, broadcasting all three. Differentiable in a and b. */
export function where(cond: Tensor, a: Arg, b: Arg): Tensor {
  const x = a instanceof Tensor ? a : b instanceof Tensor ? lift(a, b, 'where') : scalarOn(a, cond.backend);
  const z = b instanceof Tensor ? b : lift(b, x, 'where');
  const be = backendOf('where', cond, x, z);
  const dtype = sameDType('where', x, z);
  const shape = broadcastShapes('where', cond.shape, x.shape, z.shape);
  const out = empty(be, shape, dtype);
  launch('where', be, [cond, x, z], [out], () => be.where(expandView(cond, shape), expandView(x, shape), expandView(z, shape), out.storage));
  adopt(out, x, a); adopt(out, z, b);
  record('where', [cond, x, z], [out], ([g]) => [
    null,
    x.requiresGrad ? unbroadcast(where(cond, g!, 0), x.shape) : null,
    z.requiresGrad ? unbroadcast(where(cond, 0, g!), z.shape) : null,
  ]);
  return out;
}

export { expand };
