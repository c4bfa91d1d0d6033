/**
 * `npm run bench`: each workload on each backend, and PyTorch on the same shapes in the same run when
 * Debian's python3-torch is present. Min and median of >= 3 runs; load average at start and end.
 * Writes bench-results/bench.json and bench-results/bench.md.
 *
 * Options (env): BENCH_RUNS (default 5), BENCH_BACKENDS (default "cpu,webgpu"), BENCH_ONLY (substring filter),
 * BENCH_CPU_MAX_WORK (skip cpu rows above this many flops; the reference backend is slow by design).
 *
 * Model rows (tools/bench/models.ts MODEL_ROWS; PyTorch: tools/bench/torch_models.py), each side in a fresh child
 * process per row, ours on webgpu: BENCH_MODEL_RUNS (runs of the SD-size rows, at least 3 unless
 * BENCH_ALLOW_FEWER_RUNS=1), BENCH_EM_FULL=1 (also the SD-size EM step, ~15 min a step on lavapipe; =torch runs
 * only its PyTorch side), BENCH_KERNELS=0 / BENCH_MODELS=0 (skip a table), BENCH_TINY=1 (fixture-size configs in
 * place of SD's, for developing). See docs/bench.md.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { loadavg, cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as L from '@latentdem/tensor';
import type { Backend, BackendName } from '@latentdem/tensor';
import { WORKLOADS, type Workload } from './shapes.js';
import { MODEL_ROWS, type ModelResult, type ModelRow } from './models.js';

const here = dirname(fileURLToPath(import.meta.url));
const RUNS = Math.max(3, Number(process.env.BENCH_RUNS ?? 5));
const ONLY = process.env.BENCH_ONLY ?? '';
const CPU_MAX_WORK = Number(process.env.BENCH_CPU_MAX_WORK ?? 3e9);
const KERNELS = process.env.BENCH_KERNELS !== '0';
const MODELS = process.env.BENCH_MODELS !== '0';
const workloads = KERNELS ? WORKLOADS.filter((w) => w.name.includes(ONLY)) : [];
const modelRows = MODELS ? MODEL_ROWS.filter((m) => m.name.includes(ONLY)) : [];
/** Runs of the heavy (SD-size) model rows: BENCH_MODEL_RUNS, at least 3 unless BENCH_ALLOW_FEWER_RUNS=1. */
function modelRunsFor(m: ModelRow): number {
  const env = process.env.BENCH_MODEL_RUNS;
  if (!m.heavy || env === undefined) return RUNS;
  return Math.max(process.env.BENCH_ALLOW_FEWER_RUNS === '1' ? 1 : 3, Math.floor(Number(env)) || RUNS);
}

interface Row { workload: string; backend: string; unit: string; ms_min: number | null; ms_median: number | null; rate: number | null; torch_ms_min: number | null; torch_ms_median: number | null; torch_rate: number | null; ratio_vs_torch: number | null; note?: string }

interface ModelSide { ok: true; r: ModelResult & { torch?: string; threads?: number } }
interface ModelRowOut {
  workload: string; what: string; runs: number; loadavg_start: number[];
  ours: ModelResult | null; ours_error?: string;
  torch: (ModelResult & { torch?: string; threads?: number }) | null; torch_error?: string;
  /** torch_ms_min / ours_ms_min: > 1 means we are faster. */
  speed_ratio: number | null;
  rss_ratio: number | null;
  note?: string;
}

function resultLine<T>(stdout: string): T | null {
  const line = stdout.split('\n').find((l) => l.startsWith('RESULT '));
  return line ? JSON.parse(line.slice(7)) as T : null;
}

/** Our side of one model row, in a fresh child process (tools/bench/models.ts), so its peak RSS is its own. */
function oursModel(m: ModelRow, runs: number): { r: ModelResult } | { error: string } {
  const r = spawnSync(process.execPath, [...process.execArgv, join(here, 'models.ts')], {
    input: JSON.stringify({ row: m, runs, backend: 'webgpu' }), encoding: 'utf8', maxBuffer: 1 << 26, stdio: ['pipe', 'pipe', 'inherit'],
  });
  const res = resultLine<ModelResult>(r.stdout ?? '');
  if (r.status !== 0 || !res) return { error: `child failed (exit ${r.status}${r.signal ? `, ${r.signal}` : ''})` };
  return { r: res };
}

