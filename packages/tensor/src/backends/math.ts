/**
 * Scalar math shared by the backends: each definition is written once in TypeScript (the CPU reference
 * evaluates it in f64, then rounds to f32) and once in WGSL right next to it, with the same formula and
 * constants, so both backends compute the same function.
 */

/**
 * erf(x) after N. Juffa, "faithfully rounded erff", https://stackoverflow.com/a/35148199 (also used by
 * MLX): an odd polynomial for |x| <= 475/512 and 1 - exp(poly) beyond. Max abs error vs exact erf:
 * 2.1e-8 in f64 (checked against CPython's math.erf on [-6, 6]); about 1 ulp of f32 when evaluated in f32.
 */
export function erf(a: number): number {
  const t = Math.abs(a);
  const s = a * a;
  if (t > 0.927734375) {
    let r = -1.72853470e-5 * t + 3.83197126e-4;
    const u = -3.88396438e-3 * t + 2.42546219e-2;
    r = r * s + u;
    r = r * t - 1.06777877e-1;
    r = r * t - 6.34846687e-1;
    r = r * t - 1.28717512e-1;
    r = r * t - t;
    r = 1 - Math.exp(r);
    return a < 0 ? -r : r;
  }
  let r = -5.96761703e-4;
  r = r * s + 4.99119423e-3;
  r = r * s - 2.67681349e-2;
  r = r * s + 1.12819925e-1;
  r = r * s - 3.76125336e-1;
  r = r * s + 1.28379166e-1;
  return r * a + a;
}

export const SQRT1_2 = Math.SQRT1_2;
/** 1 / sqrt(2 pi) */
export const INV_SQRT_2PI = 0.3989422804014327;
/** 2 / sqrt(pi) */
export const TWO_OVER_SQRT_PI = 1.1283791670955126;
/** sqrt(2 / pi), the gelu tanh-approximation constant (Hendrycks & Gimpel 2016). */
export const SQRT_2_OVER_PI = 0.7978845608028654;
export const GELU_TANH_C = 0.044715;

/** Numerically safe sigmoid: never forms exp of a large positive number. */
export function sigmoid(x: number): number {
  const e = Math.exp(-Math.abs(x));
  const r = 1 / (1 + e);
  return x >= 0 ? r : e * r;
}

export const gelu = (x: number): number => 0.5 * x * (1 + erf(x * SQRT1_2));
export const geluGrad = (x: number): number => 0.5 * (1 + erf(x * SQRT1_2)) + x * INV_SQRT_2PI * Math.exp(-0.5 * x * x);
export function geluTanh(x: number): number {
  return 0.5 * x * (1 + Math.tanh(SQRT_2_OVER_PI * (x + GELU_TANH_C * x * x * x)));
}
export function geluTanhGrad(x: number): number {
  const t = Math.tanh(SQRT_2_OVER_PI * (x + GELU_TANH_C * x * x * x));
  return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * SQRT_2_OVER_PI * (1 + 3 * GELU_TANH_C * x * x);
}
export const silu = (x: number): number => x * sigmoid(x);
export function siluGrad(x: number): number {
  const s = sigmoid(x);
  return s * (1 + x * (1 - s));
}
export const erfGrad = (x: number): number => TWO_OVER_SQRT_PI * Math.exp(-x * x);

/** float32 -> int32 as both backends do it: truncate toward zero, saturate out of range, NaN -> 0. */
export function f32ToI32(x: number): number {
  if (Number.isNaN(x)) return 0;
  if (x >= 2147483648) return 2147483647;
  if (x <= -2147483648) return -2147483648;
  return Math.trunc(x);
}

const lit = (x: number): string => {
  const s = String(x);
  return /[.eE]/.test(s) ? s : `${s}.0`;
};

/**
 * WGSL twins of the definitions above, plus what WGSL lacks: infinities (no literals, and a constant
 * expression may not overflow, so they come from a private variable), a bit-exact isnan (comparison
 * tricks may be optimized away), an overflow-free tanh/sigmoid, and a pow defined for negative bases.
 */
