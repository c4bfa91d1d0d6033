/**
 * WebGPU elementwise kernels (fill, copy, cast, unary, binary, where) from one WGSL template, the "map":
 * out[i] = op(in0[i], in1[i], ...) over strided views.
 *
 * Addressing. Dims that every view walks contiguously are merged first (`coalesce`), so a contiguous
 * tensor is rank 1 and a bias broadcast over [N, C, H, W] is rank 3. The iteration space is then
 * rows x last dim; each invocation takes one row and a chunk of `K` consecutive units along the last
 * dim: it decomposes its row index once (rank - 1 integer divisions; lavapipe scalarizes them, so one
 * division per element costs several times more) and then just adds strides.
 *
 * Vector width. When every view walks the last dim with stride 1 (aligned to 4 elements) or 0, units
 * are vec4s: contiguous views load array<vec4<T>>, stride-0 views load one scalar and splat it. A
 * contiguous tensor whose length is not a multiple of 4 writes its last vec4 masked. On lavapipe vec4
 * loads are what makes the contiguous path several times faster than the scalar strided path.
 *
 * Pipelines are keyed by (kernel, op, dtypes, vector width, per-view stride-0 flags, transposed flag):
 * the rank is a parameter (it only matters once per invocation), which keeps the variants few. For that
 * the params layout is this file's own (rank first) rather than strided.ts's rank-specialized one, and
 * `stridedIndexWgsl` (a division per element) is not used.
 */
import type { BinaryOp, UnaryArgs, UnaryOp, View } from '../../backend.js';
import { numelOf } from '../../backend.js';
import type { DType } from '../../dtype.js';
import { BackendMismatchError, DTypeError, ShapeError, fmtShape } from '../../errors.js';
import { WGSL_MATH } from '../math.js';
import { type GpuContext, GpuStorage } from './context.js';
import { linearIdWgsl } from './strided.js';

export const WG = 64;
/** Units (vec4s or scalars) per invocation: enough work to amortize the per-invocation cost on lavapipe. */
const K_VEC4 = 8;
const K_SCALAR = 32;

export type WT = 'f32' | 'i32' | 'u32';
export const wgslType = (d: DType): WT => (d === 'float32' ? 'f32' : 'i32');

export function gs(v: View, op: string): GpuStorage {
  if (!(v.storage instanceof GpuStorage)) throw new BackendMismatchError(op, `expected a webgpu storage, got ${v.storage.backend}`);
  return v.storage;
}

export interface Coalesced {
  shape: number[];
  strides: number[][];
}

/**
 * Drops size-1 dims and merges neighbours that every view walks contiguously (stride[d] ==
 * stride[d+1] * shape[d+1] in all views). The result addresses exactly the same elements in the same
 * row-major order. A size-0 shape is returned as is.
 */
export function coalesce(shape: readonly number[], strides: readonly (readonly number[])[]): Coalesced {
  if (shape.some((s) => s === 0)) return { shape: [...shape], strides: strides.map((s) => [...s]) };
  const outShape: number[] = [];
  const outStrides: number[][] = strides.map(() => []);
  for (let d = 0; d < shape.length; d++) {
    if (shape[d] === 1) continue;
    const last = outShape.length - 1;
    if (last >= 0 && strides.every((s, v) => outStrides[v][last] === s[d] * shape[d])) {
      outShape[last] *= shape[d];
      strides.forEach((s, v) => { outStrides[v][last] = s[d]; });
    } else {
      outShape.push(shape[d]);
      strides.forEach((s, v) => outStrides[v].push(s[d]));
    }
  }
  return { shape: outShape, strides: outStrides };
}

interface MapSpec {
  /** Kernel family and op, e.g. 'binary.add' (names the pipeline and the trace entry). */
  name: string;
  inputs: View[];
  inTypes: WT[];
  out: View;
  outType: WT;
  /** WGSL `fn op(x0: T0, ...) -> TO`; it may read its `extra` params at p[EX + k]. */
  fn: string;
  /** Whether `fn` needs WGSL_MATH. */
  math?: boolean;
  extra?: number[];
}

