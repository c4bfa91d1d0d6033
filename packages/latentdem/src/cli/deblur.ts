/**
 * `latentdem deblur IN.png --out OUT.png [options]`: blind deblurring of a photo with LatentDEM.
 *
 * Outputs (none is overwritten without --force; the command refuses before any heavy work and lists them):
 *   OUT.png                    the restored image at the input's size (gray in, gray out)
 *   K.png / K.safetensors      the estimated kernel: a PNG scaled for viewing (divided by its maximum, enlarged by
 *                              an integer factor to at least 256 px) and the raw [ks, ks] kernel (key "kernel", F32)
 *                              (default K = OUT-stem.kernel)
 *   OUT-stem.json (--record)   settings, per-step losses and timings (deblur's record), paths, sizes, prior, wall time
 *   T.json (--trace)           the op trace (Chrome trace-event format)
 *   DIR/step-NNNNNN.png        with --save-every N DIR: the decoded x0 beside the kernel at steps i % N == 0 and the last
 *
 * The photo (PNG: gray, RGB; alpha refused unless --drop-alpha; any bit depth) goes through prepareMeasurement:
 * downscaled when its longer side exceeds --size (the kernel is then estimated at that scale), reflect-padded to
 * the prior's spatial multiple, and restored to its size on output. Progress on stderr: a line
 * `step i/N  x.xx steps/s  ETA mm:ss  loss ...` rewritten in place when stderr is a terminal and CI is not set,
 * else one summary line at the end. Exit codes: 0 ok, 1 error (one line on stderr).
 */
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { basename, dirname, extname, join, resolve } from 'node:path';
import * as L from '@latentdem/tensor';
import { saveSafetensors } from '@latentdem/nn';
import { loadPrior } from '../prior.js';
import type { LatentPrior } from '../prior.js';
import { deblur } from '../deblur/deblur.js';
import type { DeblurOptions, DeblurStep } from '../deblur/deblur.js';
import { prepareMeasurement, workingSize } from '../deblur/measurement.js';
import { CliError, UsageError, checkOutputs, choiceOption, clock, intOption, numberOption, parseArgs, processIO, reportCliError } from './common.js';
import type { CliIO, OptionSpec } from './common.js';

export const DEBLUR_NAME = 'latentdem deblur';
export const DEBLUR_USAGE = `usage: latentdem deblur IN.png --out OUT.png [--weights PATH] [--kernel-out K.png] [--record R.json]
         [--steps N] [--skip K [--skip-cutoff C]] [--anneal release|paper|none] [--size S] [--kernel-size KS]
         [--seed S] [--sigma V] [--e-step psld|resample] [--kernel-prior dncnn|none] [--trace T.json]
         [--save-every N DIR] [--backend cpu|webgpu] [--pad reflect|replicate] [--drop-alpha] [--force]
  --weights PATH    SD 1.5 safetensors (original keys) or a prior.json / a directory holding one (e.g. weights/fixture-small)
  --steps N         DDIM steps (default 1000)        --skip K   full E+M step every K indices, else a plain prior step (0 = off, default)
  --anneal          data-term annealing (default release)  --size S   largest working side (default 512)
  --kernel-size KS  estimated kernel side (default 64)     --sigma V  noise std of y in [-1,1] units (default: deblur's, 0.02)`;

const NO_DEFAULT_PRIOR = 'no default prior is shipped yet: pass --weights (SD 1.5 safetensors or a prior.json, e.g. weights/fixture-small)';

const SPEC: Record<string, OptionSpec> = {
  out: { value: true }, 'kernel-out': { value: true }, record: { value: true }, weights: { value: true },
  steps: { value: true }, skip: { value: true }, 'skip-cutoff': { value: true }, anneal: { value: true },
  size: { value: true }, 'kernel-size': { value: true }, seed: { value: true }, sigma: { value: true },
  'e-step': { value: true }, 'kernel-prior': { value: true }, trace: { value: true },
  'save-every': { value: true, arity: 2 }, backend: { value: true }, pad: { value: true },
  'drop-alpha': { value: false }, force: { value: false }, help: { value: false }, h: { value: false },
};

