/**
 * The optimizer base: a parameter list, a learning rate, per-parameter state tensors and step counts.
 * step() updates parameters in place (Tensor.assign) under noGrad inside tidy, so temporaries are freed.
 */
import { fmtShape, keep, noGrad, tidy } from '@latentdem/tensor';
import type { Tensor } from '@latentdem/tensor';
import { StateDictError } from '../errors.js';

/**
 * Everything needed to resume bit-identically: the learning rate, per-parameter step counts (host numbers:
 * bias corrections are computed on the host) and the state tensors under `${paramIndex}.${name}` keys
 * (PyTorch's names: momentum_buffer, exp_avg, exp_avg_sq). The tensors are the optimizer's own; clone for a snapshot.
 */
export interface OptimizerStateDict { lr: number; steps: number[]; state: Map<string, Tensor> }

export abstract class Optimizer {
  readonly params: readonly Tensor[];
  /** Read by step(); schedules set it. */
  lr: number;
  /** Per-parameter step counts (a parameter without a gradient at a step is not stepped, as PyTorch). */
  protected steps: number[];
  protected readonly state: Map<string, Tensor>[];

  constructor(params: Iterable<Tensor>, lr: number) {
    this.params = [...params];
    if (!(lr >= 0)) throw new Error(`${new.target.name}: invalid learning rate ${lr}`);
    const seen = new Set<Tensor>();
    for (const p of this.params) {
      if (seen.has(p)) throw new Error(`${new.target.name}: a parameter appears twice in the list`);
      seen.add(p);
    }
    this.lr = lr;
    this.steps = this.params.map(() => 0);
    this.state = this.params.map(() => new Map());
  }

  /** One update of every parameter that has a gradient. */
  step(): void {
    noGrad(() => tidy(() => {
      this.params.forEach((p, i) => {
        if (!p.grad) return;
        this.steps[i]++;
        this.update(p, p.grad, i, this.steps[i]);
      });
    }));
  }

  /** Updates parameter `i` in place from its gradient; `step` counts from 1. Runs under noGrad and tidy. */
  protected abstract update(p: Tensor, g: Tensor, i: number, step: number): void;

  /** State tensor `name` of parameter `i`, or undefined. */
  protected getState(i: number, name: string): Tensor | undefined { return this.state[i].get(name); }
  /** Stores a fresh state tensor (kept out of the step's tidy scope; the previous one is disposed). */
  protected setState(i: number, name: string, t: Tensor): Tensor {
    const prev = this.state[i].get(name);
    keep(t);
    this.state[i].set(name, t);
    if (prev && prev !== t) prev.dispose();
    return t;
  }

  /** Disposes and clears the gradient of every parameter. */
  zeroGrad(): void {
    for (const p of this.params) { p.grad?.dispose(); p.grad = null; }
  }

  stateDict(): OptimizerStateDict {
    const state = new Map<string, Tensor>();
    this.state.forEach((m, i) => { for (const [k, t] of m) state.set(`${i}.${k}`, t); });
    return { lr: this.lr, steps: [...this.steps], state };
  }

  /** Copies a state dict in (the input's tensors are cloned, not taken). Keys and shapes are checked first. */
  loadStateDict(sd: OptimizerStateDict): void {
    const problems: string[] = [];
    const unexpected: string[] = [];
    if (sd.steps.length !== this.params.length) problems.push(`steps: ${sd.steps.length} entries for ${this.params.length} parameters`);
    const parsed: [number, string, Tensor][] = [];
    for (const [k, t] of sd.state) {
      const dot = k.indexOf('.');
      const i = Number(k.slice(0, dot));
      const p = this.params[i];
      if (dot < 0 || !Number.isInteger(i) || !p) { unexpected.push(k); continue; }
      if (t.shape.length !== p.shape.length || t.shape.some((n, d) => n !== p.shape[d]) || t.backend !== p.backend || t.dtype !== p.dtype) {
        problems.push(`${k}: ${fmtShape(t.shape)} ${t.dtype} on ${t.backend.name}, parameter ${fmtShape(p.shape)} ${p.dtype} on ${p.backend.name}`);
        continue;
      }
      parsed.push([i, k.slice(dot + 1), t]);
    }
    if (problems.length || unexpected.length) throw new StateDictError('Optimizer.loadStateDict', [], unexpected, problems);
    for (const m of this.state) { for (const t of m.values()) t.dispose(); m.clear(); }
    noGrad(() => { for (const [i, name, t] of parsed) this.setState(i, name, t.clone()); });
    this.steps = [...sd.steps];
    this.lr = sd.lr;
  }

  /** Frees the state tensors. */
  dispose(): void {
    for (const m of this.state) { for (const t of m.values()) t.dispose(); m.clear(); }
  }
}
