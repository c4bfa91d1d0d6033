/**
 * WebGPU reductions over the last `reducedRank` axes (sum, max, min, argmax).
 *
 * One template. Outer (kept) and inner (reduced) dims are coalesced separately. Each invocation reduces
 * one contiguous range of the flattened inner index for its output(s): it decomposes the range start
 * once and walks the strided inner dims odometer-style (no division per element). With one range per
 * output (many outputs, or short rows) that is the whole job; a few long rows are cut into `S` ranges so
 * that enough invocations run, their partials (value, and index for argmax) go to a temporary [nOut, S]
 * and a second dispatch of the same template reduces those. No workgroup memory: barriers are expensive
 * on lavapipe, and the second pass is short. Invocations are numbered range-major, so neighbouring
 * invocations reduce neighbouring outputs (for column sums that makes their loads adjacent). Output and
 * reduced ranks are parameters; the pipeline key holds the op, dtype, lanes, and one-vs-several reduced dims.
 *
 * Lanes. vec4 loads are several times faster than scalar loads on lavapipe, so a 4-aligned view is read
 * as array<vec4<T>> (the same buffer is also bound as scalars for an unaligned tail):
 * - 'inner': the innermost reduced dim is contiguous: one vec4 holds 4 consecutive reduced elements;
 * - 'outer': the innermost kept dim is contiguous (e.g. a sum over the batch axis of [B, F]): one vec4
 *   holds the same reduced element of 4 neighbouring outputs, so one invocation reduces 4 outputs;
 * - 'scalar': anything else.
 * Sums add blocks of BLOCK units into a block accumulator first: one long f32 running sum drifts (its
 * rounding errors are correlated), blocked it stays near eps * sqrt(n).
 */
import type { ReduceOp, View } from '../../backend.js';
import { numelOf } from '../../backend.js';
import { DeviceLimitError, ShapeError, fmtShape } from '../../errors.js';
import { WGSL_MATH } from '../math.js';
import type { GpuContext, GpuStorage } from './context.js';
import { WG, coalesce, fill, gs, wgslType, type WT } from './elementwise.js';
import { linearIdWgsl } from './strided.js';

/** Invocations worth having in flight before rows are split (lavapipe: 2 threads x 8 lanes; headroom for real GPUs). */
const TARGET_INVOCATIONS = 4096;
/** A split range holds at least this many loads, so that a split pays for its second pass. */
const MIN_RANGE = 256;
/** Upper bound on ranges per row (the second pass reads them serially per output). */
const MAX_SPLIT = 1024;
/** Sums accumulate blocks of this many loads before adding them to the total. */
const BLOCK = 32;
/** Reduced dims left after coalescing, at most (the odometer keeps its coordinates in an array). */
const MAX_RANK = 16;

type Lanes = 'scalar' | 'inner' | 'outer';

interface Plan {
  outer: number[];
  outerStrides: number[];
  inner: number[];
  innerStrides: number[];
  offset: number;
}

function plan(x: View, reducedRank: number): Plan {
  const k = x.shape.length - reducedRank;
  const o = coalesce(x.shape.slice(0, k), [x.strides.slice(0, k)]);
  const i = coalesce(x.shape.slice(k), [x.strides.slice(k)]);
  if (i.shape.length === 0) { i.shape = [1]; i.strides = [[0]]; }
  return { outer: o.shape, outerStrides: o.strides[0], inner: i.shape, innerStrides: i.strides[0], offset: x.offset };
}

function chooseLanes(p: Plan): Lanes {
  const ri = p.inner.length, ro = p.outer.length;
  const aligned = (strides: number[], skip: number): boolean => strides.every((s, d) => d === skip || s % 4 === 0);
  if (p.offset % 4 !== 0) return 'scalar';
  if (p.innerStrides[ri - 1] === 1 && p.inner[ri - 1] >= 4 && (ri === 1 || p.inner[ri - 1] % 4 === 0) &&
      aligned(p.innerStrides, ri - 1) && aligned(p.outerStrides, -1)) return 'inner';
  if (ro > 0 && p.outerStrides[ro - 1] === 1 && p.outer[ro - 1] % 4 === 0 &&
      aligned(p.outerStrides, ro - 1) && aligned(p.innerStrides, -1)) return 'outer';
  return 'scalar';
}

