/**
 * Batched matmul on WebGPU: one register-blocked GEMM kernel over vec4-aligned row-major operands, plus a
 * small pack kernel that brings any other layout (transposed, odd strides, sizes not a multiple of 4) into
 * that form first (the pack costs ~1-3% of the GEMM at 256..2048).
 *
 * Why the kernel looks like this (measured on Mesa 25 lavapipe, 2-core AMD EPYC; tools/bench/kernels.ts):
 * - lavapipe runs 8 invocations as one 8-wide SIMD vector. A storage-buffer load whose offset is not a
 *   compile-time constant is a scalar load per lane behind an exec-mask test, a bounds check and a branch
 *   (~10 instructions per element; loads inside loops never take its uniform path), while a vector FMA
 *   serves all 8 lanes. So the kernel minimizes loads per FMA: each invocation keeps mt x 4g accumulators
 *   and loads vec4s. Larger register tiles than 16 x 4 spill and measured slower.
 * - Workgroup-shared memory only adds barriers (loads from it are per lane too); it measured 2-3x slower.
 *   Texture fetches for B measured within 10% of storage loads, not worth binding textures.
 * - With the `subgroups` feature, the mt rows of A are loaded cooperatively (each lane loads mt/8 rows)
 *   and handed to every lane by `subgroupBroadcast`, a register shuffle on lavapipe: this cuts A loads 8x
 *   and measured 2.5-3x faster (~25 vs ~9 GFLOP/s at 1024).
 * - Row tiles run along grid x, the order lavapipe walks workgroups, so one B column strip stays in cache
 *   while A streams through (+20% at 2048).
 *
 * Layout handled by the kernel: A rows contiguous in k, B rows contiguous in n, offsets and row strides
 * multiples of 4, K a multiple of 4 (zero padding). C rows contiguous in n, any offset and row stride.
 */
import type { MatmulEpilogue, View } from '../../backend.js';
import { WGSL_MATH } from '../math.js';
import { DTypeError, DeviceLimitError, ShapeError } from '../../errors.js';
import type { GpuContext, GpuStorage } from './context.js';
import { tuningFor, type GemmClass } from './tuning.js';

/** One register-tile configuration of the GEMM kernel. */
export interface GemmTile {
  /** Rows of C per workgroup (and per invocation). With subgroups, a multiple of the subgroup size. */
  mt: number;
  /** vec4 column groups per invocation: each invocation computes mt x (4 * g) outputs. */
  g: number;
  /** Invocations per workgroup (a multiple of the subgroup size when subgroups are used). */
  wg: number;
  /** k4 steps per loop iteration (amortizes lavapipe's per-iteration mask blends). */
  unroll: number;
  /** Subgroup size the kernel is specialized for; 0 = no subgroup operations. */
  sg: number;
}

/** Tiles without subgroup operations (devices without fixed-size subgroups); small-M tiles waste fewer rows. */
const TILE_PLAIN: GemmTile = { mt: 16, g: 2, wg: 8, unroll: 1, sg: 0 };
const TILE_PLAIN_SMALL_M: GemmTile = { mt: 8, g: 2, wg: 8, unroll: 1, sg: 0 };

/** Subgroup size usable by the GEMM kernel (0 when the device has no fixed-size subgroups). */
export function subgroupSize(ctx: GpuContext): number {
  const dev = ctx.device as GPUDevice & { adapterInfo?: { subgroupMinSize?: number; subgroupMaxSize?: number } };
  if (!dev.features.has('subgroups')) return 0;
  const lo = dev.adapterInfo?.subgroupMinSize ?? 0, hi = dev.adapterInfo?.subgroupMaxSize ?? 0;
  // The kernel hard-codes which lane holds which row of A, so the size must be known and fixed.
  return lo === hi && (lo === 4 || lo === 8 || lo === 16 || lo === 32) ? lo : 0;
}

