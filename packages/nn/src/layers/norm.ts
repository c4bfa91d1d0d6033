/** GroupNorm, LayerNorm and BatchNorm2d (PyTorch semantics; affine weight ones, bias zeros). */
import { full, groupNorm, groupNormSilu, layerNorm, noGrad, ones, tidy, zeros } from '@latentdem/tensor';
import type { Tensor } from '@latentdem/tensor';
import { Module, required } from '../module.js';
import type { InitOptions } from '../init.js';
import { composite } from './composite.js';

export interface GroupNormOptions extends Pick<InitOptions, 'backend'> { eps?: number; affine?: boolean }

/** torch.nn.GroupNorm(num_groups, num_channels, eps=1e-5, affine=True). */
export class GroupNorm extends Module {
  readonly eps: number;
  constructor(readonly numGroups: number, readonly numChannels: number, o: GroupNormOptions = {}) {
    super();
    if (numChannels % numGroups !== 0) throw new Error(`GroupNorm: ${numGroups} groups do not divide ${numChannels} channels`);
    this.eps = o.eps ?? 1e-5;
    const affine = o.affine ?? true;
    this.registerParameter('weight', affine ? ones([numChannels], { backend: o.backend }) : null);
    this.registerParameter('bias', affine ? zeros([numChannels], { backend: o.backend }) : null);
  }
  get weight(): Tensor | null { return this.getParameter('weight'); }
  get bias(): Tensor | null { return this.getParameter('bias'); }
  forward(x: Tensor): Tensor { return groupNorm(x, this.numGroups, this.weight, this.bias, this.eps); }
  /** silu(forward(x)) in one fused kernel (for a GroupNorm followed by a SiLU, as in SD's UNet and VAE). */
  forwardSilu(x: Tensor): Tensor { return groupNormSilu(x, this.numGroups, this.weight, this.bias, this.eps); }
}

export interface LayerNormOptions extends Pick<InitOptions, 'backend'> { eps?: number; elementwiseAffine?: boolean; bias?: boolean }

/** torch.nn.LayerNorm(normalized_shape, eps=1e-5, elementwise_affine=True). */
export class LayerNorm extends Module {
  readonly normalizedShape: number[];
  readonly eps: number;
  constructor(normalizedShape: number | readonly number[], o: LayerNormOptions = {}) {
    super();
    this.normalizedShape = typeof normalizedShape === 'number' ? [normalizedShape] : [...normalizedShape];
    this.eps = o.eps ?? 1e-5;
    const affine = o.elementwiseAffine ?? true;
    this.registerParameter('weight', affine ? ones(this.normalizedShape, { backend: o.backend }) : null);
    this.registerParameter('bias', affine && o.bias !== false ? zeros(this.normalizedShape, { backend: o.backend }) : null);
  }
  get weight(): Tensor | null { return this.getParameter('weight'); }
  get bias(): Tensor | null { return this.getParameter('bias'); }
  forward(x: Tensor): Tensor { return layerNorm(x, this.normalizedShape, this.weight, this.bias, this.eps); }
}

export interface BatchNormOptions extends Pick<InitOptions, 'backend'> {
  eps?: number;
  /** Weight of the new batch in the running statistics (default 0.1); null = cumulative average, as PyTorch. */
  momentum?: number | null;
  affine?: boolean;
  trackRunningStats?: boolean;
}

/**
 * torch.nn.BatchNorm2d over [N, C, H, W]. Train mode normalizes with the batch statistics (biased variance)
 * and updates running = (1 - momentum) * running + momentum * batch (unbiased variance), counting
 * num_batches_tracked (int32 here; checkpoints' int64 is converted by the loader). Eval mode uses the
 * running statistics. KAIR's DnCNN builds it with eps=1e-4, momentum=0.9.
 */
export class BatchNorm2d extends Module {
  readonly eps: number;
  readonly momentum: number | null;
  private tracked = 0;
  constructor(readonly numFeatures: number, o: BatchNormOptions = {}) {
    super();
    this.eps = o.eps ?? 1e-5;
    this.momentum = o.momentum === undefined ? 0.1 : o.momentum;
    const b = { backend: o.backend };
    const affine = o.affine ?? true;
    this.registerParameter('weight', affine ? ones([numFeatures], b) : null);
    this.registerParameter('bias', affine ? zeros([numFeatures], b) : null);
    const track = o.trackRunningStats ?? true;
    this.registerBuffer('running_mean', track ? zeros([numFeatures], b) : null);
    this.registerBuffer('running_var', track ? ones([numFeatures], b) : null);
    this.registerBuffer('num_batches_tracked', track ? full([], 0, { ...b, dtype: 'int32' }) : null);
  }
  get weight(): Tensor | null { return this.getParameter('weight'); }
  get bias(): Tensor | null { return this.getParameter('bias'); }
  get runningMean(): Tensor | null { return this.getBuffer('running_mean'); }
  get runningVar(): Tensor | null { return this.getBuffer('running_var'); }

  forward(x: Tensor): Tensor {
    if (x.rank !== 4 || x.shape[1] !== this.numFeatures) throw new Error(`BatchNorm2d: expected [N, ${this.numFeatures}, H, W], got [${x.shape.join(',')}]`);
    const c = this.numFeatures;
    const useBatch = this.training || !this.runningMean;
    const weight = this.weight; const bias = this.bias;
    return composite([x, weight, bias], () => {
      let mean: Tensor; let varB: Tensor;
      if (useBatch) {
        mean = x.mean([0, 2, 3], { keepdim: true });
        varB = x.var([0, 2, 3], { keepdim: true, correction: 0 });
        if (this.training && this.runningMean) this.updateRunning(mean, varB, x.size / c);
      } else {
        mean = required(this, 'running_mean', 'buffer').reshape([1, c, 1, 1]);
        varB = required(this, 'running_var', 'buffer').reshape([1, c, 1, 1]);
      }
      let y = x.sub(mean).mul(varB.add(this.eps).rsqrt());
      if (weight) y = y.mul(weight.reshape([1, c, 1, 1]));
      if (bias) y = y.add(bias.reshape([1, c, 1, 1]));
      return y;
    });
  }

  private updateRunning(mean: Tensor, varB: Tensor, n: number): void {
    const rm = required(this, 'running_mean', 'buffer');
    const rv = required(this, 'running_var', 'buffer');
    const nbt = required(this, 'num_batches_tracked', 'buffer');
    noGrad(() => tidy(() => {
      nbt.assign(nbt.add(1));
      this.tracked++;
      // momentum null: cumulative moving average, factor 1/num_batches_tracked. The count is kept on the
      // host too, so no read-back is needed (it follows loads of the buffer only through this module's steps).
      const m = this.momentum ?? 1 / this.tracked;
      const unbiased = varB.mul(n / Math.max(n - 1, 1)).reshape(rv.shape);
      rm.assign(rm.mul(1 - m).add(mean.reshape(rm.shape).mul(m)));
      rv.assign(rv.mul(1 - m).add(unbiased.mul(m)));
    }));
  }
}
