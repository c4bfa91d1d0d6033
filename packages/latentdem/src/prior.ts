/**
 * A latent diffusion prior as the EM loop sees it: an eps-prediction network with its conditioning fixed,
 * and the autoencoder that maps latents to pixels and back. `loadPrior` builds one from
 *   - a single safetensors file in Stable Diffusion 1.5's original layout (`model.diffusion_model.*`,
 *     `first_stage_model.*`, `cond_stage_model.*`; tools/convert.ts writes it), at SD 1.5's configs; or
 *   - a prior description `prior.json` (or a directory holding one), whose paths are relative to it:
 *       { "format": "latentdem-prior/1", "name": "...",
 *         "unet": { "config": {...UNet args} | "sd15", "weights": "file.safetensors", "prefix": "model.diffusion_model." },
 *         "vae":  { "config": {...AutoencoderKL args} | "sd15", "weights": "...", "prefix": "first_stage_model." },
 *         "context": { "kind": "clip", "config": {...} | "sd15", "weights": "...", "prefix": "cond_stage_model.transformer." }
 *                  | { "kind": "zeros", "length": 77 } }
 *     `weights/fixture-small/prior.json` describes the fixture-size models of ../shared/fixtures this way.
 * Nothing is downloaded: a missing file is an error that names it.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { LatentdemError, initBackend, noGrad, tidy, zeros } from '@latentdem/tensor';
import type { Backend, BackendName, Generator, Tensor } from '@latentdem/tensor';
import { SafetensorsFile, loadWeights, withoutInit } from '@latentdem/nn';
import {
  AutoencoderKL, ClipTextEncoder, SD15_CLIP_TEXT_CONFIG, SD15_UNET_CONFIG, SD15_VAE_CONFIG,
  SD_CLIP_TEXT_PREFIX, UNet, cfgEps,
} from '@latentdem/diffusion';
import type { AutoencoderKLConfig, ClipTextConfig, UNetConfig } from '@latentdem/diffusion';

/** A prior file or description that cannot be used: the message names the file and the field. */
export class PriorError extends LatentdemError {}

export interface LatentPrior {
  readonly name: string;
  /** Image side over latent side (8 for SD). */
  readonly factor: number;
  readonly latentChannels: number;
  /** Latent sides must be multiples of this (the UNet's 2^(levels-1): 8 for SD), so images of factor * latentMultiple. */
  readonly latentMultiple: number;
  readonly backend: Backend;
  /** Noise prediction for diffusion-space latents z [N, C, h, w] at training timestep t (conditioning and CFG applied). */
  eps(z: Tensor, t: number): Tensor;
  /** Diffusion-space latent -> image in about [-1, 1] (SD: decoder(z / 0.18215)), differentiable. */
  decode(z: Tensor): Tensor;
  /** Image in [-1, 1] -> diffusion-space latent: a posterior sample with `generator`, else the mean. */
  encode(x: Tensor, generator?: Generator): Tensor;
  /** Frees the weights and the conditioning. */
  dispose(): void;
}

export interface SdPriorParts {
  name?: string;
  unet: UNet;
  vae: AutoencoderKL;
  /** The conditional context [1, L, context_dim]. */
  context: Tensor;
  /** The unconditional context (default: the same tensor, as the LatentDEM release's empty prompt). */
  uncontext?: Tensor;
  /** Classifier-free guidance scale (LatentDEM release 7.5, inference.py:108-113). */
  guidanceScale?: number;
}

/** The LatentDEM release's CFG scale (SD/scripts/inference.py:108-113), with the empty prompt as both conditions. */
export const RELEASE_GUIDANCE_SCALE = 7.5;

/**
 * A prior from SD-style parts. When the conditional and unconditional contexts are the same tensor (the release
 * conditions on "" twice, inference.py:206-211, 499-503), eps_u + s (eps_c - eps_u) = eps_u for every s, so one
 * UNet pass is run instead of the release's two: same value, half the cost.
 */
