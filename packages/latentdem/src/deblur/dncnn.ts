/**
 * DnCNN as KAIR builds it (cszn/KAIR models/network_dncnn.py, commit fc1732f4): a head conv + ReLU,
 * nb - 2 body blocks of conv (+ BatchNorm when act_mode is 'BR') + ReLU, and a tail conv, flattened into one
 * Sequential named `model` so that state-dict keys are KAIR's (`model.<i>.weight`). `DnCNN` is residual
 * (returns x - n, broadcasting n over the input channels); `FDnCNN` (the LatentDEM release's kernel
 * denoiser) returns the network output directly. For blur kernels the input has 2 channels: the noisy
 * kernel and a constant map of the noise standard deviation.
 */
import { concat, full, noGrad, tidy } from '@latentdem/tensor';
import type { Backend, BackendName, Generator, Tensor } from '@latentdem/tensor';
import { BatchNorm2d, Conv2d, Module, ReLU, SafetensorsError, SafetensorsFile, Sequential } from '@latentdem/nn';
import type { TensorModule } from '@latentdem/nn';
import type { KernelPrior } from './hqs.js';

/** Field names are KAIR's constructor arguments, plus whether the output is residual (DnCNN) or direct (FDnCNN). */
export interface DnCNNConfig {
  in_nc: number;
  out_nc: number;
  nc: number;
  /** Number of conv layers in all (head + body + tail). */
  nb: number;
  /** 'BR': conv + BatchNorm + ReLU in the body; 'R': conv + ReLU. */
  act_mode: 'BR' | 'R';
  /** true: forward returns x - model(x) (KAIR DnCNN); false: model(x) (KAIR FDnCNN). */
  residual: boolean;
  /**
   * How a kernel k and its noise std sigma become the network input (see `DnCNN.denoise`). 'map' (default):
   * [k, sigma * 1], the release's convention. 'normalized': [k / sigma, ln(sigma * h * w) * 1] and the output
   * multiplied by sigma, so the network always sees unit-variance noise whatever the level, and the map
   * says how strong the noise is against a kernel's mean value 1 / (h w). Ours uses 'normalized': with
   * 'map' the inputs are ~1e-3 and the noise levels span 250x, and training did not beat the noisy input.
   */
  kernelInput?: 'map' | 'normalized';
}

/** The LatentDEM release's kernel denoiser: FDnCNN(in_nc=2, out_nc=1, nc=64, nb=20, act_mode='R'). */
export const RELEASE_FDNCNN: DnCNNConfig = { in_nc: 2, out_nc: 1, nc: 64, nb: 20, act_mode: 'R', residual: false };
/** The paper's small kernel denoiser: 5 blocks, 32 channels, batch norm, residual. */
export const PAPER_DNCNN: DnCNNConfig = { in_nc: 2, out_nc: 1, nc: 32, nb: 5, act_mode: 'BR', residual: true };
/** latentdem's trained kernel denoiser (weights/dncnn-kernel): the paper's network with normalized input. */
export const KERNEL_DNCNN: DnCNNConfig = { ...PAPER_DNCNN, kernelInput: 'normalized' };
/**
 * The HQS prior weight lambda to use with the shipped KERNEL_DNCNN weights (denoiser noise level
 * sqrt(lambda / beta) = 1.8e-3 at beta 5e6). Chosen among 1, 4, 16, 64 on 20 calibration pairs of
 * tools/eval-mstep --calibrate (never the evaluation pairs); the release's FDnCNN uses lambda 1.
 */
export const KERNEL_DNCNN_LAMBDA = 16;

export class DnCNN extends Module {
  readonly model: Sequential;
  constructor(readonly config: DnCNNConfig, o: { generator?: Generator; backend?: BackendName | Backend } = {}) {
    super();
    const { in_nc, out_nc, nc, nb, act_mode } = config;
    if (nb < 2) throw new Error(`DnCNN: nb must be at least 2 (head and tail), got ${nb}`);
    const conv = (cin: number, cout: number): Conv2d => new Conv2d(cin, cout, 3, { padding: 1, ...o });
    const layers: TensorModule[] = [conv(in_nc, nc), new ReLU()];
    for (let i = 0; i < nb - 2; i++) {
      layers.push(conv(nc, nc));
      // KAIR: nn.BatchNorm2d(nc, momentum=0.9, eps=1e-04, affine=True) (models/basicblock.py, conv()).
      if (act_mode === 'BR') layers.push(new BatchNorm2d(nc, { eps: 1e-4, momentum: 0.9, backend: o.backend }));
      layers.push(new ReLU());
    }
    layers.push(conv(nc, out_nc));
    this.model = this.registerModule('model', new Sequential(...layers));
  }

