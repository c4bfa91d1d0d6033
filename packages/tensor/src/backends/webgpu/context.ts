/**
 * The Dawn device and everything that talks to it directly: the buffer pool, the pipeline cache, the
 * command encoder that batches dispatches, and batched readbacks. Kernel families (elementwise.ts,
 * matmul.ts, ...) only call `dispatch`.
 */
import { create, globals } from 'webgpu';
import { BackendUnavailableError, DeviceError, DeviceLimitError } from '../../errors.js';
import type { DType } from '../../dtype.js';
import type { Storage } from '../../backend.js';

Object.assign(globalThis, globals);

/** Keep Dawn's GPU object strongly reachable for the life of the process: if it is collected, Dawn crashes. */
let gpuRoot: GPU | undefined;

export class GpuStorage implements Storage {
  readonly backend = 'webgpu' as const;
  refs = 0;
  freed = false;
  constructor(readonly dtype: DType, readonly size: number, readonly buffer: GPUBuffer, readonly bytes: number) {}
}

const STORAGE_USAGE = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
/** Smallest pooled buffer; sizes round up to a power of two (finer above LARGE_BUCKET) so buffers are reused across shapes. */
const MIN_BUCKET = 256;
const LARGE_BUCKET = 1024 * 1024;

export interface DispatchSpec {
  /** Cache key: identifies the specialized WGSL source. */
  key: string;
  /** WGSL source, called only on a cache miss. */
  source: () => string;
  /** Storage buffers bound at @group(0) @binding(0..n-1), in order. */
  buffers: GPUBuffer[];
  /** u32/i32/f32 words for the params buffer bound after `buffers` (as array<u32>; bitcast in WGSL). */
  params?: ArrayLike<number> | Uint32Array;
  /** Number of workgroups wanted along x; split into a 2D grid when above the device limit. */
  workgroups: number | [number, number, number];
  /** Human-readable kernel name for the trace. */
  kernel: string;
}

export class GpuContext {
  readonly limits: GPUSupportedLimits;
  private pool = new Map<number, GPUBuffer[]>();
  /** Freed buffers whose last use may still sit in the unsubmitted encoder: pooled only after submit. */
  private pendingFree: GPUBuffer[] = [];
  private pipelines = new Map<string, GPUComputePipeline>();
  private encoder: GPUCommandEncoder | null = null;
  private pass: GPUComputePassEncoder | null = null;
  private dispatchesInEncoder = 0;
  private pendingReads: Array<() => void> = [];
  private readScheduled = false;
  lastKernel = '';
  /** Per-dispatch GPU timestamps, while a device-timed trace runs (see startTiming). */
  private timing: DispatchTiming | null = null;
  /** The first device error seen; once set, results can no longer be trusted. */
  deviceError: string | null = null;
  /** Bytes held by live storages (not counting the pool). */
  liveBytes = 0;
  pooledBytes = 0;
  /** Freed buffers waiting for the next submit before they rejoin the pool. */
  private pendingBytes = 0;
  /** Most device-buffer bytes held at once (live, pooled, or freed and waiting for a submit) since resetPeak(). */
  peakBytes = 0;
  get heldBytes(): number { return this.liveBytes + this.pooledBytes + this.pendingBytes; }
  /** Dispatches recorded before an automatic submit (keeps encoders from growing without bound). */
  static MAX_DISPATCHES_PER_SUBMIT = 512;
  /** A request may take an idle pooled buffer up to this factor larger than its size class. */
  static REUSE_SLACK = 1.5;
  /** Idle pooled bytes kept for reuse; above it the largest idle buffers are destroyed. */
  static MAX_POOLED_BYTES = 1024 * 1024 * 1024;
  /** Bytes of freed buffers waiting for a submit before one is forced (see release). */
  static MAX_PENDING_FREE_BYTES = 256 * 1024 * 1024;

  private constructor(readonly device: GPUDevice, readonly adapterInfo: string) {
    this.limits = device.limits;
  }

