/**
 * Zero123's view-conditioned denoiser (cvlab-columbia/zero123 @ f426883b): the SD UNet with 8 input channels
 * (the noisy latent, then the input view's latent: conditioning_key 'hybrid', ddpm.py:1459-1462) and one
 * cross-attention token, `cc_projection([CLIP image embedding, pose vector])` (ddpm.py:526-528, gradio_new.py:80-85).
 * Module names are the checkpoint's: `model.diffusion_model.*` (the UNet inside DiffusionWrapper) and
 * `cc_projection.*`, so `loadWeights(zero123, file)` walks a converted checkpoint directly.
 */
import { ShapeError, Tensor, concat, fmtShape, noGrad, tensor, tidy, tidyUnlessRecording, zerosLike } from '@latentdem/tensor';
import type { Backend, BackendName, Generator } from '@latentdem/tensor';
import { Linear, Module, SafetensorsFile, StateDictError, loadWeights } from '@latentdem/nn';
import { ConfigError } from './config.js';
import { SD15_UNET_CONFIG, UNet } from './unet.js';
import type { UNetConfig, UNetForwardOptions } from './unet.js';
import type { AutoencoderKL } from './autoencoder.js';
import type { ClipVisionEncoder } from './clip-vision.js';
import { zero123ClipPreprocess } from './clip-vision.js';
import type { NoiseModel } from '../sampler.js';

/** The UNet's arguments plus the width of the CLIP image embedding; cc_projection is Linear(clip_dim + 4, unet.context_dim). */
export interface Zero123Config {
  unet: UNetConfig;
  clip_dim: number;
}

/**
 * The released Zero123: configs/sd-objaverse-finetune-c_concat-256.yaml, `unet_config.params` (lines 30-43),
 * field for field; clip_dim 768 = ViT-L/14's output_dim, cc_projection = nn.Linear(772, 768) (ddpm.py:526).
 * The rest of that yaml equals SD v1: linear_start/end 0.00085/0.0120 and 1000 timesteps (l.5-6, 9),
 * scale_factor 0.18215 (l.17, = SD_LATENT_SCALE), first_stage_config = SD's KL-f8 VAE (l.45-64, = SD15_VAE_CONFIG),
 * images 256x256 (latent image_size 32, l.12).
 */
export const ZERO123_CONFIG: Zero123Config = Object.freeze({
  // Field for field SD v1's UNet (v1-inference.yaml) but for the 8 input channels: noisy latent + input-view latent.
  unet: Object.freeze({ ...SD15_UNET_CONFIG, in_channels: 8 }),
  clip_dim: 768,
});

/** Image side of the released model (gradio_new.py:316 h = w = 256; yaml first_stage resolution 256, l.53). */
export const ZERO123_IMAGE_SIZE = 256;
/** The demo's guidance scale (gradio_new.py:315 `scale=3.0`; slider default 3, l.551). */
export const ZERO123_GUIDANCE_SCALE = 3;
/** The demo's DDIM eta (gradio_new.py:315 `ddim_eta=1.0`). */
export const ZERO123_DDIM_ETA = 1;
/** Checkpoint prefixes (LatentDiffusion.model.diffusion_model, LatentDiffusion.cc_projection). */
export const ZERO123_UNET_PREFIX = 'model.diffusion_model.';
export const ZERO123_CC_PROJECTION_PREFIX = 'cc_projection.';

/** A relative camera pose as the demo takes it: polar and azimuth changes in DEGREES, radius change in raw units. */
export interface RelativePose { polar: number; azimuth: number; radius: number }

/**
 * The 4-vector Zero123 conditions on (gradio_new.py:81-82): [radians(polar), sin(radians(azimuth)),
 * cos(radians(azimuth)), radius]. Training uses the same layout (data/simple.py:257-272, get_T: polar
 * difference in radians, azimuth difference mod 2 pi through sin/cos, radius difference).
 */
