/**
 * The code-free torch checkpoint reader: fixtures written by tools/fixtures/make-torch-checkpoints.py
 * (Debian python3-torch 1.13; the tests never run Python), the malicious files it writes, corrupted
 * archives, the real third-party checkpoints in ../shared/data, the key maps and tools/convert.ts.
 */
import t from 'tap';
import type { Test as Tap } from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tensor } from '@latentdem/tensor';
import type { Tensor } from '@latentdem/tensor';
import { CheckpointError, inspectTorchCheckpoint, loadTorchCheckpoint } from '../src/torch/index.js';
import { unpickle } from '../src/torch/pickle.js';
import { makePolicy } from '../src/torch/policy.js';
import { StorageRef, TensorRef, materialize } from '../src/torch/storage.js';
import { loadSafetensors, saveSafetensors } from '../src/safetensors.js';
import { emaKeyFor } from '../../../tools/convert.js';
import { COMPVIS_PREFIX, diffusersToCompvis, mapDiffusersKeys, needsConv1x1 } from '../src/keymaps/index.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '../../..');
const fx = join(here, 'fixtures/torch');
const shared = resolve(root, '../shared');
const expected = JSON.parse(readFileSync(join(fx, 'expected.json'), 'utf8')) as {
  files: Record<string, Record<string, { shape: number[]; dtype: string; values: number[] }>>;
};

const INT_DTYPES = new Set(['int64', 'int32', 'int16', 'int8', 'uint8', 'bool']);

async function dispose(m: Map<string, Tensor>): Promise<void> { for (const x of m.values()) x.dispose(); }

async function checkAgainstExpected(t: Tap, file: string, m: Map<string, Tensor>, name = file): Promise<void> {
  const want = expected.files[name];
  t.ok(want, `expected.json has ${name}`);
  for (const [k, e] of Object.entries(want)) {
    const x = m.get(k);
    if (!t.ok(x, `${file}: has ${k}`) || !x) continue;
    t.same(x.shape, e.shape, `${file}: ${k} shape`);
    t.equal(x.dtype, INT_DTYPES.has(e.dtype) ? 'int32' : 'float32', `${file}: ${k} dtype (${e.dtype})`);
    const d = [...(await x.data())];
    // expected values are the saved tensors' own values (already rounded to their dtype); f64 -> f32 rounds
    const tol = e.dtype === 'float64' ? 1e-7 : 0;
    const bad = d.findIndex((v, i) => Math.abs(v - e.values[i]) > tol * Math.max(1, Math.abs(e.values[i])));
    t.equal(bad, -1, `${file}: ${k} values${bad >= 0 ? ` (element ${bad}: ${d[bad]} vs ${e.values[bad]})` : ''}`);
  }
}

const fixture = (n: string): string => join(fx, n);

t.test('plain state dict: f32, f16, bf16, f64, int64, int32, bool, uint8', async (t) => {
  for (const f of ['plain.pt', 'plain_p4.pt', 'plain_deflated.pt']) {
    const m = await loadTorchCheckpoint(fixture(f));
    t.same([...m.keys()], Object.keys(expected.files['plain.pt']), `${f}: keys in file order`);
    await checkAgainstExpected(t, f, m, 'plain.pt');
    t.same(m.get('bn.num_batches_tracked')!.shape, [], 'num_batches_tracked is a scalar');
    t.same([...(await m.get('bn.num_batches_tracked')!.data())], [1234]);
    await dispose(m);
  }
  const info = await inspectTorchCheckpoint(fixture('plain.pt'));
  t.same(info.get('lin.bias'), { shape: [3], storageDType: 'f16', location: 'cpu' }, 'inspect: shapes and storage dtypes without converting');
  t.equal(info.get('emb.weight')?.storageDType, 'bf16');
});

t.test('strides: channels-last, storage offset, transpose, expand', async (t) => {
  const m = await loadTorchCheckpoint(fixture('strided.pt'));
  await checkAgainstExpected(t, 'strided.pt', m);
  // channels-last weight [4,3,2,2] holding arange*0.5-3 in logical (NCHW) order
  const w = [...(await m.get('conv.weight')!.data())];
  t.same(w, Array.from({ length: 48 }, (_, i) => i * 0.5 - 3), 'channels-last conv weight comes out in NCHW order, not scrambled');
  t.same([...(await m.get('view')!.data())], [5, 6, 7, 8, 9, 10], 'view with storage offset 5');
  t.same([...(await m.get('transposed')!.data())], [0, 3, 1, 4, 2, 5], 'transposed [3,2]');
  t.same([...(await m.get('expanded')!.data())], [1, 2, 3, 1, 2, 3], 'expanded (stride 0)');
  await dispose(m);
});