/** The shape class whose tuned tile serves an M x N GEMM (see tuning.ts). */
export function gemmClass(m: number, n: number): GemmClass {
  if (m <= 8) return 'smallM';
  return n <= 256 ? 'narrow' : 'square';
}

/**
 * The tile used for an M x N problem on this device: the tuned tile of its shape class (tuning.ts).
 * `LATENTDEM_GEMM_TILE=mt,g,wg,unroll[,0]` overrides it (for tuning and tests; a trailing 0 forces the kernel
 * without subgroup operations).
 */
export function chooseTile(ctx: GpuContext, m: number, n = 1 << 30): GemmTile {
  let sg = subgroupSize(ctx);
  const env = process.env.LATENTDEM_GEMM_TILE;
  if (env) {
    const [mt, g, wg, unroll, noSg] = env.split(',').map(Number);
    if (noSg === 0) sg = 0;
    const t = { mt, g, wg, unroll, sg };
    if (sg && (mt % sg || wg % sg)) throw new ShapeError('matmul', `LATENTDEM_GEMM_TILE=${env}: mt and wg must be multiples of the subgroup size ${sg}`);
    return t;
  }
  if (!sg) return m <= TILE_PLAIN_SMALL_M.mt ? TILE_PLAIN_SMALL_M : TILE_PLAIN;
  const base = tuningFor(ctx).gemm[gemmClass(m, n)];
  const up = (v: number): number => Math.ceil(v / sg) * sg;
  return { ...base, mt: up(base.mt), wg: up(base.wg), sg };
}

export const tileKey = (t: GemmTile): string => `mt${t.mt}g${t.g}wg${t.wg}u${t.unroll}sg${t.sg}`;

