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
  | 'eq' | 'ne' | 'lt' | 'le' | 'gt' | 'ge'
  // fused pairs (float32 only): silu(a + b), and GEGLU's a * gelu_erf(b) (value * gate)
  | 'add_silu' | 'geglu';

/** Activation fused after a normalization. */
export type NormAct = 'none' | 'silu';

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
  /**
   * Batched matmul: a [B,M,K], b [B,K,N] (any strides, batch stride may be 0) -> out [B,M,N], with an optional
   * epilogue applied as each output is stored: out = act(a @ b + bias[n]).
   */
  matmul(a: View, b: View, out: Storage, epilogue?: MatmulEpilogue): void;
  /** x [N,C,H,W], w [O,C/groups,kh,kw] -> out [N,O,Ho,Wo]; cross-correlation as in PyTorch. */
  conv2d(x: View, w: View, p: Conv2dParams, out: Storage): void;
  /** conv2d's weight gradient: x [N,C,H,W], g [N,O,Ho,Wo] (the output gradient) -> out [O,C/groups,kh,kw]. */
  conv2dWeightGrad(x: View, g: View, p: Conv2dParams, kernel: [number, number], out: Storage): void;
  /**
   * 2D discrete Fourier transform over the last two axes of complex data (re, im of equal shape
   * [..., H, W]), batched over the leading axes. Forward: sum x e^{-2 pi i k n / N}; inverse: sum x
   * e^{+2 pi i ...} / (H W). Outputs are contiguous [..., H, W].
   */
  fft2(re: View, im: View, inverse: boolean, outRe: Storage, outIm: Storage): void;
  /** Fills the first `size` elements of `out` from the Philox stream (float32). */
  random(p: RandomParams, out: Storage): void;
  /**
   * Fused GroupNorm (norm.ts in each backend): x [N, C, ...] (any strides) in `groups` groups of C/groups
   * channels; per (n, group) the mean and biased variance, y = (x - mean) * rstd * weight[c] + bias[c]
   * (weight, bias: [C] views, or null for none), then `act`. out: contiguous in x's shape; stats: contiguous
   * [N, groups, 2] holding (mean, rstd) with rstd = 1 / sqrt(var + eps), for the backward.
   */
  groupNorm(x: View, groups: number, weight: View | null, bias: View | null, eps: number, act: NormAct, out: Storage, stats: Storage): void;
  /**
   * Backward of `groupNorm` from its saved stats: dy contiguous in x's shape; with z = xhat * weight + bias and
   * dz = dy * act'(z): dx = rstd * (dz w - mean_group(dz w) - xhat * mean_group(dz w xhat)) (skipped when dx
   * is null); dwdb: contiguous [2, C] = (sum dz * xhat, sum dz) over the batch and spatial axes.
   */
  groupNormBackward(x: View, dy: View, stats: View, groups: number, weight: View | null, bias: View | null, act: NormAct, dx: Storage | null, dwdb: Storage): void;

  /**
   * Fused attention (flash-attention): q [B,Lq,d], k [B,Lk,d], v [B,Lk,dv] (any strides, batch stride may
   * be 0) -> out [B,Lq,dv] = softmax(q k^T * scale) v and lse [B,Lq] = the rows' logsumexp of the scaled
   * scores (kept for the backward); the Lq x Lk scores need not exist at once. The backward takes out, lse
   * and dout ([B,Lq,dv]) and writes dq, dk, dv (contiguous, shaped as q, k, v with batch B), using
   * D = rowsum(dout * out) and dS = P * (dP - D).
   */
  attention(q: View, k: View, v: View, scale: number, out: Storage, lse: Storage): void;
  attentionBackward(q: View, k: View, v: View, out: View, lse: View, dout: View, scale: number, dq: Storage, dk: Storage, dv: Storage): void;

  /** Name of the kernel the last call ran (for the op trace). */
  readonly lastKernel: string;
}

/** What a matmul applies to each output before storing it: bias [N] (any stride) per column, then an activation. */
export interface MatmulEpilogue { bias?: View | null; act?: 'none' | 'silu' | 'gelu' }

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