t.test('nested dicts are flattened with "." and a CompVis state_dict is unwrapped', async (t) => {
  const n = await loadTorchCheckpoint(fixture('nested.pt'));
  t.same([...n.keys()].sort(), ['decoder.bias', 'encoder.conv.weight']);
  await checkAgainstExpected(t, 'nested.pt', n);
  const c = await loadTorchCheckpoint(fixture('compvis.ckpt'));
  t.same([...c.keys()], Object.keys(expected.files['compvis.ckpt']), 'only the state_dict, keys unchanged');
  await checkAgainstExpected(t, 'compvis.ckpt', c);
  // a Lightning .ckpt: a class as a dict key, numpy values and optimizer state beside the state_dict
  const l = await loadTorchCheckpoint(fixture('lightning.ckpt'));
  t.same([...l.keys()], Object.keys(expected.files['lightning.ckpt']), 'the state_dict of a Lightning checkpoint');
  await checkAgainstExpected(t, 'lightning.ckpt', l);
  await dispose(n); await dispose(c); await dispose(l);
});

t.test('legacy (pre-zip) format', async (t) => {
  const m = await loadTorchCheckpoint(fixture('legacy.pt'));
  t.same([...m.keys()], Object.keys(expected.files['legacy.pt']));
  await checkAgainstExpected(t, 'legacy.pt', m);
  t.same([...(await m.get('module.view')!.data())], [2, 3, 4, 5, 6, 7], 'a view sharing the base storage');
  await dispose(m);
});

t.test('a whole pickled nn.Module: refused by default, read as inert records when allowed', async (t) => {
  await t.rejects(loadTorchCheckpoint(fixture('module.pt')), { name: 'CheckpointError', message: /__main__\.TinyNet/ });
  const m = await loadTorchCheckpoint(fixture('module.pt'), { allowModuleRecords: true });
  t.same([...m.keys()].sort(), Object.keys(expected.files['module.pt']).sort(), 'the keys state_dict() gives');
  t.notOk(m.has('scratch'), 'non-persistent buffer left out');
  await checkAgainstExpected(t, 'module.pt', m);
  await dispose(m);
});

const EVIL: [string, RegExp][] = [
  ['evil_os_system.pt', /posix\.system/],
  ['evil_eval.pt', /(__builtin__|builtins)\.eval/],
  ['evil_popen.pt', /commands\.Popen/],
  ['evil_popen_p4.pt', /subprocess\.Popen/],
  ['evil_class_call.pt', /__main__\.Harmless/],
  ['evil_legacy_os_system.pt', /posix\.system/],
];

t.test('malicious checkpoints are refused, naming the global, with and without allowModuleRecords', async (t) => {
  for (const [f, re] of EVIL) {
    for (const allowModuleRecords of [false, true]) {
      const err = await loadTorchCheckpoint(fixture(f), { allowModuleRecords }).then(() => null, (e: unknown) => e);
      t.ok(err instanceof CheckpointError, `${f} (allowModuleRecords ${allowModuleRecords}) -> CheckpointError`);
      t.match((err as Error).message, re, `${f}: names the global`);
      t.match((err as Error).message, f, `${f}: names the file`);
    }
  }
});

/** A raw pickle from opcodes (protocol 2, GLOBAL/REDUCE/NEWOBJ/BUILD...) for VM-level refusals. */
function pk(...parts: (string | number[])[]): Uint8Array {
  const out: number[] = [0x80, 2];
  for (const p of parts) {
    if (typeof p === 'string') for (const c of Buffer.from(p, 'latin1')) out.push(c);
    else out.push(...p);
  }
  out.push(0x2e);
  return Uint8Array.from(out);
}
const G = (m: string, n: string): string => `c${m}\n${n}\n`;
const S = (s: string): number[] => [0x55, s.length, ...Buffer.from(s, 'latin1')];
const EMPTY_TUPLE = ')'; const TUPLE1 = [0x85]; const REDUCE = 'R'; const NEWOBJ = [0x81]; const BUILD = 'b'; const EMPTY_DICT = '}';

