/**
 * GroupNorm (+ optional SiLU) on WebGPU in three dispatches, no workgroup memory (barriers are slow on
 * lavapipe, see matmul.ts):
 * 1. `norm.group_stats`: each group's elements (contiguous once x is [N, C, ...] row-major within a sample)
 *    are cut into chunks of at least MIN_CHUNK loads, enough chunks to keep the device busy; each invocation
 *    sums d = x - k and d^2 over its chunk, k being the chunk's first element, in vec4 lanes and blocks
 *    of BLOCK loads. Shifting by a sample of the data keeps sum(d^2) - sum(d)^2 / n accurate when the mean
 *    is large against the spread (a plain sum/sumsq in f32 loses everything at mean 100, std 1).
 * 2. `norm.group_merge`: one invocation per group merges its chunks' (count, mean, M2) with Chan et al.'s
 *    pairwise update and writes (mean, rstd) to `stats`.
 * 3. `norm.group` / `norm.group_silu`: one invocation per run of K units (vec4s when the spatial size allows)
 *    of one channel row: scale = rstd * weight[c] and shift = bias[c] are loaded once per invocation, then
 *    y = (x - mean) * scale + shift and the activation.
 * An x that is not row-major within each sample (any batch stride is fine) is first copied contiguous.
 */
import type { NormAct, View } from '../../backend.js';
import { contiguousStrides, numelOf } from '../../backend.js';
import { DTypeError, ShapeError, fmtShape } from '../../errors.js';
import type { GpuContext, GpuStorage } from './context.js';
import { WG, copy, gs } from './elementwise.js';
import { linearIdWgsl } from './strided.js';

/** Invocations worth having in flight for the statistics pass (as reduce.ts). */
const TARGET_INVOCATIONS = 4096;
/** Loads per statistics chunk, at least (a chunk costs one partial to merge). */
const MIN_CHUNK = 256;
/** Statistics chunks per group, at most (the merge reads them serially). */
const MAX_CHUNKS = 256;
/** Loads summed into a block accumulator before it joins the chunk total (limits f32 drift). */
const BLOCK = 32;
/** Units per invocation in the normalize pass (as elementwise.ts). */
const K_VEC4 = 8;
const K_SCALAR = 32;

const f32Bits = (x: number): number => new Uint32Array(new Float32Array([x]).buffer)[0];

/** Offset and batch stride of x when each sample is row-major [C, ...]; null otherwise. */
function sampleContiguous(x: View): { offset: number; batch: number } | null {
  let acc = 1;
  for (let d = x.shape.length - 1; d >= 1; d--) {
    if (x.shape[d] !== 1 && x.strides[d] !== acc) return null;
    acc *= x.shape[d];
  }
  const batch = x.shape[0] === 1 ? acc : x.strides[0];
  return batch >= 0 ? { offset: x.offset, batch } : null;
}

/** x's storage with each sample row-major (a contiguous copy, `tmp`, when x is not), its offset and batch stride. */
function sampleLayout(ctx: GpuContext, x: View, op: string): { src: GpuStorage; tmp: GpuStorage | null; offset: number; batch: number } {
  const layout = sampleContiguous(x);
  if (layout) return { src: gs(x, op), tmp: null, ...layout };
  const tmp = ctx.alloc(numelOf(x.shape), 'float32');
  copy(ctx, x, { storage: tmp, shape: x.shape, strides: contiguousStrides(x.shape), offset: 0 });
  return { src: tmp, tmp, offset: 0, batch: numelOf(x.shape.slice(1)) };
}

/** One-element-per-binding WGSL declarations, numbered in order. */
const bindings = (decls: string[]): string => decls.map((d, i) => `@group(0) @binding(${i}) ${d}`).join('\n') + '\n';

