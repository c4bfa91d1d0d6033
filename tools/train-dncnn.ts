/**
 * Trains the kernel denoiser (KERNEL_DNCNN: the paper's 5 blocks x 32 channels, batch norm, residual, with
 * sigma-normalized input) with the framework itself: synthetic motion-blur kernels (sum 1) plus Gaussian
 * noise at levels the M-step uses, log-uniform in [SIGMA_MIN, SIGMA_MAX], then projected to >= 0 and sum 1
 * exactly as the M-step projects every kernel before its prior step. The loss is the MSE between the
 * denoised and the clean kernel divided by sigma^2, so every noise level counts alike; Adam with a cosine
 * learning-rate decay over the run.
 *
 *   node --conditions=latentdem-src --import tsx tools/train-dncnn.ts --out DIR [--steps N] [--batch B]
 *        [--stop-at N] [--lr LR] [--seed S] [--backend cpu|webgpu] [--every N]
 *
 * --steps is the run's total length (the cosine schedule spans it); --stop-at K ends this part at step K, and
 * a later call with the same --out continues (changing --steps, --batch, --lr or --seed on resume is refused).
 *
 * The batch defaults to 8: at 16 the conv weight gradient's unfolded input passes 64 MiB and takes the
 * chunked path, 4x slower per sample on lavapipe.
 *
 * Resumable: DIR/checkpoint.safetensors holds weights and Adam state, DIR/state.json the step; every batch is
 * a pure function of (seed, step), so a resumed run continues bit-identically. Writes DIR/log.json and
 * DIR/loss.png. Progress on stderr (a line per report; rewritten in place on a TTY).
 */
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as L from '@latentdem/tensor';
import { Adam, CosineAnnealingLR, loadSafetensors, manualSeed, saveSafetensors } from '@latentdem/nn';
import { DnCNN, KERNEL_DNCNN, motionKernelData, portableUniform } from 'latentdem';

// Noise levels (kernel units, std): the release's M-step uses sqrt(lambda/beta) = 4.47e-4, FastEM 1.4e-3..3.2e-3;
// training reaches up to 0.05 (issue 3).
export const SIGMA_MIN = 2e-4;
export const SIGMA_MAX = 0.05;
const KERNEL_SIZE = 64;

/** steps: the run's total length (it sets the cosine schedule); stopAt: stop earlier, to resume later. */
export interface TrainArgs { out: string; steps: number; stopAt?: number; batch: number; lr: number; seed: number; backend: 'cpu' | 'webgpu'; every: number; quiet?: boolean }

function parseArgs(argv: string[]): TrainArgs {
  const get = (name: string, dflt?: string): string | undefined => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 ? argv[i + 1] : dflt;
  };
  const out = get('out');
  if (!out) throw new Error('train-dncnn: --out DIR is required');
  return {
    out, steps: Number(get('steps', '2000')), stopAt: get('stop-at') === undefined ? undefined : Number(get('stop-at')), batch: Number(get('batch', '8')), lr: Number(get('lr', '1e-3')),
    seed: Number(get('seed', '1')), backend: (get('backend', 'webgpu') as 'cpu' | 'webgpu'), every: Number(get('every', '50')),
  };
}

/** Batch `step`: clean kernels [B,1,64,64], noise levels [B,1,1,1], and the noisy kernels [B,1,64,64], projected. */
export function makeBatch(seed: number, step: number, batch: number, backend: L.Backend): { clean: L.Tensor; noisy: L.Tensor; sigma: L.Tensor } {
  const n = KERNEL_SIZE * KERNEL_SIZE;
  const clean = new Float32Array(batch * n);
  const sig = new Float32Array(batch);
  const stream = BigInt(seed) * 1_000_003n + BigInt(step);
  for (let i = 0; i < batch; i++) {
    clean.set(motionKernelData({ size: KERNEL_SIZE, intensity: 0.5, seed: (seed * 100_003 + step) * batch + i }), i * n);
    const t = portableUniform(stream, i);
    sig[i] = Math.exp(Math.log(SIGMA_MIN) + t * (Math.log(SIGMA_MAX) - Math.log(SIGMA_MIN)));
  }
  const gen = new L.Generator(seed * 1_000_003 + step);
  return L.tidy(() => {
    const c = L.tensor(clean, { shape: [batch, 1, KERNEL_SIZE, KERNEL_SIZE], backend });
    const s = L.tensor(sig, { shape: [batch, 1, 1, 1], backend });
    const noisy = c.add(L.randn([batch, 1, KERNEL_SIZE, KERNEL_SIZE], { generator: gen, backend }).mul(s)).clamp(0);
    return { clean: c, noisy: noisy.div(noisy.sum([2, 3], { keepdim: true }).maximum(1e-30)), sigma: s };
  });
}