t.test('VM: every call of a non-allow-listed global is refused, whatever the opcode', async (t) => {
  const noStorage = (): StorageRef => { throw new Error('unreachable'); };
  const run = (bytes: Uint8Array, allowModuleRecords: boolean): unknown => {
    try { return unpickle(bytes, 0, makePolicy({ file: 'mem.pkl', allowModuleRecords, storage: noStorage })).value; } catch (e) { return e; }
  };
  const cases: [string, Uint8Array, RegExp][] = [
    ['REDUCE os.system', pk(G('os', 'system'), S('echo pwned'), TUPLE1, REDUCE), /os\.system/],
    ['REDUCE builtins.eval', pk(G('builtins', 'eval'), S('1+1'), TUPLE1, REDUCE), /builtins\.eval/],
    ['REDUCE builtins.getattr', pk(G('builtins', 'getattr'), EMPTY_TUPLE, REDUCE), /builtins\.getattr/],
    ['REDUCE __builtin__.__import__', pk(G('__builtin__', '__import__'), S('os'), TUPLE1, REDUCE), /__import__/],
    ['NEWOBJ subprocess.Popen', pk(G('subprocess', 'Popen'), EMPTY_TUPLE, NEWOBJ), /subprocess\.Popen/],
    ['INST os.system', pk('(', S('echo pwned'), 'ios\nsystem\n'), /os\.system/],
    ['OBJ posix.system', pk('(', G('posix', 'system'), S('echo pwned'), 'o'), /posix\.system/],
    ['copyreg._reconstructor of os.system', pk(G('copy_reg', '_reconstructor'), G('os', 'system'), G('__builtin__', 'object'), 'N', [0x87], REDUCE), /os\.system|copy_reg\._reconstructor/],
    ['REDUCE of a record class (a constructor call)', pk(G('mymodels', 'Net'), EMPTY_TUPLE, REDUCE), /mymodels\.Net/],
    ['REDUCE of torch.load', pk(G('torch', 'load'), S('x.pt'), TUPLE1, REDUCE), /torch\.load/],
    ['REDUCE of _rebuild_qtensor', pk(G('torch._utils', '_rebuild_qtensor'), EMPTY_TUPLE, REDUCE), /_rebuild_qtensor/],
    ['REDUCE of numpy.load', pk(G('numpy', 'load'), S('x.npy'), TUPLE1, REDUCE), /numpy\.load/],
    ['BUILD on a global (setattr on a class)', pk(G('mymodels', 'Net'), EMPTY_DICT, BUILD), /BUILD|mymodels\.Net/],
    ['SETITEM on a record (would call __setitem__)', pk(G('mymodels', 'Net'), EMPTY_TUPLE, NEWOBJ, S('k'), S('v'), 's'), /SETITEMS|mymodels\.Net/],
    ['EXT1', pk([0x82, 1]), /EXT/],
  ];
  for (const [name, bytes, re] of cases) {
    for (const amr of [false, true]) {
      const r = run(bytes, amr);
      t.ok(r instanceof CheckpointError, `${name} (allowModuleRecords ${amr}) refused`);
      t.match((r as Error).message, re, `${name}: message names it`);
    }
  }
  // and the record path really is inert: a NEWOBJ + BUILD of a class gives a plain record
  const rec = run(pk(G('mymodels', 'Net'), EMPTY_TUPLE, NEWOBJ, EMPTY_DICT, S('a'), [0x4b, 7], 's', BUILD), true) as { cls: { full: string }; state: unknown };
  t.equal(rec.cls.full, 'mymodels.Net', 'NEWOBJ + BUILD of a class is a record when allowed');
  // protocol 0/1 module pickles: copyreg._reconstructor(cls, object, None) + BUILD
  const legacyRec = pk(G('copy_reg', '_reconstructor'), G('mymodels', 'Net'), G('__builtin__', 'object'), 'N', [0x87], REDUCE, EMPTY_DICT, BUILD);
  t.equal((run(legacyRec, true) as { cls: { full: string } }).cls.full, 'mymodels.Net', 'copyreg._reconstructor of a class is a record when allowed');
  t.ok(run(legacyRec, false) instanceof CheckpointError, 'and refused otherwise');
  const notObject = pk(G('copy_reg', '_reconstructor'), G('mymodels', 'Net'), G('mymodels', 'Base'), 'N', [0x87], REDUCE);
  t.match((run(notObject, true) as Error).message, /_reconstructor/, 'copyreg._reconstructor with a base other than object (would call base.__new__/__init__) refused');
});

