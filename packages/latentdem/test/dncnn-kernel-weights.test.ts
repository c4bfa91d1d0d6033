/**
 * The shipped kernel denoiser (weights/dncnn-kernel): it loads with its config, denoises held-out kernels
 * better than the projected noisy input, and makes the HQS M-step more accurate than no prior.
 */
import t from 'tap';
import { join } from 'node:path';
import * as L from '@latentdem/tensor';
import { loadSafetensors } from '@latentdem/nn';
import { KERNEL_DNCNN, KERNEL_DNCNN_LAMBDA, denoiseKernel, dncnnPrior, loadDnCNN } from '../src/deblur/dncnn.js';
import { blurCircular, estimateKernel } from '../src/deblur/hqs.js';
import { kernelMse } from '../src/deblur/metrics.js';
import { motionKernelData } from '../src/deblur/motionblur.js';
import { testBackends } from '../../tensor/test/helpers.js';

const WEIGHTS = join(process.cwd(), 'weights', 'dncnn-kernel', 'dncnn-kernel.safetensors');
const SHARED = join(process.cwd(), '..', 'shared');
const backends = await testBackends();
const held = (await loadSafetensors(join(SHARED, 'data', 'mstep-eval', 'kernels.safetensors'), { backend: 'cpu' })).get('kernels')!;
const heldData = await held.data();

for (const b of backends) {
  t.test(`${b.name}: shipped DnCNN denoises 6 held-out kernels better than the projected noisy kernel`, async (t) => {
    const net = await loadDnCNN(WEIGHTS, { backend: b });
    t.same(net.config, KERNEL_DNCNN, 'config from the file');
    for (const sigma of [4.47e-4, 1.4e-3, 3.2e-3]) {
      let eNoisy = 0; let eOurs = 0;
      const n = 6;
      const clean = L.tensor(heldData.slice(0, n * 4096), { shape: [n, 1, 64, 64], backend: b });
      const noisy = L.tidy(() => {
        const p = clean.add(L.randn([n, 1, 64, 64], { seed: 77, backend: b }).mul(sigma)).clamp(0);
        return p.div(p.sum([2, 3], { keepdim: true }));
      });
      const den = denoiseKernel(net, noisy, sigma);
      const [c, nz, d] = [await clean.data(), await noisy.data(), await den.data()];
      for (let i = 0; i < n; i++) {
        const s = i * 4096; const e = s + 4096;
        eNoisy += kernelMse(nz.subarray(s, e), c.subarray(s, e)); eOurs += kernelMse(d.subarray(s, e), c.subarray(s, e));
      }
      t.ok(eOurs < 0.7 * eNoisy, `sigma ${sigma}: MSE ${(eOurs / n).toExponential(2)} vs noisy ${(eNoisy / n).toExponential(2)}`);
      for (const x of [clean, noisy, den]) x.dispose();
    }
    net.dispose();
  });
}

t.test('shipped DnCNN in the HQS M-step beats no prior on 2 calibration pairs (sigma 0.02)', async (t) => {
  const b = backends[backends.length - 1]; // webgpu when present: 40 DnCNN calls are slow on the cpu backend
  const net = await loadDnCNN(WEIGHTS, { backend: b });
  const prior = dncnnPrior(net);
  for (const i of [0, 1]) {
    // Calibration pair i of tools/eval-mstep --calibrate: our kernel seed 7000000 + i, train image 7 i.
    const kTrue = motionKernelData({ size: 64, intensity: 0.5, seed: 7_000_000 + i });
    const x = await L.readImage(join(SHARED, 'data', 'train-images', `${String(7 * i).padStart(5, '0')}.png`), { channels: 3, backend: b });
    const y = L.tidy(() => blurCircular(x, L.tensor(kTrue, { shape: [64, 64], backend: b })).add(L.randn(x.shape, { seed: 100 + i, backend: b }).mul(0.02)));
    const none = await estimateKernel(x, y, { sigma: 0.02 }).data();
    const pnp = await estimateKernel(x, y, { sigma: 0.02, prior, lambda: KERNEL_DNCNN_LAMBDA }).data();
    const [eNone, ePnp] = [kernelMse(none, kTrue), kernelMse(pnp, kTrue)];
    t.ok(ePnp < eNone, `pair ${i}: kernel MSE with the denoiser ${ePnp.toExponential(2)} < without ${eNone.toExponential(2)}`);
    x.dispose(); y.dispose();
  }
  net.dispose();
});
