/**
 * Kernel priors for `tools/eval-mstep.ts --denoiser tools/priors/dncnn.ts`: the M-step's plug-and-play
 * prior step with a DnCNN. Which network: env LATENTDEM_PRIOR = 'ours' (default; weights from
 * LATENTDEM_DNCNN_WEIGHTS or weights/dncnn-kernel/dncnn-kernel.safetensors) or 'release' (the LatentDEM
 * release's FDnCNN, read from its original pickle in ../shared/data/latentdem-release/).
 */
import { join } from 'node:path';
import { ready } from '@latentdem/tensor';
import { loadTorchCheckpoint } from '@latentdem/nn';
import { DnCNN, RELEASE_FDNCNN, denoiseKernel, loadDnCNN, type KernelPrior } from 'latentdem';

export async function createPrior(): Promise<KernelPrior> {
  const backend = await ready();
  const which = process.env.LATENTDEM_PRIOR ?? 'ours';
  let net: DnCNN;
  if (which === 'release') {
    net = new DnCNN(RELEASE_FDNCNN, { backend });
    net.loadStateDict(await loadTorchCheckpoint(join(process.cwd(), '..', 'shared', 'data', 'latentdem-release', 'kernel_denoiser_fdncnn_nb20_nc64.pth'), { backend, allowModuleRecords: true }));
  } else {
    net = await loadDnCNN(process.env.LATENTDEM_DNCNN_WEIGHTS ?? join(process.cwd(), 'weights', 'dncnn-kernel', 'dncnn-kernel.safetensors'), { backend });
  }
  net.eval();
  return (k, sigma) => {
    const [h, w] = k.shape;
    return denoiseKernel(net, k.reshape([1, 1, h, w]), sigma).reshape([h, w]);
  };
}