/** WGSL of the GEMM kernel for one tile configuration (sizes and strides come from the params buffer). */
export function gemmSource(t: GemmTile, ep: GemmEpilogue = NO_EPILOGUE, bT = false): string {
  const { mt: MT, g: G, wg: WG, unroll: U, sg: S } = t;
  const L: string[] = [];
  if (S) L.push('enable subgroups;');
  L.push(`@group(0) @binding(0) var<storage, read> A: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> B: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> C: array<f32>;
${ep.bias ? '@group(0) @binding(3) var<storage, read> Bias: array<f32>;\n' : ''}@group(0) @binding(${ep.bias ? 4 : 3}) var<storage, read> p: array<u32>;
${ep.act !== 'none' ? WGSL_MATH : ''}
// epilogue: ${ep.bias ? 'bias[p16 + n * p17], ' : ''}activation ${ep.act}${ep.accumulate ? ', C +=' : ''}
// p: M N K4 NQ aOff4 aSb4 aSm4 bOff4 bSb4 bSk4 cOff cSb cSm y0 z0 mFast (NQ = vec4 columns readable in a
// B row; mFast: grid x runs over row tiles, so consecutive workgroups reuse one B column strip from cache)${bT ? '\n// B transposed: bSk4 is the vec4 stride between columns of B (rows of B^T)' : ''}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32${S ? ', @builtin(subgroup_invocation_id) sid: u32' : ''}) {
  let M = p[0]; let N = p[1]; let K4 = p[2]; let NQ = p[3];
  let b = wid.z + p[14];
  let mFast = p[15] != 0u;
  let m0 = select(wid.y + p[13], wid.x, mFast) * ${MT}u;
  let aB = p[4] + b * p[5]; let aSm = p[6];
  let bB = p[7] + b * p[8]; let bSk = p[9];
  let q0 = select(wid.x, wid.y + p[13], mFast) * ${WG * G}u + lid;`);
  const NA = S ? MT / S : MT;
  for (let v = 0; v < NA; v++) {
    const row = S ? `m0 + ${v * S}u + sid` : `m0 + ${v}u`;
    L.push(`  let ar${v} = aB + min(${row}, M - 1u) * aSm;`);
  }
  // B as stored: rows along k (bc: one vec4 of 4 columns per row), or transposed (bT: B^T rows along k, one
  // vec4 of 4 k-values per column; the 4x4 transpose into the column vec4s is free: components are registers).
  if (bT) for (let g = 0; g < G; g++) for (let q = 0; q < 4; q++) L.push(`  let bn${g}_${q} = bB + min((q0 + ${g * WG}u) * 4u + ${q}u, N - 1u) * bSk;`);
  else for (let g = 0; g < G; g++) L.push(`  let bc${g} = bB + min(q0 + ${g * WG}u, NQ - 1u);`);
  for (let i = 0; i < MT; i++) for (let g = 0; g < G; g++) L.push(`  var c${i}_${g} = vec4<f32>(0.0);`);
  const step = (k: string, ind: string): void => {
    for (let v = 0; v < NA; v++) L.push(`${ind}let a${v} = A[ar${v} + ${k}];`);
    if (bT) {
      for (let g = 0; g < G; g++) for (let q = 0; q < 4; q++) L.push(`${ind}let bt${q}_${g} = B[bn${g}_${q} + ${k}];`);
      for (let kk = 0; kk < 4; kk++) for (let g = 0; g < G; g++) {
        const c = 'xyzw'[kk];
        L.push(`${ind}let b${kk}_${g} = vec4<f32>(bt0_${g}.${c}, bt1_${g}.${c}, bt2_${g}.${c}, bt3_${g}.${c});`);
      }
    } else {
      L.push(`${ind}let br = ${k} * 4u * bSk;`);
      for (let kk = 0; kk < 4; kk++) for (let g = 0; g < G; g++) L.push(`${ind}let b${kk}_${g} = B[bc${g} + br + ${kk}u * bSk];`);
    }
    for (let kk = 0; kk < 4; kk++) {
      for (let i = 0; i < MT; i++) {
        const a = S ? `subgroupBroadcast(a${Math.floor(i / S)}.${'xyzw'[kk]}, ${i % S}u)` : `a${i}.${'xyzw'[kk]}`;
        L.push(`${ind}{ let s = vec4<f32>(${a});`);
        for (let g = 0; g < G; g++) L.push(`${ind}  c${i}_${g} = fma(s, b${kk}_${g}, c${i}_${g});`);
        L.push(`${ind}}`);
      }
    }
  };
  L.push(`  let K4u = K4 - K4 % ${U}u;`);
  L.push(`  for (var k4 = 0u; k4 < K4u; k4 += ${U}u) {`);
  for (let u = 0; u < U; u++) { L.push(`    {`); step(`(k4 + ${u}u)`, '      '); L.push(`    }`); }
  L.push(`  }`);
  if (U > 1) { L.push(`  for (var k4 = K4u; k4 < K4; k4++) {`); step('k4', '    '); L.push(`  }`); }
  L.push(`  let cB = p[10] + b * p[11]; let cSm = p[12];`);
  for (let i = 0; i < MT; i++) {
    L.push(`  if (m0 + ${i}u < M) {`);
    L.push(`    let cr = cB + (m0 + ${i}u) * cSm;`);
    for (let g = 0; g < G; g++) for (let q = 0; q < 4; q++) {
      let v = `c${i}_${g}.${'xyzw'[q]}`;
      if (ep.bias) v = `${v} + Bias[p[16] + n * p[17]]`;
      if (ep.act !== 'none') v = `${ep.act}_f32(${v})`;
      if (ep.accumulate) v = `C[cr + n] + ${v}`;
      L.push(`    { let n = (q0 + ${g * WG}u) * 4u + ${q}u; if (n < N) { C[cr + n] = ${v}; } }`);
    }
    L.push(`  }`);
  }
  L.push('}');
  return L.join('\n');
}

/** What the GEMM applies to each output as it stores it (see Backend.matmul). */
export interface GemmEpilogue {
  bias: { buffer: GPUBuffer; offset: number; stride: number } | null;
  act: 'none' | 'silu' | 'gelu';
  /** C += result instead of C = result (chunked reductions such as conv2d's weight gradient). */
  accumulate?: boolean;
}
const NO_EPILOGUE: GemmEpilogue = { bias: null, act: 'none' };

