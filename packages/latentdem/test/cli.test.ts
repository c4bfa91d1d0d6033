import t, { type Test } from 'tap';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { deflateSync } from 'node:zlib';
import { spawnSync } from 'node:child_process';
import * as L from '@latentdem/tensor';
import { main } from '../src/cli/main.js';
import { parseDeblurArgs, readPngHeader, sheetPaths } from '../src/cli/deblur.js';
import type { CliIO } from '../src/cli/common.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const FIXTURE_PRIOR = join(ROOT, 'weights/fixture-small');
const FIXTURE_JSON = JSON.parse(readFileSync(join(FIXTURE_PRIOR, 'prior.json'), 'utf8')) as {
  unet: { config: Record<string, unknown>; weights: string }; vae: { weights: string };
};
const UNET_FILE = resolve(FIXTURE_PRIOR, FIXTURE_JSON.unet.weights);
const VAE_FILE = resolve(FIXTURE_PRIOR, FIXTURE_JSON.vae.weights);
const HAVE_FIXTURES = existsSync(UNET_FILE) && existsSync(VAE_FILE);

/** Runs `latentdem ARGS` in-process; returns the exit code and what it wrote. */
async function run(args: string[], o: { tty?: boolean } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '', stderr = '';
  const io: CliIO = {
    stdout: { write: (s: string) => { stdout += s; return true; } },
    stderr: { write: (s: string) => { stderr += s; return true; }, isTTY: o.tty ?? false },
    env: {},
  };
  const code = await main(args, io);
  return { code, stdout, stderr };
}

const lines = (s: string): string[] => s.split('\n').filter((l) => l.length > 0);

function tmp(): string { return mkdtempSync(join(tmpdir(), 'latentdem-cli-')); }

/** A smooth RGB test image as an 8-bit PNG. */
async function writeTestPng(path: string, h: number, w: number, channels: 1 | 3 = 3): Promise<void> {
  const d = new Float32Array(channels * h * w);
  for (let i = 0; i < d.length; i++) {
    const p = i % (h * w), c = Math.floor(i / (h * w));
    d[i] = 0.5 + 0.4 * Math.sin((p % w) / 3 + c) * Math.cos(Math.floor(p / w) / 4);
  }
  await L.writeImage(path, L.tensor(d, { shape: [channels, h, w], backend: 'cpu' }));
}

// ---- a minimal PNG writer for colour types the library does not write (RGBA) ----
const CRC_TABLE = Array.from({ length: 256 }, (_, n) => { let c = n; for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1; return c >>> 0; });
function crc32(b: Buffer): number { let c = 0xffffffff; for (const x of b) c = CRC_TABLE[(c ^ x) & 0xff] ^ (c >>> 8); return (c ^ 0xffffffff) >>> 0; }
function chunk(type: string, data: Buffer): Buffer {
  const len = Buffer.alloc(4); len.writeUInt32BE(data.length);
  const td = Buffer.concat([Buffer.from(type, 'latin1'), data]);
  const crc = Buffer.alloc(4); crc.writeUInt32BE(crc32(td));
  return Buffer.concat([len, td, crc]);
}
function rgbaPng(w: number, h: number): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0); ihdr.writeUInt32BE(h, 4); ihdr[8] = 8; ihdr[9] = 6; ihdr[10] = 0; ihdr[11] = 0; ihdr[12] = 0;
  const raw = Buffer.alloc(h * (1 + 4 * w));
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
    const o = y * (1 + 4 * w) + 1 + 4 * x;
    raw[o] = (x * 7) & 255; raw[o + 1] = (y * 5) & 255; raw[o + 2] = 128; raw[o + 3] = x < w / 2 ? 255 : 0;
  }
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr), chunk('IDAT', deflateSync(raw)), chunk('IEND', Buffer.alloc(0))]);
}

/**
 * Asserts a failed run: non-zero exit, exactly one stderr line matching `re`, nothing on stdout, and the
 * directory holding only `keep` afterwards.
 */
