/**
 * tools/novel-view on tiny weights assembled from the fixtures (zero123_unet_small's UNet + cc_projection,
 * sd_vae_small's VAE, clip_vision_small's encoder): it writes a PNG of the model's size, deterministically per
 * seed, and refuses what it should with one-line errors.
 */
import t from 'tap';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as L from '@latentdem/tensor';
import { SafetensorsFile, saveSafetensors } from '@latentdem/nn';
import { lanczosMatrix, main, novelView } from '../tools/novel-view.js';
import type { NovelViewConfig } from '../tools/novel-view.js';

const FIXTURES = join(process.cwd(), '..', 'shared', 'fixtures');
const dir = mkdtempSync(join(tmpdir(), 'ld-novel-'));
const fixtureConfig = (name: string): Record<string, unknown> => (JSON.parse(readFileSync(join(FIXTURES, name, 'fixture.json'), 'utf8')) as { config: Record<string, unknown> }).config;

/** One safetensors holding the three fixtures' weights (their __fixture__ tensors left out). */
async function assemble(path: string, skip: (key: string) => boolean = () => false): Promise<void> {
  const all = new Map<string, L.Tensor>();
  for (const name of ['zero123_unet_small', 'sd_vae_small', 'clip_vision_small']) {
    const f = await SafetensorsFile.open(join(FIXTURES, name, 'model.safetensors'));
    for (const k of f.keys()) if (!k.startsWith('__fixture__.') && !skip(k)) all.set(k, await f.read(k, { backend: 'cpu' }));
    await f.close();
  }
  await saveSafetensors(path, all);
  for (const v of all.values()) v.dispose();
}

const weights = join(dir, 'tiny.safetensors');
await assemble(weights);
const z = fixtureConfig('zero123_unet_small') as { unet: { args: object }; clip_dim: number };
const config: NovelViewConfig = {
  zero123: { unet: z.unet.args as NovelViewConfig['zero123']['unet'], clip_dim: z.clip_dim },
  vae: fixtureConfig('sd_vae_small') as unknown as NovelViewConfig['vae'],
  clip_vision: (fixtureConfig('clip_vision_small') as { args: NovelViewConfig['clip_vision'] }).args,
  image_size: 32,   // VAE factor 4 x UNet factor 2 = 8 divides it; latent 8x8
};
const configPath = join(dir, 'tiny.json');
writeFileSync(configPath, JSON.stringify(config));

/** A 24x20 RGB test image (resized to 32x32 by the tool). */
const input = join(dir, 'in.png');
{
  const [h, w] = [20, 24];
  const data = new Float32Array(3 * h * w);
  for (let c = 0; c < 3; c++) for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) data[(c * h + y) * w + x] = ((x * (c + 1)) / w + y / h) % 1;
  await L.writeImage(input, L.tensor(data, { shape: [3, h, w], backend: 'cpu' }));
}

const base = { input, weights, config: configPath, backend: 'cpu' as const, steps: 2, pose: { polar: 30, azimuth: -45, radius: 0.3 } };

/** Runs main, returning its exit code and what it wrote to stderr. */
async function runMain(args: string[]): Promise<{ code: number; stderr: string }> {
  let stderr = '';
  const write = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((chunk: string | Uint8Array): boolean => { stderr += String(chunk); return true; }) as typeof process.stderr.write;
  try {
    return { code: await main(args), stderr };
  } finally {
    process.stderr.write = write;
  }
}

t.test('novel-view: writes a 32x32 RGB PNG from a 24x20 input; same seed, same bytes; another seed or pose, another image', async (t) => {
  const steps: number[] = [];
  const a = await novelView({ ...base, out: join(dir, 'a.png'), seed: 1, onStep: (s) => steps.push(s) });
  t.same(a.latentShape, [1, 4, 8, 8]);
  t.equal(a.resized, true, 'the input was resized to the model size');
  t.same(steps, [1, 2], 'onStep per DDIM step');
  const img = await L.readImage(a.out, { backend: 'cpu' });
  t.same(img.shape, [3, 32, 32]);
  await novelView({ ...base, out: join(dir, 'b.png'), seed: 1 });
  t.ok(readFileSync(join(dir, 'a.png')).equals(readFileSync(join(dir, 'b.png'))), 'same seed and pose: identical PNG');
  await novelView({ ...base, out: join(dir, 'c.png'), seed: 2 });
  t.notOk(readFileSync(join(dir, 'a.png')).equals(readFileSync(join(dir, 'c.png'))), 'another seed: another image');
  await novelView({ ...base, out: join(dir, 'd.png'), seed: 1, pose: { polar: -30, azimuth: 90, radius: 0 }, scale: 1, eta: 0 });
  t.notOk(readFileSync(join(dir, 'a.png')).equals(readFileSync(join(dir, 'd.png'))), 'another pose (unguided, eta 0): another image');
  const r = await runMain([input, '--weights', weights, '--config', configPath, '--backend', 'cpu', '--steps', '1', '--polar', '10', '--azimuth', '-45', '--radius', '-0.1', '--out', join(dir, 'cli.png')]);
  t.equal(r.code, 0, `the command exits 0 (stderr: ${JSON.stringify(r.stderr)})`);
  t.same((await L.readImage(join(dir, 'cli.png'), { backend: 'cpu' })).shape, [3, 32, 32], 'negative numbers parse as values');
});