export function groupNorm(ctx: GpuContext, x: View, groups: number, weight: View | null, bias: View | null, eps: number, act: NormAct,
  out: GpuStorage, stats: GpuStorage): void {
  const op = 'groupNorm';
  if (x.storage.dtype !== 'float32') throw new DTypeError(op, `needs float32 input, got ${x.storage.dtype} ${fmtShape(x.shape)}`);
  const [n, c] = x.shape;
  if (x.shape.length < 2 || !(groups > 0) || c % groups !== 0) throw new ShapeError(op, `${groups} groups do not divide the channels of ${fmtShape(x.shape)}`);
  for (const [name, v] of [['weight', weight], ['bias', bias]] as const) {
    if (v && (v.shape.length !== 1 || v.shape[0] !== c)) throw new ShapeError(op, `${name} ${fmtShape(v.shape)} must be [${c}] for x ${fmtShape(x.shape)}`);
  }
  const spatial = numelOf(x.shape.slice(2));
  const cpg = c / groups;
  const len = cpg * spatial;
  const nG = n * groups;
  if (nG === 0 || len === 0) return;

  const { src, tmp, offset, batch } = sampleLayout(ctx, x, op);

  // ---- 1. chunk partials ----
  const U1 = len % 4 === 0 && offset % 4 === 0 && batch % 4 === 0 ? 4 : 1;
  const loads = len / U1;
  let S = 1;
  if (nG < TARGET_INVOCATIONS && loads >= 2 * MIN_CHUNK) S = Math.min(Math.ceil(TARGET_INVOCATIONS / nG), Math.floor(loads / MIN_CHUNK), MAX_CHUNKS);
  const L = Math.ceil(loads / S);
  S = Math.ceil(loads / L);
  const part = ctx.alloc(nG * S * 4, 'float32');
  const T1 = U1 === 4 ? 'vec4<f32>' : 'f32';
  ctx.dispatch({
    key: `norm.group_stats:v${U1}`, kernel: 'norm.group_stats',
    buffers: [src.buffer, part.buffer],
    // [groups total, chunks per group, loads per chunk, loads per group, groups, offset, batch stride, group stride] in loads
    params: [nG, S, L, loads, groups, offset / U1, batch / U1, len / U1],
    workgroups: Math.ceil((nG * S) / WG),
    source: () => `${bindings([`var<storage, read> x: array<${T1}>;`, 'var<storage, read_write> part: array<vec4<f32>>;', 'var<storage, read> p: array<u32>;'])}
${linearIdWgsl(WG)}
@compute @workgroup_size(${WG}) fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let id = linear_id(gid, nwg);
  let S = p[1];
  let gi = id / S;
  if (gi >= p[0]) { return; }
  let sp = id - gi * S;
  let ni = gi / p[4];
  let base = p[5] + ni * p[6] + (gi - ni * p[4]) * p[7];
  let j0 = sp * p[2];
  let j1 = min(j0 + p[2], p[3]);
  let k = ${U1 === 4 ? 'x[base + j0].x' : 'x[base + j0]'};
  var a1 = ${T1}(0.0);
  var a2 = ${T1}(0.0);
  var j = j0;
  while (j < j1) {
    let je = min(j + ${BLOCK}u, j1);
    var b1 = ${T1}(0.0);
    var b2 = ${T1}(0.0);
    for (; j < je; j++) {
      let d = x[base + j] - k;
      b1 += d;
      b2 = fma(d, d, b2);
    }
    a1 += b1;
    a2 += b2;
  }
${U1 === 4
    ? '  let s1 = (a1.x + a1.y) + (a1.z + a1.w);\n  let s2 = (a2.x + a2.y) + (a2.z + a2.w);'
    : '  let s1 = a1;\n  let s2 = a2;'}
  part[id] = vec4<f32>(k, s1, s2, f32((j1 - j0) * ${U1}u));
}
`,
  });

  // ---- 2. merge ----
  ctx.dispatch({
    key: 'norm.group_merge', kernel: 'norm.group_merge',
    buffers: [part.buffer, stats.buffer],
    params: [nG, S, f32Bits(eps)],
    workgroups: Math.ceil(nG / WG),
    source: () => `${bindings(['var<storage, read> part: array<vec4<f32>>;', 'var<storage, read_write> st: array<f32>;', 'var<storage, read> p: array<u32>;'])}
${linearIdWgsl(WG)}
@compute @workgroup_size(${WG}) fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let gi = linear_id(gid, nwg);
  if (gi >= p[0]) { return; }
  let S = p[1];
  // Means are kept relative to the first chunk's shift k0, so the running mean has small magnitude and its
  // roundings do not add up at the scale of a large mean.
  let k0 = part[gi * S].x;
  var cnt = 0.0;
  var mean = 0.0;
  var m2 = 0.0;
  for (var s = 0u; s < S; s++) {
    let q = part[gi * S + s];
    let nb = q.w;
    let d1 = q.y / nb;
    let mb = (q.x - k0) + d1;
    let m2b = max(q.z - q.y * d1, 0.0);
    let tot = cnt + nb;
    let delta = mb - mean;
    mean += delta * (nb / tot);
    m2 += m2b + delta * delta * (cnt * nb / tot);
    cnt = tot;
  }
  st[2u * gi] = k0 + mean;
  st[2u * gi + 1u] = inverseSqrt(m2 / cnt + bitcast<f32>(p[2]));
}
`,
  });
  ctx.free(part);

  // ---- 3. normalize + affine + activation ----
  const U3 = spatial % 4 === 0 && offset % 4 === 0 && batch % 4 === 0 ? 4 : 1;
  const T3 = U3 === 4 ? 'vec4<f32>' : 'f32';
  const upr = spatial / U3;
  const K = Math.min(U3 === 4 ? K_VEC4 : K_SCALAR, upr);
  const cpr = Math.ceil(upr / K);
  const rows = n * c;
  const decls = [`var<storage, read> x: array<${T3}>;`, 'var<storage, read> st: array<f32>;'];
  const buffers = [src.buffer, stats.buffer];
  if (weight) { decls.push('var<storage, read> w: array<f32>;'); buffers.push(gs(weight, op).buffer); }
  if (bias) { decls.push('var<storage, read> b: array<f32>;'); buffers.push(gs(bias, op).buffer); }
  decls.push(`var<storage, read_write> y: array<${T3}>;`, 'var<storage, read> p: array<u32>;');
  buffers.push(out.buffer);
  const silu = act === 'silu';
  const name = silu ? 'norm.group_silu' : 'norm.group';
  const pi = (k: number): string => `bitcast<i32>(p[${k}u])`;
  ctx.dispatch({
    key: `${name}:v${U3}${weight ? 'w' : ''}${bias ? 'b' : ''}`, kernel: name, buffers,
    // [rows, C, channels per group, groups, units per row, K, chunks per row, x offset, batch stride (units),
    //  weight offset, weight stride, bias offset, bias stride]
    params: Uint32Array.from(Int32Array.from([rows, c, cpg, groups, upr, K, cpr, offset / U3, batch / U3,
      weight?.offset ?? 0, weight?.strides[0] ?? 0, bias?.offset ?? 0, bias?.strides[0] ?? 0])),
    workgroups: Math.ceil((rows * cpr) / WG),
    source: () => `${bindings(decls)}
${linearIdWgsl(WG)}
@compute @workgroup_size(${WG}) fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let id = linear_id(gid, nwg);
  let cpr = p[6];
  let row = id / cpr;
  if (row >= p[0]) { return; }
  let u0 = (id - row * cpr) * p[5];
  let u1 = min(u0 + p[5], p[4]);
  let ni = row / p[1];
  let ch = row - ni * p[1];
  let gi = ni * p[3] + ch / p[2];
  let mean = st[2u * gi];
  let scale = st[2u * gi + 1u]${weight ? ` * w[u32(${pi(9)} + i32(ch) * ${pi(10)})]` : ''};
  let shift = ${bias ? `b[u32(${pi(11)} + i32(ch) * ${pi(12)})]` : '0.0'};
  let xb = p[7] + ni * p[8] + ch * p[4];
  let ob = row * p[4];
  for (var u = u0; u < u1; u++) {
    let v = (x[xb + u] - mean) * scale + shift;
${silu
    ? `    let e = exp(-abs(v));
    let r = 1.0 / (1.0 + e);
    y[ob + u] = v * select(e * r, r, v >= ${T3}(0.0));`
    : '    y[ob + u] = v;'}
  }
}
`,
  });
  if (tmp) ctx.free(tmp);
}

