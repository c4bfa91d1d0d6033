/**
 * Elementwise and reduction kernels, at the backend-kernel level: CPU hand values, then WebGPU against
 * the CPU reference on random data over awkward shapes and views (rank 0, empty, size-1 dims, lengths
 * that are not multiples of 4, transposed, stepped, flipped, broadcast, offset, rank 8) and edge values.
 *
 * The kernel modules are called directly and views are built by hand, so that these tests exercise only
 * the elementwise/reduce family; one test at the end goes through the Backend interface.
 */
import t from 'tap';
import type { Backend, BinaryOp, ReduceOp, Storage, UnaryArgs, UnaryOp, View } from '../src/backend.js';
import { contiguousStrides, numelOf } from '../src/backend.js';
import type { DType, TypedArray } from '../src/dtype.js';
import { typedArrayFor } from '../src/dtype.js';
import { CpuStorage } from '../src/backends/cpu/storage.js';
import * as cpuEw from '../src/backends/cpu/elementwise.js';
import { reduce as cpuReduce } from '../src/backends/cpu/reduce.js';
import type { GpuStorage } from '../src/backends/webgpu/context.js';
import * as gpuEw from '../src/backends/webgpu/elementwise.js';
import { coalesce } from '../src/backends/webgpu/elementwise.js';
import { reduce as gpuReduce } from '../src/backends/webgpu/reduce.js';
import { DTypeError } from '../src/errors.js';
import { gpuContext, hostRandom } from './helpers.js';

/**
 * The WebGPU context (shared helper: without an adapter the run fails in CI and these tests are skipped,
 * loudly, elsewhere). Its dispatches are recorded, to check below that every template path ran.
 */
const { ctx, skip: gpuSkip } = await gpuContext();
const dispatched = new Set<string>();
if (ctx) {
  const dispatch = ctx.dispatch.bind(ctx);
  ctx.dispatch = (spec) => { dispatched.add(spec.key); dispatch(spec); };
}

// ---------------------------------------------------------------- data and views

const rand = hostRandom;
const randInt = (n: number, seed: number, lo: number, hi: number): Int32Array =>
  Int32Array.from(rand(n, seed, lo, hi + 1), (v) => Math.floor(v));

/** How a view walks its storage. */
type Kind = 'contig' | 'offset' | 'transposed' | 'step' | 'flip' | 'broadcast' | 'mixed';
const KINDS: Kind[] = ['contig', 'offset', 'transposed', 'step', 'flip', 'broadcast', 'mixed'];

interface Layout { size: number; strides: number[]; offset: number }

/**
 * A strided layout of logical `shape` over a larger storage: dims may be stored in reverse order
 * (transposed), stepped by 2, flipped (negative stride), broadcast (stride 0), and start at an odd offset.
 */
function layout(shape: readonly number[], kind: Kind): Layout {
  const rank = shape.length;
  const mult = shape.map((_, d): number => {
    switch (kind) {
      case 'step': return 2;
      case 'flip': return -1;
      case 'broadcast': return d % 2 === 0 ? 0 : 1;
      case 'mixed': return [2, -1, 1, 0, -2][d % 5];
      default: return 1;
    }
  });
  const order = kind === 'transposed' || kind === 'mixed' ? [...Array(rank).keys()] : [...Array(rank).keys()].reverse();
  const strides = new Array<number>(rank).fill(0);
  let acc = 1;
  for (const d of order) {
    if (mult[d] === 0) continue;
    strides[d] = acc * mult[d];
    acc *= shape[d] * Math.abs(mult[d]);
  }
  const pad = kind === 'offset' || kind === 'mixed' ? 3 : 0;
  let offset = pad;
  for (let d = 0; d < rank; d++) if (strides[d] < 0) offset += (shape[d] - 1) * -strides[d];
  return { size: numelOf(shape) === 0 ? pad + 1 : pad + acc + 2, strides, offset };
}

interface Pair { cpu: View; gpu: View | null; host: TypedArray }

function uploadGpu(data: TypedArray): GpuStorage {
  const s = ctx!.alloc(data.length, data instanceof Float32Array ? 'float32' : 'int32');
  if (data.length) ctx!.writeBuffer(s.buffer, data);
  return s;
}

/** The same view over the same storage contents on both backends. */
function pair(shape: readonly number[], kind: Kind, fillFn: (n: number) => TypedArray): Pair {
  const l = layout(shape, kind);
  const host = fillFn(l.size);
  const dtype: DType = host instanceof Float32Array ? 'float32' : 'int32';
  const cpu: View = { storage: new CpuStorage(dtype, host.slice()), shape, strides: l.strides, offset: l.offset };
  const gpu: View | null = ctx ? { storage: uploadGpu(host), shape, strides: l.strides, offset: l.offset } : null;
  return { cpu, gpu, host };
}

async function readGpu(s: GpuStorage, n: number): Promise<TypedArray> {
  const bytes = await ctx!.readBytes(s.buffer, 0, n * 4);
  return s.dtype === 'float32' ? new Float32Array(bytes) : new Int32Array(bytes);
}

function freeGpu(...vs: (View | GpuStorage | null)[]): void {
  for (const v of vs) {
    if (!v) continue;
    ctx!.free(('storage' in v ? v.storage : v) as GpuStorage);
  }
}

