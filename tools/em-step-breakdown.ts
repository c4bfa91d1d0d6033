/**
 * One full LatentDEM deblurring EM step at full size, broken down by phase, and the projected time of a whole
 * run with and without skip-gradient (issue 8, item 11). The step is `deblur()`'s PSLD step written out with a
 * device sync between phases, and its single backward pass split into chained vector-Jacobian products, so each
 * model's backward is timed on its own (the sum is the same gradient as one backward call):
 *
 *   unet fwd     eps = UNet(z_t, t, ""), z0 = Tweedie                          (tape on z_t)
 *   vae decode   x0 = D(z0)                                                     (tape on a z0 leaf)
 *   m-step       HQS kernel update (20 iterations, kernel denoiser) + re-centring, on x0 detached
 *   vae encode   L = ||A x0 + n - y|| + 0.1 ||E(y + x0 - A x0) - z0||          (tape on an x0 leaf)
 *   encode bwd   dL/dx0 (encoder and blur) and the direct dL/dz0
 *   decode bwd   dL/dz0 += (dD/dz0)^T dL/dx0
 *   unet bwd     dL/dz_t = (dz0/dz_t)^T dL/dz0
 *   prior step   eps and the DDIM update without tape (what a skipped step costs)
 *
 * Weights: an SD 1.5 file in the original layout (tools/sd-random-weights.ts --models unet,vae,clip writes seeded
 * random ones), loaded by `loadPrior`. The UNet runs once per step (batch 1): the release's CFG on the empty
 * prompt has cond = uncond, so its two passes give the same eps (prior.ts). Writes OUT/em-step.{json,md}.
 *
 *   node --conditions=latentdem-src --import tsx tools/em-step-breakdown.ts --weights W.safetensors
 *        [--size 256] [--kernel-size 64] [--runs 2] [--backend webgpu] [--out bench-results]
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import * as L from '@latentdem/tensor';
import type { Tensor } from '@latentdem/tensor';
import { Schedule } from '@latentdem/diffusion';
import {
  DEFAULT_KERNEL_DENOISER, HQS_DEFAULTS, KERNEL_DNCNN_LAMBDA, RELEASE_ESTEP, blurOperator, dncnnPrior, estimateKernel, isFullStep,
  loadDnCNN, loadPrior, recenterKernelTensor,
} from 'latentdem';

const argv = process.argv.slice(2);
const opt = (n: string): string | undefined => { const i = argv.indexOf(`--${n}`); return i >= 0 ? argv[i + 1] : undefined; };
const weights = opt('weights');
if (!weights) { process.stderr.write('em-step-breakdown: --weights W.safetensors is required\n'); process.exit(1); }
const size = Number(opt('size') ?? 256);
const ks = Number(opt('kernel-size') ?? 64);
const runs = Number(opt('runs') ?? 2);
const backendName = (opt('backend') ?? 'webgpu') as L.BackendName;
const outDir = opt('out') ?? 'bench-results';
const MiB = 1024 * 1024;
const rssMiB = (): number => process.memoryUsage().rss / MiB;
const peakRssMiB = (): number => process.resourceUsage().maxRSS / 1024;
const gpuPeakMiB = (): number => (L.memory().gpu?.peakBufferBytes ?? 0) / MiB;
const sync = async (t: Tensor): Promise<void> => { await t.reshape([-1]).narrow(0, 0, 1).data(); };

interface Phase { name: string; s: number; gpuPeakMiB: number; rssMiB: number }

const loadStart = loadavg()[0];
const tLoad = performance.now();
const prior = await loadPrior(weights, { backend: backendName });
const net = await loadDnCNN(DEFAULT_KERNEL_DENOISER, { backend: prior.backend });
const loadS = (performance.now() - tLoad) / 1000;
const backend = prior.backend;
const f = prior.factor;
const schedule = new Schedule({ steps: 1000, eta: 0 });
const gen = new L.Generator(0);
const y = L.randn([1, 3, size, size], { generator: gen, backend }).mul(0.3).clamp(-1, 1);
let kernel = L.tensor(Float32Array.from({ length: ks * ks }, (_, q) => (q === (ks >> 1) * ks + (ks >> 1) ? 1 : 0)), { shape: [ks, ks], backend });
let z = L.randn([1, prior.latentChannels, size / f, size / f], { generator: gen, backend });
const allRuns: Phase[][] = [];

for (let r = 0; r < runs; r++) {
  const s = schedule.steps[r * 100];
  const phases: Phase[] = [];
  let t0 = performance.now();
  const mark = async (name: string, t: Tensor): Promise<void> => {
    await sync(t);
    phases.push({ name, s: (performance.now() - t0) / 1000, gpuPeakMiB: gpuPeakMiB(), rssMiB: rssMiB() });
    L.resetPeakMemory();
    t0 = performance.now();
  };
  L.resetPeakMemory();
  const scope: Tensor[] = [];
  const keep = <T extends Tensor>(t: T): T => { scope.push(t); return t; };
  // unet forward
  const zt = keep(z.detach().requireGrad());
  const eps = keep(schedule.toEps(prior.eps(zt, s.t), zt, s));
  const z0 = keep(schedule.predictX0(zt, eps, s));
  await mark('unet fwd', z0);
  // vae decode
  const z0Leaf = keep(z0.detach().requireGrad());
  const x0 = keep(prior.decode(z0Leaf));
  await mark('vae decode fwd', x0);
  // M-step
  const next = L.tidy(() => {
    const k = estimateKernel(x0.detach().reshape([3, size, size]), y.reshape([3, size, size]), {
      kernelSize: ks, sigma: RELEASE_ESTEP.sigma, lambda: KERNEL_DNCNN_LAMBDA, prior: dncnnPrior(net), init: kernel,
    });
    return recenterKernelTensor(k);
  });
  kernel.dispose(); kernel = next;
  await mark('m-step (20 HQS iterations + re-centring)', kernel);
  // losses with the encoder
  const x0Leaf = keep(x0.detach().requireGrad());
  const A = blurOperator(kernel, [size, size]);
  const ax0 = keep(A(x0Leaf));
  const meas = keep(ax0.add(L.randn(ax0.shape, { generator: gen, backend }).mul(RELEASE_ESTEP.sigma)).sub(y).square().sum().sqrt());
  const zg = keep(prior.encode(y.add(x0Leaf.sub(ax0)), gen));
  const glue = keep(zg.sub(z0Leaf).square().sum().sqrt());
  const loss = keep(meas.mul(RELEASE_ESTEP.omega).add(glue.mul(RELEASE_ESTEP.gamma)).mul(0.8));
  await mark('vae encode fwd + losses', loss);
  loss.backward();
  const gx0 = keep(x0Leaf.grad!);
  await mark('vae encode bwd (+ blur)', gx0);
  x0.backward(gx0);
  const gz0 = keep(z0Leaf.grad!);
  await mark('vae decode bwd', gz0);
  z0.backward(gz0);
  const gzt = keep(zt.grad!);
  await mark('unet bwd', gzt);
  const zPrev = L.noGrad(() => schedule.ddimStep(z0.detach(), eps.detach(), s, 0, gen, zt.detach()).sub(gzt.mul(RELEASE_ESTEP.stepSize)));
  for (const t of scope) if (!t.isDisposed) t.dispose();
  zt.grad = null; z0Leaf.grad = null; x0Leaf.grad = null;
  z.dispose(); z = zPrev;
  // a skipped step
  const s2 = schedule.steps[r * 100 + 1];
  const zSkip = L.noGrad(() => L.tidy(() => { const e = schedule.toEps(prior.eps(z, s2.t), z, s2); return schedule.ddimStep(schedule.predictX0(z, e, s2), e, s2, 0, gen, z); }));
  await mark('prior step (skipped: UNet fwd, no tape)', zSkip);
  zSkip.dispose();
  allRuns.push(phases);
  process.stderr.write(`run ${r + 1}/${runs}: ${phases.map((p) => `${p.name} ${p.s.toFixed(1)}s (GPU peak ${p.gpuPeakMiB.toFixed(0)} MiB)`).join(', ')}; peak RSS ${peakRssMiB().toFixed(0)} MiB\n`);
}

const last = allRuns[allRuns.length - 1];
const fullS = last.filter((p) => !p.name.startsWith('prior step')).reduce((a, p) => a + p.s, 0);
const priorS = last.find((p) => p.name.startsWith('prior step'))!.s;
const fullSteps = Array.from({ length: 1000 }, (_, i) => 999 - i).filter((index) => isFullStep(index, { every: 16, cutoff: 40 })).length;
const projection = { everyStepFull_h: (1000 * fullS) / 3600, skipGradient_h: (fullSteps * fullS + (1000 - fullSteps) * priorS) / 3600, fullSteps };
const result = {
  device: backend.name, weights, size, latent: size / f, kernelSize: ks, hqsIterations: HQS_DEFAULTS.iterations, load_s: loadS,
  load_avg: { start: loadStart, end: loadavg()[0] }, peak_rss_mib: peakRssMiB(), runs: allRuns, full_step_s: fullS, prior_step_s: priorS, projection,
};
mkdirSync(outDir, { recursive: true });
writeFileSync(join(outDir, 'em-step.json'), JSON.stringify(result, null, 2));
const md = [
  `# One LatentDEM EM step at ${size}x${size} (latent ${size / f}x${size / f}), SD 1.5 configs, ${backend.name}`, '',
  `Weights ${weights}; load ${loadS.toFixed(1)} s; load average ${loadStart.toFixed(2)} at start, ${loadavg()[0].toFixed(2)} at end; peak RSS ${peakRssMiB().toFixed(0)} MiB. The table is run ${allRuns.length} of ${runs} (run 1 is cold: its pipelines compile); every run is in the JSON.`, '',
  '| phase | s | share of the full step | GPU peak MiB (phase) | RSS after MiB |', '|---|---|---|---|---|',
  ...last.map((p) => `| ${p.name} | ${p.s.toFixed(2)} | ${p.name.startsWith('prior') ? '—' : `${((100 * p.s) / fullS).toFixed(0)} %`} | ${p.gpuPeakMiB.toFixed(0)} | ${p.rssMiB.toFixed(0)} |`),
  `| **full E+M step** | **${fullS.toFixed(1)}** | 100 % | | |`, '',
  `Projected 1000-step run: every step full ${projection.everyStepFull_h.toFixed(1)} h; skip-gradient (every 16, cutoff 40: ${fullSteps} full steps) ${projection.skipGradient_h.toFixed(1)} h (${(projection.everyStepFull_h / projection.skipGradient_h).toFixed(1)}x faster).`,
];
writeFileSync(join(outDir, 'em-step.md'), md.join('\n') + '\n');
process.stdout.write(md.join('\n') + '\n');
prior.dispose();