t.test('novel-view: refuses to overwrite, and fails with one line for bad arguments and weights that do not fit', async (t) => {
  const out = join(dir, 'a.png');   // written by the test above (tap runs them in order)
  await t.rejects(novelView({ ...base, out }), /a\.png exists; pass --overwrite/);
  await t.resolves(novelView({ ...base, out, overwrite: true, steps: 1 }), '--overwrite replaces it');
  const args = [input, '--weights', weights, '--config', configPath, '--backend', 'cpu', '--steps', '1'];
  const oneLine = (s: string): string => s.split('\n')[0];
  let r = await runMain([...args, '--polar', '0', '--azimuth', '0', '--out', out]);
  t.equal(r.code, 1, 'existing output: exit 1');
  t.match(oneLine(r.stderr), /^novel-view: .*a\.png exists; pass --overwrite to replace it$/);
  r = await runMain([...args, '--polar', 'up', '--azimuth', '0', '--out', join(dir, 'x.png')]);
  t.match(oneLine(r.stderr), /^novel-view: --polar must be a number, got up$/);
  r = await runMain([...args, '--polar', '10', '--out', join(dir, 'x.png')]);
  t.match(oneLine(r.stderr), /--polar and --azimuth \(degrees\) are required/);
  r = await runMain([...args, '--polar', '10', '--azimuth', '0', '--steps', '0', '--out', join(dir, 'x.png')]);
  t.match(oneLine(r.stderr), /--steps must be a positive integer, got 0/);
  r = await runMain([...args, '--polar', '10', '--azimuth', '0', '--out', join(dir, 'x.png'), '--bogus']);
  t.match(oneLine(r.stderr), /unknown option --bogus/);
  // Weights without the VAE: one line naming what is missing.
  const noVae = join(dir, 'no-vae.safetensors');
  await assemble(noVae, (k) => k.startsWith('first_stage_model.'));
  r = await runMain([input, '--weights', noVae, '--config', configPath, '--backend', 'cpu', '--polar', '0', '--azimuth', '0', '--out', join(dir, 'y.png')]);
  t.equal(r.code, 1);
  t.equal(r.stderr.trim().split('\n').length, 1, 'one line');
  t.match(r.stderr, /^novel-view: the weights do not fit the config \(check --config\): \d+ missing \(first_stage_model\./);
  // A config whose image size the UNet cannot take.
  const odd = join(dir, 'odd.json');
  writeFileSync(odd, JSON.stringify({ ...config, image_size: 36 }));
  await t.rejects(novelView({ ...base, config: odd, out: join(dir, 'z.png') }), /image_size 36 must be a multiple of 8/);
  await t.rejects(novelView({ ...base, config: join(dir, 'nope.json'), out: join(dir, 'z.png') }), /no such file/);
});

t.test('lanczosMatrix (PIL LANCZOS resampling): identity at the same size, rows sum to 1, mirror-symmetric, widened when downscaling', async (t) => {
  const id = lanczosMatrix(5, 5);
  for (let i = 0; i < 5; i++) for (let j = 0; j < 5; j++) t.ok(Math.abs(id[i * 5 + j] - (i === j ? 1 : 0)) < 1e-7, `same size: [${i},${j}]`);
  for (const [n, m] of [[512, 256], [300, 256], [100, 256]] as const) {
    const a = lanczosMatrix(n, m);
    let worstSum = 0; let worstMirror = 0;
    for (let i = 0; i < m; i++) {
      let s = 0;
      for (let j = 0; j < n; j++) { s += a[i * n + j]; worstMirror = Math.max(worstMirror, Math.abs(a[i * n + j] - a[(m - 1 - i) * n + (n - 1 - j)])); }
      worstSum = Math.max(worstSum, Math.abs(s - 1));
    }
    t.ok(worstSum < 1e-5 && worstMirror < 1e-5, `${n} -> ${m}: rows sum to 1 (worst ${worstSum.toExponential(1)}), mirror-symmetric (worst ${worstMirror.toExponential(1)})`);
  }
  // 512 -> 256: the filter spans 2 x 3 input pixels on each side of the centre (12 taps), not 6.
  const d = lanczosMatrix(512, 256);
  const taps = Array.from(d.subarray(100 * 512, 101 * 512)).filter((v) => v !== 0).length;
  t.equal(taps, 12, 'downscaling 2x: 12 taps (antialiased)');
});
