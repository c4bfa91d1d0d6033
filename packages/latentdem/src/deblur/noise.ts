/**
 * The portable noise generator of the M-step evaluation set (`shared/data/mstep-eval/pairs.json`,
 * field `noise_generator`): splitmix64 on a counter, 53-bit uniforms, Box-Muller on consecutive pairs,
 * in float64.
 *
 * Exactness: splitmix64, the uniforms, sqrt and the products are exact IEEE operations, so only ln, sin
 * and cos can differ between implementations. The reference ran on glibc's libm (2.36), which is not
 * correctly rounded: for pair 0, 318 of its 196608 values differ by one ulp from the correctly rounded
 * result (checked with mpmath at 200 bits). V8's Math.log/sin/cos (fdlibm ports) are further off (2 of
 * the first 8 check values differ) and are engine-dependent. This port therefore computes ln, sin and cos
 * in double-double arithmetic (about 100 bits) and rounds once: correctly rounded, identical on every
 * engine, equal to the reference except for those one-ulp cases (about 0.16 %). The 8 check values are
 * reproduced exactly; the check sum and sum of squares to within 1e-13 relative. Bit-exactness with
 * glibc would need a port of its table-driven log (ARM optimized-routines) and IBM sin/cos.
 */

const MASK64 = (1n << 64n) - 1n;
/** splitmix64 constants (Steele, Lea, Flood 2014; as written in pairs.json `noise_generator.uniform`). */
const GOLDEN = 0x9e3779b97f4a7c15n;
const MIX1 = 0xbf58476d1ce4e5b9n;
const MIX2 = 0x94d049bb133111ebn;
const TWO53 = 2 ** 53;

/** splitmix64(x) with uint64 arithmetic modulo 2^64. */
export function splitmix64(x: bigint): bigint {
  let z = (x + GOLDEN) & MASK64;
  z = ((z ^ (z >> 30n)) * MIX1) & MASK64;
  z = ((z ^ (z >> 27n)) * MIX2) & MASK64;
  return z ^ (z >> 31n);
}

/** The uniform in (0, 1) of counter value `s + i`: ((z >> 11) + 0.5) / 2^53 (float64). */
export function portableUniform(seed: bigint, i: number): number {
  const z = splitmix64((seed + BigInt(i)) & MASK64);
  return (Number(z >> 11n) + 0.5) / TWO53;
}

// ---- double-double arithmetic (Dekker / Knuth error-free transformations) ----
type DD = [number, number];
const SPLIT = 134217729; // 2^27 + 1 (Veltkamp split)
function twoSum(a: number, b: number): DD { const s = a + b; const bb = s - a; return [s, (a - (s - bb)) + (b - bb)]; }
function quickTwoSum(a: number, b: number): DD { const s = a + b; return [s, b - (s - a)]; }
function twoProd(a: number, b: number): DD {
  const p = a * b;
  let t = SPLIT * a; const ah = t - (t - a); const al = a - ah;
  t = SPLIT * b; const bh = t - (t - b); const bl = b - bh;
  return [p, ((ah * bh - p) + ah * bl + al * bh) + al * bl];
}
function ddAdd(a: DD, b: DD): DD {
  const [s, e] = twoSum(a[0], b[0]); const [t, f] = twoSum(a[1], b[1]);
  let [hi, lo] = quickTwoSum(s, e + t); [hi, lo] = quickTwoSum(hi, lo + f); return [hi, lo];
}
function ddMul(a: DD, b: DD): DD {
  const [p, e] = twoProd(a[0], b[0]);
  return quickTwoSum(p, e + (a[0] * b[1] + a[1] * b[0]));
}
const ddMulD = (a: DD, b: number): DD => ddMul(a, [b, 0]);
function ddDivD(a: DD, b: number): DD {
  const q1 = a[0] / b; const [p, e] = twoProd(q1, b);
  const r = ((a[0] - p) - e + a[1]) / b; return quickTwoSum(q1, r);
}

/** ln 2 and pi/2 as sums of doubles (hi + mid + lo), from their decimal expansions. */
const LN2: DD = [0.6931471805599453, 2.3190468138462996e-17];
const PIO2_1 = 1.5707963267948966, PIO2_2 = 6.123233995736766e-17, PIO2_3 = -1.4973849048591698e-33;

/** e^y in double-double for y <= 0 (y > -746): y = k ln2 + r, e^r by Taylor on r/256, squared 8 times. */
function ddExp(y: number): DD {
  const k = Math.round(y / LN2[0]);
  let r = ddAdd([y, 0], ddMulD(LN2, -k));
  r = [r[0] / 256, r[1] / 256];
  let term: DD = [1, 0]; let sum: DD = [1, 0];
  for (let n = 1; n <= 12; n++) { term = ddDivD(ddMul(term, r), n); sum = ddAdd(sum, term); }
  for (let i = 0; i < 8; i++) sum = ddMul(sum, sum);
  const s = 2 ** k; // k >= -1075: split the scaling so that the factor stays a normal double
  return k < -1000 ? [sum[0] * 2 ** (k + 600) * 2 ** -600, sum[1] * 2 ** (k + 600) * 2 ** -600] : [sum[0] * s, sum[1] * s];
}