interface Pass {
  op: ReduceOp;
  t: WT;
  p: Plan;
  lanes: Lanes;
  /** Second pass of argmax: the index of each partial comes from the first pass's index buffer. */
  merge: boolean;
  /** One range per output (the second pass). */
  single: boolean;
}

/** Accumulator identity and update, per op and type, on named accumulator/index variables. */
function accum(op: ReduceOp, t: WT): { init: string; update: (v: string, j: string, acc: string, idx: string) => string } {
  const lowest = t === 'f32' ? '-inf_f32()' : '(i32(-2147483647) - 1)';
  const highest = t === 'f32' ? 'inf_f32()' : '2147483647';
  const nan = (v: string): string => (t === 'f32' ? `isnan_f32(${v})` : 'false');
  switch (op) {
    case 'sum': return { init: `${t}(0)`, update: (v, _j, acc) => `${acc} += ${v};` };
    // NaN propagates: once acc is NaN no comparison holds, and isnan(v) lets only another NaN in.
    case 'max': return { init: lowest, update: (v, _j, acc) => `if (${v} > ${acc} || ${nan(v)}) { ${acc} = ${v}; }` };
    case 'min': return { init: highest, update: (v, _j, acc) => `if (${v} < ${acc} || ${nan(v)}) { ${acc} = ${v}; }` };
    // First index of the maximum; NaN counts as the maximum (as in PyTorch).
    case 'argmax': return {
      init: lowest,
      update: (v, j, acc, idx) => `if (${v} > ${acc} || (${nan(v)} && !${nan(acc)})) { ${acc} = ${v}; ${idx} = ${j}; }`,
    };
  }
}

const C4 = ['x', 'y', 'z', 'w'];

/** Ranges per row, and range length, in loads. */
function split(groups: number, loads: number): { S: number; L: number } {
  let S = 1;
  if (groups < TARGET_INVOCATIONS && loads >= 2 * MIN_RANGE) {
    S = Math.min(Math.ceil(TARGET_INVOCATIONS / groups), Math.floor(loads / MIN_RANGE), MAX_SPLIT);
  }
  const L = Math.max(1, Math.ceil(loads / S));
  return { S: Math.max(1, Math.ceil(loads / L)), L };
}

/**
 * Records one reduction dispatch and returns S (ranges per output). With S > 1 the outputs are partials
 * laid out [nOut, S].
 */