t.test('VM: hostile sizes and nesting are refused cleanly', async (t) => {
  const fail = (d: string): never => { throw new CheckpointError('mem', d); };
  const st = new StorageRef('0', 'f32', 4, 'cpu', 3, async () => new Uint8Array(12));
  await t.rejects(materialize(new TensorRef(st, 0, [1e6, 1e6], [0, 0]), 'huge', undefined, fail), CheckpointError, 'a 1e12-element expand');
  await t.rejects(materialize(new TensorRef(st, 1, [3], [1]), 'past-end', undefined, fail), { name: 'CheckpointError', message: /past-end/ }, 'a view past the storage');
  const short = new StorageRef('1', 'f32', 4, 'cpu', 4, async () => new Uint8Array(12));
  await t.rejects(materialize(new TensorRef(short, 0, [4], [1]), 'short', undefined, fail), CheckpointError, 'a storage with fewer bytes than numel says');
  const i64 = new StorageRef('2', 'i64', 8, 'cpu', 1, async () => new Uint8Array(new BigInt64Array([2n ** 40n]).buffer));
  await t.rejects(materialize(new TensorRef(i64, 0, [1], [1]), 'big', undefined, fail), { name: 'CheckpointError', message: /does not fit int32/ }, 'int64 out of int32 range');
  // 5000 nested dicts: decoded without recursion, refused by the flattening depth limit
  const dir = mkdtempSync(join(tmpdir(), 'torch-deep-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const deep = pk(...Array.from({ length: 4999 }, () => [0x7d, 0x55, 1, 0x6b]), '}', 's'.repeat(4999));
  const p = join(dir, 'deep.pt');
  const legacyHead = Buffer.from([0x80, 2, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e, 0x80, 2, 0x4d, 0xe9, 0x03, 0x2e, 0x80, 2, 0x7d, 0x2e]);
  writeFileSync(p, Buffer.concat([legacyHead, deep, Buffer.from([0x80, 2, 0x5d, 0x2e])]));
  await t.rejects(loadTorchCheckpoint(p), { name: 'CheckpointError', message: /nesting deeper/ });
});

t.test('truncated and corrupted files -> CheckpointError', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'torch-corrupt-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const tryLoad = async (bytes: Uint8Array, name: string): Promise<unknown> => {
    const p = join(dir, name);
    writeFileSync(p, bytes);
    return loadTorchCheckpoint(p).then(async (m) => { await dispose(m); return null; }, (e: unknown) => e);
  };
  for (const f of ['plain.pt', 'legacy.pt', 'strided.pt']) {
    const b = readFileSync(fixture(f));
    for (const len of [0, 1, 4, 30, 100, Math.floor(b.length / 2), b.length - 30, b.length - 1]) {
      const e = await tryLoad(b.subarray(0, len), `${f}.trunc${len}`);
      t.ok(e instanceof CheckpointError, `${f} truncated to ${len} bytes: ${(e as Error | null)?.message ?? 'loaded!'}`);
    }
  }
  // every 5th byte of a zip flipped: a CheckpointError or (for bytes that do not matter) a clean load
  const b = readFileSync(fixture('plain.pt'));
  let refused = 0; let other = 0; const others: string[] = [];
  for (let i = 0; i < b.length; i += 5) {
    const c = Uint8Array.from(b); c[i] ^= 0x5a;
    const e = await tryLoad(c, 'flip.pt');
    if (e instanceof CheckpointError) refused++;
    else if (e !== null) { other++; others.push(`${i}: ${(e as Error).name}: ${(e as Error).message}`); }
  }
  t.equal(other, 0, `only CheckpointErrors (${others.slice(0, 3).join('; ')})`);
  t.ok(refused > 0, `${refused} corrupted copies refused`);
  const l = readFileSync(fixture('legacy.pt'));
  other = 0; others.length = 0;
  for (let i = 0; i < l.length; i += 3) {
    const c = Uint8Array.from(l); c[i] ^= 0xa5;
    const e = await tryLoad(c, 'flip-legacy.pt');
    if (e !== null && !(e instanceof CheckpointError)) { other++; others.push(`${i}: ${(e as Error).name}: ${(e as Error).message}`); }
  }
  t.equal(other, 0, `legacy: only CheckpointErrors (${others.slice(0, 3).join('; ')})`);
  const storageFlip = Uint8Array.from(b);
  const at = b.indexOf(Buffer.from('plain/data/0')) - 30; // local header of the first storage
  t.equal(b.readUInt32LE(at), 0x04034b50, 'found the local header');
  const dataAt = at + 30 + b.readUInt16LE(at + 26) + b.readUInt16LE(at + 28);
  storageFlip[dataAt + 4] ^= 1;
  const e = await tryLoad(storageFlip, 'crc.pt');
  t.ok(e instanceof CheckpointError, 'a flipped bit in a stored tensor');
  t.match((e as Error).message, /CRC mismatch in plain\/data\/0/);
  t.ok(await tryLoad(Buffer.from('hello, not a checkpoint'), 'junk.pt') instanceof CheckpointError, 'junk');
  await t.rejects(loadTorchCheckpoint(join(dir, 'missing.pt')), CheckpointError, 'missing file');
});

const haveShared = existsSync(join(shared, 'data'));

t.test('real file: DnCNN-S-25 (legacy format, module. prefix, cuda:0 storages)', { skip: haveShared ? false : 'no ../shared/data' }, async (t) => {
  const m = await loadTorchCheckpoint(join(shared, 'data/dncnn/dncnn_25.pth'));
  t.equal(m.size, 77);
  t.equal((await inspectTorchCheckpoint(join(shared, 'data/dncnn/dncnn_25.pth'))).get('module.dncnn.0.weight')?.location, 'cuda:0', 'cuda:0 storages, device ignored');
  const want = new Map<string, number[]>([['module.dncnn.0.weight', [64, 1, 3, 3]], ['module.dncnn.47.weight', [1, 64, 3, 3]]]);
  for (let j = 0; j < 15; j++) {
    want.set(`module.dncnn.${2 + 3 * j}.weight`, [64, 64, 3, 3]);
    for (const s of ['weight', 'bias', 'running_mean', 'running_var']) want.set(`module.dncnn.${3 + 3 * j}.${s}`, [64]);
  }
  t.same([...m.keys()].sort(), [...want.keys()].sort(), 'the 77 keys of the README');
  for (const [k, s] of want) t.same(m.get(k)!.shape, s, k);
  let finite = true;
  for (const x of m.values()) for (const v of await x.data()) if (!Number.isFinite(v)) finite = false;
  t.ok(finite, 'all finite');
  const rv = [...(await m.get('module.dncnn.3.running_var')!.data())];
  t.ok(rv.every((v) => v > 0), 'running_var positive');
  await dispose(m);
});