/** |a - b| <= atol + rtol |b| (b is the reference); NaN must match NaN, infinities must match exactly. */
function compare(a: ArrayLike<number>, b: ArrayLike<number>, atol: number, rtol: number): string | null {
  if (a.length !== b.length) return `lengths differ: ${a.length} vs ${b.length}`;
  for (let i = 0; i < a.length; i++) {
    const x = a[i], y = b[i];
    if (Number.isNaN(y) || Number.isNaN(x)) {
      if (Number.isNaN(x) !== Number.isNaN(y)) return `at ${i}: got ${x}, want ${y}`;
      continue;
    }
    if (x === y) continue;
    if (!Number.isFinite(y) || !Number.isFinite(x) || Math.abs(x - y) > atol + rtol * Math.abs(y)) {
      return `at ${i}: got ${x}, want ${y} (|diff| ${Math.abs(x - y)}, atol ${atol}, rtol ${rtol})`;
    }
  }
  return null;
}

const fmt = (s: readonly number[]): string => `[${s.join(',')}]`;

/** Runs `op` on both backends, output contiguous of `shape`/`dtype`; returns null when they agree. */
async function both(
  shape: readonly number[], dtype: DType,
  cpuRun: (out: CpuStorage) => void, gpuRun: (out: GpuStorage) => void,
  atol: number, rtol: number,
): Promise<{ err: string | null; cpu: TypedArray; gpu: TypedArray }> {
  const n = numelOf(shape);
  const cOut = new CpuStorage(dtype, typedArrayFor(dtype, n));
  cpuRun(cOut);
  const gOut = ctx!.alloc(n, dtype);
  gpuRun(gOut);
  const g = await readGpu(gOut, n);
  ctx!.free(gOut);
  return { err: compare(g, cOut.data, atol, rtol), cpu: cOut.data, gpu: g };
}

// ---------------------------------------------------------------- CPU hand values

t.test('cpu: hand values of the scalar definitions', async (t) => {
  const un = (op: UnaryOp, xs: number[], args?: UnaryArgs): Float32Array => {
    const x = new CpuStorage('float32', Float32Array.from(xs));
    const out = new CpuStorage('float32', new Float32Array(xs.length));
    cpuEw.unary(op, { storage: x, shape: [xs.length], strides: [1], offset: 0 }, out, args);
    return out.data as Float32Array;
  };
  const near = (got: number, want: number, tol: number, what: string): void => {
    t.ok(Math.abs(got - want) <= tol, `${what} = ${got}, want ${want}`);
  };
  // erf, gelu: values from CPython math.erf / exact formulas.
  near(un('erf', [0.5])[0], 0.5204998778, 1e-7, 'erf(0.5)');
  near(un('erf', [-2])[0], -0.9953222650, 1e-7, 'erf(-2)');
  near(un('erf', [1e-10])[0], 1.1283791671e-10, 1e-17, 'erf(1e-10)');
  near(un('gelu', [1])[0], 0.8413447461, 1e-7, 'gelu(1)');
  near(un('gelu', [-1])[0], -0.1586552539, 1e-7, 'gelu(-1)');
  near(un('gelu_tanh', [1])[0], 0.8411919906, 1e-7, 'gelu_tanh(1)');
  near(un('silu', [1])[0], 0.7310585786, 1e-7, 'silu(1)');
  near(un('sigmoid', [-100])[0], 0, 1e-30, 'sigmoid(-100)');
  near(un('tanh', [50])[0], 1, 0, 'tanh(50)');
  near(un('erf_grad', [0])[0], 1.1283791671, 1e-7, 'erf_grad(0)');
  near(un('gelu_grad', [0])[0], 0.5, 1e-7, 'gelu_grad(0)');
  near(un('gelu_grad', [1])[0], 1.0833154705, 1e-7, 'gelu_grad(1)'); // Phi(1) + phi(1)
  near(un('silu_grad', [0])[0], 0.5, 1e-7, 'silu_grad(0)');
  near(un('gelu_tanh_grad', [0])[0], 0.5, 1e-7, 'gelu_tanh_grad(0)');
  t.same(Array.from(un('step', [-1, 0, 2])), [0, 0, 1], 'step');
  t.same(Array.from(un('sign', [-3, 0, 2])), [-1, 0, 1], 'sign(0) = 0');
  t.same(Array.from(un('clamp', [-5, 0.5, 5], { min: -1 })), [-1, 0.5, 5], 'clamp with max = +inf');
  t.same(Array.from(un('rsqrt', [4])), [0.5], 'rsqrt');

  const bin = (op: BinaryOp, a: number[], b: number[], dtype: DType): number[] => {
    const mk = (v: number[]): View => ({ storage: new CpuStorage(dtype, dtype === 'float32' ? Float32Array.from(v) : Int32Array.from(v)), shape: [v.length], strides: [1], offset: 0 });
    const outType: DType = ['eq', 'ne', 'lt', 'le', 'gt', 'ge'].includes(op) ? 'float32' : dtype;
    const out = new CpuStorage(outType, typedArrayFor(outType, a.length));
    cpuEw.binary(op, mk(a), mk(b), out);
    return Array.from(out.data);
  };
  t.same(bin('pow', [-2, -2, 0, 2, -2, 0], [3, 2, 0, -2, 0.5, -1], 'float32'), [-8, 4, 1, 0.25, NaN, Infinity], 'pow');
  t.same(bin('div', [7, -7, 5, -2147483648], [-2, 2, 0, -1], 'int32'), [-3, -3, 0, -2147483648], 'int division truncates, x/0 = 0, wraps');
  t.same(bin('mul', [65536, 2147483647], [65536, 2], 'int32'), [0, -2], 'int mul wraps');
  t.same(bin('lt', [1, 2, 3], [2, 2, 2], 'int32'), [1, 0, 0], 'int comparison writes float 1/0');

  const castTo = (xs: number[]): number[] => {
    const out = new CpuStorage('int32', new Int32Array(xs.length));
    cpuEw.cast({ storage: new CpuStorage('float32', Float32Array.from(xs)), shape: [xs.length], strides: [1], offset: 0 }, out);
    return Array.from(out.data);
  };
  t.same(castTo([2.7, -2.7, 3e9, -3e9, NaN]), [2, -2, 2147483647, -2147483648, 0], 'float -> int truncates, saturates, NaN -> 0');

  const red = (op: ReduceOp, xs: number[], shape: number[], r: number): number[] => {
    const dtype: DType = op === 'argmax' ? 'int32' : 'float32';
    const n = numelOf(shape.slice(0, shape.length - r));
    const out = new CpuStorage(dtype, typedArrayFor(dtype, n));
    cpuReduce(op, { storage: new CpuStorage('float32', Float32Array.from(xs)), shape, strides: contiguousStrides(shape), offset: 0 }, r, out);
    return Array.from(out.data);
  };
  t.same(red('argmax', [1, 3, 3, 0, 5, 2], [2, 3], 1), [1, 1], 'argmax: first index of the max');
  t.same(red('argmax', [1, NaN, 9, NaN], [4], 1), [1], 'argmax: NaN is the max, first one wins');
  t.same(red('max', [1, NaN, 9], [3], 1), [NaN], 'max propagates NaN');
  t.same(red('sum', [], [2, 0], 1), [0, 0], 'sum of nothing is 0');
  t.same(red('sum', [1, 2, 3, 4, 5, 6], [2, 3], 2), [21], 'full sum');
  t.throws(() => cpuEw.unary('exp', { storage: new CpuStorage('int32', new Int32Array(1)), shape: [1], strides: [1], offset: 0 }, new CpuStorage('int32', new Int32Array(1))), DTypeError);
});