function dispatchPass(ctx: GpuContext, pass: Pass, x: GpuStorage, idxIn: GpuStorage | null,
  alloc: (nOut: number, S: number) => { val: GpuStorage | null; idx: GpuStorage | null }): { S: number; val: GpuStorage | null; idx: GpuStorage | null } {
  const { op, t, p, lanes, merge, single } = pass;
  const ro = p.outer.length, ri = p.inner.length;
  const nOut = numelOf(p.outer);
  const m = numelOf(p.inner);
  const U = lanes === 'scalar' ? 1 : 4;
  const div = (a: number[], skip: number): number[] => a.map((s, d) => (d === skip ? s : s / U));
  // Everything below in loads (units of U elements).
  const innerU = lanes === 'inner' ? [...p.inner.slice(0, -1), Math.floor(p.inner[ri - 1] / 4)] : p.inner;
  const innerStridesU = lanes === 'inner' ? div(p.innerStrides, ri - 1) : div(p.innerStrides, -1);
  const outerU = lanes === 'outer' ? [...p.outer.slice(0, -1), p.outer[ro - 1] / 4] : p.outer;
  const outerStridesU = lanes === 'outer' ? div(p.outerStrides, ro - 1) : div(p.outerStrides, -1);
  const groups = numelOf(outerU);
  const loads = numelOf(innerU);
  const tail = lanes === 'inner' ? m - 4 * loads : 0;
  const { S, L } = single ? { S: 1, L: Math.max(1, loads) } : split(groups, loads);
  const { val, idx } = alloc(nOut, S);

  // params: [groups, S, L, loads, offset, tail, ro, ri, outer shape, outer strides, inner shape,
  // inner strides], in loads. The ranks are parameters: only "one reduced dim or several" is in the key.
  const words = Int32Array.from([groups, S, L, loads, p.offset / U, tail, ro, ri, ...outerU, ...outerStridesU, ...innerU, ...innerStridesU]);
  const multi = ri > 1;
  const key = `red:${op}:${t}:${multi ? 'iN' : 'i1'}:${lanes}:${merge ? 'm' : ''}${val ? 'V' : ''}${idx ? 'I' : ''}`;

  const source = (): string => {
    const pi = (k: string): string => `bitcast<i32>(p[${k}])`;
    const { init, update } = accum(op, t);
    const sum = op === 'sum';
    // Only bindings the shader uses may be listed (the layout is derived from the shader).
    const bindings: string[] = [];
    if (lanes !== 'outer') bindings.push(`var<storage, read> xs: array<${t}>;`);
    if (U === 4) bindings.push(`var<storage, read> xv: array<vec4<${t}>>;`);
    if (merge) bindings.push('var<storage, read> idx_in: array<i32>;');
    if (val) bindings.push(`var<storage, read_write> out_val: array<${t}>;`);
    if (idx) bindings.push('var<storage, read_write> out_idx: array<i32>;');
    bindings.push('var<storage, read> p: array<u32>;');
    let s = bindings.map((b, i) => `@group(0) @binding(${i}) ${b}`).join('\n') + '\n';
    s += `${linearIdWgsl(WG)}\n${WGSL_MATH}\nconst MAX_RANK: u32 = ${MAX_RANK}u;\n`;
    s += `@compute @workgroup_size(${WG}) fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let id = linear_id(gid, nwg);
  let S = p[1];
  // Split-major: neighbouring invocations take neighbouring outputs of the same range.
  let sp = id / p[0];
  if (sp >= S) { return; }
  let o = id - sp * p[0];
  let j0 = sp * p[2];
  let j1 = min(j0 + p[2], p[3]);
  let ro = p[6];
  let ri = p[7];
  let OS = 8u;
  let OST = OS + ro;
  let IS = OST + ro;
  let IST = IS + ri;
  var off: i32 = ${pi('4')};
  var rem = o;
  for (var d = i32(ro) - 1; d >= 0; d--) {
    let n = p[OS + u32(d)]; let q = rem / n; off += i32(rem - q * n) * ${pi('OST + u32(d)')}; rem = q;
  }
  let base = off;
  // Odometer over the inner dims, started at j0: the innermost coordinate in cl, the others in c.
  let nl = p[IST - 1u];
  let sl = ${pi('IST + ri - 1u')};
`;
    if (multi) {
      s += `  var c: array<u32, MAX_RANK>;
  var r = j0;
  for (var d = i32(ri) - 1; d >= 0; d--) {
    let n = p[IS + u32(d)]; let q = r / n; c[d] = r - q * n; r = q;
    off += i32(c[d]) * ${pi('IST + u32(d)')};
  }
  var cl = c[ri - 1u];
`;
    } else {
      s += '  off += i32(j0) * sl;\n';
    }
    const accT = lanes === 'outer' ? `vec4<${t}>` : t;
    s += `  var acc: ${accT} = ${accT}(${init});\n  var idx: ${lanes === 'outer' ? 'vec4<u32>' : 'u32'} = ${lanes === 'outer' ? 'vec4<u32>(j0)' : 'j0'};\n`;
    if (sum && lanes === 'inner') s += `  var acc4 = vec4<${t}>(${t}(0));\n`;
    // The loop body for one load at `off` (load index j).
    let body: string;
    if (lanes === 'scalar') {
      body = `    let v = xs[u32(off)];\n    ${update('v', merge ? 'u32(idx_in[u32(off)])' : 'j', sum ? 'blk' : 'acc', 'idx')}\n`;
    } else if (lanes === 'inner') {
      body = '    let v = xv[u32(off)];\n';
      body += sum ? '    blk += v;\n' : C4.map((c, k) => `    ${update(`v.${c}`, `j * 4u + ${k}u`, 'acc', 'idx')}\n`).join('');
    } else {
      body = '    let v = xv[u32(off)];\n';
      body += sum ? '    blk += v;\n' : C4.map((c) => `    ${update(`v.${c}`, 'j', `acc.${c}`, `idx.${c}`)}\n`).join('');
    }
    body += '    off += sl;\n';
    if (multi) {
      // On wrap of the innermost coordinate, carry outwards (once per inner row, so a loop is fine).
      body += `    cl++;
    if (cl == nl) {
      cl = 0u; off -= i32(nl) * sl;
      var d = ri - 2u;
      loop {
        c[d]++; off += ${pi('IST + d')};
        if (c[d] < p[IS + d] || d == 0u) { break; }
        off -= i32(c[d]) * ${pi('IST + d')}; c[d] = 0u; d--;
      }
    }
`;
    }
    s += '  var j = j0;\n';
    if (sum) {
      const blkT = lanes === 'scalar' ? t : `vec4<${t}>`;
      s += `  while (j < j1) {\n    let je = min(j + ${BLOCK}u, j1);\n    var blk = ${blkT}(${t}(0));\n` +
        `    for (; j < je; j++) {\n${body.replace(/^/gm, '  ')}    }\n    ${lanes === 'inner' ? 'acc4' : 'acc'} += blk;\n  }\n`;
      if (lanes === 'inner') s += '  acc = (acc4.x + acc4.y) + (acc4.z + acc4.w);\n';
    } else {
      s += `  for (; j < j1; j++) {\n${body}  }\n`;
    }
    if (lanes === 'inner') {
      // Elements past the last whole vec4 of a contiguous row (ri == 1), taken by the row's last range.
      s += `  if (j1 == p[3]) {\n    for (var k = 0u; k < p[5]; k++) {\n      let v = xs[u32(base) * 4u + p[3] * 4u + k];\n` +
        `      ${update('v', 'p[3] * 4u + k', 'acc', 'idx')}\n    }\n  }\n`;
    }
    if (lanes === 'outer') {
      if (val) s += C4.map((c, k) => `  out_val[(o * 4u + ${k}u) * S + sp] = acc.${c};\n`).join('');
      if (idx) s += C4.map((c, k) => `  out_idx[(o * 4u + ${k}u) * S + sp] = i32(idx.${c});\n`).join('');
    } else {
      if (val) s += '  out_val[o * S + sp] = acc;\n';
      if (idx) s += '  out_idx[o * S + sp] = i32(idx);\n';
    }
    s += '}\n';
    return s;
  };

  const buffers: GPUBuffer[] = [];
  if (lanes !== 'outer') buffers.push(x.buffer);
  if (U === 4) buffers.push(x.buffer);
  if (merge) buffers.push(idxIn!.buffer);
  if (val) buffers.push(val.buffer);
  if (idx) buffers.push(idx.buffer);
  ctx.dispatch({
    key, source, buffers, kernel: `reduce.${op}`,
    params: new Uint32Array(words.buffer),
    workgroups: Math.ceil((groups * S) / WG),
  });
  return { S, val, idx };
}