t.test('real files: taef2 encoder/decoder (zip, fp16 storages)', { skip: haveShared ? false : 'no ../shared/data' }, async (t) => {
  const enc = await loadTorchCheckpoint(join(shared, 'data/taef2/taef2_encoder.pth'));
  const dec = await loadTorchCheckpoint(join(shared, 'data/taef2/taef2_decoder.pth'));
  t.equal(enc.size, 79); t.equal(dec.size, 79);
  const shapes: [Map<string, Tensor>, string, number[]][] = [
    [enc, '0.weight', [64, 3, 3, 3]], [enc, '0.bias', [64]], [enc, '1.conv.4.weight', [64, 64, 3, 3]], [enc, '2.weight', [64, 64, 3, 3]],
    [enc, '11.pool.0.weight', [256, 64, 1, 1]], [enc, '11.pool.1.weight', [256]], [enc, '11.pool.3.weight', [64, 256, 1, 1]], [enc, '14.weight', [32, 64, 3, 3]],
    [dec, '1.weight', [64, 32, 3, 3]], [dec, '3.pool.1.bias', [256]], [dec, '7.weight', [64, 64, 3, 3]], [dec, '19.weight', [3, 64, 3, 3]], [dec, '19.bias', [3]],
  ];
  for (const [m, k, s] of shapes) t.same(m.get(k)?.shape, s, k);
  t.notOk(enc.has('2.bias'), 'stride-2 convs have no bias');
  for (const k of ['0', '2', '6', '11', '16']) t.notOk([...dec.keys()].some((x) => x.startsWith(`${k}.`)), `decoder ${k} has no parameters`);
  let finite = true; let nonzero = 0;
  for (const m of [enc, dec]) for (const x of m.values()) for (const v of await x.data()) { if (!Number.isFinite(v)) finite = false; if (v !== 0) nonzero++; }
  t.ok(finite, 'all finite'); t.ok(nonzero > 1000, 'not all zero');
  await dispose(enc); await dispose(dec);
});

t.test('real file: the LatentDEM release kernel denoiser (a whole pickled FDnCNN)', { skip: haveShared ? false : 'no ../shared/data' }, async (t) => {
  const p = join(shared, 'data/latentdem-release/kernel_denoiser_fdncnn_nb20_nc64.pth');
  await t.rejects(loadTorchCheckpoint(p), { name: 'CheckpointError', message: /networks\.network_dncnn\.FDnCNN/ }, 'refused without allowModuleRecords');
  const m = await loadTorchCheckpoint(p, { allowModuleRecords: true });
  const want: string[] = [];
  for (let i = 0; i <= 38; i += 2) want.push(`model.${i}.weight`, `model.${i}.bias`);
  t.same([...m.keys()], want, 'model.0.weight ... model.38.bias, in state_dict order');
  t.same(m.get('model.0.weight')!.shape, [64, 2, 3, 3]);
  t.same(m.get('model.20.weight')!.shape, [64, 64, 3, 3]);
  t.same(m.get('model.38.weight')!.shape, [1, 64, 3, 3]);
  t.same(m.get('model.38.bias')!.shape, [1]);
  const golden = join(shared, 'fixtures/latentdem_fdncnn_golden/model.safetensors');
  if (existsSync(golden)) {
    const g = await loadSafetensors(golden, { filter: (k) => k.startsWith('model.') });
    t.equal(g.size, 40, 'golden fixture holds the 40 weights');
    for (const k of want) {
      const a = await m.get(k)!.data(); const b = await g.get(k)!.data();
      t.ok(a.length === b.length && a.every((v, i) => v === b[i]), `${k} equals the golden fixture's weights exactly`);
    }
    await dispose(g);
  }
  await dispose(m);
});

