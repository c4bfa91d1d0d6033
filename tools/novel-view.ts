/**
 * Zero123 novel-view synthesis: given one view of an object and a relative camera pose, samples the view from
 * the new pose (cvlab-columbia/zero123, gradio_new.py `sample_model`, lines 75-110).
 *
 *   node --conditions=latentdem-src --import tsx tools/novel-view.ts IN.png --weights W.safetensors --out OUT.png
 *        --polar DEG --azimuth DEG [--radius R] [--steps N] [--scale S] [--eta E] [--seed S]
 *        [--backend cpu|webgpu] [--config zero123|PATH.json] [--overwrite]
 *
 * W: a converted Zero123 checkpoint in the original (CompVis) layout, e.g. tools/convert.ts's output for
 * zero123's `105000.ckpt`: `model.diffusion_model.*` (the 8-channel UNet), `cc_projection.*`,
 * `first_stage_model.*` (SD's KL-f8 VAE) and `cond_stage_model.model.visual.*` (CLIP ViT-L/14); other keys
 * are ignored. The demo samples with the EMA weights when a checkpoint has them (`model.ema_scope()`,
 * gradio_new.py:79): convert `model_ema.*` into `model.diffusion_model.*` to reproduce it.
 * Pose (the demo's sliders, gradio_new.py:537-545, and presets, l.638-655): --polar and --azimuth are CHANGES in
 * degrees; polar +90 is the view from below, -90 from above; azimuth +90 from the right, -90 from the left, 180
 * from behind; --radius is the change of camera distance (the demo's zoom, -0.5..0.5; positive = further away).
 * The model sees [radians(polar), sin(az), cos(az), radius] (gradio_new.py:81-82). IN: an RGB PNG of the object on a WHITE
 * background, ideally square and centred (the demo removes the background and recentres first; transparent
 * PNGs must be composited onto white beforehand: the PNG reader drops alpha). It is resized to the model's
 * size (256x256) when it differs, with PIL's antialiased Lanczos-3 resampling as the demo does without its
 * background removal (`input_im.resize([256, 256], Image.Resampling.LANCZOS)`, gradio_new.py:290), minus PIL's
 * 8-bit rounding.
 * Defaults as the demo's `main_run` (gradio_new.py:315): --steps 50, --scale 3, --eta 1. --config: zero123
 * (default: the released model) or a JSON file { zero123: {unet, clip_dim}, vae: {ddconfig, embed_dim},
 * clip_vision: {input_resolution, ...}, image_size }. Exit codes: 0 ok, 1 error (one line on stderr).
 */
import { existsSync, readFileSync } from 'node:fs';
import * as L from '@latentdem/tensor';
import { SafetensorsFile, StateDictError, loadWeights, withoutInit } from '@latentdem/nn';
import {
  AutoencoderKL, ClipVisionEncoder, SD15_VAE_CONFIG, Schedule, ZERO123_CLIP_VISION_CONFIG, ZERO123_CLIP_VISION_PREFIX, ZERO123_CONFIG,
  ZERO123_DDIM_ETA, ZERO123_GUIDANCE_SCALE, ZERO123_IMAGE_SIZE, Zero123, conditionOnImage, loadZero123Weights, sample,
} from '@latentdem/diffusion';
import type { AutoencoderKLConfig, ClipVisionConfig, RelativePose, Zero123Config } from '@latentdem/diffusion';
import { UsageError, reportCliError, runIfScript } from './cli.js';

const NAME = 'novel-view';
const USAGE = `usage: ${NAME} IN.png --weights W.safetensors --out OUT.png --polar DEG --azimuth DEG [--radius R] [--steps N] [--scale S] [--eta E] [--seed S] [--backend cpu|webgpu] [--config zero123|PATH.json] [--overwrite]`;
const VAE_PREFIX = 'first_stage_model.';

/** Everything the command needs to build the three models. */
export interface NovelViewConfig {
  zero123: Zero123Config;
  vae: AutoencoderKLConfig;
  clip_vision: ClipVisionConfig;
  /** Side of the (square) images the model works on; a multiple of the VAE's downsampling factor. */
  image_size: number;
}

