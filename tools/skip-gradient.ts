/**
 * Skip-gradient (LatentDEM paper, Technique 2): its speed-up and its effect on kernel and image error on the same
 * inputs, with every step full as the reference.
 *   gaussian   the closed-form problem of latentdem's `testing` (exact Gaussian prior, linear decoder, 7 x 7 blur):
 *              kernel MSE and image error against the truth, over several seeds;
 *   fixture    the fixture-size SD models (weights/fixture-small, random weights: the output means nothing) on a
 *              SIZE x SIZE noise image: time only.
 * Skip: a full step every 16 and in the last 40 of 1000 (scaled to the run's length), as the release's
 * commented-out rule. Writes OUT/skip-gradient.{json,md}.
 *
 *   node --conditions=latentdem-src --import tsx tools/skip-gradient.ts [--steps 1000] [--seeds 5] [--step-size S]
 *        [--fixture-steps 100] [--size 64] [--backend webgpu] [--out bench-results]
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as L from '@latentdem/tensor';
import { deblur, kernelMse, loadPrior, testing } from 'latentdem';

const argv = process.argv.slice(2);
const opt = (n: string): string | undefined => { const i = argv.indexOf(`--${n}`); return i >= 0 ? argv[i + 1] : undefined; };
const steps = Number(opt('steps') ?? 1000);
const seeds = Number(opt('seeds') ?? 5);
const stepSize = Number(opt('step-size') ?? 2);
const fixtureSteps = Number(opt('fixture-steps') ?? 100);
const size = Number(opt('size') ?? 64);
const backendName = (opt('backend') ?? 'webgpu') as L.BackendName;
const outDir = opt('out') ?? 'bench-results';
const backend = await L.setBackend(backendName);
const skip = { every: 16 } as const;
const load0 = loadavg()[0];

interface Row { mode: 'full' | 'skip'; seed: number; seconds: number; fullSteps: number; kernelMse: number; imageRelErr: number }
const rows: Row[] = [];
for (let i = 0; i < seeds; i++) {
  const seed = 11 + 10 * i;
  const p = testing.gaussProblem(backend, seed);
  const x = await p.xTrue.data();
  for (const mode of ['full', 'skip'] as const) {
    const t0 = performance.now();
    const r = await deblur({
      prior: p.prior, y: p.y, steps, kernelSize: testing.GAUSS.kernelSize, kernelPrior: 'none', sigma: testing.GAUSS.sigma,
      stepSize, anneal: 'none', recenter: false, seed: 1, skip: mode === 'skip' ? skip : false,
    });
    const seconds = (performance.now() - t0) / 1000;
    const k = await r.kernel.data(); const img = await r.image.data();
    let e = 0, n = 0; for (let j = 0; j < img.length; j++) { e += (img[j] - x[j]) ** 2; n += x[j] ** 2; }
    rows.push({ mode, seed, seconds, fullSteps: r.record.steps.filter((s) => s.full).length, kernelMse: kernelMse(k, p.kTrue), imageRelErr: Math.sqrt(e / n) });
    process.stderr.write(`gaussian seed ${seed} ${mode}: ${seconds.toFixed(1)} s, kernel MSE ${rows[rows.length - 1].kernelMse.toExponential(2)}\n`);
    r.kernel.dispose(); r.image.dispose();
  }
  p.dispose();
}

const fixtureJson = fileURLToPath(new URL('../weights/fixture-small/prior.json', import.meta.url));
const fixture: { mode: string; seconds: number; fullSteps: number }[] = [];
if (fixtureSteps > 0 && existsSync(fixtureJson)) {
  const prior = await loadPrior(fixtureJson, { backend });
  const y = L.randn([3, size, size], { seed: 3, backend }).mul(0.3);
  for (const mode of ['full', 'skip'] as const) {
    const t0 = performance.now();
    const r = await deblur({ prior, y, steps: fixtureSteps, kernelSize: Math.min(64, size / 2), skip: mode === 'skip' ? skip : false });
    fixture.push({ mode, seconds: (performance.now() - t0) / 1000, fullSteps: r.record.steps.filter((s) => s.full).length });
    process.stderr.write(`fixture ${mode}: ${fixture[fixture.length - 1].seconds.toFixed(1)} s\n`);
    r.kernel.dispose(); r.image.dispose();
  }
  y.dispose(); prior.dispose();
}

const mean = (v: number[]): number => v.reduce((a, b) => a + b, 0) / v.length;
const pick = (mode: 'full' | 'skip'): Row[] => rows.filter((r) => r.mode === mode);
const summary = (['full', 'skip'] as const).map((mode) => ({
  mode, fullSteps: pick(mode)[0]?.fullSteps, seconds: mean(pick(mode).map((r) => r.seconds)),
  kernelMse: mean(pick(mode).map((r) => r.kernelMse)), imageRelErr: mean(pick(mode).map((r) => r.imageRelErr)),
  kernelBetter: pick(mode).filter((r, i) => r.kernelMse <= pick(mode === 'full' ? 'skip' : 'full')[i].kernelMse).length,
}));
const result = { backend: backend.name, steps, seeds, stepSize, skip, load_avg: { start: load0, end: loadavg()[0] }, rows, summary, fixture: { size, steps: fixtureSteps, runs: fixture } };
mkdirSync(outDir, { recursive: true });
writeFileSync(join(outDir, 'skip-gradient.json'), JSON.stringify(result, null, 2));
const md = [
  `# Skip-gradient: every step full vs a full step every 16 (and the last 40 of 1000), ${backend.name}`, '',
  `Closed-form problem (exact Gaussian prior, 7x7 Gaussian blur, sigma ${testing.GAUSS.sigma}), ${steps} steps, step size ${stepSize}, ${seeds} seeds (means); load average ${load0.toFixed(2)} -> ${loadavg()[0].toFixed(2)}.`, '',
  '| mode | full steps | s per run | kernel MSE | image rel. error | kernel at least as good on |', '|---|---|---|---|---|---|',
  ...summary.map((s) => `| ${s.mode} | ${s.fullSteps} | ${s.seconds.toFixed(2)} | ${s.kernelMse.toExponential(2)} | ${s.imageRelErr.toFixed(3)} | ${s.kernelBetter}/${seeds} |`),
  '', `Speed-up ${(summary[0].seconds / summary[1].seconds).toFixed(1)}x.`,
  ...(fixture.length ? ['', `Fixture-size SD models, ${size}x${size}, ${fixtureSteps} steps: full ${fixture[0].seconds.toFixed(1)} s (${fixture[0].fullSteps} full steps), skip ${fixture[1].seconds.toFixed(1)} s (${fixture[1].fullSteps} full steps): ${(fixture[0].seconds / fixture[1].seconds).toFixed(1)}x.`] : []),
];
writeFileSync(join(outDir, 'skip-gradient.md'), md.join('\n') + '\n');
process.stdout.write(md.join('\n') + '\n');
