/**
 * Plain kernel-denoising error: held-out kernels (shared/data/mstep-eval/kernels.safetensors, never used in
 * training) plus Gaussian noise at several levels, denoised by (a) our DnCNN, (b) the release's FDnCNN, and
 * the baseline: the noisy kernel clipped at 0 and renormalized to sum 1. Mean squared error per kernel.
 *
 *   LATENTDEM_BACKEND=webgpu node --conditions=latentdem-src --import tsx tools/eval-denoise.ts \
 *     [--limit N] [--weights FILE] [--no-release] [--out DIR]
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as L from '@latentdem/tensor';
import { loadSafetensors, loadTorchCheckpoint } from '@latentdem/nn';
import { DnCNN, RELEASE_FDNCNN, denoiseKernel, kernelMse, loadDnCNN } from 'latentdem';

const argv = process.argv.slice(2);
const opt = (name: string): string | undefined => { const i = argv.indexOf(`--${name}`); return i >= 0 ? argv[i + 1] : undefined; };
const limit = Number(opt('limit') ?? 100);
const weights = opt('weights') ?? join(process.cwd(), 'weights', 'dncnn-kernel', 'dncnn-kernel.safetensors');
const withRelease = !argv.includes('--no-release');
const outDir = opt('out') ?? 'bench-results';
// Noise levels (kernel units): the release's sqrt(lambda/beta), FastEM's range, and up to 0.05.
const SIGMAS = [4.47e-4, 1.4e-3, 3.2e-3, 1e-2, 5e-2];

const backend = await L.ready();
const shared = join(process.cwd(), '..', 'shared');
const kernels = (await loadSafetensors(join(shared, 'data', 'mstep-eval', 'kernels.safetensors'), { backend: 'cpu' })).get('kernels')!;
const n = Math.min(limit, kernels.shape[0]);
const ours = await loadDnCNN(weights, { backend });
let release: DnCNN | null = null;
if (withRelease) {
  release = new DnCNN(RELEASE_FDNCNN, { backend });
  release.loadStateDict(await loadTorchCheckpoint(join(shared, 'data', 'latentdem-release', 'kernel_denoiser_fdncnn_nb20_nc64.pth'), { backend, allowModuleRecords: true }));
  release.eval();
}
const rows: { sigma: number; n: number; noisy_clipped: number; ours: number; release: number | null }[] = [];
const all = await kernels.data();
for (const sigma of SIGMAS) {
  let eBase = 0; let eOurs = 0; let eRel = 0;
  for (let i = 0; i < n; i++) {
    const clean = all.subarray(i * 4096, (i + 1) * 4096);
    const res = L.tidy(() => {
      const k = L.tensor(clean, { shape: [1, 1, 64, 64], backend });
      const noisy = k.add(L.randn([1, 1, 64, 64], { seed: 1_000_000 + i, backend }).mul(sigma));
      // Every denoiser gets the projected noisy kernel, as the M-step gives it.
      const clipped = noisy.clamp(0);
      const base = clipped.div(clipped.sum());
      return { base, ours: denoiseKernel(ours, base, sigma), rel: release ? denoiseKernel(release, base, sigma) : null };
    });
    eBase += kernelMse(await res.base.data(), clean);
    eOurs += kernelMse(await res.ours.data(), clean);
    if (res.rel) eRel += kernelMse(await res.rel.data(), clean);
    res.base.dispose(); res.ours.dispose(); res.rel?.dispose();
  }
  rows.push({ sigma, n, noisy_clipped: eBase / n, ours: eOurs / n, release: release ? eRel / n : null });
  process.stderr.write(`eval-denoise: sigma ${sigma} done\n`);
}
const md = ['| noise std | kernels | noisy, clipped + renormalized | ours (DnCNN 5x32) | release FDnCNN (20x64) |', '|---|---|---|---|---|',
  ...rows.map((r) => `| ${r.sigma} | ${r.n} | ${r.noisy_clipped.toExponential(3)} | ${r.ours.toExponential(3)} | ${r.release === null ? '—' : r.release.toExponential(3)} |`)].join('\n');
mkdirSync(outDir, { recursive: true });
writeFileSync(join(outDir, 'eval-denoise.json'), JSON.stringify({ weights, rows }, null, 1));
writeFileSync(join(outDir, 'eval-denoise.md'), `${md}\n`);
process.stdout.write(`${md}\n`);
process.exit(0);
