/**
 * Full-size Stable Diffusion 1.5 and Zero123 runs on latentdem-layout checkpoints (real, or random from
 * tools/sd-random-weights.ts, optionally passed through tools/convert.ts): time, peak RSS and GPU-buffer bytes of
 *   unet         one UNet step at a 32x32 latent, batch 2 (as with classifier-free guidance), cold and warm,
 *                then a device-timed trace of a third step (top kernels by GPU time);
 *   vae          a VAE decode of a 4x32x32 latent to 256x256, cold and warm;
 *   backward     d/dz of ||y - D(x0(z))|| through the guided UNet step (batch 2) and the decoder, as the latent
 *                posterior samplers need it;
 *   clip-text    encodePrompt('') with SD 1.5's text encoder (123M; the 152 MB token table stays on the host
 *                when the backend cannot bind it, e.g. lavapipe's 128 MiB limit), cold and warm (no prompt cache);
 *   clip-vision  Zero123's ViT-L/14 image encoder on one 256x256 image (zero123ClipPreprocess: bicubic to
 *                224, CLIP mean/std), cold and warm;
 *   zero123      one guided Zero123 step at a 32x32 latent: context = cc_projection([random CLIP embedding,
 *                pose]), batch 2 [uncond; cond] as Zero123's DDIM sampler runs it, scale 3, cold and warm.
 * Each phase runs in its own process so its peak RSS is its own. Writes OUT/sd-fullsize.{json,md}.
 *
 * Weights: --weights holds SD 1.5 (`model.diffusion_model.*`, `first_stage_model.*`,
 * `cond_stage_model.transformer.*`; each phase reads only its models' keys) for unet, vae, backward and
 * clip-text; --zero123-weights holds a Zero123 checkpoint (`model.diffusion_model.*` = the 8-channel UNet,
 * `cc_projection.*`, `cond_stage_model.model.visual.*`) for clip-vision and zero123. They are separate files
 * because both UNets live under `model.diffusion_model.*`. Only the files the chosen phases need are required.
 * --bpe: the CLIP merges file for clip-text (default ../shared/data/clip/bpe_simple_vocab_16e6.txt.gz).
 *
 *   node --conditions=latentdem-src --import tsx tools/sd-fullsize.ts [--weights W.safetensors]
 *        [--zero123-weights Z.safetensors] [--bpe bpe_simple_vocab_16e6.txt.gz] [--out bench-results]
 *        [--phases unet,vae,backward,clip-text,clip-vision,zero123] [--latent 32] [--backend webgpu]
 * (--phases defaults to every phase whose models' keys are in the given files.)
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import * as L from '@latentdem/tensor';
import { COMPVIS_PREFIX, SafetensorsFile, loadWeights, withoutInit } from '@latentdem/nn';
import type { Module } from '@latentdem/nn';
import {
  AutoencoderKL, ClipTextEncoder, ClipTokenizer, ClipVisionEncoder, SD15_CLIP_TEXT_CONFIG, SD15_UNET_CONFIG, SD15_VAE_CONFIG,
  SD_CLIP_TEXT_PREFIX, UNet, ZERO123_CLIP_VISION_CONFIG, ZERO123_CLIP_VISION_PREFIX, ZERO123_CONFIG, ZERO123_GUIDANCE_SCALE,
  ZERO123_IMAGE_SIZE, Zero123, loadZero123Weights, trainSchedule, zero123ClipPreprocess,
} from '@latentdem/diffusion';

const PHASES = ['unet', 'vae', 'backward', 'clip-text', 'clip-vision', 'zero123'] as const;
type Phase = typeof PHASES[number];
/** Phases that read --zero123-weights; the others read --weights. */
const ZERO123_PHASES: readonly Phase[] = ['clip-vision', 'zero123'];
const DEFAULT_BPE = fileURLToPath(new URL('../../shared/data/clip/bpe_simple_vocab_16e6.txt.gz', import.meta.url));
const MiB = 1024 * 1024;