export interface DeblurCliOptions {
  input: string;
  out: string;
  kernelOut: string;
  kernelRaw: string;
  record: string;
  weights?: string;
  steps: number;
  skip: number;
  /** Default: deblur's (40 at 1000 steps, scaled with the step count). */
  skipCutoff?: number;
  anneal: 'release' | 'paper' | 'none';
  size: number;
  kernelSize: number;
  seed?: number;
  sigma?: number;
  eStep?: 'psld' | 'resample';
  kernelPrior?: 'dncnn' | 'none';
  trace?: string;
  saveEvery?: { every: number; dir: string };
  backend?: 'cpu' | 'webgpu';
  pad: 'reflect' | 'replicate';
  dropAlpha: boolean;
  force: boolean;
}

const stem = (p: string): string => join(dirname(p), basename(p, extname(p)));

function requirePng(name: string, p: string): void {
  if (extname(p).toLowerCase() !== '.png') throw new UsageError(`--${name} must name a .png file, got ${p}`);
}

/** The command line -> options (UsageError for anything malformed). */
export function parseDeblurArgs(argv: readonly string[]): DeblurCliOptions | 'help' {
  const { positional, options } = parseArgs(argv, SPEC);
  if (options.has('help') || options.has('h')) return 'help';
  const get = (k: string): string | undefined => options.get(k)?.[0];
  if (positional.length !== 1) throw new UsageError(positional.length ? `expected one input PNG, got ${positional.length}: ${positional.join(' ')}` : 'no input PNG given');
  const out = get('out');
  if (!out) throw new UsageError('--out OUT.png is required');
  requirePng('out', out);
  const kernelOut = get('kernel-out') ?? `${stem(out)}.kernel.png`;
  requirePng('kernel-out', kernelOut);
  const record = get('record') ?? `${stem(out)}.json`;
  if (extname(record).toLowerCase() !== '.json') throw new UsageError(`--record must name a .json file, got ${record}`);
  const trace = get('trace');
  if (trace !== undefined && extname(trace).toLowerCase() !== '.json') throw new UsageError(`--trace must name a .json file, got ${trace}`);
  const se = options.get('save-every');
  const skip = get('skip') !== undefined ? intOption('skip', get('skip')!, 0) : 0;
  if (get('skip-cutoff') !== undefined && skip === 0) throw new UsageError('--skip-cutoff only applies with --skip K > 0');
  return {
    input: positional[0], out, kernelOut, kernelRaw: `${stem(kernelOut)}.safetensors`, record,
    weights: get('weights'),
    steps: get('steps') !== undefined ? intOption('steps', get('steps')!, 1, 1000) : 1000,
    skip,
    skipCutoff: get('skip-cutoff') !== undefined ? intOption('skip-cutoff', get('skip-cutoff')!, 0) : undefined,
    anneal: get('anneal') !== undefined ? choiceOption('anneal', get('anneal')!, ['release', 'paper', 'none'] as const) : 'release',
    size: get('size') !== undefined ? intOption('size', get('size')!, 8) : 512,
    kernelSize: get('kernel-size') !== undefined ? intOption('kernel-size', get('kernel-size')!, 3) : 64,
    seed: get('seed') !== undefined ? intOption('seed', get('seed')!, 0, 2 ** 32 - 1) : undefined,
    sigma: get('sigma') !== undefined ? numberOption('sigma', get('sigma')!, 0) : undefined,
    eStep: get('e-step') !== undefined ? choiceOption('e-step', get('e-step')!, ['psld', 'resample'] as const) : undefined,
    kernelPrior: get('kernel-prior') !== undefined ? choiceOption('kernel-prior', get('kernel-prior')!, ['dncnn', 'none'] as const) : undefined,
    trace,
    saveEvery: se ? { every: intOption('save-every', se[0], 1), dir: se[1] } : undefined,
    backend: get('backend') !== undefined ? choiceOption('backend', get('backend')!, ['cpu', 'webgpu'] as const) : undefined,
    pad: get('pad') !== undefined ? choiceOption('pad', get('pad')!, ['reflect', 'replicate'] as const) : 'reflect',
    dropAlpha: options.has('drop-alpha'),
    force: options.has('force'),
  };
}

