/**
 * `npm run bench`: each workload on each backend, and PyTorch on the same shapes in the same run when
 * Debian's python3-torch is present. Min and median of >= 3 runs; load average at start and end.
 * Writes bench-results/bench.json and bench-results/bench.md.
 *
 * Options (env): BENCH_RUNS (default 5), BENCH_BACKENDS (default "cpu,webgpu"), BENCH_ONLY (substring filter),
 * BENCH_CPU_MAX_WORK (skip cpu rows above this many flops; the reference backend is slow by design).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { loadavg, cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as L from '@latentdem/tensor';
import type { Backend, BackendName } from '@latentdem/tensor';
import { WORKLOADS, type Workload } from './shapes.js';

const here = dirname(fileURLToPath(import.meta.url));
const RUNS = Math.max(3, Number(process.env.BENCH_RUNS ?? 5));
const ONLY = process.env.BENCH_ONLY ?? '';
const CPU_MAX_WORK = Number(process.env.BENCH_CPU_MAX_WORK ?? 3e9);
const workloads = WORKLOADS.filter((w) => w.name.includes(ONLY));

interface Row { workload: string; backend: string; unit: string; ms_min: number | null; ms_median: number | null; rate: number | null; torch_ms_min: number | null; torch_rate: number | null; ratio_vs_torch: number | null; note?: string }

function inputsFor(w: Workload, b: Backend): L.Tensor[] {
  const gen = new L.Generator(1);
  const r = (shape: number[]): L.Tensor => L.randn(shape, { backend: b, generator: gen });
  const d = w.dims;
  switch (w.kind) {
    case 'matmul': return [r([d[0], d[1]]), r([d[1], d[2]])];
    case 'conv2d': return [r([d[0], d[1], d[2], d[3]]), r([d[4], d[1], d[5], d[6]])];
    case 'softmax': return [r(d)];
    case 'groupnorm': return [r(d.slice(0, -1)), L.ones([d[1]], { backend: b }), L.zeros([d[1]], { backend: b })];
    case 'fft2': return [r(d), r(d)];
  }
}

function runOnce(w: Workload, xs: L.Tensor[]): L.Tensor {
  switch (w.kind) {
    case 'matmul': return xs[0].matmul(xs[1]);
    case 'conv2d': return L.conv2d(xs[0], xs[1], { padding: w.dims[7] });
    case 'softmax': return L.softmax(xs[0], -1);
    case 'groupnorm': return L.groupNorm(xs[0], w.dims[w.dims.length - 1], xs[1], xs[2]);
    case 'fft2': { const [a, c] = L.fft2(xs[0], xs[1]); a.own(c); return a; }
  }
}

async function timeWorkload(w: Workload, b: Backend): Promise<{ min: number; median: number }> {
  const xs = inputsFor(w, b);
  const once = async (): Promise<number> => {
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
  process.stderr.write('bench: timing PyTorch...\n');
  const torch = torchTimes();
  if ('skipped' in torch) process.stderr.write(`bench: PyTorch rows skipped: ${torch.skipped}\n`);
  const rows: Row[] = [];
  for (const w of workloads) {
    const t = 'skipped' in torch ? undefined : torch.rows.get(w.name);
    const torchRate = t ? w.work / t.ms_min / 1e6 : null;
    for (const b of backends) {
      if (b.name === 'cpu' && w.work > CPU_MAX_WORK) {
        rows.push({ workload: w.name, backend: b.name, unit: w.unit, ms_min: null, ms_median: null, rate: null, torch_ms_min: t?.ms_min ?? null, torch_rate: torchRate, ratio_vs_torch: null, note: 'skipped: the cpu reference backend is loops by design' });
        continue;
      }
      process.stderr.write(`bench: ${w.name} on ${b.name}\n`);
      const m = await timeWorkload(w, b);
      const rate = w.work / m.min / 1e6;
      rows.push({ workload: w.name, backend: b.name, unit: w.unit, ms_min: m.min, ms_median: m.median, rate, torch_ms_min: t?.ms_min ?? null, torch_rate: torchRate, ratio_vs_torch: torchRate ? rate / torchRate : null });
    }
  }
  const loadEnd = loadavg();
  const gpu = backends.find((b) => b.name === 'webgpu') as unknown as { ctx?: { adapterInfo: string } } | undefined;
  const meta = {
    date: new Date().toISOString(), runs: RUNS, cpu: cpus()[0]?.model, cores: cpus().length,
    webgpu_adapter: gpu?.ctx?.adapterInfo ?? null, torch: 'skipped' in torch ? `skipped (${torch.skipped})` : torch.version,
    loadavg_start: loadStart, loadavg_end: loadEnd,
  };
  const outDir = join(process.cwd(), 'bench-results');
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, 'bench.json'), JSON.stringify({ meta, rows }, null, 2));
  const md = [
    `# latentdem benchmark (${meta.date})`,
    '',
    `${meta.cores} x ${meta.cpu}; WebGPU adapter: ${meta.webgpu_adapter ?? 'none'}; PyTorch: ${meta.torch}; min/median of ${RUNS} runs after a warm-up.`,
    `Load average (1/5/15 min) at start ${loadStart.map((x) => x.toFixed(2)).join('/')}, at end ${loadEnd.map((x) => x.toFixed(2)).join('/')}.`,
    '',
    '| workload | backend | ms (min) | ms (median) | rate | PyTorch ms (min) | PyTorch rate | ours / PyTorch |',
    '|---|---|---:|---:|---:|---:|---:|---:|',
    ...rows.map((r) => `| ${r.workload} | ${r.backend} | ${fmt(r.ms_min)} | ${fmt(r.ms_median)} | ${r.rate === null ? r.note ?? '—' : `${fmt(r.rate)} ${r.unit}`} | ${fmt(r.torch_ms_min)} | ${r.torch_rate === null ? '—' : `${fmt(r.torch_rate)} ${r.unit}`} | ${fmt(r.ratio_vs_torch, 3)} |`),
    '',
  ].join('\n');
  writeFileSync(join(outDir, 'bench.md'), md);
  process.stdout.write(md);
  process.exit(0);
}

await main();