interface PhaseResult {
  phase: Phase;
  device: string;
  params: number;
  load_s: number;
  cold_s?: number;
  warm_s?: number;
  backward_s?: number;
  /** Process peak resident set (includes lavapipe's device memory, which lives in host RAM). */
  peak_rss_mib: number;
  /** Device buffers after loading (weights), and the most held at once during the timed run. */
  gpu_weights_mib: number;
  gpu_peak_mib: number;
  output: { shape: number[]; std: number; finite: boolean };
  top_kernels?: { kernel: string; calls: number; ms: number; share: number }[];
  top_ops?: { op: string; calls: number; ms: number; share: number }[];
  trace_device_ms?: number;
  /** 1-minute load average when the phase's process started (set by the parent). */
  load_avg?: string;
  /** The weights file the phase read. */
  weights: string;
  note?: string;
}

const peakRssMiB = (): number => process.resourceUsage().maxRSS / 1024;
const gpuMiB = (k: 'liveBufferBytes' | 'peakBufferBytes'): number => (L.memory().gpu?.[k] ?? 0) / MiB;
const seconds = (t0: number): number => (performance.now() - t0) / 1000;

async function stats(x: L.Tensor): Promise<{ shape: number[]; std: number; finite: boolean }> {
  const d = await x.data();
  let s = 0; let s2 = 0; let finite = true;
  for (const v of d) { if (!Number.isFinite(v)) finite = false; s += v; s2 += v * v; }
  const m = s / d.length;
  return { shape: [...x.shape], std: Math.sqrt(Math.max(0, s2 / d.length - m * m)), finite };
}

interface Models { unet?: UNet; vae?: AutoencoderKL; clip?: ClipTextEncoder; vision?: ClipVisionEncoder; zero123?: Zero123; params: number; load_s: number }
type ModelName = Exclude<keyof Models, 'params' | 'load_s'>;

/** Builds (without random init) and loads the named models from `weights` (each strict within its prefix). */
async function loadModels(weights: string, backend: L.Backend, which: ModelName[], o: { tokenizer?: ClipTokenizer } = {}): Promise<Models> {
  const t0 = performance.now();
  const file = await SafetensorsFile.open(weights);
  try {
    const out: Models = { params: 0, load_s: 0 };
    const count = (m: Module): void => { out.params += m.parameters().reduce((a, p) => a + p.size, 0); };
    if (which.includes('unet')) {
      out.unet = withoutInit(() => new UNet(SD15_UNET_CONFIG, { backend })).eval();
      await loadWeights(out.unet, file, { prefix: COMPVIS_PREFIX.unet });
      count(out.unet);
    }
    if (which.includes('vae')) {
      out.vae = withoutInit(() => new AutoencoderKL(SD15_VAE_CONFIG, { backend })).eval();
      await loadWeights(out.vae, file, { prefix: COMPVIS_PREFIX.vae });
      count(out.vae);
    }
    if (which.includes('clip')) {
      out.clip = withoutInit(() => new ClipTextEncoder(SD15_CLIP_TEXT_CONFIG, { backend, tokenizer: o.tokenizer })).eval();
      await loadWeights(out.clip, file, { prefix: SD_CLIP_TEXT_PREFIX });
      count(out.clip);
    }
    if (which.includes('vision')) {
      out.vision = withoutInit(() => new ClipVisionEncoder(ZERO123_CLIP_VISION_CONFIG, { backend })).eval();
      await loadWeights(out.vision, file, { prefix: ZERO123_CLIP_VISION_PREFIX });
      count(out.vision);
    }
    if (which.includes('zero123')) {
      out.zero123 = withoutInit(() => new Zero123(ZERO123_CONFIG, { backend })).eval();
      await loadZero123Weights(out.zero123, file);
      count(out.zero123);
    }
    await backend.sync();
    out.load_s = seconds(t0);
    return out;
  } finally {
    await file.close();
  }
}

/** Times `run` twice (cold, then warm); the output of the second run is kept for stats. */
async function coldWarm(run: () => L.Tensor): Promise<{ cold: number; warm: number; out: L.Tensor }> {
  let out: L.Tensor | null = null;
  const once = async (): Promise<number> => {
    out?.dispose();
    const t0 = performance.now();
    out = L.noGrad(() => L.tidy(run));
    await out.data();
    return seconds(t0);
  };
  const cold = await once();
  const warm = await once();
  return { cold, warm, out: out! };
}

