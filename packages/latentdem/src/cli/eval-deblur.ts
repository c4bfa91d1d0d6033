/**
 * The issue 8 deblurring evaluation on the M-step evaluation pairs of shared/data/mstep-eval (500 pairs, README
 * there): pair j = kernel j (64 x 64, sum 1) on image j // 5 (RGB 256 x 256, /255), y = circular_conv(x, k_j) +
 * sigma n_j (p2o centring, the portable noise of noise.ts, the same unit field for every sigma).
 *
 *   latentdem eval-deblur --pairs ../shared/data/mstep-eval/pairs.json --sigma 0.01,0.02 [--n N] [--offset K] \
 *     [--methods y,a-ours,a-release,b,c,d] [--release-limit M] [--subset-seed S] [--out DIR] [--backend webgpu|cpu] \
 *     [--weights FILE] [--iters 20] [--tv-iters 10] [--summarize]
 *     [--prior PATH] [--em-limit M] [--em-steps N] [--em-skip K] [--em-anneal release|paper|none] [--em-seed S]
 *
 * Rows (--methods, default y,a-ours,c,d; the table lists them in this order):
 *   y          the blurry measurement itself (image metrics only; costs nothing).
 *   a-ours     (a) the M-step alone given the TRUE image (estimateKernel, 20 HQS iterations from a delta, our
 *              DnCNN kernel prior at KERNEL_DNCNN_LAMBDA): the upper bound of kernel estimation. Its image
 *              metrics are those of deconvolveTV(y, estimated kernel) (the same non-blind step as row c), its
 *              kernel metrics those of the estimated kernel (not re-centred: the true image pins the position).
 *   a-release  (a) the same with the LatentDEM release's FDnCNN (20 x 64, its .pth in shared/data/latentdem-release,
 *              lambda 1). About 18 s per M-step on lavapipe, so it runs only on a seeded subset of
 *              --release-limit pairs (default 40; the first M of a seeded shuffle, seed --subset-seed, default 0,
 *              the same shuffle as tools/eval-mstep.ts --limit), intersected with the --offset/--n range.
 *   b          the full EM, `deblur()`, with the latent diffusion prior --prior (an SD 1.5 file or a prior.json;
 *              default weights/fixture-small, whose random weights make the row a smoke run of the machinery,
 *              not a result): y mapped to [-1, 1] (2y - 1, so the noise std is 2 sigma), --em-steps DDIM steps
 *              (default 1000), skip-gradient every --em-skip (default 0 = off), the same 64 x 64 kernel, the
 *              release's settings otherwise; the image is (D(z0) + 1) / 2. On the first --em-limit pairs of the
 *              same seeded shuffle as a-release (default 40), intersected with the --offset/--n range.
 *   c          non-blind TV deconvolution with the TRUE kernel (deconvolveTV): the upper bound of image quality
 *              for this image step. No kernel metrics.
 *   d          the classical blind baseline without a diffusion prior (blindDeconvolveTV with its defaults:
 *              coarse-to-fine alternation of TV image steps and the same HQS kernel step on image gradients,
 *              from a delta, re-centred after each kernel step; our DnCNN kernel prior at the finest level, chosen
 *              by the measurement in classical.ts BLIND_TV_DEFAULTS). Its kernel is re-centred, so its kernel MSE
 *              and PSNR carry the translation ambiguity of blind deblurring; MNC does not.
 * Image metrics: PSNR and SSIM (Wang et al. 2004, metrics.ts) of the estimate clipped to [0, 1] against the true
 * image; kernel metrics: kernel MSE and MNC against the true kernel; seconds: wall time of the row's work on one
 * pair (including reading the result back), not of the metrics.
 * The TV weight of every non-blind step is lambda = TV_LAMBDA_PER_SIGMA2 * sigma^2 (5 sigma^2, see below).
 *
 * Pairs: --offset K --n N runs pairs K .. K+N-1 (default all 500). Each finished (pair, row) is appended to
 * OUT/eval-deblur-sigma{S}.jsonl; a rerun skips what is already there, so long runs can be split or resumed
 * (runs on different --offset ranges may share OUT one after the other). After the run the summary over every
 * row in the .jsonl is written to OUT/eval-deblur-sigma{S}.json (per pair rows + summary) and .md (the table);
 * --summarize only rewrites those two from the .jsonl. A progress line (pair i/N, s/pair, ETA) goes to stderr
 * when it is a terminal.
 *
 * Calibration of the TV weight (lambda per sigma^2), measured with the true kernel on 4 calibration pairs
 * (shared/data/train-images every 7th, our motion kernels seeds 7000000+, noise streams 100000+; never the
 * evaluation pairs), 10 iterations, webgpu/lavapipe: PSNR (SSIM)
 *   sigma 0.01: lambda 5e-4 26.45 (0.691), 1e-3 26.24 (0.696), 3e-3 24.98, 1e-2 23.56  (measurement y: 19.89)
 *   sigma 0.02: lambda 1e-3 24.33, 2e-3 25.12 (0.638), 3e-3 24.85, 4e-3 24.57, 1e-2 23.54  (y: 19.74)
 * hence lambda = 5 sigma^2 (5e-4 and 2e-3). 16 iterations gave the same PSNR as 10 to 0.01 dB.
 */
import { appendFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { initBackend, readImage, ready, tensor, tidy, type Backend, type Tensor } from '@latentdem/tensor';
import { SafetensorsFile, loadTorchCheckpoint } from '@latentdem/nn';
import { blindDeconvolveTV, deconvolveTV } from '../deblur/classical.js';
import { blurCircular, estimateKernel, HQS_DEFAULTS, type KernelPrior } from '../deblur/hqs.js';
import { DnCNN, dncnnPrior, KERNEL_DNCNN_LAMBDA, loadDnCNN, RELEASE_FDNCNN } from '../deblur/dncnn.js';
import { kernelMse, mnc, psnr, ssim } from '../deblur/metrics.js';
import { pairNoise, portableUniform } from '../deblur/noise.js';
import { deblur, DEFAULT_KERNEL_DENOISER } from '../deblur/deblur.js';
import type { AnnealKind } from '../deblur/schedules.js';
import { loadPrior } from '../prior.js';
import { CliError, reportCliError } from './common.js';
import type { CliIO } from './common.js';

const repoRoot = fileURLToPath(new URL('../../../../', import.meta.url));

/** TV weight of the non-blind steps: lambda = 5 sigma^2 (calibration in the header comment). */
export const TV_LAMBDA_PER_SIGMA2 = 5;
const tvLambda = (sigma: number): number => TV_LAMBDA_PER_SIGMA2 * sigma * sigma;

// ---------------------------------------------------------------------------------------------------------
// Pair loading (usable from other tools).

export interface PairsJson { noise_levels: number[]; pairs: { kernel: number; image: number; noise_seed: number }[]; images: { file: string }[] }
export interface EvalData { dir: string; json: PairsJson; kernels: Float32Array; ks: number; count: number }
/** One pair on a backend: the true image x [3,256,256], the true kernel, the unit noise (CHW, float32). */
export interface PairData { id: number; x: Tensor; xData: Float32Array; kTrue: Float32Array; noise: Float32Array; imageFile: string }

/** F32 tensor `name` of a safetensors file (header: u64 length, JSON; data little-endian). */
/** Reads pairs.json and the kernels next to it. */
export async function loadEvalData(pairsFile: string): Promise<EvalData> {
  const dir = dirname(resolve(pairsFile));
  const json = JSON.parse(readFileSync(resolve(pairsFile), 'utf8')) as PairsJson;
  const f = await SafetensorsFile.open(join(dir, 'kernels.safetensors'));
  try {
    const kernels = await f.readHost('kernels');
    if (!(kernels instanceof Float32Array)) throw new CliError(`${f.path}: 'kernels' is not a float tensor`);
    return { dir, json, kernels, ks: f.entries.get('kernels')!.shape[1], count: json.pairs.length };
  } finally { await f.close(); }
}

/**
 * Pair j on `backend`: the image (centre 256 crop; cached across the 5 pairs of an image through `cache`), the
 * kernel and the unit noise. The caller disposes nothing: the cache owns x (call `cache.clear()` at the end).
 */
export async function loadPair(data: EvalData, j: number, backend: Backend, cache: Map<string, { x: Tensor; xData: Float32Array }>): Promise<PairData> {
  const p = data.json.pairs[j];
  const imageFile = join(data.dir, data.json.images[p.image].file);
  let c = cache.get(imageFile);
  if (!c) {
    for (const v of cache.values()) v.x.dispose();
    cache.clear();
    const img = await readImage(imageFile, { channels: 3, backend });
    if (img.shape[1] < 256 || img.shape[2] < 256) throw new Error(`eval-deblur: ${imageFile} is ${img.shape[1]}x${img.shape[2]}, smaller than 256x256`);
    const top = (img.shape[1] - 256) >> 1; const left = (img.shape[2] - 256) >> 1;
    const x = img.shape[1] === 256 && img.shape[2] === 256 ? img : tidy(() => img.narrow(1, top, 256).narrow(2, left, 256).contiguous());
    if (x !== img) img.dispose();
    c = { x, xData: Float32Array.from(await x.data()) };
    cache.set(imageFile, c);
  }
  const ks = data.ks;
  return { id: j, x: c.x, xData: c.xData, kTrue: data.kernels.subarray(p.kernel * ks * ks, (p.kernel + 1) * ks * ks), noise: Float32Array.from(pairNoise(j, c.x.size)), imageFile };
}

/** y = circular_conv(x, k) + sigma n on x's backend. */
export function measurement(pair: PairData, sigma: number, ks: number): Tensor {
  const backend = pair.x.backend;
  return tidy(() => blurCircular(pair.x, tensor(pair.kTrue, { shape: [ks, ks], backend })).add(tensor(pair.noise, { shape: pair.x.shape, backend }).mul(sigma)));
}

/** The first `count` indices (sorted) of a seeded Fisher-Yates shuffle of 0..n-1 (as tools/eval-mstep.ts subset()). */
export function seededSubset(n: number, count: number, seed: number): number[] {
  const idx = Array.from({ length: n }, (_, i) => i);
  const s = BigInt(seed) << 32n;
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(portableUniform(s, n - 1 - i) * (i + 1));
    [idx[i], idx[j]] = [idx[j], idx[i]];
  }
  return idx.slice(0, count).sort((a, b) => a - b);
}

