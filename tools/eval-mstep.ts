/**
 * Evaluates the HQS M-step (`estimateKernel`) with the true sharp image given, on the M-step evaluation
 * pairs of shared/data/mstep-eval (500 kernel/image pairs, README there): for each pair j and sigma in
 * {0.01, 0.02}, y = circular_conv(x, k_j) + sigma n_j (p2o centring, portable noise of noise.ts), then one
 * M-step per method from a delta start, and the kernel MSE and MNC against k_j.
 *
 *   LATENTDEM_BACKEND=webgpu node --conditions=latentdem-src --import tsx tools/eval-mstep.ts \
 *     [--limit N] [--subset-seed S] [--iters 20] [--msteps 1] [--data DIR] [--out DIR] [--denoiser MODULE]
 *
 * --limit N takes N pairs chosen by a seeded shuffle (seed --subset-seed, default 0); default all 500.
 * --msteps M repeats the M-step M times, warm-started (the release does one per diffusion step; with the
 *   image fixed this only adds iterations; no kernel_shift is applied).
 * --denoiser MODULE: the hook for a learned prior. MODULE must export `createPrior(): Promise<KernelPrior>`
 *   (see hqs.ts); it is evaluated as method 'pnp' with the release's lambda and beta.
 * Writes OUT/eval-mstep.json (per pair and summary) and OUT/eval-mstep.md (default OUT = bench-results).
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { readImage, ready, tensor, tidy, type Tensor } from '@latentdem/tensor';
import { blurCircular, estimateKernel, HQS_DEFAULTS, kernelMse, mnc, pairNoise, portableUniform, type HqsOptions, type KernelPrior } from 'latentdem';

const here = dirname(fileURLToPath(import.meta.url));
const argv = process.argv.slice(2);
function opt(name: string): string | undefined { const i = argv.indexOf(`--${name}`); return i >= 0 ? argv[i + 1] : undefined; }
function num(name: string, fallback: number): number {
  const v = opt(name); if (v === undefined) return fallback;
  const n = Number(v); if (!Number.isFinite(n)) throw new Error(`eval-mstep: --${name} needs a number, got '${v}'`);
  return n;
}

const dataDir = resolve(opt('data') ?? join(here, '../../shared/data/mstep-eval'));
const outDir = resolve(opt('out') ?? join(here, '../bench-results'));
const iters = num('iters', HQS_DEFAULTS.iterations);
const msteps = num('msteps', 1);
const subsetSeed = num('subset-seed', 0);

interface PairsJson { noise_levels: number[]; pairs: { kernel: number; image: number; noise_seed: number }[]; images: { file: string }[] }
const pairsJson = JSON.parse(readFileSync(join(dataDir, 'pairs.json'), 'utf8')) as PairsJson;
const nPairs = pairsJson.pairs.length;
const limit = Math.min(nPairs, num('limit', nPairs));

/** F32 tensor `name` of a safetensors file (header: u64 length, JSON; data little-endian). */
function readSafetensorF32(path: string, name: string): { data: Float32Array; shape: number[] } {
  const buf = readFileSync(path);
  const hlen = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + hlen).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const e = header[name];
  if (!e || e.dtype !== 'F32') throw new Error(`eval-mstep: ${path} has no F32 tensor '${name}'`);
  const start = 8 + hlen + e.data_offsets[0]; const bytes = e.data_offsets[1] - e.data_offsets[0];
  const data = new Float32Array(bytes / 4);
  for (let i = 0; i < data.length; i++) data[i] = buf.readFloatLE(start + 4 * i);
  return { data, shape: e.shape };
}

/** The first `limit` pair indices of a seeded Fisher-Yates shuffle (all pairs in order when limit = n). */
function subset(n: number, count: number, seed: number): number[] {
  const idx = Array.from({ length: n }, (_, i) => i);
  if (count >= n) return idx;
  const s = BigInt(seed) << 32n;
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(portableUniform(s, n - 1 - i) * (i + 1));
    [idx[i], idx[j]] = [idx[j], idx[i]];
  }
  return idx.slice(0, count).sort((a, b) => a - b);
}

interface Method { name: string; options: (sigma: number) => HqsOptions }
const methods: Method[] = [
  { name: 'none', options: (sigma) => ({ sigma, prior: 'none' }) },
  { name: 'l2', options: (sigma) => ({ sigma, prior: 'l2' }) },
  { name: 'none-joint', options: (sigma) => ({ sigma, prior: 'none', channels: 'joint' }) },
];
const denoiserModule = opt('denoiser');
if (denoiserModule) {
  const mod = (await import(pathToFileURL(resolve(denoiserModule)).href)) as { createPrior?: () => Promise<KernelPrior> };
  if (typeof mod.createPrior !== 'function') throw new Error(`eval-mstep: ${denoiserModule} does not export createPrior()`);
  const prior = await mod.createPrior();
  methods.push({ name: 'pnp', options: (sigma) => ({ sigma, prior }) });
}

