import t from 'tap';
import type { RandomParams } from '../src/backend.js';
import { CpuStorage } from '../src/backends/cpu/storage.js';
import { random as cpuRandom } from '../src/backends/cpu/random.js';
import { gpuContext } from './helpers.js';
import type { GpuContext } from '../src/backends/webgpu/context.js';
import { keyFromSeed, mulhi32, normalAt, philox4x32, uniformAt } from '../src/random/philox.js';

const { ctx: gpuCtx, skip: gpuSkip } = await gpuContext();

function cpuFill(p: RandomParams, n: number): Float32Array {
  const out = new CpuStorage('float32', new Float32Array(n));
  cpuRandom(p, out);
  return out.data as Float32Array;
}

async function gpuFill(ctx: GpuContext, p: RandomParams, n: number): Promise<Float32Array> {
  const { random } = await import('../src/backends/webgpu/random.js');
  const out = ctx.alloc(n, 'float32');
  random(ctx, p, out);
  const bytes = await ctx.readBytes(out.buffer, 0, n * 4);
  ctx.free(out);
  return new Float32Array(bytes);
}

const hex = (w: readonly number[]): string => w.map((x) => x.toString(16).padStart(8, '0')).join(' ');
const words = (s: string): number[] => s.split(' ').map((x) => parseInt(x, 16));

t.test('philox4x32-10 matches the Random123 known-answer vectors', async (t) => {
  // Random123 v1.14.0, tests/kat_vectors, the three "philox4x32 10" lines
  // (https://github.com/DEShawResearch/random123, commit 9545ff6413f258be2f04c1d319d99aaef7521150):
  // counter words, key words, expected output words.
  const kats: Array<[string, string, string]> = [
    ['00000000 00000000 00000000 00000000', '00000000 00000000', '6627e8d5 e169c58d bc57ac4c 9b00dbd8'],
    ['ffffffff ffffffff ffffffff ffffffff', 'ffffffff ffffffff', '408f276d 41c83b0e a20bc7c6 6d5451fd'],
    ['243f6a88 85a308d3 13198a2e 03707344', 'a4093822 299f31d0', 'd16cfe09 94fdcceb 5001e420 24126ea1'],
  ];
  for (const [ctr, key, want] of kats) {
    const got = philox4x32(words(ctr) as [number, number, number, number], words(key) as [number, number]);
    t.equal(hex(got), want, `counter ${ctr}, key ${key}`);
  }
});

t.test('mulhi32 equals the high word of the exact 64-bit product', async (t) => {
  const cases = [[0, 0], [0xffffffff, 0xffffffff], [0xd2511f53, 0xffffffff], [0xcd9e8d57, 0x80000000], [1, 0xffffffff]];
  let s = 12345;
  for (let i = 0; i < 2000; i++) { s = (Math.imul(s, 1103515245) + 12345) >>> 0; cases.push([s, (s * 2654435761) >>> 0]); }
  let bad = 0;
  for (const [a, b] of cases) if (mulhi32(a, b) !== Number((BigInt(a) * BigInt(b)) >> 32n)) bad++;
  t.equal(bad, 0);
});

t.test('keyFromSeed splits a seed into 32-bit words and rejects seeds outside [0, 2^53)', async (t) => {
  t.same(keyFromSeed(0), [0, 0]);
  t.same(keyFromSeed(0x123456789), [0x23456789, 0x1]);
  t.same(keyFromSeed(2 ** 53 - 1), [0xffffffff, 0x1fffff]);
  for (const bad of [-1, 1.5, 2 ** 53, Number.NaN, Infinity]) {
    t.throws(() => keyFromSeed(bad), { name: 'RangeError', message: new RegExp(`seed ${String(bad)}`) }, `seed ${bad}`);
  }
});

t.test('stream layout: uniform element e is word e%4 of block floor(e/4), normal uses counter [e, 0, 1]', async (t) => {
  const key = keyFromSeed(42);
  const u = cpuFill({ kind: 'uniform', key, offset: 6 }, 3);
  const block = philox4x32([1, 0, 0, 0], key); // elements 4..7
  t.equal(u[0], (block[2] >>> 8) / 2 ** 24);
  t.equal(u[1], (block[3] >>> 8) / 2 ** 24);
  t.equal(u[2], (philox4x32([2, 0, 0, 0], key)[0] >>> 8) / 2 ** 24);
  const e = 2 ** 40 + 7; // block 2^38 + 1 = (lo 1, hi 2^6), word 3
  t.equal(uniformAt(key, e), (philox4x32([1, 2 ** 6, 0, 0], key)[3] >>> 8) / 2 ** 24);
  const w = philox4x32([7, 256, 0, 1], key);
  const u1 = ((w[0] >>> 8) + 1) / 2 ** 24, u2 = (w[1] >>> 8) / 2 ** 24;
  t.equal(normalAt(key, 256 * 2 ** 32 + 7), Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2));
});

