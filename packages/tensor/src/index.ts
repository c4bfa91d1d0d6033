/** @latentdem/tensor: tensors, reverse-mode autodiff, a CPU reference backend and a WGSL backend through Dawn. */
export { Tensor } from './tensor.js';
export type { NestedArray } from './tensor.js';
export type { DType, TypedArray } from './dtype.js';
export type { Backend, BackendName, View, Storage, Conv2dParams, DeviceTiming } from './backend.js';
export * from './errors.js';
export * from './ops/index.js';
export { noGrad, isGradEnabled } from './autodiff.js';
export { tidy, keep } from './memory.js';
export { memory, resetPeakMemory } from './stats.js';
export type { MemoryStats } from './stats.js';
export { ready, setBackend, initBackend, getBackend, defaultBackend, tuneWebGpu, webGpuTuningFile } from './runtime.js';
export { trace, startTrace, stopTrace, stopTraceTimed, traceToChrome } from './trace.js';
export type { TraceEvent } from './trace.js';
export { toPng, fromPng, readImage, writeImage } from './image.js';
