/**
 * The Tensor: (storage, shape, strides, offset) on a backend, plus autodiff fields. Views share storage;
 * the storage is freed when the last tensor on it is disposed. Methods are thin wrappers over the op
 * functions in ./ops, where each op is defined once.
 */
import type { Backend, BackendName, Storage, View } from './backend.js';
import { contiguousStrides, isContiguous } from './backend.js';
import type { DType, TypedArray } from './dtype.js';
import { BYTES_PER_ELEMENT } from './dtype.js';
import { DisposedError, GradientError, ShapeError, fmtShape } from './errors.js';
import type { Node } from './autodiff.js';
import { liveStats, registerTensorClass, trackInScope, untrack } from './memory.js';
import { numel } from './shape.js';
import * as ops from './ops/index.js';
import type { SliceSpec, ReduceOptions, VarOptions, PadMode } from './ops/index.js';
import { backward as runBackward } from './ops/grad.js';
import { getBackend } from './runtime.js';

let nextId = 1;

export type NestedArray = number | NestedArray[];

export class Tensor implements View {
  readonly id = nextId++;
  readonly dtype: DType;
  requiresGrad = false;
  /** Accumulated gradient of a leaf tensor after `backward()`. */
  grad: Tensor | null = null;
  /** The tape node that produced this tensor (null for leaves and when nothing required grad). */
  node: Node | null = null;
  outputIndex = 0;
  private disposedFlag = false;
  /** Tensors whose lifetime follows this one (e.g. a scalar operand lifted from a number). */
  private owned: Tensor[] | null = null;

  constructor(
    readonly storage: Storage,
    readonly shape: readonly number[],
    readonly strides: readonly number[],
    readonly offset: number,
    readonly backend: Backend,
  ) {
    this.dtype = storage.dtype;
    if (storage.refs++ === 0) {
      liveStats.storages[backend.name]++;
      liveStats.bytes[backend.name] += storage.size * BYTES_PER_ELEMENT[storage.dtype];
    }
    liveStats.tensors[backend.name]++;
    trackInScope(this);
  }

  get rank(): number { return this.shape.length; }
  get size(): number { return numel(this.shape); }
  get isDisposed(): boolean { return this.disposedFlag; }
  get isContiguous(): boolean { return isContiguous(this); }
  get backendName(): BackendName { return this.backend.name; }

  /** Frees this tensor (idempotent); the storage goes when no view of it is left. */
  dispose(): void {
    if (this.disposedFlag) return;
    this.disposedFlag = true;
    liveStats.tensors[this.backend.name]--;
    untrack(this);
    if (--this.storage.refs === 0) {
      liveStats.storages[this.backend.name]--;
      liveStats.bytes[this.backend.name] -= this.storage.size * BYTES_PER_ELEMENT[this.storage.dtype];
      this.storage.freed = true;
      this.backend.free(this.storage);
    }
    this.node = null;
    if (this.grad) { this.grad.dispose(); this.grad = null; }
    if (this.owned) for (const t of this.owned) t.dispose();
    this.owned = null;
  }

  /** Ties `t`'s lifetime to this tensor's. */
  own(t: Tensor): void { (this.owned ??= []).push(t); }

  assertLive(op: string): void {
    if (this.disposedFlag) throw new DisposedError(op, `tensor #${this.id} ${fmtShape(this.shape)} was used after dispose()`);
  }

  // ---- reading back ----
  /** The elements, row-major, as a new typed array. */
  async data(): Promise<TypedArray> { this.assertLive('data'); return this.backend.read(this); }
  /** The single element of a one-element tensor. */
  async item(): Promise<number> {
    if (this.size !== 1) throw new ShapeError('item', `needs a one-element tensor, got ${fmtShape(this.shape)}`);
    return (await this.data())[0];
  }
  /** Nested JS arrays. */
  async array(): Promise<NestedArray> {
    const d = await this.data();
    const build = (dim: number, off: number): NestedArray => {
      if (dim === this.rank) return d[off];
      const step = this.shape.slice(dim + 1).reduce((a, b) => a * b, 1);
      return Array.from({ length: this.shape[dim] }, (_, i) => build(dim + 1, off + i * step));
    };
    return build(0, 0);
  }
  /** A copy on another backend. */
  async to(backend: BackendName | Backend): Promise<Tensor> {
    const target = getBackend(backend);
    const data = await this.data();
    return new Tensor(target.upload(data), [...this.shape], contiguousStrides(this.shape), 0, target);
  }

  // ---- autodiff ----
  /** Accumulates d(this)/d(leaf) into each leaf's `.grad`. `this` must have one element unless `grad` is given. */
  backward(grad?: Tensor): void {
    if (!this.requiresGrad) throw new GradientError('backward', `tensor ${fmtShape(this.shape)} does not require grad (no input of its computation had requiresGrad)`);
    runBackward([this], grad ? [grad] : undefined, true);
  }
  /** Marks this tensor as a leaf that requires grad. Returns this. */
  requireGrad(flag = true): this { this.requiresGrad = flag; return this; }
  /** Same storage, no tape history. */
  detach(): Tensor { return ops.detach(this); }
  /** Copies `src`'s values into this tensor's storage (shapes must match; for parameter updates, no autodiff). */
  assign(src: Tensor): this { ops.assign(this, src); return this; }

