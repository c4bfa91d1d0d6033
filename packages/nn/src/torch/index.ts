/** The code-free PyTorch checkpoint reader (zip and legacy torch.save formats). */
export { CheckpointError } from './errors.js';
export { loadTorchCheckpoint, inspectTorchCheckpoint } from './load.js';
export type { TorchLoadOptions } from './load.js';
