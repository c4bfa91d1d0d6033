/**
 * The contract every backend implements. Kernels are primitives over strided views; everything else
 * (broadcasting, autodiff, composites) lives above this line, once, for all backends.
 *
 * Conventions:
 * - A `View` is a strided window on a storage: element (i0..ik) lives at offset + sum(i_d * strides[d]).
 *   Strides are in elements and may be 0 (broadcast) or negative (flip).
 * - Every `out` storage is freshly allocated by the caller, contiguous (row-major) in the op's output
 *   shape, of the op's output dtype, unless the method says otherwise.
 * - Methods enqueue work and return at once; `read` is the only way back to the host and is async.
 */
import type { DType, TypedArray } from './dtype.js';

export type BackendName = 'cpu' | 'webgpu';

export interface Storage {
  readonly backend: BackendName;
  readonly dtype: DType;
  /** Capacity in elements. */
  readonly size: number;
  /** Number of live tensors that reference this storage; freed when it drops to 0. */
  refs: number;
  freed: boolean;
}

export interface View {
  readonly storage: Storage;
  readonly shape: readonly number[];
  readonly strides: readonly number[];
  readonly offset: number;
}

export type UnaryOp =
  | 'neg' | 'abs' | 'exp' | 'log' | 'sqrt' | 'rsqrt' | 'sin' | 'cos' | 'tanh' | 'sigmoid' | 'relu'
  | 'silu' | 'gelu' | 'gelu_tanh' | 'erf' | 'floor' | 'sign' | 'square' | 'reciprocal' | 'clamp'
  // gradient helpers, so that common backward passes are one kernel:
  | 'step'        // x > 0 ? 1 : 0
  | 'silu_grad'   // d silu / dx
  | 'gelu_grad' | 'gelu_tanh_grad' | 'erf_grad';
/** `clamp` reads `args.min` / `args.max` (either may be -Infinity/Infinity). */
export interface UnaryArgs { min?: number; max?: number }

export type BinaryOp =
  | 'add' | 'sub' | 'mul' | 'div' | 'pow' | 'maximum' | 'minimum'
  // comparisons write 1 or 0 in the output dtype (float32)
  | 'eq' | 'ne' | 'lt' | 'le' | 'gt' | 'ge';

/** sum/max/min write the input dtype; argmax writes int32 (first index of the maximum). */
export type ReduceOp = 'sum' | 'max' | 'min' | 'argmax';

export interface Conv2dParams {
  stride: [number, number];
  padding: [number, number];
  dilation: [number, number];
  groups: number;
}

export interface RandomParams {
  kind: 'uniform' | 'normal';
  /** Philox key: the seed's low and high 32 bits. */
  key: [number, number];
  /** Index of the first element in the stream (see random/philox.ts for the stream layout). */
  offset: number;
}

/** Per-dispatch device times (GPU timestamp queries), for traces. */
export interface DeviceTiming {
  /** Starts timing every dispatch (each gets its own timestamped pass: slower). */
  start(): void;
  /** Ids of the dispatches timed since the last call. */
  take(): number[];
  /** Stops timing; resolves to microseconds per dispatch id. */
  stop(): Promise<Float64Array>;
}

export interface Backend {
  readonly name: BackendName;
  /** Present where the device can time its own work. */
  readonly deviceTiming?: DeviceTiming;

  alloc(size: number, dtype: DType): Storage;
  free(s: Storage): void;
  /** A new storage holding a copy of `data`. */
  upload(data: TypedArray): Storage;
  /** Overwrites the first data.length elements of `dst` with host data, after all work enqueued so far. */
  write(dst: Storage, data: TypedArray): void;
  /** The view's elements, row-major, as a new typed array. */
  read(v: View): Promise<TypedArray>;
  /** Wait until all enqueued work is done. */
  sync(): Promise<void>;

  /** Sets the first `size` elements of `out` to `value`. */
  fill(out: Storage, value: number): void;
  /** dst[i] = src[i] for views of equal shape and dtype; `dst` may be any strided view (no aliasing with src). */
  copy(src: View, dst: View): void;
  /** Converts between dtypes (float32 -> int32 truncates toward zero). */
  cast(x: View, out: Storage): void;
  unary(op: UnaryOp, x: View, out: Storage, args?: UnaryArgs): void;
  /** `a` and `b` are already broadcast to the output shape (stride 0 on broadcast axes). */
  binary(op: BinaryOp, a: View, b: View, out: Storage): void;
  /** out = cond != 0 ? a : b; all three already broadcast to the output shape. */
  where(cond: View, a: View, b: View, out: Storage): void;
  /**
   * Reduces the last `reducedRank` axes of `x`. `out` has shape x.shape.slice(0, -reducedRank)
   * (an empty reduced set never reaches a backend). Sum over zero elements is 0; max/min over zero
   * elements are rejected above this line.
   */
  reduce(op: ReduceOp, x: View, reducedRank: number, out: Storage): void;
  /** Batched matmul: a [B,M,K], b [B,K,N] (any strides, batch stride may be 0) -> out [B,M,N]. */
  matmul(a: View, b: View, out: Storage): void;
  /** x [N,C,H,W], w [O,C/groups,kh,kw] -> out [N,O,Ho,Wo]; cross-correlation as in PyTorch. */
  conv2d(x: View, w: View, p: Conv2dParams, out: Storage): void;
  /**
   * 2D discrete Fourier transform over the last two axes of complex data (re, im of equal shape
   * [..., H, W]), batched over the leading axes. Forward: sum x e^{-2 pi i k n / N}; inverse: sum x
   * e^{+2 pi i ...} / (H W). Outputs are contiguous [..., H, W].
   */
  fft2(re: View, im: View, inverse: boolean, outRe: Storage, outIm: Storage): void;
  /** Fills the first `size` elements of `out` from the Philox stream (float32). */
  random(p: RandomParams, out: Storage): void;

  /** Name of the kernel the last call ran (for the op trace). */
  readonly lastKernel: string;
}

export const numelOf = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

export function contiguousStrides(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let d = shape.length - 1; d >= 0; d--) { s[d] = acc; acc *= shape[d]; }
  return s;
}

export function isContiguous(v: { shape: readonly number[]; strides: readonly number[] }): boolean {
  let acc = 1;
  for (let d = v.shape.length - 1; d >= 0; d--) {
    if (v.shape[d] !== 1 && v.strides[d] !== acc) return false;
    acc *= v.shape[d];
  }
  return true;
}
