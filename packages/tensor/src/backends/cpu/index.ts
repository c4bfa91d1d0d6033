/** The CPU backend: plain TypeScript loops. It is the reference every other backend is tested against. */
import type { Backend, BinaryOp, Conv2dParams, MatmulEpilogue, NormAct, RandomParams, ReduceOp, Storage, UnaryArgs, UnaryOp, View } from '../../backend.js';
import type { DType, TypedArray } from '../../dtype.js';
import { typedArrayFor } from '../../dtype.js';
import { CpuStorage, cs, gather } from './storage.js';
import * as ew from './elementwise.js';
import { reduce } from './reduce.js';
import { matmul } from './matmul.js';
import { conv2d, conv2dWeightGrad } from './conv2d.js';
import { fft2 } from './fft.js';
import { random } from './random.js';
import { groupNorm, groupNormBackward } from './norm.js';
import { attention, attentionBackward } from './attention.js';

export { CpuStorage };

export class CpuBackend implements Backend {
  readonly name = 'cpu' as const;
  lastKernel = '';

  alloc(size: number, dtype: DType): Storage { return new CpuStorage(dtype, typedArrayFor(dtype, size)); }
  free(s: Storage): void { (s as CpuStorage).freed = true; }
  write(dst: Storage, data: TypedArray): void { this.lastKernel = 'cpu.write'; cs(dst, 'write').data.set(data); }
  upload(data: TypedArray): Storage {
    return new CpuStorage(data instanceof Float32Array ? 'float32' : 'int32', data.slice());
  }
  async read(v: View): Promise<TypedArray> { return gather(v); }
  async sync(): Promise<void> {}

  fill(out: Storage, value: number): void { this.lastKernel = 'cpu.fill'; cs(out, 'fill').data.fill(value); }
  copy(src: View, dst: View): void { this.lastKernel = 'cpu.copy'; ew.copy(src, dst); }
  cast(x: View, out: Storage): void { this.lastKernel = 'cpu.cast'; ew.cast(x, cs(out, 'cast')); }
  unary(op: UnaryOp, x: View, out: Storage, args?: UnaryArgs): void { this.lastKernel = `cpu.unary.${op}`; ew.unary(op, x, cs(out, op), args); }
  binary(op: BinaryOp, a: View, b: View, out: Storage): void { this.lastKernel = `cpu.binary.${op}`; ew.binary(op, a, b, cs(out, op)); }
  where(cond: View, a: View, b: View, out: Storage): void { this.lastKernel = 'cpu.where'; ew.where(cond, a, b, cs(out, 'where')); }
  reduce(op: ReduceOp, x: View, reducedRank: number, out: Storage): void { this.lastKernel = `cpu.reduce.${op}`; reduce(op, x, reducedRank, cs(out, op)); }
  matmul(a: View, b: View, out: Storage, epilogue?: MatmulEpilogue): void { this.lastKernel = epilogue ? 'cpu.matmul+epilogue' : 'cpu.matmul'; matmul(a, b, cs(out, 'matmul'), epilogue); }
  conv2d(x: View, w: View, p: Conv2dParams, out: Storage): void { this.lastKernel = 'cpu.conv2d'; conv2d(x, w, p, cs(out, 'conv2d')); }
  conv2dWeightGrad(x: View, g: View, p: Conv2dParams, kernel: [number, number], out: Storage): void {
    this.lastKernel = 'cpu.conv2d_weight_grad'; conv2dWeightGrad(x, g, p, kernel, cs(out, 'conv2dWeightGrad'));
  }
  fft2(re: View, im: View, inverse: boolean, outRe: Storage, outIm: Storage): void {
    this.lastKernel = 'cpu.fft2'; fft2(re, im, inverse, cs(outRe, 'fft2'), cs(outIm, 'fft2'));
  }
  random(p: RandomParams, out: Storage): void { this.lastKernel = `cpu.random.${p.kind}`; random(p, cs(out, 'random')); }
  groupNorm(x: View, groups: number, weight: View | null, bias: View | null, eps: number, act: NormAct, out: Storage, stats: Storage): void {
    this.lastKernel = act === 'silu' ? 'cpu.norm.group_silu' : 'cpu.norm.group'; groupNorm(x, groups, weight, bias, eps, act, cs(out, 'groupNorm'), cs(stats, 'groupNorm'));
  }
  groupNormBackward(x: View, dy: View, stats: View, groups: number, weight: View | null, bias: View | null, act: NormAct, dx: Storage | null, dwdb: Storage): void {
    this.lastKernel = 'cpu.norm.group_backward';
    groupNormBackward(x, dy, stats, groups, weight, bias, act, dx ? cs(dx, 'groupNorm') : null, cs(dwdb, 'groupNorm'));
  }
  attention(q: View, k: View, v: View, scale: number, out: Storage, lse: Storage): void { this.lastKernel = 'cpu.attention'; attention(q, k, v, scale, cs(out, 'attention'), cs(lse, 'attention')); }
  attentionBackward(q: View, k: View, v: View, out: View, lse: View, dout: View, scale: number, dq: Storage, dk: Storage, dv: Storage): void { this.lastKernel = 'cpu.attentionBackward'; attentionBackward(q, k, v, out, lse, dout, scale, cs(dq, 'attention'), cs(dk, 'attention'), cs(dv, 'attention')); }
}