export function sdPrior(p: SdPriorParts): LatentPrior {
  // The prior is fixed during sampling: frozen weights keep backward from computing (and allocating) weight gradients.
  p.unet.requireGrad(false);
  p.vae.requireGrad(false);
  const scale = p.guidanceScale ?? RELEASE_GUIDANCE_SCALE;
  const uncontext = p.uncontext ?? p.context;
  const same = uncontext === p.context;
  const ctxFor = (c: Tensor, n: number): Tensor => (c.shape[0] === n ? c : c.expand([n, c.shape[1], c.shape[2]]));
  const model = (z: Tensor, t: number, c: unknown): Tensor => p.unet.forward(z, t, ctxFor(c as Tensor, z.shape[0]));
  return {
    name: p.name ?? 'sd',
    factor: p.vae.downsampleFactor,
    latentChannels: p.vae.latentChannels,
    latentMultiple: 2 ** (p.unet.levels - 1),
    backend: p.context.backend,
    eps: (z, t) => (same ? model(z, t, p.context) : cfgEps(model, z, t, p.context, uncontext, scale)),
    decode: (z) => p.vae.decodeLatent(z),
    encode: (x, generator) => (generator ? p.vae.encodeLatent(x, { sample: true, generator }) : p.vae.encodeLatent(x)),
    dispose: () => {
      for (const m of [p.unet, p.vae]) for (const q of m.parameters()) q.dispose();
      p.context.dispose();
      if (!same) uncontext.dispose();
    },
  };
}

export interface LoadPriorOptions {
  backend?: BackendName | Backend;
  /** CFG scale (default 7.5). */
  guidanceScale?: number;
}

type ModelSpec<C> = { config: C | 'sd15'; weights: string; prefix?: string };
interface PriorJson {
  format: string;
  name?: string;
  unet: ModelSpec<UNetConfig>;
  vae: ModelSpec<AutoencoderKLConfig>;
  context: ({ kind: 'clip' } & ModelSpec<ClipTextConfig>) | { kind: 'zeros'; length?: number };
}

export const PRIOR_FORMAT = 'latentdem-prior/1';
const SD_UNET_PREFIX = 'model.diffusion_model.';
const SD_VAE_PREFIX = 'first_stage_model.';

/**
 * Token ids of the empty prompt as SD v1 feeds them: <|startoftext|>, <|endoftext|>, padded with <|endoftext|>
 * to 77. CLIP's vocabulary ends with those two tokens (49406, 49407 of 49408; openai/CLIP simple_tokenizer.py:
 * the special tokens are appended last), so the ids follow from the vocabulary size and no merges file is needed.
 */
export function emptyPromptIds(vocabSize: number, length = 77): Int32Array {
  const ids = new Int32Array(length).fill(vocabSize - 1);
  ids[0] = vocabSize - 2;
  return ids;
}

function readPriorJson(path: string): PriorJson {
  let j: PriorJson;
  try { j = JSON.parse(readFileSync(path, 'utf8')) as PriorJson; } catch (e) { throw new PriorError('loadPrior', `${path}: not a readable JSON prior description (${(e as Error).message})`); }
  if (j.format !== PRIOR_FORMAT) throw new PriorError('loadPrior', `${path}: "format" must be "${PRIOR_FORMAT}", got ${JSON.stringify(j.format)}`);
  for (const part of ['unet', 'vae', 'context'] as const) {
    if (typeof j[part] !== 'object' || j[part] === null) throw new PriorError('loadPrior', `${path}: "${part}" is missing`);
  }
  for (const part of ['unet', 'vae'] as const) {
    if (typeof j[part].weights !== 'string') throw new PriorError('loadPrior', `${path}: "${part}.weights" must be a file path`);
  }
  return j;
}

function weightsFile(base: string, rel: string, what: string): string {
  const p = resolve(base, rel);
  if (!existsSync(p)) throw new PriorError('loadPrior', `${what} weights not found: ${p}`);
  return p;
}

async function openWeights(path: string): Promise<SafetensorsFile> {
  try { return await SafetensorsFile.open(path); } catch (e) {
    throw new PriorError('loadPrior', `${path}: not a readable safetensors file (${(e as Error).message})`);
  }
}

