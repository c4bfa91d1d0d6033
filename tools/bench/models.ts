/**
 * Model-level rows of `npm run bench`: which models, configs and shapes (MODEL_ROWS, read by run.ts and sent as
 * JSON both to our child process and to tools/bench/torch_models.py, so the configs have one source), and the
 * child process that times one row on our backend:
 *
 *   node --conditions=latentdem-src --import tsx tools/bench/models.ts < {"row": ModelRow, "runs": n, "backend": "webgpu"}
 *
 * prints `RESULT {json}`: the sorted run times, min and median, the peak RSS of the timed region (VmHWM restarted
 * through /proc/self/clear_refs after the models are built; the process's lifetime maxRSS too) and the device
 * buffer bytes (memory().gpu: live after building = the weights, and the peak of live + pooled buffers from the
 * warm-up to the end). One process per row, so peaks do not accumulate across rows.
 * Weights are random (each module's default initialization): the rows time the work, not the values.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import * as L from '@latentdem/tensor';
import { AutoencoderKL, SD15_UNET_CONFIG, SD15_VAE_CONFIG, UNet } from '@latentdem/diffusion';
import type { AutoencoderKLConfig, UNetConfig } from '@latentdem/diffusion';
import {
  DnCNN, HQS_DEFAULTS, KERNEL_DNCNN, KERNEL_DNCNN_LAMBDA, RELEASE_ESTEP, RELEASE_FDNCNN, deblur, sdPrior,
} from 'latentdem';
import type { DnCNNConfig } from 'latentdem';

export interface EmSettings { ks: number; iterations: number; lambda: number; beta: number; sigma: number; omega: number; gamma: number; step_size: number; anneal: number }

export interface ModelRow {
  name: string;
  kind: 'unet' | 'unet_bwd' | 'vae_decode' | 'dncnn' | 'em_step';
  /** What the row measures, for the markdown. */
  what: string;
  config: { unet?: UNetConfig; vae?: AutoencoderKLConfig; dncnn?: DnCNNConfig };
  batch?: number;
  latent?: number;
  context_len?: number;
  t?: number;
  latent_shape?: number[];
  input_shape?: number[];
  /** em_step: image side (the latent is size / the VAE's factor) and the M-step/E-step settings. */
  size?: number;
  em?: EmSettings;
  /** SD-size rows: BENCH_MODEL_RUNS applies to them. */
  heavy: boolean;
  /** Runs only when this env variable is 1. */
  optIn?: string;
}

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');
const fixture = JSON.parse(readFileSync(join(root, 'weights', 'fixture-small', 'prior.json'), 'utf8')) as { unet: { config: UNetConfig }; vae: { config: AutoencoderKLConfig } };
const plain = <T>(x: T): T => JSON.parse(JSON.stringify(x)) as T;
const SD = { unet: plain(SD15_UNET_CONFIG), vae: plain(SD15_VAE_CONFIG) };
const em: EmSettings = {
  ks: HQS_DEFAULTS.kernelSize, iterations: HQS_DEFAULTS.iterations, lambda: KERNEL_DNCNN_LAMBDA, beta: HQS_DEFAULTS.beta,
  sigma: RELEASE_ESTEP.sigma, omega: RELEASE_ESTEP.omega, gamma: RELEASE_ESTEP.gamma, step_size: RELEASE_ESTEP.stepSize, anneal: 1,
};