/** The map template; see the file comment. */
function runMap(ctx: GpuContext, spec: MapSpec): void {
  const shape = spec.out.shape;
  for (const v of spec.inputs) {
    if (v.shape.length !== shape.length || v.shape.some((s, i) => s !== shape[i])) {
      throw new ShapeError(spec.name, `input shape ${fmtShape(v.shape)} differs from output shape ${fmtShape(shape)}`);
    }
  }
  if (numelOf(shape) === 0) return;
  const views = [...spec.inputs, spec.out];
  const c = coalesce(shape, views.map((v) => v.strides));
  if (c.shape.length === 0) { c.shape = [1]; c.strides = views.map(() => [0]); }
  const R = c.shape.length;
  const nLast = c.shape[R - 1];
  const outIdx = views.length - 1;

  // vec4 when every view has last stride 0 or 1, and a stride-1 view is 4-aligned in offset and in every other stride.
  const zeroLast = c.strides.map((s) => s[R - 1] === 0);
  const vec4 = nLast >= 4 && !zeroLast[outIdx] && (R === 1 || nLast % 4 === 0) &&
    c.strides.every((s, v) => s[R - 1] === 0 ||
      (s[R - 1] === 1 && views[v].offset % 4 === 0 && s.every((st, d) => d === R - 1 || st % 4 === 0)));
  const V = vec4 ? 4 : 1;
  const units = Math.ceil(nLast / V);
  const K = Math.min(vec4 ? K_VEC4 : K_SCALAR, units);
  const cpr = Math.ceil(units / K);
  const rows = numelOf(c.shape) / nLast;
  // Transposed last two dims (some view has |stride| 1 on dim R-2 but not on R-1): neighbouring
  // invocations take neighbouring rows, so that at each step they read neighbouring elements.
  const colMajor = !vec4 && R >= 2 && c.strides.some((s) => Math.abs(s[R - 2]) === 1 && Math.abs(s[R - 1]) > 1);
  const flags = vec4 ? zeroLast.map((z) => (z ? 's' : 'v')).join('') : colMajor ? 't' : '';
  const key = `ew:${spec.name}:${spec.inTypes.join(',')}>${spec.outType}:v${V}${flags}`;

  // params: [R, rows, units per row, K, chunks per row, elements per row, extra..., shape[0..R-2],
  //          per view: offset, strides[0..R-1]] -- in units (vec4 views: offset and all strides but
  //          the last, which is 1, divided by 4). The rank is a parameter, not part of the pipeline key.
  const extra = spec.extra ?? [];
  const HDR = 6 + extra.length;
  const words = [R, rows, units, K, cpr, nLast, ...extra, ...c.shape.slice(0, R - 1)];
  views.forEach((v, i) => {
    const scale = vec4 && !zeroLast[i] ? 4 : 1;
    words.push(v.offset / scale, ...c.strides[i].map((st, d) => (d === R - 1 ? st : st / scale)));
  });
  const params = new Uint32Array(Int32Array.from(words).buffer);

  const source = (): string => {
    const nIn = spec.inputs.length;
    const elemType = (i: number): string => {
      const t = i === outIdx ? spec.outType : spec.inTypes[i];
      return vec4 && !zeroLast[i] ? `vec4<${t}>` : t;
    };
    const name = (i: number): string => (i === outIdx ? 'dst' : `src${i}`);
    let s = '';
    for (let i = 0; i < views.length; i++) {
      s += `@group(0) @binding(${i}) var<storage, ${i === outIdx ? 'read_write' : 'read'}> ${name(i)}: array<${elemType(i)}>;\n`;
    }
    s += `@group(0) @binding(${views.length}) var<storage, read> p: array<u32>;\n`;
    s += `${linearIdWgsl(WG)}\nconst EX: u32 = 6u;\n`;
    if (spec.math) s += WGSL_MATH;
    s += `${spec.fn}\n`;
    s += `@compute @workgroup_size(${WG}) fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let id = linear_id(gid, nwg);
${colMajor
    ? `  let rows = p[1];
  let ch = id / rows;
  if (ch >= p[4]) { return; }
  let row = id - ch * rows;
  let c0 = ch * p[3];`
    : `  let cpr = p[4];
  let row = id / cpr;
  if (row >= p[1]) { return; }
  let c0 = (id - row * cpr) * p[3];`}
  let c1 = min(c0 + p[3], p[2]);
  let R = p[0];
`;
    // View v's block starts at VB + v * (1 + R); its stride of dim d is at + 1 + d.
    s += `  let VB = ${HDR}u + R - 1u;\n`;
    for (let v = 0; v < views.length; v++) {
      s += `  let b${v} = VB + ${v}u * (1u + R);\n`;
      s += `  let d${v} = bitcast<i32>(p[b${v} + R]);\n`;
      s += `  var o${v}: i32 = bitcast<i32>(p[b${v}]) + i32(c0) * d${v};\n`;
    }
    s += `  var rem = row;\n  for (var d = i32(R) - 2; d >= 0; d--) {\n    let n = p[${HDR}u + u32(d)]; let q = rem / n; let c = i32(rem - q * n); rem = q;\n`;
    for (let v = 0; v < views.length; v++) s += `    o${v} += c * bitcast<i32>(p[b${v} + 1u + u32(d)]);\n`;
    s += '  }\n';
    const args: string[] = [];
    let load = '';
    for (let v = 0; v < nIn; v++) {
      if (vec4 && zeroLast[v]) load += `    let x${v} = vec4<${spec.inTypes[v]}>(src${v}[u32(o${v})]);\n`;
      else load += `    let x${v} = src${v}[u32(o${v})];\n`;
      args.push(`x${v}`);
    }
    const step = views.map((_, v) => `    o${v} += d${v};\n`).join('');
    const out = `dst[u32(o${outIdx})]`;
    if (vec4) {
      const comp = (k: string): string => `op(${args.map((a) => `${a}.${k}`).join(', ')})`;
      const r = `    let r = vec4<${spec.outType}>(${['x', 'y', 'z', 'w'].map(comp).join(', ')});\n`;
      // Whole vec4s first; then the one partial vec4 at the end of a rank-1 tensor, written masked.
      s += `  let full = p[5] / 4u;\n  var c = c0;\n  for (; c < min(c1, full); c++) {\n${load}${r}    ${out} = r;\n${step}  }\n`;
      s += `  if (c < c1) {\n${load}${r}    ${out} = select(${out}, r, vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(p[5] - full * 4u));\n  }\n`;
    } else {
      s += `  for (var c = c0; c < c1; c++) {\n${load}    ${out} = op(${args.join(', ')});\n${step}  }\n`;
    }
    s += '}\n';
    return s;
  };

  ctx.dispatch({
    key, source, kernel: key,
    buffers: views.map((v) => gs(v, spec.name).buffer),
    params,
    workgroups: Math.ceil((rows * cpr) / WG),
  });
}

