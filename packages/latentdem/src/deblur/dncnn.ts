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
import { BatchNorm2d, Conv2d, Module, ReLU, Sequential } from '@latentdem/nn';
import type { TensorModule } from '@latentdem/nn';

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
}

/** The LatentDEM release's kernel denoiser: FDnCNN(in_nc=2, out_nc=1, nc=64, nb=20, act_mode='R'). */
export const RELEASE_FDNCNN: DnCNNConfig = { in_nc: 2, out_nc: 1, nc: 64, nb: 20, act_mode: 'R', residual: false };
/** The paper's small kernel denoiser: 5 blocks, 32 channels, batch norm, residual. */
export const PAPER_DNCNN: DnCNNConfig = { in_nc: 2, out_nc: 1, nc: 32, nb: 5, act_mode: 'BR', residual: true };

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
}

/**
 * The M-step's prior step (the release's utils_agem.regularization_step, how='pnp'): denoise kernels
 * k [N,1,h,w] at noise std `sigma` (kernel units), then clamp to >= 0 and renormalize each to sum 1.
 */
export function denoiseKernel(net: DnCNN, k: Tensor, sigma: number): Tensor {
  return noGrad(() => tidy(() => {
    const map = full([k.shape[0], 1, k.shape[2], k.shape[3]], sigma, { backend: k.backend });
    const out = net.forward(concat([k, map], 1));
    // Residual DnCNN subtracts n from both input channels; channel 0 is the denoised kernel.
    const z = (net.config.residual ? out.narrow(1, 0, 1) : out).clamp(0);
    return z.div(z.sum([2, 3], { keepdim: true }));
  }));
}
