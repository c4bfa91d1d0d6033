/** The WebGPU backend: WGSL compute shaders through Dawn. Kernel families live one per file. */
import type { Backend, DeviceTiming, Conv2dParams, MatmulEpilogue, NormAct, RandomParams, ReduceOp, Storage, UnaryArgs, UnaryOp, BinaryOp, View } from '../../backend.js';
import { contiguousStrides as contiguous, isContiguous, numelOf } from '../../backend.js';
import type { DType, TypedArray } from '../../dtype.js';
import { BackendMismatchError } from '../../errors.js';
import { GpuContext, GpuStorage } from './context.js';
import * as ew from './elementwise.js';
import { reduce } from './reduce.js';
import { matmul } from './matmul.js';
import { conv2d, conv2dWeightGrad } from './conv2d.js';
import { fft2 } from './fft.js';
import { random } from './random.js';
import { attention, attentionBackward } from './attention.js';
import { groupNorm, groupNormBackward } from './norm.js';

export { GpuContext, GpuStorage };

function gs(s: Storage, op: string): GpuStorage {
  if (!(s instanceof GpuStorage)) throw new BackendMismatchError(op, `expected a webgpu storage, got ${s.backend}`);
  return s;
}

export class WebGpuBackend implements Backend {
  readonly name = 'webgpu' as const;
  constructor(readonly ctx: GpuContext) {}

  static async create(): Promise<WebGpuBackend> { return new WebGpuBackend(await GpuContext.create()); }

  get lastKernel(): string { return this.ctx.lastKernel; }
  get deviceTiming(): DeviceTiming | undefined {
    const ctx = this.ctx;
    return ctx.canTime ? { start: () => ctx.startTiming(), take: () => ctx.takeTimedDispatches(), stop: () => ctx.stopTiming() } : undefined;
  }

  alloc(size: number, dtype: DType): Storage { return this.ctx.alloc(size, dtype); }
  free(s: Storage): void { this.ctx.free(gs(s, 'free')); }
  upload(data: TypedArray): Storage {
    const s = this.ctx.alloc(data.length, data instanceof Float32Array ? 'float32' : 'int32');
    if (data.length) this.ctx.writeBuffer(s.buffer, data);
    return s;
  }
  write(dst: Storage, data: TypedArray): void {
    // A queue write runs before the unsubmitted encoder: submit first so earlier work on dst sees the old data.
    this.ctx.flush();
    this.ctx.lastKernel = 'queue.writeBuffer';
    if (data.length) this.ctx.writeBuffer(gs(dst, 'write').buffer, data);
  }
  async read(v: View): Promise<TypedArray> {
    const n = numelOf(v.shape);
    const dtype = v.storage.dtype;
    let src = v; let tmp: GpuStorage | null = null;
    if (!isContiguous(v)) {
      tmp = this.ctx.alloc(n, dtype);
      ew.copy(this.ctx, v, { storage: tmp, shape: v.shape, strides: contiguous(v.shape), offset: 0 });
      src = { storage: tmp, shape: v.shape, strides: contiguous(v.shape), offset: 0 };
    }
    const p = this.ctx.readBytes(gs(src.storage, 'read').buffer, src.offset * 4, n * 4);
    if (tmp) this.ctx.free(tmp);
    const bytes = await p;
    return dtype === 'float32' ? new Float32Array(bytes) : new Int32Array(bytes);
  }
  sync(): Promise<void> { return this.ctx.sync(); }

  fill(out: Storage, value: number): void { ew.fill(this.ctx, gs(out, 'fill'), value); }
  copy(src: View, dst: View): void { ew.copy(this.ctx, src, dst); }
  cast(x: View, out: Storage): void { ew.cast(this.ctx, x, gs(out, 'cast')); }
  unary(op: UnaryOp, x: View, out: Storage, args?: UnaryArgs): void { ew.unary(this.ctx, op, x, gs(out, op), args); }
  binary(op: BinaryOp, a: View, b: View, out: Storage): void { ew.binary(this.ctx, op, a, b, gs(out, op)); }
  where(cond: View, a: View, b: View, out: Storage): void { ew.where(this.ctx, cond, a, b, gs(out, 'where')); }
  reduce(op: ReduceOp, x: View, reducedRank: number, out: Storage): void { reduce(this.ctx, op, x, reducedRank, gs(out, op)); }
  matmul(a: View, b: View, out: Storage, epilogue?: MatmulEpilogue): void { matmul(this.ctx, a, b, gs(out, 'matmul'), epilogue); }
  conv2d(x: View, w: View, p: Conv2dParams, out: Storage): void { conv2d(this.ctx, x, w, p, gs(out, 'conv2d')); }
  conv2dWeightGrad(x: View, g: View, p: Conv2dParams, kernel: [number, number], out: Storage): void {
    conv2dWeightGrad(this.ctx, x, g, p, kernel, gs(out, 'conv2dWeightGrad'));
  }
  fft2(re: View, im: View, inverse: boolean, outRe: Storage, outIm: Storage): void {
    fft2(this.ctx, re, im, inverse, gs(outRe, 'fft2'), gs(outIm, 'fft2'));
  }
  random(p: RandomParams, out: Storage): void { random(this.ctx, p, gs(out, 'random')); }
  attention(q: View, k: View, v: View, scale: number, out: Storage, lse: Storage): void { attention(this.ctx, q, k, v, scale, gs(out, 'attention'), gs(lse, 'attention')); }
  attentionBackward(q: View, k: View, v: View, out: View, lse: View, dout: View, scale: number, dq: Storage, dk: Storage, dv: Storage): void { attentionBackward(this.ctx, q, k, v, out, lse, dout, scale, gs(dq, 'attention'), gs(dk, 'attention'), gs(dv, 'attention')); }
  groupNorm(x: View, groups: number, weight: View | null, bias: View | null, eps: number, act: NormAct, out: Storage, stats: Storage): void {
    groupNorm(this.ctx, x, groups, weight, bias, eps, act, gs(out, 'groupNorm'), gs(stats, 'groupNorm'));
  }
  groupNormBackward(x: View, dy: View, stats: View, groups: number, weight: View | null, bias: View | null, act: NormAct, dx: Storage | null, dwdb: Storage): void {
    groupNormBackward(this.ctx, x, dy, stats, groups, weight, bias, act, dx ? gs(dx, 'groupNorm') : null, gs(dwdb, 'groupNorm'));
  }
}
