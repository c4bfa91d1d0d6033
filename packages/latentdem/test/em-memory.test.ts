/**
 * The EM loop's memory: live tensors, bytes and GPU buffers stay flat over 1000 deblurring steps with the
 * fixture-size SD models (../shared/fixtures; random-init weights from the original code, so the output itself
 * means nothing). Its own file so tap runs it beside the other tests (it takes minutes on lavapipe).
 */
import t from 'tap';
import { readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import * as L from '@latentdem/tensor';
import { testBackends, gpuBackend } from '../../tensor/test/helpers.js';
import { deblur } from '../src/deblur/deblur.js';
import { loadPrior } from '../src/prior.js';

t.test('em(): flat memory over 1000 steps with the fixture-size SD models', async (t) => {
  const gpu = await gpuBackend();
  const backend = gpu ?? (await testBackends())[0];
  const dir = t.testdir();
  const shared = resolve('../shared/fixtures');
  const fixture = (name: string) => JSON.parse(readFileSync(join(shared, name, 'fixture.json'), 'utf8')) as { config: Record<string, unknown> };
  const vae = fixture('sd_vae_small').config; delete vae.lossconfig;
  writeFileSync(join(dir, 'prior.json'), JSON.stringify({
    format: 'latentdem-prior/1', name: 'fixture-small',
    unet: { config: fixture('sd_unet_small').config, weights: join(shared, 'sd_unet_small/model.safetensors') },
    vae: { config: vae, weights: join(shared, 'sd_vae_small/model.safetensors') },
    context: { kind: 'zeros', length: 77 },
  }));
  const prior = await loadPrior(join(dir, 'prior.json'), { backend });
  const y = L.randn([3, 16, 16], { seed: 3, backend }).mul(0.3);
  const snaps: { i: number; tensors: number; bytes: number; gpu: number }[] = [];
  const r = await deblur({
    prior, y, steps: 1000, kernelSize: 4, skip: { every: 50, cutoff: 0 },
    onStep: (s) => {
      if (s.i % 100 === 99) { const m = L.memory(); snaps.push({ i: s.i, tensors: m.tensors[backend.name as 'cpu'], bytes: m.bytes[backend.name as 'cpu'], gpu: m.gpu?.liveBufferBytes ?? 0 }); }
    },
  });
  t.equal(r.record.steps.length, 1000);
  t.equal(r.record.steps.filter((s) => s.full).length, 20, 'every 50th step in full');
  t.ok(snaps.every((s) => s.tensors === snaps[0].tensors && s.bytes === snaps[0].bytes), `${backend.name}: live tensors and bytes equal at steps 100..1000: ${snaps.map((s) => s.tensors).join(' ')}`);
  t.ok(snaps.every((s) => s.gpu === snaps[0].gpu), `${backend.name}: live GPU buffer bytes equal: ${snaps.map((s) => s.gpu).join(' ')}`);
  r.image.dispose(); r.kernel.dispose(); y.dispose(); prior.dispose();
});