const SD_ROWS: ModelRow[] = [
  { name: 'SD-1.5 UNet fwd, batch 2, latent 32x32', kind: 'unet', what: 'UNet(x [2,4,32,32], t 500, context [2,77,768]) without tape', config: { unet: SD.unet }, batch: 2, latent: 32, context_len: 77, t: 500, heavy: true },
  { name: 'SD-1.5 UNet fwd+bwd d/dx, batch 2, latent 32x32', kind: 'unet_bwd', what: 'UNet forward with tape on x only (weights frozen), then sum(out).backward(): d/dx', config: { unet: SD.unet }, batch: 2, latent: 32, context_len: 77, t: 500, heavy: true },
  { name: 'SD VAE decode [1,4,32,32] -> 256x256', kind: 'vae_decode', what: 'decodeLatent: post_quant_conv + Decoder, without tape', config: { vae: SD.vae }, latent_shape: [1, 4, 32, 32], heavy: true },
  { name: 'DnCNN 20 layers (release FDnCNN, 64 ch) [1,2,64,64]', kind: 'dncnn', what: 'RELEASE_FDNCNN forward on a 64x64 kernel + its noise map (in_nc 2)', config: { dncnn: plain(RELEASE_FDNCNN) }, input_shape: [1, 2, 64, 64], heavy: false },
  { name: 'DnCNN 5 layers (shipped kernel prior, 32 ch, BN) [1,2,64,64]', kind: 'dncnn', what: 'KERNEL_DNCNN forward (the M-step prior of the EM rows), eval mode', config: { dncnn: plain(KERNEL_DNCNN) }, input_shape: [1, 2, 64, 64], heavy: false },
  // 128x128: the fixture VAE's factor is 4, so a 32x32 latent as in the SD rows (at 256x256 the fixture UNet's
  // full-resolution attention over 64x64 = 4096 tokens makes a step take minutes here).
  { name: 'EM step, fixture-size models, 128x128 (latent 32x32)', kind: 'em_step', what: 'one full deblur() step: UNet eps, decode, M-step (20 HQS iterations at image-size FFTs + DnCNN denoise each, re-centring), loss (blur by FFT, gluing through the encoder), d loss/d z_t, DDIM update', config: { unet: fixture.unet.config, vae: fixture.vae.config, dncnn: plain(KERNEL_DNCNN) }, context_len: 77, size: 128, em, heavy: false },
  { name: 'EM step, SD-size models, 256x256 (latent 32x32)', kind: 'em_step', what: 'as above with SD 1.5 UNet and VAE (UNet batch 1: cond = uncond)', config: { unet: SD.unet, vae: SD.vae, dncnn: plain(KERNEL_DNCNN) }, context_len: 77, size: 256, em, heavy: true, optIn: 'BENCH_EM_FULL' },
];

/**
 * BENCH_TINY=1: the same rows with the fixture-size UNet and VAE (and 16x16 latents) in place of SD's, for
 * developing the bench itself; the names say "(tiny)".
 */
const tiny = (m: ModelRow): ModelRow => {
  if (!m.heavy) return m;
  const t: ModelRow = { ...m, name: `${m.name} (tiny: fixture configs${m.size ? ', 128x128' : ''})`, heavy: false };
  if (m.config.unet) t.config = { ...t.config, unet: fixture.unet.config };
  if (m.config.vae) t.config = { ...t.config, vae: fixture.vae.config };
  if (m.latent) t.latent = 16;
  if (m.latent_shape) t.latent_shape = [1, 4, 16, 16];
  if (m.size) t.size = 128;
  return t;
};

export const MODEL_ROWS: ModelRow[] = process.env.BENCH_TINY === '1' ? SD_ROWS.map(tiny) : SD_ROWS;

export interface ModelResult {
  name: string;
  ms: number[];
  ms_min: number;
  ms_median: number;
  build_s: number;
  output_shape: number[];
  /** Parameters of the row's models. */
  params: number;
  /** Peak RSS of the timed region (warm-up included), MiB. */
  peak_rss_mib: number;
  peak_rss_scope: string;
  lifetime_maxrss_mib: number;
  gpu_weights_mib: number | null;
  gpu_peak_mib: number | null;
  gpu_note: string;
}

const MiB = 1024 * 1024;
function vmHwmMiB(): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) / 1024 : process.resourceUsage().maxRSS / 1024;
}
function resetHwm(): boolean {
  try { writeFileSync('/proc/self/clear_refs', '5'); return true; } catch { return false; }
}

