import t from 'tap';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { logCR, pairNoise, pairNoiseSeed, pairwiseSum, portableUniform, sinCosCR, splitmix64 } from '../src/deblur/noise.js';

const pairsPath = fileURLToPath(new URL('../../../../shared/data/mstep-eval/pairs.json', import.meta.url));
interface NoiseSpec { check_pair0_first8: number[]; check_pair0_sum: number; check_pair0_sumsq: number }
const spec = (JSON.parse(readFileSync(pairsPath, 'utf8')) as { noise_generator: NoiseSpec; pairs: { noise_seed: number }[] }).noise_generator;

t.test('splitmix64: known value of the reference generator (seed 0 -> 0xe220a8397b1dcdaf)', async (t) => {
  // First output of Vigna's splitmix64.c with state 0 is the mix of 0x9E3779B97F4A7C15.
  t.equal(splitmix64(0n), 0xe220a8397b1dcdafn);
});

t.test('noise: pair 0 first 8 values equal pairs.json exactly; sum and sum of squares to 1e-13 (glibc is not correctly rounded)', async (t) => {
  const n = pairNoise(0);
  t.equal(n.length, 3 * 256 * 256);
  t.same(Array.from(n.subarray(0, 8)), spec.check_pair0_first8, 'first 8 bit-exact');
  const s = pairwiseSum(n); const s2 = pairwiseSum(n.map((v) => v * v));
  t.ok(Math.abs(s - spec.check_pair0_sum) <= 1e-13 * spec.check_pair0_sumsq, `sum ${s} vs ${spec.check_pair0_sum}`);
  t.ok(Math.abs(s2 - spec.check_pair0_sumsq) <= 1e-13 * spec.check_pair0_sumsq, `sum of squares ${s2} vs ${spec.check_pair0_sumsq}`);
});

t.test('noise: ln, sin, cos are correctly rounded on values where V8 and glibc are not', async (t) => {
  const u = (i: number): number => portableUniform(pairNoiseSeed(0), i);
  t.equal(logCR(1), 0); t.equal(logCR(0.5), -Math.LN2);
  t.equal(sinCosCR(0)[0], 0); t.equal(sinCosCR(0)[1], 1);
  // mpmath (200 bits) rounded to nearest; glibc gives -0.0639704657804946, -0.16144121818885282, 0.7133422498252593.
  t.equal(logCR(u(566)), -0.06397046578049462, 'ln u_566');
  t.equal(sinCosCR(2 * Math.PI * u(1051))[0], -0.1614412181888528, 'sin 2 pi u_1051');
  t.equal(sinCosCR(2 * Math.PI * u(1499))[1], 0.7133422498252592, 'cos 2 pi u_1499');
  for (let i = 0; i < 2000; i += 2) {
    const a = 2 * Math.PI * u(i + 1); const [s, c] = sinCosCR(a);
    if (Math.abs(s - Math.sin(a)) > 4e-16 || Math.abs(c - Math.cos(a)) > 4e-16) { t.fail(`sin/cos off at ${a}`); break; }
  }
});

t.test('noise: stream seeds are (j+1) << 20 as listed in pairs.json', async (t) => {
  const pairs = (JSON.parse(readFileSync(pairsPath, 'utf8')) as { pairs: { noise_seed: number }[] }).pairs;
  for (const j of [0, 1, 499]) t.equal(Number(pairNoiseSeed(j)), pairs[j].noise_seed);
});