t.test('coalesce merges contiguous dims and keeps broadcast/transposed ones apart', async (t) => {
  t.same(coalesce([2, 3, 4], [[12, 4, 1]]), { shape: [24], strides: [[1]] });
  t.same(coalesce([2, 1, 3, 4], [[12, 99, 4, 1], [0, 0, 0, 1]]), { shape: [6, 4], strides: [[4, 1], [0, 1]] });
  t.same(coalesce([3, 4], [[1, 3]]), { shape: [3, 4], strides: [[1, 3]] });
  t.same(coalesce([1, 1], [[5, 7]]), { shape: [], strides: [[]] });
  t.same(coalesce([2, 2], [[-2, -1]]), { shape: [4], strides: [[-1]] });
});

// ---------------------------------------------------------------- webgpu vs cpu

const SHAPES: number[][] = [[], [1], [4], [7], [3, 5], [5, 1, 6], [2, 3, 4, 5], [17, 33], [2, 1, 3, 1, 2, 3], [2, 1, 2, 3, 2, 1, 2, 3], [2, 2, 2, 3, 2, 2, 2, 3]];
const EMPTY: number[][] = [[0], [3, 0, 2]];

const FLOAT_UNARY: UnaryOp[] = ['neg', 'abs', 'exp', 'log', 'sqrt', 'rsqrt', 'sin', 'cos', 'tanh', 'sigmoid', 'relu', 'silu',
  'gelu', 'gelu_tanh', 'erf', 'floor', 'sign', 'square', 'reciprocal', 'clamp', 'step', 'silu_grad', 'gelu_grad', 'gelu_tanh_grad', 'erf_grad'];
const INT_UNARY: UnaryOp[] = ['neg', 'abs', 'sign', 'square', 'relu', 'floor'];

/** Input range per op (domain restrictions) and tolerance for the GPU's f32 builtins. */
function unaryData(op: UnaryOp): { lo: number; hi: number; atol: number; rtol: number } {
  switch (op) {
    case 'log': case 'sqrt': case 'rsqrt': return { lo: 0.01, hi: 10, atol: 1e-6, rtol: 2e-6 };
    case 'exp': return { lo: -10, hi: 10, atol: 1e-6, rtol: 4e-6 };
    case 'reciprocal': return { lo: 0.1, hi: 5, atol: 1e-6, rtol: 2e-6 };
    case 'sin': case 'cos': return { lo: -6, hi: 6, atol: 2e-6, rtol: 0 };
    default: return { lo: -4, hi: 4, atol: 2e-6, rtol: 2e-6 };
  }
}

t.test('webgpu: unary ops equal cpu on all shapes and view kinds', { skip: gpuSkip }, async (t) => {
  let seed = 1;
  for (const op of FLOAT_UNARY) {
    const { lo, hi, atol, rtol } = unaryData(op);
    const args: UnaryArgs | undefined = op === 'clamp' ? { min: -1.5, max: 0.75 } : undefined;
    const bad: string[] = [];
    for (const shape of [...SHAPES, ...EMPTY]) {
      for (const kind of KINDS) {
        const x = pair(shape, kind, (n) => rand(n, seed++, lo, hi));
        const r = await both(shape, 'float32', (o) => cpuEw.unary(op, x.cpu, o, args), (o) => gpuEw.unary(ctx!, op, x.gpu!, o, args), atol, rtol);
        if (r.err) bad.push(`${fmt(shape)} ${kind}: ${r.err}`);
        freeGpu(x.gpu);
      }
    }
    t.same(bad, [], `unary ${op} float32`);
  }
  for (const op of INT_UNARY) {
    const bad: string[] = [];
    for (const shape of SHAPES) {
      for (const kind of KINDS) {
        const x = pair(shape, kind, (n) => randInt(n, seed++, -1000, 1000));
        const r = await both(shape, 'int32', (o) => cpuEw.unary(op, x.cpu, o), (o) => gpuEw.unary(ctx!, op, x.gpu!, o), 0, 0);
        if (r.err) bad.push(`${fmt(shape)} ${kind}: ${r.err}`);
        freeGpu(x.gpu);
      }
    }
    t.same(bad, [], `unary ${op} int32`);
  }
  t.throws(() => gpuEw.unary(ctx!, 'exp', pair([2], 'contig', (n) => new Int32Array(n)).gpu!, ctx!.alloc(2, 'int32')), DTypeError, 'float-only op on int32 throws');
});

