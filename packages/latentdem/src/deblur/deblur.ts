/**
 * LatentDEM blind deblurring (contract; implementation in progress).
 */
import type { Tensor } from '@latentdem/tensor';
import type { LatentPrior } from '../prior.js';
import type { AnnealKind, SkipGradientOptions } from './schedules.js';
import type { KernelPrior } from './hqs.js';

export interface DeblurOptions {
  prior: LatentPrior;
  /** The measurement [3, H, W] in [-1, 1] on the prior's backend; H and W multiples of prior.factor. */
  y: Tensor;
  /** DDIM steps (release: 1000). */
  steps?: number;
  seed?: number;
  /** 'release' (default), 'paper' or 'none'. */
  anneal?: AnnealKind;
  /** Skip-gradient; false (default, as the release) runs every step in full. */
  skip?: SkipGradientOptions | false;
  /** 'psld' (release, default) or 'resample'. */
  eStep?: 'psld' | 'resample';
  /** Estimated kernel side (default 64). */
  kernelSize?: number;
  /** Measurement noise std in the units of y (release: 0.02 on the [-1, 1] image). */
  sigma?: number;
  /** The M-step's kernel prior: 'dncnn' (latentdem's trained denoiser, default), 'release' needs a loaded FDnCNN passed as a function, 'none'. */
  kernelPrior?: 'dncnn' | 'none' | KernelPrior;
  /** Re-centring after each M-step: 'origin' (default), 'release', or false. */
  recenter?: 'origin' | 'release' | false;
  /** Called after every step; tensors are valid only during the call. May be async. */
  onStep?: (s: DeblurStep) => void | Promise<void>;
}

export interface DeblurStep {
  /** 0-based step number and the number of steps. */
  i: number;
  steps: number;
  /** DDIM index (steps-1 .. 0) and training timestep. */
  index: number;
  t: number;
  /** true when this step ran the E+M step, false for a plain prior step (skip-gradient). */
  full: boolean;
  zt: Tensor;
  z0: Tensor;
  /** The decoded Tweedie image [1, 3, H, W] in about [-1, 1] when this step decoded it, else null. */
  x0: Tensor | null;
  kernel: Tensor;
  anneal: number;
  losses: { measurement?: number; gluing?: number };
  /** Wall seconds of this step. */
  seconds: number;
}

export interface DeblurStepRecord { i: number; index: number; t: number; full: boolean; measurement?: number; gluing?: number; seconds: number }

export interface DeblurRecord {
  settings: Record<string, unknown>;
  steps: DeblurStepRecord[];
  seconds: { total: number; full: number; prior: number; mStep: number };
}

export interface DeblurResult {
  /** The restored image [3, H, W] in [-1, 1] (D(z_0)), owned by the caller. */
  image: Tensor;
  /** The kernel [ks, ks], >= 0, sum 1, owned by the caller. */
  kernel: Tensor;
  record: DeblurRecord;
}

export async function deblur(o: DeblurOptions): Promise<DeblurResult> {
  void o;
  throw new Error('deblur: not implemented yet');
}
