/**
 * Strided addressing shared by the WGSL kernel families. Shapes and strides travel in the params
 * buffer (array<u32>, strides bitcast to i32 since flips make them negative); kernels are specialized by
 * rank only, so the number of pipeline variants stays small.
 *
 * Params layout written by `stridedParams(shape, views, extra)`:
 *   [0] numel, [1..rank] shape, then per view: offset, strides[rank], then `extra` words.
 */
import type { View } from '../../backend.js';

export function stridedParams(shape: readonly number[], views: readonly View[], extra: readonly number[] = []): Uint32Array {
  const rank = shape.length;
  const words = new Uint32Array(1 + rank + views.length * (1 + rank) + extra.length);
  const i32 = new Int32Array(words.buffer);
  let k = 0;
  words[k++] = shape.reduce((a, b) => a * b, 1);
  for (const s of shape) words[k++] = s;
  for (const v of views) {
    i32[k++] = v.offset;
    for (const st of v.strides) i32[k++] = st;
  }
  for (const e of extra) words[k++] = e >>> 0;
  return words;
}

/**
 * WGSL: `fn at{v}(i: u32) -> u32` giving the storage element of linear (row-major) index i for view v,
 * reading the params buffer named `p`.
 */
export function stridedIndexWgsl(rank: number, nViews: number): string {
  let s = '';
  for (let v = 0; v < nViews; v++) {
    const base = 1 + rank + v * (1 + rank);
    s += `fn at${v}(i: u32) -> u32 {\n  var rem = i;\n  var off: i32 = bitcast<i32>(p[${base}u]);\n`;
    for (let d = rank - 1; d >= 0; d--) {
      s += `  { let n = p[${1 + d}u]; let c = rem % n; rem = rem / n; off = off + i32(c) * bitcast<i32>(p[${base + 1 + d}u]); }\n`;
    }
    s += `  return u32(off);\n}\n`;
  }
  return s;
}

/** WGSL prologue: 1D linear invocation index over a (possibly 2D-split) grid of `wg`-wide workgroups. */
export function linearIdWgsl(wg: number): string {
  return `const WG: u32 = ${wg}u;
fn linear_id(gid: vec3<u32>, nwg: vec3<u32>) -> u32 { return gid.x + gid.y * nwg.x * WG; }`;
}