t.test('webgpu: unary edge values (large |x|, infinities, clamp bounds)', { skip: gpuSkip }, async (t) => {
  const xs = [0, -0, 1e-10, -1e-10, 0.3, -0.3, 50, -50, 100, -100, 1e5, -1e5, 1e30, -1e30, 88, -88, 10, -10, NaN, Infinity, -Infinity];
  const x = pair([xs.length], 'contig', () => Float32Array.from(xs));
  const noInf = { ...x.cpu, shape: [xs.length - 2] }, noInfG = { ...x.gpu!, shape: [xs.length - 2] };
  for (const op of FLOAT_UNARY) {
    if (['exp', 'log', 'sqrt', 'rsqrt', 'sin', 'cos', 'reciprocal', 'square'].includes(op)) continue;
    // gelu-type grads at +-inf are inf * 0 on both backends; leave infinities to the ops defined there.
    const inf = !op.endsWith('_grad') && op !== 'gelu' && op !== 'gelu_tanh' && op !== 'silu';
    const r = await both([inf ? xs.length : xs.length - 2], 'float32', (o) => cpuEw.unary(op, inf ? x.cpu : noInf, o, { min: -1, max: 2 }),
      (o) => gpuEw.unary(ctx!, op, inf ? x.gpu! : noInfG, o, { min: -1, max: 2 }), 1e-6, 2e-6);
    t.equal(r.err, null, `${op} on large/small values and NaN: ${Array.from(r.gpu).join(' ')}`);
  }
  const r = await both([2], 'float32', (o) => cpuEw.unary('tanh', { ...x.cpu, shape: [2], offset: 6 }, o), (o) => gpuEw.unary(ctx!, 'tanh', { ...x.gpu!, shape: [2], offset: 6 }, o), 0, 0);
  t.same(Array.from(r.gpu), [1, -1], 'tanh(+-50) = +-1 exactly');
  const ex = pair([4], 'contig', () => Float32Array.from([100, -100, 0, 1]));
  const e = await both([4], 'float32', (o) => cpuEw.unary('exp', ex.cpu, o), (o) => gpuEw.unary(ctx!, 'exp', ex.gpu!, o), 1e-6, 4e-6);
  t.equal(e.err, null, `exp(100) = inf, exp(-100) = 0: ${Array.from(e.gpu).join(' ')}`);
  const s = await both([4], 'float32', (o) => cpuEw.unary('sigmoid', ex.cpu, o), (o) => gpuEw.unary(ctx!, 'sigmoid', ex.gpu!, o), 1e-30, 2e-6);
  t.equal(s.err, null, `sigmoid(-100) = 0, sigmoid(100) = 1: ${Array.from(s.gpu).join(' ')}`);
  for (const args of [{ min: -1, max: 1 }, { min: -Infinity, max: 0.5 }, { min: -0.5, max: Infinity }, {}, { min: 2, max: 3 }] as UnaryArgs[]) {
    const c = pair([9], 'contig', () => Float32Array.from([-1e30, -3, -1, -0.5, 0, 0.5, 1, 3, 1e30]));
    const rc = await both([9], 'float32', (o) => cpuEw.unary('clamp', c.cpu, o, args), (o) => gpuEw.unary(ctx!, 'clamp', c.gpu!, o, args), 0, 0);
    t.equal(rc.err, null, `clamp ${JSON.stringify(args)} (JSON drops infinities): ${Array.from(rc.gpu).join(' ')}`);
  }
  const ints = pair([4], 'contig', () => Int32Array.from([-2147483648, 2147483647, -7, 46341]));
  for (const op of ['neg', 'abs', 'square'] as UnaryOp[]) {
    const ri = await both([4], 'int32', (o) => cpuEw.unary(op, ints.cpu, o), (o) => gpuEw.unary(ctx!, op, ints.gpu!, o), 0, 0);
    t.equal(ri.err, null, `int32 ${op} wraps like the cpu: ${Array.from(ri.gpu).join(' ')}`);
  }
});

const FLOAT_BINARY: BinaryOp[] = ['add', 'sub', 'mul', 'div', 'pow', 'maximum', 'minimum', 'eq', 'ne', 'lt', 'le', 'gt', 'ge'];
const INT_BINARY: BinaryOp[] = ['add', 'sub', 'mul', 'div', 'maximum', 'minimum', 'eq', 'ne', 'lt', 'le', 'gt', 'ge'];
const isCmp = (op: BinaryOp): boolean => ['eq', 'ne', 'lt', 'le', 'gt', 'ge'].includes(op);

t.test('webgpu: binary ops equal cpu on all shapes and mixed view kinds', { skip: gpuSkip }, async (t) => {
  let seed = 1000;
  for (const dtype of ['float32', 'int32'] as DType[]) {
    for (const op of dtype === 'float32' ? FLOAT_BINARY : INT_BINARY) {
      const bad: string[] = [];
      for (const shape of [...SHAPES, ...EMPTY]) {
        for (let k = 0; k < KINDS.length; k++) {
          const gen = (n: number, s: number): TypedArray => {
            if (dtype === 'int32') return randInt(n, s, -20, 20);
            // Small values with repeats so comparisons see ties; pow gets integer and fractional exponents.
            const v = rand(n, s, -3, 3);
            return op === 'pow' ? v.map((x, i) => (i % 2 ? Math.round(x) : x)) : isCmp(op) ? v.map((x) => Math.round(x * 2) / 2) : v;
          };
          const a = pair(shape, KINDS[k], (n) => gen(n, seed++));
          const b = pair(shape, KINDS[(k + 3) % KINDS.length], (n) => gen(n, seed++));
          const outType: DType = isCmp(op) ? 'float32' : dtype;
          const tol = op === 'pow' ? 4e-6 : 1e-6;
          const r = await both(shape, outType, (o) => cpuEw.binary(op, a.cpu, b.cpu, o), (o) => gpuEw.binary(ctx!, op, a.gpu!, b.gpu!, o), dtype === 'int32' ? 0 : 1e-6, dtype === 'int32' ? 0 : tol);
          if (r.err) bad.push(`${fmt(shape)} ${KINDS[k]}/${KINDS[(k + 3) % KINDS.length]}: ${r.err}`);
          freeGpu(a.gpu, b.gpu);
        }
      }
      t.same(bad, [], `binary ${op} ${dtype}`);
    }
  }
});