t.test('key maps: diffusers -> CompVis, representative keys', async (t) => {
  const unet: [string, string][] = [
    ['time_embedding.linear_1.weight', 'time_embed.0.weight'],
    ['time_embedding.linear_2.bias', 'time_embed.2.bias'],
    ['conv_in.weight', 'input_blocks.0.0.weight'],
    ['conv_norm_out.bias', 'out.0.bias'],
    ['conv_out.weight', 'out.2.weight'],
    ['down_blocks.0.resnets.0.norm1.weight', 'input_blocks.1.0.in_layers.0.weight'],
    ['down_blocks.0.resnets.1.conv2.bias', 'input_blocks.2.0.out_layers.3.bias'],
    ['down_blocks.1.resnets.0.conv_shortcut.weight', 'input_blocks.4.0.skip_connection.weight'],
    ['down_blocks.2.attentions.1.transformer_blocks.0.attn1.to_q.weight', 'input_blocks.8.1.transformer_blocks.0.attn1.to_q.weight'],
    ['down_blocks.0.downsamplers.0.conv.weight', 'input_blocks.3.0.op.weight'],
    ['down_blocks.2.downsamplers.0.conv.bias', 'input_blocks.9.0.op.bias'],
    ['down_blocks.3.resnets.1.time_emb_proj.weight', 'input_blocks.11.0.emb_layers.1.weight'],
    ['mid_block.resnets.0.norm2.weight', 'middle_block.0.out_layers.0.weight'],
    ['mid_block.attentions.0.proj_out.weight', 'middle_block.1.proj_out.weight'],
    ['mid_block.resnets.1.conv1.weight', 'middle_block.2.in_layers.2.weight'],
    ['up_blocks.0.resnets.2.conv1.weight', 'output_blocks.2.0.in_layers.2.weight'],
    ['up_blocks.0.upsamplers.0.conv.weight', 'output_blocks.2.1.conv.weight'],
    ['up_blocks.1.attentions.2.norm.weight', 'output_blocks.5.1.norm.weight'],
    ['up_blocks.1.upsamplers.0.conv.bias', 'output_blocks.5.2.conv.bias'],
    ['up_blocks.3.resnets.0.conv_shortcut.weight', 'output_blocks.9.0.skip_connection.weight'],
    ['up_blocks.3.attentions.2.proj_in.weight', 'output_blocks.11.1.proj_in.weight'],
  ];
  for (const [hf, sd] of unet) t.equal(diffusersToCompvis('unet', hf), sd, `unet ${hf}`);
  const vae: [string, string][] = [
    ['encoder.conv_in.weight', 'encoder.conv_in.weight'],
    ['encoder.down_blocks.0.resnets.1.norm1.weight', 'encoder.down.0.block.1.norm1.weight'],
    ['encoder.down_blocks.1.resnets.0.conv_shortcut.weight', 'encoder.down.1.block.0.nin_shortcut.weight'],
    ['encoder.down_blocks.2.downsamplers.0.conv.weight', 'encoder.down.2.downsample.conv.weight'],
    ['encoder.mid_block.resnets.1.conv2.bias', 'encoder.mid.block_2.conv2.bias'],
    ['encoder.mid_block.attentions.0.group_norm.weight', 'encoder.mid.attn_1.norm.weight'],
    ['encoder.mid_block.attentions.0.query.weight', 'encoder.mid.attn_1.q.weight'],
    ['decoder.mid_block.attentions.0.to_k.bias', 'decoder.mid.attn_1.k.bias'],
    ['decoder.mid_block.attentions.0.to_out.0.weight', 'decoder.mid.attn_1.proj_out.weight'],
    ['decoder.mid_block.attentions.0.proj_attn.weight', 'decoder.mid.attn_1.proj_out.weight'],
    ['decoder.up_blocks.0.resnets.2.conv1.weight', 'decoder.up.3.block.2.conv1.weight'],
    ['decoder.up_blocks.0.upsamplers.0.conv.weight', 'decoder.up.3.upsample.conv.weight'],
    ['decoder.up_blocks.3.resnets.0.conv_shortcut.bias', 'decoder.up.0.block.0.nin_shortcut.bias'],
    ['decoder.conv_norm_out.weight', 'decoder.norm_out.weight'],
    ['quant_conv.weight', 'quant_conv.weight'],
  ];
  for (const [hf, sd] of vae) t.equal(diffusersToCompvis('vae', hf), sd, `vae ${hf}`);
  t.ok(needsConv1x1('vae', 'decoder.mid.attn_1.q.weight')); t.notOk(needsConv1x1('vae', 'decoder.mid.attn_1.q.bias'));
  t.equal(diffusersToCompvis('clip', 'text_model.encoder.layers.3.self_attn.k_proj.weight'), 'text_model.encoder.layers.3.self_attn.k_proj.weight');
  const combined = mapDiffusersKeys(['unet.conv_in.weight', 'vae.decoder.conv_out.bias', 'text_encoder.text_model.final_layer_norm.weight', 'other']);
  t.same(combined.map((m) => m.to), [`${COMPVIS_PREFIX.unet}input_blocks.0.0.weight`, `${COMPVIS_PREFIX.vae}decoder.conv_out.bias`, `${COMPVIS_PREFIX.clip}text_model.final_layer_norm.weight`, 'other']);
  const bare = mapDiffusersKeys(['encoder.down_blocks.0.resnets.0.conv1.weight', 'encoder.mid_block.attentions.0.to_v.weight']);
  t.same(bare.map((m) => [m.model, m.to, m.conv1x1]), [['vae', 'encoder.down.0.block.0.conv1.weight', false], ['vae', 'encoder.mid.attn_1.v.weight', true]]);
});