/** Loss: mean over the batch of ||denoised - clean||^2 / (numel * sigma^2). */
export function lossOf(net: DnCNN, b: { clean: L.Tensor; noisy: L.Tensor; sigma: L.Tensor }): L.Tensor {
  return net.denoise(b.noisy, b.sigma).sub(b.clean).div(b.sigma).square().mean();
}

/** The same measure for the noisy input itself (the baseline the denoiser must beat). */
export function inputLossOf(b: { clean: L.Tensor; noisy: L.Tensor; sigma: L.Tensor }): L.Tensor {
  return b.noisy.sub(b.clean).div(b.sigma).square().mean();
}

/**
 * Loss curves as a PNG (512x256, log10 scale): the training loss in white, the noisy input's loss in gray,
 * faint lines at each power of ten.
 */
export function lossPng(path: string, series: { loss: number; input_loss?: number }[]): Promise<void> {
  const W = 512; const H = 256;
  const img = new Float32Array(W * H);
  const lines = [series.map((r) => r.loss), series.map((r) => r.input_loss ?? NaN)].map((v) => v.map((x) => Math.log10(Math.max(x, 1e-12))));
  const all = lines.flat().filter(Number.isFinite);
  const lo = Math.floor(Math.min(...all)); const hi = Math.ceil(Math.max(...all));
  const py = (v: number): number => Math.round((H - 3) - ((v - lo) / Math.max(hi - lo, 1e-9)) * (H - 6));
  for (let d = lo; d <= hi; d++) { const y = py(d); for (let x = 0; x < W; x += 2) img[y * W + x] = 0.25; }
  const plot = (ys: number[], shade: number): void => {
    const px = (i: number): number => Math.round((i / Math.max(1, ys.length - 1)) * (W - 1));
    for (let i = 0; i < ys.length; i++) {
      if (!Number.isFinite(ys[i])) continue;
      const j = i + 1 < ys.length && Number.isFinite(ys[i + 1]) ? i + 1 : i;
      const [x0, y0, x1, y1] = [px(i), py(ys[i]), px(j), py(ys[j])];
      const n = Math.max(Math.abs(x1 - x0), Math.abs(y1 - y0), 1);
      for (let k = 0; k <= n; k++) {
        const x = Math.round(x0 + ((x1 - x0) * k) / n); const y = Math.round(y0 + ((y1 - y0) * k) / n);
        for (let dy = -1; dy <= 1; dy++) if (y + dy >= 0 && y + dy < H) img[(y + dy) * W + x] = Math.max(img[(y + dy) * W + x], shade);
      }
    }
  };
  plot(lines[1], 0.5);
  plot(lines[0], 1);
  return L.writeImage(path, L.tensor(img, { shape: [1, H, W], backend: 'cpu' }));
}