const contiguousView = (storage: GpuStorage, shape: readonly number[]): View => {
  const strides = new Array<number>(shape.length);
  let acc = 1;
  for (let d = shape.length - 1; d >= 0; d--) { strides[d] = acc; acc *= shape[d]; }
  return { storage, shape, strides, offset: 0 };
};

/** Shape of the output of an elementwise op on `x`: `out` is contiguous with x's shape. */
const outView = (out: GpuStorage, like: View): View => contiguousView(out, like.shape);

const f32Bits = (x: number): number => new Uint32Array(new Float32Array([x]).buffer)[0];
const i32Bits = (x: number): number => new Uint32Array(new Int32Array([x]).buffer)[0];

export function fill(ctx: GpuContext, out: GpuStorage, value: number): void {
  const bits = out.dtype === 'float32' ? f32Bits(value) : i32Bits(value);
  runMap(ctx, {
    name: 'fill', inputs: [], inTypes: [], out: contiguousView(out, [out.size]), outType: 'u32',
    fn: 'fn op() -> u32 { return p[EX]; }', extra: [bits],
  });
}

export function copy(ctx: GpuContext, src: View, dst: View): void {
  if (src.storage.dtype !== dst.storage.dtype) throw new DTypeError('copy', `dtypes differ: ${src.storage.dtype} -> ${dst.storage.dtype}`);
  if (numelOf(src.shape) === 0) return;
  if (src.storage === dst.storage) {
    // One buffer cannot be bound both read-only and writable in a dispatch: go through a temporary.
    const tmp = ctx.alloc(numelOf(src.shape), src.storage.dtype);
    const t = contiguousView(tmp, src.shape);
    copy(ctx, src, t);
    copy(ctx, t, dst);
    ctx.free(tmp);
    return;
  }
  runMap(ctx, { name: 'copy', inputs: [src], inTypes: ['u32'], out: dst, outType: 'u32', fn: 'fn op(x: u32) -> u32 { return x; }' });
}