/** Correctly rounded ln(u) for 0 < u < 1: one Newton step y + (u - e^y)/e^y from fdlibm's estimate. */
export function logCR(u: number): number {
  const y = Math.log(u);
  const e = ddExp(y);
  const d = ddDivD(ddAdd([u, 0], [-e[0], -e[1]]), e[0]);
  const r = ddAdd([y, 0], d);
  return r[0] + r[1];
}

/** sin and cos of a double-double |r| <= pi/4 (Taylor on r/8, then three double-angle steps). */
function ddSinCos(r: DD): [DD, DD] {
  const x: DD = [r[0] / 8, r[1] / 8];
  const x2 = ddMul(x, x);
  let s: DD = x; let term: DD = x;
  for (let n = 1; n <= 10; n++) { term = ddDivD(ddMul(term, x2), -(2 * n) * (2 * n + 1)); s = ddAdd(s, term); }
  // 1 - cos(x) computed directly (no cancellation when doubling).
  let term2: DD = ddDivD(x2, 2); let omc: DD = term2;
  for (let n = 2; n <= 11; n++) { term2 = ddDivD(ddMul(term2, x2), -(2 * n - 1) * (2 * n)); omc = ddAdd(omc, term2); }
  for (let i = 0; i < 3; i++) {
    // sin 2x = 2 sin x cos x; 1 - cos 2x = 2 sin^2 x
    const c = ddAdd([1, 0], [-omc[0], -omc[1]]);
    const s2 = ddMul(s, c);
    omc = ddMulD(ddMul(s, s), 2);
    s = ddMulD(s2, 2);
  }
  return [s, ddAdd([1, 0], [-omc[0], -omc[1]])];
}

/** Correctly rounded [sin a, cos a] for 0 <= a < 8 (the Box-Muller angle 2 pi u). */
export function sinCosCR(a: number): [number, number] {
  const k = Math.round(a / PIO2_1);
  // r = a - k pi/2 with pi/2 in three parts: the products are exact for k < 8, the sum error-free enough.
  let r = twoSum(a, -k * PIO2_1);
  r = ddAdd(r, twoProd(-k, PIO2_2));
  r = ddAdd(r, [-k * PIO2_3, 0]);
  const [s, c] = ddSinCos(r);
  const sv = s[0] + s[1]; const cv = c[0] + c[1];
  switch (((k % 4) + 4) % 4) {
    case 0: return [sv, cv];
    case 1: return [cv, -sv];
    case 2: return [-sv, -cv];
    default: return [-cv, sv];
  }
}

/**
 * `n` standard normals of the stream `seed` (float64): r = sqrt(-2 ln u_{2m}), n_{2m} = r cos(2 pi u_{2m+1}),
 * n_{2m+1} = r sin(2 pi u_{2m+1}). An odd `n` draws one more uniform pair and drops the last value.
 */
export function portableNormals(seed: bigint | number, n: number): Float64Array {
  const s = BigInt(seed);
  const out = new Float64Array(n);
  for (let m = 0; 2 * m < n; m++) {
    const u0 = portableUniform(s, 2 * m);
    const u1 = portableUniform(s, 2 * m + 1);
    const r = Math.sqrt(-2 * logCR(u0));
    const [sn, cs] = sinCosCR(2 * Math.PI * u1);
    out[2 * m] = r * cs;
    if (2 * m + 1 < n) out[2 * m + 1] = r * sn;
  }
  return out;
}

/** The stream seed of evaluation pair j: (j + 1) * 2^20 (pairs.json `pairs[j].noise_seed`). */
export const pairNoiseSeed = (j: number): bigint => BigInt(j + 1) << 20n;

/** The unit-noise field of evaluation pair j, `count` values in CHW order (3*256*256 for the eval images). */
export function pairNoise(j: number, count = 3 * 256 * 256): Float64Array {
  return portableNormals(pairNoiseSeed(j), count);
}

/**
 * numpy's pairwise summation (numpy 1.24 `pairwise_sum`, loops_utils.h: blocks of 128 with eight
 * accumulators, halves rounded to multiples of 8), so that sums match the reference's `ndarray.sum()`.
 */
export function pairwiseSum(a: ArrayLike<number>, start = 0, n = a.length): number {
  if (n < 8) { let r = -0; for (let i = 0; i < n; i++) r += a[start + i]; return r; }
  if (n <= 128) {
    const r = [a[start], a[start + 1], a[start + 2], a[start + 3], a[start + 4], a[start + 5], a[start + 6], a[start + 7]];
    let i = 8;
    for (; i < n - (n % 8); i += 8) for (let j = 0; j < 8; j++) r[j] += a[start + i + j];
    let res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; i++) res += a[start + i];
    return res;
  }
  let n2 = Math.floor(n / 2); n2 -= n2 % 8;
  return pairwiseSum(a, start, n2) + pairwiseSum(a, start + n2, n - n2);
}