// ---------------------------------------------------------------------------------------------------------
// Rows.

/** What a row sees for one pair and noise level. */
export interface RowInput { pair: PairData; y: Tensor; sigma: number; ks: number; backend: Backend }
/** A row's result: the estimated image [3,256,256] and/or kernel [ks,ks] on the host, and its wall seconds. */
export interface RowOutput { image?: Float32Array; kernel?: Float32Array; seconds: number }
export type Row = (p: RowInput) => Promise<RowOutput>;

async function readAndFree(t: Tensor): Promise<Float32Array> { const d = Float32Array.from(await t.data()); t.dispose(); return d; }

/** Row (a) with a kernel prior: the M-step given the true image, then the non-blind TV step with its kernel. */
function mstepRow(prior: KernelPrior, lambda: number, iterations: number, tvIterations: number): Row {
  return async ({ pair, y, sigma, ks }) => {
    const t0 = performance.now();
    const k = estimateKernel(pair.x, y, { sigma, prior, lambda, kernelSize: ks, iterations });
    const img = deconvolveTV(y, k, { lambda: tvLambda(sigma), iterations: tvIterations });
    const kernel = await readAndFree(k);
    const image = await readAndFree(img);
    return { image, kernel, seconds: (performance.now() - t0) / 1000 };
  };
}

