/** Parameter-free activation modules, for Sequential (ReLU keeps DnCNN's child indices as in KAIR). */
import type { Tensor } from '@latentdem/tensor';
import { Module } from '../module.js';

export class ReLU extends Module { forward(x: Tensor): Tensor { return x.relu(); } }
export class SiLU extends Module { forward(x: Tensor): Tensor { return x.silu(); } }
export class Tanh extends Module { forward(x: Tensor): Tensor { return x.tanh(); } }
export class Sigmoid extends Module { forward(x: Tensor): Tensor { return x.sigmoid(); } }
export class GELU extends Module {
  constructor(readonly approximate: 'none' | 'tanh' = 'none') { super(); }
  forward(x: Tensor): Tensor { return x.gelu(this.approximate); }
}
export class Identity extends Module { forward(x: Tensor): Tensor { return x; } }
