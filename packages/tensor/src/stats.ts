import type { BackendName } from './backend.js';
import { liveStats } from './memory.js';
import { initializedBackends } from './runtime.js';

export interface MemoryStats {
  /** Live (not disposed) tensors per backend. */
  tensors: Record<BackendName, number>;
  /** Distinct live storages per backend (views share one). */
  storages: Record<BackendName, number>;
  /** Bytes of live storages per backend (element bytes; the GPU pool rounds buffers up). */
  bytes: Record<BackendName, number>;
  /** WebGPU only: bytes of device buffers held by live storages, idle in the pool, and the most held at once (live + pooled) since resetPeakMemory(). */
  gpu?: { liveBufferBytes: number; pooledBytes: number; peakBufferBytes: number; pipelines: number };
}

export function memory(): MemoryStats {
  const s: MemoryStats = { tensors: { ...liveStats.tensors }, storages: { ...liveStats.storages }, bytes: { ...liveStats.bytes } };
  for (const b of initializedBackends()) {
    const ctx = (b as unknown as { ctx?: { liveBytes: number; pooledBytes: number; peakBytes: number; pipelineCount: number } }).ctx;
    if (b.name === 'webgpu' && ctx) s.gpu = { liveBufferBytes: ctx.liveBytes, pooledBytes: ctx.pooledBytes, peakBufferBytes: ctx.peakBytes, pipelines: ctx.pipelineCount };
  }
  return s;
}

/** Restarts the peak counters of memory() (peakBufferBytes) from the bytes held now. */
export function resetPeakMemory(): void {
  for (const b of initializedBackends()) {
    const ctx = (b as unknown as { ctx?: { heldBytes: number; peakBytes: number } }).ctx;
    if (ctx) ctx.peakBytes = ctx.heldBytes;
  }
}