t.test('webgpu: binary edge values (pow signs and zeros, int division, wrapping, NaN in max)', { skip: gpuSkip }, async (t) => {
  const run = async (op: BinaryOp, av: number[], bv: number[], dtype: DType, atol = 0, rtol = 0): Promise<void> => {
    const mk = (v: number[]): TypedArray => (dtype === 'float32' ? Float32Array.from(v) : Int32Array.from(v));
    const a = pair([av.length], 'contig', () => mk(av)), b = pair([bv.length], 'contig', () => mk(bv));
    const r = await both([av.length], isCmp(op) ? 'float32' : dtype, (o) => cpuEw.binary(op, a.cpu, b.cpu, o), (o) => gpuEw.binary(ctx!, op, a.gpu!, b.gpu!, o), atol, rtol);
    t.equal(r.err, null, `${op} ${dtype}: gpu ${Array.from(r.gpu).join(' ')} cpu ${Array.from(r.cpu).join(' ')}`);
    freeGpu(a.gpu, b.gpu);
  };
  await run('pow', [0, -2, -2, -2, -2, 0, 0, -0, -0, 2, 1.5, -8, -1, 10, 3, -3, NaN], [0, 3, 2, -1, 0.5, -1, 2, -1, -2, -2, 20, 1 / 3, 1e9, 10, 7, 5, 0], 'float32', 0, 4e-6);
  await run('div', [7, -7, 5, -5, 0, -2147483648, 2147483647], [-2, 2, 0, 0, 0, -1, 1], 'int32');
  await run('mul', [65536, 2147483647, -2147483648, 46341], [65536, 2, -1, 46341], 'int32');
  await run('add', [2147483647, -2147483648], [1, -1], 'int32');
  await run('sub', [-2147483648, 2147483647], [1, -1], 'int32');
  await run('maximum', [NaN, 1, -Infinity], [1, NaN, 0], 'float32');
  await run('minimum', [NaN, 1, Infinity], [1, NaN, 0], 'float32');
  await run('div', [1, -1, 0], [0, 0, 0], 'float32');
  for (const op of ['eq', 'ne', 'lt', 'le', 'gt', 'ge'] as BinaryOp[]) {
    await run(op, [NaN, 1, 0, NaN, 2, 1, -Infinity], [NaN, 1, -0, 1, NaN, 2, -Infinity], 'float32');
  }
});

