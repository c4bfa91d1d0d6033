/**
 * Fused elementwise pairs, one kernel each (backend binary ops): silu(a + b), and GEGLU's
 * value * gelu(gate) over the two halves of one tensor. Their composites (add + silu, narrow + gelu + mul)
 * are the references they are tested against.
 */
import type { BinaryOp, UnaryOp, View } from '../backend.js';
import { ShapeError, fmtShape } from '../errors.js';
import { record } from '../autodiff.js';
import { broadcastShapes } from '../shape.js';
import type { Tensor } from '../tensor.js';
import { backendOf, empty, launch, requireFloat, viewOf } from './core.js';
import { add, mul } from './elementwise.js';
import { concat } from './views.js';
import { unbroadcast } from './broadcast.js';

/** A broadcast view of x (stride 0 on new and size-1 axes), recording nothing. */
function broadcastView(x: Tensor, shape: readonly number[]): View {
  const lead = shape.length - x.rank;
  const strides = shape.map((n, d) => (d < lead || x.shape[d - lead] !== n ? 0 : x.strides[d - lead]));
  return { storage: x.storage, shape, strides, offset: x.offset };
}

function binaryKernel(name: string, op: BinaryOp, a: Tensor, b: Tensor): Tensor {
  const be = backendOf(name, a, b);
  requireFloat(name, a, b);
  const shape = broadcastShapes(name, a.shape, b.shape);
  const out = empty(be, shape, 'float32');
  launch(name, be, [a, b], [out], () => be.binary(op, broadcastView(a, shape), broadcastView(b, shape), out.storage));
  return out;
}

/** A gradient-helper unary kernel (silu_grad, gelu_grad), for backward passes; records nothing. */
function unaryGrad(op: Extract<UnaryOp, 'silu_grad' | 'gelu_grad'>, x: Tensor): Tensor {
  const be = backendOf(op, x);
  const out = empty(be, x.shape, 'float32');
  launch(op, be, [x], [out], () => be.unary(op, x, out.storage));
  return out;
}

/** silu(a + b) with broadcasting, in one kernel. */
export function addSilu(a: Tensor, b: Tensor): Tensor {
  const y = binaryKernel('addSilu', 'add_silu', a, b);
  record('addSilu', [a, b], [y], ([g]) => {
    const d = mul(g!, unaryGrad('silu_grad', add(a, b)));
    return [a.requiresGrad ? unbroadcast(d, a.shape) : null, b.requiresGrad ? unbroadcast(d, b.shape) : null];
  });
  return y;
}

/** The two halves of x's last axis as views (value, gate), recording nothing. */
function halves(x: Tensor): [Tensor, Tensor] {
  const k = x.rank - 1;
  const h = x.shape[k] / 2;
  const shape = [...x.shape.slice(0, k), h];
  return [viewOf(x, shape, x.strides, x.offset), viewOf(x, shape, x.strides, x.offset + h * x.strides[k])];
}

/**
 * GEGLU's gate (CompVis attention.py:37-44): x [..., 2h] -> x[..., :h] * gelu(x[..., h:]) with the exact
 * (erf) GELU, in one kernel.
 */
export function geglu(x: Tensor): Tensor {
  requireFloat('geglu', x);
  if (x.rank < 1 || x.shape[x.rank - 1] % 2 !== 0) throw new ShapeError('geglu', `needs an even last axis (value and gate halves), got ${fmtShape(x.shape)}`);
  const [value, gate] = halves(x);
  const y = binaryKernel('geglu', 'geglu', value, gate);
  value.dispose(); gate.dispose();
  record('geglu', [x], [y], ([g]) => {
    const [v, gt] = halves(x);
    // d/dvalue = gelu(gate): the same fused kernel on (g, gate); d/dgate = g * value * gelu'(gate).
    const dv = binaryKernel('geglu', 'geglu', g!, gt);
    const dg = mul(mul(g!, v), unaryGrad('gelu_grad', gt));
    return [concat([dv, dg], x.rank - 1)];
  });
  return y;
}
