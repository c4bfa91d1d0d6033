/**
 * Full-size Stable Diffusion 1.5 runs on a latentdem-layout checkpoint (real, or random from
 * tools/sd-random-weights.ts): time, peak RSS and GPU-buffer bytes of
 *   unet      one UNet step at a 32x32 latent, batch 2 (as with classifier-free guidance), cold and warm,
 *             then a device-timed trace of a third step (top kernels by GPU time);
 *   vae       a VAE decode of a 4x32x32 latent to 256x256, cold and warm;
 *   backward  d/dz of ||y - D(x0(z))|| through the guided UNet step (batch 2) and the decoder, as the latent
 *             posterior samplers need it.
 * Each phase runs in its own process so its peak RSS is its own. Writes OUT/sd-fullsize.{json,md}.
 *
 *   node --conditions=latentdem-src --import tsx tools/sd-fullsize.ts --weights W.safetensors
 *        [--out bench-results] [--phases unet,vae,backward] [--latent 32] [--backend webgpu]
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import * as L from '@latentdem/tensor';
import { COMPVIS_PREFIX, SafetensorsFile, loadWeights, withoutInit } from '@latentdem/nn';
import { AutoencoderKL, SD15_UNET_CONFIG, SD15_VAE_CONFIG, UNet, trainSchedule } from '@latentdem/diffusion';

const PHASES = ['unet', 'vae', 'backward'] as const;
type Phase = typeof PHASES[number];
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

async function loadModels(weights: string, backend: L.Backend, which: ('unet' | 'vae')[]): Promise<{ unet?: UNet; vae?: AutoencoderKL; params: number; load_s: number }> {
  const t0 = performance.now();
  const file = await SafetensorsFile.open(weights);
  try {
    const out: { unet?: UNet; vae?: AutoencoderKL; params: number; load_s: number } = { params: 0, load_s: 0 };
    if (which.includes('unet')) {
      out.unet = withoutInit(() => new UNet(SD15_UNET_CONFIG, { backend })).eval();
      await loadWeights(out.unet, file, { prefix: COMPVIS_PREFIX.unet });
      out.params += out.unet.parameters().reduce((a, p) => a + p.size, 0);
    }
    if (which.includes('vae')) {
      out.vae = withoutInit(() => new AutoencoderKL(SD15_VAE_CONFIG, { backend })).eval();
      await loadWeights(out.vae, file, { prefix: COMPVIS_PREFIX.vae });
      out.params += out.vae.parameters().reduce((a, p) => a + p.size, 0);
    }
    await backend.sync();
    out.load_s = seconds(t0);
    return out;
  } finally {
    await file.close();
  }
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

async function runPhase(phase: Phase, weights: string, backendName: L.BackendName, latent: number, outDir: string): Promise<PhaseResult> {
  const backend = await L.setBackend(backendName);
  const device = backendName === 'webgpu' ? `webgpu (${(backend as unknown as { ctx: { adapterInfo: string } }).ctx.adapterInfo})` : 'cpu';
  const models = await loadModels(weights, backend, phase === 'unet' ? ['unet'] : phase === 'vae' ? ['vae'] : ['unet', 'vae']);
  const base = { phase, device, params: models.params, load_s: models.load_s, gpu_weights_mib: gpuMiB('liveBufferBytes') };
  const gen = new L.Generator(1);
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
  const vae = models.vae!.requireGrad(false);
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
  const lines = [
    `# Full-size SD 1.5 on latentdem (${String(meta.device)})`, '',
    `Weights ${String(meta.weights)}; latent ${String(meta.latent)}x${String(meta.latent)}; load average ${String(meta.load_start)} at start, ${String(meta.load_end)} at end.`, '',
    '| phase | what | params | load s | first run s | warm run s | backward s | peak RSS MiB | GPU weights MiB | GPU peak MiB |',
    '|---|---|---|---|---|---|---|---|---|---|',
  ];
  const what: Record<Phase, string> = {
    unet: `UNet step, batch 2, ${String(meta.latent)}x${String(meta.latent)} latent`,
    vae: `VAE decode to ${Number(meta.latent) * 8}x${Number(meta.latent) * 8}`,
    backward: 'guided UNet step + decode, d/dz',
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
  return `${lines.join('\n')}\n`;
}

async function main(argv: string[]): Promise<void> {
  const opt = (n: string): string | undefined => { const i = argv.indexOf(`--${n}`); return i >= 0 ? argv[i + 1] : undefined; };
  const weights = opt('weights');
  if (!weights) throw new Error('usage: sd-fullsize --weights W.safetensors [--out DIR] [--phases unet,vae,backward] [--latent 32] [--backend webgpu]');
  if (!existsSync(weights)) throw new Error(`--weights: ${weights} does not exist`);
  const latent = Number(opt('latent') ?? 32);
  if (!Number.isInteger(latent) || latent < 8 || latent % 8 !== 0) throw new Error(`--latent must be a multiple of 8, got ${opt('latent')}`);
  const backend = (opt('backend') ?? 'webgpu') as L.BackendName;
  const outDir = opt('out') ?? 'bench-results';
  mkdirSync(outDir, { recursive: true });
  const child = opt('phase') as Phase | undefined;
  if (child) {
    const r = await runPhase(child, weights, backend, latent, outDir);
    process.stdout.write(`RESULT ${JSON.stringify(r)}\n`);
    return;
  }
  const phases = (opt('phases') ?? PHASES.join(',')).split(',') as Phase[];
  for (const p of phases) if (!PHASES.includes(p)) throw new Error(`--phases: unknown phase '${p}' (${PHASES.join(', ')})`);
  const load_start = loadavg()[0].toFixed(2);
  const results: PhaseResult[] = [];
  for (const p of phases) {
    process.stderr.write(`sd-fullsize: ${p} ...\n`);
    const r = spawnSync(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), ...argv, '--phase', p], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 64 * MiB });
    const line = r.stdout.split('\n').find((l) => l.startsWith('RESULT '));
    if (r.status !== 0 || !line) throw new Error(`phase ${p} failed (exit ${r.status}${r.signal ? `, ${r.signal}` : ''})`);
    const res = JSON.parse(line.slice(7)) as PhaseResult;
    results.push(res);
    process.stderr.write(`sd-fullsize: ${p}: ${JSON.stringify({ cold_s: res.cold_s, warm_s: res.warm_s, backward_s: res.backward_s, peak_rss_mib: Math.round(res.peak_rss_mib), gpu_peak_mib: Math.round(res.gpu_peak_mib) })}\n`);
  }
  const meta = { weights, latent, device: results[0]?.device ?? backend, load_start, load_end: loadavg()[0].toFixed(2), date: new Date().toISOString() };
  writeFileSync(join(outDir, 'sd-fullsize.json'), `${JSON.stringify({ meta, results }, null, 2)}\n`);
  writeFileSync(join(outDir, 'sd-fullsize.md'), markdown(results, meta));
  process.stdout.write(markdown(results, meta));
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main(process.argv.slice(2)).catch((e: Error) => { process.stderr.write(`sd-fullsize: ${e.message}\n`); process.exit(1); });
}
