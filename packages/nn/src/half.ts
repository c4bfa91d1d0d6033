/** IEEE half (binary16) and bfloat16 <-> float32 conversions for checkpoint I/O. */

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** binary16 bit patterns -> float32 values (exact: every half is a float). */
export function f16ToF32(src: Uint16Array): Float32Array {
  const out = new Float32Array(src.length);
  for (let i = 0; i < src.length; i++) {
    const h = src[i];
    const sign = (h & 0x8000) << 16;
    const exp = (h >> 10) & 0x1f;
    const mant = h & 0x3ff;
    if (exp === 0) {
      // zero or subnormal: mant * 2^-24
      const v = mant * 5.960464477539063e-8;
      out[i] = sign ? -v : v;
    } else if (exp === 31) {
      u32[0] = sign | 0x7f800000 | (mant << 13);
      out[i] = f32[0];
    } else {
      u32[0] = sign | ((exp + 112) << 23) | (mant << 13);
      out[i] = f32[0];
    }
  }
  return out;
}

/** float32 values -> binary16 bit patterns, rounding to nearest even; overflow goes to infinity. */
export function f32ToF16(src: Float32Array): Uint16Array {
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) {
    f32[0] = src[i];
    const x = u32[0];
    const sign = (x >>> 16) & 0x8000;
    const exp = (x >>> 23) & 0xff;
    let mant = x & 0x7fffff;
    if (exp === 0xff) { out[i] = sign | 0x7c00 | (mant ? 0x200 : 0); continue; }
    let e = exp - 127 + 15;
    if (e >= 31) { out[i] = sign | 0x7c00; continue; }
    if (e <= 0) {
      // subnormal half (or zero): shift the implicit 1 in, round to nearest even
      if (e < -10) { out[i] = sign; continue; }
      mant |= 0x800000;
      const shift = 14 - e;
      const half = 1 << (shift - 1);
      const rest = mant & ((1 << shift) - 1);
      let m = mant >>> shift;
      if (rest > half || (rest === half && (m & 1))) m++;
      out[i] = sign | m;
      continue;
    }
    const rest = mant & 0x1fff;
    mant >>>= 13;
    if (rest > 0x1000 || (rest === 0x1000 && (mant & 1))) {
      mant++;
      if (mant === 0x400) { mant = 0; e++; if (e >= 31) { out[i] = sign | 0x7c00; continue; } }
    }
    out[i] = sign | (e << 10) | mant;
  }
  return out;
}

/** bfloat16 bit patterns (the high half of a float32) -> float32 values. */
export function bf16ToF32(src: Uint16Array): Float32Array {
  const out = new Float32Array(src.length);
  const bits = new Uint32Array(out.buffer);
  for (let i = 0; i < src.length; i++) bits[i] = src[i] << 16;
  return out;
}
