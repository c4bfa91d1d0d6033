/**
 * PyTorch's default initializations (torch/nn/init.py), drawn from a latentdem `Generator`. The draws
 * follow the same distributions as PyTorch but not its random stream: the same seed does not give
 * PyTorch's numbers (Philox here, PyTorch's own CPU generator there).
 */
import { Generator, keep, noGrad, rand, randn, tidy, zeros } from '@latentdem/tensor';
import type { Backend, BackendName, Tensor } from '@latentdem/tensor';

/** Where a layer's initial values come from. Without a generator, the process-wide default one is used. */
export interface InitOptions { generator?: Generator; backend?: BackendName | Backend }

let defaultGen = new Generator(0);
/** The generator layers draw from when none is passed. */
export function defaultGenerator(): Generator { return defaultGen; }
/** Restarts the default generator at `seed` (like torch.manual_seed for initializations). */
export function manualSeed(seed: number): void { defaultGen = new Generator(seed); }

/** torch.nn.init._calculate_fan_in_and_fan_out: dim 1 is fan in, dim 0 fan out, times the receptive field. */
export function fanInAndFanOut(shape: readonly number[]): [number, number] {
  if (shape.length < 2) throw new Error(`init: fan in and fan out need at least 2 dimensions, got [${shape.join(',')}]`);
  const receptive = shape.slice(2).reduce((a, b) => a * b, 1);
  return [shape[1] * receptive, shape[0] * receptive];
}

export type Nonlinearity = 'linear' | 'conv2d' | 'sigmoid' | 'tanh' | 'relu' | 'leaky_relu';
/** torch.nn.init.calculate_gain. */
export function calculateGain(nonlinearity: Nonlinearity, param?: number): number {
  switch (nonlinearity) {
    case 'linear': case 'conv2d': case 'sigmoid': return 1;
    case 'tanh': return 5 / 3;
    case 'relu': return Math.SQRT2;
    case 'leaky_relu': { const a = param ?? 0.01; return Math.sqrt(2 / (1 + a * a)); }
  }
}

let skipping = false;
/**
 * Runs `fn` (typically `new Model(config)`) with initializations allocating zeros instead of drawing random
 * numbers: for modules whose weights are loaded right after. SD's UNet draws 860M numbers otherwise.
 */
export function withoutInit<T>(fn: () => T): T {
  const prev = skipping;
  skipping = true;
  try { return fn(); } finally { skipping = prev; }
}

/** U(lo, hi) of `shape` (float32), owned by the caller. */
export function uniform(shape: readonly number[], lo: number, hi: number, o: InitOptions = {}): Tensor {
  if (skipping) return zeros(shape, { backend: o.backend });
  const generator = o.generator ?? defaultGen;
  return keep(noGrad(() => tidy(() => rand(shape, { generator, backend: o.backend }).mul(hi - lo).add(lo))));
}

/** N(mean, std^2) of `shape`. */
export function normal(shape: readonly number[], mean = 0, std = 1, o: InitOptions = {}): Tensor {
  if (skipping) return zeros(shape, { backend: o.backend });
  const generator = o.generator ?? defaultGen;
  if (mean === 0 && std === 1) return keep(randn(shape, { generator, backend: o.backend }));
  return keep(noGrad(() => tidy(() => randn(shape, { generator, backend: o.backend }).mul(std).add(mean))));
}

export interface KaimingOptions extends InitOptions { a?: number; mode?: 'fan_in' | 'fan_out'; nonlinearity?: Nonlinearity }
/** torch.nn.init.kaiming_uniform_: U(-b, b) with b = gain * sqrt(3 / fan). Defaults as PyTorch (a=0, fan_in, leaky_relu). */
export function kaimingUniform(shape: readonly number[], o: KaimingOptions = {}): Tensor {
  const [fanIn, fanOut] = fanInAndFanOut(shape);
  const fan = (o.mode ?? 'fan_in') === 'fan_in' ? fanIn : fanOut;
  const gain = calculateGain(o.nonlinearity ?? 'leaky_relu', o.a ?? 0);
  const bound = fan > 0 ? gain * Math.sqrt(3 / fan) : 0;
  return uniform(shape, -bound, bound, o);
}

/**
 * The default init of Linear and Conv layers (their reset_parameters): weight kaiming_uniform_(a=sqrt(5)),
 * i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)); bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
 * For ConvTranspose2d PyTorch's fan_in is weight dim 1 (out_channels/groups) times the kernel size.
 */
export function defaultLinearInit(weightShape: readonly number[], biasSize: number | null, o: InitOptions = {}): { weight: Tensor; bias: Tensor | null } {
  const weight = kaimingUniform(weightShape, { ...o, a: Math.sqrt(5) });
  const [fanIn] = fanInAndFanOut(weightShape);
  const bound = fanIn > 0 ? 1 / Math.sqrt(fanIn) : 0;
  return { weight, bias: biasSize === null ? null : uniform([biasSize], -bound, bound, o) };
}