/** Operands of the GEMM kernel: element offsets/strides; A, B offsets and strides must be multiples of 4. */
export interface GemmArgs {
  batch: number; m: number; n: number;
  /** Inner size, a multiple of 4 (operands zero-padded). */
  k: number;
  a: GPUBuffer; aOff: number; aSb: number; aSm: number;
  b: GPUBuffer; bOff: number; bSb: number; bSk: number;
  /** Readable columns in each B row (>= n rounded up to 4, a multiple of 4). */
  bCols: number;
  /** B is stored transposed: element (k, n) at bOff + b*bSb + n*bSk + k (bSk then a multiple of 4, k contiguous). */
  bT?: boolean;
  c: GPUBuffer; cOff: number; cSb: number; cSm: number;
}

/** Dispatch a 3D grid (x <= limit), splitting y and z across dispatches when they exceed the device limit. */
export function dispatchGrid(ctx: GpuContext, spec: { key: string; source: () => string; buffers: GPUBuffer[]; kernel: string },
  params: number[], baseIndex: number, grid: [number, number, number]): void {
  const max = ctx.limits.maxComputeWorkgroupsPerDimension;
  const [gx, gy, gz] = grid;
  if (gx > max) throw new DeviceLimitError(spec.kernel, `grid x ${gx} exceeds ${max} workgroups per dimension`);
  if (gx === 0 || gy === 0 || gz === 0) return;
  for (let z0 = 0; z0 < gz; z0 += max) {
    for (let y0 = 0; y0 < gy; y0 += max) {
      const words = params.slice();
      words[baseIndex] = y0; words[baseIndex + 1] = z0;
      ctx.dispatch({ ...spec, params: words, workgroups: [gx, Math.min(max, gy - y0), Math.min(max, gz - z0)] });
    }
  }
}

/** C[b] = A[b] @ B[b] over vec4-aligned operands (see GemmArgs). */
export function gemm(ctx: GpuContext, g: GemmArgs, tile = chooseTile(ctx, g.m, g.n), ep: GemmEpilogue = NO_EPILOGUE): void {
  if (g.k % 4 || g.aOff % 4 || g.aSb % 4 || g.aSm % 4 || g.bOff % 4 || g.bSb % 4 || g.bSk % 4 || g.bCols % 4) {
    throw new ShapeError('matmul', 'internal: gemm operands are not vec4-aligned');
  }
  if (g.batch === 0 || g.m === 0 || g.n === 0) return;
  const tilesM = Math.ceil(g.m / tile.mt), tilesN = Math.ceil(g.n / (4 * tile.g * tile.wg));
  // Row tiles along grid x (the order lavapipe walks workgroups) keep each B column strip in cache while
  // A streams through; x is limited to maxComputeWorkgroupsPerDimension, y and z are split by dispatchGrid.
  const mFast = tilesM <= ctx.limits.maxComputeWorkgroupsPerDimension;
  const params = [g.m, g.n, g.k / 4, g.bCols / 4, g.aOff / 4, g.aSb / 4, g.aSm / 4, g.bOff / 4, g.bSb / 4, g.bSk / 4,
    g.cOff, g.cSb, g.cSm, 0, 0, mFast ? 1 : 0, ep.bias?.offset ?? 0, ep.bias?.stride ?? 0];
  const epKey = `${ep.bias ? '+bias' : ''}${ep.act !== 'none' ? `+${ep.act}` : ''}${ep.accumulate ? '+acc' : ''}`;
  const bT = g.bT ?? false;
  const key = `gemm:${tileKey(tile)}${epKey}${bT ? '+bT' : ''}`;
  const buffers = ep.bias ? [g.a, g.b, g.c, ep.bias.buffer] : [g.a, g.b, g.c];
  dispatchGrid(ctx, { key, source: () => gemmSource(tile, ep, bT), buffers, kernel: `matmul.gemm.${tileKey(tile)}${epKey}${bT ? '+bT' : ''}` },
    params, 13, mFast ? [tilesM, tilesN, g.batch] : [tilesN, tilesM, g.batch]);
}

