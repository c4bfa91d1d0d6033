/**
 * WebGPU 2D DFT over the last two axes, batched over the leading ones.
 *
 * Each axis is transformed by a sequence of passes over planar (re, im) float32 buffers, rows first,
 * then columns. The data are seen as [outer, N, inner] (rows: inner = 1, N = W; columns: inner = W,
 * N = H), so one kernel serves both axes and every batch.
 * - Power-of-two N: Stockham autosort passes (radix 4, plus one radix-2 pass when log2 N is odd),
 *   after Govindaraju et al., "High performance discrete Fourier transforms on graphics processors"
 *   (SC 2008), Fig. 2: no bit reversal, each pass reads and writes in a regular pattern.
 * - Other N: mixed-radix Stockham passes over N's prime factors (4s and 2 first), each output summing R
 *   inputs, so the cost per element is the sum of the factors; a prime N is a direct O(N^2) DFT.
 * Twiddles come from a host table of e^{+2 pi i k / N} computed in float64 and rounded once to float32;
 * passes index it with exact integers, so no angle is ever formed in float32.
 *
 * Buffers: passes ping-pong between the output storages and one temporary pair, arranged so that the
 * last pass lands in the outputs; the inverse's 1 / (H W) is applied by the last pass.
 */
import type { View } from '../../backend.js';
import { isContiguous } from '../../backend.js';
import { BackendMismatchError, DTypeError, ShapeError, fmtShape } from '../../errors.js';
import { GpuStorage, type GpuContext } from './context.js';
import { linearIdWgsl, stridedIndexWgsl, stridedParams } from './strided.js';

const WG = 256;

/** Twiddle tables (vec2 per k: cos, sin of 2 pi k / N), one per length, kept for the life of the context. */
const twiddleCache = new WeakMap<GpuContext, Map<number, GPUBuffer>>();

function twiddles(ctx: GpuContext, n: number): GPUBuffer {
  let perCtx = twiddleCache.get(ctx);
  if (!perCtx) { perCtx = new Map(); twiddleCache.set(ctx, perCtx); }
  let buf = perCtx.get(n);
  if (!buf) {
    const t = new Float32Array(2 * n);
    for (let k = 0; k < n; k++) {
      const a = (2 * Math.PI * k) / n;
      t[2 * k] = Math.cos(a); t[2 * k + 1] = Math.sin(a);
    }
    buf = ctx.acquire(t.byteLength, 'fft2');
    ctx.writeBuffer(buf, t);
    perCtx.set(n, buf);
  }
  return buf;
}

const PASS_HEADER = /* wgsl */ `
@group(0) @binding(0) var<storage, read> xr: array<f32>;
@group(0) @binding(1) var<storage, read> xi: array<f32>;
@group(0) @binding(2) var<storage, read_write> yr: array<f32>;
@group(0) @binding(3) var<storage, read_write> yi: array<f32>;
@group(0) @binding(4) var<storage, read> tw: array<vec2<f32>>;
// [0] threads, [1] N, [2] inner, [3] Ns, [4] input offset re, [5] input offset im, [6] scale (f32), [7] sign (f32),
// then r2/r4: [8] log2 Ns, [9] log2 (N / R); generic: [8] R, [9] N / (Ns R)
@group(0) @binding(5) var<storage, read> p: array<u32>;
${linearIdWgsl(WG)}
// Parameters read once per invocation (init_params), so that stores to yr/yi do not force re-reading them.
var<private> off_re: u32;
var<private> off_im: u32;
var<private> scale: f32;
var<private> sgn: f32;
fn init_params() { off_re = p[4]; off_im = p[5]; scale = bitcast<f32>(p[6]); sgn = bitcast<f32>(p[7]); }
fn cmul(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> { return vec2<f32>(a.x * b.x - a.y * b.y, a.x * b.y + a.y * b.x); }
fn load(i: u32) -> vec2<f32> { return vec2<f32>(xr[off_re + i], xi[off_im + i]); }
fn store(i: u32, v: vec2<f32>) { yr[i] = v.x * scale; yi[i] = v.y * scale; }
/** e^{sign 2 pi i k / N} */
fn twiddle(k: u32) -> vec2<f32> { let w = tw[k]; return vec2<f32>(w.x, sgn * w.y); }
`;