function summarize(events: L.TraceEvent[], key: (e: L.TraceEvent) => string): { name: string; calls: number; ms: number; share: number }[] {
  const rows = new Map<string, { calls: number; ms: number }>();
  let total = 0;
  for (const e of events) {
    if (e.device === undefined) continue;
    const r = rows.get(key(e)) ?? { calls: 0, ms: 0 };
    r.calls++; r.ms += e.device / 1000; total += e.device / 1000;
    rows.set(key(e), r);
  }
  return [...rows].sort((a, b) => b[1].ms - a[1].ms).slice(0, 12).map(([name, r]) => ({ name, calls: r.calls, ms: r.ms, share: r.ms / total }));
}

/** A key prefix each model's weights have (Zero123's cc_projection tells its UNet from SD's). */
const MODEL_PREFIX: Record<ModelName, string> = {
  unet: COMPVIS_PREFIX.unet, vae: COMPVIS_PREFIX.vae, clip: SD_CLIP_TEXT_PREFIX, vision: ZERO123_CLIP_VISION_PREFIX, zero123: 'cc_projection.',
};

/** The phases whose models all have keys in their file. */
async function phasesWithKeys(fileFor: (p: Phase) => string | undefined): Promise<Phase[]> {
  const keys = new Map<string, string[]>();
  const out: Phase[] = [];
  for (const p of PHASES) {
    const path = fileFor(p);
    if (!path) continue;
    if (!keys.has(path)) {
      const f = await SafetensorsFile.open(path);
      keys.set(path, [...f.entries.keys()]);
      await f.close();
    }
    const k = keys.get(path)!;
    if (PHASE_MODELS[p].every((m) => k.some((n) => n.startsWith(MODEL_PREFIX[m])))) out.push(p);
  }
  if (!out.length) throw new Error('no phase has its weights in the given files');
  return out;
}

const PHASE_MODELS: Record<Phase, ModelName[]> = {
  unet: ['unet'], vae: ['vae'], backward: ['unet', 'vae'], 'clip-text': ['clip'], 'clip-vision': ['vision'], zero123: ['zero123'],
};

