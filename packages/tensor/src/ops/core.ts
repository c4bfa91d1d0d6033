/** Shared machinery for op definitions: output allocation, input checks, the trace hook. */
import type { Backend, View } from '../backend.js';
import { contiguousStrides } from '../backend.js';
import type { DType, TypedArray } from '../dtype.js';
import { BackendMismatchError, DTypeError, fmtShape } from '../errors.js';
import { numel } from '../shape.js';
import { Tensor } from '../tensor.js';
import { getBackend } from '../runtime.js';
import { recordEvent, tracing, now } from '../trace.js';

/** A new contiguous tensor of `shape` on `backend` (contents undefined until a kernel writes it). */
export function empty(backend: Backend, shape: readonly number[], dtype: DType): Tensor {
  return new Tensor(backend.alloc(numel(shape), dtype), [...shape], contiguousStrides(shape), 0, backend);
}

/** A tensor sharing `x`'s storage with another shape/strides/offset. */
export function viewOf(x: Tensor, shape: readonly number[], strides: readonly number[], offset: number): Tensor {
  return new Tensor(x.storage, [...shape], [...strides], offset, x.backend);
}

export function fromData(data: TypedArray, shape: readonly number[], backend: Backend): Tensor {
  return new Tensor(backend.upload(data), [...shape], contiguousStrides(shape), 0, backend);
}

/** Checks liveness and a common backend; returns it. */
export function backendOf(op: string, ...ts: Tensor[]): Backend {
  for (const t of ts) t.assertLive(op);
  const b = ts[0].backend;
  for (const t of ts) {
    if (t.backend !== b) {
      throw new BackendMismatchError(op, `inputs live on different backends: ${ts.map((x) => `${fmtShape(x.shape)} on ${x.backend.name}`).join(', ')} (move one with await t.to(...))`);
    }
  }
  return b;
}

export function sameDType(op: string, ...ts: Tensor[]): DType {
  const d = ts[0].dtype;
  for (const t of ts) {
    if (t.dtype !== d) throw new DTypeError(op, `inputs have different dtypes: ${ts.map((x) => `${fmtShape(x.shape)} ${x.dtype}`).join(', ')} (cast one explicitly)`);
  }
  return d;
}

export function requireFloat(op: string, ...ts: Tensor[]): void {
  for (const t of ts) if (t.dtype !== 'float32') throw new DTypeError(op, `needs float32 input, got ${t.dtype} ${fmtShape(t.shape)}`);
}

/** Runs a backend kernel and, when tracing, records it. */
export function launch(op: string, backend: Backend, inputs: readonly Tensor[], outputs: readonly Tensor[], fn: () => void): void {
  if (!tracing()) { fn(); return; }
  const t0 = now();
  fn();
  recordEvent(op, backend.name, backend.lastKernel, inputs.map((t) => [...t.shape]), outputs.map((t) => [...t.shape]), t0, backend.deviceTiming?.take());
}

/** Numbers become scalar tensors on `like`'s backend and dtype. */
export function lift(v: Tensor | number, like: Tensor, op = 'lift'): Tensor {
  if (v instanceof Tensor) return v;
  if (like.dtype === 'int32' && !Number.isInteger(v)) {
    throw new DTypeError(op, `the number ${v} cannot combine with int32 ${fmtShape(like.shape)} without truncation (cast the tensor to float32)`);
  }
  const b = like.backend;
  return fromData(like.dtype === 'int32' ? Int32Array.of(v) : Float32Array.of(v), [], b);
}

export function scalarOn(value: number, backend: Backend, dtype: DType = 'float32'): Tensor {
  return fromData(dtype === 'int32' ? Int32Array.of(value) : Float32Array.of(value), [], backend);
}

export { getBackend };

/** Views a [...batch, R, C] tensor as [B, R, C] when its batch dims merge into one stride, else null. */
export function as3d(x: Tensor): View | null {
  const r = x.rank;
  const batch = x.shape.slice(0, r - 2);
  let stride = 0;
  let seen = false;
  for (let d = batch.length - 1; d >= 0; d--) {
    if (batch[d] === 1) continue;
    if (!seen) { stride = x.strides[d]; seen = true; continue; }
    // Merging needs stride[d] == stride[d+1] * size[d+1] over non-trivial dims (0 for fully broadcast).
    let inner = d + 1; while (batch[inner] === 1) inner++;
    if (x.strides[d] !== x.strides[inner] * batch[inner]) return null;
  }
  return { storage: x.storage, shape: [numel(batch), x.shape[r - 2], x.shape[r - 1]], strides: [stride, x.strides[r - 2], x.strides[r - 1]], offset: x.offset };
}