const backend = await ready();
const kernels = readSafetensorF32(join(dataDir, 'kernels.safetensors'), 'kernels');
const ks = kernels.shape[1];
const chosen = subset(nPairs, limit, subsetSeed);
const sigmas = pairsJson.noise_levels;

interface Result { pair: number; sigma: number; method: string; mse: number; mnc: number }
const results: Result[] = [];
const t0 = performance.now();
const tty = process.stderr.isTTY === true;
let imageCache = null as { index: number; x: Tensor } | null;

for (let done = 0; done < chosen.length; done++) {
  const j = chosen[done];
  const p = pairsJson.pairs[j];
  if (imageCache?.index !== p.image) {
    imageCache?.x.dispose();
    imageCache = { index: p.image, x: await readImage(join(dataDir, pairsJson.images[p.image].file), { channels: 3, backend }) };
  }
  const x = imageCache.x;
  const kTrue = kernels.data.subarray(p.kernel * ks * ks, (p.kernel + 1) * ks * ks);
  const noise = Float32Array.from(pairNoise(j, x.size));
  for (const sigma of sigmas) {
    for (const m of methods) {
      const est = tidy(() => {
        const kt = tensor(kTrue, { shape: [ks, ks], backend });
        const y = blurCircular(x, kt).add(tensor(noise, { shape: x.shape, backend }).mul(sigma));
        let k = estimateKernel(x, y, { ...m.options(sigma), kernelSize: ks, iterations: iters });
        for (let r = 1; r < msteps; r++) { const next = estimateKernel(x, y, { ...m.options(sigma), kernelSize: ks, iterations: iters, init: k }); k.dispose(); k = next; }
        return k;
      });
      const e = await est.data();
      est.dispose();
      results.push({ pair: j, sigma, method: m.name, mse: kernelMse(e, kTrue), mnc: mnc(e, kTrue) });
    }
  }
  if (tty) {
    const el = (performance.now() - t0) / 1000; const rate = (done + 1) / el;
    process.stderr.write(`\reval-mstep: ${done + 1}/${chosen.length} pairs, ${rate.toFixed(2)} pairs/s, ETA ${((chosen.length - done - 1) / rate).toFixed(0)} s   `);
  }
}
imageCache?.x.dispose();
if (tty) process.stderr.write('\n');
const seconds = (performance.now() - t0) / 1000;

interface Summary { method: string; sigma: number; n: number; mse_mean: number; mse_median: number; mnc_mean: number; mnc_median: number }
const median = (a: number[]): number => { const s = [...a].sort((p, q) => p - q); const h = s.length >> 1; return s.length % 2 ? s[h] : (s[h - 1] + s[h]) / 2; };
const summary: Summary[] = [];
for (const m of methods) for (const sigma of sigmas) {
  const rs = results.filter((r) => r.method === m.name && r.sigma === sigma);
  const mses = rs.map((r) => r.mse); const mncs = rs.map((r) => r.mnc);
  summary.push({ method: m.name, sigma, n: rs.length, mse_mean: mses.reduce((a, b) => a + b, 0) / rs.length, mse_median: median(mses), mnc_mean: mncs.reduce((a, b) => a + b, 0) / rs.length, mnc_median: median(mncs) });
}

const meta = {
  date: new Date().toISOString(), backend: backend.name, pairs: chosen.length, subset_seed: subsetSeed, pair_indices: chosen,
  iterations: iters, msteps, lambda: HQS_DEFAULTS.lambda, beta: HQS_DEFAULTS.beta, alpha: 'sigma^2 * beta', kernel_size: ks,
  image: 'true sharp image (oracle E-step)', init: 'delta at (32, 32)', seconds,
};
mkdirSync(outDir, { recursive: true });
writeFileSync(join(outDir, 'eval-mstep.json'), JSON.stringify({ meta, summary, results }, null, 1) + '\n');
const md = [
  `# M-step evaluation (true sharp image given)`,
  '',
  `${chosen.length} of ${nPairs} pairs (subset seed ${subsetSeed}), backend ${backend.name}, ${iters} HQS iterations x ${msteps} M-step(s) from a delta, lambda ${HQS_DEFAULTS.lambda}, beta ${HQS_DEFAULTS.beta}, alpha = sigma^2 beta; ${seconds.toFixed(1)} s.`,
  '',
  '| method | sigma | n | kernel MSE mean | kernel MSE median | MNC mean | MNC median |',
  '|---|---|---|---|---|---|---|',
  ...summary.map((s) => `| ${s.method} | ${s.sigma} | ${s.n} | ${s.mse_mean.toExponential(3)} | ${s.mse_median.toExponential(3)} | ${s.mnc_mean.toFixed(4)} | ${s.mnc_median.toFixed(4)} |`),
  '',
].join('\n');
writeFileSync(join(outDir, 'eval-mstep.md'), md);
process.stdout.write(md);