t.test('webgpu: where, cast, fill and copy equal cpu', { skip: gpuSkip }, async (t) => {
  let seed = 5000;
  const bad: string[] = [];
  for (const shape of [...SHAPES, ...EMPTY]) {
    for (let k = 0; k < KINDS.length; k++) {
      const kb = KINDS[(k + 2) % KINDS.length], kc = KINDS[(k + 5) % KINDS.length];
      for (const [ct, vt] of [['float32', 'float32'], ['int32', 'float32'], ['float32', 'int32'], ['int32', 'int32']] as [DType, DType][]) {
        const c = pair(shape, KINDS[k], (n) => (ct === 'float32' ? rand(n, seed++, -1, 1).map((v) => (v > 0.2 ? v : 0)) : randInt(n, seed++, -1, 1)));
        const gen = (n: number): TypedArray => (vt === 'float32' ? rand(n, seed++) : randInt(n, seed++, -99, 99));
        const a = pair(shape, kb, gen), b = pair(shape, kc, gen);
        const r = await both(shape, vt, (o) => cpuEw.where(c.cpu, a.cpu, b.cpu, o), (o) => gpuEw.where(ctx!, c.gpu!, a.gpu!, b.gpu!, o), 0, 0);
        if (r.err) bad.push(`where cond ${ct} values ${vt} ${fmt(shape)} ${KINDS[k]}: ${r.err}`);
        freeGpu(c.gpu, a.gpu, b.gpu);
      }
      for (const [from, to] of [['float32', 'int32'], ['int32', 'float32'], ['float32', 'float32'], ['int32', 'int32']] as [DType, DType][]) {
        const x = pair(shape, KINDS[k], (n) => (from === 'float32' ? rand(n, seed++, -100, 100) : randInt(n, seed++, -1e6, 1e6)));
        const r = await both(shape, to, (o) => cpuEw.cast(x.cpu, o), (o) => gpuEw.cast(ctx!, x.gpu!, o), 0, 0);
        if (r.err) bad.push(`cast ${from}->${to} ${fmt(shape)} ${KINDS[k]}: ${r.err}`);
        freeGpu(x.gpu);
      }
      for (const dtype of ['float32', 'int32'] as DType[]) {
        // copy into an arbitrary strided destination (pad / concat / slice-assign)
        const src = pair(shape, KINDS[k], (n) => (dtype === 'float32' ? rand(n, seed++) : randInt(n, seed++, -1e9, 1e9)));
        const dl = layout(shape, kb === 'broadcast' ? 'mixed' : kb);
        if (dl.strides.some((s, d) => s === 0 && shape[d] > 1)) continue; // a broadcast dst would alias itself
        const init = dtype === 'float32' ? rand(dl.size, seed++) : randInt(dl.size, seed++, -5, 5);
        const cd = new CpuStorage(dtype, init.slice());
        const gd = uploadGpu(init);
        cpuEw.copy(src.cpu, { storage: cd, shape, strides: dl.strides, offset: dl.offset });
        gpuEw.copy(ctx!, src.gpu!, { storage: gd, shape, strides: dl.strides, offset: dl.offset });
        const err = compare(await readGpu(gd, dl.size), cd.data, 0, 0);
        if (err) bad.push(`copy ${dtype} ${fmt(shape)} ${KINDS[k]} -> ${kb}: ${err}`);
        freeGpu(src.gpu, gd);
      }
    }
  }
  t.same(bad, [], 'where (float/int cond), cast (both ways), copy (strided dst)');

  const nanCond = pair([5], 'contig', () => Float32Array.from([NaN, -0, 0, 1e-30, -Infinity]));
  const ones = pair([5], 'contig', () => Float32Array.from([1, 1, 1, 1, 1])), twos = pair([5], 'contig', () => Float32Array.from([2, 2, 2, 2, 2]));
  const rw = await both([5], 'float32', (o) => cpuEw.where(nanCond.cpu, ones.cpu, twos.cpu, o), (o) => gpuEw.where(ctx!, nanCond.gpu!, ones.gpu!, twos.gpu!, o), 0, 0);
  t.equal(rw.err, null, `where: NaN and tiny are true, +-0 false: ${Array.from(rw.gpu).join(' ')}`);

  const special = pair([10], 'contig', () => Float32Array.from([2.7, -2.7, 3e9, -3e9, NaN, Infinity, -Infinity, 2147483520, -2147483648, 0.999]));
  const rc = await both([10], 'int32', (o) => cpuEw.cast(special.cpu, o), (o) => gpuEw.cast(ctx!, special.gpu!, o), 0, 0);
  t.equal(rc.err, null, `float -> int truncates, saturates, NaN -> 0: ${Array.from(rc.gpu).join(' ')}`);
  const big = pair([3], 'contig', () => Int32Array.from([16777217, -2147483648, 2147483647]));
  const rb = await both([3], 'float32', (o) => cpuEw.cast(big.cpu, o), (o) => gpuEw.cast(ctx!, big.gpu!, o), 0, 0);
  t.equal(rb.err, null, `int -> float rounds to nearest: ${Array.from(rb.gpu).join(' ')}`);

  for (const n of [0, 1, 3, 4, 5, 1000, 4097]) {
    for (const [dtype, value] of [['float32', -2.5], ['float32', Infinity], ['int32', -7], ['int32', 2147483647]] as [DType, number][]) {
      const g = ctx!.alloc(n, dtype);
      gpuEw.fill(ctx!, g, value);
      const got = Array.from(await readGpu(g, n));
      const want = Array.from(typedArrayFor(dtype, n).fill(value));
      if (compare(got, want, 0, 0)) bad.push(`fill ${dtype} ${n} ${value}`);
      ctx!.free(g);
    }
  }
  t.same(bad, [], 'fill float32/int32 at sizes 0, 1, 3, 4, 5, 1000, 4097');

  // copy between two regions of one storage (the kernel must not bind one buffer twice)
  const host = rand(20, 77);
  const cs = new CpuStorage('float32', host.slice()), gs = uploadGpu(host);
  cpuEw.copy({ storage: cs, shape: [2, 4], strides: [4, 1], offset: 0 }, { storage: cs, shape: [2, 4], strides: [1, 2], offset: 10 });
  gpuEw.copy(ctx!, { storage: gs, shape: [2, 4], strides: [4, 1], offset: 0 }, { storage: gs, shape: [2, 4], strides: [1, 2], offset: 10 });
  t.equal(compare(await readGpu(gs, 20), cs.data, 0, 0), null, 'copy within one storage');
  freeGpu(gs);
});

t.test('webgpu: large tensors (vec4 path with tail, strided path, grids above 65535 workgroups)', { skip: gpuSkip }, async (t) => {
  const n = 1_000_003;
  const a = pair([n], 'contig', (k) => rand(k, 1)), b = pair([n], 'offset', (k) => rand(k, 2));
  const r = await both([n], 'float32', (o) => cpuEw.binary('add', a.cpu, a.cpu, o), (o) => gpuEw.binary(ctx!, 'add', a.gpu!, a.gpu!, o), 0, 0);
  t.equal(r.err, null, 'contiguous add, 1000003 elements');
  const r2 = await both([n], 'float32', (o) => cpuEw.binary('mul', a.cpu, b.cpu, o), (o) => gpuEw.binary(ctx!, 'mul', a.gpu!, b.gpu!, o), 0, 0);
  t.equal(r2.err, null, 'contiguous times unaligned-offset view, 1000003 elements');
  freeGpu(a.gpu, b.gpu);
  // [N, 2] transposed: rank 2 with a last dim of 2 gives one invocation per row, N / 64 > 65535
  // workgroups. Expected values computed directly (the generic CPU walk is slow at this size).
  const N = 65536 * 64 + 100;
  const host = rand(2 * N, 3);
  const xs = uploadGpu(host);
  const xv: View = { storage: xs, shape: [N, 2], strides: [1, N], offset: 0 };
  const neg = ctx!.alloc(2 * N, 'float32');
  gpuEw.unary(ctx!, 'neg', xv, neg);
  const sums = ctx!.alloc(N, 'float32');
  gpuReduce(ctx!, 'sum', xv, 1, sums);
  const gn = await readGpu(neg, 2 * N), gsum = await readGpu(sums, N);
  let badNeg = -1, badSum = -1;
  for (let i = 0; i < N && (badNeg < 0 || badSum < 0); i++) {
    if (badNeg < 0 && (gn[2 * i] !== -host[i] || gn[2 * i + 1] !== -host[N + i])) badNeg = i;
    if (badSum < 0 && gsum[i] !== Math.fround(host[i] + host[N + i])) badSum = i;
  }
  t.equal(badNeg, -1, `transposed [${N},2] neg (2D grid)`);
  t.equal(badSum, -1, `sum over the last axis of transposed [${N},2] (2D grid)`);
  freeGpu(xs, neg, sums);
  const bias = pair([8, 32, 48, 40], 'broadcast', (k) => rand(k, 4));
  const img = pair([8, 32, 48, 40], 'contig', (k) => rand(k, 5));
  const r5 = await both([8, 32, 48, 40], 'float32', (o) => cpuEw.binary('add', img.cpu, bias.cpu, o), (o) => gpuEw.binary(ctx!, 'add', img.gpu!, bias.gpu!, o), 0, 0);
  t.equal(r5.err, null, 'add with a broadcast operand [8,32,48,40]');
  freeGpu(bias.gpu, img.gpu);
});