/** The released Zero123 (configs/sd-objaverse-finetune-c_concat-256.yaml): its UNet, SD's VAE (yaml l.45-64), ViT-L/14, 256 px. */
export const ZERO123_NOVEL_VIEW_CONFIG: NovelViewConfig = { zero123: ZERO123_CONFIG, vae: SD15_VAE_CONFIG, clip_vision: ZERO123_CLIP_VISION_CONFIG, image_size: ZERO123_IMAGE_SIZE };

export interface NovelViewOptions {
  input: string;
  weights: string;
  out: string;
  pose: RelativePose;
  /** DDIM steps (default 50). */
  steps?: number;
  /** Guidance scale (default 3). */
  scale?: number;
  /** DDIM eta (default 1, the demo's). */
  eta?: number;
  seed?: number;
  backend?: 'cpu' | 'webgpu';
  /** 'zero123' (default), a config object, or a JSON file path. */
  config?: 'zero123' | string | NovelViewConfig;
  overwrite?: boolean;
  /** Called after each DDIM step (1-based). */
  onStep?: (step: number, of: number) => void;
}

export interface NovelViewResult { out: string; size: number; latentShape: number[]; resized: boolean; seconds: number }


/**
 * PIL's resampling matrix [nOut, nIn] for the Lanczos-3 filter (Pillow src/libImaging/Resample.c,
 * `precompute_coeffs`): scale = in / out, the filter widened by max(scale, 1) when downscaling (antialias),
 * output i centred at (i + 0.5) scale, taps x in [round(centre - support), round(centre + support)) clipped
 * to the image, weights lanczos((x - centre + 0.5) / max(scale, 1)) normalized to sum 1.
 */
export function lanczosMatrix(nIn: number, nOut: number): Float32Array {
  const a = 3;
  const sinc = (x: number): number => (x === 0 ? 1 : Math.sin(Math.PI * x) / (Math.PI * x));
  const lanczos = (x: number): number => (x > -a && x < a ? sinc(x) * sinc(x / a) : 0);
  const scale = nIn / nOut;
  const fs = Math.max(scale, 1);
  const support = a * fs;
  const m = new Float32Array(nOut * nIn);
  for (let i = 0; i < nOut; i++) {
    const centre = (i + 0.5) * scale;
    const lo = Math.max(Math.trunc(centre - support + 0.5), 0);
    const hi = Math.min(Math.trunc(centre + support + 0.5), nIn);
    let sum = 0;
    const w: number[] = [];
    for (let x = lo; x < hi; x++) { const v = lanczos((x - centre + 0.5) / fs); w.push(v); sum += v; }
    for (let x = lo; x < hi; x++) m[i * nIn + x] = sum !== 0 ? w[x - lo] / sum : 0;
  }
  return m;
}

/** Resizes an image [C, H, W] to [C, h, w] with lanczosMatrix along each axis. */
function resizeLanczos(x: L.Tensor, h: number, w: number): L.Tensor {
  const [, H, W] = x.shape;
  const mh = L.tensor(lanczosMatrix(H, h), { shape: [h, H], backend: x.backend });
  const mwT = L.tensor(lanczosMatrix(W, w), { shape: [w, W], backend: x.backend }).transpose();
  return mh.matmul(x.matmul(mwT));
}

function readConfig(c: NovelViewOptions['config']): NovelViewConfig {
  if (c === undefined || c === 'zero123') return ZERO123_NOVEL_VIEW_CONFIG;
  if (typeof c !== 'string') return c;
  if (!existsSync(c)) throw new UsageError(`--config ${c}: no such file (use zero123 or a JSON file)`);
  let json: unknown;
  try { json = JSON.parse(readFileSync(c, 'utf8')); } catch (e) { throw new UsageError(`--config ${c}: not JSON (${(e as Error).message})`); }
  const o = json as Partial<NovelViewConfig> | null;
  const missing = (['zero123', 'vae', 'clip_vision', 'image_size'] as const).filter((k) => !o || typeof o !== 'object' || o[k] === undefined);
  if (missing.length) throw new UsageError(`--config ${c}: needs { zero123: {unet, clip_dim}, vae: {ddconfig, embed_dim}, clip_vision: {...}, image_size }; missing ${missing.join(', ')}`);
  return o as NovelViewConfig;
}

