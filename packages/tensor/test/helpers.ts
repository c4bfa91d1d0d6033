/** Shared test helpers: the backends to run on, closeness, finite-difference gradient checks. */
import type { Test } from 'tap';
import type { Backend, BackendName, Tensor, TypedArray } from '../src/index.js';
import type { GpuContext } from '../src/backends/webgpu/context.js';
import { initBackend, tensor, noGrad } from '../src/index.js';

let cached: Promise<Backend[]> | null = null;

/**
 * cpu always; webgpu where an adapter exists. In CI (CI=true) a missing adapter throws, so the run fails;
 * elsewhere the webgpu cases are skipped with a loud line.
 */
export function testBackends(): Promise<Backend[]> {
  cached ??= (async () => {
    const list: Backend[] = [await initBackend('cpu')];
    try {
      list.push(await initBackend('webgpu'));
    } catch (e) {
      if (process.env.CI === 'true') throw new Error(`CI=true but the webgpu backend is unavailable: ${(e as Error).message}`);
      process.stderr.write(`\n*** WEBGPU TESTS SKIPPED: ${(e as Error).message} ***\n\n`);
    }
    return list;
  })();
  return cached;
}

export async function gpuBackend(): Promise<Backend | null> {
  const list = await testBackends();
  return list.find((b) => b.name === 'webgpu') ?? null;
}

/** The WebGPU context for backend-level tests, or why there is none (testBackends() already failed in CI). */
export async function gpuContext(): Promise<{ ctx: GpuContext | undefined; skip: string | false }> {
  const b = await gpuBackend();
  return b ? { ctx: (b as unknown as { ctx: GpuContext }).ctx, skip: false } : { ctx: undefined, skip: 'no WebGPU adapter' };
}

export interface Closeness { ok: boolean; maxAbs: number; worst: number; message: string }

/** |a - b| <= atol + rtol * |b| elementwise (NaNs must match). */
export function close(a: ArrayLike<number>, b: ArrayLike<number>, atol = 1e-5, rtol = 1e-5): Closeness {
  if (a.length !== b.length) return { ok: false, maxAbs: Infinity, worst: -1, message: `lengths differ: ${a.length} vs ${b.length}` };
  let maxAbs = 0; let worst = -1; let ok = true;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]; const y = b[i];
    if (Number.isNaN(x) || Number.isNaN(y)) { if (Number.isNaN(x) !== Number.isNaN(y)) { ok = false; worst = i; maxAbs = Infinity; } continue; }
    if (x === y) continue;
    const d = Math.abs(x - y);
    if (!(d <= atol + rtol * Math.abs(y))) { ok = false; if (d > maxAbs || worst < 0) worst = i; }
    if (d > maxAbs) maxAbs = d;
  }
  return { ok, maxAbs, worst, message: ok ? `max |diff| ${maxAbs.toExponential(2)}` : `mismatch at ${worst}: ${a[worst]} vs ${b[worst]} (max |diff| ${maxAbs.toExponential(2)}, atol ${atol}, rtol ${rtol})` };
}

/** Deterministic host data (a tiny LCG), so both backends see the same inputs. */
export function hostRandom(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  const out = new Float32Array(n);
  let s = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = lo + ((s >>> 8) / 16777216) * (hi - lo);
  }
  return out;
}

export function on(backend: BackendName | Backend, data: TypedArray, shape: readonly number[], requiresGrad = false): Tensor {
  return tensor(data, { shape, backend, requiresGrad });
}

/**
 * Central finite differences of L = sum(f(xs) * r) for a fixed random r, against autodiff, on the given
 * (small) float32 inputs. Returns the worst relative error over all elements.
 */
export async function gradCheck(
  backend: BackendName | Backend,
  f: (...xs: Tensor[]) => Tensor,
  inputs: { data: Float32Array; shape: number[] }[],
  eps = 1e-2,
): Promise<{ worst: number; where: string; analytic: Float32Array[]; numeric: Float64Array[] }> {
  const xs = inputs.map((i) => on(backend, i.data, i.shape, true));
  const y0 = f(...xs);
  const r = on(backend, hostRandom(y0.size, 99, 0.5, 1.5), y0.shape);
  const loss = y0.mul(r).sum();
  loss.backward();
  const analytic = await Promise.all(xs.map(async (x) => new Float32Array(x.grad ? await x.grad.data() : new Float32Array(x.size))));
  const evalLoss = async (datas: Float32Array[]): Promise<number> => noGrad(() => {
    const ts = datas.map((d, k) => on(backend, d, inputs[k].shape));
    return f(...ts).mul(r).sum();
  }).item();
  const numeric: Float64Array[] = [];
  let worst = 0; let where = '';
  for (let k = 0; k < inputs.length; k++) {
    const num = new Float64Array(inputs[k].data.length);
    for (let i = 0; i < num.length; i++) {
      const plus = inputs.map((x) => x.data.slice()); plus[k][i] += eps;
      const minus = inputs.map((x) => x.data.slice()); minus[k][i] -= eps;
      num[i] = ((await evalLoss(plus)) - (await evalLoss(minus))) / (2 * eps);
      const err = Math.abs(num[i] - analytic[k][i]) / Math.max(1, Math.abs(num[i]));
      if (err > worst) { worst = err; where = `input ${k} element ${i}: autodiff ${analytic[k][i]} vs numeric ${num[i]}`; }
    }
    numeric.push(num);
  }
  return { worst, where, analytic, numeric };
}

/**
 * Runs sum(f(xs) * r) backward on every non-cpu backend and asserts each input's gradient equals the cpu
 * gradient `cpuGrads` (same r as gradCheck uses).
 */
export async function assertGradsMatchCpu(
  t: Test, backends: readonly Backend[], f: (...xs: Tensor[]) => Tensor,
  inputs: { data: Float32Array; shape: number[] }[], cpuGrads: Float32Array[], atol = 1e-4,
): Promise<void> {
  for (const b of backends) {
    if (b.name === 'cpu') continue;
    const xs = inputs.map((i) => on(b, i.data, i.shape, true));
    const y = f(...xs);
    y.mul(on(b, hostRandom(y.size, 99, 0.5, 1.5), y.shape)).sum().backward();
    for (let k = 0; k < xs.length; k++) {
      const g = xs[k].grad ? await xs[k].grad!.data() : new Float32Array(xs[k].size);
      const r = close(g, cpuGrads[k], atol, 1e-3);
      t.ok(r.ok, `${b.name} gradient of input ${k} equals cpu: ${r.message}`);
    }
  }
}