/** One Stockham pass of radix R (2 or 4): each invocation does one radix-R butterfly. */
function stockhamSource(radix: 2 | 4): string {
  const butterfly = radix === 2
    ? `store(o0, v0 + v1); store(o0 + ns * inner, v0 - v1);`
    : `let a0 = v0 + v2; let a1 = v0 - v2; let a2 = v1 + v3;
  let d = v1 - v3;
  let a3 = sgn * vec2<f32>(-d.y, d.x); // (v1 - v3) * (sign i)
  store(o0, a0 + a2);
  store(o0 + ns * inner, a1 + a3);
  store(o0 + 2u * ns * inner, a0 - a2);
  store(o0 + 3u * ns * inner, a1 - a3);`;
  let loads = '';
  for (let r = 0; r < radix; r++) {
    loads += r === 0
      ? `  let v0 = load(base + j * inner);\n`
      : `  let v${r} = cmul(load(base + (j + ${r}u * nr) * inner), twiddle(k * ${r}u * step));\n`;
  }
  return `${PASS_HEADER}
@compute @workgroup_size(${WG}) fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = linear_id(gid, nwg);
  if (t >= p[0]) { return; }
  // n, ns and n / R are powers of two: shifts and masks (p[8] = log2 ns, p[9] = log2 (n / R)) instead of
  // integer division, which lavapipe runs lane by lane. inner (the row length for column passes) may be any size.
  init_params();
  let n = p[1]; let inner = p[2]; let ns = p[3]; let log_ns = p[8]; let log_nr = p[9];
  let nr = n / ${radix}u;
  var c = 0u; var q = t;
  if (inner != 1u) { c = t % inner; q = t / inner; }
  let j = q & (nr - 1u); let line = q >> log_nr;
  let base = line * n * inner + c;
  let k = j & (ns - 1u);
  let step = nr >> log_ns;
${loads}  let o0 = base + (((j >> log_ns) << log_ns) * ${radix}u + k) * inner;
  ${butterfly}
}
`;
}

/**
 * A Stockham pass of any radix R (params [8] = R, [9] = N / (Ns R)), one invocation per output element:
 * output u of a line, with k = u mod Ns, s = (u / Ns) mod R, j = (u / (Ns R)) Ns + k, is
 * sum_r x[j + r N / R] e^{sign 2 pi i r (k + s Ns) / (Ns R)} (input twiddle and R-point DFT in one factor).
 * With R = N it is the direct DFT. The table index r (k + s Ns) N / (Ns R) is kept mod N incrementally.
 */
const GENERIC_SOURCE = `${PASS_HEADER}
@compute @workgroup_size(${WG}) fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = linear_id(gid, nwg);
  if (t >= p[0]) { return; }
  init_params();
  let n = p[1]; let inner = p[2]; let ns = p[3]; let radix = p[8]; let step = p[9];
  let c = t % inner; let q = t / inner; let u = q % n; let line = q / n;
  let base = line * n * inner + c;
  let k = u % ns; let s = (u / ns) % radix; let j = (u / (ns * radix)) * ns + k;
  let nr = n / radix;
  let d = (k + s * ns) * step;
  var acc = vec2<f32>(0.0, 0.0);
  var idx = 0u;
  for (var r = 0u; r < radix; r = r + 1u) {
    acc = acc + cmul(load(base + (j + r * nr) * inner), twiddle(idx));
    idx = idx + d;
    if (idx >= n) { idx = idx - n; }
  }
  store(base + u * inner, acc);
}
`;

/** Strided (re, im) views -> contiguous planar buffers. */
function packSource(rank: number): string {
  return `
@group(0) @binding(0) var<storage, read> xr: array<f32>;
@group(0) @binding(1) var<storage, read> xi: array<f32>;
@group(0) @binding(2) var<storage, read_write> yr: array<f32>;
@group(0) @binding(3) var<storage, read_write> yi: array<f32>;
@group(0) @binding(4) var<storage, read> p: array<u32>;
${linearIdWgsl(WG)}
${stridedIndexWgsl(rank, 2)}
@compute @workgroup_size(${WG}) fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_id(gid, nwg);
  if (i >= p[0]) { return; }
  yr[i] = xr[at0(i)];
  yi[i] = xi[at1(i)];
}
`;
}

interface Pass { kind: 'r2' | 'r4' | 'generic'; n: number; inner: number; ns: number; radix: number }

/** Radices whose product is n: 4s and a 2 first, then odd factors in increasing order (a large prime stays whole). */
function radices(n: number): number[] {
  const out: number[] = [];
  while (n % 4 === 0) { out.push(4); n /= 4; }
  if (n % 2 === 0) { out.push(2); n /= 2; }
  for (let f = 3; f * f <= n; f += 2) while (n % f === 0) { out.push(f); n /= f; }
  if (n > 1) out.push(n);
  return out;
}

/**
 * The passes transforming an axis of length n with element stride `inner`. Power-of-two lengths use the
 * butterfly kernels (which index with shifts); other lengths use the generic kernel for every factor.
 */