// ---------------------------------------------------------------------------------------------------------
// Summary and table.

export interface ResultLine { pair: number; sigma: number; method: string; psnr: number | null; ssim: number | null; kernel_mse: number | null; mnc: number | null; seconds: number }
const ROW_ORDER = ['y', 'a-ours', 'a-release', 'b', 'c', 'd'];
const DESCRIPTION: Record<string, string> = {
  y: 'blurry measurement y',
  'a-ours': '(a) M-step with true image, our DnCNN prior; image by TV with that kernel',
  'a-release': '(a) M-step with true image, release FDnCNN (seeded subset); image by TV with that kernel',
  b: '(b) full EM with diffusion prior',
  c: '(c) non-blind TV with the true kernel',
  d: '(d) classical blind: coarse-to-fine TV image step + HQS kernel step',
};

function stats(v: (number | null)[]): { mean: number | null; median: number | null } {
  const a = v.filter((x): x is number => x !== null && Number.isFinite(x)).sort((p, q) => p - q);
  if (!a.length) return { mean: null, median: null };
  const h = a.length >> 1;
  return { mean: a.reduce((s, x) => s + x, 0) / a.length, median: a.length % 2 ? a[h] : (a[h - 1] + a[h]) / 2 };
}

function summarize(lines: ResultLine[]): Record<string, unknown>[] {
  const methods = [...new Set(lines.map((l) => l.method))].sort((a, b) => (ROW_ORDER.indexOf(a) + 100 * +(ROW_ORDER.indexOf(a) < 0)) - (ROW_ORDER.indexOf(b) + 100 * +(ROW_ORDER.indexOf(b) < 0)) || a.localeCompare(b));
  return methods.map((m) => {
    const rs = lines.filter((l) => l.method === m);
    const out: Record<string, unknown> = { method: m, n: rs.length };
    for (const key of ['psnr', 'ssim', 'kernel_mse', 'mnc', 'seconds'] as const) {
      const s = stats(rs.map((r) => r[key]));
      out[`${key}_mean`] = s.mean; out[`${key}_median`] = s.median;
    }
    return out;
  });
}

function fmt(v: unknown, kind: 'db' | 'ssim' | 'mse' | 'mnc' | 's'): string {
  if (typeof v !== 'number') return 'n/a';
  if (kind === 'db') return v.toFixed(2);
  if (kind === 'mse') return v.toExponential(3);
  if (kind === 's') return v.toFixed(2);
  return v.toFixed(4);
}

function writeOutputs(outDir: string, sigma: number, lines: ResultLine[], meta: Record<string, unknown>): string {
  const summary = summarize(lines);
  const base = join(outDir, `eval-deblur-sigma${sigma}`);
  writeFileSync(`${base}.json`, JSON.stringify({ meta: { ...meta, sigma }, summary, results: lines }, null, 1) + '\n');
  const md = [
    `# Deblurring evaluation, sigma ${sigma}`,
    '',
    `${meta.selection}; backend ${meta.backend}. PSNR / SSIM of the estimate clipped to [0, 1] against the true image; kernel MSE and MNC against the true kernel; seconds per image of the row's work. Each cell: mean / median. TV weight of the non-blind steps ${tvLambda(sigma).toExponential(1)} (5 sigma^2).`,
    '',
    '| row | what | n | PSNR (dB) | SSIM | kernel MSE | MNC | s / image |',
    '|---|---|---|---|---|---|---|---|',
    ...summary.map((s) => `| ${s.method} | ${DESCRIPTION[s.method as string] ?? ''} | ${s.n} | ${fmt(s.psnr_mean, 'db')} / ${fmt(s.psnr_median, 'db')} | ${fmt(s.ssim_mean, 'ssim')} / ${fmt(s.ssim_median, 'ssim')} | ${fmt(s.kernel_mse_mean, 'mse')} / ${fmt(s.kernel_mse_median, 'mse')} | ${fmt(s.mnc_mean, 'mnc')} / ${fmt(s.mnc_median, 'mnc')} | ${fmt(s.seconds_mean, 's')} / ${fmt(s.seconds_median, 's')} |`),
    '',
    ...(lines.some((l) => l.method === 'a-release') ? [`a-release runs on a seeded subset only (${meta.release_note}).`, ''] : []),
  ].join('\n');
  writeFileSync(`${base}.md`, md);
  return md;
}

