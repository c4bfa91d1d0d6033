/** Adam (L2 weight decay folded into the gradient) and AdamW (decoupled weight decay), as torch.optim. */
import { zerosLike } from '@latentdem/tensor';
import type { Tensor } from '@latentdem/tensor';
import { Optimizer } from './optimizer.js';

export interface AdamOptions { lr?: number; betas?: readonly [number, number]; eps?: number; weightDecay?: number }

export class Adam extends Optimizer {
  readonly betas: readonly [number, number];
  readonly eps: number;
  readonly weightDecay: number;
  /** AdamW: p *= 1 - lr * weightDecay before the Adam step, instead of adding weightDecay * p to the gradient. */
  protected readonly decoupled: boolean = false;

  constructor(params: Iterable<Tensor>, o: AdamOptions = {}, defaultWeightDecay = 0) {
    super(params, o.lr ?? 1e-3);
    this.betas = o.betas ?? [0.9, 0.999];
    this.eps = o.eps ?? 1e-8;
    this.weightDecay = o.weightDecay ?? defaultWeightDecay;
  }

  protected update(p: Tensor, g: Tensor, i: number, step: number): void {
    const [b1, b2] = this.betas;
    if (this.weightDecay !== 0) {
      if (this.decoupled) p.assign(p.mul(1 - this.lr * this.weightDecay));
      else g = g.add(p.mul(this.weightDecay));
    }
    const m = this.getState(i, 'exp_avg') ?? this.setState(i, 'exp_avg', zerosLike(p));
    const v = this.getState(i, 'exp_avg_sq') ?? this.setState(i, 'exp_avg_sq', zerosLike(p));
    m.assign(m.mul(b1).add(g.mul(1 - b1)));
    v.assign(v.mul(b2).add(g.square().mul(1 - b2)));
    // torch.optim.Adam (single-tensor path): denom = sqrt(v) / sqrt(1 - b2^t) + eps; p -= lr / (1 - b1^t) * m / denom.
    const stepSize = this.lr / (1 - b1 ** step);
    const denom = v.sqrt().div(Math.sqrt(1 - b2 ** step)).add(this.eps);
    p.assign(p.sub(m.div(denom).mul(stepSize)));
  }
}

/** AdamW (Loshchilov and Hutter), PyTorch's default weight decay 0.01. */
export class AdamW extends Adam {
  protected override readonly decoupled = true;
  constructor(params: Iterable<Tensor>, o: AdamOptions = {}) { super(params, o, 1e-2); }
}
