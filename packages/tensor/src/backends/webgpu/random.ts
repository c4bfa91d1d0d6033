/**
 * WebGPU random fills: the Philox-4x32-10 stream of random/philox.ts in WGSL.
 *
 * WGSL has no 64-bit integers and no mulhi: the 32x32->64 product is built from 16-bit halves and
 * stream indices up to 2^53 travel as (lo, hi) words with explicit carries. Uniforms are bit-identical
 * to the CPU backend. Normals are float32 with a log and a cosine written here (not the builtins, whose
 * WGSL accuracy bounds are loose, e.g. cos: 2^-11 absolute) so that they stay within ~1e-6 of the
 * CPU's float64 Box-Muller.
 *
 * Params (u32 words): [0] n, [1] key lo, [2] key hi, [3] offset lo, [4] offset hi.
 */
import type { RandomParams } from '../../backend.js';
import { DTypeError } from '../../errors.js';
import { checkStreamRange, splitIndex } from '../../random/philox.js';
import type { GpuContext, GpuStorage } from './context.js';
import { linearIdWgsl } from './strided.js';

const WG = 256;

const PHILOX_WGSL = /* wgsl */ `
fn mulhi(a: u32, b: u32) -> u32 {
  let al = a & 0xffffu; let ah = a >> 16u; let bl = b & 0xffffu; let bh = b >> 16u;
  let ll = al * bl; let lh = al * bh; let hl = ah * bl; let hh = ah * bh;
  let mid = (ll >> 16u) + (lh & 0xffffu) + (hl & 0xffffu);
  return hh + (lh >> 16u) + (hl >> 16u) + (mid >> 16u);
}

// Philox-4x32-10 (Random123 philox.h): multipliers M0, M1 and Weyl increments W0, W1.
fn philox(ctr: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
  var c = ctr; var k = key;
  for (var r = 0u; r < 10u; r = r + 1u) {
    if (r > 0u) { k = k + vec2<u32>(0x9e3779b9u, 0xbb67ae85u); }
    let hi0 = mulhi(0xd2511f53u, c.x); let lo0 = 0xd2511f53u * c.x;
    let hi1 = mulhi(0xcd9e8d57u, c.z); let lo1 = 0xcd9e8d57u * c.z;
    c = vec4<u32>(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
  }
  return c;
}

const INV_2_24: f32 = 5.9604644775390625e-8;
`;

