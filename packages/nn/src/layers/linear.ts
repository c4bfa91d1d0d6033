/** Linear: y = x W^T + b over the last axis (torch.nn.Linear). */
import { linear, type Tensor } from '@latentdem/tensor';
import { Module, required } from '../module.js';
import { defaultLinearInit } from '../init.js';
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

  /** x @ weight^T + bias in one GEMM (the bias is added by the GEMM's epilogue). */
  forward(x: Tensor): Tensor { return linear(x, this.weight, this.bias); }
}