async function runPhase(phase: Phase, weights: string, backendName: L.BackendName, latent: number, outDir: string, bpe: string): Promise<PhaseResult> {
  const backend = await L.setBackend(backendName);
  const device = backendName === 'webgpu' ? `webgpu (${(backend as unknown as { ctx: { adapterInfo: string } }).ctx.adapterInfo})` : 'cpu';
  const tokenizer = phase === 'clip-text' ? await ClipTokenizer.fromFile(bpe) : undefined;
  const models = await loadModels(weights, backend, PHASE_MODELS[phase], { tokenizer });
  const base = { phase, device, weights, params: models.params, load_s: models.load_s, gpu_weights_mib: gpuMiB('liveBufferBytes') };
  const gen = new L.Generator(1);
  if (phase === 'clip-text') {
    const clip = models.clip!;
    // cache: false, so the warm run encodes again (the cache would also hash every weight on the first call).
    L.resetPeakMemory();
    let out: L.Tensor | null = null;
    const once = async (): Promise<number> => {
      out?.dispose();
      const t0 = performance.now();
      out = await clip.encodePrompt('', { cache: false });
      await out.data();
      return seconds(t0);
    };
    const cold = await once();
    const warm = await once();
    const onHost = clip.text_model.embeddings.tokenTableOnHost;
    return {
      ...base, cold_s: cold, warm_s: warm, peak_rss_mib: peakRssMiB(), gpu_peak_mib: gpuMiB('peakBufferBytes'), output: await stats(out!),
      note: `encodePrompt(''): 77 tokens; token table ${onHost ? 'on the host (exceeds the device binding limit)' : 'on the device'}`,
    };
  }
  if (phase === 'clip-vision') {
    const vision = models.vision!;
    const image = L.rand([1, 3, ZERO123_IMAGE_SIZE, ZERO123_IMAGE_SIZE], { generator: gen }).mul(2).sub(1);
    L.resetPeakMemory();
    const r = await coldWarm(() => vision.forward(zero123ClipPreprocess(image, { size: vision.config.input_resolution })));
    return { ...base, cold_s: r.cold, warm_s: r.warm, peak_rss_mib: peakRssMiB(), gpu_peak_mib: gpuMiB('peakBufferBytes'), output: await stats(r.out), note: `${ZERO123_IMAGE_SIZE}x${ZERO123_IMAGE_SIZE} image, bicubic to ${vision.config.input_resolution}` };
  }
  if (phase === 'zero123') {
    const model = models.zero123!;
    const c = model.latentChannels;
    const embedding = L.randn([1, model.config.clip_dim], { generator: gen });
    const inputLatent = L.randn([1, c, latent, latent], { generator: gen });
    const x = L.randn([1, c, latent, latent], { generator: gen });
    const cond = L.noGrad(() => model.conditioning(embedding, { polar: 0.3, azimuth: 1.2, radius: 0.1 }, inputLatent));
    L.resetPeakMemory();
    const r = await coldWarm(() => model.guidedEps(x, 500, cond, ZERO123_GUIDANCE_SCALE));
    return { ...base, cold_s: r.cold, warm_s: r.warm, peak_rss_mib: peakRssMiB(), gpu_peak_mib: gpuMiB('peakBufferBytes'), output: await stats(r.out), note: `guided step, scale ${ZERO123_GUIDANCE_SCALE}, UNet batch 2 [uncond; cond]` };
  }
  const ctxDim = SD15_UNET_CONFIG.context_dim ?? 768;
  if (phase === 'unet') {
    const unet = models.unet!;
    const x = L.randn([2, 4, latent, latent], { generator: gen });
    const context = L.randn([2, 77, ctxDim], { generator: gen });
    const step = async (): Promise<number> => {
      const t0 = performance.now();
      const eps = L.noGrad(() => L.tidy(() => unet.forward(x, [500, 500], context)));
      await eps.data();
      const s = seconds(t0);
      eps.dispose();
      return s;
    };
    L.resetPeakMemory();
    const cold = await step();
    const warm = await step();
    const gpuPeak = gpuMiB('peakBufferBytes');
    L.startTrace({ deviceTiming: true });
    const eps = L.noGrad(() => L.tidy(() => unet.forward(x, [500, 500], context)));
    const output = await stats(eps);
    const events = await L.stopTraceTimed();
    writeFileSync(join(outDir, 'sd-fullsize-unet-trace.json'), JSON.stringify(L.traceToChrome(events)));
    const kernels = summarize(events, (e) => e.kernel);
    const ops = summarize(events, (e) => e.op);
    return {
      ...base, cold_s: cold, warm_s: warm, peak_rss_mib: peakRssMiB(), gpu_peak_mib: gpuPeak, output,
      top_kernels: kernels.map((r) => ({ kernel: r.name, calls: r.calls, ms: r.ms, share: r.share })),
      top_ops: ops.map((r) => ({ op: r.name, calls: r.calls, ms: r.ms, share: r.share })),
      trace_device_ms: events.reduce((a, e) => a + (e.device ?? 0), 0) / 1000,
    };
  }
  if (phase === 'vae') {
    const vae = models.vae!;
    const z = L.randn([1, 4, latent, latent], { generator: gen });
    let img: L.Tensor | null = null;
    const step = async (): Promise<number> => {
      img?.dispose();
      const t0 = performance.now();
      img = L.noGrad(() => L.tidy(() => vae.decodeLatent(z)));
      await img.data();
      return seconds(t0);
    };
    L.resetPeakMemory();
    const cold = await step();
    const warm = await step();
    return { ...base, cold_s: cold, warm_s: warm, peak_rss_mib: peakRssMiB(), gpu_peak_mib: gpuMiB('peakBufferBytes'), output: await stats(img!) };
  }
  // backward: the latent posterior sampler's gradient through one guided UNet step and the decoder
  // Frozen weights: the samplers need d/dz only, not 943M weight gradients.
  const unet = models.unet!.requireGrad(false);
  const vae = models.vae!.requireGrad(false).gradientCheckpointing();   // the UNet checkpoints per its config (use_checkpoint)
  const a = trainSchedule().alphasCumprod[500];
  const z = L.randn([1, 4, latent, latent], { generator: gen }).requireGrad();
  const context = L.randn([2, 77, ctxDim], { generator: gen });
  const size = latent * vae.downsampleFactor;
  const y = L.randn([1, 3, size, size], { generator: gen }).mul(0.5);
  L.resetPeakMemory();
  const t0 = performance.now();
  // No tidy here: the tape needs every intermediate until backward().
  const eps2 = unet.forward(L.concat([z, z], 0), [500, 500], context);
  const [epsU, epsC] = L.split(eps2, [1, 1], 0);
  const eps = epsU.add(epsC.sub(epsU).mul(7.5));
  const x0 = z.sub(eps.mul(Math.sqrt(1 - a))).div(Math.sqrt(a));
  const loss = y.sub(vae.decodeLatent(x0)).square().sum().sqrt();
  await loss.data();
  const forward = seconds(t0);
  const t1 = performance.now();
  loss.backward();
  const output = await stats(z.grad!);
  const backward = seconds(t1);
  return { ...base, cold_s: forward, backward_s: backward, peak_rss_mib: peakRssMiB(), gpu_peak_mib: gpuMiB('peakBufferBytes'), output };
}