t.test('cpu: drawing n at offset 0 equals draws at offsets 0 and k, concatenated', async (t) => {
  const key = keyFromSeed(7);
  for (const kind of ['uniform', 'normal'] as const) {
    const all = cpuFill({ kind, key, offset: 0 }, 37);
    for (const k of [1, 3, 4, 5, 36]) {
      const cat = new Float32Array(37);
      cat.set(cpuFill({ kind, key, offset: 0 }, k));
      cat.set(cpuFill({ kind, key, offset: k }, 37 - k), k);
      t.same(Array.from(cat), Array.from(all), `${kind}, split at ${k}`);
    }
  }
});

t.test('cpu: uniform in [0,1) with mean 1/2 and variance 1/12; normal with mean 0 and variance 1', async (t) => {
  const n = 1 << 20;
  const u = cpuFill({ kind: 'uniform', key: keyFromSeed(1), offset: 0 }, n);
  let s = 0, s2 = 0, lo = Infinity, hi = -Infinity;
  for (const x of u) { s += x; s2 += x * x; lo = Math.min(lo, x); hi = Math.max(hi, x); }
  t.ok(lo >= 0 && hi < 1, `range [${lo}, ${hi}]`);
  t.ok(Math.abs(s / n - 0.5) < 2e-3, `uniform mean ${s / n}`);
  t.ok(Math.abs(s2 / n - (s / n) ** 2 - 1 / 12) < 1e-3, `uniform variance ${s2 / n - (s / n) ** 2}`);
  const z = cpuFill({ kind: 'normal', key: keyFromSeed(1), offset: 0 }, n);
  s = 0; s2 = 0;
  let s4 = 0;
  for (const x of z) { s += x; s2 += x * x; s4 += x ** 4; }
  t.ok(Math.abs(s / n) < 5e-3, `normal mean ${s / n}`);
  t.ok(Math.abs(s2 / n - 1) < 1e-2, `normal variance ${s2 / n}`);
  t.ok(Math.abs(s4 / n - 3) < 5e-2, `normal 4th moment ${s4 / n}`);
});

t.test('cpu: seeds and kinds give different streams; offsets beyond 2^53 are rejected', async (t) => {
  const a = cpuFill({ kind: 'uniform', key: keyFromSeed(1), offset: 0 }, 8);
  const b = cpuFill({ kind: 'uniform', key: keyFromSeed(2), offset: 0 }, 8);
  const c = cpuFill({ kind: 'uniform', key: keyFromSeed(2 ** 32 + 1), offset: 0 }, 8);
  t.notSame(Array.from(a), Array.from(b));
  t.notSame(Array.from(a), Array.from(c));
  t.throws(() => cpuFill({ kind: 'normal', key: [0, 0], offset: 2 ** 53 - 2 }, 4), RangeError);
  t.throws(() => cpuFill({ kind: 'uniform', key: [0, 0], offset: -1 }, 4), RangeError);
});

t.test('webgpu: uniform is bit-identical to cpu, including offsets across 2^32 and 2^34 and near 2^53', { skip: gpuSkip }, async (t) => {
  const ctx = gpuCtx!;
  const key = keyFromSeed(987654321987);
  const cases: Array<[number, number]> = [
    [0, 1], [0, 3], [1, 4], [2, 1001], [0, 300001], [2 ** 32 - 5, 1000], [2 ** 34 - 10, 777], [2 ** 53 - 103, 103],
  ];
  for (const [offset, n] of cases) {
    const c = cpuFill({ kind: 'uniform', key, offset }, n);
    const g = await gpuFill(ctx, { kind: 'uniform', key, offset }, n);
    let diff = 0;
    for (let i = 0; i < n; i++) if (c[i] !== g[i]) diff++;
    t.equal(diff, 0, `offset ${offset}, n ${n}: elements differing`);
  }
});

t.test('webgpu: normal within 1e-6 * max(1, |z|) of cpu, and offset continuity', { skip: gpuSkip }, async (t) => {
  const ctx = gpuCtx!;
  const key = keyFromSeed(31337);
  let worst = 0;
  for (const [offset, n] of [[0, 1 << 21], [2 ** 32 - 1000, 5000], [2 ** 53 - 5000, 5000]]) {
    const c = cpuFill({ kind: 'normal', key, offset }, n);
    const g = await gpuFill(ctx, { kind: 'normal', key, offset }, n);
    let m = 0;
    for (let i = 0; i < n; i++) m = Math.max(m, Math.abs(g[i] - c[i]) / Math.max(1, Math.abs(c[i])));
    worst = Math.max(worst, m);
    t.ok(m <= 1e-6, `offset ${offset}, n ${n}: max |gpu - cpu| / max(1, |z|) = ${m.toExponential(3)}`);
  }
  t.comment(`max normal error gpu vs cpu: ${worst.toExponential(3)}`);
  for (const kind of ['uniform', 'normal'] as const) {
    const all = await gpuFill(ctx, { kind, key, offset: 0 }, 1029);
    const head = await gpuFill(ctx, { kind, key, offset: 0 }, 5);
    const tail = await gpuFill(ctx, { kind, key, offset: 5 }, 1024);
    t.same([...head, ...tail], Array.from(all), `${kind}: draws at 0 and 5 concatenate to a draw at 0`);
  }
});
