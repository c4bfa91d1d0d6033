/** Dropout: zeroes each element with probability p in train mode and scales the rest by 1/(1-p). */
import { rand } from '@latentdem/tensor';
import type { Generator, Tensor } from '@latentdem/tensor';
import { Module } from '../module.js';
import { defaultGenerator } from '../init.js';
import { composite } from './composite.js';

export class Dropout extends Module {
  private readonly generator: Generator | undefined;
  constructor(readonly p = 0.5, o: { generator?: Generator } = {}) {
    super();
    if (!(p >= 0 && p <= 1)) throw new Error(`Dropout: p must be in [0, 1], got ${p}`);
    this.generator = o.generator;
  }
  /** Identity in eval mode (and for p = 0). The mask comes from the generator (else the default one). */
  forward(x: Tensor): Tensor {
    if (!this.training || this.p === 0) return x;
    if (this.p === 1) return x.mul(0);
    const generator = this.generator ?? defaultGenerator();
    return composite([x], () => x.mul(rand(x.shape, { generator, backend: x.backend }).ge(this.p).mul(1 / (1 - this.p))));
  }
}