async function runRow(row: ModelRow, runs: number, backendName: L.BackendName): Promise<ModelResult> {
  const backend = await L.setBackend(backendName);
  const gen = new L.Generator(0);
  const r = (shape: number[]): L.Tensor => L.randn(shape, { generator: gen, backend });
  const t0 = performance.now();
  let once: () => Promise<{ ms: number; shape: number[] }>;
  let multi: ((n: number) => Promise<{ ms: number[]; shape: number[] }>) | null = null;
  let params = 0;
  const count = <M extends { parameters(): L.Tensor[] }>(m: M): M => { params += m.parameters().reduce((a, p) => a + p.size, 0); return m; };
  const c = row.config;
  const timed = async (f: () => L.Tensor): Promise<{ ms: number; shape: number[] }> => {
    await backend.sync();
    const s = performance.now();
    const y = f();
    await backend.sync();
    const ms = performance.now() - s;
    const shape = [...y.shape];
    y.dispose();
    return { ms, shape };
  };
  if (row.kind === 'unet' || row.kind === 'unet_bwd') {
    const unet = count(new UNet(c.unet!, { backend, generator: gen }).eval().requireGrad(false));
    const b = row.batch!, lat = row.latent!;
    const x = r([b, c.unet!.in_channels, lat, lat]);
    const ctx = r([b, row.context_len!, c.unet!.context_dim!]);
    const ts = new Array<number>(b).fill(row.t!);
    once = row.kind === 'unet'
      ? () => timed(() => L.noGrad(() => L.tidy(() => unet.forward(x, ts, ctx))))
      : () => timed(() => L.tidy(() => {
        const xg = x.detach().requireGrad();
        unet.forward(xg, ts, ctx).sum().backward();
        return xg.grad!.clone();
      }));
  } else if (row.kind === 'vae_decode') {
    const vae = count(new AutoencoderKL(c.vae!, { backend, generator: gen }).eval().requireGrad(false));
    const z = r(row.latent_shape!);
    once = () => timed(() => L.noGrad(() => L.tidy(() => vae.decodeLatent(z))));
  } else if (row.kind === 'dncnn') {
    const net = count(new DnCNN(c.dncnn!, { backend, generator: gen }).eval().requireGrad(false));
    const x = r(row.input_shape!);
    once = () => timed(() => L.noGrad(() => L.tidy(() => net.forward(x))));
  } else {
    // em_step: deblur() itself (the psld E-step, m-first, every step full), steps = warm-up + runs; each step's
    // own wall time (em() reads the losses back before it records the step).
    const unet = count(new UNet(c.unet!, { backend, generator: gen }).eval());
    const vae = count(new AutoencoderKL(c.vae!, { backend, generator: gen }).eval().gradientCheckpointing());   // as loadPrior
    const prior = sdPrior({ name: row.name, unet, vae, context: L.zeros([1, row.context_len!, c.unet!.context_dim!], { backend }) });
    const size = row.size!;
    const y = r([3, size, size]).mul(0.3).clamp(-1, 1);
    const e = row.em!;
    multi = async (n: number) => {
      const res = await deblur({
        prior, y, steps: n, kernelSize: e.ks, sigma: e.sigma, omega: e.omega, gamma: e.gamma, stepSize: e.step_size,
        kernelPrior: 'dncnn', hqs: { iterations: e.iterations, lambda: e.lambda, beta: e.beta },
        onStep: (s) => { process.stderr.write(`bench:     em step ${s.i + 1}/${n}: ${s.seconds.toFixed(1)} s\n`); },
      });
      const shape = [1, prior.latentChannels, size / prior.factor, size / prior.factor];
      res.image.dispose(); res.kernel.dispose();
      return { ms: res.record.steps.map((s) => s.seconds * 1000), shape };
    };
    once = async () => { throw new Error('unreachable'); };
  }
  await backend.sync();
  const buildS = (performance.now() - t0) / 1000;
  const gpuWeights = L.memory().gpu?.liveBufferBytes;
  const resetOk = resetHwm();
  L.resetPeakMemory();
  let ms: number[]; let shape: number[];
  if (multi) {
    const out = await multi(runs + 1);
    ms = out.ms.slice(1); shape = out.shape;   // the first step is the warm-up (pipeline compilation)
  } else {
    shape = (await once()).shape;              // warm-up
    ms = [];
    for (let i = 0; i < runs; i++) ms.push((await once()).ms);
  }
  const gpu = L.memory().gpu;
  ms.sort((p, q) => p - q);
  return {
    name: row.name, ms, ms_min: ms[0], ms_median: ms[Math.floor(ms.length / 2)], build_s: buildS, output_shape: shape, params,
    peak_rss_mib: resetOk ? vmHwmMiB() : process.resourceUsage().maxRSS / 1024,
    peak_rss_scope: resetOk ? 'timed runs (VmHWM reset after building)' : 'process lifetime (maxRSS)',
    lifetime_maxrss_mib: process.resourceUsage().maxRSS / 1024,
    gpu_weights_mib: gpuWeights === undefined ? null : gpuWeights / MiB,
    gpu_peak_mib: gpu ? gpu.peakBufferBytes / MiB : null,
    gpu_note: gpu ? 'peak of live + pooled device buffers from the warm-up to the end (memory().gpu.peakBufferBytes)' : 'no webgpu backend',
  };
}

async function main(): Promise<void> {
  const chunks: Buffer[] = [];
  for await (const ch of process.stdin) chunks.push(ch as Buffer);
  const spec = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { row: ModelRow; runs: number; backend?: L.BackendName };
  const res = await runRow(spec.row, spec.runs, spec.backend ?? 'webgpu');
  process.stdout.write(`RESULT ${JSON.stringify(res)}\n`);
  process.exit(0);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await main();