/** Trains (or resumes) into `a.out`; returns the final state dict file's path. */
export async function train(a: TrainArgs): Promise<string> {
  const backend = await L.initBackend(a.backend);
  mkdirSync(a.out, { recursive: true });
  manualSeed(a.seed);
  const net = new DnCNN(KERNEL_DNCNN, { backend });
  net.train();
  const params = [...net.parameters()];
  for (const p of params) p.requireGrad();
  const opt = new Adam(params, { lr: a.lr });
  const schedule = new CosineAnnealingLR(opt, { tMax: a.steps, etaMin: a.lr / 100 });
  const ckpt = join(a.out, 'checkpoint.safetensors');
  const statePath = join(a.out, 'state.json');
  let step = 0;
  const log: { step: number; loss: number; input_loss: number; lr: number; samples_per_s: number }[] = [];
  if (existsSync(statePath) && existsSync(ckpt)) {
    const st = JSON.parse(readFileSync(statePath, 'utf8')) as { step: number; log: typeof log; optimizer: { lr: number; steps: number[] }; run?: Record<string, number> };
    for (const key of ['steps', 'batch', 'lr', 'seed'] as const) {
      if (st.run && st.run[key] !== a[key]) throw new Error(`train-dncnn: ${a.out} was started with --${key} ${st.run[key]}; resume it with the same value (got ${a[key]}) or use a new --out`);
    }
    const saved = await loadSafetensors(ckpt, { backend });
    const weights = new Map([...saved].filter(([k]) => !k.startsWith('optimizer.')));
    net.loadStateDict(weights, { strict: true });
    const optState = new Map([...saved].filter(([k]) => k.startsWith('optimizer.')).map(([k, v]) => [k.slice(10), v]));
    opt.loadStateDict({ lr: st.optimizer.lr, steps: st.optimizer.steps, state: optState });
    step = st.step; log.push(...st.log);
    schedule.loadStateDict({ lastEpoch: step });
    process.stderr.write(`train-dncnn: resumed at step ${step}\n`);
  }
  const tty = process.stderr.isTTY;
  let t0 = performance.now(); let samples = 0; let lossSum = 0; let inSum = 0; let lossN = 0;
  const save = async (): Promise<void> => {
    await backend.sync();
    const tensors = new Map<string, L.Tensor>(net.stateDict());
    const os = opt.stateDict();
    for (const [k, v] of os.state) tensors.set(`optimizer.${k}`, v);
    await saveSafetensors(`${ckpt}.tmp`, tensors, { overwrite: true, metadata: { config: JSON.stringify(KERNEL_DNCNN), steps: String(step) } });
    renameSync(`${ckpt}.tmp`, ckpt);
    writeFileSync(statePath, JSON.stringify({ step, log, optimizer: { lr: os.lr, steps: os.steps }, run: { steps: a.steps, batch: a.batch, lr: a.lr, seed: a.seed } }));
    writeFileSync(join(a.out, 'log.json'), JSON.stringify({ config: KERNEL_DNCNN, args: a, log }, null, 1));
    await lossPng(join(a.out, 'loss.png'), log);
  };
  const end = Math.min(a.steps, a.stopAt ?? a.steps);
  while (step < end) {
    const [lossT, inT] = L.tidy(() => {
      const b = makeBatch(a.seed, step, a.batch, backend);
      opt.zeroGrad();
      const loss = lossOf(net, b);
      loss.backward();
      opt.step();
      return [loss.detach(), inputLossOf(b)];
    });
    lossSum += await lossT.item(); inSum += await inT.item(); lossN++;
    lossT.dispose(); inT.dispose();
    step++; samples += a.batch;
    schedule.step();
    if (step % a.every === 0 || step === end) {
      const dt = (performance.now() - t0) / 1000;
      const rate = samples / dt;
      log.push({ step, loss: lossSum / lossN, input_loss: inSum / lossN, lr: opt.lr, samples_per_s: rate });
      const eta = ((a.steps - step) * a.batch) / rate;
      const line = `train-dncnn: step ${step}/${a.steps} loss ${(lossSum / lossN).toExponential(3)} (noisy input ${(inSum / lossN).toExponential(3)}) ${rate.toFixed(1)} samples/s ETA ${Math.round(eta)}s`;
      if (!a.quiet) process.stderr.write(tty ? `\r${line}` : `${line}\n`);
      await save();
      t0 = performance.now(); samples = 0; lossSum = 0; inSum = 0; lossN = 0;
    }
  }
  if (tty) process.stderr.write('\n');
  const final = new Map(net.stateDict());
  await saveSafetensors(join(a.out, 'dncnn-kernel.safetensors'), final, { dtype: 'F32', overwrite: true, metadata: { config: JSON.stringify(KERNEL_DNCNN), steps: String(step) } });
  process.stderr.write(`train-dncnn: wrote ${join(a.out, 'dncnn-kernel.safetensors')}\n`);
  net.dispose();
  return join(a.out, 'dncnn-kernel.safetensors');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  await train(parseArgs(process.argv.slice(2)));
  process.exit(0);
}