/** The sheet files --save-every N DIR writes for a run of `steps` steps. */
export function sheetPaths(dir: string, every: number, steps: number): string[] {
  const out: string[] = [];
  for (let i = 0; i < steps; i++) if (i % every === 0 || i === steps - 1) out.push(sheetPath(dir, i));
  return out;
}

const sheetPath = (dir: string, i: number): string => join(dir, `step-${String(i).padStart(6, '0')}.png`);

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

export interface PngHeader { width: number; height: number; bitDepth: number; colorType: number; alpha: boolean }

/** Width, height, colour type and whether the PNG carries alpha (colour type 4 or 6, or a tRNS chunk); null if not a PNG. */
export function readPngHeader(bytes: Uint8Array): PngHeader | null {
  if (bytes.length < 33 || PNG_SIGNATURE.some((b, i) => bytes[i] !== b)) return null;
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (String.fromCharCode(...bytes.subarray(12, 16)) !== 'IHDR') return null;
  const width = dv.getUint32(16), height = dv.getUint32(20), bitDepth = bytes[24], colorType = bytes[25];
  let alpha = colorType === 4 || colorType === 6;
  for (let p = 8; p + 8 <= bytes.length;) {
    const len = dv.getUint32(p);
    const type = String.fromCharCode(...bytes.subarray(p + 4, p + 8));
    if (type === 'tRNS') alpha = true;
    if (type === 'IDAT' || type === 'IEND') break;
    p += 12 + len;
  }
  return { width, height, bitDepth, colorType, alpha };
}

const COLOR_NAMES: Record<number, string> = { 0: 'gray', 2: 'RGB', 3: 'palette', 4: 'gray + alpha', 6: 'RGBA' };

/** Reads and validates the input PNG on the cpu backend (cheap, before any weights are loaded). */
function readInput(path: string, dropAlpha: boolean): { image: L.Tensor; header: PngHeader } {
  if (!existsSync(path)) throw new CliError(`${path}: no such file`);
  if (statSync(path).isDirectory()) throw new CliError(`${path}: is a directory, not a PNG file`);
  let bytes: Buffer;
  try { bytes = readFileSync(path); } catch (e) { throw new CliError(`${path}: cannot read the file (${(e as Error).message})`); }
  const header = readPngHeader(bytes);
  if (!header) throw new CliError(`${path}: not a PNG file`);
  if (header.alpha && !dropAlpha) {
    const what = COLOR_NAMES[header.colorType] ?? `colour type ${header.colorType}`;
    throw new CliError(`${path}: unsupported channels: ${what} PNG with ${header.colorType === 4 || header.colorType === 6 ? 'an alpha channel' : 'transparency (tRNS)'}; flatten it onto a background, or pass --drop-alpha to ignore the alpha`);
  }
  let image: L.Tensor;
  try { image = L.fromPng(bytes, { backend: 'cpu' }); } catch (e) {
    throw new CliError(`${path}: a corrupt or unsupported PNG (${(e as Error).message.replace(/^decodePng\([^)]*\): /, '')})`);
  }
  return { image, header };
}

