/**
 * Encodes a PNG with SD's KL autoencoder and decodes it again: a check that VAE weights load and work.
 *
 *   node --conditions=latentdem-src --import tsx tools/vae-roundtrip.ts IN.png --weights W.safetensors --out OUT.png
 *        [--sample [--seed S]] [--backend cpu|webgpu] [--config sd15|PATH.json] [--pad replicate|reflect] [--overwrite]
 *
 * IN: RGB, RGBA (alpha dropped) or gray (replicated to RGB) PNG, mapped to [-1, 1] and padded on the right and
 * bottom to a multiple of the VAE's downsampling factor (8 for SD); the decoded image is cropped back, clamped
 * and written as an 8-bit PNG. The latent is the posterior mode unless --sample (seeded by --seed, default 0).
 * W: safetensors in the original CompVis layout (e.g. tools/convert.ts's output for an SD v1.x checkpoint):
 * the `first_stage_model.*` keys when the file has them, else the file's own keys (a VAE-only file; its `loss.*`
 * keys, if any, are skipped). --config: sd15 (default) or a JSON file holding the AutoencoderKL arguments
 * ({ddconfig, embed_dim}) or a fixture.json with them under `config`. Prints the latent shape and the PSNR of
 * the round trip (8-bit output against the input, peak 1). Exit codes: 0 ok, 1 error (one line on stderr).
 */
import { existsSync, readFileSync } from 'node:fs';
import * as L from '@latentdem/tensor';
import { SafetensorsFile, StateDictError, loadWeights } from '@latentdem/nn';
import { AutoencoderKL, SD15_VAE_CONFIG } from '@latentdem/diffusion';
import type { AutoencoderKLConfig } from '@latentdem/diffusion';
import { psnr } from 'latentdem';
import { UsageError, reportCliError, runIfScript } from './cli.js';

const NAME = 'vae-roundtrip';
const USAGE = `usage: ${NAME} IN.png --weights W.safetensors --out OUT.png [--sample [--seed S]] [--backend cpu|webgpu] [--config sd15|PATH.json] [--pad replicate|reflect] [--overwrite]`;
/** The checkpoint prefix of SD's first stage (LatentDiffusion.first_stage_model). */
const SD_PREFIX = 'first_stage_model.';

export interface RoundtripOptions {
  input: string;
  weights: string;
  out: string;
  /** Decode a posterior sample instead of the mode. */
  sample?: boolean;
  seed?: number;
  /** Default: LATENTDEM_BACKEND, else webgpu when available, else cpu. */
  backend?: 'cpu' | 'webgpu';
  /** 'sd15' (default), a config object, or a JSON file path. */
  config?: 'sd15' | string | AutoencoderKLConfig;
  pad?: 'replicate' | 'reflect';
  overwrite?: boolean;
}

export interface RoundtripResult { psnr: number; latentShape: number[]; width: number; height: number; out: string }


function readConfig(c: RoundtripOptions['config']): AutoencoderKLConfig {
  if (c === undefined || c === 'sd15') return SD15_VAE_CONFIG;
  if (typeof c !== 'string') return c;
  if (!existsSync(c)) throw new UsageError(`--config ${c}: no such file (use sd15 or a JSON file)`);
  let json: unknown;
  try { json = JSON.parse(readFileSync(c, 'utf8')); } catch (e) { throw new UsageError(`--config ${c}: not JSON (${(e as Error).message})`); }
  const o = json as { config?: { ddconfig?: unknown }; ddconfig?: unknown };
  if (o && typeof o === 'object' && o.ddconfig) return o as AutoencoderKLConfig;
  if (o && typeof o === 'object' && o.config?.ddconfig) return o.config as AutoencoderKLConfig;
  throw new UsageError(`--config ${c}: holds neither {ddconfig, embed_dim} nor a fixture's {config: {ddconfig, embed_dim}}`);
}

/** Pads [N,C,H,W] on the right by `pw` and at the bottom by `ph`, repeating the edge (replicate) or mirroring it (reflect). */
function padTo(x: L.Tensor, ph: number, pw: number, mode: 'replicate' | 'reflect'): L.Tensor {
  if (mode === 'reflect') return L.pad(x, [0, pw, 0, ph], 'reflect');
  const edge = (t: L.Tensor, axis: number, n: number): L.Tensor => {
    if (n === 0) return t;
    const shape = [...t.shape]; shape[axis] = n;
    return L.concat([t, t.narrow(axis, t.shape[axis] - 1, 1).expand(shape)], axis);
  };
  return edge(edge(x, 3, pw), 2, ph);
}