export function poseVector(p: RelativePose): [number, number, number, number] {
  for (const k of ['polar', 'azimuth', 'radius'] as const) {
    if (typeof p?.[k] !== 'number' || !Number.isFinite(p[k])) throw new RangeError(`poseVector: ${k} must be a finite number, got ${String(p?.[k])}`);
  }
  const rad = (d: number): number => (d * Math.PI) / 180;
  return [rad(p.polar), Math.sin(rad(p.azimuth)), Math.cos(rad(p.azimuth)), p.radius];
}

/** Pose vectors [B, 4] (float32) for one pose or a list of them. */
export function poseTensor(poses: RelativePose | readonly RelativePose[], o: { backend?: BackendName | Backend } = {}): Tensor {
  const list = Array.isArray(poses) ? poses as readonly RelativePose[] : [poses as RelativePose];
  if (list.length === 0) throw new RangeError('poseTensor: no poses');
  return tensor(Float32Array.from(list.flatMap((p) => poseVector(p))), { shape: [list.length, 4], backend: o.backend });
}

/** What the denoiser is conditioned on: the cross-attention context [B, 1, context_dim] and the input-view latent [B, C, h, w]. */
export interface Zero123Cond {
  /** cc_projection output (c_crossattn) */
  context: Tensor;
  /** encode_first_stage(input).mode(), NOT multiplied by scale_factor (c_concat; ddpm.py:753, gradio_new.py:88) */
  concat: Tensor;
}

/** DiffusionWrapper (ddpm.py:1420-1470): only holds `diffusion_model`, so the UNet's keys are `model.diffusion_model.*`. */
export class DiffusionWrapper extends Module {
  readonly diffusion_model: UNet;
  constructor(unet: UNet) {
    super();
    this.diffusion_model = this.registerModule('diffusion_model', unet);
  }
}

const isPosInt = (v: unknown): v is number => Number.isInteger(v) && (v as number) > 0;

/** The Zero123 denoiser: UNet + cc_projection. */
export class Zero123 extends Module {
  readonly config: Readonly<Zero123Config>;
  readonly model: DiffusionWrapper;
  readonly cc_projection: Linear;

  constructor(config: Zero123Config, o: { backend?: BackendName | Backend; generator?: Generator } = {}) {
    super();
    const op = 'Zero123';
    if (typeof config !== 'object' || config === null || typeof config.unet !== 'object' || config.unet === null) throw new ConfigError(op, 'unet', 'the config needs { unet: <UNetModel arguments>, clip_dim }');
    if (!isPosInt(config.clip_dim)) throw new ConfigError(op, 'clip_dim', `must be a positive integer, got ${JSON.stringify(config.clip_dim)}`);
    const unet = new UNet(config.unet, o);
    const u = unet.config;
    // 'hybrid': the noisy latent and the input view's latent are concatenated on channels (ddpm.py:1460).
    if (u.in_channels !== 2 * u.out_channels) {
      throw new ConfigError(op, 'in_channels', `must be 2 * out_channels (noisy latent + input-view latent), got ${u.in_channels} with out_channels ${u.out_channels}`);
    }
    this.config = Object.freeze({ unet: config.unet, clip_dim: config.clip_dim });
    this.model = this.registerModule('model', new DiffusionWrapper(unet));
    this.cc_projection = this.registerModule('cc_projection', new Linear(config.clip_dim + 4, u.context_dim, o));
  }

  get unet(): UNet { return this.model.diffusion_model; }
  /** Latent channels (out_channels; the input-view latent has as many). */
  get latentChannels(): number { return this.unet.config.out_channels; }

