/**
 * Kernel-level benchmark: matmul and conv2d straight through the Backend interface (no Tensor API), so it
 * measures the kernels alone. GFLOP/s from the min over >= 3 timed runs after a warm-up; each timed region
 * is bracketed by `await backend.sync()`.
 *
 *   node --conditions=latentdem-src --import tsx tools/bench/kernels.ts [--torch] [--runs N] [--backend cpu|webgpu] [--only STR]
 *
 * `--torch` also runs tools/bench/torch_kernels.py (Debian's /usr/bin/python3 with python3-torch, 2 threads)
 * on the same shapes and prints both side by side. `benchKernels()` is the importable entry point.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { initBackend } from '@latentdem/tensor';
import type { Backend, BackendName, Conv2dParams, Storage, View } from '@latentdem/tensor';

export interface KernelCase {
  name: string;
  kind: 'matmul' | 'conv2d';
  /** matmul: [M, K, N]; conv2d: [N, C, H, W, O, kh, kw, pad]. */
  dims: number[];
}

export interface KernelRow {
  name: string;
  shape: string;
  flops: number;
  ms_min: number;
  ms_median: number;
  gflops: number;
  /**
   * Min over the runs of this process's CPU time (all threads, lavapipe's workers included). On a shared
   * machine it shows how much of the wall time went to others; absent for PyTorch rows.
   */
  cpu_ms_min?: number;
}

export const KERNEL_CASES: KernelCase[] = [
  ...[256, 512, 1024, 2048].map((n): KernelCase => ({ name: `matmul ${n}`, kind: 'matmul', dims: [n, n, n] })),
  { name: 'conv2d sd 320', kind: 'conv2d', dims: [2, 320, 32, 32, 320, 3, 3, 1] },
  { name: 'conv2d sd 640', kind: 'conv2d', dims: [2, 640, 16, 16, 640, 3, 3, 1] },
];

export function caseFlops(c: KernelCase): number {
  const d = c.dims;
  if (c.kind === 'matmul') return 2 * d[0] * d[1] * d[2];
  const [n, ch, h, w, o, kh, kw, pad] = d;
  const ho = h + 2 * pad - kh + 1, wo = w + 2 * pad - kw + 1;
  return 2 * n * o * ho * wo * ch * kh * kw;
}

export function caseShape(c: KernelCase): string {
  const d = c.dims;
  if (c.kind === 'matmul') return `${d[0]}x${d[1]} @ ${d[1]}x${d[2]}`;
  return `x ${d[0]}x${d[1]}x${d[2]}x${d[3]}, w ${d[4]}x${d[1]}x${d[5]}x${d[6]}, pad ${d[7]}`;
}

function randomData(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; out[i] = (s >>> 8) / 8388608 - 1; }
  return out;
}

const contiguousView = (storage: Storage, shape: number[]): View => {
  const strides = new Array<number>(shape.length);
  let acc = 1;
  for (let d = shape.length - 1; d >= 0; d--) { strides[d] = acc; acc *= shape[d]; }
  return { storage, shape, strides, offset: 0 };
};

/** Time one case on `backend`: a warm-up (pipeline compilation) then `runs` timed runs. */
export async function benchCase(backend: Backend, c: KernelCase, runs = 5): Promise<KernelRow> {
  const d = c.dims;
  const stores: Storage[] = [];
  const up = (n: number, seed: number): Storage => { const s = backend.upload(randomData(n, seed)); stores.push(s); return s; };
  let run: () => void;
  if (c.kind === 'matmul') {
    const [m, k, n] = d;
    const a = contiguousView(up(m * k, 1), [1, m, k]), b = contiguousView(up(k * n, 2), [1, k, n]);
    const out = backend.alloc(m * n, 'float32'); stores.push(out);
    run = () => backend.matmul(a, b, out);
  } else {
    const [n, ch, h, w, o, kh, kw, pad] = d;
    const x = contiguousView(up(n * ch * h * w, 3), [n, ch, h, w]);
    const wt = contiguousView(up(o * ch * kh * kw, 4), [o, ch, kh, kw]);
    const p: Conv2dParams = { stride: [1, 1], padding: [pad, pad], dilation: [1, 1], groups: 1 };
    const ho = h + 2 * pad - kh + 1, wo = w + 2 * pad - kw + 1;
    const out = backend.alloc(n * o * ho * wo, 'float32'); stores.push(out);
    run = () => backend.conv2d(x, wt, p, out);
  }
  let cpuMin = Infinity;
  const once = async (): Promise<number> => {
    await backend.sync();
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    run();
    await backend.sync();
    const dt = performance.now() - t0;
    const cu = process.cpuUsage(c0);
    cpuMin = Math.min(cpuMin, (cu.user + cu.system) / 1000);
    return dt;
  };
  await once();
  cpuMin = Infinity;
  const ts: number[] = [];
  for (let i = 0; i < Math.max(3, runs); i++) ts.push(await once());
  for (const s of stores) backend.free(s);
  ts.sort((p, q) => p - q);
  const flops = caseFlops(c);
  return { name: c.name, shape: caseShape(c), flops, ms_min: ts[0], ms_median: ts[Math.floor(ts.length / 2)], gflops: flops / ts[0] / 1e6, cpu_ms_min: cpuMin };
}

