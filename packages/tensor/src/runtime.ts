/**
 * Backend selection. `cpu` is always available; `webgpu` is created asynchronously (adapter + device).
 * Choice: `await setBackend(name)`, env LATENTDEM_BACKEND=cpu|webgpu, or auto (webgpu when an adapter
 * exists, else cpu with one notice line) through `await ready()`.
 */
import type { Backend, BackendName } from './backend.js';
import { CpuBackend } from './backends/cpu/index.js';
import { BackendUnavailableError } from './errors.js';

const backends = new Map<BackendName, Backend>();
let current: Backend | null = null;
let webgpuInit: Promise<Backend> | null = null;

function cpu(): Backend {
  let b = backends.get('cpu');
  if (!b) { b = new CpuBackend(); backends.set('cpu', b); }
  return b;
}

/** Creates (once) and returns the named backend. */
export async function initBackend(name: BackendName): Promise<Backend> {
  if (name === 'cpu') return cpu();
  if (name !== 'webgpu') throw new BackendUnavailableError('initBackend', `unknown backend '${String(name)}' (expected cpu or webgpu)`);
  webgpuInit ??= import('./backends/webgpu/index.js').then(async (m) => {
    const b = await m.WebGpuBackend.create();
    backends.set('webgpu', b);
    return b;
  });
  try {
    return await webgpuInit;
  } catch (e) {
    webgpuInit = null;
    throw e;
  }
}

/** Makes `name` the default backend for new tensors. */
export async function setBackend(name: BackendName): Promise<Backend> {
  current = await initBackend(name);
  return current;
}

/** Resolves the default backend from LATENTDEM_BACKEND, or auto. Idempotent. */
export async function ready(): Promise<Backend> {
  if (current) return current;
  const env = process.env.LATENTDEM_BACKEND;
  if (env === 'cpu' || env === 'webgpu') return setBackend(env);
  if (env && env !== 'auto') throw new BackendUnavailableError('ready', `LATENTDEM_BACKEND='${env}' is not one of cpu, webgpu, auto`);
  try {
    return await setBackend('webgpu');
  } catch (e) {
    process.stderr.write(`latentdem: no WebGPU adapter (${(e as Error).message}); using the cpu backend\n`);
    return setBackend('cpu');
  }
}

/** The default backend; without `await ready()`/`setBackend()` only an explicit LATENTDEM_BACKEND=cpu (or nothing yet) falls back to cpu. */
export function defaultBackend(): Backend {
  if (current) return current;
  const env = process.env.LATENTDEM_BACKEND;
  if (env === undefined || env === 'cpu') {
    if (env === undefined) process.stderr.write("latentdem: no backend chosen yet; using cpu (call 'await ready()' to pick webgpu when an adapter exists)\n");
    current = cpu();
    return current;
  }
  throw new BackendUnavailableError('tensor', `the default backend (LATENTDEM_BACKEND=${env}) is not ready: call 'await ready()' before creating tensors`);
}

/** The named backend, which must have been initialized (cpu always is). */
export function getBackend(name?: BackendName | Backend): Backend {
  if (name === undefined) return defaultBackend();
  if (typeof name === 'object') return name;
  if (name === 'cpu') return cpu();
  const b = backends.get(name);
  if (!b) throw new BackendUnavailableError('tensor', `backend '${name}' is not initialized: call 'await initBackend("${name}")' first`);
  return b;
}

export function initializedBackends(): Backend[] { return [...backends.values()]; }

/**
 * Times the webgpu backend's GEMM tiles and conv2d algorithms on this adapter and caches the choice on disk
 * (backends/webgpu/tuning.ts); later processes read it. Resolves to the cache file's path and the choice.
 */
export async function tuneWebGpu(opts: { runs?: number; log?: (line: string) => void; save?: boolean } = {}): Promise<{ path: string | null; tuning: unknown }> {
  const b = await initBackend('webgpu');
  const { tune } = await import('./backends/webgpu/tune.js');
  return tune((b as unknown as { ctx: import('./backends/webgpu/context.js').GpuContext }).ctx, opts);
}

/** Where the webgpu tuning cache for this adapter lives and whether it exists (null without an adapter). */
export async function webGpuTuningFile(): Promise<{ path: string; exists: boolean } | null> {
  let b: Backend;
  try { b = await initBackend('webgpu'); } catch { return null; }
  const { tuningPath } = await import('./backends/webgpu/tuning.js');
  const { existsSync } = await import('node:fs');
  const path = tuningPath((b as unknown as { ctx: import('./backends/webgpu/context.js').GpuContext }).ctx);
  return { path, exists: existsSync(path) };
}
