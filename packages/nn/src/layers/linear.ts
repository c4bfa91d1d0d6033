/** Linear: y = x W^T + b over the last axis (torch.nn.Linear). */
import type { Tensor } from '@latentdem/tensor';
import { Module, required } from '../module.js';
import { defaultLinearInit } from '../init.js';
import { composite } from './composite.js';
import type { InitOptions } from '../init.js';

export interface LinearOptions extends InitOptions { bias?: boolean }

export class Linear extends Module {
  constructor(readonly inFeatures: number, readonly outFeatures: number, o: LinearOptions = {}) {
    super();
    const { weight, bias } = defaultLinearInit([outFeatures, inFeatures], o.bias === false ? null : outFeatures, o);
    this.registerParameter('weight', weight);
    this.registerParameter('bias', bias);
  }
  /** [out, in] */
  get weight(): Tensor { return required(this, 'weight'); }
  /** [out] or null */
  get bias(): Tensor | null { return this.getParameter('bias'); }

  forward(x: Tensor): Tensor {
    const w = this.weight; const b = this.bias;
    return composite([x, w, b], () => {
      const y = x.matmul(w.transpose());
      return b ? y.add(b) : y;
    });
  }
}