// ---------------------------------------------------------------- reductions

/**
 * f32 sums on the GPU round differently from the CPU's f64 accumulation: allow ~eps * sqrt(n) * scale
 * (rounding errors of a random walk), and a few ulps of the result (SUM_RTOL) for sums far from 0.
 */
const sumTol = (m: number, maxAbs: number): number => 64 * 2 ** -24 * Math.sqrt(m) * maxAbs + 1e-6;
const SUM_RTOL = 2 ** -20;

const REDUCE_CASES: [number[], number][] = [
  [[7], 1], [[4], 1], [[1], 1], [[3, 5], 1], [[3, 5], 2], [[5, 1, 6], 2], [[2, 3, 4, 5], 1], [[2, 3, 4, 5], 2], [[2, 3, 4, 5], 3],
  [[2, 3, 4, 5], 4], [[17, 33], 1], [[2, 1, 3, 1, 2, 3], 3], [[2, 1, 2, 3, 2, 1, 2, 3], 5], [[3, 0, 2], 1], [[3, 2, 0], 1], [[0, 4], 1],
  // long rows: split into ranges + a second pass
  [[3, 9001], 1], [[2, 40, 129], 2], [[50003], 1],
  // shapes whose views take the vec4 lanes: across outputs when transposed, along 2+ reduced dims when broadcast
  [[12, 40], 1], [[8, 3, 100], 2], [[8, 5000], 1], [[3, 4, 8], 2], [[2, 6, 16, 8], 3], [[5, 2, 3000, 8], 2],
];

t.test('webgpu: reductions equal cpu (sum/max/min/argmax, float32/int32, all view kinds)', { skip: gpuSkip }, async (t) => {
  let seed = 9000;
  for (const dtype of ['float32', 'int32'] as DType[]) {
    for (const op of ['sum', 'max', 'min', 'argmax'] as ReduceOp[]) {
      const bad: string[] = [];
      for (const [shape, r] of REDUCE_CASES) {
        if (op !== 'sum' && numelOf(shape.slice(shape.length - r)) === 0) continue;
        for (const kind of KINDS) {
          // Few distinct values so argmax/max see ties.
          const x = pair(shape, kind, (n) => (dtype === 'float32' ? rand(n, seed++, -2, 2).map((v) => (op === 'sum' ? v : Math.round(v * 4) / 4)) : randInt(n, seed++, -8, 8)));
          const outShape = shape.slice(0, shape.length - r);
          const m = numelOf(shape.slice(shape.length - r));
          const outType: DType = op === 'argmax' ? 'int32' : dtype;
          const atol = op === 'sum' && dtype === 'float32' ? sumTol(m, 2) : 0;
          const rtol = op === 'sum' && dtype === 'float32' ? SUM_RTOL : 0;
          const res = await both(outShape, outType, (o) => cpuReduce(op, x.cpu, r, o), (o) => gpuReduce(ctx!, op, x.gpu!, r, o), atol, rtol);
          if (res.err) bad.push(`${fmt(shape)} r=${r} ${kind}: ${res.err}`);
          freeGpu(x.gpu);
        }
      }
      t.same(bad, [], `reduce ${op} ${dtype}`);
    }
  }
});

t.test('webgpu: reduction edge cases (NaN, -inf, int wrap, ties across split ranges)', { skip: gpuSkip }, async (t) => {
  const run = async (op: ReduceOp, data: TypedArray, shape: number[], r: number, what: string): Promise<void> => {
    const x = pair(shape, 'contig', () => data);
    const outType: DType = op === 'argmax' ? 'int32' : x.cpu.storage.dtype;
    const res = await both(shape.slice(0, shape.length - r), outType, (o) => cpuReduce(op, x.cpu, r, o), (o) => gpuReduce(ctx!, op, x.gpu!, r, o), 0, 0);
    t.equal(res.err, null, `${op} ${what}: gpu ${Array.from(res.gpu).slice(0, 8).join(' ')}`);
    freeGpu(x.gpu);
  };
  const rows = Float32Array.from([1, NaN, 9, NaN, -Infinity, -Infinity, -Infinity, -Infinity, 3, 7, 7, 2, NaN, 1, 2, 3]);
  for (const op of ['max', 'min', 'argmax'] as ReduceOp[]) await run(op, rows, [4, 4], 1, 'rows with NaN / all -inf / ties / leading NaN');
  const long = new Float32Array(20000).fill(-Infinity);
  long[12345] = 5; long[17000] = 5; long[19999] = NaN;
  await run('argmax', long.slice(0, 19999), [19999], 1, 'split ranges, tie across ranges');
  await run('argmax', long, [20000], 1, 'split ranges, NaN in the last range');
  await run('max', long.slice(0, 19999), [19999], 1, 'split ranges');
  await run('argmax', new Float32Array(9000).fill(-Infinity), [9000], 1, 'all -inf, split');
  await run('sum', Int32Array.from({ length: 5000 }, (_, i) => 1_000_000_000 + i), [5000], 1, 'int32 wraps');
  await run('sum', Int32Array.from({ length: 40 }, (_, i) => 2_000_000_000 - i), [4, 10], 1, 'int32 rows wrap');
});