  /**
   * c_crossattn = cc_projection(cat([clip embedding, pose vector], -1)) [B, 1, context_dim]
   * (gradio_new.py:80-85). `clipEmbedding`: [B, clip_dim] (the encoder's output) or [B, 1, clip_dim]
   * (`FrozenCLIPImageEmbedder.encode`); a batch of 1 is repeated to the number of poses (the demo's tile).
   * `pose`: poses, or pose vectors [B, 4] (see poseVector).
   */
  context(clipEmbedding: Tensor, pose: Tensor | RelativePose | readonly RelativePose[]): Tensor {
    const op = 'Zero123.context';
    const d = this.config.clip_dim;
    let e = clipEmbedding;
    if (e.rank === 3 && e.shape[1] === 1) e = e.reshape([e.shape[0], e.shape[2]]);
    if (e.rank !== 2 || e.shape[1] !== d) throw new ShapeError(op, `clip embedding must be [B, ${d}] or [B, 1, ${d}] (clip_dim ${d}), got ${fmtShape(clipEmbedding.shape)}`);
    const owned = !(pose instanceof Tensor);
    const T = owned ? poseTensor(pose as RelativePose | RelativePose[], { backend: e.backend }) : pose as Tensor;
    try {
      if (T.rank !== 2 || T.shape[1] !== 4) throw new ShapeError(op, `pose vectors must be [B, 4], got ${fmtShape(T.shape)}`);
      let b = e.shape[0];
      if (b !== T.shape[0]) {
        if (b !== 1) throw new ShapeError(op, `batch sizes differ: clip embedding ${fmtShape(clipEmbedding.shape)}, poses ${fmtShape(T.shape)}`);
        b = T.shape[0];
      }
      return tidyUnlessRecording(() => this.cc_projection.forward(concat([e.expand([b, d]), T], 1)).reshape([b, 1, this.unet.config.context_dim]));
    } finally {
      if (owned) T.dispose();
    }
  }

  /** The conditional branch: context from `clipEmbedding` and `pose`, and the input view's (unscaled) latent, repeated to the batch. */
  conditioning(clipEmbedding: Tensor, pose: Tensor | RelativePose | readonly RelativePose[], inputLatent: Tensor): Zero123Cond {
    const context = this.context(clipEmbedding, pose);
    const b = context.shape[0];
    const c = this.latentChannels;
    if (inputLatent.rank !== 4 || inputLatent.shape[1] !== c || (inputLatent.shape[0] !== b && inputLatent.shape[0] !== 1)) {
      context.dispose();
      throw new ShapeError('Zero123.conditioning', `input latent must be [${b} or 1, ${c}, h, w], got ${fmtShape(inputLatent.shape)}`);
    }
    const [, , h, w] = inputLatent.shape;
    return { context, concat: inputLatent.shape[0] === b ? inputLatent : inputLatent.expand([b, c, h, w]) };
  }

  /**
   * The unconditional branch as the demo builds it (gradio_new.py:90-93): a zero concat latent and a zero
   * context, i.e. zeros in place of cc_projection's OUTPUT (not cc_projection of a zero embedding; training's
   * dropout in ddpm.py:743-753 differs, see zero123.test.ts).
   */
  unconditional(cond: Zero123Cond): Zero123Cond {
    return { context: zerosLike(cond.context), concat: zerosLike(cond.concat) };
  }

  /** eps for noisy latents x [B, C, h, w]: UNet(cat([x, concat], 1), t, context) (ddpm.py:1460-1462). */
  forward(x: Tensor, timesteps: Tensor | number | readonly number[], cond: Zero123Cond, opts: UNetForwardOptions = {}): Tensor {
    const op = 'Zero123.forward';
    const c = this.latentChannels;
    if (x.rank !== 4 || x.shape[1] !== c) throw new ShapeError(op, `x must be [B, ${c}, h, w], got ${fmtShape(x.shape)}`);
    const k = cond.concat;
    if (k.rank !== 4 || k.shape[0] !== x.shape[0] || k.shape[1] !== c || k.shape[2] !== x.shape[2] || k.shape[3] !== x.shape[3]) {
      throw new ShapeError(op, `the input-view latent ${fmtShape(k.shape)} must match x ${fmtShape(x.shape)}`);
    }
    return tidyUnlessRecording(() => this.unet.forward(concat([x, k], 1), timesteps, cond.context, opts));
  }

