/**
 * Philox-4x32-10, the counter-based generator of Salmon, Moraes, Dror and Shaw, "Parallel random
 * numbers: as easy as 1, 2, 3" (SC 2011), as specified by the Random123 library
 * (https://github.com/DEShawResearch/random123, include/Random123/philox.h). Pure TypeScript; the
 * WGSL twin lives in backends/webgpu/random.ts and must produce the same words.
 *
 * Stream layout (shared by every backend; element e = RandomParams.offset + i):
 * - uniform: counter [floor(e/4) lo32, floor(e/4) hi32, 0, 0], word e % 4 of the output block,
 *   value (w >>> 8) * 2^-24 in [0, 1). A multiple of 2^-24 below 1 is exact in float32, so every
 *   backend produces bit-identical uniforms.
 * - normal: counter [e lo32, e hi32, 0, 1], words w0, w1; u1 = ((w0 >>> 8) + 1) * 2^-24 in (0, 1],
 *   u2 = (w1 >>> 8) * 2^-24 in [0, 1); z = sqrt(-2 ln u1) cos(2 pi u2) (Box-Muller, one variate per
 *   element so that each element depends on its own counter only).
 * The counter's third word separates the two streams, so uniforms and normals drawn with the same
 * key and offsets are independent.
 */

/** Multipliers and Weyl key increments, from Random123's philox.h (PHILOX_M4x32_0/1, PHILOX_W32_0/1). */
const M0 = 0xd2511f53;
const M1 = 0xcd9e8d57;
const W0 = 0x9e3779b9;
const W1 = 0xbb67ae85;
const ROUNDS = 10;

/** High 32 bits of the 64-bit product of two u32 values, exact (from 16-bit halves; each partial product < 2^32). */
export function mulhi32(a: number, b: number): number {
  const al = a & 0xffff, ah = a >>> 16, bl = b & 0xffff, bh = b >>> 16;
  const ll = al * bl, lh = al * bh, hl = ah * bl, hh = ah * bh;
  const mid = (ll >>> 16) + (lh & 0xffff) + (hl & 0xffff);
  return (hh + (lh >>> 16) + (hl >>> 16) + (mid >>> 16)) >>> 0;
}

export type Words4 = [number, number, number, number];

/** One Philox-4x32-10 block: 4 output words (u32) for a 128-bit counter and a 64-bit key. */
export function philox4x32(counter: readonly [number, number, number, number], key: readonly [number, number]): Words4 {
  let c0 = counter[0] >>> 0, c1 = counter[1] >>> 0, c2 = counter[2] >>> 0, c3 = counter[3] >>> 0;
  let k0 = key[0] >>> 0, k1 = key[1] >>> 0;
  for (let r = 0; r < ROUNDS; r++) {
    if (r > 0) { k0 = (k0 + W0) >>> 0; k1 = (k1 + W1) >>> 0; }
    const hi0 = mulhi32(M0, c0), lo0 = Math.imul(M0, c0) >>> 0;
    const hi1 = mulhi32(M1, c2), lo1 = Math.imul(M1, c2) >>> 0;
    const n0 = (hi1 ^ c1 ^ k0) >>> 0, n2 = (hi0 ^ c3 ^ k1) >>> 0;
    c0 = n0; c1 = lo1; c2 = n2; c3 = lo0;
  }
  return [c0, c1, c2, c3];
}

const TWO32 = 4294967296;
/** 2^-24: scales a 24-bit integer to [0, 1) exactly. */
export const INV_2_24 = 1 / 16777216;
/** Largest offset + count the stream supports (element indices must be exact doubles). */
export const MAX_STREAM_INDEX = 2 ** 53;

/** Philox key for a seed: [low 32 bits, high 32 bits]. The seed must be an integer in [0, 2^53). */
export function keyFromSeed(seed: number): [number, number] {
  if (!Number.isInteger(seed) || seed < 0 || seed >= MAX_STREAM_INDEX) {
    throw new RangeError(`random: seed ${seed} is not an integer in [0, 2^53)`);
  }
  return [seed % TWO32 >>> 0, Math.floor(seed / TWO32)];
}

/** Checks that elements offset .. offset+count-1 are exact stream indices (below 2^53). */
export function checkStreamRange(offset: number, count: number): void {
  if (!Number.isInteger(offset) || offset < 0 || offset + count > MAX_STREAM_INDEX) {
    throw new RangeError(`random: offset ${offset} with ${count} elements leaves the stream [0, 2^53)`);
  }
}

/** Split a stream index (< 2^53) into [lo32, hi32]. */
export function splitIndex(e: number): [number, number] {
  return [e % TWO32 >>> 0, Math.floor(e / TWO32)];
}

/** The uniform in [0, 1) at stream element e. */
export function uniformAt(key: readonly [number, number], e: number): number {
  const [lo, hi] = splitIndex(Math.floor(e / 4));
  const w = philox4x32([lo, hi, 0, 0], key)[e % 4];
  return (w >>> 8) * INV_2_24;
}

/** Box-Muller on the stream's two 24-bit words, in float64 (the reference the GPU's float32 is checked against). */
export function boxMuller(w0: number, w1: number): number {
  const u1 = ((w0 >>> 8) + 1) * INV_2_24;
  const u2 = (w1 >>> 8) * INV_2_24;
  return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
}

/** The standard normal at stream element e. */
export function normalAt(key: readonly [number, number], e: number): number {
  const [lo, hi] = splitIndex(e);
  const w = philox4x32([lo, hi, 0, 1], key);
  return boxMuller(w[0], w[1]);
}