export interface KernelBenchOptions { backend?: BackendName; runs?: number; only?: string; cases?: KernelCase[] }

/** Benchmark every case (or those whose name contains `only`) on one backend. */
export async function benchKernels(opts: KernelBenchOptions = {}): Promise<KernelRow[]> {
  const backend = await initBackend(opts.backend ?? 'webgpu');
  const rows: KernelRow[] = [];
  for (const c of (opts.cases ?? KERNEL_CASES).filter((k) => k.name.includes(opts.only ?? ''))) {
    rows.push(await benchCase(backend, c, opts.runs ?? 5));
  }
  return rows;
}

const here = dirname(fileURLToPath(import.meta.url));

/** PyTorch's rows for the same cases (tools/bench/torch_kernels.py), or the reason they are missing. */
export function torchKernelRows(runs = 5, cases = KERNEL_CASES): KernelRow[] | string {
  const py = '/usr/bin/python3';
  if (!existsSync(py)) return `${py} not found`;
  const r = spawnSync(py, [join(here, 'torch_kernels.py'), '--runs', String(runs)], {
    input: JSON.stringify(cases), encoding: 'utf8', maxBuffer: 1 << 24,
    env: { ...process.env, OMP_NUM_THREADS: '2', OPENBLAS_NUM_THREADS: '2' },
  });
  if (r.status !== 0) return `torch unavailable: ${(r.stderr || r.error?.message || '').trim().split('\n').pop()}`;
  return (JSON.parse(r.stdout) as { rows: KernelRow[] }).rows;
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const opt = (name: string): string | undefined => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : undefined; };
  const runs = Number(opt('--runs') ?? 5);
  const backendName = (opt('--backend') ?? 'webgpu') as BackendName;
  const only = opt('--only') ?? '';
  const load0 = loadavg()[0];
  const rows = await benchKernels({ backend: backendName, runs, only });
  const cases = KERNEL_CASES.filter((k) => k.name.includes(only));
  const torch = args.includes('--torch') ? torchKernelRows(runs, cases) : null;
  const backend = await initBackend(backendName);
  const ctx = (backend as unknown as { ctx?: { adapterInfo: string; device: GPUDevice } }).ctx;
  process.stdout.write(`backend ${backendName}${ctx ? ` (${ctx.adapterInfo}; subgroups ${ctx.device.features.has('subgroups') ? 'on' : 'off'})` : ''}; ` +
    `min/median of ${Math.max(3, runs)} runs; load average ${load0.toFixed(2)} -> ${loadavg()[0].toFixed(2)}\n`);
  if (typeof torch === 'string') process.stdout.write(`PyTorch rows skipped: ${torch}\n`);
  const tRows = Array.isArray(torch) ? new Map(torch.map((r) => [r.name, r])) : null;
  process.stdout.write(`| kernel | shape | ms min | ms median | GFLOP/s | cpu ms min |${tRows ? ' PyTorch ms min | PyTorch GFLOP/s | ours/PyTorch |' : ''}\n`);
  process.stdout.write(`|---|---|---:|---:|---:|---:|${tRows ? '---:|---:|---:|' : ''}\n`);
  for (const r of rows) {
    const t = tRows?.get(r.name);
    process.stdout.write(`| ${r.name} | ${r.shape} | ${r.ms_min.toFixed(2)} | ${r.ms_median.toFixed(2)} | ${r.gflops.toFixed(1)} | ${r.cpu_ms_min?.toFixed(1) ?? '—'} |` +
      (tRows ? ` ${t ? t.ms_min.toFixed(2) : '—'} | ${t ? t.gflops.toFixed(1) : '—'} | ${t ? (r.gflops / t.gflops).toFixed(3) : '—'} |` : '') + '\n');
  }
  process.exit(0);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await main();