  /**
   * Classifier-free guidance as DDIMSampler.p_sample_ddim (ddim.py:191-211): one UNet call on the batch
   * [uncond; cond], then eps_u + scale (eps_c - eps_u). Scale 1 (or `uncond: null`) runs the conditional branch only.
   * `uncond` defaults to `unconditional(cond)`.
   */
  guidedEps(x: Tensor, t: number, cond: Zero123Cond, scale: number = ZERO123_GUIDANCE_SCALE, uncond?: Zero123Cond | null): Tensor {
    if (!Number.isFinite(scale)) throw new RangeError(`Zero123.guidedEps: scale must be a finite number, got ${scale}`);
    if (scale === 1 || uncond === null) return this.forward(x, t, cond);
    return tidyUnlessRecording(() => {
      const u = uncond ?? this.unconditional(cond);
      const b = x.shape[0];
      const both: Zero123Cond = { context: concat([u.context, cond.context], 0), concat: concat([u.concat, cond.concat], 0) };
      const e = this.forward(concat([x, x], 0), t, both);
      const eu = e.narrow(0, 0, b); const ec = e.narrow(0, b, b);
      return eu.add(ec.sub(eu).mul(scale));
    });
  }

  /** A NoiseModel for `sample()` (which then runs with guidanceScale 1: the guidance happens here, batched). */
  denoiser(cond: Zero123Cond, scale: number = ZERO123_GUIDANCE_SCALE, uncond?: Zero123Cond | null): NoiseModel {
    return (x, t) => this.guidedEps(x, t, cond, scale, uncond);
  }
}

/**
 * Loads a Zero123 checkpoint's `model.diffusion_model.*` and `cc_projection.*` (strict within those prefixes;
 * other models' keys are ignored). NOTE: the demo samples inside `model.ema_scope()` (gradio_new.py:79; use_ema
 * defaults to True, ddpm.py:58, 93-95), i.e. with the `model_ema.*` weights when the checkpoint has them; a
 * converter must copy those over `model.diffusion_model.*` to reproduce it.
 */
export async function loadZero123Weights(model: Zero123, source: string | SafetensorsFile): Promise<void> {
  const file = typeof source === 'string' ? await SafetensorsFile.open(source) : source;
  try {
    const missing: string[] = []; const unexpected: string[] = []; const mismatched: string[] = [];
    // Check both parts before copying anything.
    for (const [prefix, m] of [[ZERO123_UNET_PREFIX, model.unet], [ZERO123_CC_PROJECTION_PREFIX, model.cc_projection]] as const) {
      try { await loadWeights(m, file, { prefix }); } catch (e) {
        if (!(e instanceof StateDictError)) throw e;
        missing.push(...e.missing); unexpected.push(...e.unexpected); mismatched.push(...e.mismatched);
      }
    }
    if (missing.length || unexpected.length || mismatched.length) throw new StateDictError(`loadZero123Weights(${file.path})`, missing, unexpected, mismatched);
  } finally {
    if (typeof source === 'string') await file.close();
  }
}

/**
 * The conditioning of one input view, as sample_model builds it (gradio_new.py:80-89): CLIP embedding of the
 * preprocessed image, cc_projection with each pose, and the VAE posterior mode of the image (unscaled).
 * `image`: [1, 3, H, W] in [-1, 1], H and W the model's image size.
 */
export function conditionOnImage(model: Zero123, vision: ClipVisionEncoder, vae: AutoencoderKL, image: Tensor, pose: RelativePose | readonly RelativePose[]): Zero123Cond {
  return noGrad(() => tidy(() => {
    const embedding = vision.forward(zero123ClipPreprocess(image, { size: vision.config.input_resolution }));
    if (embedding.shape[1] !== model.config.clip_dim) throw new ShapeError('conditionOnImage', `the vision encoder outputs ${embedding.shape[1]} features, the model's clip_dim is ${model.config.clip_dim}`);
    const cond = model.conditioning(embedding, pose, vae.encode(image).mode());
    // contiguous: the repeated latent must own its storage to outlive this scope.
    return { context: cond.context, concat: cond.concat.contiguous() };
  }));
}