/** PyTorch's side of one model row (tools/bench/torch_models.py), in its own process. */
function torchModel(m: ModelRow, runs: number): { r: ModelSide['r'] } | { error: string } {
  const py = '/usr/bin/python3';
  if (!existsSync(py)) return { error: `${py} not found` };
  const r = spawnSync(py, [join(here, 'torch_models.py')], {
    input: JSON.stringify({ row: m, runs, threads: 2 }), encoding: 'utf8', maxBuffer: 1 << 26,
    env: { ...process.env, OMP_NUM_THREADS: '2', OPENBLAS_NUM_THREADS: '2' },
  });
  const res = resultLine<ModelSide['r']>(r.stdout ?? '');
  if (r.status !== 0 || !res) return { error: `torch unavailable or failed: ${(r.stderr || r.error?.message || `exit ${r.status}`).trim().split('\n').pop()}` };
  return { r: res };
}

function inputsFor(w: Workload, b: Backend): L.Tensor[] {
  const gen = new L.Generator(1);
  const r = (shape: number[]): L.Tensor => L.randn(shape, { backend: b, generator: gen });
  const d = w.dims;
  switch (w.kind) {
    case 'matmul': return [r([d[0], d[1]]), r([d[1], d[2]])];
    case 'conv2d': return [r([d[0], d[1], d[2], d[3]]), r([d[4], d[1], d[5], d[6]])];
    case 'conv2d_dx': case 'conv2d_dw': {
      const [n, , h, wd, o, kh, kw, pad] = d;
      return [r([d[0], d[1], h, wd]), r([o, d[1], kh, kw]), r([n, o, h + 2 * pad - kh + 1, wd + 2 * pad - kw + 1])];
    }
    case 'attention': return [r(d), r(d), r(d)];
    case 'softmax': return [r(d)];
    case 'groupnorm': case 'groupnorm_silu': return [r(d.slice(0, -1)), L.ones([d[1]], { backend: b }), L.zeros([d[1]], { backend: b })];
    case 'fft2': return [r(d), r(d)];
  }
}

function runOnce(w: Workload, xs: L.Tensor[]): L.Tensor {
  switch (w.kind) {
    case 'matmul': return xs[0].matmul(xs[1]);
    case 'conv2d': return L.conv2d(xs[0], xs[1], { padding: w.dims[7] });
    case 'softmax': return L.softmax(xs[0], -1);
    case 'groupnorm': return L.groupNorm(xs[0], w.dims[w.dims.length - 1], xs[1], xs[2]);
    case 'groupnorm_silu': {
      const g = w.dims[w.dims.length - 1];
      // The fused op where it exists (another change adds it to ops/nn.ts), else the two ops.
      const fused = (L as unknown as { groupNormSilu?: (x: L.Tensor, g: number, wt: L.Tensor, b: L.Tensor) => L.Tensor }).groupNormSilu;
      return 'groupNormSilu' in L && fused ? fused(xs[0], g, xs[1], xs[2]) : L.groupNorm(xs[0], g, xs[1], xs[2]).silu();
    }
    case 'attention': return L.scaledDotProductAttention(xs[0], xs[1], xs[2]);
    case 'conv2d_dx': case 'conv2d_dw': throw new Error('gradient workloads run through gradOnce');
    case 'fft2': { const [a, c] = L.fft2(xs[0], xs[1]); a.own(c); return a; }
  }
}

/**
 * conv2d_dx / conv2d_dw: the forward with tape on x (dx) or w (dw) runs untimed, then the timed region is
 * y.backward(gy), which runs only the gradient kernel asked for (the other operand does not require grad).
 */
async function gradOnce(w: Workload, b: Backend, xs: L.Tensor[]): Promise<number> {
  const [x0, w0, gy] = xs;
  const x = w.kind === 'conv2d_dx' ? x0.detach().requireGrad() : x0;
  const wt = w.kind === 'conv2d_dw' ? w0.detach().requireGrad() : w0;
  const y = L.conv2d(x, wt, { padding: w.dims[7] });
  await b.sync();
  const t0 = performance.now();
  y.backward(gy);
  const leaf = w.kind === 'conv2d_dx' ? x : wt;
  await b.sync();
  const dt = performance.now() - t0;
  leaf.grad?.dispose(); leaf.grad = null;
  y.dispose();
  if (leaf !== x0 && leaf !== w0) leaf.dispose();
  return dt;
}

