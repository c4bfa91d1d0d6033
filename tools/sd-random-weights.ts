/**
 * Writes seeded random weights at Stable Diffusion 1.5's and Zero123's exact configs into one safetensors file
 * under the original checkpoints' key names, for full-size runs on a machine without the real weights:
 *   unet     SD 1.5's UNet (859.5M)                       model.diffusion_model.*
 *   vae      SD's KL-f8 autoencoder (83.7M)               first_stage_model.*
 *   clip     SD 1.5's CLIP text encoder (123.1M)          cond_stage_model.transformer.*
 *   zero123  Zero123: the 8-channel UNet                  model.diffusion_model.*
 *            + cc_projection (772 -> 768)                 cc_projection.*
 *            + the ViT-L/14 image encoder                 cond_stage_model.model.visual.*
 * A Zero123 checkpoint also carries SD's VAE, so `--models zero123,vae` writes what a converted Zero123 file
 * holds; `unet` and `zero123` exclude each other (both are `model.diffusion_model.*`). The values follow the
 * fixture generator's scheme (fixtures README): weights of rank >= 2 N(0, 1/fan_in), biases 0.1 N, other
 * rank-1 parameters (norm weights; also ViT's class_embedding) 1 + 0.1 N, so activations keep a sane scale;
 * integer buffers (CLIP text's position_ids) keep their values. Parts are drawn in the order given, from one
 * generator: the same seed with a different --models list gives different values.
 *
 *   node --conditions=latentdem-src --import tsx tools/sd-random-weights.ts OUT.safetensors
 *        [--models unet,vae|clip|zero123,vae|...] [--seed 0] [--dtype f32|f16] [--overwrite]
 */
import { existsSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import * as L from '@latentdem/tensor';
import { COMPVIS_PREFIX, saveSafetensors, withoutInit } from '@latentdem/nn';
import type { Module } from '@latentdem/nn';
import {
  AutoencoderKL, ClipTextEncoder, ClipVisionEncoder, SD15_CLIP_TEXT_CONFIG, SD15_UNET_CONFIG, SD15_VAE_CONFIG, SD_CLIP_TEXT_PREFIX,
  UNet, ZERO123_CLIP_VISION_CONFIG, ZERO123_CLIP_VISION_PREFIX, ZERO123_CONFIG, Zero123,
} from '@latentdem/diffusion';

/** Each part: one or more modules, each saved under its checkpoint prefix. Zero123's module tree already starts at `model.` / `cc_projection.`. */
const MODELS: Record<string, { build: () => [prefix: string, m: Module][] }> = {
  unet: { build: () => [[COMPVIS_PREFIX.unet, withoutInit(() => new UNet(SD15_UNET_CONFIG, { backend: 'cpu' }))]] },
  vae: { build: () => [[COMPVIS_PREFIX.vae, withoutInit(() => new AutoencoderKL(SD15_VAE_CONFIG, { backend: 'cpu' }))]] },
  clip: { build: () => [[SD_CLIP_TEXT_PREFIX, withoutInit(() => new ClipTextEncoder(SD15_CLIP_TEXT_CONFIG, { backend: 'cpu' }))]] },
  zero123: {
    build: () => [
      ['', withoutInit(() => new Zero123(ZERO123_CONFIG, { backend: 'cpu' }))],
      [ZERO123_CLIP_VISION_PREFIX, withoutInit(() => new ClipVisionEncoder(ZERO123_CLIP_VISION_CONFIG, { backend: 'cpu' }))],
    ],
  },
};
export type SdPart = 'unet' | 'vae' | 'clip' | 'zero123';
export const SD_PARTS: readonly SdPart[] = ['unet', 'vae', 'clip', 'zero123'];

/** Throws on an unknown part, a repeated part, or unet with zero123 (same prefix). */
export function checkParts(models: readonly string[]): SdPart[] {
  for (const m of models) if (!SD_PARTS.includes(m as SdPart)) throw new Error(`--models: unknown model '${m}' (known: ${SD_PARTS.join(', ')})`);
  if (new Set(models).size !== models.length) throw new Error(`--models: a model is listed twice (${models.join(',')})`);
  if (models.includes('unet') && models.includes('zero123')) throw new Error("--models: 'unet' and 'zero123' both write model.diffusion_model.*; put them in separate files");
  if (!models.length) throw new Error('--models: empty list');
  return [...models] as SdPart[];
}

/** Overwrites every parameter of `m` in place (key order), drawing from `gen`. Returns the parameter count. */
export function randomizeLikeFixtures(m: Module, gen: L.Generator): number {
  let count = 0;
  L.noGrad(() => {
    for (const [name, p] of m.stateDict()) {
      if (p.dtype !== 'float32') continue;
      L.tidy(() => {
        const n = L.randn(p.shape, { generator: gen, backend: p.backend });
        const fanIn = p.shape.slice(1).reduce((a, b) => a * b, 1);
        const v = name.endsWith('bias') ? n.mul(0.1) : p.rank >= 2 ? n.mul(1 / Math.sqrt(fanIn)) : n.mul(0.1).add(1);
        p.assign(v);
      });
      count += p.size;
    }
  });
  return count;
}

export async function writeRandomSd(out: string, o: { models?: SdPart[]; seed?: number; dtype?: 'f32' | 'f16'; overwrite?: boolean; log?: (l: string) => void } = {}): Promise<Record<string, number>> {
  const log = o.log ?? ((l: string) => process.stderr.write(`${l}\n`));
  const parts = checkParts(o.models ?? ['unet', 'vae']);
  if (existsSync(out) && !o.overwrite) throw new Error(`${out} exists; pass --overwrite to replace it`);
  const gen = new L.Generator(o.seed ?? 0);
  const tensors = new Map<string, L.Tensor>();
  const counts: Record<string, number> = {};
  const built: Module[] = [];
  try {
    for (const part of parts) {
      const t0 = performance.now();
      const pieces = MODELS[part].build();
      built.push(...pieces.map(([, m]) => m));
      const sizes: string[] = [];
      counts[part] = 0;
      for (const [prefix, m] of pieces) {
        const n = randomizeLikeFixtures(m, gen);
        counts[part] += n;
        sizes.push(`${m.constructor.name} ${(n / 1e6).toFixed(1)}M`);
        for (const [k, v] of m.stateDict()) {
          if (tensors.has(prefix + k)) throw new Error(`two parts write ${prefix + k}`);
          tensors.set(prefix + k, v);
        }
      }
      log(`${part}: ${(counts[part] / 1e6).toFixed(1)}M parameters${pieces.length > 1 ? ` (${sizes.join(', ')})` : ''} (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
    }
    const t0 = performance.now();
    await saveSafetensors(out, tensors, {
      dtype: o.dtype === 'f16' ? 'F16' : 'F32', overwrite: o.overwrite,
      metadata: { latentdem: 'seeded random weights at the SD 1.5 / Zero123 configs (tools/sd-random-weights.ts)', seed: String(o.seed ?? 0), models: Object.keys(counts).join(',') },
    });
    log(`wrote ${out} (${tensors.size} tensors, ${((performance.now() - t0) / 1000).toFixed(1)} s)`);
    return counts;
  } finally {
    for (const m of built) m.dispose();
  }
}

async function main(argv: string[]): Promise<void> {
  const out = argv.find((a, i) => !a.startsWith('--') && !(i > 0 && ['--models', '--seed', '--dtype'].includes(argv[i - 1])));
  const opt = (n: string): string | undefined => { const i = argv.indexOf(`--${n}`); return i >= 0 ? argv[i + 1] : undefined; };
  if (!out) throw new Error('usage: sd-random-weights OUT.safetensors [--models unet,vae|clip|zero123,vae|...] [--seed 0] [--dtype f32|f16] [--overwrite]');
  const models = checkParts((opt('models') ?? 'unet,vae').split(','));
  const dtype = opt('dtype') ?? 'f32';
  if (dtype !== 'f32' && dtype !== 'f16') throw new Error(`--dtype must be f32 or f16, got '${dtype}'`);
  await writeRandomSd(out, { models, seed: Number(opt('seed') ?? 0), dtype, overwrite: argv.includes('--overwrite') });
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main(process.argv.slice(2)).catch((e: Error) => { process.stderr.write(`sd-random-weights: ${e.message}\n`); process.exit(1); });
}