function markdown(results: PhaseResult[], meta: Record<string, unknown>): string {
  const f = (v: number | undefined, d = 1): string => (v === undefined ? '—' : v.toFixed(d));
  const files = [meta.weights ? `--weights ${String(meta.weights)}` : '', meta.zero123_weights ? `--zero123-weights ${String(meta.zero123_weights)}` : ''].filter(Boolean).join(', ');
  const lines = [
    `# Full-size SD 1.5 / Zero123 on latentdem (${String(meta.device)})`, '',
    `Weights: ${files}; latent ${String(meta.latent)}x${String(meta.latent)}; load average (1 min) ${String(meta.load_start)} at start, ${String(meta.load_end)} at end; per phase at its start: ${results.map((r) => `${r.phase} ${r.load_avg ?? '?'}`).join(', ')}.`, '',
    '| phase | what | params | load s | first run s | warm run s | backward s | peak RSS MiB | GPU weights MiB | GPU peak MiB |',
    '|---|---|---|---|---|---|---|---|---|---|',
  ];
  const what: Record<Phase, string> = {
    unet: `UNet step, batch 2, ${String(meta.latent)}x${String(meta.latent)} latent`,
    vae: `VAE decode to ${Number(meta.latent) * 8}x${Number(meta.latent) * 8}`,
    backward: 'guided UNet step + decode, d/dz',
    'clip-text': "SD text encoder, encodePrompt('')",
    'clip-vision': `ViT-L/14, one ${ZERO123_IMAGE_SIZE}x${ZERO123_IMAGE_SIZE} image -> 224`,
    zero123: `Zero123 guided step (UNet batch 2), ${String(meta.latent)}x${String(meta.latent)} latent`,
  };
  for (const r of results) {
    lines.push(`| ${r.phase} | ${what[r.phase]} | ${(r.params / 1e6).toFixed(1)}M | ${f(r.load_s)} | ${f(r.cold_s)} | ${f(r.warm_s)} | ${f(r.backward_s)} | ${f(r.peak_rss_mib, 0)} | ${f(r.gpu_weights_mib, 0)} | ${f(r.gpu_peak_mib, 0)} |`);
  }
  const u = results.find((r) => r.phase === 'unet');
  if (u?.top_kernels) {
    lines.push('', `## One UNet step, by kernel (device time from timestamp queries; ${f(u.trace_device_ms, 0)} ms in all)`, '', '| kernel | calls | ms | share |', '|---|---|---|---|');
    for (const k of u.top_kernels) lines.push(`| \`${k.kernel}\` | ${k.calls} | ${k.ms.toFixed(0)} | ${(100 * k.share).toFixed(1)} % |`);
    lines.push('', '## By op', '', '| op | calls | ms | share |', '|---|---|---|---|');
    for (const k of u.top_ops ?? []) lines.push(`| ${k.op} | ${k.calls} | ${k.ms.toFixed(0)} | ${(100 * k.share).toFixed(1)} % |`);
  }
  const notes = results.filter((r) => r.note);
  if (notes.length) {
    lines.push('', 'Notes:');
    for (const r of notes) lines.push(`- ${r.phase}: ${r.note!}; output ${JSON.stringify(r.output.shape)}, std ${r.output.std.toPrecision(3)}${r.output.finite ? '' : ', NOT FINITE'}.`);
  }
  return `${lines.join('\n')}\n`;
}