/** [3|1, H, W] in [0, 1] -> a view sheet: the image, a white gap, and the kernel scaled by its max (nearest, integer factor). */
function sheet(img: Float32Array, c: number, h: number, w: number, k: Float32Array, ks: number): { data: Float32Array; shape: number[] } {
  const f = Math.max(1, Math.floor(h / ks));
  const kside = ks * f, gap = 4;
  const H = Math.max(h, kside), W = w + gap + kside;
  const data = new Float32Array(3 * H * W).fill(1);
  for (let ch = 0; ch < 3; ch++) {
    const src = c === 3 ? ch : 0;
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) data[ch * H * W + y * W + x] = img[src * h * w + y * w + x];
  }
  let kmax = 0;
  for (const v of k) kmax = Math.max(kmax, v);
  const inv = kmax > 0 ? 1 / kmax : 0;
  for (let y = 0; y < kside; y++) for (let x = 0; x < kside; x++) {
    const v = k[Math.floor(y / f) * ks + Math.floor(x / f)] * inv;
    for (let ch = 0; ch < 3; ch++) data[ch * H * W + y * W + w + gap + x] = v;
  }
  return { data, shape: [3, H, W] };
}

/** The kernel as a viewing PNG: divided by its max, enlarged by an integer factor to at least 256 px. */
function kernelView(k: Float32Array, ks: number): { data: Float32Array; shape: number[] } {
  const f = Math.max(1, Math.ceil(256 / ks));
  const s = ks * f;
  let kmax = 0;
  for (const v of k) kmax = Math.max(kmax, v);
  const inv = kmax > 0 ? 1 / kmax : 0;
  const data = new Float32Array(s * s);
  for (let y = 0; y < s; y++) for (let x = 0; x < s; x++) data[y * s + x] = k[Math.floor(y / f) * ks + Math.floor(x / f)] * inv;
  return { data, shape: [1, s, s] };
}

async function writePngData(path: string, d: { data: Float32Array; shape: number[] }): Promise<void> {
  const t = L.tensor(d.data, { shape: d.shape, backend: 'cpu' });
  try { await L.writeImage(path, t); } finally { t.dispose(); }
}

function fmtLoss(v: number | undefined): string { return v === undefined ? '-' : Math.abs(v) >= 1e4 || (v !== 0 && Math.abs(v) < 1e-3) ? v.toExponential(3) : v.toFixed(4); }