export function cast(ctx: GpuContext, x: View, out: GpuStorage): void {
  const ti = wgslType(x.storage.dtype), to = wgslType(out.dtype);
  if (ti === to) { copy(ctx, x, outView(out, x)); return; }
  const body = ti === 'f32' ? 'return f32_to_i32(x);' : 'return f32(x);';
  runMap(ctx, {
    name: 'cast', inputs: [x], inTypes: [ti], out: outView(out, x), outType: to, math: ti === 'f32' && to === 'i32',
    fn: `fn op(x: ${ti}) -> ${to} { ${body} }`,
  });
}

/** WGSL bodies of the unary ops on f32 (`x` is the argument). */
const UNARY_F32: Record<UnaryOp, string> = {
  neg: '-x',
  abs: 'abs(x)',
  exp: 'exp(x)',
  log: 'log(x)',
  sqrt: 'sqrt(x)',
  rsqrt: 'inverseSqrt(x)',
  sin: 'sin(x)',
  cos: 'cos(x)',
  tanh: 'tanh_f32(x)',
  sigmoid: 'sigmoid_f32(x)',
  relu: 'select(x, 0.0, x < 0.0)',
  silu: 'silu_f32(x)',
  gelu: 'gelu_f32(x)',
  gelu_tanh: 'gelu_tanh_f32(x)',
  erf: 'erf_f32(x)',
  floor: 'floor(x)',
  // WGSL leaves sign/min/max of NaN unspecified: NaN passes through, as on the CPU.
  sign: 'select(sign(x), x, isnan_f32(x))',
  square: 'x * x',
  reciprocal: '1.0 / x',
  // The bounds travel as f32 bit patterns: WGSL has no infinity literals.
  clamp: 'select(min(max(x, bitcast<f32>(p[EX])), bitcast<f32>(p[EX + 1u])), x, isnan_f32(x))',
  step: 'select(0.0, 1.0, x > 0.0)',
  silu_grad: 'silu_grad_f32(x)',
  gelu_grad: 'gelu_grad_f32(x)',
  gelu_tanh_grad: 'gelu_tanh_grad_f32(x)',
  erf_grad: 'erf_grad_f32(x)',
};
/** int32 unary ops (the same set as the CPU's UNARY_INT); arithmetic wraps. */
const UNARY_I32: Partial<Record<UnaryOp, string>> = {
  neg: '-x',
  abs: 'abs(x)',
  sign: 'sign(x)',
  square: 'x * x',
  relu: 'select(x, 0, x < 0)',
  floor: 'x',
};
const SIMPLE_F32 = new Set<UnaryOp>(['neg', 'abs', 'exp', 'log', 'sqrt', 'rsqrt', 'sin', 'cos', 'relu', 'floor', 'square', 'reciprocal', 'step']);

