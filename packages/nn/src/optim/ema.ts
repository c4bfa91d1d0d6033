/** An exponential moving average of parameters: shadow = decay * shadow + (1 - decay) * param. */
import { keep, noGrad, tidy } from '@latentdem/tensor';
import type { Tensor } from '@latentdem/tensor';

export interface EMAOptions {
  /**
   * Warm-up as in LDM's LitEma: the decay used is min(decay, (1 + n) / (10 + n)) after n updates.
   * Default false (a plain EMA).
   */
  useNumUpdates?: boolean;
}

export class EMA {
  readonly params: readonly Tensor[];
  /** The averaged values, one per parameter (start as copies of the parameters). */
  readonly shadow: Tensor[];
  numUpdates = 0;
  constructor(params: Iterable<Tensor>, readonly decay = 0.999, readonly options: EMAOptions = {}) {
    if (!(decay >= 0 && decay <= 1)) throw new Error(`EMA: decay must be in [0, 1], got ${decay}`);
    this.params = [...params];
    this.shadow = noGrad(() => this.params.map((p) => keep(p.detach().clone())));
  }

  /** The decay the next update() uses. */
  currentDecay(): number {
    const n = this.numUpdates + 1;
    return this.options.useNumUpdates ? Math.min(this.decay, (1 + n) / (10 + n)) : this.decay;
  }

  update(): void {
    const d = this.currentDecay();
    this.numUpdates++;
    noGrad(() => tidy(() => {
      this.params.forEach((p, i) => { const s = this.shadow[i]; s.assign(s.mul(d).add(p.mul(1 - d))); });
    }));
  }

  /** Copies the averages into the parameters (or into `targets`, in the same order). */
  copyTo(targets: readonly Tensor[] = this.params): void {
    if (targets.length !== this.shadow.length) throw new Error(`EMA.copyTo: ${targets.length} targets for ${this.shadow.length} averages`);
    noGrad(() => targets.forEach((t, i) => t.assign(this.shadow[i])));
  }

  /** Exchanges the parameters' values and the averages (call twice to restore): evaluate with the EMA weights. */
  swap(): void {
    noGrad(() => tidy(() => {
      this.params.forEach((p, i) => {
        const tmp = p.clone();
        p.assign(this.shadow[i]);
        this.shadow[i].assign(tmp);
      });
    }));
  }

  stateDict(): { numUpdates: number; shadow: Map<string, Tensor> } {
    return { numUpdates: this.numUpdates, shadow: new Map(this.shadow.map((t, i) => [String(i), t])) };
  }
  loadStateDict(s: { numUpdates: number; shadow: Map<string, Tensor> }): void {
    if (s.shadow.size !== this.shadow.length) throw new Error(`EMA.loadStateDict: ${s.shadow.size} averages for ${this.shadow.length} parameters`);
    noGrad(() => this.shadow.forEach((t, i) => {
      const v = s.shadow.get(String(i));
      if (!v) throw new Error(`EMA.loadStateDict: average '${i}' is missing`);
      t.assign(v);
    }));
    this.numUpdates = s.numUpdates;
  }

  dispose(): void { for (const t of this.shadow) t.dispose(); }
}
