/** tools/vae-roundtrip on the sd_vae_small fixture weights: it writes a PNG of the input's size, and refuses what it should. */
import t from 'tap';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as L from '@latentdem/tensor';
import { main, roundtrip } from '../tools/vae-roundtrip.js';

const FIXTURE = join(process.cwd(), '..', 'shared', 'fixtures', 'sd_vae_small');
const base = { weights: join(FIXTURE, 'model.safetensors'), config: join(FIXTURE, 'fixture.json'), backend: 'cpu' as const };
const dir = mkdtempSync(join(tmpdir(), 'ld-vae-'));

/** A 13x10 test image (not a multiple of the fixture VAE's factor 4): smooth colour ramps. */
async function testPng(name: string, channels: 1 | 3): Promise<string> {
  const [h, w] = [10, 13];
  const data = new Float32Array(channels * h * w);
  for (let c = 0; c < channels; c++) for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) data[(c * h + y) * w + x] = (x / w + y / h + c / 3) % 1;
  const path = join(dir, name);
  await L.writeImage(path, L.tensor(data, { shape: [channels, h, w], backend: 'cpu' }));
  return path;
}

t.test('vae-roundtrip: RGB and gray PNGs round-trip to an RGB PNG of the same size; the latent is [1,4,3,4]', async (t) => {
  for (const [name, channels] of [['rgb.png', 3], ['gray.png', 1]] as const) {
    const input = await testPng(name, channels);
    const out = join(dir, `out-${name}`);
    const r = await roundtrip({ ...base, input, out });
    t.same(r.latentShape, [1, 4, 3, 4], `${name}: 13x10 padded to 16x12, latent 4x3`);
    t.ok(Number.isFinite(r.psnr), `${name}: PSNR ${r.psnr.toFixed(2)} dB (random weights: the value means nothing)`);
    const img = await L.readImage(out, { backend: 'cpu' });
    t.same(img.shape, [3, 10, 13], `${name}: output is RGB 13x10`);
  }
  const sampled = await roundtrip({ ...base, input: join(dir, 'rgb.png'), out: join(dir, 'sampled.png'), sample: true, seed: 2, pad: 'reflect' });
  t.same(sampled.latentShape, [1, 4, 3, 4], '--sample --seed --pad reflect work too');
});

t.test('vae-roundtrip: refuses to overwrite, a non-PNG input, a missing file, and weights that do not fit (exit 1)', async (t) => {
  const input = await testPng('again.png', 3);
  const out = join(dir, 'again-out.png');
  await roundtrip({ ...base, input, out });
  await t.rejects(roundtrip({ ...base, input, out }), /exists; pass --overwrite/, 'an existing output is not overwritten');
  await t.resolves(roundtrip({ ...base, input, out, overwrite: true }), '--overwrite replaces it');
  const notPng = join(dir, 'not.png');
  writeFileSync(notPng, 'this is not a PNG');
  await t.rejects(roundtrip({ ...base, input: notPng, out: join(dir, 'x.png') }), { name: 'ImageError', message: /not a valid PNG/ });
  await t.rejects(roundtrip({ ...base, input: join(dir, 'missing.png'), out: join(dir, 'y.png') }), /missing\.png: no such file/);
  const args = [input, '--weights', base.weights, '--backend', 'cpu'];
  t.equal(await main([...args, '--out', out]), 1, 'the command exits 1 when the output exists');
  // Another config (wider level 1) than the weights': mis-shaped keys. (Not sd15: building SD's VAE takes ~15 s on cpu.)
  const fx = JSON.parse(readFileSync(base.config, 'utf8')) as { config: { ddconfig: object } };
  const wider = join(dir, 'wider.json');
  writeFileSync(wider, JSON.stringify({ ...fx.config, ddconfig: { ...fx.config.ddconfig, ch_mult: [1, 2, 2] } }));
  await t.rejects(roundtrip({ ...base, config: wider, input, out: join(dir, 'z.png') }), { name: 'StateDictError', message: /encoder\.down\.1\.block\.0\.conv1\.weight: checkpoint \[32,32,3,3\] F32, model \[64,32,3,3\]/ });
  t.equal(await main([...args, '--out', join(dir, 'z.png'), '--config', wider]), 1, 'weights that do not fit the config: exit 1');
  t.equal(await main([notPng, '--weights', base.weights, '--out', join(dir, 'w.png'), '--config', base.config, '--backend', 'cpu']), 1, 'a non-PNG input: exit 1');
});