  forward(x: Tensor): Tensor {
    const n = this.model.forward(x);
    return this.config.residual ? x.sub(n) : n;
  }

  /**
   * The denoised kernels [N,1,h,w] (not projected; differentiable) for noisy kernels k [N,1,h,w] at noise
   * std sigma (a number, or [N,1,1,1] per kernel), with the input convention of `config.kernelInput`.
   */
  denoise(k: Tensor, sigma: number | Tensor): Tensor {
    // No tidy here: in training the intermediates are saved for backward (callers tidy around it).
    const [n, , h, w] = k.shape;
    const s = typeof sigma === 'number' ? full([n, 1, 1, 1], sigma, { backend: k.backend }) : sigma;
    const normalized = this.config.kernelInput === 'normalized';
    const x = normalized ? k.div(s) : k;
    const map = (normalized ? s.mul(h * w).log() : s).expand([n, 1, h, w]);
    const out = this.forward(concat([x, map], 1));
    // Residual DnCNN subtracts n from both input channels; channel 0 is the denoised kernel.
    const z = this.config.residual ? out.narrow(1, 0, 1) : out;
    return normalized ? z.mul(s) : z;
  }
}

/**
 * The M-step's prior step (the release's utils_agem.regularization_step, how='pnp'): denoise kernels
 * k [N,1,h,w] at noise std `sigma` (kernel units), then clamp to >= 0 and renormalize each to sum 1.
 */
export function denoiseKernel(net: DnCNN, k: Tensor, sigma: number): Tensor {
  return noGrad(() => tidy(() => {
    const z = net.denoise(k, sigma).clamp(0);
    return z.div(z.sum([2, 3], { keepdim: true }).maximum(1e-30));
  }));
}

/** `net` as the M-step's prior step on single [h, w] kernels (the `prior` option of estimateKernel). */
export function dncnnPrior(net: DnCNN): KernelPrior {
  return (k, sigma) => {
    const [h, w] = k.shape;
    return denoiseKernel(net, k.reshape([1, 1, h, w]), sigma).reshape([h, w]);
  };
}

/**
 * A DnCNN from a safetensors file that records its config as JSON in the metadata key `config` (as
 * tools/train-dncnn writes it and weights/dncnn-kernel ships it), in eval mode. Training checkpoints also
 * hold `optimizer.*` tensors; those are skipped.
 */
export async function loadDnCNN(path: string, o: { backend?: BackendName | Backend } = {}): Promise<DnCNN> {
  const f = await SafetensorsFile.open(path);
  try {
    const raw = f.metadata.config;
    if (raw === undefined) throw new SafetensorsError(path, 'has no "config" metadata: not a DnCNN file written by latentdem (for other files, build a DnCNN and call loadStateDict)');
    let config: DnCNNConfig;
    try {
      config = JSON.parse(raw) as DnCNNConfig;
    } catch (e) {
      throw new SafetensorsError(path, `"config" metadata is not valid JSON (${(e as Error).message})`, { cause: e });
    }
    for (const key of ['in_nc', 'out_nc', 'nc', 'nb'] as const) {
      if (!Number.isInteger(config[key]) || config[key] < 1) throw new SafetensorsError(path, `"config" metadata: ${key} must be a positive integer, got ${JSON.stringify(config[key])}`);
    }
    if (config.act_mode !== 'BR' && config.act_mode !== 'R') throw new SafetensorsError(path, `"config" metadata: act_mode must be 'BR' or 'R', got ${JSON.stringify(config.act_mode)}`);
    const net = new DnCNN(config, o);
    const weights = new Map<string, Tensor>();
    for (const key of f.keys()) if (!key.startsWith('optimizer.')) weights.set(key, await f.read(key, { backend: o.backend }));
    try {
      net.loadStateDict(weights);
    } catch (e) {
      net.dispose();
      throw e;
    } finally {
      for (const t of weights.values()) t.dispose();
    }
    net.eval();
    return net;
  } finally {
    await f.close();
  }
}
