/**
 * Learning-rate schedules that set `optimizer.lr` per epoch, with PyTorch's closed forms
 * (StepLR._get_closed_form_lr, CosineAnnealingLR._get_closed_form_lr). Call step() after optimizer.step().
 */
import type { Optimizer } from './optimizer.js';

export abstract class LRScheduler {
  readonly baseLr: number;
  lastEpoch = 0;
  constructor(readonly optimizer: { lr: number }) {
    this.baseLr = optimizer.lr;
  }
  /** The learning rate at `epoch`. */
  abstract lrAt(epoch: number): number;
  /** Advances one epoch (or jumps to `epoch`) and sets the optimizer's lr. */
  step(epoch?: number): number {
    this.lastEpoch = epoch ?? this.lastEpoch + 1;
    this.optimizer.lr = this.lrAt(this.lastEpoch);
    return this.optimizer.lr;
  }
  getLastLr(): number { return this.optimizer.lr; }
  stateDict(): { lastEpoch: number; baseLr: number } { return { lastEpoch: this.lastEpoch, baseLr: this.baseLr }; }
  loadStateDict(s: { lastEpoch: number }): void { this.lastEpoch = s.lastEpoch; this.optimizer.lr = this.lrAt(s.lastEpoch); }
}

/** lr = base * gamma^floor(epoch / stepSize). */
export class StepLR extends LRScheduler {
  readonly stepSize: number;
  readonly gamma: number;
  constructor(optimizer: Optimizer | { lr: number }, o: { stepSize: number; gamma?: number }) {
    super(optimizer);
    if (!(Number.isInteger(o.stepSize) && o.stepSize > 0)) throw new Error(`StepLR: stepSize must be a positive integer, got ${o.stepSize}`);
    this.stepSize = o.stepSize;
    this.gamma = o.gamma ?? 0.1;
  }
  lrAt(epoch: number): number { return this.baseLr * this.gamma ** Math.floor(epoch / this.stepSize); }
}

/** lr = etaMin + (base - etaMin) (1 + cos(pi epoch / tMax)) / 2 (SGDR without restarts). */
export class CosineAnnealingLR extends LRScheduler {
  readonly tMax: number;
  readonly etaMin: number;
  constructor(optimizer: Optimizer | { lr: number }, o: { tMax: number; etaMin?: number }) {
    super(optimizer);
    if (!(o.tMax > 0)) throw new Error(`CosineAnnealingLR: tMax must be positive, got ${o.tMax}`);
    this.tMax = o.tMax;
    this.etaMin = o.etaMin ?? 0;
  }
  lrAt(epoch: number): number {
    return this.etaMin + ((this.baseLr - this.etaMin) * (1 + Math.cos((Math.PI * epoch) / this.tMax))) / 2;
  }
}