async function main(argv: string[]): Promise<void> {
  const opt = (n: string): string | undefined => { const i = argv.indexOf(`--${n}`); return i >= 0 ? argv[i + 1] : undefined; };
  const weights = opt('weights');
  const zWeights = opt('zero123-weights');
  const bpe = opt('bpe') ?? DEFAULT_BPE;
  if (!weights && !zWeights) throw new Error('usage: sd-fullsize [--weights W.safetensors] [--zero123-weights Z.safetensors] [--bpe MERGES.txt.gz] [--out DIR] [--phases unet,vae,backward,clip-text,clip-vision,zero123] [--latent 32] [--backend webgpu]');
  for (const [n, w] of [['weights', weights], ['zero123-weights', zWeights]] as const) if (w && !existsSync(w)) throw new Error(`--${n}: ${w} does not exist`);
  const fileFor = (p: Phase): string | undefined => (ZERO123_PHASES.includes(p) ? zWeights : weights);
  const latent = Number(opt('latent') ?? 32);
  if (!Number.isInteger(latent) || latent < 8 || latent % 8 !== 0) throw new Error(`--latent must be a multiple of 8, got ${opt('latent')}`);
  const backend = (opt('backend') ?? 'webgpu') as L.BackendName;
  const outDir = opt('out') ?? 'bench-results';
  mkdirSync(outDir, { recursive: true });
  const child = opt('phase') as Phase | undefined;
  if (child) {
    const r = await runPhase(child, fileFor(child)!, backend, latent, outDir, bpe);
    process.stdout.write(`RESULT ${JSON.stringify(r)}\n`);
    return;
  }
  const phases = (opt('phases')?.split(',') ?? await phasesWithKeys(fileFor)) as Phase[];
  for (const p of phases) {
    if (!PHASES.includes(p)) throw new Error(`--phases: unknown phase '${p}' (${PHASES.join(', ')})`);
    if (!fileFor(p)) throw new Error(`--phases: ${p} needs ${ZERO123_PHASES.includes(p) ? '--zero123-weights' : '--weights'}`);
  }
  if (phases.includes('clip-text') && !existsSync(bpe)) throw new Error(`--bpe: ${bpe} does not exist (clip-text needs CLIP's merges file)`);
  const load_start = loadavg()[0].toFixed(2);
  const results: PhaseResult[] = [];
  for (const p of phases) {
    const load_avg = loadavg()[0].toFixed(2);
    process.stderr.write(`sd-fullsize: ${p} (load average ${load_avg}) ...\n`);
    const r = spawnSync(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), ...argv, '--phase', p], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 64 * MiB });
    const line = r.stdout.split('\n').find((l) => l.startsWith('RESULT '));
    if (r.status !== 0 || !line) throw new Error(`phase ${p} failed (exit ${r.status}${r.signal ? `, ${r.signal}` : ''})`);
    const res = { ...(JSON.parse(line.slice(7)) as PhaseResult), load_avg };
    results.push(res);
    process.stderr.write(`sd-fullsize: ${p}: ${JSON.stringify({ cold_s: res.cold_s, warm_s: res.warm_s, backward_s: res.backward_s, peak_rss_mib: Math.round(res.peak_rss_mib), gpu_peak_mib: Math.round(res.gpu_peak_mib) })}\n`);
  }
  const meta = { weights, zero123_weights: zWeights, phases, latent, device: results[0]?.device ?? backend, load_start, load_end: loadavg()[0].toFixed(2), date: new Date().toISOString() };
  writeFileSync(join(outDir, 'sd-fullsize.json'), `${JSON.stringify({ meta, results }, null, 2)}\n`);
  writeFileSync(join(outDir, 'sd-fullsize.md'), markdown(results, meta));
  process.stdout.write(markdown(results, meta));
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main(process.argv.slice(2)).catch((e: Error) => { process.stderr.write(`sd-fullsize: ${e.message}\n`); process.exit(1); });
}