async function loadVae(vae: AutoencoderKL, path: string): Promise<void> {
  if (!existsSync(path)) throw new UsageError(`--weights ${path}: no such file`);
  const file = await SafetensorsFile.open(path);
  try {
    const prefix = file.keys().some((k) => k.startsWith(SD_PREFIX)) ? SD_PREFIX : '';
    // Mis-shaped keys throw here, before anything is copied; missing and unexpected ones are checked below.
    const r = await loadWeights(vae, file, { prefix, strict: false });
    const unexpected = r.unexpected.filter((k) => !k.startsWith(`${prefix}loss.`));
    if (r.missing.length || unexpected.length) throw new StateDictError(`loadWeights(${path})`, r.missing, unexpected, []);
  } finally {
    await file.close();
  }
}

/** The round trip; resolves with the PSNR and the latent shape, having written `o.out`. */
export async function roundtrip(o: RoundtripOptions): Promise<RoundtripResult> {
  if (!existsSync(o.input)) throw new UsageError(`${o.input}: no such file`);
  if (existsSync(o.out) && !o.overwrite) throw new UsageError(`${o.out} exists; pass --overwrite to replace it`);
  const config = readConfig(o.config);
  const backend = o.backend ? await L.setBackend(o.backend) : await L.ready();
  const image = await L.readImage(o.input, { channels: 3, backend });
  const [, h, w] = image.shape;
  const vae = new AutoencoderKL(config, { backend });
  try {
    vae.eval().requireGrad(false);
    await loadVae(vae, o.weights);
    const f = vae.downsampleFactor;
    const ph = (f - (h % f)) % f; const pw = (f - (w % f)) % f;
    if ((o.pad ?? 'replicate') === 'reflect' && (ph >= h || pw >= w)) {
      throw new UsageError(`${o.input} (${w}x${h}) is too small to reflect-pad to a multiple of ${f}; use --pad replicate`);
    }
    const { out, latentShape } = L.noGrad(() => L.tidy(() => {
      const x = padTo(image.mul(2).sub(1).unsqueeze(0), ph, pw, o.pad ?? 'replicate');
      const post = vae.encode(x);
      const z = o.sample ? post.sample({ seed: o.seed ?? 0 }) : post.mode();
      const y = vae.decode(z).narrow(2, 0, h).narrow(3, 0, w).squeeze([0]);
      return { out: y.add(1).div(2).clamp(0, 1), latentShape: z.shape };
    }));
    await L.writeImage(o.out, out);
    const a = await out.data(); const b = await image.data();
    // PSNR of what was written: the output rounded to 8 bits as the PNG holds it.
    const q = Float32Array.from(a, (v) => Math.round(v * 255) / 255);
    out.dispose();
    return { psnr: psnr(q, b, 1), latentShape: [...latentShape], width: w, height: h, out: o.out };
  } finally {
    image.dispose();
    vae.dispose();
  }
}


export async function main(argv: string[]): Promise<number> {
  const o: Partial<RoundtripOptions> = {};
  const pos: string[] = [];
  try {
    for (let i = 0; i < argv.length; i++) {
      const a = argv[i];
      const value = (): string => {
        const v = argv[++i];
        if (v === undefined || v.startsWith('--')) throw new UsageError(`${a} needs a value`);
        return v;
      };
      if (a === '--weights') o.weights = value();
      else if (a === '--out') o.out = value();
      else if (a === '--config') o.config = value();
      else if (a === '--sample') o.sample = true;
      else if (a === '--overwrite') o.overwrite = true;
      else if (a === '--seed') {
        const v = value();
        const s = Number(v);
        if (!Number.isInteger(s) || s < 0) throw new UsageError(`--seed must be a non-negative integer, got ${v}`);
        o.seed = s;
      } else if (a === '--backend') {
        const v = value();
        if (v !== 'cpu' && v !== 'webgpu') throw new UsageError(`--backend must be cpu or webgpu, got ${v}`);
        o.backend = v;
      } else if (a === '--pad') {
        const v = value();
        if (v !== 'replicate' && v !== 'reflect') throw new UsageError(`--pad must be replicate or reflect, got ${v}`);
        o.pad = v;
      } else if (a === '-h' || a === '--help') { process.stdout.write(`${USAGE}\n`); return 0; }
      else if (a.startsWith('--')) throw new UsageError(`unknown option ${a}`);
      else pos.push(a);
    }
    if (pos.length !== 1) throw new UsageError(`expected one input PNG, got ${pos.length}`);
    if (!o.weights) throw new UsageError('--weights W.safetensors is required');
    if (!o.out) throw new UsageError('--out OUT.png is required');
    if (o.seed !== undefined && !o.sample) throw new UsageError('--seed only applies with --sample');
    const r = await roundtrip({ ...o, input: pos[0], weights: o.weights, out: o.out });
    process.stdout.write(`${NAME}: ${r.width}x${r.height} -> latent [${r.latentShape.join(',')}] -> ${r.out}; PSNR ${r.psnr.toFixed(2)} dB\n`);
    return 0;
  } catch (e) {
    return reportCliError(NAME, USAGE, e);
  }
}

runIfScript(import.meta.url, main);
