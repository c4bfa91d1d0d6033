/** Stochastic gradient descent with momentum, dampening, Nesterov and L2 weight decay (torch.optim.SGD). */
import type { Tensor } from '@latentdem/tensor';
import { Optimizer } from './optimizer.js';

export interface SGDOptions { lr?: number; momentum?: number; dampening?: number; weightDecay?: number; nesterov?: boolean }

export class SGD extends Optimizer {
  readonly momentum: number;
  readonly dampening: number;
  readonly weightDecay: number;
  readonly nesterov: boolean;
  constructor(params: Iterable<Tensor>, o: SGDOptions = {}) {
    super(params, o.lr ?? 1e-3);
    this.momentum = o.momentum ?? 0;
    this.dampening = o.dampening ?? 0;
    this.weightDecay = o.weightDecay ?? 0;
    this.nesterov = o.nesterov ?? false;
    if (this.nesterov && (this.momentum <= 0 || this.dampening !== 0)) throw new Error('SGD: Nesterov momentum requires a momentum and zero dampening');
  }

  protected update(p: Tensor, g: Tensor, i: number): void {
    let d = this.weightDecay !== 0 ? g.add(p.mul(this.weightDecay)) : g;
    if (this.momentum !== 0) {
      const prev = this.getState(i, 'momentum_buffer');
      // The first buffer is the gradient itself (no dampening), as PyTorch.
      const buf = prev ? prev.assign(prev.mul(this.momentum).add(d.mul(1 - this.dampening))) : this.setState(i, 'momentum_buffer', d.clone());
      d = this.nesterov ? d.add(buf.mul(this.momentum)) : buf;
    }
    p.assign(p.sub(d.mul(this.lr)));
  }
}
