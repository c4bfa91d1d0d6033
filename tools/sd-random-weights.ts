/**
 * Writes seeded random weights at Stable Diffusion 1.5's exact configs into one safetensors file under the
 * original checkpoint's key names (`model.diffusion_model.*`, `first_stage_model.*`), for full-size runs on
 * a machine without the real weights. The values follow the fixture generator's scheme (fixtures README):
 * conv/linear weights N(0, 1/fan_in), biases 0.1 N, norm weights 1 + 0.1 N, so activations keep a sane scale.
 *
 *   node --conditions=latentdem-src --import tsx tools/sd-random-weights.ts OUT.safetensors
 *        [--models unet,vae] [--seed 0] [--dtype f32|f16] [--overwrite]
 */
import { existsSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import * as L from '@latentdem/tensor';
import { COMPVIS_PREFIX, saveSafetensors, withoutInit } from '@latentdem/nn';
import type { Module } from '@latentdem/nn';
import { AutoencoderKL, SD15_UNET_CONFIG, SD15_VAE_CONFIG, UNet } from '@latentdem/diffusion';

const MODELS = {
  unet: { prefix: COMPVIS_PREFIX.unet, build: () => withoutInit(() => new UNet(SD15_UNET_CONFIG, { backend: 'cpu' })) },
  vae: { prefix: COMPVIS_PREFIX.vae, build: () => withoutInit(() => new AutoencoderKL(SD15_VAE_CONFIG, { backend: 'cpu' })) },
} as const;
export type SdPart = keyof typeof MODELS;

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
  if (existsSync(out) && !o.overwrite) throw new Error(`${out} exists; pass --overwrite to replace it`);
  const gen = new L.Generator(o.seed ?? 0);
  const tensors = new Map<string, L.Tensor>();
  const counts: Record<string, number> = {};
  const built: Module[] = [];
  try {
    for (const part of o.models ?? ['unet', 'vae']) {
      const t0 = performance.now();
      const m = MODELS[part].build();
      built.push(m);
      counts[part] = randomizeLikeFixtures(m, gen);
      for (const [k, v] of m.stateDict()) tensors.set(MODELS[part].prefix + k, v);
      log(`${part}: ${(counts[part] / 1e6).toFixed(1)}M parameters (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
    }
    const t0 = performance.now();
    await saveSafetensors(out, tensors, {
      dtype: o.dtype === 'f16' ? 'F16' : 'F32', overwrite: o.overwrite,
      metadata: { latentdem: 'seeded random weights at the SD 1.5 configs (tools/sd-random-weights.ts)', seed: String(o.seed ?? 0), models: Object.keys(counts).join(',') },
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
  if (!out) throw new Error('usage: sd-random-weights OUT.safetensors [--models unet,vae] [--seed 0] [--dtype f32|f16] [--overwrite]');
  const models = (opt('models') ?? 'unet,vae').split(',');
  for (const m of models) if (!(m in MODELS)) throw new Error(`--models: unknown model '${m}' (known: ${Object.keys(MODELS).join(', ')})`);
  const dtype = opt('dtype') ?? 'f32';
  if (dtype !== 'f32' && dtype !== 'f16') throw new Error(`--dtype must be f32 or f16, got '${dtype}'`);
  await writeRandomSd(out, { models: models as SdPart[], seed: Number(opt('seed') ?? 0), dtype, overwrite: argv.includes('--overwrite') });
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main(process.argv.slice(2)).catch((e: Error) => { process.stderr.write(`sd-random-weights: ${e.message}\n`); process.exit(1); });
}