async function timeWorkload(w: Workload, b: Backend): Promise<{ min: number; median: number }> {
  const xs = inputsFor(w, b);
  const grad = w.kind === 'conv2d_dx' || w.kind === 'conv2d_dw';
  const once = async (): Promise<number> => {
    if (grad) return gradOnce(w, b, xs);
    await b.sync();
    const t0 = performance.now();
    const y = L.noGrad(() => L.tidy(() => runOnce(w, xs)));
    await b.sync();
    const dt = performance.now() - t0;
    y.dispose();
    return dt;
  };
  await once(); // warm-up: pipeline compilation, pool
  const ts: number[] = [];
  for (let i = 0; i < RUNS; i++) ts.push(await once());
  for (const x of xs) x.dispose();
  ts.sort((p, q) => p - q);
  return { min: ts[0], median: ts[Math.floor(ts.length / 2)] };
}

function torchTimes(): { version: string; rows: Map<string, { ms_min: number; ms_median: number }> } | { skipped: string } {
  const py = '/usr/bin/python3';
  if (!existsSync(py)) return { skipped: `${py} not found` };
  const r = spawnSync(py, [join(here, 'torch_bench.py')], {
    input: JSON.stringify({ runs: RUNS, workloads }), encoding: 'utf8', maxBuffer: 1 << 24,
    env: { ...process.env, OMP_NUM_THREADS: '2', OPENBLAS_NUM_THREADS: '2' },
  });
  if (r.status !== 0) return { skipped: `torch unavailable: ${(r.stderr || r.error?.message || '').trim().split('\n').pop()}` };
  const out = JSON.parse(r.stdout) as { torch: string; threads: number; rows: { name: string; ms_min: number; ms_median: number }[] };
  return { version: `${out.torch} (${out.threads} threads)`, rows: new Map(out.rows.map((x) => [x.name, x])) };
}

const fmt = (v: number | null, digits = 2): string => (v === null ? '—' : v.toFixed(digits));