t.test('webgpu: full sum over 4M floats is within eps * sqrt(n) of the f64 sum', { skip: gpuSkip }, async (t) => {
  const n = 4 * 1024 * 1024;
  for (const [lo, hi] of [[-1, 1], [0, 1]]) {
    const x = pair([n], 'contig', (k) => rand(k, 42, lo, hi));
    const res = await both([], 'float32', (o) => cpuReduce('sum', x.cpu, 1, o), (o) => gpuReduce(ctx!, 'sum', x.gpu!, 1, o), sumTol(n, 1), SUM_RTOL);
    t.equal(res.err, null, `sum of U(${lo},${hi}): gpu ${res.gpu[0]} cpu ${res.cpu[0]} (|diff| ${Math.abs(res.gpu[0] - res.cpu[0]).toExponential(2)}, tol ${sumTol(n, 1).toExponential(2)})`);
    freeGpu(x.gpu);
  }
});

t.test('backend level: CpuBackend and WebGpuBackend agree through the Backend interface', { skip: gpuSkip }, async (t) => {
  // Imported here, so that a problem in a sibling kernel family fails this test only.
  const { CpuBackend } = await import('../src/backends/cpu/index.js');
  const { WebGpuBackend } = await import('../src/backends/webgpu/index.js');
  const backends: Backend[] = [new CpuBackend(), new WebGpuBackend(ctx!)];
  const results = await Promise.all(backends.map(async (b) => {
    const x = b.upload(rand(60, 1, -2, 2)), y = b.upload(rand(60, 2, -2, 2)), k = b.upload(randInt(12, 3, -5, 5));
    const xt: View = { storage: x, shape: [5, 12], strides: [1, 5], offset: 0 }; // transposed
    const yb: View = { storage: y, shape: [5, 12], strides: [0, 1], offset: 7 }; // broadcast rows
    const kb: View = { storage: k, shape: [5, 12], strides: [0, 1], offset: 0 };
    const out: Record<string, TypedArray> = {};
    const run = async (name: string, size: number, dtype: DType, f: (o: Storage) => void): Promise<void> => {
      const o = b.alloc(size, dtype);
      f(o);
      out[name] = await b.read({ storage: o, shape: [size], strides: [1], offset: 0 });
      b.free(o);
    };
    await run('gelu', 60, 'float32', (o) => b.unary('gelu', xt, o));
    await run('mul', 60, 'float32', (o) => b.binary('mul', xt, yb, o));
    await run('lt', 60, 'float32', (o) => b.binary('lt', xt, yb, o));
    await run('where', 60, 'int32', (o) => b.where(xt, kb, kb, o));
    await run('cast', 60, 'int32', (o) => b.cast(xt, o));
    await run('sum', 5, 'float32', (o) => b.reduce('sum', xt, 1, o));
    await run('argmax', 12, 'int32', (o) => b.reduce('argmax', { storage: x, shape: [12, 5], strides: [5, 1], offset: 0 }, 1, o));
    const f = b.alloc(7, 'float32');
    b.fill(f, 0.25);
    b.copy({ storage: y, shape: [3], strides: [-2], offset: 9 }, { storage: f, shape: [3], strides: [2], offset: 1 });
    out.fillcopy = await b.read({ storage: f, shape: [7], strides: [1], offset: 0 });
    out.readStrided = await b.read({ storage: x, shape: [4, 3], strides: [-3, 7], offset: 20 });
    b.free(f); b.free(x); b.free(y); b.free(k);
    return out;
  }));
  for (const name of Object.keys(results[0])) {
    t.equal(compare(results[1][name], results[0][name], 1e-6, 1e-6), null, `${name}: webgpu equals cpu`);
  }
  t.match(backends[1].lastKernel, /^ew:|^red:|copy/, 'webgpu lastKernel names the pipeline');
});

t.test('webgpu: every template path ran, and the number of pipeline variants stays bounded', { skip: gpuSkip }, async (t) => {
  const keys = [...dispatched];
  const seen = (re: RegExp): boolean => keys.some((k) => re.test(k));
  t.ok(seen(/^ew:binary\.add:f32,f32>f32:v4vvv$/), 'elementwise: vec4');
  t.ok(seen(/^ew:binary\.\w+:.*:v4(vs|sv)v$/), 'elementwise: vec4 with a stride-0 operand');
  t.ok(seen(/^ew:.*:v1t$/), 'elementwise: scalar, transposed (lanes over rows)');
  t.ok(seen(/^ew:.*:v1$/), 'elementwise: scalar strided');
  for (const lanes of ['scalar', 'inner', 'outer']) {
    t.ok(seen(new RegExp(`^red:\\w+:\\w+:i1:${lanes}:V?I?$`)), `reduce: ${lanes} lanes, one reduced dim`);
    t.ok(seen(new RegExp(`^red:\\w+:\\w+:iN:${lanes}:V?I?$`)), `reduce: ${lanes} lanes, several reduced dims`);
  }
  t.ok(seen(/^red:argmax:.*:mI$/), 'reduce: argmax second pass (merge)');
  t.ok(ctx!.pipelineCount < 350, `${ctx!.pipelineCount} pipelines after all the tests above`);
});