async function expectFailure(t: Test, args: string[], re: RegExp, dir: string, keep: string[]): Promise<void> {
  const r = await run(args);
  t.not(r.code, 0, 'non-zero exit');
  const ls = lines(r.stderr);
  t.equal(ls.length, 1, `one stderr line: ${JSON.stringify(r.stderr)}`);
  t.match(ls[0] ?? '', re);
  t.ok((ls[0] ?? '').startsWith('latentdem deblur: '), 'names the command');
  t.equal(r.stdout, '', 'nothing on stdout');
  t.same(readdirSync(dir).sort(), [...keep].sort(), 'no outputs written');
}

t.test('latentdem: help, unknown command', async (t) => {
  const h = await run(['help']);
  t.equal(h.code, 0); t.match(h.stdout, /deblur/);
  const hd = await run(['help', 'deblur']);
  t.equal(hd.code, 0); t.match(hd.stdout, /usage: latentdem deblur IN\.png --out OUT\.png/);
  const d = await run(['deblur', '--help']);
  t.equal(d.code, 0); t.match(d.stdout, /--kernel-out/);
  const u = await run(['frobnicate']);
  t.equal(u.code, 1); t.match(lines(u.stderr)[0], /^latentdem: unknown command 'frobnicate'$/); t.match(u.stderr, /usage: latentdem COMMAND/);
  const none = await run([]);
  t.not(none.code, 0); t.match(none.stderr, /usage: latentdem COMMAND/);
});

t.test('deblur: argument parsing and defaults', async (t) => {
  const o = parseDeblurArgs(['in.png', '--out', 'res/out.png']);
  if (o === 'help') throw new Error('help');
  t.same([o.kernelOut, o.kernelRaw, o.record, o.steps, o.skip, o.anneal, o.size, o.kernelSize, o.pad, o.force],
    [join('res', 'out.kernel.png'), join('res', 'out.kernel.safetensors'), join('res', 'out.json'), 1000, 0, 'release', 512, 64, 'reflect', false]);
  const p = parseDeblurArgs(['in.png', '--out=o.png', '--kernel-out', 'k.png', '--skip', '16', '--skip-cutoff', '40', '--save-every', '10', 'sheets', '--steps', '50', '--force']);
  if (p === 'help') throw new Error('help');
  t.same([p.kernelRaw, p.skip, p.skipCutoff, p.saveEvery, p.steps, p.force], ['k.safetensors', 16, 40, { every: 10, dir: 'sheets' }, 50, true]);
  t.same(sheetPaths('d', 10, 25), ['d/step-000000.png', 'd/step-000010.png', 'd/step-000020.png', 'd/step-000024.png']);
  t.throws(() => parseDeblurArgs(['in.png', '--out', 'o.png', '--steps', '0']), /--steps must be an integer in \[1, 1000\]/);
  t.throws(() => parseDeblurArgs(['in.png', '--out', 'o.png', '--anneal', 'cosine']), /--anneal must be release, paper or none/);
  t.throws(() => parseDeblurArgs(['in.png', '--out', 'o.jpg']), /--out must name a \.png file/);
  t.throws(() => parseDeblurArgs(['in.png', '--out', 'o.png', '--save-every', '5']), /--save-every needs 2 values/);
  t.throws(() => parseDeblurArgs(['in.png', '--out', 'o.png', '--skip-cutoff', '5']), /only applies with --skip/);
});

t.test('readPngHeader: colour type and alpha', async (t) => {
  const d = tmp();
  await writeTestPng(join(d, 'a.png'), 4, 5);
  t.same(readPngHeader(readFileSync(join(d, 'a.png'))), { width: 5, height: 4, bitDepth: 8, colorType: 2, alpha: false });
  t.same(readPngHeader(rgbaPng(3, 2)), { width: 3, height: 2, bitDepth: 8, colorType: 6, alpha: true });
  t.equal(readPngHeader(Buffer.from('GIF89a not a png at all, really not one')), null);
  rmSync(d, { recursive: true });
});