/**
 * Pack kernel: dst[b, r, c] = src(b, r, c) for r < rows, c < cols, else 0, where dst is contiguous
 * [batch, rowsP, colsP] (colsP a multiple of 4) and src any strided 3D view. One invocation writes one vec4.
 */
const PACK_WG = 64;
const packSource = (): string => `@group(0) @binding(0) var<storage, read> S: array<f32>;
@group(0) @binding(1) var<storage, read_write> D: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> p: array<u32>;
// p: rows cols rowsP colsP/4 off sB sR sC y0 z0 (offset and strides as i32)
@compute @workgroup_size(${PACK_WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  let rows = p[0]; let cols = p[1]; let rowsP = p[2]; let cq = p[3];
  let q = gid.x; let r = wid.y + p[8]; let b = wid.z + p[9];
  if (q >= cq) { return; }
  let base = bitcast<i32>(p[4]) + i32(b) * bitcast<i32>(p[5]) + i32(min(r, rows - 1u)) * bitcast<i32>(p[6]);
  let sC = bitcast<i32>(p[7]);
  var v = vec4<f32>(0.0);
  for (var j = 0u; j < 4u; j++) {
    let c = q * 4u + j;
    let x = S[u32(base + i32(min(c, cols - 1u)) * sC)];
    v[j] = select(0.0, x, r < rows && c < cols);
  }
  D[(b * rowsP + r) * cq + q] = v;
}`;

/** Pack the 3D view `src` [batch, rows, cols] into a zero-padded contiguous [batch, rowsP, colsP] buffer. */
export function pack(ctx: GpuContext, src: View, rowsP: number, colsP: number, op = 'matmul'): GPUBuffer {
  const [batch, rows, cols] = src.shape;
  const bytes = batch * rowsP * colsP * 4;
  const buf = ctx.acquire(Math.max(16, bytes), op);
  if (rows === 0 || cols === 0) {
    if (bytes > 0) zeroFill(ctx, buf, bytes / 4);
    return buf;
  }
  const params = [rows, cols, rowsP, colsP / 4, src.offset, src.strides[0], src.strides[1], src.strides[2], 0, 0];
  dispatchGrid(ctx, { key: 'matmul.pack', source: packSource, buffers: [(src.storage as GpuStorage).buffer, buf], kernel: 'matmul.pack' },
    params, 8, [Math.ceil(colsP / 4 / PACK_WG), rowsP, batch]);
  return buf;
}

const zeroSource = (): string => `@group(0) @binding(0) var<storage, read_write> D: array<f32>;
@group(0) @binding(1) var<storage, read> p: array<u32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i < p[0]) { D[i] = 0.0; }
}`;

/** Sets the first `n` floats of `buf` to zero. */
export function zeroFill(ctx: GpuContext, buf: GPUBuffer, n: number): void {
  if (n > 0) ctx.dispatch({ key: 'matmul.zero', source: zeroSource, buffers: [buf], params: [n], workgroups: Math.ceil(n / 64), kernel: 'matmul.zero' });
}

const aligned = (...xs: number[]): boolean => xs.every((x) => x % 4 === 0 && x >= 0);