function positiveInt(name: string, v: number | undefined, dflt: number): number {
  const n = v ?? dflt;
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`${name} must be a positive integer, got ${n}`);
  return n;
}

/** Renders the novel view and writes `o.out`. */
export async function novelView(o: NovelViewOptions): Promise<NovelViewResult> {
  const start = Date.now();
  if (!existsSync(o.input)) throw new UsageError(`${o.input}: no such file`);
  if (!existsSync(o.weights)) throw new UsageError(`--weights ${o.weights}: no such file`);
  if (existsSync(o.out) && !o.overwrite) throw new UsageError(`${o.out} exists; pass --overwrite to replace it`);
  for (const k of ['polar', 'azimuth', 'radius'] as const) {
    if (!Number.isFinite(o.pose?.[k])) throw new UsageError(`--${k} must be a number, got ${String(o.pose?.[k])}`);
  }
  const steps = positiveInt('--steps', o.steps, 50);
  if (steps > 1000) throw new UsageError(`--steps must be at most 1000, got ${steps}`);
  const scale = o.scale ?? ZERO123_GUIDANCE_SCALE;
  if (!Number.isFinite(scale)) throw new UsageError(`--scale must be a number, got ${scale}`);
  const eta = o.eta ?? ZERO123_DDIM_ETA;
  if (!(eta >= 0)) throw new UsageError(`--eta must be >= 0, got ${eta}`);
  const seed = o.seed ?? 0;
  if (!Number.isInteger(seed) || seed < 0) throw new UsageError(`--seed must be a non-negative integer, got ${seed}`);
  const cfg = readConfig(o.config);
  const size = positiveInt('image_size', cfg.image_size, ZERO123_IMAGE_SIZE);

  const backend = o.backend ? await L.setBackend(o.backend) : await L.ready();
  // Built without random init: every weight is loaded next.
  const { model, vae, vision } = L.noGrad(() => withoutInit(() => ({
    model: new Zero123(cfg.zero123, { backend }),
    vae: new AutoencoderKL(cfg.vae, { backend }),
    vision: new ClipVisionEncoder(cfg.clip_vision, { backend }),
  })));
  let image: L.Tensor | null = null;
  try {
    for (const m of [model, vae, vision]) m.eval().requireGrad(false);
    const f = vae.downsampleFactor;
    const lat = size / f;
    const levels = 2 ** (model.unet.levels - 1);
    if (!Number.isInteger(lat) || lat % levels !== 0) throw new UsageError(`image_size ${size} must be a multiple of ${f * levels} (VAE factor ${f} x UNet factor ${levels})`);
    if (vae.latentChannels !== model.latentChannels) throw new UsageError(`the VAE's latent has ${vae.latentChannels} channels, the UNet's out_channels is ${model.latentChannels}`);

    const file = await SafetensorsFile.open(o.weights);
    try {
      const problems: StateDictError[] = [];
      const attempt = async (fn: () => Promise<void>): Promise<void> => { try { await fn(); } catch (e) { if (e instanceof StateDictError) problems.push(e); else throw e; } };
      await attempt(() => loadZero123Weights(model, file));
      await attempt(async () => {
        const r = await loadWeights(vae, file, { prefix: VAE_PREFIX, strict: false });
        const unexpected = r.unexpected.filter((k) => !k.startsWith(`${VAE_PREFIX}loss.`));
        if (r.missing.length || unexpected.length) throw new StateDictError(`loadWeights(${o.weights})`, r.missing, unexpected, []);
      });
      await attempt(async () => { await loadWeights(vision, file, { prefix: ZERO123_CLIP_VISION_PREFIX }); });
      if (problems.length) {
        throw new StateDictError(`load(${o.weights})`, problems.flatMap((e) => e.missing), problems.flatMap((e) => e.unexpected), problems.flatMap((e) => e.mismatched));
      }
    } finally {
      await file.close();
    }

    const raw = await L.readImage(o.input, { channels: 3, backend });
    const [, h, w] = raw.shape;
    const resized = h !== size || w !== size;
    // The demo: ToTensor, * 2 - 1 (gradio_new.py:379-380).
    image = L.noGrad(() => L.tidy(() => {
      const x = resized ? resizeLanczos(raw, size, size).clamp(0, 1) : raw;
      return x.unsqueeze(0).mul(2).sub(1);
    }));
    raw.dispose();
    const cond = conditionOnImage(model, vision, vae, image, o.pose);
    const latentShape = [1, model.latentChannels, lat, lat];
    const schedule = new Schedule({ steps, eta });
    let done = 0;
    const z = L.noGrad(() => sample({
      model: model.denoiser(cond, scale), schedule, eta, shape: latentShape, seed, backend,
      onStep: () => { done++; o.onStep?.(done, steps); },
    }));
    cond.context.dispose(); cond.concat.dispose();
    // decode_first_stage: z / scale_factor -> decoder (ddpm.py:763-770); clamp((x + 1) / 2, 0, 1) (gradio_new.py:110).
    const out = L.noGrad(() => L.tidy(() => vae.decodeLatent(z).squeeze([0]).add(1).div(2).clamp(0, 1)));
    z.dispose();
    if (existsSync(o.out) && !o.overwrite) throw new UsageError(`${o.out} appeared while sampling; pass --overwrite to replace it`);
    await L.writeImage(o.out, out);
    out.dispose();
    return { out: o.out, size, latentShape, resized, seconds: (Date.now() - start) / 1000 };
  } finally {
    image?.dispose();
    model.dispose(); vae.dispose(); vision.dispose();
  }
}