/** The command; resolves with the exit code. */
export async function deblurCommand(argv: readonly string[], io: CliIO = processIO()): Promise<number> {
  const t0 = performance.now();
  let prior: LatentPrior | null = null;
  let tracing = false;
  try {
    const parsed = parseDeblurArgs(argv);
    if (parsed === 'help') { io.stdout.write(`${DEBLUR_USAGE}\n`); return 0; }
    const o = parsed;
    // 1. Outputs, before anything heavy.
    const outputs = [o.out, o.kernelOut, o.kernelRaw, o.record, ...(o.trace ? [o.trace] : []), ...(o.saveEvery ? sheetPaths(o.saveEvery.dir, o.saveEvery.every, o.steps) : [])];
    if (!existsSync(o.input)) throw new CliError(`${o.input}: no such file`);
    checkOutputs(outputs, [o.input], o.force);
    if (o.saveEvery && existsSync(o.saveEvery.dir) && !statSync(o.saveEvery.dir).isDirectory()) throw new CliError(`--save-every ${o.saveEvery.dir}: exists and is not a directory`);
    for (const p of outputs) {
      const d = dirname(resolve(p));
      if (o.saveEvery && d === resolve(o.saveEvery.dir)) continue;
      if (!existsSync(d)) throw new CliError(`${p}: the directory ${dirname(p)} does not exist`);
    }
    // 2. The input image and its size.
    const { image: cpuImage, header } = readInput(o.input, o.dropAlpha);
    const [C, H, W] = cpuImage.shape;
    const minSide = 2 * o.kernelSize;
    const work = workingSize(H, W, o.size);
    if (Math.min(work.height, work.width) < minSide) {
      cpuImage.dispose();
      const at = work.resized ? ` (${work.width}x${work.height} at the working size --size ${o.size})` : '';
      throw new CliError(`${o.input}: image ${W}x${H}${at} is too small: each side must be at least ${minSide} px (twice --kernel-size ${o.kernelSize})`);
    }
    // 3. The prior.
    if (o.weights === undefined) { cpuImage.dispose(); throw new CliError(NO_DEFAULT_PRIOR); }
    if (!existsSync(o.weights)) { cpuImage.dispose(); throw new CliError(`--weights ${o.weights}: no such file or directory`); }
    const backend = o.backend ? await L.setBackend(o.backend) : await L.ready();
    const tLoad = performance.now();
    prior = await loadPrior(o.weights, { backend });
    const loadSeconds = (performance.now() - tLoad) / 1000;
    const latentMultiple = prior.latentMultiple;
    const multiple = prior.factor * latentMultiple;
    const image = L.tensor(await cpuImage.data(), { shape: [C, H, W], backend: prior.backend });
    cpuImage.dispose();
    const prepared = (() => {
      try { return prepareMeasurement(image, { factor: multiple, size: o.size, minSide, pad: o.pad }); } catch (e) {
        // Only the prior's spatial multiple can fail here (the kernel-size minimum was checked above).
        if (e instanceof L.ShapeError) throw new CliError(`${o.input}: ${e.message.replace(/^prepareMeasurement: /, '')} (the prior's spatial multiple is ${multiple})`);
        throw e;
      } finally { image.dispose(); }
    })();
    const info = prepared.info;
    const y = prepared.y;

    // 4. Progress, sheets, trace.
    const ci = (io.env ?? {}).CI;
    const live = !!io.stderr.isTTY && (ci === undefined || ci === '' || ci === '0' || ci.toLowerCase() === 'false');
    let tStart = performance.now();
    let lastLine = '';
    const stepsLog: { i: number; m?: number; g?: number }[] = [];
    const onStep = async (s: DeblurStep): Promise<void> => {
      if (s.i === 0) tStart = performance.now() - s.seconds * 1000;
      const done = s.i + 1;
      const elapsed = (performance.now() - tStart) / 1000;
      const rate = elapsed > 0 ? done / elapsed : 0;
      stepsLog.push({ i: s.i, m: s.losses.measurement, g: s.losses.gluing });
      if (live) {
        lastLine = `step ${done}/${s.steps}  ${rate.toFixed(2)} steps/s  ETA ${clock(rate > 0 ? (s.steps - done) / rate : NaN)}  loss m ${fmtLoss(s.losses.measurement)} g ${fmtLoss(s.losses.gluing)}`;
        io.stderr.write(`\r${lastLine}\x1b[K`);
      }
      if (o.saveEvery && (s.i % o.saveEvery.every === 0 || s.i === s.steps - 1)) {
        mkdirSync(o.saveEvery.dir, { recursive: true });
        const x0 = s.x0 ?? L.noGrad(() => prior!.decode(s.z0));
        try {
          const crop = L.noGrad(() => L.tidy(() => x0.reshape(x0.shape.slice(-3)).narrow(1, 0, info.workHeight).narrow(2, 0, info.workWidth).add(1).div(2).clamp(0, 1).contiguous()));
          const [img, k] = [await crop.data(), await s.kernel.data()];
          crop.dispose();
          await writePngData(sheetPath(o.saveEvery.dir, s.i), sheet(new Float32Array(img), 3, info.workHeight, info.workWidth, new Float32Array(k), s.kernel.shape[0]));
        } finally {
          if (x0 !== s.x0) x0.dispose();
        }
      }
    };
    if (o.trace) { L.startTrace(); tracing = true; }
    const dopts: DeblurOptions = {
      prior, y, steps: o.steps, anneal: o.anneal, kernelSize: o.kernelSize, onStep,
      skip: o.skip > 0 ? { every: o.skip, ...(o.skipCutoff !== undefined ? { cutoff: o.skipCutoff } : {}) } : false,
      ...(o.seed !== undefined ? { seed: o.seed } : {}),
      ...(o.sigma !== undefined ? { sigma: o.sigma } : {}),
      ...(o.eStep ? { eStep: o.eStep } : {}),
      ...(o.kernelPrior ? { kernelPrior: o.kernelPrior } : {}),
    };
    let result;
    try {
      result = await deblur(dopts);
    } finally {
      if (live && lastLine) io.stderr.write('\n');
      y.dispose();
    }
    const events = tracing ? L.stopTrace() : null;
    tracing = false;
    const runSeconds = (performance.now() - tStart) / 1000;

    // 5. Outputs.
    const restored = prepared.restore(result.image);
    const final = info.channels === 1 ? L.tidy(() => restored.mean(0, { keepdim: true })) : restored;
    if (final !== restored) restored.dispose();
    await L.writeImage(o.out, final);
    final.dispose();
    const ks = result.kernel.shape[0];
    const kdata = new Float32Array(await result.kernel.data());
    await writePngData(o.kernelOut, kernelView(kdata, ks));
    const kcpu = L.tensor(kdata, { shape: [ks, ks], backend: 'cpu' });
    await saveSafetensors(o.kernelRaw, { kernel: kcpu }, {
      overwrite: true,
      metadata: { format: 'latentdem-kernel/1', source: 'latentdem deblur', input: o.input, note: `kernel at the working scale ${info.scale}; p2o centre (${Math.floor(ks / 2)}, ${Math.floor(ks / 2)})` },
    });
    kcpu.dispose();
    result.image.dispose();
    result.kernel.dispose();
    if (events && o.trace) writeFileSync(o.trace, JSON.stringify(L.traceToChrome(events)));
    const wall = (performance.now() - t0) / 1000;
    const record = {
      command: 'latentdem deblur',
      argv: [...argv],
      input: { path: o.input, width: W, height: H, channels: C, pngColorType: COLOR_NAMES[header.colorType] ?? header.colorType, bitDepth: header.bitDepth },
      outputs: { image: o.out, kernelPng: o.kernelOut, kernel: o.kernelRaw, record: o.record, ...(o.trace ? { trace: o.trace } : {}), ...(o.saveEvery ? { sheets: o.saveEvery.dir, every: o.saveEvery.every } : {}) },
      prior: { name: prior.name, weights: o.weights, factor: prior.factor, latentMultiple, spatialMultiple: multiple, backend: prior.backend.name },
      measurement: info,
      cli: { steps: o.steps, skip: o.skip, skipCutoff: o.skipCutoff ?? null, anneal: o.anneal, size: o.size, kernelSize: o.kernelSize, seed: o.seed ?? null, sigma: o.sigma ?? null, eStep: o.eStep ?? null, kernelPrior: o.kernelPrior ?? null, pad: o.pad },
      settings: result.record.settings,
      steps: result.record.steps,
      seconds: { ...result.record.seconds, load: loadSeconds, run: runSeconds, wall },
    };
    writeFileSync(o.record, `${JSON.stringify(record, null, 1)}\n`);
    prior.dispose();
    prior = null;
    io.stderr.write(`${DEBLUR_NAME}: ${o.steps} steps in ${clock(runSeconds)} (${(o.steps / Math.max(runSeconds, 1e-9)).toFixed(2)} steps/s)${stepsLog.length ? `, last loss m ${fmtLoss(stepsLog[stepsLog.length - 1].m)} g ${fmtLoss(stepsLog[stepsLog.length - 1].g)}` : ''}\n`);
    io.stdout.write(`${DEBLUR_NAME}: ${W}x${H} -> ${o.out} (kernel ${ks}x${ks}: ${o.kernelOut}, ${o.kernelRaw}; record ${o.record})\n`);
    return 0;
  } catch (e) {
    if (tracing) L.stopTrace();
    return reportCliError(io, DEBLUR_NAME, 'see latentdem deblur --help', e);
  } finally {
    prior?.dispose();
  }
}
