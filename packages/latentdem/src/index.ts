/** latentdem: the EM framework and its tasks. Today: the blind-deblurring kernel tools (M-step side). */
export { motionKernel, motionKernelData } from './deblur/motionblur.js';
export type { MotionKernelOptions } from './deblur/motionblur.js';
export { estimateKernel, blurCircular, projectKernel, otfToPsfCrop, HQS_DEFAULTS } from './deblur/hqs.js';
export type { HqsOptions, KernelPrior } from './deblur/hqs.js';
export { mse, kernelMse, psnr, ssim, mnc, SSIM_K1, SSIM_K2, SSIM_WINDOW, SSIM_SIGMA } from './deblur/metrics.js';
export { splitmix64, portableUniform, portableNormals, pairNoise, pairNoiseSeed, pairwiseSum, logCR, sinCosCR } from './deblur/noise.js';
export { DnCNN, KERNEL_DNCNN, KERNEL_DNCNN_LAMBDA, PAPER_DNCNN, RELEASE_FDNCNN, denoiseKernel, dncnnPrior, loadDnCNN } from './deblur/dncnn.js';
export type { DnCNNConfig } from './deblur/dncnn.js';
export { RELEASE_ANNEAL, releaseAnnealScale, paperAnnealScale, annealScale, isFullStep } from './deblur/schedules.js';
export type { AnnealKind, PaperAnnealOptions, SkipGradientOptions } from './deblur/schedules.js';
export { centerOfMass, shiftBilinear, recenterKernel } from './deblur/recenter.js';
export type { RecenterOptions } from './deblur/recenter.js';
export { loadPrior, sdPrior, emptyPromptIds, PriorError, PRIOR_FORMAT, RELEASE_GUIDANCE_SCALE } from './prior.js';
export type { LatentPrior, SdPriorParts, LoadPriorOptions } from './prior.js';
export { deblur } from './deblur/deblur.js';
export type { DeblurOptions, DeblurStep, DeblurResult, DeblurRecord, DeblurStepRecord } from './deblur/deblur.js';
export * from './deblur/classical.js';
export * from './deblur/measurement.js';