export function reduce(ctx: GpuContext, op: ReduceOp, x: View, reducedRank: number, out: GpuStorage): void {
  const rank = x.shape.length;
  if (reducedRank < 0 || reducedRank > rank) throw new ShapeError(op, `cannot reduce ${reducedRank} axes of ${fmtShape(x.shape)}`);
  const nOut = numelOf(x.shape.slice(0, rank - reducedRank));
  const m = numelOf(x.shape.slice(rank - reducedRank));
  if (nOut === 0) return;
  if (m === 0) {
    if (op !== 'sum') throw new ShapeError(op, `reduction over zero elements of ${fmtShape(x.shape)}`);
    fill(ctx, out, 0);
    return;
  }
  const t = wgslType(x.storage.dtype);
  const p = plan(x, reducedRank);
  if (p.inner.length > MAX_RANK) {
    throw new DeviceLimitError(op, `${p.inner.length} non-mergeable reduced dims in ${fmtShape(x.shape)}; the kernel handles at most ${MAX_RANK}`);
  }
  const isArg = op === 'argmax';
  const temps: GpuStorage[] = [];
  const first = dispatchPass(ctx, { op, t, p, lanes: chooseLanes(p), merge: false, single: false }, gs(x, op), null, (n, S) => {
    if (S === 1) return { val: isArg ? null : out, idx: isArg ? out : null };
    const val = ctx.alloc(n * S, x.storage.dtype);
    const idx = isArg ? ctx.alloc(n * S, 'int32') : null;
    temps.push(val, ...(idx ? [idx] : []));
    return { val, idx };
  });
  if (first.S > 1) {
    // Second pass over the partials [nOut, S]; argmax takes each partial's index from the first pass.
    const S = first.S;
    const p2: Plan = { outer: [nOut], outerStrides: [S], inner: [S], innerStrides: [1], offset: 0 };
    const lanes = isArg ? 'scalar' : chooseLanes(p2);
    dispatchPass(ctx, { op, t, p: p2, lanes, merge: isArg, single: true }, first.val!, first.idx, () => ({ val: isArg ? null : out, idx: isArg ? out : null }));
  }
  for (const s of temps) ctx.free(s);
}