/** Batched matmul: a [B,M,K], b [B,K,N] (any strides, batch stride may be 0) -> out contiguous [B,M,N]. */
export function matmul(ctx: GpuContext, a: View, b: View, out: GpuStorage, epilogue?: MatmulEpilogue): void {
  if (a.shape.length !== 3 || b.shape.length !== 3) throw new ShapeError('matmul', `expected 3D views, got [${a.shape}] @ [${b.shape}]`);
  const [batch, m, k] = a.shape;
  const n = b.shape[2];
  if (b.shape[0] !== batch || b.shape[1] !== k) throw new ShapeError('matmul', `inner dimensions differ: [${a.shape}] @ [${b.shape}]`);
  if (a.storage.dtype !== 'float32' || b.storage.dtype !== 'float32') throw new DTypeError('matmul', 'webgpu matmul needs float32 operands');
  if (batch === 0 || m === 0 || n === 0) return;
  if (k === 0) { zeroFill(ctx, out.buffer, batch * m * n); ctx.lastKernel = 'matmul.zero'; return; }
  const temps: GPUBuffer[] = [];
  const k4 = Math.ceil(k / 4) * 4;

  // A: rows contiguous in k and vec4-aligned, or packed to [Ba, M, K4] (a batch stride of 0 stays 0).
  let aBuf: GPUBuffer, aOff: number, aSb: number, aSm: number;
  const [aSb0, aSm0, aSk0] = a.strides;
  if (aSk0 === 1 && k % 4 === 0 && aligned(a.offset, aSm0, aSb0) || aSk0 === 1 && k % 4 === 0 && m === 1 && aligned(a.offset, aSb0)) {
    aBuf = (a.storage as GpuStorage).buffer; aOff = a.offset; aSb = aSb0; aSm = m === 1 ? 0 : aSm0;
  } else {
    const ba = aSb0 === 0 ? 1 : batch;
    aBuf = pack(ctx, { ...a, shape: [ba, m, k] }, m, k4); temps.push(aBuf);
    aOff = 0; aSb = ba === 1 ? 0 : m * k4; aSm = k4;
  }

  // B: rows contiguous in n and vec4-aligned; or columns contiguous in k (a transposed weight, as linear reads
  // [N, K] weights) read in place by the kernel's transposed variant; else packed to [Bb, K4, N4].
  let bBuf: GPUBuffer, bOff: number, bSb: number, bSk: number, bCols: number, bT = false;
  const [bSb0, bSk0, bSn0] = b.strides;
  if (bSn0 === 1 && n % 4 === 0 && k % 4 === 0 && aligned(b.offset, bSk0, bSb0)) {
    bBuf = (b.storage as GpuStorage).buffer; bOff = b.offset; bSb = bSb0; bSk = bSk0; bCols = n;
  } else if (bSk0 === 1 && k % 4 === 0 && n > 1 && aligned(b.offset, bSn0, bSb0)) {
    bBuf = (b.storage as GpuStorage).buffer; bOff = b.offset; bSb = bSb0; bSk = bSn0; bCols = Math.ceil(n / 4) * 4; bT = true;
  } else {
    const n4 = Math.ceil(n / 4) * 4;
    const bb = bSb0 === 0 ? 1 : batch;
    bBuf = pack(ctx, { ...b, shape: [bb, k, n] }, k4, n4); temps.push(bBuf);
    bOff = 0; bSb = bb === 1 ? 0 : k4 * n4; bSk = n4; bCols = n4;
  }

  let ep = NO_EPILOGUE;
  if (epilogue && (epilogue.bias || (epilogue.act ?? 'none') !== 'none')) {
    const bias = epilogue.bias;
    if (bias && (bias.shape.length !== 1 || bias.shape[0] !== n)) throw new ShapeError('matmul', `bias [${bias.shape}] must be [${n}]`);
    if (bias && bias.storage.dtype !== 'float32') throw new DTypeError('matmul', 'the bias must be float32');
    ep = { bias: bias ? { buffer: (bias.storage as GpuStorage).buffer, offset: bias.offset, stride: bias.strides[0] } : null, act: epilogue.act ?? 'none' };
  }
  gemm(ctx, { batch, m, n, k: k4, a: aBuf, aOff, aSb, aSm, b: bBuf, bOff, bSb, bSk, bCols, bT, c: out.buffer, cOff: 0, cSb: m * n, cSm: n }, undefined, ep);
  for (const t of temps) ctx.release(t);
}
