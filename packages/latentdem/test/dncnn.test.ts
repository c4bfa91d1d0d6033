/** DnCNN against golden outputs of KAIR's code, and the LatentDEM release's FDnCNN loaded from its original pickle. */
import t from 'tap';
import { join } from 'node:path';
import * as L from '@latentdem/tensor';
import { loadSafetensors, loadTorchCheckpoint } from '@latentdem/nn';
import { DnCNN, PAPER_DNCNN, RELEASE_FDNCNN, denoiseKernel } from '../src/deblur/dncnn.js';
import { testBackends } from '../../tensor/test/helpers.js';

const SHARED = join(process.cwd(), '..', 'shared');
const backends = await testBackends();

/** max |a-b| and max |a-b| / std(b). */
async function diff(a: L.Tensor, b: L.Tensor): Promise<{ maxAbs: number; rel: number }> {
  const x = await a.data(); const y = await b.data();
  let maxAbs = 0; let mean = 0;
  for (let i = 0; i < y.length; i++) { maxAbs = Math.max(maxAbs, Math.abs(x[i] - y[i])); mean += y[i]; }
  mean /= y.length;
  let v = 0;
  for (let i = 0; i < y.length; i++) v += (y[i] - mean) ** 2;
  return { maxAbs, rel: maxAbs / Math.sqrt(v / y.length) };
}

function splitFixture(all: Map<string, L.Tensor>): { weights: Map<string, L.Tensor>; fx: Map<string, L.Tensor> } {
  const weights = new Map<string, L.Tensor>(); const fx = new Map<string, L.Tensor>();
  for (const [k, v] of all) if (k.startsWith('__fixture__.')) fx.set(k.slice(12), v); else weights.set(k, v);
  return { weights, fx };
}

for (const b of backends) {
  t.test(`${b.name}: DnCNN(2, 1, nc 32, nb 5, 'BR') equals KAIR's output (dncnn_small)`, async (t) => {
    const { weights, fx } = splitFixture(await loadSafetensors(join(SHARED, 'fixtures/dncnn_small/model.safetensors'), { backend: b }));
    const net = new DnCNN(PAPER_DNCNN, { backend: b });
    net.loadStateDict(weights, { strict: true });
    net.eval();
    const x = fx.get('x')!;
    const n = L.noGrad(() => net.model.forward(x));
    const out = L.noGrad(() => net.forward(x));
    const dn = await diff(n, fx.get('noise')!);
    const d = await diff(out, fx.get('out')!);
    // fixture.json tolerance: max_abs 1e-5, max |diff| / std(out) <= 1e-4
    t.ok(d.maxAbs <= 1e-5 && d.rel <= 1e-4, `out: max abs ${d.maxAbs.toExponential(2)}, rel ${d.rel.toExponential(2)}`);
    t.ok(dn.maxAbs <= 1e-5, `body output n: max abs ${dn.maxAbs.toExponential(2)}`);
  });

  t.test(`${b.name}: the release's FDnCNN loaded from its pickle equals the golden output`, async (t) => {
    const { weights: golden, fx } = splitFixture(await loadSafetensors(join(SHARED, 'fixtures/latentdem_fdncnn_golden/model.safetensors'), { backend: b }));
    const fromPickle = await loadTorchCheckpoint(join(SHARED, 'data/latentdem-release/kernel_denoiser_fdncnn_nb20_nc64.pth'), { backend: b, allowModuleRecords: true });
    const net = new DnCNN(RELEASE_FDNCNN, { backend: b });
    net.loadStateDict(fromPickle, { strict: true });
    t.same([...fromPickle.keys()].sort(), [...golden.keys()].sort(), 'the pickle holds the golden fixture\'s keys');
    const x = fx.get('x')!;
    const out = L.noGrad(() => net.forward(x));
    const want = fx.get('out')!;
    for (let i = 0; i < 2; i++) {
      // fixture.json tolerance: max_abs 3e-7, per batch item max |diff| / std <= 2e-4
      const d = await diff(out.narrow(0, i, 1), want.narrow(0, i, 1));
      t.ok(d.maxAbs <= 3e-7 && d.rel <= 2e-4, `item ${i}: max abs ${d.maxAbs.toExponential(2)}, rel ${d.rel.toExponential(2)}`);
    }
    const z = denoiseKernel(net, x.narrow(0, 1, 1).narrow(1, 0, 1), Math.sqrt(1 / 5e6));
    const d = await diff(z, fx.get('out_mstep')!);
    // out_mstep differs from a batch-of-2 clamp+renormalise by ~2e-6 relative (fixtures README).
    t.ok(d.rel <= 1e-3, `M-step prior step (clamp + renormalise): rel ${d.rel.toExponential(2)}`);
    t.ok(Math.abs((await z.sum().item()) - 1) < 1e-5, 'sums to one');
  });
}