t.test('deblur: bad inputs give one line, a non-zero exit, and write nothing', async (t) => {
  const d = tmp();
  const good = join(d, 'in.png');
  await writeTestPng(good, 40, 40);
  const out = join(d, 'out.png');
  const W = ['--weights', FIXTURE_PRIOR, '--backend', 'cpu'];

  t.test('not a PNG', async (t) => {
    writeFileSync(join(d, 'text.png'), 'hello, not an image\n');
    await expectFailure(t, ['deblur', join(d, 'text.png'), '--out', out, ...W], /text\.png: not a PNG file$/, d, ['in.png', 'text.png']);
    rmSync(join(d, 'text.png'));
  });
  t.test('a corrupt PNG (valid signature and header, broken data)', async (t) => {
    const b = readFileSync(good); const bad = Buffer.from(b.subarray(0, 60));
    writeFileSync(join(d, 'broken.png'), bad);
    await expectFailure(t, ['deblur', join(d, 'broken.png'), '--out', out, ...W], /broken\.png: a corrupt or unsupported PNG/, d, ['in.png', 'broken.png']);
    rmSync(join(d, 'broken.png'));
  });
  t.test('no such input', async (t) => {
    await expectFailure(t, ['deblur', join(d, 'nope.png'), '--out', out, ...W], /nope\.png: no such file$/, d, ['in.png']);
  });
  t.test('unsupported channels (RGBA)', async (t) => {
    writeFileSync(join(d, 'rgba.png'), rgbaPng(40, 40));
    await expectFailure(t, ['deblur', join(d, 'rgba.png'), '--out', out, ...W], /rgba\.png: unsupported channels: RGBA PNG with an alpha channel; .*--drop-alpha/, d, ['in.png', 'rgba.png']);
    rmSync(join(d, 'rgba.png'));
  });
  t.test('too small', async (t) => {
    await writeTestPng(join(d, 'small.png'), 20, 100);
    await expectFailure(t, ['deblur', join(d, 'small.png'), '--out', out, ...W], /small\.png: image 100x20 is too small: each side must be at least 128 px \(twice --kernel-size 64\)/, d, ['in.png', 'small.png']);
    await expectFailure(t, ['deblur', join(d, 'small.png'), '--out', out, '--kernel-size', '8', '--size', '50', ...W], /image 100x20 \(50x10 at the working size --size 50\) is too small: each side must be at least 16 px/, d, ['in.png', 'small.png']);
    rmSync(join(d, 'small.png'));
  });
  t.test('no --weights', async (t) => {
    await expectFailure(t, ['deblur', good, '--out', out, '--kernel-size', '8'], /no default prior is shipped yet: pass --weights \(SD 1\.5 safetensors or a prior\.json, e\.g\. weights\/fixture-small\)$/, d, ['in.png']);
  });
  t.test('missing weights', async (t) => {
    await expectFailure(t, ['deblur', good, '--out', out, '--kernel-size', '8', '--weights', join(d, 'sd15.safetensors')], /--weights .*sd15\.safetensors: no such file or directory$/, d, ['in.png']);
  });
  t.test('corrupt weights (truncated copies)', { skip: !HAVE_FIXTURES && 'fixture weights (../shared/fixtures) not present' }, async (t) => {
    const wd = mkdtempSync(join(tmpdir(), 'latentdem-w-'));
    writeFileSync(join(wd, 'unet.safetensors'), readFileSync(UNET_FILE).subarray(0, 100000));
    copyFileSync(VAE_FILE, join(wd, 'vae.safetensors'));
    const desc = { ...FIXTURE_JSON, unet: { ...FIXTURE_JSON.unet, weights: 'unet.safetensors' }, vae: { ...FIXTURE_JSON.vae, weights: 'vae.safetensors' } };
    writeFileSync(join(wd, 'prior.json'), JSON.stringify(desc));
    await expectFailure(t, ['deblur', good, '--out', out, '--kernel-size', '8', '--weights', wd, '--backend', 'cpu'], /unet\.safetensors: not a readable safetensors file/, d, ['in.png']);
    writeFileSync(join(wd, 'sd.safetensors'), readFileSync(VAE_FILE).subarray(0, 50));
    await expectFailure(t, ['deblur', good, '--out', out, '--kernel-size', '8', '--weights', join(wd, 'sd.safetensors'), '--backend', 'cpu'], /sd\.safetensors: not a readable safetensors file/, d, ['in.png']);
    writeFileSync(join(wd, 'prior.json'), '{"format": "latentdem-prior/1", "unet": ');
    await expectFailure(t, ['deblur', good, '--out', out, '--kernel-size', '8', '--weights', wd, '--backend', 'cpu'], /prior\.json: not a readable JSON prior description/, d, ['in.png']);
    rmSync(wd, { recursive: true });
  });
  t.test('wrong model config (the StateDictError summary)', { skip: !HAVE_FIXTURES && 'fixture weights (../shared/fixtures) not present' }, async (t) => {
    const wd = mkdtempSync(join(tmpdir(), 'latentdem-w-'));
    const desc = { ...FIXTURE_JSON, unet: { ...FIXTURE_JSON.unet, weights: UNET_FILE, config: { ...FIXTURE_JSON.unet.config, model_channels: 64 } }, vae: { ...FIXTURE_JSON.vae, weights: VAE_FILE } };
    writeFileSync(join(wd, 'prior.json'), JSON.stringify(desc));
    await expectFailure(t, ['deblur', good, '--out', out, '--kernel-size', '8', '--weights', join(wd, 'prior.json'), '--backend', 'cpu'], /^latentdem deblur: the weights in .*sd_unet_small\/model\.safetensors do not fit the model config: \d+ mis-shaped \(/, d, ['in.png']);
    rmSync(wd, { recursive: true });
  });
  t.test('an existing output without --force is left untouched', async (t) => {
    writeFileSync(join(d, 'out.json'), 'keep me');
    await expectFailure(t, ['deblur', good, '--out', out, '--kernel-size', '8', ...W], /output exists, not overwritten \(pass --force to replace\): .*out\.json$/, d, ['in.png', 'out.json']);
    t.equal(readFileSync(join(d, 'out.json'), 'utf8'), 'keep me');
    mkdirSync(join(d, 'sheets')); writeFileSync(join(d, 'sheets', 'step-000000.png'), 'x');
    await expectFailure(t, ['deblur', good, '--out', join(d, 'o2.png'), '--kernel-size', '8', '--save-every', '5', join(d, 'sheets'), ...W], /output exists.*step-000000\.png$/, d, ['in.png', 'out.json', 'sheets']);
    rmSync(join(d, 'out.json')); rmSync(join(d, 'sheets'), { recursive: true });
  });
  t.test('the input is never an output', async (t) => {
    await expectFailure(t, ['deblur', good, '--out', good, '--force', ...W], /refusing to overwrite the input: .*in\.png is both input and output/, d, ['in.png']);
  });
  t.test('unknown option, missing --out, no input', async (t) => {
    await expectFailure(t, ['deblur', good, '--out', out, '--frobnicate', ...W], /unknown option --frobnicate \(see latentdem deblur --help\)$/, d, ['in.png']);
    await expectFailure(t, ['deblur', good, ...W], /--out OUT\.png is required/, d, ['in.png']);
    await expectFailure(t, ['deblur', '--out', out, ...W], /no input PNG given/, d, ['in.png']);
    await expectFailure(t, ['deblur', good, '--out', out, '--steps', 'many', ...W], /--steps must be an integer/, d, ['in.png']);
  });
  t.teardown(() => rmSync(d, { recursive: true, force: true }));
});

t.test('deblur end to end: fixture prior, 4 steps, 8x8 kernel, cpu', { skip: !HAVE_FIXTURES && 'fixture weights (../shared/fixtures) not present' }, async (t) => {
  const d = tmp();
  await writeTestPng(join(d, 'in.png'), 32, 32);
  const r = await run(['deblur', join(d, 'in.png'), '--out', join(d, 'out.png'), '--weights', FIXTURE_PRIOR, '--steps', '4', '--kernel-size', '8',
    '--backend', 'cpu', '--save-every', '2', join(d, 'sheets'), '--seed', '3', '--skip', '2'], { tty: true });
  t.equal(r.code, 0, r.stderr);
  t.match(r.stderr, /\rstep 1\/4 {2}\d+\.\d\d steps\/s {2}ETA \d\d:\d\d {2}loss m \S+ g \S+/, 'a progress line rewritten in place on a terminal');
  t.match(r.stderr, /\rstep 4\/4 /);
  t.match(r.stdout, /out\.png/);
  const img = await L.readImage(join(d, 'out.png'), { backend: 'cpu' });
  t.same(img.shape, [3, 32, 32], 'the image has the input size');
  const k = await L.readImage(join(d, 'out.kernel.png'), { backend: 'cpu' });
  t.same(k.shape, [1, 256, 256], 'kernel view: 8 px enlarged 32x');
  const raw = readFileSync(join(d, 'out.kernel.safetensors'));
  const n = Number(raw.readBigUInt64LE(0));
  const header = JSON.parse(raw.subarray(8, 8 + n).toString('utf8')) as { kernel: { dtype: string; shape: number[]; data_offsets: number[] } };
  t.same([header.kernel.dtype, header.kernel.shape], ['F32', [8, 8]]);
  const kv = new Float32Array(raw.buffer.slice(raw.byteOffset + 8 + n + header.kernel.data_offsets[0], raw.byteOffset + 8 + n + header.kernel.data_offsets[1]));
  t.ok(Math.abs(kv.reduce((a, b) => a + b, 0) - 1) < 1e-4 && kv.every((v) => v >= 0), 'the raw kernel is >= 0 with sum 1');
  const rec = JSON.parse(readFileSync(join(d, 'out.json'), 'utf8')) as Record<string, any>;
  t.equal(rec.steps.length, 4, 'the record has 4 steps');
  t.same(rec.steps.map((s: { full: boolean }) => s.full), [false, true, false, true], '--skip 2: full steps at even DDIM indices (a skipped step\'s sheet decodes z0)');
  t.ok(rec.steps.every((s: { full: boolean; measurement?: number }) => !s.full || Number.isFinite(s.measurement)), 'per-step losses of the full steps');
  t.same([rec.input.width, rec.input.height, rec.prior.name, rec.settings.kernelSize, rec.settings.seed], [32, 32, 'fixture-small', 8, 3]);
  t.ok(rec.seconds.wall > 0 && rec.seconds.total > 0);
  t.same(readdirSync(join(d, 'sheets')).sort(), ['step-000000.png', 'step-000002.png', 'step-000003.png'], 'sheets at i % 2 == 0 and the last');
  const sh = await L.readImage(join(d, 'sheets', 'step-000003.png'), { backend: 'cpu' });
  t.same(sh.shape, [3, 32, 32 + 4 + 32], 'sheet: x0 | gap | kernel');
  // A second run refuses to overwrite, then --force replaces.
  const again = await run(['deblur', join(d, 'in.png'), '--out', join(d, 'out.png'), '--weights', FIXTURE_PRIOR, '--steps', '1', '--kernel-size', '8', '--backend', 'cpu']);
  t.equal(again.code, 1); t.match(again.stderr, /output exists/);
  rmSync(d, { recursive: true });
});

t.test('the bin runs the CLI and passes the exit code through', async (t) => {
  const bin = join(ROOT, 'packages/latentdem/bin/latentdem.js');
  const ok = spawnSync(process.execPath, [bin, 'help'], { encoding: 'utf8' });
  t.equal(ok.status, 0, ok.stderr); t.match(ok.stdout, /usage: latentdem COMMAND/);
  const bad = spawnSync(process.execPath, [bin, 'deblur', 'x.png'], { encoding: 'utf8' });
  t.equal(bad.status, 1); t.equal(lines(bad.stderr).length, 1); t.match(bad.stderr, /--out OUT\.png is required/);
});