export async function main(argv: string[]): Promise<number> {
  const o: Partial<NovelViewOptions> = {};
  const pose: Partial<RelativePose> = {};
  const pos: string[] = [];
  try {
    for (let i = 0; i < argv.length; i++) {
      const a = argv[i];
      const value = (): string => {
        const v = argv[++i];
        // Negative numbers are values ('--azimuth -45').
        if (v === undefined || (v.startsWith('--') && Number.isNaN(Number(v)))) throw new UsageError(`${a} needs a value`);
        return v;
      };
      const num = (): number => {
        const v = value();
        const n = Number(v);
        if (v.trim() === '' || !Number.isFinite(n)) throw new UsageError(`${a} must be a number, got ${v}`);
        return n;
      };
      if (a === '--weights') o.weights = value();
      else if (a === '--out') o.out = value();
      else if (a === '--config') o.config = value();
      else if (a === '--overwrite') o.overwrite = true;
      else if (a === '--polar') pose.polar = num();
      else if (a === '--azimuth') pose.azimuth = num();
      else if (a === '--radius') pose.radius = num();
      else if (a === '--steps') o.steps = num();
      else if (a === '--scale') o.scale = num();
      else if (a === '--eta') o.eta = num();
      else if (a === '--seed') o.seed = num();
      else if (a === '--backend') {
        const v = value();
        if (v !== 'cpu' && v !== 'webgpu') throw new UsageError(`--backend must be cpu or webgpu, got ${v}`);
        o.backend = v;
      } else if (a === '-h' || a === '--help') { process.stdout.write(`${USAGE}\n`); return 0; }
      else if (a.startsWith('--')) throw new UsageError(`unknown option ${a}`);
      else pos.push(a);
    }
    if (pos.length !== 1) throw new UsageError(`expected one input PNG, got ${pos.length}`);
    if (!o.weights) throw new UsageError('--weights W.safetensors is required');
    if (!o.out) throw new UsageError('--out OUT.png is required');
    if (pose.polar === undefined || pose.azimuth === undefined) throw new UsageError('--polar and --azimuth (degrees) are required');
    const r = await novelView({
      ...o, input: pos[0], weights: o.weights, out: o.out, pose: { polar: pose.polar, azimuth: pose.azimuth, radius: pose.radius ?? 0 },
      onStep: (s, n) => {
        if (process.stderr.isTTY) process.stderr.write(`\r${NAME}: step ${s}/${n}${s === n ? '\n' : ''}`);
        else if (s === n) process.stderr.write(`${NAME}: ${n} steps done\n`);
      },
    });
    process.stdout.write(`${NAME}: ${r.size}x${r.size}${r.resized ? ' (input resized)' : ''} -> latent [${r.latentShape.join(',')}] -> ${r.out} in ${r.seconds.toFixed(1)} s\n`);
    return 0;
  } catch (e) {
    return reportCliError(NAME, USAGE, e);
  }
}

runIfScript(import.meta.url, main);
