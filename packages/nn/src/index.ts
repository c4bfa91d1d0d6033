/** @latentdem/nn: modules, layers, optimizers, and checkpoint I/O (safetensors, code-free torch pickles). */
export { Module } from './module.js';
export type { StateDict, LoadResult, LoadOptions, TensorModule } from './module.js';
export { StateDictError } from './errors.js';
export * from './init.js';
export * from './layers/index.js';
export * from './optim/index.js';
export { f16ToF32, f32ToF16, bf16ToF32 } from './half.js';
export { SafetensorsError, SafetensorsFile, loadSafetensors, saveSafetensors } from './safetensors.js';
export { loadWeights } from './load.js';
export type { LoadWeightsOptions } from './load.js';
export type { SafetensorsDType, SafetensorsEntry } from './safetensors.js';
export * from './torch/index.js';
export * from './keymaps/index.js';