const UNIFORM_WGSL = /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> y: array<f32>;
@group(0) @binding(1) var<storage, read> p: array<u32>;
${linearIdWgsl(WG)}
${PHILOX_WGSL}
// One invocation per Philox block; block j covers stream elements 4 (floor(offset/4) + j) + 0..3.
@compute @workgroup_size(${WG}) fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let j = linear_id(gid, nwg);
  let n = p[0]; let olo = p[3]; let ohi = p[4];
  let lead = olo & 3u;
  if (j >= (n + lead + 3u) / 4u) { return; }
  let blo0 = (olo >> 2u) | (ohi << 30u);
  let blo = blo0 + j;
  let bhi = (ohi >> 2u) + select(0u, 1u, blo < blo0);
  let w = philox(vec4<u32>(blo, bhi, 0u, 0u), vec2<u32>(p[1], p[2]));
  for (var q = 0u; q < 4u; q = q + 1u) {
    let i = i32(4u * j + q) - i32(lead);
    if (i >= 0 && u32(i) < n) { y[u32(i)] = f32(w[q] >> 8u) * INV_2_24; }
  }
}
`;

const NORMAL_WGSL = /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> y: array<f32>;
@group(0) @binding(1) var<storage, read> p: array<u32>;
${linearIdWgsl(WG)}
${PHILOX_WGSL}
// ln(2) = LN2_HI + LN2_LO; LN2_HI (0x3f317200) has 15 significant bits, so k * LN2_HI is exact for |k| < 2^9.
const LN2_HI: f32 = 0.693145751953125;
const LN2_LO: f32 = 1.4286068202862268e-6;
const TWO_PI: f32 = 6.2831853071795864769;

// Natural log of a positive normal float32: x = 2^k f with f in [sqrt(1/2), sqrt(2)), ln f = 2 atanh(s),
// s = (f - 1) / (f + 1) (f - 1 is exact), so values near 1 keep full relative accuracy.
fn ln_f32(x: f32) -> f32 {
  let bits = bitcast<u32>(x);
  var k = i32((bits >> 23u) & 0xffu) - 127;
  var f = bitcast<f32>((bits & 0x007fffffu) | 0x3f800000u);
  if (f > 1.41421356) { f = f * 0.5; k = k + 1; }
  let s = (f - 1.0) / (f + 1.0);
  let s2 = s * s;
  // 2 atanh(s) = 2 s (1 + s^2/3 + s^4/5 + ...); |s| < 0.1716 so the s^12 term is below 1e-10.
  let poly = 1.0 + s2 * (1.0 / 3.0 + s2 * (1.0 / 5.0 + s2 * (1.0 / 7.0 + s2 * (1.0 / 9.0 + s2 * (1.0 / 11.0)))));
  let lnf = 2.0 * s * poly;
  let kf = f32(k);
  return kf * LN2_HI + (kf * LN2_LO + lnf);
}

// cos(2 pi m / 2^24) for an integer m in [0, 2^24): the quadrant comes from m's integer bits (exact),
// the remaining angle lies in [-pi/4, pi/4] where short Taylor series are accurate to ~1e-8.
fn cos_turns24(m: u32) -> f32 {
  var q = m >> 22u;
  var r = i32(m & 0x3fffffu);
  if (r >= 0x200000) { r = r - 0x400000; q = q + 1u; }
  let t = f32(r) * INV_2_24 * TWO_PI;
  let t2 = t * t;
  let c = 1.0 + t2 * (-1.0 / 2.0 + t2 * (1.0 / 24.0 + t2 * (-1.0 / 720.0 + t2 * (1.0 / 40320.0))));
  let s = t * (1.0 + t2 * (-1.0 / 6.0 + t2 * (1.0 / 120.0 + t2 * (-1.0 / 5040.0 + t2 * (1.0 / 362880.0)))));
  switch (q & 3u) {
    case 0u: { return c; }
    case 1u: { return -s; }
    case 2u: { return -c; }
    default: { return s; }
  }
}

@compute @workgroup_size(${WG}) fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_id(gid, nwg);
  if (i >= p[0]) { return; }
  let elo = p[3] + i;
  let ehi = p[4] + select(0u, 1u, elo < p[3]);
  let w = philox(vec4<u32>(elo, ehi, 0u, 1u), vec2<u32>(p[1], p[2]));
  let u1 = f32((w.x >> 8u) + 1u) * INV_2_24;
  let radius = sqrt(-2.0 * ln_f32(u1));
  y[i] = radius * cos_turns24(w.y >> 8u);
}
`;

export function random(ctx: GpuContext, p: RandomParams, out: GpuStorage): void {
  if (out.dtype !== 'float32') throw new DTypeError(`random.${p.kind}`, `output must be float32, got ${out.dtype}`);
  const n = out.size;
  checkStreamRange(p.offset, n);
  if (n === 0) return;
  const [olo, ohi] = splitIndex(p.offset);
  const params = [n, p.key[0] >>> 0, p.key[1] >>> 0, olo, ohi];
  if (p.kind === 'uniform') {
    const blocks = Math.ceil((n + (olo & 3)) / 4);
    ctx.dispatch({ key: 'random.uniform', source: () => UNIFORM_WGSL, buffers: [out.buffer], params,
      workgroups: Math.ceil(blocks / WG), kernel: 'webgpu.random.uniform' });
  } else {
    ctx.dispatch({ key: 'random.normal', source: () => NORMAL_WGSL, buffers: [out.buffer], params,
      workgroups: Math.ceil(n / WG), kernel: 'webgpu.random.normal' });
  }
}
