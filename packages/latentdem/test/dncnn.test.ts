/** DnCNN against golden outputs of KAIR's code, and the LatentDEM release's FDnCNN loaded from its original pickle. */
import t from 'tap';
import { join } from 'node:path';
import * as L from '@latentdem/tensor';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { SafetensorsError, loadSafetensors, loadTorchCheckpoint, manualSeed, saveSafetensors } from '@latentdem/nn';
import { DnCNN, KERNEL_DNCNN, PAPER_DNCNN, RELEASE_FDNCNN, denoiseKernel, loadDnCNN } from '../src/deblur/dncnn.js';
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

for (const b of backends) {
  t.test(`${b.name}: the 'normalized' kernel input is [k / sigma, ln(sigma h w)], output times sigma; loadDnCNN round trip`, async (t) => {
    manualSeed(3);
    const net = new DnCNN(KERNEL_DNCNN, { backend: b });
    net.eval();
    const k = L.rand([2, 1, 16, 16], { seed: 5, backend: b }).mul(1e-3);
    const sig = L.tensor([2e-4, 3e-2], { shape: [2, 1, 1, 1], backend: b });
    const got = L.noGrad(() => net.denoise(k, sig));
    // By hand, per kernel, with scalar sigma: residual DnCNN, so channel 0 of x - model(x).
    for (let i = 0; i < 2; i++) {
      const s = [2e-4, 3e-2][i];
      const ki = k.narrow(0, i, 1);
      const x = L.concat([ki.div(s), L.full([1, 1, 16, 16], Math.log(s * 256), { backend: b })], 1);
      const want = L.noGrad(() => x.sub(net.model.forward(x)).narrow(1, 0, 1).mul(s));
      const d = await diff(got.narrow(0, i, 1), want);
      t.ok(d.rel < 1e-5, `kernel ${i}: rel ${d.rel.toExponential(2)}`);
      t.ok((await L.noGrad(() => net.denoise(ki, s)).sub(want).abs().max().item()) < 1e-9, `kernel ${i}: scalar sigma agrees`);
    }
    // The 'map' convention would give a different result (the test above would catch a missing normalization).
    const asMap = new DnCNN({ ...KERNEL_DNCNN, kernelInput: 'map' }, { backend: b });
    asMap.loadStateDict(net.stateDict()); asMap.eval();
    t.ok((await diff(L.noGrad(() => asMap.denoise(k, sig)), got)).rel > 1e-2, "'map' differs");

    const dir = mkdtempSync(join(tmpdir(), 'latentdem-dncnn-'));
    try {
      const file = join(dir, 'k.safetensors');
      await saveSafetensors(file, net.stateDict(), { metadata: { config: JSON.stringify(KERNEL_DNCNN) } });
      const back = await loadDnCNN(file, { backend: b });
      t.same(back.config, KERNEL_DNCNN, 'config from the metadata');
      t.equal(back.training, false, 'in eval mode');
      t.ok((await diff(L.noGrad(() => back.denoise(k, sig)), got)).maxAbs === 0, 'identical output');
      const bare = join(dir, 'bare.safetensors');
      await saveSafetensors(bare, net.stateDict());
      await t.rejects(loadDnCNN(bare, { backend: b }), SafetensorsError, 'no config metadata: typed error');
      const bad = join(dir, 'bad.safetensors');
      await saveSafetensors(bad, net.stateDict(), { metadata: { config: JSON.stringify({ ...KERNEL_DNCNN, nc: 0 }) } });
      await t.rejects(loadDnCNN(bad, { backend: b }), /nc must be a positive integer/, 'bad config: named field');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