  // ---- views and shape ----
  reshape(shape: readonly number[]): Tensor { return ops.reshape(this, shape); }
  flatten(startAxis = 0, endAxis = -1): Tensor { return ops.flatten(this, startAxis, endAxis); }
  permute(axes: readonly number[]): Tensor { return ops.permute(this, axes); }
  transpose(a = -2, b = -1): Tensor { return ops.transpose(this, a, b); }
  slice(specs: readonly (SliceSpec | null)[]): Tensor { return ops.slice(this, specs); }
  narrow(axis: number, start: number, length: number): Tensor { return ops.narrow(this, axis, start, length); }
  expand(shape: readonly number[]): Tensor { return ops.expand(this, shape); }
  squeeze(axes?: number | readonly number[]): Tensor { return ops.squeeze(this, axes); }
  unsqueeze(axis: number): Tensor { return ops.unsqueeze(this, axis); }
  flip(axes: number | readonly number[]): Tensor { return ops.flip(this, axes); }
  contiguous(): Tensor { return ops.contiguous(this); }
  clone(): Tensor { return ops.clone(this); }
  cast(dtype: DType): Tensor { return ops.cast(this, dtype); }
  pad(pads: readonly number[], mode: PadMode = 'constant', value = 0): Tensor { return ops.pad(this, pads, mode, value); }
  split(sizes: number | readonly number[], axis = 0): Tensor[] { return ops.split(this, sizes, axis); }

  // ---- elementwise ----
  neg(): Tensor { return ops.neg(this); }
  abs(): Tensor { return ops.abs(this); }
  exp(): Tensor { return ops.exp(this); }
  log(): Tensor { return ops.log(this); }
  sqrt(): Tensor { return ops.sqrt(this); }
  rsqrt(): Tensor { return ops.rsqrt(this); }
  sin(): Tensor { return ops.sin(this); }
  cos(): Tensor { return ops.cos(this); }
  tanh(): Tensor { return ops.tanh(this); }
  sigmoid(): Tensor { return ops.sigmoid(this); }
  relu(): Tensor { return ops.relu(this); }
  silu(): Tensor { return ops.silu(this); }
  gelu(approximate: 'none' | 'tanh' = 'none'): Tensor { return ops.gelu(this, approximate); }
  erf(): Tensor { return ops.erf(this); }
  floor(): Tensor { return ops.floor(this); }
  sign(): Tensor { return ops.sign(this); }
  square(): Tensor { return ops.square(this); }
  reciprocal(): Tensor { return ops.reciprocal(this); }
  clamp(min: number | null, max: number | null = null): Tensor { return ops.clamp(this, min, max); }
  add(y: Tensor | number): Tensor { return ops.add(this, y); }
  sub(y: Tensor | number): Tensor { return ops.sub(this, y); }
  mul(y: Tensor | number): Tensor { return ops.mul(this, y); }
  div(y: Tensor | number): Tensor { return ops.div(this, y); }
  pow(y: Tensor | number): Tensor { return ops.pow(this, y); }
  maximum(y: Tensor | number): Tensor { return ops.maximum(this, y); }
  minimum(y: Tensor | number): Tensor { return ops.minimum(this, y); }
  eq(y: Tensor | number): Tensor { return ops.eq(this, y); }
  ne(y: Tensor | number): Tensor { return ops.ne(this, y); }
  lt(y: Tensor | number): Tensor { return ops.lt(this, y); }
  le(y: Tensor | number): Tensor { return ops.le(this, y); }
  gt(y: Tensor | number): Tensor { return ops.gt(this, y); }
  ge(y: Tensor | number): Tensor { return ops.ge(this, y); }

  // ---- reductions ----
  sum(axes?: number | readonly number[], opts?: ReduceOptions): Tensor { return ops.sum(this, axes, opts); }
  mean(axes?: number | readonly number[], opts?: ReduceOptions): Tensor { return ops.mean(this, axes, opts); }
  max(axes?: number | readonly number[], opts?: ReduceOptions): Tensor { return ops.max(this, axes, opts); }
  min(axes?: number | readonly number[], opts?: ReduceOptions): Tensor { return ops.min(this, axes, opts); }
  var(axes?: number | readonly number[], opts?: VarOptions): Tensor { return ops.variance(this, axes, opts); }
  argmax(axis?: number, opts?: ReduceOptions): Tensor { return ops.argmax(this, axis, opts); }
  logsumexp(axes?: number | readonly number[], opts?: ReduceOptions): Tensor { return ops.logsumexp(this, axes, opts); }

  // ---- linear algebra ----
  matmul(y: Tensor): Tensor { return ops.matmul(this, y); }

  toString(): string { return `Tensor(${fmtShape(this.shape)}, ${this.dtype}, ${this.backend.name}${this.requiresGrad ? ', requiresGrad' : ''})`; }
}

registerTensorClass((v: unknown): v is Tensor => v instanceof Tensor);