function axisPasses(n: number, inner: number): Pass[] {
  const pow2 = (n & (n - 1)) === 0;
  const passes: Pass[] = [];
  let ns = 1;
  for (const radix of radices(n)) {
    const kind = !pow2 ? 'generic' : radix === 4 ? 'r4' : 'r2';
    passes.push({ kind, n, inner, ns, radix });
    ns *= radix;
  }
  return passes;
}

interface Planar { re: GPUBuffer; im: GPUBuffer; offRe: number; offIm: number }

const f32Bits = (x: number): number => new Uint32Array(new Float32Array([x]).buffer)[0];

export function fft2(ctx: GpuContext, re: View, im: View, inverse: boolean, outRe: GpuStorage, outIm: GpuStorage): void {
  const shape = re.shape;
  if (shape.length < 2) throw new ShapeError('fft2', `needs at least 2 dimensions, got ${fmtShape(shape)}`);
  if (im.shape.length !== shape.length || im.shape.some((d, i) => d !== shape[i])) {
    throw new ShapeError('fft2', `real and imaginary parts differ in shape: ${fmtShape(shape)} vs ${fmtShape(im.shape)}`);
  }
  for (const v of [re, im]) {
    if (!(v.storage instanceof GpuStorage)) throw new BackendMismatchError('fft2', `expected a webgpu storage, got ${v.storage.backend}`);
    if (v.storage.dtype !== 'float32') throw new DTypeError('fft2', `expected float32 inputs, got ${v.storage.dtype}`);
  }
  const h = shape[shape.length - 2], w = shape[shape.length - 1];
  const total = shape.reduce((a, b) => a * b, 1);
  if (total === 0) return;

  const passes = [...axisPasses(w, 1), ...axisPasses(h, w)];
  const out: Planar = { re: outRe.buffer, im: outIm.buffer, offRe: 0, offIm: 0 };
  // The temporary pair is needed when there are two or more passes, or to pack strided input before an odd number.
  const packed = !(isContiguous(re) && isContiguous(im));
  const needTmp = passes.length >= 2 || (packed && passes.length % 2 === 1);
  const tmpRe = needTmp ? ctx.alloc(total, 'float32') : null;
  const tmpIm = needTmp ? ctx.alloc(total, 'float32') : null;
  const tmp: Planar | null = tmpRe && tmpIm ? { re: tmpRe.buffer, im: tmpIm.buffer, offRe: 0, offIm: 0 } : null;
  // Pass p writes `out` when (passes.length - 1 - p) is even, so the last pass always writes `out`.
  const dstOf = (p: number): Planar => ((passes.length - 1 - p) % 2 === 0 ? out : tmp!);

  let src: Planar = {
    re: (re.storage as GpuStorage).buffer, im: (im.storage as GpuStorage).buffer, offRe: re.offset, offIm: im.offset,
  };
  if (packed) {
    // Pack into whichever buffer pair the first pass does not write (out itself when there are no passes).
    const dst = passes.length === 0 ? out : dstOf(0) === out ? tmp! : out;
    ctx.dispatch({
      key: `fft2.pack.r${shape.length}`, source: () => packSource(shape.length),
      buffers: [src.re, src.im, dst.re, dst.im], params: stridedParams(shape, [re, im]),
      workgroups: Math.ceil(total / WG), kernel: 'webgpu.fft2.pack',
    });
    src = dst;
  } else if (passes.length === 0) {
    // A 1x1 transform is the identity: copy the input through a generic pass of length 1.
    passes.push({ kind: 'generic', n: 1, inner: 1, ns: 1, radix: 1 });
  }

  const sign = inverse ? 1 : -1;
  passes.forEach((pass, i) => {
    const dst = dstOf(i);
    const generic = pass.kind === 'generic';
    const threads = generic ? total : total / pass.radix;
    const scale = inverse && i === passes.length - 1 ? 1 / (h * w) : 1;
    const tail = generic ? [pass.radix, pass.n / (pass.ns * pass.radix)] : [Math.log2(pass.ns), Math.log2(pass.n / pass.radix)];
    const params = [threads, pass.n, pass.inner, pass.ns, src.offRe, src.offIm, f32Bits(scale), f32Bits(sign), ...tail];
    ctx.dispatch({
      key: `fft2.${pass.kind}`,
      source: () => (generic ? GENERIC_SOURCE : stockhamSource(pass.radix as 2 | 4)),
      buffers: [src.re, src.im, dst.re, dst.im, twiddles(ctx, pass.n)], params,
      workgroups: Math.ceil(threads / WG), kernel: `webgpu.fft2.${pass.kind}`,
    });
    src = dst;
  });
  if (tmpRe) ctx.free(tmpRe);
  if (tmpIm) ctx.free(tmpIm);
}