function readJsonl(path: string): ResultLine[] {
  if (!existsSync(path)) return [];
  const out: ResultLine[] = [];
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    try { out.push(JSON.parse(line) as ResultLine); } catch { /* a line cut by an interrupted run: skipped, redone */ }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Main.

export const EVAL_DEBLUR_NAME = 'latentdem eval-deblur';
export const EVAL_DEBLUR_USAGE = `usage: latentdem eval-deblur [--pairs pairs.json] [--sigma 0.01,0.02] [--n N] [--offset K]
         [--methods y,a-ours,a-release,b,c,d] [--release-limit M] [--subset-seed S] [--out DIR] [--backend cpu|webgpu]
         [--weights DNCNN.safetensors] [--iters 20] [--tv-iters 10] [--summarize]
         [--prior PATH] [--em-limit M] [--em-steps N] [--em-skip K] [--em-anneal release|paper|none] [--em-seed S]
  Writes OUT/eval-deblur-sigma{S}.{jsonl,json,md} (default OUT bench-results); a rerun skips finished (pair, row) lines.`;

/** \`latentdem eval-deblur\`: resolves with the exit code (errors: one line on stderr). */
export async function evalDeblurCommand(args: readonly string[], io: CliIO): Promise<number> {
  try {
    if (args.includes('--help') || args.includes('-h')) { io.stdout.write(`${EVAL_DEBLUR_USAGE}\n`); return 0; }
    await evalDeblur([...args], io);
    return 0;
  } catch (e) {
    return reportCliError(io, EVAL_DEBLUR_NAME, 'see latentdem eval-deblur --help', e);
  }
}

async function evalDeblur(argv: string[], io: CliIO): Promise<void> {
  const opt = (name: string): string | undefined => { const i = argv.indexOf(`--${name}`); return i >= 0 ? argv[i + 1] : undefined; };
  const num = (name: string, fallback: number): number => {
    const v = opt(name); if (v === undefined) return fallback;
    const n = Number(v); if (!Number.isFinite(n)) throw new CliError(`--${name} needs a number, got '${v}'`);
    return n;
  };
  const pairsFile = resolve(opt('pairs') ?? join(repoRoot, '../shared/data/mstep-eval/pairs.json'));
  if (!existsSync(pairsFile)) throw new CliError(`--pairs ${pairsFile}: no such file`);
  const outDir = resolve(opt('out') ?? join(repoRoot, 'bench-results'));
  const data = await loadEvalData(pairsFile);
  const sigmas = (opt('sigma') ?? data.json.noise_levels.join(',')).split(',').filter((s) => s).map(Number);
  if (!sigmas.length || sigmas.some((s) => !(s >= 0))) throw new CliError(`bad --sigma '${opt('sigma')}'`);
  const offset = num('offset', 0);
  const n = Math.min(data.count - offset, num('n', data.count - offset));
  const methods = (opt('methods') ?? 'y,a-ours,c,d').split(',').filter((m) => m);
  const releaseLimit = num('release-limit', 40);
  const subsetSeed = num('subset-seed', 0);
  const iters = num('iters', HQS_DEFAULTS.iterations);
  const tvIters = num('tv-iters', 10);
  const backendName = opt('backend');
  const summarizeOnly = argv.includes('--summarize');
  const backend = summarizeOnly ? null : backendName ? await initBackend(backendName as 'cpu' | 'webgpu') : await ready();
  const releaseSet = new Set(seededSubset(data.count, releaseLimit, subsetSeed));
  const range = Array.from({ length: n }, (_, i) => offset + i);
  const selection = `pairs ${offset}..${offset + n - 1} of ${data.count} in this run's range`;
  const meta: Record<string, unknown> = {
    date: new Date().toISOString(), backend: backend ? backend.name : 'as run (not recorded per line; the tool was run with --backend webgpu unless noted)', pairs_file: pairsFile, methods, hqs_iterations: iters, tv_iterations: tvIters,
    tv_lambda: `${TV_LAMBDA_PER_SIGMA2} * sigma^2`, kernel_prior_lambda_ours: KERNEL_DNCNN_LAMBDA, kernel_prior_lambda_release: HQS_DEFAULTS.lambda,
    release_note: `the first ${releaseLimit} pairs of a seeded shuffle (seed ${subsetSeed}): [${[...releaseSet].join(',')}]`,
    blind: 'blindDeconvolveTV defaults (BLIND_TV_DEFAULTS), our DnCNN kernel prior (KERNEL_DNCNN_LAMBDA) at the finest level, final TV weight 5 sigma^2',
  };

  if (!backend) {
    for (const sigma of sigmas) {
      const lines = readJsonl(join(outDir, `eval-deblur-sigma${sigma}.jsonl`));
      meta.selection = `${new Set(lines.map((l) => l.pair)).size} pairs`;
      io.stdout.write(writeOutputs(outDir, sigma, lines, meta) + '\n');
    }
    return;
  }

  // The rows: name -> function. Row 'b' (the EM) is added here.
  const rows: Record<string, Row> = {};
  for (const m of methods) {
    if (m === 'y') rows.y = async ({ y }) => ({ image: Float32Array.from(await y.data()), seconds: 0 });
    else if (m === 'a-ours') {
      const net = await loadDnCNN(opt('weights') ?? DEFAULT_KERNEL_DENOISER, { backend });
      rows[m] = mstepRow(dncnnPrior(net), KERNEL_DNCNN_LAMBDA, iters, tvIters);
    } else if (m === 'a-release') {
      const net = new DnCNN(RELEASE_FDNCNN, { backend });
      net.loadStateDict(await loadTorchCheckpoint(join(data.dir, '..', 'latentdem-release', 'kernel_denoiser_fdncnn_nb20_nc64.pth'), { backend, allowModuleRecords: true }));
      net.eval();
      rows[m] = mstepRow(dncnnPrior(net), HQS_DEFAULTS.lambda, iters, tvIters);
    } else if (m === 'c') {
      rows.c = async ({ pair, y, sigma, ks, backend: b }) => {
        const t0 = performance.now();
        const k = tensor(pair.kTrue, { shape: [ks, ks], backend: b });
        const img = deconvolveTV(y, k, { lambda: tvLambda(sigma), iterations: tvIters });
        k.dispose();
        const image = await readAndFree(img);
        return { image, seconds: (performance.now() - t0) / 1000 };
      };
    } else if (m === 'd') {
      const net = await loadDnCNN(opt('weights') ?? DEFAULT_KERNEL_DENOISER, { backend });
      const prior = dncnnPrior(net);
      rows.d = async ({ y, sigma, ks }) => {
        const t0 = performance.now();
        const r = await blindDeconvolveTV(y, { sigma, kernelSize: ks, prior, priorLambda: KERNEL_DNCNN_LAMBDA, final: { lambda: tvLambda(sigma), iterations: tvIters } });
        const kernel = await readAndFree(r.kernel);
        const image = await readAndFree(r.image);
        return { image, kernel, seconds: (performance.now() - t0) / 1000 };
      };
    } else if (m === 'b') {
      const prior = await loadPrior(opt('prior') ?? join(repoRoot, 'weights/fixture-small'), { backend });
      const emSteps = num('em-steps', 1000);
      const emSkip = num('em-skip', 0);
      const anneal = (opt('em-anneal') ?? 'release') as AnnealKind;
      if (!['release', 'paper', 'none'].includes(anneal)) throw new CliError(`--em-anneal must be release, paper or none, got '${anneal}'`);
      const emSeed = num('em-seed', 0);
      rows.b = async ({ y, sigma, ks }) => {
        const t0 = performance.now();
        const y11 = tidy(() => y.mul(2).sub(1));
        const r = await deblur({ prior, y: y11, steps: emSteps, kernelSize: ks, sigma: 2 * sigma, anneal, seed: emSeed, skip: emSkip > 0 ? { every: emSkip } : false });
        y11.dispose();
        const kernel = await readAndFree(r.kernel);
        const img = tidy(() => r.image.add(1).div(2));
        r.image.dispose();
        const image = await readAndFree(img);
        return { image, kernel, seconds: (performance.now() - t0) / 1000 };
      };
      meta.em = { prior: prior.name, steps: emSteps, skip: emSkip, anneal, seed: emSeed, limit: num('em-limit', 40) };
    } else throw new CliError(`unknown row '${m}' (y, a-ours, a-release, b, c, d)`);
  }

  mkdirSync(outDir, { recursive: true });
  const jsonl = (sigma: number): string => join(outDir, `eval-deblur-sigma${sigma}.jsonl`);
  const done = new Map<number, Set<string>>(sigmas.map((s) => [s, new Set(readJsonl(jsonl(s)).map((l) => `${l.pair}/${l.method}`))]));
  const emSet = new Set(seededSubset(data.count, num('em-limit', 40), subsetSeed));
  const wanted = (j: number, m: string): boolean => (m === 'a-release' ? releaseSet.has(j) : m === 'b' ? emSet.has(j) : true);
  const todo = range.filter((j) => sigmas.some((s) => methods.some((m) => wanted(j, m) && !done.get(s)!.has(`${j}/${m}`))));
  const tty = io.stderr.isTTY === true && !process.env.CI;
  const cache = new Map<string, { x: Tensor; xData: Float32Array }>();
  const t0 = performance.now();
  for (let i = 0; i < todo.length; i++) {
    const pair = await loadPair(data, todo[i], backend, cache);
    for (const sigma of sigmas) {
      const y = measurement(pair, sigma, data.ks);
      for (const m of methods) {
        if (!wanted(pair.id, m) || done.get(sigma)!.has(`${pair.id}/${m}`)) continue;
        const r = await rows[m]({ pair, y, sigma, ks: data.ks, backend });
        let img: Float32Array | null = null;
        if (r.image) { img = r.image; for (let q = 0; q < img.length; q++) img[q] = Math.min(1, Math.max(0, img[q])); }
        const line: ResultLine = {
          pair: pair.id, sigma, method: m,
          psnr: img ? psnr(img, pair.xData) : null, ssim: img ? ssim(img, pair.xData, pair.x.shape) : null,
          kernel_mse: r.kernel ? kernelMse(r.kernel, pair.kTrue) : null, mnc: r.kernel ? mnc(r.kernel, pair.kTrue) : null,
          seconds: r.seconds,
        };
        appendFileSync(jsonl(sigma), JSON.stringify(line) + '\n');
      }
      y.dispose();
    }
    if (tty) {
      const el = (performance.now() - t0) / 1000; const per = el / (i + 1);
      io.stderr.write(`\reval-deblur: pair ${i + 1}/${todo.length} (#${todo[i]}), ${per.toFixed(2)} s/pair, ETA ${((todo.length - i - 1) * per / 60).toFixed(1)} min   `);
    }
  }
  for (const v of cache.values()) v.x.dispose();
  if (tty) io.stderr.write('\n');
  for (const sigma of sigmas) {
    const lines = readJsonl(jsonl(sigma));
    meta.selection = `${new Set(lines.map((l) => l.pair)).size} pairs in ${jsonl(sigma).replace(/.*\//, '')} (this run: ${selection}, ${todo.length} to do)`;
    io.stdout.write(writeOutputs(outDir, sigma, lines, meta) + '\n');
  }
}