export const WGSL_MATH = /* wgsl */ `
var<private> INF_BITS: u32 = 0x7f800000u;
var<private> NAN_BITS: u32 = 0x7fc00000u;
fn inf_f32() -> f32 { return bitcast<f32>(INF_BITS); }
fn nan_f32() -> f32 { return bitcast<f32>(NAN_BITS); }
fn isnan_f32(x: f32) -> bool { return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u; }

fn erf_f32(a: f32) -> f32 {
  let t = abs(a);
  let s = a * a;
  if (t > 0.927734375) {
    var r = fma(-1.72853470e-5, t, 3.83197126e-4);
    let u = fma(-3.88396438e-3, t, 2.42546219e-2);
    r = fma(r, s, u);
    r = fma(r, t, -1.06777877e-1);
    r = fma(r, t, -6.34846687e-1);
    r = fma(r, t, -1.28717512e-1);
    r = fma(r, t, -t);
    r = 1.0 - exp(r);
    return select(r, -r, a < 0.0);
  }
  var r = -5.96761703e-4;
  r = fma(r, s, 4.99119423e-3);
  r = fma(r, s, -2.67681349e-2);
  r = fma(r, s, 1.12819925e-1);
  r = fma(r, s, -3.76125336e-1);
  r = fma(r, s, 1.28379166e-1);
  return fma(r, a, a);
}

// tanh without inf/inf: Taylor series to x^9 near 0 (truncation < 2e-8 relative for |x| < 0.3),
// (1 - e^{-2|x|}) / (1 + e^{-2|x|}) beyond, which tends to 1 without overflow.
fn tanh_f32(x: f32) -> f32 {
  let a = abs(x);
  if (a < 0.3) {
    let s = x * x;
    return x * (1.0 + s * (-0.33333333333 + s * (0.13333333333 + s * (-0.05396825397 + s * 0.02186948854))));
  }
  let e = exp(-2.0 * a);
  let r = (1.0 - e) / (1.0 + e);
  return select(r, -r, x < 0.0);
}

fn sigmoid_f32(x: f32) -> f32 {
  let e = exp(-abs(x));
  let r = 1.0 / (1.0 + e);
  return select(e * r, r, x >= 0.0);
}

fn gelu_f32(x: f32) -> f32 { return 0.5 * x * (1.0 + erf_f32(x * ${lit(SQRT1_2)})); }
fn gelu_grad_f32(x: f32) -> f32 {
  return 0.5 * (1.0 + erf_f32(x * ${lit(SQRT1_2)})) + x * ${lit(INV_SQRT_2PI)} * exp(-0.5 * x * x);
}
fn gelu_tanh_f32(x: f32) -> f32 {
  return 0.5 * x * (1.0 + tanh_f32(${lit(SQRT_2_OVER_PI)} * (x + ${lit(GELU_TANH_C)} * x * x * x)));
}
// Beyond |x| = 10 the value is exactly 1 or 0 in f32; clamping keeps x^3 from overflowing into inf * 0.
fn gelu_tanh_grad_f32(x0: f32) -> f32 {
  let x = select(clamp(x0, -10.0, 10.0), x0, isnan_f32(x0));
  let t = tanh_f32(${lit(SQRT_2_OVER_PI)} * (x + ${lit(GELU_TANH_C)} * x * x * x));
  return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * ${lit(SQRT_2_OVER_PI)} * (1.0 + ${lit(3 * GELU_TANH_C)} * x * x);
}
fn silu_f32(x: f32) -> f32 { return x * sigmoid_f32(x); }
fn silu_grad_f32(x: f32) -> f32 { let s = sigmoid_f32(x); return s * (1.0 + x * (1.0 - s)); }
fn erf_grad_f32(x: f32) -> f32 { return ${lit(TWO_OVER_SQRT_PI)} * exp(-x * x); }

// Math.pow semantics for finite inputs: WGSL pow(x, y) is exp2(y log2 x), undefined for x < 0, so the
// magnitude goes through exp2/log2 and the sign is restored for odd integer exponents (every f32 with
// |y| >= 2^24 is an even integer). pow(x, 0) = 1, pow(+-0, y < 0) = +-inf, pow(x < 0, non-integer) = NaN.
fn pow_f32(a: f32, b: f32) -> f32 {
  if (b == 0.0) { return 1.0; }
  let m = abs(a);
  var r: f32;
  if (m == 0.0) { r = select(0.0, inf_f32(), b < 0.0); } else { r = exp2(b * log2(m)); }
  let bint = floor(b) == b;
  if (a < 0.0 && !bint) { return nan_f32(); }
  if ((bitcast<u32>(a) & 0x80000000u) != 0u && bint && abs(b) < 16777216.0 && (i32(b) & 1) != 0) { r = -r; }
  return r;
}

// float32 -> int32 exactly as f32ToI32: truncate, saturate, NaN -> 0.
fn f32_to_i32(x: f32) -> i32 {
  if (isnan_f32(x)) { return 0; }
  if (x >= 2147483648.0) { return 2147483647; }
  if (x <= -2147483648.0) { return i32(-2147483647) - 1; }
  return i32(x);
}
`;