/**
 * Loads a prior from an SD 1.5 checkpoint (one safetensors file, original keys) or a prior.json (file or the
 * directory holding it). Errors name the file, and for a weights/config mismatch every key (StateDictError).
 */
export async function loadPrior(spec: string, o: LoadPriorOptions = {}): Promise<LatentPrior> {
  if (!existsSync(spec)) throw new PriorError('loadPrior', `weights not found: ${spec}`);
  const jsonPath = statSync(spec).isDirectory() ? join(spec, 'prior.json') : spec.endsWith('.json') ? spec : null;
  if (jsonPath && !existsSync(jsonPath)) throw new PriorError('loadPrior', `${spec} is a directory without a prior.json`);
  const backend = o.backend;
  if (typeof backend === 'string') await initBackend(backend);
  let desc: PriorJson;
  let base: string;
  if (jsonPath) {
    desc = readPriorJson(jsonPath);
    base = dirname(resolve(jsonPath));
  } else {
    base = dirname(resolve(spec));
    desc = {
      format: PRIOR_FORMAT, name: 'sd15',
      unet: { config: 'sd15', weights: resolve(spec), prefix: SD_UNET_PREFIX },
      vae: { config: 'sd15', weights: resolve(spec), prefix: SD_VAE_PREFIX },
      context: { kind: 'clip', config: 'sd15', weights: resolve(spec), prefix: SD_CLIP_TEXT_PREFIX },
    };
  }
  const unetConfig = desc.unet.config === 'sd15' ? SD15_UNET_CONFIG : desc.unet.config;
  const vaeConfig = desc.vae.config === 'sd15' ? SD15_VAE_CONFIG : desc.vae.config;
  const files = new Map<string, SafetensorsFile>();
  const open = async (rel: string, what: string): Promise<SafetensorsFile> => {
    const p = weightsFile(base, rel, what);
    let f = files.get(p);
    if (!f) { f = await openWeights(p); files.set(p, f); }
    return f;
  };
  try {
    const unet = withoutInit(() => new UNet(unetConfig, { backend })).eval();
    await loadWeights(unet, await open(desc.unet.weights, 'UNet'), { prefix: desc.unet.prefix ?? SD_UNET_PREFIX });
    const vae = withoutInit(() => new AutoencoderKL(vaeConfig, { backend })).eval();
    vae.gradientCheckpointing();
    await loadWeights(vae, await open(desc.vae.weights, 'VAE'), { prefix: desc.vae.prefix ?? SD_VAE_PREFIX });
    let context: Tensor;
    const ctxDim = unet.config.context_dim;
    if (desc.context.kind === 'zeros') {
      context = zeros([1, desc.context.length ?? 77, ctxDim], { backend });
    } else if (desc.context.kind === 'clip') {
      const c = desc.context;
      const clipConfig = c.config === 'sd15' ? SD15_CLIP_TEXT_CONFIG : c.config;
      const clip = withoutInit(() => new ClipTextEncoder(clipConfig, { backend })).eval();
      await loadWeights(clip, await open(c.weights, 'text encoder'), { prefix: c.prefix ?? SD_CLIP_TEXT_PREFIX });
      context = noGrad(() => tidy(() => clip.forward([emptyPromptIds(clipConfig.vocab_size ?? SD15_CLIP_TEXT_CONFIG.vocab_size)])));
      for (const q of clip.parameters()) q.dispose();
      if (context.shape[2] !== ctxDim) throw new PriorError('loadPrior', `the text encoder's width ${context.shape[2]} differs from the UNet's context_dim ${ctxDim}`);
    } else {
      throw new PriorError('loadPrior', `context.kind must be "clip" or "zeros", got ${JSON.stringify((desc.context as { kind: unknown }).kind)}`);
    }
    if (unet.config.in_channels !== vae.latentChannels) throw new PriorError('loadPrior', `the UNet takes ${unet.config.in_channels} channels but the VAE's latent has ${vae.latentChannels}`);
    return sdPrior({ name: desc.name ?? 'prior', unet, vae, context, guidanceScale: o.guidanceScale });
  } finally {
    for (const f of files.values()) await f.close();
  }
}