async function main(): Promise<void> {
  const loadStart = loadavg();
  const names = (process.env.BENCH_BACKENDS ?? 'cpu,webgpu').split(',') as BackendName[];
  const backends: Backend[] = [];
  for (const n of names) {
    try { backends.push(await L.initBackend(n)); } catch (e) { process.stderr.write(`bench: backend ${n} unavailable: ${(e as Error).message}\n`); }
  }
  // The webgpu kernels' tile and conv algorithm choices: tuned once per adapter (tuning.ts); tune now if never done.
  let tuning: string | null = null;
  if (backends.some((b) => b.name === 'webgpu')) {
    const f = await L.webGpuTuningFile();
    if (f && !f.exists && process.env.LATENTDEM_TUNING !== 'off') {
      process.stderr.write(`bench: no tuning file for this adapter; running the tuner (npm run tune)...\n`);
      await L.tuneWebGpu({ log: (l) => process.stderr.write(l + '\n') });
    }
    tuning = f ? (process.env.LATENTDEM_TUNING === 'off' ? 'built-in defaults (LATENTDEM_TUNING=off)' : f.path) : null;
  }
  process.stderr.write('bench: timing PyTorch...\n');
  const torch = workloads.length ? torchTimes() : { skipped: 'no kernel rows selected' };
  if ('skipped' in torch) process.stderr.write(`bench: PyTorch rows skipped: ${torch.skipped}\n`);
  const rows: Row[] = [];
  for (const w of workloads) {
    const t = 'skipped' in torch ? undefined : torch.rows.get(w.name);
    const torchRate = t ? w.work / t.ms_min / 1e6 : null;
    for (const b of backends) {
      if (b.name === 'cpu' && w.work > CPU_MAX_WORK) {
        rows.push({ workload: w.name, backend: b.name, unit: w.unit, ms_min: null, ms_median: null, rate: null, torch_ms_min: t?.ms_min ?? null, torch_ms_median: t?.ms_median ?? null, torch_rate: torchRate, ratio_vs_torch: null, note: 'skipped: the cpu reference backend is loops by design' });
        continue;
      }
      process.stderr.write(`bench: ${w.name} on ${b.name}\n`);
      const m = await timeWorkload(w, b);
      const rate = w.work / m.min / 1e6;
      rows.push({ workload: w.name, backend: b.name, unit: w.unit, ms_min: m.min, ms_median: m.median, rate, torch_ms_min: t?.ms_min ?? null, torch_ms_median: t?.ms_median ?? null, torch_rate: torchRate, ratio_vs_torch: torchRate ? rate / torchRate : null });
    }
  }
  for (const b of backends) await b.sync();
  const models: ModelRowOut[] = [];
  for (const m of modelRows) {
    const runs = modelRunsFor(m);
    const optIn = m.optIn ? process.env[m.optIn] : undefined;
    const out: ModelRowOut = { workload: m.name, what: m.what, runs, loadavg_start: loadavg(), ours: null, torch: null, speed_ratio: null, rss_ratio: null };
    if (m.optIn && optIn !== '1' && optIn !== 'torch') {
      out.note = `skipped: opt-in, set ${m.optIn}=1 (or ${m.optIn}=torch for the PyTorch side only)`;
      models.push(out);
      continue;
    }
    if (optIn !== 'torch') {
      process.stderr.write(`bench: model ${m.name} (ours, ${runs} runs; load ${loadavg()[0].toFixed(2)})\n`);
      const o = oursModel(m, runs);
      if ('r' in o) out.ours = o.r; else out.ours_error = o.error;
    } else out.note = `ours skipped (${m.optIn}=torch)`;
    process.stderr.write(`bench: model ${m.name} (PyTorch, ${runs} runs; load ${loadavg()[0].toFixed(2)})\n`);
    const t = torchModel(m, runs);
    if ('r' in t) out.torch = t.r; else out.torch_error = t.error;
    if (out.ours && out.torch) {
      out.speed_ratio = out.torch.ms_min / out.ours.ms_min;
      out.rss_ratio = out.ours.peak_rss_mib / out.torch.peak_rss_mib;
    }
    // A long run that is stopped still leaves the rows done so far.
    mkdirSync(join(process.cwd(), 'bench-results'), { recursive: true });
    writeFileSync(join(process.cwd(), 'bench-results', 'bench.partial.json'), JSON.stringify({ rows, models: [...models, out] }, null, 2));
    process.stderr.write(`bench:   ours ${out.ours ? `${out.ours.ms_min.toFixed(0)} ms` : out.ours_error ?? '—'}, PyTorch ${out.torch ? `${out.torch.ms_min.toFixed(0)} ms` : out.torch_error}\n`);
    models.push(out);
  }
  const loadEnd = loadavg();
  const gpu = backends.find((b) => b.name === 'webgpu') as unknown as { ctx?: { adapterInfo: string } } | undefined;
  const meta = {
    date: new Date().toISOString(), runs: RUNS, cpu: cpus()[0]?.model, cores: cpus().length,
    webgpu_adapter: gpu?.ctx?.adapterInfo ?? null, torch: 'skipped' in torch ? `skipped (${torch.skipped})` : torch.version,
    loadavg_start: loadStart, loadavg_end: loadEnd, webgpu_tuning: tuning,
    model_runs: { default: RUNS, heavy_rows: process.env.BENCH_MODEL_RUNS ?? null, allow_fewer: process.env.BENCH_ALLOW_FEWER_RUNS === '1' },
  };
  const outDir = join(process.cwd(), 'bench-results');
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, 'bench.json'), JSON.stringify({ meta, rows, models }, null, 2));
  const torchModelErrors = [...new Set(models.map((m) => m.torch_error).filter(Boolean))];
  const md = [
    `# latentdem benchmark (${meta.date})`,
    '',
    `${meta.cores} x ${meta.cpu}; WebGPU adapter: ${meta.webgpu_adapter ?? 'none'}; PyTorch: ${meta.torch}; min/median of ${RUNS} runs after a warm-up.`,
    `WebGPU kernel tuning: ${meta.webgpu_tuning ?? 'n/a'}.`,
    `Load average (1/5/15 min) at start ${loadStart.map((x) => x.toFixed(2)).join('/')}, at end ${loadEnd.map((x) => x.toFixed(2)).join('/')}.`,
    '',
    ...(workloads.length ? [
      '## Kernels',
      '',
      ...('skipped' in torch ? [`**PyTorch kernel rows skipped: ${torch.skipped}.**`, ''] : []),
      '| workload | backend | ms (min) | ms (median) | rate | PyTorch ms (min) | PyTorch ms (median) | PyTorch rate | speed ratio (PyTorch ms / ours ms) |',
      '|---|---|---:|---:|---:|---:|---:|---:|---:|',
      ...rows.map((r) => `| ${r.workload} | ${r.backend} | ${fmt(r.ms_min)} | ${fmt(r.ms_median)} | ${r.rate === null ? r.note ?? '—' : `${fmt(r.rate)} ${r.unit}`} | ${fmt(r.torch_ms_min)} | ${fmt(r.torch_ms_median)} | ${r.torch_rate === null ? '—' : `${fmt(r.torch_rate)} ${r.unit}`} | ${fmt(r.ratio_vs_torch, 3)} |`),
      '',
      'Conv rows count PyTorch-equivalent direct-convolution flops (2 N O Ho Wo C kh kw), the same for both gradients; the gradient rows time the backward only (ours: y.backward(gy) after an untimed forward with tape on x or w; PyTorch: torch.nn.grad.conv2d_input / conv2d_weight). Attention: ours L.scaledDotProductAttention, PyTorch 1.13 an explicit softmax(q k^T / sqrt(d)) v (it has no fused SDPA). Group norm + SiLU: ours the fused L.groupNormSilu when it exists, else L.groupNorm(...).silu().',
      '',
    ] : []),
    ...(modelRows.length ? [
      '## Models (webgpu backend vs PyTorch CPU; random weights)',
      '',
      ...(torchModelErrors.length ? torchModelErrors.map((e) => `**PyTorch model rows: ${e}.**`).concat(['']) : []),
      ...models.filter((m) => m.note?.startsWith('skipped')).map((m) => `**${m.workload}: ${m.note}.**`),
      ...(models.some((m) => m.note?.startsWith('skipped')) ? [''] : []),
      `Runs per row: ${RUNS}${process.env.BENCH_MODEL_RUNS ? ` (${modelRunsFor({ heavy: true } as ModelRow)} for the SD-size rows, BENCH_MODEL_RUNS)` : ''}, after one warm-up run each; each side in its own fresh process per row.`,
      '',
      '| workload | ours ms (min) | ours ms (median) | PyTorch ms (min) | PyTorch ms (median) | speed ratio (PyTorch ms / ours ms) | peak RSS ours MiB | peak RSS PyTorch MiB | RSS ratio (ours / PyTorch) | GPU buffers MiB (peak; weights) | load at start |',
      '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
      ...models.map((m) => {
        if (m.note?.startsWith('skipped')) return `| ${m.workload} | ${m.note} | | | | | | | | | ${m.loadavg_start[0].toFixed(2)} |`;
        const o = m.ours, t = m.torch;
        return `| ${m.workload} | ${o ? fmt(o.ms_min, 1) : m.ours_error ?? (m.note ? `not run: ${m.note}` : '—')} | ${o ? fmt(o.ms_median, 1) : '—'} | ${t ? fmt(t.ms_min, 1) : 'n/a'} | ${t ? fmt(t.ms_median, 1) : 'n/a'} | ${fmt(m.speed_ratio, 3)} | ${o ? fmt(o.peak_rss_mib, 0) : '—'} | ${t ? fmt(t.peak_rss_mib, 0) : '—'} | ${fmt(m.rss_ratio, 2)} | ${o && o.gpu_peak_mib !== null ? `${fmt(o.gpu_peak_mib, 0)}; ${fmt(o.gpu_weights_mib, 0)}` : '—'} | ${m.loadavg_start[0].toFixed(2)} |`;
      }),
      '',
      'What each row does:',
      ...models.map((m) => `- ${m.workload}: ${m.what}.${m.ours || m.torch ? ` Parameters: ours ${m.ours ? (m.ours.params / 1e6).toFixed(2) : '—'}M, PyTorch ${m.torch ? (m.torch.params / 1e6).toFixed(2) : '—'}M.` : ''}${m.note && !m.note.startsWith('skipped') ? ` (${m.note})` : ''}`),
      '',
      'Notes: peak RSS is VmHWM over the warm-up and the timed runs (restarted through /proc/self/clear_refs once the models are built; each process\'s lifetime peak is in the JSON); on lavapipe our device buffers live in host memory, so our RSS includes them. GPU buffers: peak of live + pooled device buffers (memory().gpu.peakBufferBytes) from the warm-up to the end, and the live bytes after building (the weights). EM step: ours is deblur() itself (step 1 is the warm-up, steps 2.. are timed); PyTorch is the same sequence written out (tools/bench/torch_models.py em_step). Differences: PyTorch\'s DDIM timesteps and annealing factor are fixed (1) while deblur() uses its schedule (no effect on the work); our composite ops and its checkpointing follow our implementation, PyTorch uses torch.utils.checkpoint (non-reentrant) at the same places (UNet ResBlocks when use_checkpoint, every BasicTransformerBlock, every VAE block in the EM rows).',
      '',
    ] : []),
  ].join('\n');
  writeFileSync(join(outDir, 'bench.md'), md);
  process.stdout.write(md);
  process.exit(0);
}

await main();