t.test('tools/convert.ts: diffusers-layout checkpoint -> latentdem safetensors; refusals', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'torch-convert-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const run = (...args: string[]) => spawnSync(process.execPath, ['--conditions=latentdem-src', '--import', 'tsx', join(root, 'tools/convert.ts'), ...args], { cwd: root, encoding: 'utf8' });
  const out = join(dir, 'out.safetensors');
  const r = run(fixture('diffusers_sd.pt'), out);
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, 'unet.down_blocks.1.resnets.0.norm1.weight -> model.diffusion_model.input_blocks.4.0.in_layers.0.weight');
  const m = await loadSafetensors(out);
  const src = expected.files['diffusers_sd.pt'];
  const pairs: [string, string][] = [
    ['unet.time_embedding.linear_1.weight', 'model.diffusion_model.time_embed.0.weight'],
    ['unet.down_blocks.1.resnets.0.norm1.weight', 'model.diffusion_model.input_blocks.4.0.in_layers.0.weight'],
    ['unet.down_blocks.1.attentions.1.proj_in.bias', 'model.diffusion_model.input_blocks.5.1.proj_in.bias'],
    ['unet.up_blocks.0.upsamplers.0.conv.weight', 'model.diffusion_model.output_blocks.2.1.conv.weight'],
    ['unet.mid_block.resnets.1.time_emb_proj.weight', 'model.diffusion_model.middle_block.2.emb_layers.1.weight'],
    ['vae.decoder.up_blocks.0.resnets.2.conv_shortcut.weight', 'first_stage_model.decoder.up.3.block.2.nin_shortcut.weight'],
    ['vae.encoder.mid_block.attentions.0.to_q.weight', 'first_stage_model.encoder.mid.attn_1.q.weight'],
    ['text_encoder.text_model.embeddings.token_embedding.weight', 'cond_stage_model.transformer.text_model.embeddings.token_embedding.weight'],
  ];
  t.same([...m.keys()].sort(), pairs.map((p) => p[1]).sort(), 'output keys');
  for (const [from, to] of pairs) {
    const x = m.get(to)!;
    t.same([...(await x.data())], src[from].values, `${to} values`);
    if (!to.endsWith('attn_1.q.weight')) t.same(x.shape, src[from].shape, `${to} shape`);
  }
  t.same(m.get('first_stage_model.encoder.mid.attn_1.q.weight')!.shape, [2, 2, 1, 1], 'linear -> 1x1 conv');
  await dispose(m);

  const again = run(fixture('diffusers_sd.pt'), out);
  t.equal(again.status, 1, 'refuses to overwrite'); t.match(again.stderr, /--overwrite/);
  const f16 = run(fixture('compvis.ckpt'), out, '--dtype', 'f16', '--overwrite');
  t.equal(f16.status, 0, f16.stderr);
  const raw = readFileSync(out); const hlen = Number(raw.readBigUInt64LE(0));
  const header = JSON.parse(raw.subarray(8, 8 + hlen).toString('utf8')) as Record<string, { dtype?: string }>;
  t.equal(header['model.diffusion_model.input_blocks.0.0.weight'].dtype, 'F16', '--dtype f16');

  // safetensors in, already CompVis layout: keys kept
  const out2 = join(dir, 'out2.safetensors');
  const st = run(out, out2);
  t.equal(st.status, 0, st.stderr);
  t.match(st.stdout, /3 tensors, layout compvis, 0 renamed/);

  const evilOut = join(dir, 'evil.safetensors');
  const evil = run(fixture('evil_os_system.pt'), evilOut);
  t.equal(evil.status, 2, 'malicious checkpoint: exit 2');
  t.match(evil.stderr, /refused.*posix\.system/);
  t.notOk(existsSync(evilOut), 'nothing written');
});

