/** Sequential and ModuleList: children named '0', '1', ... as in PyTorch's state dicts. */
import type { Tensor } from '@latentdem/tensor';
import { Module } from '../module.js';
import type { TensorModule } from '../module.js';

/** Holds modules in a list; forward is up to the owner. */
export class ModuleList<M extends Module = Module> extends Module {
  private readonly items: M[] = [];
  constructor(modules: readonly M[] = []) {
    super();
    for (const m of modules) this.append(m);
  }
  append(m: M): this { this.registerModule(String(this.items.length), m); this.items.push(m); return this; }
  at(i: number): M {
    const m = this.items[i < 0 ? i + this.items.length : i];
    if (!m) throw new RangeError(`ModuleList: index ${i} out of range for length ${this.items.length}`);
    return m;
  }
  get length(): number { return this.items.length; }
  [Symbol.iterator](): Iterator<M> { return this.items[Symbol.iterator](); }
}

/** Chains tensor-to-tensor modules. */
export class Sequential extends ModuleList<TensorModule> {
  constructor(...modules: TensorModule[]) { super(modules); }
  forward(x: Tensor): Tensor {
    for (const m of this) x = m.forward(x);
    return x;
  }
}