export function unary(ctx: GpuContext, op: UnaryOp, x: View, out: GpuStorage, args?: UnaryArgs): void {
  const t = wgslType(x.storage.dtype);
  const body = t === 'f32' ? UNARY_F32[op] : UNARY_I32[op];
  if (!body) throw new DTypeError(op, `not defined for ${x.storage.dtype}`);
  const extra = op === 'clamp' ? [f32Bits(args?.min ?? -Infinity), f32Bits(args?.max ?? Infinity)] : [];
  runMap(ctx, {
    name: `unary.${op}`, inputs: [x], inTypes: [t], out: outView(out, x), outType: wgslType(out.dtype),
    math: t === 'f32' && !SIMPLE_F32.has(op), extra,
    fn: `fn op(x: ${t}) -> ${wgslType(out.dtype)} { return ${body}; }`,
  });
}

const CMP_WGSL: Record<string, string> = { eq: '==', ne: '!=', lt: '<', le: '<=', gt: '>', ge: '>=' };

function binaryBody(op: BinaryOp, t: WT): string | undefined {
  if (op in CMP_WGSL) {
    // lavapipe evaluates NaN != NaN as false: with a NaN operand only 'ne' holds, decided explicitly.
    if (t !== 'f32') return `return select(0.0, 1.0, a ${CMP_WGSL[op]} b);`;
    return `if (isnan_f32(a) || isnan_f32(b)) { return ${op === 'ne' ? '1.0' : '0.0'}; } return select(0.0, 1.0, a ${CMP_WGSL[op]} b);`;
  }
  switch (op) {
    case 'add': return 'return a + b;';
    case 'sub': return 'return a - b;';
    case 'mul': return 'return a * b;';
    // WGSL defines i32 x / 0 as x; the contract says 0.
    case 'div': return t === 'i32' ? 'return select(a / b, 0, b == 0);' : 'return a / b;';
    case 'pow': return t === 'f32' ? 'return pow_f32(a, b);' : undefined;
    // WGSL leaves max/min of NaN unspecified; propagate it like the CPU (Math.max) and torch.maximum.
    case 'maximum': return t === 'f32' ? 'return select(max(a, b), a + b, isnan_f32(a) || isnan_f32(b));' : 'return max(a, b);';
    case 'minimum': return t === 'f32' ? 'return select(min(a, b), a + b, isnan_f32(a) || isnan_f32(b));' : 'return min(a, b);';
    case 'add_silu': return t === 'f32' ? 'return silu_f32(a + b);' : undefined;
    case 'geglu': return t === 'f32' ? 'return a * gelu_f32(b);' : undefined;
  }
  return undefined;
}

export function binary(ctx: GpuContext, op: BinaryOp, a: View, b: View, out: GpuStorage): void {
  if (a.storage.dtype !== b.storage.dtype) throw new DTypeError(op, `dtypes differ: ${a.storage.dtype} and ${b.storage.dtype}`);
  const t = wgslType(a.storage.dtype);
  const body = binaryBody(op, t);
  if (!body) throw new DTypeError(op, `not defined for ${a.storage.dtype}`);
  const to = wgslType(out.dtype);
  runMap(ctx, {
    name: `binary.${op}`, inputs: [a, b], inTypes: [t, t], out: outView(out, a), outType: to,
    math: t === 'f32' && (op === 'pow' || op === 'maximum' || op === 'minimum' || op === 'add_silu' || op === 'geglu' || op in CMP_WGSL),
    fn: `fn op(a: ${t}, b: ${t}) -> ${to} { ${body} }`,
  });
}

export function where(ctx: GpuContext, cond: View, a: View, b: View, out: GpuStorage): void {
  if (a.storage.dtype !== b.storage.dtype) throw new DTypeError('where', `dtypes differ: ${a.storage.dtype} and ${b.storage.dtype}`);
  const tc = wgslType(cond.storage.dtype), t = wgslType(a.storage.dtype);
  runMap(ctx, {
    name: 'where', inputs: [cond, a, b], inTypes: [tc, t, t], out: outView(out, a), outType: t, math: tc === 'f32',
    // NaN counts as true (it is != 0), which lavapipe's != gets wrong without the explicit test.
    fn: `fn op(c: ${tc}, a: ${t}, b: ${t}) -> ${t} { return select(b, a, ${tc === 'f32' ? 'c != 0.0 || isnan_f32(c)' : 'c != 0'}); }`,
  });
}