t.test('tools/convert.ts --ema: model_ema.* (dotless names, as LitEma stores them) over model.diffusion_model.*', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'torch-convert-ema-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const run = (...args: string[]) => spawnSync(process.execPath, ['--conditions=latentdem-src', '--import', 'tsx', join(root, 'tools/convert.ts'), ...args], { cwd: root, encoding: 'utf8' });
  const f32 = (v: number[], shape: number[]) => tensor(Float32Array.from(v), { shape, backend: 'cpu' });
  // Two UNet parameters whose dotless names could collide only if the dots were removed wrongly
  // (input_blocks.1.1 vs a hypothetical input_blocks.11), a VAE tensor, and LitEma's scalars.
  const live = { w: [1, 2, 3, 4], b: [5, 6], n: [7, 8] };
  const ema = { w: [-1, -2, -3, -4], b: [-5, -6], n: [-7, -8] };
  const ckpt = (drop: string[] = [], withEma = true) => {
    const m = new Map<string, Tensor>([
      ['model.diffusion_model.input_blocks.0.0.weight', f32(live.w, [2, 2])],
      ['model.diffusion_model.input_blocks.1.1.norm.bias', f32(live.b, [2])],
      ['model.diffusion_model.out.2.bias', f32(live.n, [2])],
      ['first_stage_model.decoder.conv_out.bias', f32([9, 9, 9], [3])],
    ]);
    if (withEma) {
      m.set('model_ema.decay', f32([0.9999], []));
      m.set('model_ema.num_updates', tensor(Int32Array.from([1234]), { shape: [], backend: 'cpu' }));
      m.set('model_ema.diffusion_modelinput_blocks00weight', f32(ema.w, [2, 2]));
      m.set('model_ema.diffusion_modelinput_blocks11normbias', f32(ema.b, [2]));
      m.set('model_ema.diffusion_modelout2bias', f32(ema.n, [2]));
    }
    for (const k of drop) m.delete(k);
    return m;
  };
  const write = async (name: string, m: Map<string, Tensor>) => {
    const p = join(dir, name);
    await saveSafetensors(p, m);
    for (const x of m.values()) x.dispose();
    return p;
  };
  t.equal(emaKeyFor('model.diffusion_model.output_blocks.11.1.transformer_blocks.0.attn1.to_q.weight'), 'model_ema.diffusion_modeloutput_blocks111transformer_blocks0attn1to_qweight', 'LitEma: diffusion_model.<name> without dots');

  const src = await write('ema.safetensors', ckpt());
  const values = async (p: string) => {
    const m = await loadSafetensors(p);
    const o = Object.fromEntries(await Promise.all([...m].map(async ([k, x]) => [k, [...(await x.data())]] as const)));
    await dispose(m);
    return o;
  };

  // without --ema: EMA tensors dropped, live weights kept
  const plain = join(dir, 'plain.safetensors');
  const r0 = run(src, plain);
  t.equal(r0.status, 0, r0.stderr);
  t.match(r0.stdout, /dropped 5 model_ema\.\* tensors/);
  t.match(r0.stdout, /model_ema\.diffusion_modelout2bias \(dropped\)/);
  t.match(r0.stdout, /wrote 4 tensors/);
  const v0 = await values(plain);
  t.same(Object.keys(v0).sort(), ['first_stage_model.decoder.conv_out.bias', 'model.diffusion_model.input_blocks.0.0.weight', 'model.diffusion_model.input_blocks.1.1.norm.bias', 'model.diffusion_model.out.2.bias']);
  t.same(v0['model.diffusion_model.input_blocks.0.0.weight'], live.w, 'live UNet weights');

  // --ema: each UNet tensor replaced by its twin, the scalars skipped, other models untouched
  const withEma = join(dir, 'with-ema.safetensors');
  const r1 = run(src, withEma, '--ema');
  t.equal(r1.status, 0, r1.stderr);
  t.match(r1.stdout, /--ema: replaced 3 model\.diffusion_model\.\* tensors by their model_ema\.\* twins \(skipped model_ema\.decay, model_ema\.num_updates\)/);
  const v1 = await values(withEma);
  t.same(Object.keys(v1).sort(), Object.keys(v0).sort(), 'same keys, no model_ema.*');
  t.same(v1['model.diffusion_model.input_blocks.0.0.weight'], ema.w);
  t.same(v1['model.diffusion_model.input_blocks.1.1.norm.bias'], ema.b);
  t.same(v1['model.diffusion_model.out.2.bias'], ema.n);
  t.same(v1['first_stage_model.decoder.conv_out.bias'], [9, 9, 9]);
  const raw = readFileSync(withEma); const hlen = Number(raw.readBigUInt64LE(0));
  t.equal((JSON.parse(raw.subarray(8, 8 + hlen).toString('utf8')) as { __metadata__: Record<string, string> }).__metadata__.unet_weights, 'model_ema', 'recorded in the metadata');

  // refusals: no EMA at all; a UNet tensor without twin; an EMA tensor without UNet tensor; nothing written
  const noEma = await write('no-ema.safetensors', ckpt([], false));
  const bad = join(dir, 'bad.safetensors');
  const r2 = run(noEma, bad, '--ema');
  t.equal(r2.status, 1, 'no model_ema.*: exit 1');
  t.match(r2.stderr, /--ema: the checkpoint has no model_ema\.\* weights/);
  const missing = await write('missing.safetensors', ckpt(['model_ema.diffusion_modelinput_blocks11normbias']));
  const r3 = run(missing, bad, '--ema');
  t.equal(r3.status, 1, 'missing twin: exit 1');
  t.match(r3.stderr, /1 of 3 UNet tensors have no EMA twin: model\.diffusion_model\.input_blocks\.1\.1\.norm\.bias \(no model_ema\.diffusion_modelinput_blocks11normbias\)/);
  const orphan = await write('orphan.safetensors', ckpt(['model.diffusion_model.out.2.bias']));
  const r4 = run(orphan, bad, '--ema');
  t.equal(r4.status, 1, 'orphan EMA tensor: exit 1');
  t.match(r4.stderr, /1 model_ema\.\* tensors match no UNet tensor: model_ema\.diffusion_modelout2bias/);
  t.notOk(existsSync(bad), 'nothing written on refusal');
});