  static async create(): Promise<GpuContext> {
    gpuRoot ??= create([]);
    const adapter = await gpuRoot.requestAdapter();
    if (!adapter) throw new BackendUnavailableError('webgpu', 'no WebGPU adapter found (is a Vulkan driver such as Mesa lavapipe installed?)');
    // Ask for the adapter's real limits, not the spec defaults.
    const want = ['maxStorageBufferBindingSize', 'maxBufferSize', 'maxComputeWorkgroupStorageSize',
      'maxComputeInvocationsPerWorkgroup', 'maxComputeWorkgroupSizeX', 'maxComputeWorkgroupSizeY',
      'maxComputeWorkgroupsPerDimension', 'maxStorageBuffersPerShaderStage'] as const;
    const requiredLimits: Record<string, number> = {};
    for (const k of want) requiredLimits[k] = adapter.limits[k];
    const features: GPUFeatureName[] = [];
    if (adapter.features.has('timestamp-query')) features.push('timestamp-query');
    // Subgroup shuffles let the GEMM lanes share loads of A (about 2.5x faster on lavapipe; see matmul.ts).
    if (adapter.features.has('subgroups')) features.push('subgroups' as GPUFeatureName);
    const device = await adapter.requestDevice({ requiredLimits, requiredFeatures: features });
    const info = adapter.info;
    const ctx = new GpuContext(device, [info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(' '));
    device.addEventListener('uncapturederror', (e) => {
      // A device error drops the whole submitted batch, so later reads would return stale data: remember it
      // and fail every later read, sync and dispatch instead of answering wrongly.
      const msg = (e as GPUUncapturedErrorEvent).error.message;
      ctx.deviceError ??= msg;
      process.stderr.write(`latentdem webgpu: device error: ${msg}\n`);
    });
    return ctx;
  }

  // ---- buffers ----
  private bucket(bytes: number): number {
    let b = MIN_BUCKET;
    while (b < bytes) b *= 2;
    // Above 1 MiB, sixteen sizes per octave: power-of-two rounding would waste up to half of a large buffer
    // (SD's UNet weights took 3.9 GiB for 3.2 GiB of data).
    if (b > LARGE_BUCKET) { const step = b / 16; return Math.ceil(bytes / step) * step; }
    return b;
  }

  /** A buffer of at least `bytes`, from the pool when one is free. */
  acquire(bytes: number, op = 'alloc'): GPUBuffer {
    const maxBinding = this.limits.maxStorageBufferBindingSize;
    if (bytes > maxBinding) {
      throw new DeviceLimitError(op, `needs a ${bytes}-byte buffer but the device binds at most ${maxBinding} bytes per storage buffer (maxStorageBufferBindingSize)`);
    }
    const size = Math.min(this.bucket(bytes), Math.max(maxBinding, 4));
    const list = this.pool.get(size);
    if (list && list.length) { this.pooledBytes -= size; return list.pop()!; }
    // Best fit among idle buffers up to REUSE_SLACK larger: large buffers come in many size classes, and creating
    // a new one while a slightly larger one idles grows the pool, whose trimmed buffers Dawn frees only once the
    // GPU catches up with the recorded work (peak RSS of an SD UNet forward: see docs/tensor.md).
    if (size > LARGE_BUCKET) {
      let best = 0;
      for (const [s, l] of this.pool) if (l.length && s > size && s <= size * GpuContext.REUSE_SLACK && (!best || s < best)) best = s;
      if (best) { this.pooledBytes -= best; return this.pool.get(best)!.pop()!; }
    }
    return this.device.createBuffer({ size, usage: STORAGE_USAGE });
  }

  release(buf: GPUBuffer): void {
    this.pendingFree.push(buf);
    this.pendingBytes += buf.size;
    // Freed buffers rejoin the pool only at a submit: without this, a long run of large temporaries between
    // submits (a UNet block's convs, a checkpoint load) holds them all at once (8.5 GiB for one SD UNet step).
    if (this.pendingBytes > GpuContext.MAX_PENDING_FREE_BYTES) this.flush();
  }

  alloc(size: number, dtype: DType): GpuStorage {
    const bytes = Math.max(4, size * 4);
    const buf = this.acquire(bytes);
    this.liveBytes += buf.size;
    this.peakBytes = Math.max(this.peakBytes, this.heldBytes);
    return new GpuStorage(dtype, size, buf, buf.size);
  }

  free(s: GpuStorage): void {
    this.liveBytes -= s.bytes;
    this.release(s.buffer);
  }

  /** Drop pooled buffers (frees device memory). */
  trimPool(): void {
    this.flush();
    for (const list of this.pool.values()) for (const b of list) b.destroy();
    this.pool.clear();
    this.pooledBytes = 0;
  }

  writeBuffer(buf: GPUBuffer, data: ArrayBufferView): void {
    // Buffers handed out by acquire() are never referenced by unsubmitted work, so a queue write is ordered correctly.
    this.device.queue.writeBuffer(buf, 0, data.buffer, data.byteOffset, data.byteLength);
  }

  // ---- dispatch ----
  private pipeline(spec: DispatchSpec): GPUComputePipeline {
    let p = this.pipelines.get(spec.key);
    if (!p) {
      const module = this.device.createShaderModule({ code: spec.source(), label: spec.key });
      p = this.device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' }, label: spec.key });
      this.pipelines.set(spec.key, p);
    }
    return p;
  }

  get pipelineCount(): number { return this.pipelines.size; }

  private checkHealthy(op: string): void {
    if (this.deviceError) throw new DeviceError(op, `the WebGPU device reported an error, so results after it cannot be trusted: ${this.deviceError}`);
  }

  dispatch(spec: DispatchSpec): void {
    this.checkHealthy(spec.kernel);
    const pipeline = this.pipeline(spec);
    const entries: GPUBindGroupEntry[] = spec.buffers.map((buffer, binding) => ({ binding, resource: { buffer } }));
    let paramsBuf: GPUBuffer | null = null;
    if (spec.params) {
      const words = spec.params instanceof Uint32Array ? spec.params : Uint32Array.from(spec.params as ArrayLike<number>);
      paramsBuf = this.acquire(Math.max(16, words.byteLength));
      this.writeBuffer(paramsBuf, words);
      entries.push({ binding: entries.length, resource: { buffer: paramsBuf } });
    }
    const bindGroup = this.device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries });
    let [x, y, z] = typeof spec.workgroups === 'number' ? [spec.workgroups, 1, 1] : spec.workgroups;
    const maxDim = this.limits.maxComputeWorkgroupsPerDimension;
    if (x > maxDim) {
      if (y !== 1) throw new DeviceLimitError(spec.kernel, `grid ${x}x${y}x${z} exceeds ${maxDim} workgroups per dimension`);
      y = Math.ceil(x / maxDim); x = maxDim;
    }
    if (y > maxDim || z > maxDim) throw new DeviceLimitError(spec.kernel, `grid ${x}x${y}x${z} exceeds ${maxDim} workgroups per dimension`);
    if (x * y * z === 0) { if (paramsBuf) this.release(paramsBuf); return; }
    if (!this.encoder) this.encoder = this.device.createCommandEncoder();
    if (this.timing) {
      // Timed: one pass per dispatch, bracketed by timestamps.
      if (this.pass) { this.pass.end(); this.pass = null; }
      const slot = this.timing.used++;
      const pass = this.encoder.beginComputePass({ timestampWrites: { querySet: this.timing.querySet, beginningOfPassWriteIndex: 2 * slot, endOfPassWriteIndex: 2 * slot + 1 } });
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(x, y, z);
      pass.end();
      this.timing.current.push(this.timing.firstId + slot);
      if (this.timing.used === DispatchTiming.SLOTS) this.resolveTiming();
    } else {
      if (!this.pass) this.pass = this.encoder.beginComputePass();
      this.pass.setPipeline(pipeline);
      this.pass.setBindGroup(0, bindGroup);
      this.pass.dispatchWorkgroups(x, y, z);
    }
    if (paramsBuf) this.release(paramsBuf);
    this.lastKernel = spec.kernel;
    if (++this.dispatchesInEncoder >= GpuContext.MAX_DISPATCHES_PER_SUBMIT) this.flush();
  }

  /** Record a buffer-to-buffer copy (ends the current compute pass). */
  copyBuffer(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, bytes: number): void {
    if (!this.encoder) this.encoder = this.device.createCommandEncoder();
    if (this.pass) { this.pass.end(); this.pass = null; }
    this.encoder.copyBufferToBuffer(src, srcOffset, dst, dstOffset, bytes);
  }

  /** Submit recorded work; buffers freed before this point become reusable. */
  flush(): void {
    if (this.encoder) {
      if (this.pass) { this.pass.end(); this.pass = null; }
      this.device.queue.submit([this.encoder.finish()]);
      this.encoder = null;
      this.dispatchesInEncoder = 0;
    }
    for (const b of this.pendingFree) {
      const list = this.pool.get(b.size);
      if (list) list.push(b); else this.pool.set(b.size, [b]);
      this.pooledBytes += b.size;
    }
    this.pendingFree = [];
    this.pendingBytes = 0;
    if (this.pooledBytes > GpuContext.MAX_POOLED_BYTES) this.shrinkPool();
  }

  /** Destroys pooled buffers, largest sizes first, until the pool is back under half its cap. */
  private shrinkPool(): void {
    const sizes = [...this.pool.keys()].sort((a, b) => b - a);
    for (const size of sizes) {
      const list = this.pool.get(size)!;
      while (list.length && this.pooledBytes > GpuContext.MAX_POOLED_BYTES / 2) {
        list.pop()!.destroy();
        this.pooledBytes -= size;
      }
      if (!list.length) this.pool.delete(size);
      if (this.pooledBytes <= GpuContext.MAX_POOLED_BYTES / 2) return;
    }
  }

  /**
   * Copy `bytes` from `buf` at `offset` back to the host. Reads requested in the same tick share one
   * submit and are mapped together.
   */
  readBytes(buf: GPUBuffer, offset: number, bytes: number): Promise<ArrayBuffer> {
    const size = Math.max(4, Math.ceil(bytes / 4) * 4);
    const staging = this.device.createBuffer({ size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    if (bytes > 0) this.copyBuffer(buf, offset, staging, 0, size);
    return new Promise<ArrayBuffer>((resolve, reject) => {
      this.pendingReads.push(() => {
        staging.mapAsync(GPUMapMode.READ).then(() => {
          const out = staging.getMappedRange().slice(0, bytes);
          staging.unmap(); staging.destroy();
          try { this.checkHealthy('read'); resolve(out); } catch (e) { reject(e); }
        }, reject);
      });
      if (!this.readScheduled) {
        this.readScheduled = true;
        queueMicrotask(() => {
          this.readScheduled = false;
          this.flush();
          const reads = this.pendingReads; this.pendingReads = [];
          for (const r of reads) r();
        });
      }
    });
  }

  // ---- device timing ----
  get canTime(): boolean { return this.device.features.has('timestamp-query'); }

  /** Starts giving every dispatch its own timestamped pass (slower; for traces). */
  startTiming(): void {
    if (!this.canTime) throw new BackendUnavailableError('webgpu', 'this adapter has no timestamp-query feature, so device times cannot be measured');
    if (this.timing) return;
    this.flush();
    this.timing = new DispatchTiming(this.device);
  }

  /** Ids of the timed dispatches since the last call (one launch's dispatches). */
  takeTimedDispatches(): number[] {
    if (!this.timing) return [];
    const ids = this.timing.current;
    this.timing.current = [];
    return ids;
  }

  /** Copies the filled timestamp slots out and starts a new block of slots. */
  private resolveTiming(): void {
    const t = this.timing!;
    if (t.used === 0) return;
    if (this.pass) { this.pass.end(); this.pass = null; }
    this.encoder ??= this.device.createCommandEncoder();
    const bytes = t.used * 16;
    const resolved = this.device.createBuffer({ size: bytes, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
    const staging = this.device.createBuffer({ size: bytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    this.encoder.resolveQuerySet(t.querySet, 0, 2 * t.used, resolved, 0);
    this.encoder.copyBufferToBuffer(resolved, 0, staging, 0, bytes);
    this.flush();
    const first = t.firstId;
    t.blocks.push(staging.mapAsync(GPUMapMode.READ).then(() => {
      const ns = new BigUint64Array(staging.getMappedRange().slice(0));
      staging.unmap(); staging.destroy(); resolved.destroy();
      return { first, ns };
    }));
    t.firstId += t.used;
    t.used = 0;
    // A fresh query set: the resolved one may still be read by the submitted copy.
    t.querySet = this.device.createQuerySet({ type: 'timestamp', count: 2 * DispatchTiming.SLOTS });
  }

  /** Stops timing; resolves to each timed dispatch's device time in microseconds, indexed by its id. */
  async stopTiming(): Promise<Float64Array> {
    const t = this.timing;
    if (!t) return new Float64Array(0);
    this.resolveTiming();
    this.timing = null;
    const out = new Float64Array(t.firstId);
    for (const { first, ns } of await Promise.all(t.blocks)) {
      for (let i = 0; i < ns.length / 2; i++) out[first + i] = ns[2 * i + 1] >= ns[2 * i] ? Number(ns[2 * i + 1] - ns[2 * i]) / 1000 : 0;
    }
    t.querySet.destroy();
    return out;
  }

  async sync(): Promise<void> {
    this.flush();
    await this.device.queue.onSubmittedWorkDone();
    this.checkHealthy('sync');
  }
}

/** Timestamp slots for timed dispatches: one begin/end pair per dispatch, resolved block by block. */
class DispatchTiming {
  static readonly SLOTS = 2048;
  querySet: GPUQuerySet;
  used = 0;
  /** Id of slot 0 of the current block. */
  firstId = 0;
  current: number[] = [];
  blocks: Promise<{ first: number; ns: BigUint64Array }>[] = [];
  constructor(device: GPUDevice) {
    this.querySet = device.createQuerySet({ type: 'timestamp', count: 2 * DispatchTiming.SLOTS });
  }
}