/** WGSL: dz = dy * silu'(z) for z = xhat * w + b (T is f32 or vec4<f32>). */
const SILU_GRAD = (T: string): string => `fn silu_grad_t(z: ${T}) -> ${T} {
  let e = exp(-abs(z));
  let r = 1.0 / (1.0 + e);
  let s = select(e * r, r, z >= ${T}(0.0));
  return s * (1.0 + z * (1.0 - s));
}
`;

/**
 * Backward of groupNorm (see Backend.groupNormBackward) in three dispatches, like the forward:
 * 1. `norm.group_grad_sums`: per (channel row, chunk) the partial sums of dz and dz * xhat;
 * 2. `norm.group_grad_coef`: per (n, group) mean_group(dz w) and mean_group(dz w xhat), and per channel
 *    dweight = sum dz * xhat, dbias = sum dz (over the batch and the chunks);
 * 3. `norm.group_grad_input`: dx = rstd * (dz w - m1 - xhat * m2), recomputing xhat and dz per element.
 */
export function groupNormBackward(ctx: GpuContext, x: View, dy: View, stats: View, groups: number, weight: View | null, bias: View | null,
  act: NormAct, dx: GpuStorage | null, dwdb: GpuStorage): void {
  const op = 'groupNorm';
  const [n, c] = x.shape;
  const spatial = numelOf(x.shape.slice(2));
  const cpg = c / groups;
  const nG = n * groups;
  const rows = n * c;
  if (rows === 0) return;
  const { src, tmp, offset, batch } = sampleLayout(ctx, x, op);
  const silu = act === 'silu';
  // Units: vec4 when rows of x and dy both start 4-aligned.
  const U = spatial % 4 === 0 && offset % 4 === 0 && batch % 4 === 0 && dy.offset % 4 === 0 ? 4 : 1;
  const T = U === 4 ? 'vec4<f32>' : 'f32';
  const upr = spatial / U;
  let S = 1;
  if (rows < TARGET_INVOCATIONS && upr >= 2 * MIN_CHUNK) S = Math.min(Math.ceil(TARGET_INVOCATIONS / rows), Math.floor(upr / MIN_CHUNK), MAX_CHUNKS);
  const L = Math.max(1, Math.ceil(upr / S));
  S = Math.max(1, Math.ceil(upr / L));
  const part = ctx.alloc(rows * S * 2, 'float32');
  const coef = ctx.alloc(nG * 2, 'float32');
  // Only what a pass reads is bound (the layout comes from the shader): the bias only under SiLU, the weight in
  // pass 1 only under SiLU.
  const useBias = !!bias && silu;
  const wb = (k: number, on: boolean): string => (on && weight ? `w[u32(bitcast<i32>(p[${k}u]) + i32(ch) * bitcast<i32>(p[${k + 1}u]))]` : '1.0');
  const bb = (k: number): string => (useBias ? `b[u32(bitcast<i32>(p[${k}u]) + i32(ch) * bitcast<i32>(p[${k + 1}u]))]` : '0.0');
  const affineWords = [weight?.offset ?? 0, weight?.strides[0] ?? 0, bias?.offset ?? 0, bias?.strides[0] ?? 0];
  // Row prologue shared by passes 1 and 3 (params 0..9 as below, weight at 10/11, bias at 12/13).
  const prologue = (useW: boolean): string => `  let ni = row / p[1];
  let ch = row - ni * p[1];
  let gi = ni * p[3] + ch / p[2];
  let mean = st[2u * gi];
  let rstd = st[2u * gi + 1u];
  let wc = ${wb(10, useW)};
  let bc = ${bb(12)};
  let xb = p[7] + ni * p[8] + ch * p[4];
  let db = p[9] + row * p[4];
`;
  const dz = `    let xh = (x[xb + u] - mean) * rstd;
    let d = dy[db + u]${silu ? ' * silu_grad_t(xh * wc + bc)' : ''};
`;
  const rowDecls = (useW: boolean, extra: string[]): { decls: string[]; buffers: GPUBuffer[] } => {
    const decls = [`var<storage, read> x: array<${T}>;`, `var<storage, read> dy: array<${T}>;`, 'var<storage, read> st: array<f32>;'];
    const buffers = [src.buffer, gs(dy, op).buffer, gs(stats, op).buffer];
    if (weight && useW) { decls.push('var<storage, read> w: array<f32>;'); buffers.push(gs(weight, op).buffer); }
    if (bias && useBias) { decls.push('var<storage, read> b: array<f32>;'); buffers.push(gs(bias, op).buffer); }
    decls.push(...extra);
    return { decls, buffers };
  };
  const statsBase = stats.offset;
  if (statsBase !== 0) throw new ShapeError(op, 'the saved statistics must start at offset 0');
  const flags = `v${U}${weight ? 'w' : ''}${useBias ? 'b' : ''}${silu ? 's' : ''}`;

  // ---- 1. per (row, chunk) sums ----
  {
    const { decls, buffers } = rowDecls(silu, ['var<storage, read_write> part: array<vec2<f32>>;', 'var<storage, read> p: array<u32>;']);
    buffers.push(part.buffer);
    ctx.dispatch({
      key: `norm.group_grad_sums:${flags}`, kernel: 'norm.group_grad_sums', buffers,
      // [rows, C, cpg, groups, units per row, S, L, x offset, x batch stride, dy offset, w off, w stride, b off, b stride] (units)
      params: Uint32Array.from(Int32Array.from([rows, c, cpg, groups, upr, S, L, offset / U, batch / U, dy.offset / U, ...affineWords])),
      workgroups: Math.ceil((rows * S) / WG),
      source: () => `${bindings(decls)}
${linearIdWgsl(WG)}
${silu ? SILU_GRAD(T) : ''}
@compute @workgroup_size(${WG}) fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let id = linear_id(gid, nwg);
  let S = p[5];
  let row = id / S;
  if (row >= p[0]) { return; }
  let sp = id - row * S;
${prologue(silu)}  let u0 = sp * p[6];
  let u1 = min(u0 + p[6], p[4]);
  var a1 = ${T}(0.0);
  var a2 = ${T}(0.0);
  var u = u0;
  while (u < u1) {
    let ue = min(u + ${BLOCK}u, u1);
    var b1 = ${T}(0.0);
    var b2 = ${T}(0.0);
    for (; u < ue; u++) {
${dz}      b1 += d;
      b2 = fma(d, xh, b2);
    }
    a1 += b1;
    a2 += b2;
  }
${U === 4
    ? '  part[id] = vec2<f32>((a1.x + a1.y) + (a1.z + a1.w), (a2.x + a2.y) + (a2.z + a2.w));'
    : '  part[id] = vec2<f32>(a1, a2);'}
}
`,
    });
  }

  // ---- 2. group coefficients and per-channel weight/bias gradients ----
  {
    const decls = ['var<storage, read> part: array<vec2<f32>>;'];
    const buffers = [part.buffer];
    if (weight) { decls.push('var<storage, read> w: array<f32>;'); buffers.push(gs(weight, op).buffer); }
    decls.push('var<storage, read_write> coef: array<vec2<f32>>;', 'var<storage, read_write> dwdb: array<f32>;', 'var<storage, read> p: array<u32>;');
    buffers.push(coef.buffer, dwdb.buffer);
    const f32Word = new Uint32Array(new Float32Array([1 / (cpg * spatial)]).buffer)[0];
    ctx.dispatch({
      key: `norm.group_grad_coef:${weight ? 'w' : ''}`, kernel: 'norm.group_grad_coef', buffers,
      // [nG, C, cpg, groups, S, N, 1/M (f32), -, -, -, w offset, w stride]
      params: Uint32Array.from(Int32Array.from([nG, c, cpg, groups, S, n, f32Word, 0, 0, 0, affineWords[0], affineWords[1]])),
      workgroups: Math.ceil((nG + c) / WG),
      source: () => `${bindings(decls)}
${linearIdWgsl(WG)}
@compute @workgroup_size(${WG}) fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let id = linear_id(gid, nwg);
  let S = p[4];
  if (id < p[0]) {
    let ni = id / p[3];
    let g = id - ni * p[3];
    var m = vec2<f32>(0.0);
    for (var k = 0u; k < p[2]; k++) {
      let ch = g * p[2] + k;
      var r = vec2<f32>(0.0);
      for (var s = 0u; s < S; s++) { r += part[(ni * p[1] + ch) * S + s]; }
      m = fma(vec2<f32>(${wb(10, !!weight)}), r, m);
    }
    coef[id] = m * bitcast<f32>(p[6]);
    return;
  }
  let ch = id - p[0];
  if (ch >= p[1]) { return; }
  var r = vec2<f32>(0.0);
  for (var ni = 0u; ni < p[5]; ni++) {
    for (var s = 0u; s < S; s++) { r += part[(ni * p[1] + ch) * S + s]; }
  }
  dwdb[ch] = r.y;
  dwdb[p[1] + ch] = r.x;
}
`,
    });
  }
  ctx.free(part);

  // ---- 3. input gradient ----
  if (dx) {
    const K = Math.min(U === 4 ? K_VEC4 : K_SCALAR, upr);
    const cpr = Math.ceil(upr / K);
    const { decls, buffers } = rowDecls(true, ['var<storage, read> coef: array<vec2<f32>>;', `var<storage, read_write> dx: array<${T}>;`, 'var<storage, read> p: array<u32>;']);
    buffers.push(coef.buffer, dx.buffer);
    ctx.dispatch({
      key: `norm.group_grad_input:${flags}`, kernel: 'norm.group_grad_input', buffers,
      // as pass 1, with [5] = K and [6] = chunks per row
      params: Uint32Array.from(Int32Array.from([rows, c, cpg, groups, upr, K, cpr, offset / U, batch / U, dy.offset / U, ...affineWords])),
      workgroups: Math.ceil((rows * cpr) / WG),
      source: () => `${bindings(decls)}
${linearIdWgsl(WG)}
${silu ? SILU_GRAD(T) : ''}
@compute @workgroup_size(${WG}) fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let id = linear_id(gid, nwg);
  let cpr = p[6];
  let row = id / cpr;
  if (row >= p[0]) { return; }
${prologue(true)}  let cf = coef[gi];
  let u0 = (id - row * cpr) * p[5];
  let u1 = min(u0 + p[5], p[4]);
  let ob = row * p[4];
  for (var u = u0; u < u1; u++) {
${dz}    dx[ob + u] = rstd * (d * wc - cf.x - xh * cf.y);
  }
}
`,
    });
  }
  ctx.free(coef);
  if (tmp) ctx.free(tmp);
}
